"""How C is chosen: one rule (``probe.choose_c``, the one-standard-error rule on validation log
loss) for the probe and the few-shot curves; on the demo and on the bench's 10,000 generated
images, float noise in the embeddings moves neither C nor a prediction."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from bench.folders import synthetic_folder
from probe_core.cache import EmbeddingCache
from probe_core.dataset import scan
from probe_core.embed import extract_embeddings
from probe_core.evaluation.fewshot import fewshot_curve
from probe_core.evaluation.protocols import run_probe
from probe_core.probe import (
    C_RULES,
    DEFAULT_C_RULE,
    LinearProbe,
    SweepResult,
    ValidationScores,
    choose_c,
    one_standard_error_bar,
)
from tests.conftest import DEMO_DIR

NOISE_STD = 1e-6
# Two classes whose probabilities lie this close are a tie to the solver's precision: the
# final refit stops at a gradient of 1e-6, where noise of 1e-6 moved probabilities on 10,000
# images by up to 0.0005 (bench/c_rule.py). Stopped at 1e-4, as before Newton-CG, it changed
# 7 to 18 of 2,500 predictions, with margins up to 0.025.
NEAR_TIE = 1e-3


def scores(*rows: tuple[float, float, float]) -> dict[int, ValidationScores]:
    """Positions 0, 1, ... with (accuracy, mean log loss, its standard error), 100 images."""
    return {p: ValidationScores(a, loss, se, 100) for p, (a, loss, se) in enumerate(rows)}


def test_the_rule_is_named_one_standard_error():
    assert DEFAULT_C_RULE == "one-standard-error" == C_RULES[0]
    assert LinearProbe().c_rule == DEFAULT_C_RULE


def test_one_standard_error_takes_the_smallest_c_within_one_se_of_the_lowest_log_loss():
    measured = scores(
        (0.60, 0.90, 0.05),  # too far above the lowest loss
        (0.70, 0.64, 0.05),  # within 0.60 + 0.05: chosen, the strongest regularisation
        (0.72, 0.62, 0.05),
        (0.74, 0.60, 0.05),  # the lowest log loss
        (0.73, 0.61, 0.05),
    )
    assert choose_c(measured) == 1
    assert choose_c(measured, "log-loss") == 3
    assert choose_c(measured, "best-accuracy") == 3
    assert one_standard_error_bar(measured) == 0.60 + 0.05


def test_a_sweep_states_the_bar_its_c_was_chosen_under_and_only_under_that_rule():
    rows = ((0.60, 0.90, 0.05), (0.70, 0.64, 0.05), (0.74, 0.60, 0.05), (0.73, 0.61, 0.05))
    sweep = SweepResult(
        c_values=(0.1, 1.0, 10.0, 100.0),
        scores=tuple(r[0] for r in rows),
        chosen_c=1.0,
        method="stratified k-fold",
        log_losses=tuple(r[1] for r in rows),
        log_loss_se=tuple(r[2] for r in rows),
    )
    assert sweep.one_standard_error_bar == one_standard_error_bar(scores(*rows)) == 0.60 + 0.05
    assert sweep.c_values[choose_c(scores(*rows))] == sweep.chosen_c
    assert replace(sweep, c_rule="log-loss").one_standard_error_bar is None
    assert replace(sweep, log_loss_se=()).one_standard_error_bar is None
    fixed = replace(sweep, scores=(float("nan"),) * 4)  # a fixed C: chosen from no scores
    assert fixed.one_standard_error_bar is None


def test_a_one_image_tie_in_accuracy_flips_the_old_rule_but_not_the_new_one():
    """Two Cs one validation image apart in accuracy: one image changing its prediction (what
    a 1e-7 difference in the vectors can do) moves the old best-accuracy rule, while the log
    losses, which move by as little as the vectors did, leave the choice where it was."""
    before = scores((0.70, 0.700, 0.04), (0.80, 0.6500, 0.04), (0.81, 0.6400, 0.04))
    after = scores((0.70, 0.700, 0.04), (0.81, 0.6499, 0.04), (0.80, 0.6401, 0.04))
    assert choose_c(before, "best-accuracy") != choose_c(after, "best-accuracy")
    assert choose_c(before) == choose_c(after) == 1


def test_scores_pool_every_validation_image():
    correct = np.array([1, 1, 0, 1])
    losses = np.array([0.1, 0.2, 2.0, 0.3])
    pooled = ValidationScores.of(correct, losses)
    assert pooled.accuracy == 0.75 and pooled.n == 4
    assert pooled.log_loss == pytest.approx(losses.mean())
    assert pooled.log_loss_se == pytest.approx(losses.std(ddof=1) / 2)
    sums = ValidationScores.from_sums(4, 3, losses.sum(), float(losses @ losses))
    assert sums.log_loss_se == pytest.approx(pooled.log_loss_se)


def test_an_unknown_rule_is_refused():
    with pytest.raises(ValueError, match="c_rule must be one of one-standard-error"):
        LinearProbe(c_rule="cheapest").fit(np.eye(4), [0, 0, 1, 1])


def test_the_probe_records_its_rule_and_chooses_by_it():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 8)) + np.repeat(np.eye(3, 8) * 1.5, 40, axis=0)
    y = np.repeat(np.arange(3), 40)
    probe = LinearProbe().fit(X, y)
    sweep = probe.sweep_
    assert sweep.c_rule == "one-standard-error"
    losses, errors = np.array(sweep.log_losses), np.array(sweep.log_loss_se)
    lowest = int(np.argmin(losses))
    within = np.flatnonzero(losses <= losses[lowest] + errors[lowest])
    assert probe.chosen_c_ == sweep.c_values[within[0]]


@pytest.fixture(scope="module")
def demo_embeddings(encoder, tmp_path_factory):
    """The bundled encoder's embeddings of the demo folder, computed once for this module."""
    cache = EmbeddingCache(tmp_path_factory.mktemp("c-rule-cache"))
    return extract_embeddings(scan(DEMO_DIR), encoder, cache=cache)


def with_noise(embeddings, seed: int):
    rng = np.random.default_rng(seed)
    vectors = embeddings.vectors + rng.normal(0, NOISE_STD, embeddings.vectors.shape)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    noisy = replace(embeddings, vectors=vectors.astype(np.float32))
    assert not np.array_equal(noisy.vectors, embeddings.vectors)
    return noisy


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["cv", "holdout"])
def test_noise_of_1e_6_changes_no_chosen_c_and_no_prediction(demo_embeddings, protocol):
    result = run_probe(demo_embeddings, protocol=protocol)
    chosen = [sweep.chosen_c for sweep in result.fold_sweeps] or [result.chosen_c]
    for seed in range(2):
        noisy = run_probe(with_noise(demo_embeddings, seed), protocol=protocol)
        assert ([sweep.chosen_c for sweep in noisy.fold_sweeps] or [noisy.chosen_c]) == chosen
        assert noisy.chosen_c == result.chosen_c
        np.testing.assert_array_equal(noisy.evaluated, result.evaluated)
        np.testing.assert_array_equal(noisy.predictions, result.predictions)


@pytest.mark.slow
def test_noise_of_1e_6_changes_no_few_shot_c_and_no_prediction(demo_embeddings):
    """The few-shot curve chooses C by the same rule: each fold's shared C is unchanged."""
    result = run_probe(demo_embeddings, protocol="cv")
    curve = fewshot_curve(demo_embeddings, result, shots=[4, 8], draws=3, record=True)
    noisy_embeddings = with_noise(demo_embeddings, 0)
    noisy_result = run_probe(noisy_embeddings, protocol="cv")
    noisy = fewshot_curve(noisy_embeddings, noisy_result, shots=[4, 8], draws=3, record=True)
    assert [d.chosen_c for d in noisy.recorded] == [d.chosen_c for d in curve.recorded]
    assert {d.c_method for d in curve.recorded} == {
        "shared by the draws (stratified 4-fold on each draw)",
        "shared by the draws (stratified 5-fold on each draw)",
    }
    assert [p.accuracies for p in noisy.points] == [p.accuracies for p in curve.points]


@pytest.fixture(scope="module")
def generated_embeddings(encoder, tmp_path_factory):
    """``bench/c_rule.py``'s generated folder (10,000 images, 10 classes) through the bundled
    encoder: the probe scores 0.80 on it, so many of its 2,500 scored images lie near a class
    boundary."""
    folder = synthetic_folder(tmp_path_factory.mktemp("generated-10000"), 10_000)
    return extract_embeddings(scan(folder), encoder)


def top_two_gap(probabilities: np.ndarray) -> np.ndarray:
    ordered = np.sort(probabilities, axis=1)
    return ordered[:, -1] - ordered[:, -2]


@pytest.mark.slow
def test_on_10_000_generated_images_noise_of_1e_6_changes_no_c_and_no_prediction(
    generated_embeddings,
):
    result = run_probe(generated_embeddings)
    assert result.protocol.name == "holdout" and len(result.evaluated) == 2_500
    noisy = run_probe(with_noise(generated_embeddings, 0))
    assert noisy.chosen_c == result.chosen_c
    np.testing.assert_array_equal(noisy.evaluated, result.evaluated)
    changed = np.flatnonzero(noisy.predictions != result.predictions)
    # Only a tie to the solver's precision may change class (none did in bench/c_rule.py).
    assert np.all(top_two_gap(result.probabilities[changed]) < NEAR_TIE), changed
    assert np.abs(noisy.probabilities - result.probabilities).max() < NEAR_TIE
