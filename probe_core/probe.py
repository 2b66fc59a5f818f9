"""The linear probe: multinomial logistic regression (L-BFGS) with C chosen on validation data.

``LinearProbe.fit`` only ever sees training data: it carves a stratified validation
split out of what it is given (or uses stratified k-fold when that is too small),
sweeps C over a log grid, then refits on everything it was given at the chosen C.
Which images train and which score it is the business of ``probe_core.evaluation``.
"""

from __future__ import annotations

import contextlib
import warnings
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold, train_test_split
from sklearn.utils.validation import check_is_fitted
from threadpoolctl import threadpool_limits

if TYPE_CHECKING:
    from .evaluation.protocols import ProbeResult

DEFAULT_C_GRID = tuple(float(c) for c in np.logspace(-3, 4, 15))
DEFAULT_C = 1.0  # scikit-learn's default, used when too few images are left to choose C
C_LIMITS = (1e-6, 1e6)  # the CLIP paper's search range; the grid is extended up to these
MIN_IMAGES_PER_CLASS = 2
MIN_VALIDATION_PER_CLASS = 2  # below this, C is chosen by stratified k-fold instead
SELECTIONS = ("auto", "kfold")
SMALL_PROBLEM_ELEMENTS = 2_000_000  # below this many X entries, fits run on one BLAS thread


class ProbeError(ValueError):
    """The data cannot support a probe (e.g. a single class)."""


@dataclass(frozen=True)
class SweepResult:
    """Validation accuracy (and log loss) for each C tried, and how it was measured.

    The chosen C has the best validation accuracy; ties go to the lower validation
    log loss, so a perfectly separable set does not pick a uselessly small C.
    ``extended`` says the grid was widened because the best C sat on its edge.
    """

    c_values: tuple[float, ...]
    scores: tuple[float, ...]
    chosen_c: float
    method: str  # "validation split" | "stratified k-fold" | "given validation set" | "fixed"
    log_losses: tuple[float, ...] = ()
    extended: bool = False


def _logistic_regression(c: float, seed: int, max_iter: int, warm_start: bool = False):
    return LogisticRegression(
        C=c, solver="lbfgs", max_iter=max_iter, random_state=seed, warm_start=warm_start
    )


def _blas_threads_for(X: np.ndarray):
    """One BLAS thread for small problems: thread start-up costs more than the many tiny
    L-BFGS steps gain from it (measured 2.5x faster cross-validation on the demo)."""
    if X.size < SMALL_PROBLEM_ELEMENTS:
        return threadpool_limits(limits=1, user_api="blas")
    return contextlib.nullcontext()


def has_groups(groups: np.ndarray | None) -> bool:
    """Whether any group holds more than one image (else group-aware splitting is moot)."""
    return groups is not None and len(np.unique(groups)) < len(groups)


def groups_per_class(labels: np.ndarray, groups: np.ndarray | None) -> dict[int, int]:
    """How many distinct groups (images, when ``groups`` is None) each class has."""
    labels = np.asarray(labels)
    groups = np.arange(len(labels)) if groups is None else np.asarray(groups)
    return {int(label): len(np.unique(groups[labels == label])) for label in np.unique(labels)}


class LinearProbe(ClassifierMixin, BaseEstimator):
    """Multinomial logistic regression whose C is chosen on held-out training data.

    Parameters
    ----------
    c_grid : C values to sweep (ascending log grid by default, 1e-3 ... 1e4). When the best
        C sits on an edge, the grid is extended in that direction, step by step, up to
        ``c_limits`` (1e-6 ... 1e6, as in the CLIP paper).
    C : a fixed C; when set, no sweep is run.
    val_size : fraction of the training data held out to choose C.
    n_folds : folds for stratified k-fold when the data is too small for a split.
    selection : "auto" (a validation split, or k-fold when too small) or "kfold" (always
        stratified k-fold cross-validation).
    seed : seeds every split and the solver.

    ``fit(X, y, groups=None, validation_mask=None)``: ``groups`` keeps duplicate images
    together on one side of every validation split; ``validation_mask`` marks a given
    validation set (e.g. a dataset's own ``val/`` folder) on which C is chosen.
    """

    def __init__(
        self,
        c_grid: tuple[float, ...] = DEFAULT_C_GRID,
        C: float | None = None,
        val_size: float = 0.2,
        n_folds: int = 5,
        selection: str = "auto",
        seed: int = 0,
        max_iter: int = 1000,
        c_limits: tuple[float, float] = C_LIMITS,
    ):
        self.c_grid = c_grid
        self.C = C
        self.val_size = val_size
        self.n_folds = n_folds
        self.selection = selection
        self.seed = seed
        self.max_iter = max_iter
        self.c_limits = c_limits

    def fit(
        self,
        X: np.ndarray,
        y: np.ndarray,
        groups: np.ndarray | None = None,
        validation_mask: np.ndarray | None = None,
    ) -> LinearProbe:
        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y)
        if len(np.unique(y)) < 2:
            raise ProbeError("a probe needs at least two classes in the training data")
        if self.selection not in SELECTIONS:
            raise ValueError(f"selection must be one of {', '.join(SELECTIONS)}")
        with warnings.catch_warnings(), _blas_threads_for(X):
            warnings.simplefilter("ignore", ConvergenceWarning)
            self.sweep_ = self._choose_c(X, y, groups, validation_mask)
            self.model_ = _logistic_regression(self.sweep_.chosen_c, self.seed, self.max_iter)
            self.model_.fit(X, y)
        self.classes_ = self.model_.classes_
        self.chosen_c_ = self.sweep_.chosen_c
        return self

    def _choose_c(
        self,
        X: np.ndarray,
        y: np.ndarray,
        groups: np.ndarray | None,
        validation_mask: np.ndarray | None,
    ) -> SweepResult:
        if self.C is not None:
            return SweepResult((float(self.C),), (float("nan"),), float(self.C), "fixed")
        grid = sorted(float(c) for c in self.c_grid)
        if not grid:
            raise ProbeError("c_grid is empty; give at least one C or a fixed C")
        if validation_mask is not None:
            mask = np.asarray(validation_mask, dtype=bool)
            splits = [(np.flatnonzero(~mask), np.flatnonzero(mask))]
            method = "given validation set"
        else:
            splits, method = self._validation_splits(y, groups)
        # A training part with one class cannot fit a probe (a class of a single image).
        splits = [(train, val) for train, val in splits if len(np.unique(y[train])) > 1]
        if not splits:
            return SweepResult(
                (DEFAULT_C,), (float("nan"),), DEFAULT_C, "default C (too few images to choose)"
            )
        labels = np.unique(y)
        measured: dict[float, tuple[float, float]] = {}
        # One warm-started model per split, left at the highest C measured so far, so
        # extending the grid upwards continues from there (high C is what is slow to fit).
        models = [
            _logistic_regression(grid[0], self.seed, self.max_iter, warm_start=True) for _ in splits
        ]

        def measure(values: list[float], warm: list[LogisticRegression] | None) -> None:
            scores, losses = self._score_path(X, y, labels, splits, values, warm)
            measured.update(zip(values, zip(scores, losses, strict=True), strict=True))

        measure(grid, models)
        step = np.log10(grid[1] / grid[0]) if len(grid) > 1 else 1.0
        low_limit, high_limit = self.c_limits
        extended = False
        while True:
            cs = sorted(measured)
            best = min(cs, key=lambda c: (-measured[c][0], measured[c][1], c))
            if best == cs[0] and best / 10**step >= low_limit * (1 - 1e-9):
                measure([float(best / 10**step)], None)
            elif best == cs[-1] and best * 10**step <= high_limit * (1 + 1e-9):
                measure([float(best * 10**step)], models)
            else:
                break
            extended = True
        cs = sorted(measured)
        return SweepResult(
            tuple(cs),
            tuple(float(measured[c][0]) for c in cs),
            best,
            method,
            tuple(float(measured[c][1]) for c in cs),
            extended,
        )

    def _score_path(self, X, y, labels, splits, c_values: list[float], models=None):
        """Mean validation accuracy and log loss over the splits for each C (ascending).

        ``models`` (one per split) are warm-started and continued; without them each
        split starts cold.
        """
        scores, losses = np.zeros(len(c_values)), np.zeros(len(c_values))
        for split_number, (train_index, val_index) in enumerate(splits):
            model = (
                models[split_number]
                if models is not None
                else _logistic_regression(c_values[0], self.seed, self.max_iter, True)
            )
            # Ascending C with warm starts: each fit begins from the previous solution.
            for position, c in enumerate(c_values):
                model.set_params(C=c)
                model.fit(X[train_index], y[train_index])
                probabilities = np.zeros((len(val_index), len(labels)))
                columns = np.searchsorted(labels, model.classes_)
                probabilities[:, columns] = model.predict_proba(X[val_index])
                predicted = labels[np.argmax(probabilities, axis=1)]
                scores[position] += np.mean(predicted == y[val_index])
                losses[position] += log_loss(y[val_index], probabilities, labels=labels)
        return scores / len(splits), losses / len(splits)

    def _validation_splits(
        self, y: np.ndarray, groups: np.ndarray | None
    ) -> tuple[list[tuple[np.ndarray, np.ndarray]], str]:
        if has_groups(groups) and min(groups_per_class(y, groups).values()) < 2:
            groups = None  # a class is one group: C is chosen as if images were distinct
        counts = Counter(groups_per_class(y, groups))
        n_classes = len(counts)
        n_val = int(np.ceil(self.val_size * len(y)))
        grouped = has_groups(groups)
        big_enough = (
            min(counts.values()) * self.val_size >= MIN_VALIDATION_PER_CLASS and n_val >= n_classes
        )
        if self.selection == "auto" and big_enough:
            if not grouped:
                train_index, val_index = train_test_split(
                    np.arange(len(y)), test_size=self.val_size, stratify=y, random_state=self.seed
                )
                return [(train_index, val_index)], "validation split"
            n_splits = max(2, round(1 / self.val_size))
            folds = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=self.seed)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                return [next(folds.split(np.zeros(len(y)), y, groups))], "validation split"
        if max(counts.values()) < 2:
            return [], "no validation possible"  # one image per class: nothing to hold out
        n_folds = max(2, min(self.n_folds, min(counts.values())))
        if grouped:
            folds = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=self.seed)
        else:
            folds = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=self.seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # a class smaller than n_folds
            splits = list(folds.split(np.zeros(len(y)), y, groups))
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
