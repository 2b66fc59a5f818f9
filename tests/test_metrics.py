"""Metrics agree with scikit-learn and carry honest intervals (methods in test_intervals)."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import balanced_accuracy_score, f1_score, top_k_accuracy_score

from probe_core.evaluation.intervals import (
    BETA_POSTERIOR,
    CLOPPER_PEARSON,
    DIRICHLET_POSTERIOR,
    proportion_interval,
)
from probe_core.evaluation.metrics import Estimate, compute_metrics


def noisy_predictions(n: int = 200, n_classes: int = 4, accuracy: float = 0.7, seed: int = 0):
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, n_classes, n)
    y_pred = np.where(rng.random(n) < accuracy, y_true, rng.integers(0, n_classes, n))
    probabilities = rng.dirichlet(np.ones(n_classes), n)
    probabilities[np.arange(n), y_pred] += 1.0
    return y_true, y_pred, probabilities / probabilities.sum(axis=1, keepdims=True)


def test_point_estimates_match_scikit_learn():
    y_true, y_pred, probabilities = noisy_predictions()
    names = ["a", "b", "c", "d"]
    metrics = compute_metrics(y_true, y_pred, probabilities, names)
    assert metrics.accuracy.value == np.mean(y_true == y_pred)
    assert metrics.balanced_accuracy.value == balanced_accuracy_score(y_true, y_pred)
    assert metrics.macro_f1.value == f1_score(y_true, y_pred, average="macro")
    assert metrics.top5_accuracy is None  # only beyond five classes
    assert metrics.confusion.sum() == len(y_true)
    assert metrics.confusion[1, 2] == np.sum((y_true == 1) & (y_pred == 2))
    assert [c.name for c in metrics.per_class] == names
    assert sum(c.support for c in metrics.per_class) == len(y_true)


def test_intervals_contain_the_estimate_and_narrow_with_more_data():
    small = compute_metrics(*noisy_predictions(n=60), ["a", "b", "c", "d"])
    large = compute_metrics(*noisy_predictions(n=2000), ["a", "b", "c", "d"])
    for metric in ("accuracy", "balanced_accuracy", "macro_f1"):
        small_estimate, large_estimate = getattr(small, metric), getattr(large, metric)
        assert small_estimate.low < small_estimate.value < small_estimate.high
        assert large_estimate.low < large_estimate.value < large_estimate.high
        small_width = small_estimate.high - small_estimate.low
        assert large_estimate.high - large_estimate.low < small_width / 3


def test_each_metric_uses_its_interval_method():
    y_true, y_pred, probabilities = noisy_predictions(n=300, n_classes=8, accuracy=0.4)
    metrics = compute_metrics(y_true, y_pred, probabilities, [str(i) for i in range(8)])
    assert metrics.accuracy == proportion_interval(int(np.sum(y_true == y_pred)), 300)
    assert metrics.accuracy.method == CLOPPER_PEARSON
    assert metrics.top5_accuracy.method == CLOPPER_PEARSON
    assert metrics.balanced_accuracy.method == BETA_POSTERIOR
    assert metrics.macro_f1.method == DIRICHLET_POSTERIOR
    assert type(metrics.accuracy) is Estimate  # still importable from metrics


def test_a_perfect_small_test_set_is_not_reported_as_certain():
    y_true = np.repeat([0, 1, 2], 3)
    probabilities = np.eye(3)[y_true]
    metrics = compute_metrics(y_true, y_true, probabilities, ["a", "b", "c"])
    for estimate in (metrics.accuracy, metrics.balanced_accuracy, metrics.macro_f1):
        assert (estimate.value, estimate.high) == (1.0, 1.0)
        assert estimate.low < 0.9
    assert str(metrics.accuracy) == "1.000 (95% CI 0.664-1.000)"


def test_top5_accuracy_appears_beyond_five_classes_and_matches_scikit_learn():
    y_true, y_pred, probabilities = noisy_predictions(n=300, n_classes=8, accuracy=0.4)
    metrics = compute_metrics(y_true, y_pred, probabilities, [str(i) for i in range(8)])
    assert metrics.top5_accuracy is not None
    expected = top_k_accuracy_score(y_true, probabilities, k=5, labels=np.arange(8))
    assert np.isclose(metrics.top5_accuracy.value, expected)
    assert metrics.top5_accuracy.low <= metrics.top5_accuracy.value <= metrics.top5_accuracy.high


def test_metrics_are_reproducible_and_serialisable():
    args = noisy_predictions()
    first = compute_metrics(*args, ["a", "b", "c", "d"], seed=3)
    second = compute_metrics(*args, ["a", "b", "c", "d"], seed=3)
    assert first.to_dict() == second.to_dict()  # the macro-F1 draws are seeded
    document = first.to_dict()
    assert document["confusion"] == first.confusion.tolist()
    assert document["per_class"][0]["name"] == "a"
    assert document["accuracy"]["method"] == CLOPPER_PEARSON
