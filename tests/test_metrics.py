"""Metrics agree with scikit-learn and carry honest bootstrap intervals."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import balanced_accuracy_score, f1_score, top_k_accuracy_score

from probe_core.evaluation.metrics import _bootstrap_scores, compute_metrics


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
    for estimate in (small.accuracy, small.balanced_accuracy, small.macro_f1):
        assert estimate.low <= estimate.value <= estimate.high
    assert (large.accuracy.high - large.accuracy.low) < (
        small.accuracy.high - small.accuracy.low
    ) / 3


def test_bootstrap_resample_metrics_equal_scikit_learn_on_each_resample():
    y_true, y_pred, _ = noisy_predictions(n=50, n_classes=3)
    scores = _bootstrap_scores(y_true, y_pred, None, 3, n_resamples=5, seed=11)
    rng = np.random.default_rng(11)
    resamples = rng.integers(0, 50, size=(5, 50))
    for row, index in enumerate(resamples):
        t, p = y_true[index], y_pred[index]
        assert np.isclose(scores["accuracy"][row], np.mean(t == p))
        assert np.isclose(scores["balanced_accuracy"][row], balanced_accuracy_score(t, p))
        assert np.isclose(scores["macro_f1"][row], f1_score(t, p, average="macro"))


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
    assert first.accuracy == second.accuracy
    document = first.to_dict()
    assert document["confusion"] == first.confusion.tolist()
    assert document["per_class"][0]["name"] == "a"
