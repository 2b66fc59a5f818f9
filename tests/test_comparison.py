"""Comparing encoders: same images, same folds, paired bootstrap interval, exact McNemar test."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy.stats import binomtest

from probe_core.evaluation.comparison import (
    Comparison,
    EncoderScore,
    PairedComparison,
    align_by_path,
    baseline_warnings,
    compare_encoders,
    compare_pair,
    comparison_table,
    mcnemar_p_value,
    paired_bootstrap_interval,
    pairs_table,
    per_image_table,
    shared_duplicate_groups,
)
from probe_core.evaluation.intervals import Estimate
from probe_core.evaluation.protocols import ProtocolChoice, run_probe
from probe_core.probe import LinearProbe
from tests.test_probe import clustered_embeddings

FIXED_C = LinearProbe(C=1.0)  # no C sweep: these tests are about pairing, not the probe


def outcomes(both: int, only_a: int, only_b: int, neither: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-image correct/incorrect for two encoders with the given 2x2 counts."""
    correct_a = [True] * both + [True] * only_a + [False] * only_b + [False] * neither
    correct_b = [True] * both + [False] * only_a + [True] * only_b + [False] * neither
    return np.array(correct_a), np.array(correct_b)


def with_copy(embeddings, source: int, copy: int):
    """The same embeddings with row ``copy`` made a near-copy of row ``source``."""
    vectors = embeddings.vectors.copy()
    vectors[copy] = vectors[source]
    return dataclasses.replace(embeddings, vectors=vectors)


def test_mcnemar_p_value_is_the_exact_binomial_test_on_discordant_images():
    rng = np.random.default_rng(0)
    for _ in range(5):
        correct_a, correct_b = rng.random(60) < 0.7, rng.random(60) < 0.8
        only_a = int(np.sum(correct_a & ~correct_b))
        only_b = int(np.sum(correct_b & ~correct_a))
        expected = binomtest(only_b, only_a + only_b, 0.5).pvalue
        assert mcnemar_p_value(correct_a, correct_b) == pytest.approx(expected)


def test_mcnemar_p_value_by_hand():
    # 1 against 4 discordant: P(X <= 1) for X ~ Binomial(5, 1/2) is (1 + 5) / 32, doubled.
    assert mcnemar_p_value(*outcomes(10, 1, 4, 3)) == pytest.approx(12 / 32)
    # 0 against 5: 2 * (1/2)^5
    assert mcnemar_p_value(*outcomes(10, 0, 5, 3)) == pytest.approx(2 / 32)
    # no image got right by only one of the two: nothing to tell them apart
    assert mcnemar_p_value(*outcomes(10, 0, 0, 3)) == 1.0


def test_paired_bootstrap_interval_contains_the_difference_and_is_seeded():
    correct_a, correct_b = outcomes(50, 5, 12, 13)
    pair = compare_pair("a", "b", correct_a, correct_b, seed=3)
    assert pair.difference == pytest.approx(correct_b.mean() - correct_a.mean())
    assert pair.difference_low < pair.difference < pair.difference_high
    assert (pair.only_a_correct, pair.only_b_correct) == (5, 12)
    again = paired_bootstrap_interval(correct_a, correct_b, seed=3)
    assert again == (pair.difference_low, pair.difference_high)


def test_paired_resampling_is_tighter_than_resampling_each_encoder_on_its_own():
    """Images both got right cancel out: the paired interval is narrower than an unpaired one."""
    correct_a, correct_b = outcomes(150, 2, 10, 38)
    low, high = paired_bootstrap_interval(correct_a, correct_b, seed=0)
    rng = np.random.default_rng(0)
    n = len(correct_a)
    unpaired = correct_b[rng.integers(0, n, (2000, n))].mean(1) - correct_a[
        rng.integers(0, n, (2000, n))
    ].mean(1)
    unpaired_low, unpaired_high = np.quantile(unpaired, [0.025, 0.975])
    assert high - low < 0.8 * (unpaired_high - unpaired_low)


def test_encoders_get_identical_images_and_folds_and_shared_duplicate_groups():
    """Each encoder sees different near-duplicates; every pair stays in one fold for both."""
    counts = [20, 20, 20]
    first = clustered_embeddings(counts, spread=1.0, seed=1)
    second = clustered_embeddings(counts, spread=1.0, seed=2)
    first_pairs = [(0, 11), (21, 33), (42, 55), (3, 17), (24, 38)]
    second_pairs = [(5, 9), (26, 30), (45, 58), (7, 14), (28, 36)]
    for source, copy in first_pairs:
        first = with_copy(first, source, copy)
    for source, copy in second_pairs:
        second = with_copy(second, source, copy)

    # On its own, the second encoder does not know the first's duplicates and splits some.
    alone = run_probe(second, protocol="cv", seed=0, probe=FIXED_C)
    fold_alone = dict(zip(alone.evaluated.tolist(), alone.folds, strict=True))
    assert any(fold_alone[s] != fold_alone[c] for s, c in first_pairs)

    comparison = compare_encoders(
        {"first": first, "second": second}, protocol="cv", seed=0, probe=FIXED_C
    )
    one, two = comparison.results["first"], comparison.results["second"]
    np.testing.assert_array_equal(one.evaluated, two.evaluated)
    assert one.folds == two.folds
    fold_of = dict(zip(one.evaluated.tolist(), one.folds, strict=True))
    for source, copy in first_pairs + second_pairs:
        assert fold_of[source] == fold_of[copy]
    assert any("duplicates under at least one encoder" in m for m in comparison.messages)


def test_shared_groups_are_the_union_of_each_encoders_duplicate_links():
    first = with_copy(clustered_embeddings([10, 10], seed=1), 0, 1)
    second = with_copy(with_copy(clustered_embeddings([10, 10], seed=2), 1, 2), 12, 13)
    groups = shared_duplicate_groups([first, second])
    assert groups[0] == groups[1] == groups[2]  # 0~1 under first, 1~2 under second
    assert groups[12] == groups[13]
    assert len(np.unique(groups)) == 20 - 3


def test_a_clearly_better_encoder_wins_with_a_positive_interval():
    weak = clustered_embeddings([40, 40, 40], spread=1.6, seed=1)
    strong = clustered_embeddings([40, 40, 40], spread=0.4, seed=2)
    comparison = compare_encoders({"weak": weak, "strong": strong}, seed=0, probe=FIXED_C)
    (pair,) = comparison.pairs
    assert (pair.a, pair.b) == ("weak", "strong")
    assert pair.p_value < 0.05
    assert 0 < pair.difference_low <= pair.difference <= pair.difference_high
    assert pair.accuracy_a == pytest.approx(comparison.encoders[0].accuracy.value)
    assert pair.accuracy_b == pytest.approx(comparison.encoders[1].accuracy.value)
    assert pair.sentence().startswith(f"strong is better by {100 * pair.difference:.1f} points")
    # The same pair the other way round names the same winner.
    flipped = compare_encoders({"strong": strong, "weak": weak}, seed=0, probe=FIXED_C).pairs[0]
    assert flipped.difference == pytest.approx(-pair.difference)
    assert flipped.sentence().startswith("strong is better by")


def test_identical_encoders_show_no_difference():
    embeddings = clustered_embeddings([20, 20], spread=1.2, seed=4)
    comparison = compare_encoders({"x": embeddings, "y": embeddings}, seed=0, probe=FIXED_C)
    (pair,) = comparison.pairs
    assert pair.difference == 0
    assert (pair.difference_low, pair.difference_high) == (0, 0)
    assert pair.p_value == 1
    assert pair.sentence().startswith("no clear difference between x and y: 0.0 points")


def test_tables_have_exactly_the_documented_columns():
    names = ["alpha", "beta", "gamma"]
    encoders = {
        name: clustered_embeddings([15, 15], spread=0.5 + 0.4 * i, seed=i)
        for i, name in enumerate(names)
    }
    comparison = compare_encoders(
        encoders, seed=0, probe=FIXED_C, images_per_second={"alpha": 120.0}
    )
    table = comparison_table(comparison)
    assert list(table.columns) == [
        "encoder",
        "dim",
        "images_per_second",
        "accuracy",
        "accuracy_low",
        "accuracy_high",
        "balanced_accuracy",
        "balanced_accuracy_low",
        "balanced_accuracy_high",
    ]
    assert table["encoder"].tolist() == names
    assert table["images_per_second"].iloc[0] == 120.0
    assert table["images_per_second"].iloc[1:].isna().all()

    pairs = pairs_table(comparison)
    assert list(pairs.columns) == [
        "a",
        "b",
        "accuracy_a",
        "accuracy_b",
        "difference",
        "difference_low",
        "difference_high",
        "p_value",
        "only_a_correct",
        "only_b_correct",
    ]
    assert list(zip(pairs["a"], pairs["b"], strict=True)) == [
        ("alpha", "beta"),
        ("alpha", "gamma"),
        ("beta", "gamma"),
    ]

    per_image = per_image_table(comparison)
    assert list(per_image.columns) == ["path", "true", *names]
    assert len(per_image) == len(comparison.paths) == 30
    for name in names:
        result = comparison.results[name]
        expected = [result.class_names[k] for k in result.predictions]
        assert per_image[name].tolist() == expected
    assert per_image["true"].tolist() == [p.split("/")[0] for p in per_image["path"]]


def test_an_image_missing_from_one_encoder_is_dropped_for_all_with_a_message():
    full = clustered_embeddings([12, 12], seed=1)
    other = clustered_embeddings([12, 12], seed=2)
    # the other encoder could not decode image 5, and lists its images in another order
    order = np.random.default_rng(0).permutation([i for i in range(24) if i != 5])
    partial = dataclasses.replace(
        other,
        vectors=other.vectors[order],
        labels=other.labels[order],
        paths=[other.paths[i] for i in order],
    )
    aligned, _ = align_by_path({"full": full, "partial": partial})
    assert aligned["full"].paths == aligned["partial"].paths
    assert full.paths[5] not in aligned["full"].paths and len(aligned["full"]) == 23
    row = aligned["partial"].paths.index(other.paths[7])
    np.testing.assert_array_equal(aligned["partial"].vectors[row], other.vectors[7])
    np.testing.assert_array_equal(aligned["full"].labels, aligned["partial"].labels)

    comparison = compare_encoders({"full": full, "partial": partial}, seed=0, probe=FIXED_C)
    assert full.paths[5] not in comparison.paths and len(comparison.paths) == 23
    (message,) = [m for m in comparison.messages if "dropped" in m]
    assert "partial" in message and full.paths[5] in message


def test_encoders_disagreeing_on_a_label_are_refused():
    first = clustered_embeddings([10, 10], seed=1)
    second = clustered_embeddings([10, 10], seed=2)
    labels = second.labels.copy()
    labels[0] = 1
    with pytest.raises(ValueError, match="different labels"):
        align_by_path({"first": first, "second": dataclasses.replace(second, labels=labels)})


def scored(name: str, low: float, high: float) -> EncoderScore:
    accuracy = Estimate((low + high) / 2, low, high, "test")
    return EncoderScore(name, 8, float("nan"), accuracy, accuracy)


def comparison_of(*scores: EncoderScore) -> Comparison:
    return Comparison(
        encoders=scores,
        pairs=(),
        paths=(),
        true=(),
        predicted={},
        results={},
        protocol=ProtocolChoice("cv", "test", n_folds=5),
    )


def test_baseline_warning_fires_only_when_the_intervals_overlap():
    def weight_free(name: str) -> bool:
        return name == "pixels"

    overlapping = comparison_of(scored("pixels", 0.60, 0.75), scored("clip", 0.70, 0.85))
    (warning,) = baseline_warnings(overlapping, weight_free)
    assert warning == (
        "a trivial baseline (pixels) does about as well as clip: your classes may differ in"
        " colour or layout rather than content"
    )
    apart = comparison_of(scored("pixels", 0.40, 0.55), scored("clip", 0.80, 0.95))
    assert baseline_warnings(apart, weight_free) == []
    only_baselines = comparison_of(scored("pixels", 0.60, 0.75))
    assert baseline_warnings(only_baselines, weight_free) == []


def test_on_the_same_images_the_paired_comparison_decides_the_baseline_warning():
    def weight_free(name: str) -> bool:
        return name == "pixels"

    def with_pair(difference: float, low: float, high: float, p_value: float) -> Comparison:
        # the demo's case: marginal intervals overlap (0.43-0.60 against 0.58-0.74) ...
        overlapping = comparison_of(scored("clip", 0.58, 0.74), scored("pixels", 0.43, 0.60))
        pair = PairedComparison(
            "clip", "pixels", 0.667, 0.667 + difference, difference, low, high, p_value, 36, 14
        )
        return dataclasses.replace(overlapping, pairs=(pair,))

    # ... but image by image the encoder is clearly better: no warning
    assert baseline_warnings(with_pair(-0.153, -0.25, -0.062, 0.0026), weight_free) == []
    (unclear,) = baseline_warnings(with_pair(-0.05, -0.12, 0.02, 0.2), weight_free)
    assert unclear.startswith(
        "a trivial baseline (pixels) does about as well as clip (no clear difference on the same"
        " images)"
    )
    (ahead,) = baseline_warnings(with_pair(0.10, 0.04, 0.16, 0.001), weight_free)
    assert ahead.startswith("a trivial baseline (pixels) does better than clip:")
