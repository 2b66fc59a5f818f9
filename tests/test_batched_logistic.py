"""Many small logistic regressions at once: each one is scikit-learn's own fit."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from probe_core.batched_logistic import (
    LogisticBatch,
    fit_batched_logistic,
    span_coordinates,
)

TIGHT = {"tol": 1e-10, "max_iter": 10_000}


def problems(n_problems: int, n_rows: int, dim: int, n_classes: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_problems, n_rows, dim))
    X /= np.linalg.norm(X, axis=2, keepdims=True)
    y = np.stack([rng.permutation(np.arange(n_rows) % n_classes) for _ in range(n_problems)])
    return X, y


def probabilities(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


@pytest.mark.parametrize(
    ("n_rows", "dim", "n_classes"),
    [
        (24, 300, 6),  # fewer rows than features: solved in the span of the rows
        (12, 40, 2),  # two classes: scikit-learn's binomial objective
        (60, 8, 3),  # more rows than features: solved on the features
    ],
)
def test_each_problem_gets_scikit_learns_solution_at_its_own_c(n_rows, dim, n_classes):
    X, y = problems(3, n_rows, dim, n_classes)
    X[0, 1] = X[0, 0]  # a copied row leaves the span one dimension short
    c_values = np.array([0.3, 3.0, 30.0])
    fitted = fit_batched_logistic(X, y, c_values, n_classes, **TIGHT)
    assert fitted.coef.shape == (3, dim, n_classes)
    new_rows = np.random.default_rng(1).normal(size=(20, dim))
    ours = probabilities(fitted.decision_function(new_rows))
    for problem, c in enumerate(c_values):
        reference = LogisticRegression(C=c, **TIGHT).fit(X[problem], y[problem])
        np.testing.assert_allclose(ours[problem], reference.predict_proba(new_rows), atol=2e-4)


def test_padding_rows_of_weight_zero_change_nothing():
    X, y = problems(2, 18, 50, 3)
    alone = fit_batched_logistic(X[:1, :12], y[:1, :12], 1.0, 3, **TIGHT)
    weight = np.ones((2, 18))
    weight[0, 12:] = 0  # problem 0 is 12 rows long, padded to 18 with other rows
    padded = fit_batched_logistic(X, y, 1.0, 3, weight=weight, **TIGHT)
    rows = X[1]
    np.testing.assert_allclose(
        padded.decision_function(rows)[0], alone.decision_function(rows)[0], atol=1e-6
    )


def test_the_span_coordinates_keep_every_inner_product():
    X, _ = problems(4, 10, 64, 2)
    Z, basis = span_coordinates(X)
    assert Z.shape == (4, 10, 10) and basis.shape == (4, 64, 10)
    np.testing.assert_allclose(Z @ Z.transpose(0, 2, 1), X @ X.transpose(0, 2, 1), atol=1e-12)
    np.testing.assert_allclose(X @ basis, Z, atol=1e-12)  # the basis maps rows to Z
    many_rows, _ = problems(1, 80, 16, 2)
    same, none = span_coordinates(many_rows)
    assert none is None and np.array_equal(same, many_rows)


def test_a_warm_start_reaches_the_same_solution_as_a_cold_one():
    X, y = problems(4, 30, 20, 4, seed=3)
    batch = LogisticBatch(X, y, 4)
    cold = batch.fit(10.0, **TIGHT)
    warm = batch.fit(10.0, init=batch.fit(1.0), **TIGHT)
    np.testing.assert_allclose(
        warm.decision_function(X[0]), cold.decision_function(X[0]), atol=1e-5
    )
    assert warm.n_iter < cold.n_iter


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"C": 0.0}, "C must be positive"),
        ({"y": np.full((2, 5), 3)}, "labels must lie"),
        ({"weight": np.zeros((2, 5))}, "positive weight"),
        ({"y": np.zeros((2, 4), dtype=int)}, "shape"),
    ],
)
def test_malformed_problems_are_refused(change, message):
    X, y = problems(2, 5, 3, 3)
    arguments = {"X": X, "y": y, "C": 1.0, "n_classes": 3} | change
    with pytest.raises(ValueError, match=message):
        fit_batched_logistic(**arguments)
