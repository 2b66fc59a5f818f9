"""Few-shot curves: honest draws, powers of two, reproducible, and read against zero-shot."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import plotly.graph_objects as go
import pytest

from probe_core.evaluation.fewshot import (
    FEWSHOT_FIXED_C,
    MIN_SHOTS_FOR_C_SELECTION,
    FewShotCurve,
    FewShotPoint,
    crossing_point,
    crossing_sentence,
    fewshot_curve,
    fewshot_table,
)
from probe_core.evaluation.protocols import run_probe
from probe_core.evaluation.splits import Split
from probe_core.figures import fewshot_figure
from probe_core.probe import LinearProbe
from tests.conftest import REPO
from tests.test_probe import clustered_embeddings


def fixed_c_probe() -> LinearProbe:
    """The reference probe's own C does not matter here, and a fixed C is fast."""
    return LinearProbe(C=1.0)


@pytest.fixture(scope="module")
def cv_run():
    embeddings = clustered_embeddings([12, 10, 14], spread=1.5, seed=2)
    result = run_probe(embeddings, protocol="cv", folds=3, seed=0, probe=fixed_c_probe())
    return embeddings, result


@pytest.fixture(scope="module")
def cv_curve(cv_run):
    embeddings, result = cv_run
    return fewshot_curve(embeddings, result, draws=3, seed=0, record=True)


def test_under_cv_each_fold_is_scored_by_probes_drawn_from_the_other_folds(cv_run, cv_curve):
    embeddings, result = cv_run
    folds = np.asarray(result.folds)
    assert cv_curve.recorded
    for drawn in cv_curve.recorded:
        fold_images = result.evaluated[folds == drawn.fold]
        np.testing.assert_array_equal(drawn.evaluated, np.sort(fold_images))
        assert set(drawn.train).isdisjoint(drawn.evaluated)
        assert set(drawn.train) <= set(result.evaluated)
        counts = np.bincount(embeddings.labels[drawn.train], minlength=3)
        assert counts.tolist() == [drawn.k] * 3
    # every evaluated image is scored once per (k, draw): the accuracy pools all folds
    for k in cv_curve.shots:
        scored = [d.evaluated for d in cv_curve.recorded if d.k == k and d.draw == 0]
        assert sorted(np.concatenate(scored).tolist()) == sorted(result.evaluated.tolist())


def test_k_runs_over_powers_of_two_up_to_the_smallest_pool(cv_run, cv_curve):
    embeddings, result = cv_run
    folds = np.asarray(result.folds)
    smallest_pool = min(
        np.sum(embeddings.labels[result.evaluated[folds != fold]] == label)
        for fold in set(result.folds)
        for label in range(3)
    )
    assert smallest_pool == 6  # the class of 10 images in 3 folds keeps 6 or 7 to draw from
    assert cv_curve.shots == [1, 2, 4]
    assert cv_curve.max_supported_k == smallest_pool
    assert any("k stops at 4" in message for message in cv_curve.messages)


def test_holdout_draws_come_from_the_training_split_only():
    embeddings = clustered_embeddings([20, 12, 30], spread=1.5)
    result = run_probe(embeddings, protocol="holdout", seed=0, probe=fixed_c_probe())
    curve = fewshot_curve(embeddings, result, shots=[1, 8, 64], draws=2, record=True)
    assert curve.shots == [1, 8]  # 64 is more than the 9 training images of class_1
    assert any("k = 64 skipped" in message for message in curve.messages)
    for drawn in curve.recorded:
        assert set(drawn.train) <= set(result.train)
        assert set(drawn.train).isdisjoint(result.evaluated)
        np.testing.assert_array_equal(drawn.evaluated, np.sort(result.evaluated))


def test_a_training_copy_of_an_evaluation_image_is_never_drawn():
    embeddings = clustered_embeddings([10, 10, 10], seed=3)
    test = np.array([0, 1, 10, 11, 20, 21])
    split = Split(train=np.setdiff1d(np.arange(30), test), test=test)
    embeddings.vectors[5] = embeddings.vectors[0]  # a copy of a test image left in train
    embeddings.sha256 = [f"digest {i}" for i in range(30)]
    result = run_probe(embeddings, split=split, seed=0, probe=fixed_c_probe())
    curve = fewshot_curve(embeddings, result, shots=[1, 2, 4], draws=4, record=True)
    assert all(5 not in drawn.train for drawn in curve.recorded)
    assert curve.max_supported_k == 7  # class_0 has 8 training images, one of them the copy
    assert any("1 training images were never drawn" in message for message in curve.messages)


def test_the_same_seed_gives_the_same_curve(cv_run, cv_curve):
    embeddings, result = cv_run
    again = fewshot_curve(embeddings, result, draws=3, seed=0, record=True)
    assert again.points == cv_curve.points
    for first, second in zip(again.recorded, cv_curve.recorded, strict=True):
        np.testing.assert_array_equal(first.train, second.train)
    other = fewshot_curve(embeddings, result, shots=[1], draws=3, seed=1, record=True)
    first_draws = [d.train for d in cv_curve.recorded if d.k == 1]
    assert any(
        not np.array_equal(a.train, b) for a, b in zip(other.recorded, first_draws, strict=True)
    )


def test_draws_are_nested_and_c_is_fixed_only_below_the_selection_threshold(cv_curve):
    by_key = {(d.k, d.draw, d.fold): d for d in cv_curve.recorded}
    for (k, draw, fold), drawn in by_key.items():
        if k > 1:
            assert set(by_key[(k // 2, draw, fold)].train) < set(drawn.train)
        if k < MIN_SHOTS_FOR_C_SELECTION:
            assert drawn.c_method == "fixed" and drawn.chosen_c == FEWSHOT_FIXED_C
        else:
            assert drawn.c_method != "fixed"


def test_accuracy_grows_with_images_per_class():
    embeddings = clustered_embeddings([24, 24, 24], dim=16, spread=1.5, seed=5)
    result = run_probe(embeddings, protocol="holdout", test_size=0.5, seed=0, probe=fixed_c_probe())
    curve = fewshot_curve(embeddings, result, shots=[1, 8], draws=5)
    one, eight = curve.points
    assert eight.accuracy > one.accuracy + 0.05
    for point in curve.points:
        assert point.low <= point.accuracy <= point.high
        assert point.draws == len(point.accuracies) == 5
        assert point.accuracy == pytest.approx(np.mean(point.accuracies))


def test_a_tiny_folder_gets_k_equals_one_only():
    embeddings = clustered_embeddings([2, 2, 3])
    result = run_probe(embeddings, protocol="cv", seed=0, probe=fixed_c_probe())
    curve = fewshot_curve(embeddings, result, draws=2)
    assert curve.shots == [1]


def test_a_class_with_nothing_to_draw_from_gives_no_curve_and_says_so():
    embeddings = clustered_embeddings([6, 6, 4])
    test = np.array([0, 6, 12, 13, 14, 15])  # every image of class_2 is in the test split
    split = Split(train=np.setdiff1d(np.arange(16), test), test=test)
    result = run_probe(embeddings, split=split, seed=0, probe=fixed_c_probe())
    curve = fewshot_curve(embeddings, result)
    assert curve.points == ()
    assert any(
        "class 'class_2' has no training images to draw from" in m and "k = 1" in m
        for m in curve.messages
    )
    assert fewshot_table([curve]).empty


def test_table_has_exactly_the_fewshot_csv_columns(cv_curve):
    table = fewshot_table([cv_curve])
    assert list(table.columns) == ["encoder", "k", "accuracy", "low", "high", "draws"]
    assert table["k"].tolist() == cv_curve.shots
    assert (table["encoder"] == "test").all()


def _curve(name: str, accuracies: list[float]) -> FewShotCurve:
    points = tuple(
        FewShotPoint(k=2**i, accuracy=a, low=a - 0.05, high=a + 0.05, draws=10)
        for i, a in enumerate(accuracies)
    )
    return FewShotCurve(name, points, max_supported_k=2 ** (len(accuracies) - 1))


def test_crossing_point_is_the_smallest_k_that_beats_zero_shot():
    curve = _curve("clip", [0.5, 0.7, 0.9])
    assert crossing_point(curve, 0.65) == 2
    assert crossing_point(curve, 0.4) == 1
    assert crossing_point(curve, 0.7) == 4  # a tie does not beat zero-shot
    assert crossing_point(curve, 0.95) is None
    assert crossing_sentence(curve, 0.65) == (
        "the probe needs about 2 images per class to beat zero-shot"
    )
    assert crossing_sentence(curve, 0.95) == "the probe did not beat zero-shot up to k = 4"


def test_figure_has_a_log_axis_a_band_per_encoder_and_dashed_zero_shot_lines():
    curves = [_curve("clip", [0.5, 0.7, 0.9]), _curve("effnet", [0.4, 0.6, 0.8])]
    figure = fewshot_figure(curves, zero_shot={"clip": 0.65})
    assert isinstance(figure, go.Figure)
    assert figure.layout.xaxis.type == "log"
    lines = [t for t in figure.data if t.mode == "lines+markers"]
    assert [t.name for t in lines] == ["clip", "effnet"]
    bands = [t for t in figure.data if t.fill == "toself"]
    assert len(bands) == 2
    (zero_shot_line,) = [t for t in figure.data if t.line.dash == "dash"]
    assert list(zero_shot_line.y) == [0.65, 0.65]
    assert zero_shot_line.line.color == lines[0].line.color


@pytest.mark.slow
def test_the_batched_curve_stays_within_the_spread_of_per_draw_probes():
    """The fast curve (stacked fits, one C per fold and k) against the reference: a
    ``LinearProbe`` per draw choosing its own C. Same draws; every mean within the
    reference's 2.5-97.5% band over draws."""
    embeddings = clustered_embeddings([18, 18, 18, 18], dim=64, spread=3.0, seed=4)
    result = run_probe(embeddings, protocol="cv", folds=3, seed=0, probe=fixed_c_probe())
    reference = fewshot_curve(embeddings, result, fit="per-draw")
    batched = fewshot_curve(embeddings, result)
    assert batched.shots == reference.shots == [1, 2, 4, 8]
    for fast, slow in zip(batched.points, reference.points, strict=True):
        assert slow.low <= fast.accuracy <= slow.high, (fast.k, fast.accuracy, slow)
    # below the selection threshold both fit the same probe (C fixed): the same accuracies
    for fast, slow in zip(batched.points[:2], reference.points[:2], strict=True):
        np.testing.assert_allclose(fast.accuracies, slow.accuracies, atol=1 / 72)


def test_one_c_per_fold_and_k_is_shared_by_the_draws_and_never_sees_the_scored_images():
    embeddings = clustered_embeddings([16, 16, 16], dim=24, spread=2.5, seed=7)
    result = run_probe(embeddings, protocol="holdout", test_size=0.4, seed=0, probe=fixed_c_probe())
    curve = fewshot_curve(embeddings, result, shots=[4, 8], draws=6, record=True)
    for k in (4, 8):
        drawn = [d for d in curve.recorded if d.k == k]
        assert len({d.chosen_c for d in drawn}) == 1
        assert all(d.c_method.startswith("shared by the draws") for d in drawn)
    # Scrambling the scored images' embeddings changes the scores, never the C chosen.
    scrambled = embeddings.vectors.copy()
    rng = np.random.default_rng(0)
    scrambled[result.evaluated] = rng.normal(size=(len(result.evaluated), 24))
    embeddings.vectors = scrambled
    again = fewshot_curve(embeddings, result, shots=[4, 8], draws=6, record=True)
    assert [d.chosen_c for d in again.recorded] == [d.chosen_c for d in curve.recorded]
    assert again.points != curve.points


def test_a_fixed_c_probe_fixes_c_at_every_k():
    embeddings = clustered_embeddings([12, 12, 12], seed=1)
    result = run_probe(embeddings, protocol="holdout", seed=0, probe=fixed_c_probe())
    curve = fewshot_curve(embeddings, result, draws=2, probe=LinearProbe(C=7.0), record=True)
    assert {d.chosen_c for d in curve.recorded if d.k >= MIN_SHOTS_FOR_C_SELECTION} == {7.0}


def test_an_unknown_fit_method_is_refused(cv_run):
    embeddings, result = cv_run
    with pytest.raises(ValueError, match="fit must be one of batched, per-draw"):
        fewshot_curve(embeddings, result, fit="fast")


def test_evaluation_modules_load_neither_plotly_nor_torch():
    code = (
        "import sys, probe_core.evaluation.fewshot, probe_core.evaluation.label_issues;"
        "print(sorted(m for m in ('plotly', 'torch') if m in sys.modules))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    ).stdout.strip()
    assert loaded == "[]"
