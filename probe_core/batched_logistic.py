"""Many small L2-regularised multinomial logistic regressions, fitted at once (numpy + scipy).

Each problem ``p`` minimises scikit-learn's objective for ``LogisticRegression(penalty="l2",
solver="lbfgs")`` (as ``torch_probe`` documents it): the weighted mean cross-entropy plus
``||W_p||^2 / (2 * C_p * S_p)`` (``S_p``: the problem's weight sum), intercept unpenalised;
two classes keep two rows penalised by ``||W_p||^2 / (C_p * S_p)``, which at the optimum
(``w0 = -w1``) is scikit-learn's binomial objective on ``w1 - w0``.

All problems go to one scipy L-BFGS-B run (scikit-learn's own solver and options) on the sum
of their objectives. They share no parameter, so the sum's minimum is every problem's own
minimum, and the stop on the largest gradient entry (``tol``, scikit-learn's ``gtol``) holds
for each problem at once. One run over stacked arrays replaces a Python loop of tiny fits.

With fewer training rows than features (the few-shot regime), each problem is solved in the
span of its own rows: ``X = U S V^T`` (from the eigendecomposition of the Gram matrix
``X X^T``) and ``W = V beta``. The penalised optimum lies in that span (where the loss
gradient ``X^T (P - Y)`` does), and ``||W|| = ||beta||``, so the problem in ``Z = U S``
(``r <= n`` columns instead of ``d``) has the same optimum and the same conditioning.

Rows of weight 0 are padding: problems of different sizes are stacked to one shape.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy.optimize import minimize

DEFAULT_TOL = 1e-4  # scikit-learn's tol (L-BFGS-B's gtol), as LinearProbe's
DEFAULT_MAX_ITER = 1000
RANK_TOLERANCE = 1e-10  # Gram eigenvalues below this share of the largest span no data


@dataclass(frozen=True)
class BatchedFit:
    """Fitted weights of every problem, ``coef`` (B, r, K) and ``intercept`` (B, K), in the
    coordinates of the rows they were fitted on (``in_features`` maps them back)."""

    coef: np.ndarray
    intercept: np.ndarray
    n_iter: int = 0
    converged: bool = True

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """Logits (B, m, K) of rows ``X``: (m, r) shared by all problems, or (B, m, r)."""
        return np.matmul(X, self.coef) + self.intercept[:, None, :]

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.decision_function(X).argmax(axis=-1)

    def take(self, problems) -> BatchedFit:
        """The fits of some problems only (an index array or a slice)."""
        return replace(self, coef=self.coef[problems], intercept=self.intercept[problems])

    def blend(self, other: BatchedFit, weight: float) -> BatchedFit:
        """``(1 - weight) * self + weight * other``: a warm start between two solutions."""
        return BatchedFit(
            (1 - weight) * self.coef + weight * other.coef,
            (1 - weight) * self.intercept + weight * other.intercept,
        )


def span_coordinates(
    X: np.ndarray, weight: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """``(Z, basis)``: each problem's rows (B, n, d) in an orthonormal basis of their span,
    ``Z = U S`` (B, n, n), and that basis ``V = X^T U S^-1`` (B, d, n) (``gram_span``).
    Rows of ``weight`` 0 are left out of the span. With ``n >= d`` there is nothing to gain:
    ``(X, None)``."""
    X = np.array(X, dtype=np.float64)
    if weight is not None:
        X[np.asarray(weight) <= 0] = 0.0
    if X.shape[1] >= X.shape[2]:
        return X, None
    Z, inverse = gram_span(np.matmul(X, X.transpose(0, 2, 1)))
    return Z, np.matmul(X.transpose(0, 2, 1), inverse)


def gram_span(gram: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(Z, inverse)`` from the Gram matrices ``X X^T`` (B, n, n) of each problem's rows:
    with ``X X^T = U S^2 U^T``, ``Z = U S`` are the rows in an orthonormal basis of their
    span, and other rows ``Y`` map into it as ``(Y X^T) @ inverse``, ``inverse = U S^-1``
    (the basis itself is ``X^T @ inverse``). Directions without data (eigenvalues below
    ``RANK_TOLERANCE`` of the largest: zero rows, copies) are zero columns in both."""
    eigenvalues, eigenvectors = np.linalg.eigh(gram)
    largest = np.maximum(eigenvalues[:, -1:], np.finfo(float).tiny)
    kept = eigenvalues > RANK_TOLERANCE * largest
    scale = np.sqrt(np.where(kept, eigenvalues, 1.0))
    Z = eigenvectors * np.where(kept, scale, 0.0)[:, None, :]
    return Z, eigenvectors * np.where(kept, 1 / scale, 0.0)[:, None, :]


def in_features(fit: BatchedFit, basis: np.ndarray | None) -> BatchedFit:
    """A fit in span coordinates mapped to the features: ``coef`` (B, d, K)."""
    return fit if basis is None else replace(fit, coef=np.matmul(basis, fit.coef))


def in_span(fit: BatchedFit, basis: np.ndarray | None) -> BatchedFit:
    """Feature-space weights projected onto each problem's span (a warm start)."""
    if basis is None:
        return fit
    return replace(fit, coef=np.matmul(np.ascontiguousarray(basis.transpose(0, 2, 1)), fit.coef))


class LogisticBatch:
    """``B`` problems stacked to one shape, fitted at any C.

    ``X`` (B, n, r) rows (features, or ``span_coordinates``), ``y`` (B, n) labels in
    ``0..n_classes-1``, ``weight`` (B, n) with 0 for padding rows (default: all 1).
    """

    def __init__(
        self,
        X: np.ndarray,
        y: np.ndarray,
        n_classes: int,
        weight: np.ndarray | None = None,
    ):
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 3:
            raise ValueError(f"X must have shape (problems, rows, features), got {X.shape}")
        n_problems, n_rows, _ = X.shape
        y = np.asarray(y)
        weight = np.ones((n_problems, n_rows)) if weight is None else np.asarray(weight, float)
        if y.shape != (n_problems, n_rows) or weight.shape != (n_problems, n_rows):
            raise ValueError(f"y and weight must have shape {(n_problems, n_rows)} like X's rows")
        if n_classes < 2:
            raise ValueError("a logistic regression needs at least two classes")
        if y.size and (y.min() < 0 or y.max() >= n_classes):
            raise ValueError(f"labels must lie in 0..{n_classes - 1}")
        totals = weight.sum(axis=1)
        if np.any(totals <= 0):
            raise ValueError("every problem needs at least one row of positive weight")
        self.n_classes = n_classes
        self.X = X
        self.X_transposed = np.ascontiguousarray(X.transpose(0, 2, 1))
        self.totals = totals
        self.share = weight / totals[:, None]
        self.targets = np.zeros((n_problems, n_rows, n_classes))
        np.put_along_axis(self.targets, y[..., None].astype(np.int64), 1.0, axis=2)

    def __len__(self) -> int:
        return len(self.totals)

    def take(self, problems) -> LogisticBatch:
        """Some problems only (an index array or a slice)."""
        taken = object.__new__(LogisticBatch)
        taken.n_classes = self.n_classes
        for name in ("X", "X_transposed", "totals", "share", "targets"):
            setattr(taken, name, getattr(self, name)[problems])
        return taken

    def fit(
        self,
        C: np.ndarray | float,
        *,
        init: BatchedFit | None = None,
        tol: float = DEFAULT_TOL,
        max_iter: int = DEFAULT_MAX_ITER,
    ) -> BatchedFit:
        """Every problem at its ``C`` (one per problem, or one for all), warm-started from
        ``init`` (a fit in the same coordinates) or from zero."""
        n_problems, n_classes = len(self), self.n_classes
        C = np.broadcast_to(np.asarray(C, dtype=np.float64), (n_problems,))
        if np.any(C <= 0):
            raise ValueError("C must be positive")
        # Inside, each problem's weights are (K, r) and its logits (K, n): the reductions over
        # the few classes then run across rows (several times faster than along a short axis).
        X, X_transposed = self.X, self.X_transposed
        rank = X.shape[2]
        n_coef = n_problems * rank * n_classes
        weighted_targets = self.targets.transpose(0, 2, 1) * self.share[:, None, :]
        share = self.share[:, None, :]
        penalty = np.repeat((1.0 if n_classes == 2 else 0.5) / (C * self.totals), rank * n_classes)
        ones = np.ones(X.shape[1])

        def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
            flat = theta[:n_coef]
            coef = flat.reshape(n_problems, n_classes, rank)
            logits = np.matmul(coef, X_transposed)
            logits += theta[n_coef:].reshape(n_problems, n_classes, 1)
            logits -= logits.max(axis=1, keepdims=True)
            residual = np.exp(logits)
            norm = residual.sum(axis=1, keepdims=True)
            loss = np.vdot(share, np.log(norm)) - np.vdot(weighted_targets, logits)
            loss += np.vdot(penalty * flat, flat)
            residual *= share / norm
            residual -= weighted_targets  # (probabilities - targets) * share
            gradient = np.empty_like(theta)
            np.matmul(residual, X, out=gradient[:n_coef].reshape(n_problems, n_classes, rank))
            gradient[:n_coef] += 2 * penalty * flat
            gradient[n_coef:] = np.matmul(residual, ones).ravel()
            return float(loss), gradient

        theta0 = np.zeros(n_coef + n_problems * n_classes)
        if init is not None:
            theta0[:n_coef] = np.asarray(init.coef, dtype=np.float64).transpose(0, 2, 1).ravel()
            theta0[n_coef:] = np.asarray(init.intercept, dtype=np.float64).ravel()
        found = minimize(
            objective,
            theta0,
            jac=True,
            method="L-BFGS-B",
            options={
                "maxiter": max_iter,
                "maxls": 50,
                "gtol": tol,
                "ftol": 64 * np.finfo(float).eps,
            },
        )
        coef = found.x[:n_coef].reshape(n_problems, n_classes, rank).transpose(0, 2, 1)
        return BatchedFit(
            coef=np.ascontiguousarray(coef),
            intercept=found.x[n_coef:].reshape(n_problems, n_classes).copy(),
            n_iter=int(found.nit),
            converged=bool(found.success),
        )


def fit_batched_logistic(
    X: np.ndarray,
    y: np.ndarray,
    C: np.ndarray | float,
    n_classes: int,
    *,
    weight: np.ndarray | None = None,
    tol: float = DEFAULT_TOL,
    max_iter: int = DEFAULT_MAX_ITER,
) -> BatchedFit:
    """Fit ``B`` problems on their features ``X`` (B, n, d) in their span; ``coef`` (B, d, K)."""
    Z, basis = span_coordinates(X, weight)
    fit = LogisticBatch(Z, y, n_classes, weight).fit(C, tol=tol, max_iter=max_iter)
    return in_features(fit, basis)
