"""The linear probe: multinomial logistic regression (L-BFGS) with C chosen on validation data.

``LinearProbe.fit`` only ever sees training data: it carves a stratified validation
split out of what it is given (or uses stratified k-fold when that is too small),
sweeps C over a log grid, then refits on everything it was given at the chosen C.
Which images train and which score it is the business of ``probe_core.evaluation``.
"""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss
from sklearn.model_selection import StratifiedKFold, train_test_split
from sklearn.utils.validation import check_is_fitted

if TYPE_CHECKING:
    from .evaluation.protocols import ProbeResult

DEFAULT_C_GRID = tuple(float(c) for c in np.logspace(-3, 4, 15))
MIN_IMAGES_PER_CLASS = 2
MIN_VALIDATION_PER_CLASS = 2  # below this, C is chosen by stratified k-fold instead


class ProbeError(ValueError):
    """The data cannot support a probe (e.g. a single class)."""


@dataclass(frozen=True)
class SweepResult:
    """Validation accuracy (and log loss) for each C tried, and how it was measured.

    The chosen C has the best validation accuracy; ties go to the lower validation
    log loss, so a perfectly separable set does not pick a uselessly small C.
    """

    c_values: tuple[float, ...]
    scores: tuple[float, ...]
    chosen_c: float
    method: str  # "validation split" | "stratified k-fold" | "fixed"
    log_losses: tuple[float, ...] = ()


def _logistic_regression(c: float, seed: int, max_iter: int, warm_start: bool = False):
    return LogisticRegression(
        C=c, solver="lbfgs", max_iter=max_iter, random_state=seed, warm_start=warm_start
    )


class LinearProbe(ClassifierMixin, BaseEstimator):
    """Multinomial logistic regression whose C is chosen on held-out training data.

    Parameters
    ----------
    c_grid : C values to sweep (ascending log grid by default, 1e-3 ... 1e4).
    C : a fixed C; when set, no sweep is run.
    val_size : fraction of the training data held out to choose C.
    n_folds : folds for stratified k-fold when the data is too small for a split.
    seed : seeds every split and the solver.
    """

    def __init__(
        self,
        c_grid: tuple[float, ...] = DEFAULT_C_GRID,
        C: float | None = None,
        val_size: float = 0.2,
        n_folds: int = 5,
        seed: int = 0,
        max_iter: int = 1000,
    ):
        self.c_grid = c_grid
        self.C = C
        self.val_size = val_size
        self.n_folds = n_folds
        self.seed = seed
        self.max_iter = max_iter

    def fit(self, X: np.ndarray, y: np.ndarray) -> LinearProbe:
        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y)
        if len(np.unique(y)) < 2:
            raise ProbeError("a probe needs at least two classes in the training data")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            self.sweep_ = self._choose_c(X, y)
            self.model_ = _logistic_regression(self.sweep_.chosen_c, self.seed, self.max_iter)
            self.model_.fit(X, y)
        self.classes_ = self.model_.classes_
        self.chosen_c_ = self.sweep_.chosen_c
        return self

    def _choose_c(self, X: np.ndarray, y: np.ndarray) -> SweepResult:
        if self.C is not None:
            return SweepResult((float(self.C),), (float("nan"),), float(self.C), "fixed")
        grid = tuple(sorted(float(c) for c in self.c_grid))
        if not grid:
            raise ProbeError("c_grid is empty; give at least one C or a fixed C")
        splits, method = self._validation_splits(y)
        labels = np.unique(y)
        scores, losses = np.zeros(len(grid)), np.zeros(len(grid))
        for train_index, val_index in splits:
            # Ascending C with warm starts: each fit begins from the previous solution.
            model = _logistic_regression(grid[0], self.seed, self.max_iter, warm_start=True)
            for position, c in enumerate(grid):
                model.set_params(C=c)
                model.fit(X[train_index], y[train_index])
                probabilities = np.zeros((len(val_index), len(labels)))
                columns = np.searchsorted(labels, model.classes_)
                probabilities[:, columns] = model.predict_proba(X[val_index])
                predicted = labels[np.argmax(probabilities, axis=1)]
                scores[position] += np.mean(predicted == y[val_index])
                losses[position] += log_loss(y[val_index], probabilities, labels=labels)
        scores /= len(splits)
        losses /= len(splits)
        best = min(range(len(grid)), key=lambda i: (-scores[i], losses[i], grid[i]))
        return SweepResult(
            grid,
            tuple(float(s) for s in scores),
            grid[best],
            method,
            tuple(float(v) for v in losses),
        )

    def _validation_splits(self, y: np.ndarray) -> tuple[list[tuple[np.ndarray, np.ndarray]], str]:
        counts = Counter(y.tolist())
        n_classes = len(counts)
        n_val = int(np.ceil(self.val_size * len(y)))
        if min(counts.values()) * self.val_size >= MIN_VALIDATION_PER_CLASS and n_val >= n_classes:
            train_index, val_index = train_test_split(
                np.arange(len(y)), test_size=self.val_size, stratify=y, random_state=self.seed
            )
            return [(train_index, val_index)], "validation split"
        n_folds = max(2, min(self.n_folds, min(counts.values())))
        folds = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=self.seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # a class smaller than n_folds
            splits = list(folds.split(np.zeros(len(y)), y))
        return splits, f"stratified {n_folds}-fold"

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        check_is_fitted(self, "model_")
        return self.model_.predict_proba(np.asarray(X, dtype=np.float64))

    def predict(self, X: np.ndarray) -> np.ndarray:
        check_is_fitted(self, "model_")
        return self.model_.predict(np.asarray(X, dtype=np.float64))

    @property
    def coef_(self) -> np.ndarray:
        return self.model_.coef_

    @property
    def intercept_(self) -> np.ndarray:
        return self.model_.intercept_


@dataclass(frozen=True)
class ProbeWeights:
    """A fitted probe as plain arrays: what the export files hold (never pickle)."""

    coef: np.ndarray  # (n_classes, dim); binary probes are stored as two symmetric rows
    intercept: np.ndarray  # (n_classes,)
    class_names: list[str]
    encoder_id: str
    chosen_c: float
    encoder_name: str = ""  # the name load_encoder takes, to embed new images the same way

    @classmethod
    def from_result(
        cls, result: ProbeResult, encoder_id: str, encoder_name: str = ""
    ) -> ProbeWeights:
        coef, intercept = result.probe.coef_, result.probe.intercept_
        if coef.shape[0] == 1:  # scikit-learn keeps one row for two classes
            coef = np.vstack([-coef, coef]) / 2
            intercept = np.array([-intercept[0], intercept[0]]) / 2
        return cls(
            np.ascontiguousarray(coef, dtype=np.float32),  # scikit-learn's coef_ may be F-order
            np.ascontiguousarray(intercept, dtype=np.float32),
            list(result.class_names),
            encoder_id,
            float(result.chosen_c),
            encoder_name,
        )

    def predict_proba(self, vectors: np.ndarray) -> np.ndarray:
        logits = vectors @ self.coef.T + self.intercept
        logits -= logits.max(axis=1, keepdims=True)
        weights = np.exp(logits)
        return weights / weights.sum(axis=1, keepdims=True)
