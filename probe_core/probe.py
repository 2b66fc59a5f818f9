"""The linear probe: multinomial logistic regression (Newton-CG) with C chosen on validation data.

``LinearProbe.fit`` only ever sees training data: it carves a stratified validation
split out of what it is given (or uses stratified k-fold when that is too small),
searches C on a log grid, then refits on everything it was given at the chosen C.
Which images train and which score it is the business of ``probe_core.evaluation``.

Choosing C: the one-standard-error rule (``choose_c``, ``DEFAULT_C_RULE``): every validation
image's log loss is pooled over the inner splits, and the smallest C (the strongest
regularisation) whose mean validation log loss is within one standard error of the lowest
wins. Log loss moves smoothly with the weights, so noise of 1e-6 in the embeddings (another
CPU or torch build) does not flip the choice through a one-image tie in accuracy; the few-shot
curves (``evaluation.fewshot``) choose by the same function. From
``COARSE_TO_FINE_MIN_IMAGES`` images on, a coarse-to-fine search (as in the CLIP paper)
measures the grid every ``COARSE_STRIDE`` steps, then halves the step around the chosen C (and
the lowest-loss C it is measured from) down to the grid's own step; fewer images measure the
whole grid. Both extend past an edge of the grid towards ``C_LIMITS``. Fits along the way are
warm-started and run in float32; the final refit is a plain float64 ``LogisticRegression`` run
to ``DEFAULT_REFIT_TOL``, so that its weights, and the predictions, sit at the minimum rather
than wherever a looser stop left them (``SKLEARN_SOLVER``).
"""

from __future__ import annotations

import contextlib
import copy
import math
import warnings
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold, train_test_split
from sklearn.utils.validation import check_is_fitted
from threadpoolctl import threadpool_limits

DEFAULT_C_GRID = tuple(float(c) for c in np.logspace(-3, 4, 15))
DEFAULT_C = 1.0  # scikit-learn's default, used when too few images are left to choose C
C_LIMITS = (1e-6, 1e6)  # the CLIP paper's search range; the grid is extended up to these
MIN_IMAGES_PER_CLASS = 2
MIN_VALIDATION_PER_CLASS = 2  # below this, C is chosen by stratified k-fold instead
SELECTIONS = ("auto", "kfold")
SEARCHES = ("auto", "coarse-to-fine", "grid")
SOLVERS = ("auto", "sklearn", "torch")
# Every scikit-learn fit runs on one BLAS thread. Measured with L-BFGS: its many small steps
# gained nothing from more, and lost to start-up and spinning (on 2 cores, 7,500 x 1280: 4.6 s
# on one thread against 12.1 s on OpenBLAS's 2; 60,000 x 512, 50 classes: 2.3 s against 2.7 s).
# Newton-CG's larger products do gain (the probe on 7,500 x 1280: 5.6 s on one thread, 2.8 s
# on 2), but the limit is process-wide, and the app fits for many sessions at once: kept at 1.
BLAS_THREADS = 1
COARSE_STRIDE = 2  # grid steps between the coarse C values: a decade on the default grid
# Below this many images the whole grid is measured: validation curves on a few hundred images
# are noisy enough to hold a spike that coarse steps skip, and the grid costs little there.
COARSE_TO_FINE_MIN_IMAGES = 1000
# Solver tolerance (scikit-learn's gtol, on the largest gradient entry), as scikit-learn's.
# Looser is not safe: at zero weights that gradient is only 6e-4 to 2e-2 on embeddings that
# share a large common direction, so 1e-3 may stop before the first step, and 3e-4 already
# moved the chosen C. Tighter (to 1e-5, L-BFGS) left the chosen C of 10,000 realistic
# embeddings where it was for ~3x the iterations. See bench/probe_speed.py.
DEFAULT_TOL = 1e-4
# The final refit's tolerance. Stopped at 1e-4 (L-BFGS), noise of 1e-6 in the embeddings
# moved its probabilities by up to 0.02 and changed 7 to 18 of 2,500 predictions on the
# 10,000-image bench folder; at 1e-6 (Newton-CG) by at most 0.0005 and none (bench/c_rule.py).
# The torch solver (float32) refits at ``tol``.
DEFAULT_REFIT_TOL = 1e-6
# scikit-learn's solver for every fit of the probe. Newton-CG converges quadratically near the
# minimum, so a tight stop costs little: one fit on 7,500 x 1280 at C = 10 took 3.8 s to tol
# 1e-6, against 4.8 s for L-BFGS to 1e-4 and 9.3 s to 1e-6. The same objective and the same
# ``tol`` (the largest gradient entry). Its C search held every chosen C under noise of 1e-6
# where L-BFGS's moved one (bench/c_rule.py); the whole probe costs 0.7x to 1.5x L-BFGS's
# (bench/probe_speed.py, bench/c_rule.py --lbfgs).
SKLEARN_SOLVER = "newton-cg"
# Newton-CG's line search gives up, and the fit stops where it is, when rounding (float32
# in the C search) leaves no further decrease to find; it says so in these warnings.
_LINE_SEARCH_WARNINGS = (
    "Line Search failed",
    "Rounding errors prevent the line search from converging",
    "The line search algorithm did not converge",
)
SELECTION_DTYPE = np.float32  # C is chosen with float32 fits (see LinearProbe.fit)
# How C is chosen from the validation scores (``choose_c``); the first is the default.
C_RULES = ("one-standard-error", "log-loss", "best-accuracy")
DEFAULT_C_RULE = C_RULES[0]
_LOG_LOSS_FLOOR = np.finfo(np.float64).eps  # scikit-learn's log_loss clips there too


class ProbeError(ValueError):
    """The data cannot support a probe (e.g. a single class)."""


@dataclass(frozen=True)
class ValidationScores:
    """The validation scores of one C, pooled over every validation image of every inner
    split: mean accuracy, mean log loss and the log loss's standard error over the images."""

    accuracy: float
    log_loss: float
    log_loss_se: float
    n: int

    @classmethod
    def of(cls, correct: np.ndarray, losses: np.ndarray) -> ValidationScores:
        """From each validation image's correctness (0/1) and log loss."""
        losses = np.asarray(losses, dtype=np.float64)
        return cls.from_sums(
            len(losses), float(np.sum(correct)), float(losses.sum()), float(losses @ losses)
        )

    @classmethod
    def from_sums(
        cls, n: float, correct: float, loss: float, loss_squares: float
    ) -> ValidationScores:
        """From sums over the validation images: of correctness, log loss, its square."""
        mean = loss / n
        variance = max(0.0, (loss_squares - n * mean * mean) / (n - 1)) if n > 1 else 0.0
        return cls(correct / n, mean, math.sqrt(variance / n), round(n))


def per_image_log_loss(probabilities: np.ndarray, truth_columns: np.ndarray) -> np.ndarray:
    """Each row's log loss, as scikit-learn's ``log_loss`` computes it (clipped at eps)."""
    truth = probabilities[np.arange(len(truth_columns)), truth_columns]
    return -np.log(np.maximum(truth, _LOG_LOSS_FLOOR))


def choose_c(scores: Mapping[int, ValidationScores], rule: str = DEFAULT_C_RULE) -> int:
    """The chosen position (ascending C) among measured ``scores``, by ``rule``:

    - "one-standard-error": the smallest C (the strongest regularisation) whose mean
      validation log loss is within one standard error of the lowest. Log loss moves
      smoothly with the weights, so float noise in the embeddings does not flip the choice
      through a one-image tie in accuracy, as it can the old rule's.
    - "log-loss": the lowest mean validation log loss.
    - "best-accuracy": the best mean validation accuracy, ties to the lower log loss (the
      rule before issue 19, kept to compare with in ``bench/c_rule.py``: one image
      changing its prediction can flip it).
    """
    if rule not in C_RULES:
        raise ValueError(f"c_rule must be one of {', '.join(C_RULES)}")
    if rule == "best-accuracy":
        return min(scores, key=lambda p: (-scores[p].accuracy, scores[p].log_loss, p))
    if rule == "log-loss":
        return _lowest_log_loss(scores)
    bar = one_standard_error_bar(scores)
    return min(p for p in scores if scores[p].log_loss <= bar)


def _lowest_log_loss(scores: Mapping[int, ValidationScores]) -> int:
    return min(scores, key=lambda p: (scores[p].log_loss, p))


def one_standard_error_bar(scores: Mapping[int, ValidationScores]) -> float:
    """The lowest mean validation log loss plus its standard error: the one-standard-error
    rule chooses the smallest C whose mean log loss is at or below it."""
    top = _lowest_log_loss(scores)
    return scores[top].log_loss + scores[top].log_loss_se


def c_focus(scores: Mapping[int, ValidationScores], rule: str = DEFAULT_C_RULE) -> list[int]:
    """The positions a search refines around and extends from: the chosen one and, under the
    one-standard-error rule, the lowest log loss it is measured from (a lower one nearby
    would move the choice)."""
    chosen = choose_c(scores, rule)
    if rule != "one-standard-error":
        return [chosen]
    return sorted({chosen, choose_c(scores, "log-loss")})


@dataclass(frozen=True)
class SweepResult:
    """Validation accuracy and log loss for each C tried, and how C was chosen from them.

    ``c_rule`` names the rule (``choose_c``; by default the one-standard-error rule on the
    mean validation log loss, whose standard errors are ``log_loss_se``). ``extended`` says
    the grid was widened because the C the rule looks at sat on its edge.
    ``c_values`` holds every C measured, ascending (under a coarse-to-fine search, only
    those the search visited).
    """

    c_values: tuple[float, ...]
    scores: tuple[float, ...]
    chosen_c: float
    method: str  # "validation split" | "stratified k-fold" | "given validation set" | "fixed"
    log_losses: tuple[float, ...] = ()
    extended: bool = False
    log_loss_se: tuple[float, ...] = ()  # standard error of each mean log loss
    c_rule: str = DEFAULT_C_RULE  # how C was chosen from the scores (``choose_c``)

    @property
    def rule(self) -> str | None:
        """The rule C was chosen by; None for a fixed (or default) C, chosen from no scores."""
        return None if all(math.isnan(score) for score in self.scores) else self.c_rule

    @property
    def one_standard_error_bar(self) -> float | None:
        """The bar the one-standard-error rule chose C under (``one_standard_error_bar``);
        None under another rule, or without a standard error for every loss."""
        if (
            self.rule != "one-standard-error"
            or not self.log_losses
            or len(self.log_loss_se) != len(self.log_losses)
        ):
            return None
        measured = {
            position: ValidationScores(math.nan, loss, se, 0)  # the bar needs no accuracy
            for position, (loss, se) in enumerate(
                zip(self.log_losses, self.log_loss_se, strict=True)
            )
            if not math.isnan(loss)
        }
        return one_standard_error_bar(measured) if measured else None

    @property
    def described(self) -> str:
        """The method, and the rule when C was chosen from scores, in words: "validation
        split, one-standard-error rule"; "fixed"."""
        return self.method if self.rule is None else f"{self.method}, {self.rule} rule"


def _logistic_regression(
    c: float, seed: int, max_iter: int, warm_start: bool = False, tol: float = DEFAULT_TOL
):
    return LogisticRegression(
        C=c,
        solver=SKLEARN_SOLVER,
        max_iter=max_iter,
        random_state=seed,
        warm_start=warm_start,
        tol=tol,
    )


def _blas_threads():
    """``BLAS_THREADS`` for the fits inside."""
    return threadpool_limits(limits=BLAS_THREADS, user_api="blas")


def has_groups(groups: np.ndarray | None) -> bool:
    """Whether any group holds more than one image (else group-aware splitting is moot)."""
    return groups is not None and len(np.unique(groups)) < len(groups)


def groups_per_class(labels: np.ndarray, groups: np.ndarray | None) -> dict[int, int]:
    """How many distinct groups (images, when ``groups`` is None) each class has."""
    labels = np.asarray(labels)
    groups = np.arange(len(labels)) if groups is None else np.asarray(groups)
    return {int(label): len(np.unique(groups[labels == label])) for label in np.unique(labels)}


def resolve_solver(solver: str, device: str = "auto") -> str:
    """The solver that runs, "sklearn" or "torch": ``auto`` is torch on a CUDA or MPS
    device, scikit-learn on the CPU (where torch measured slower, bench/probe_speed.py)."""
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {', '.join(SOLVERS)}")
    if solver != "auto":
        return solver
    from .devices import pick_device  # torch loads only when a device must be picked

    return "torch" if pick_device(device).type in ("cuda", "mps") else "sklearn"


def coarse_stride(grid: list[float], stride: int | None = None) -> int:
    """Grid steps between coarse C values: ``stride`` (a power of two, halved until the
    coarse level keeps at least three intervals); 1 when the grid is not a log grid."""
    if len(grid) < 3 or not np.allclose(np.diff(np.log10(grid)), np.log10(grid[1] / grid[0])):
        return 1
    stride = 2 ** int(math.log2(max(1, COARSE_STRIDE if stride is None else stride)))
    while stride > 1 and (len(grid) - 1) / stride < 3:
        stride //= 2
    return stride


@dataclass(frozen=True)
class CLattice:
    """The grid's C values by position, extended past either end by the grid's step up to
    the limits: position ``i`` is ``grid[i]`` inside, ``grid[0] * 10**(i * step)`` below."""

    grid: tuple[float, ...]
    low: int  # lowest position allowed (<= 0)
    high: int  # highest position allowed (>= len(grid) - 1)

    @classmethod
    def around(cls, grid: list[float], limits: tuple[float, float]) -> CLattice:
        step = math.log10(grid[1] / grid[0]) if len(grid) > 1 else 1.0
        below = max(0, math.floor(math.log10(grid[0] / limits[0]) / step + 1e-9))
        above = max(0, math.floor(math.log10(limits[1] / grid[-1]) / step + 1e-9))
        return cls(tuple(grid), -below, len(grid) - 1 + above)

    @property
    def step(self) -> float:
        return math.log10(self.grid[1] / self.grid[0]) if len(self.grid) > 1 else 1.0

    def c(self, position: int) -> float:
        if position < 0:
            return float(self.grid[0] * 10 ** (position * self.step))
        if position >= len(self.grid):
            return float(self.grid[-1] * 10 ** ((position - len(self.grid) + 1) * self.step))
        return self.grid[position]


def search_c(
    lattice: CLattice,
    stride: int,
    measure: Callable[[list[int]], None],
    focus: Callable[[], list[int]],
    measured: Callable[[], list[int]],
) -> None:
    """Coarse-to-fine search over lattice positions (``stride`` 1: the exhaustive grid).

    Measures the grid every ``stride`` positions and at both ends, then halves the step
    around the focus positions (``c_focus``: the chosen C and the best-scored one), inside
    the span measured, down to one grid step. When a focus position is then the lowest
    (highest) position measured, the span is extended ``stride`` positions further, up to
    the limits, and refined again. With stride 1 this is the whole grid followed by a
    step-by-step extension at an edge.
    """
    last = len(lattice.grid) - 1
    measure(sorted({*range(0, last + 1, stride), last}))
    while True:
        step = stride
        while step > 1:
            step //= 2
            done = measured()
            around = {p + offset for p in focus() for offset in (-step, step)}
            measure(sorted(p for p in around if done[0] < p < done[-1] and p not in done))
        positions, done = focus(), measured()
        further = []
        if done[0] in positions and done[0] > lattice.low:
            further.append(max(done[0] - stride, lattice.low))
        if done[-1] in positions and done[-1] < lattice.high:
            further.append(min(done[-1] + stride, lattice.high))
        if not further:
            return
        measure(further)


def _blend(lower, upper, weight: float):
    """A copy of fitted model ``lower`` whose weights are ``(1 - weight) * lower + weight *
    upper``: a warm start between two solutions of the regularisation path."""
    model = copy.deepcopy(lower)
    if hasattr(model, "linear_"):  # TorchLogisticRegression
        for mine, theirs in zip(
            model.linear_.parameters(), upper.linear_.parameters(), strict=True
        ):
            mine.data.lerp_(theirs.data, weight)
    else:
        model.coef_ = (1 - weight) * lower.coef_ + weight * upper.coef_
        model.intercept_ = (1 - weight) * lower.intercept_ + weight * upper.intercept_
    return model


class _SplitPath:
    """Fits along C on one validation split, each warm-started from the path so far: at a C
    between two measured ones, from their solutions interpolated in log C (at the last
    refinement on 6,000 realistic embeddings, 15 L-BFGS iterations instead of 49 from either
    end); above them all, from the highest; below them all, from zero."""

    def __init__(self, new_model, X, y, labels, train_index, val_index):
        self.new_model = new_model
        self.X, self.y, self.labels = X, y, labels
        self.train_index, self.val_index = train_index, val_index
        self.fitted: dict[float, object] = {}

    def scores(self, c_values: list[float]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Each validation image's (correctness, log loss) at each C, fitted in ascending
        order."""
        return [self._score(c) for c in sorted(c_values)]

    def _score(self, c: float) -> tuple[np.ndarray, np.ndarray]:
        below = [known for known in self.fitted if known < c]
        above = [known for known in self.fitted if known > c]
        if below and above:
            low, high = max(below), min(above)
            weight = math.log(c / low) / math.log(high / low)
            model = _blend(self.fitted[low], self.fitted[high], weight).set_params(C=c)
        elif below:
            model = copy.deepcopy(self.fitted[max(below)]).set_params(C=c)
        else:
            model = self.new_model(c)
        model.fit(self.X[self.train_index], self.y[self.train_index])
        self.fitted[c] = model
        probabilities = np.zeros((len(self.val_index), len(self.labels)))
        columns = np.searchsorted(self.labels, model.classes_)
        probabilities[:, columns] = model.predict_proba(self.X[self.val_index])
        probabilities /= probabilities.sum(axis=1, keepdims=True)  # float32 rounding
        truth = self.y[self.val_index]
        correct = self.labels[np.argmax(probabilities, axis=1)] == truth
        return correct, per_image_log_loss(probabilities, np.searchsorted(self.labels, truth))


class LinearProbe(ClassifierMixin, BaseEstimator):
    """Multinomial logistic regression whose C is chosen on held-out training data.

    Parameters
    ----------
    c_grid : C values to search (ascending log grid by default, 1e-3 ... 1e4). When the best
        C sits on an edge, the grid is extended in that direction up to ``c_limits``
        (1e-6 ... 1e6, as in the CLIP paper).
    C : a fixed C; when set, no search is run.
    val_size : fraction of the training data held out to choose C.
    n_folds : folds for stratified k-fold when the data is too small for a split.
    selection : "auto" (a validation split, or k-fold when too small) or "kfold" (always
        stratified k-fold cross-validation).
    seed : seeds every split and the solver.
    search : "coarse-to-fine" (every ``COARSE_STRIDE``-th grid C, then halving the step
        around the best), "grid" (every grid C) or "auto" (the grid below
        ``COARSE_TO_FINE_MIN_IMAGES`` images, else coarse-to-fine).
    solver : "sklearn" (``LogisticRegression``, Newton-CG), "torch"
        (``TorchLogisticRegression``: the same objective in float32 on ``device``) or "auto"
        (torch on CUDA/MPS, else scikit-learn).
    tol : solver tolerance on the largest gradient entry (scikit-learn's ``tol``).
    selection_tol : the same for the fits that choose C; None: ``tol``.
    refit_tol : the same for the final refit with scikit-learn (the torch solver's refit
        runs to ``tol``: float32 does not reach 1e-6).
    c_rule : how C is chosen from the validation scores (``choose_c``): "one-standard-error"
        (default), "log-loss" or "best-accuracy".
    device, minibatch, batch_size : for the torch solver (see ``TorchLogisticRegression``).

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
        search: str = "auto",
        solver: str = "auto",
        tol: float = DEFAULT_TOL,
        selection_tol: float | None = None,
        refit_tol: float = DEFAULT_REFIT_TOL,
        device: str = "auto",
        minibatch: bool | None = None,
        batch_size: int = 256,
        c_rule: str = DEFAULT_C_RULE,
    ):
        self.c_grid = c_grid
        self.C = C
        self.val_size = val_size
        self.n_folds = n_folds
        self.selection = selection
        self.seed = seed
        self.max_iter = max_iter
        self.c_limits = c_limits
        self.search = search
        self.solver = solver
        self.tol = tol
        self.selection_tol = selection_tol
        self.refit_tol = refit_tol
        self.device = device
        self.minibatch = minibatch
        self.batch_size = batch_size
        self.c_rule = c_rule

    def fit(
        self,
        X: np.ndarray,
        y: np.ndarray,
        groups: np.ndarray | None = None,
        validation_mask: np.ndarray | None = None,
    ) -> LinearProbe:
        if self.selection not in SELECTIONS:
            raise ValueError(f"selection must be one of {', '.join(SELECTIONS)}")
        if self.search not in SEARCHES:
            raise ValueError(f"search must be one of {', '.join(SEARCHES)}")
        if self.c_rule not in C_RULES:
            raise ValueError(f"c_rule must be one of {', '.join(C_RULES)}")
        self.solver_ = resolve_solver(self.solver, self.device)
        X, y = self._as_input(X), np.asarray(y)
        if len(np.unique(y)) < 2:
            raise ProbeError("a probe needs at least two classes in the training data")
        threads = _blas_threads() if self.solver_ == "sklearn" else contextlib.nullcontext()
        with warnings.catch_warnings(), threads:
            warnings.simplefilter("ignore", ConvergenceWarning)
            for message in _LINE_SEARCH_WARNINGS:
                warnings.filterwarnings("ignore", message=message)
            # Choosing C needs rankings, not float64 weights: the embeddings are float32 to
            # begin with, and float32 fits are ~1.5x cheaper (bench/probe_speed.py).
            self.sweep_ = self._choose_c(
                X.astype(SELECTION_DTYPE, copy=False), y, groups, validation_mask
            )
            # A cold refit, as a plain LogisticRegression fit would be.
            refit_tol = self.tol if self.solver_ == "torch" else self.refit_tol
            self.model_ = self._new_model(self.sweep_.chosen_c, tol=refit_tol)
            self.model_.fit(X, y)
        self.classes_ = self.model_.classes_
        self.chosen_c_ = self.sweep_.chosen_c
        return self

    def _new_model(self, c: float, warm_start: bool = False, tol: float | None = None):
        tol = self.tol if tol is None else tol
        if self.solver_ == "torch":
            from .torch_probe import TorchLogisticRegression

            return TorchLogisticRegression(
                C=c,
                tol=tol,
                max_iter=self.max_iter,
                warm_start=warm_start,
                device=self.device,
                minibatch=self.minibatch,
                batch_size=self.batch_size,
                random_state=self.seed,
            )
        return _logistic_regression(c, self.seed, self.max_iter, warm_start, tol)

    def resolved(self) -> LinearProbe:
        """A copy whose solver and device are those that run: ``"auto"`` resolved
        (``resolve_solver``), the device ``"cpu"`` for scikit-learn, else the torch device
        picked (``"cuda"``, ``"mps"``). Results are keyed by these, not by ``"auto"``."""
        solver = resolve_solver(self.solver, self.device)
        if solver == "sklearn":
            device = "cpu"
        else:
            from .devices import pick_device

            device = str(pick_device(self.device))
        return clone(self).set_params(solver=solver, device=device)

    def search_for(self, X: np.ndarray) -> str:
        """The search ``fit`` runs on ``X``: "grid" or "coarse-to-fine"."""
        if self.search != "auto":
            return self.search
        return "grid" if len(X) < COARSE_TO_FINE_MIN_IMAGES else "coarse-to-fine"

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
        tol = self.tol if self.selection_tol is None else self.selection_tol
        paths = [
            _SplitPath(lambda c: self._new_model(c, True, tol), X, y, labels, train, val)
            for train, val in splits
        ]
        lattice = CLattice.around(grid, self.c_limits)
        measured: dict[int, ValidationScores] = {}
        rule = self.c_rule

        def measure(positions: list[int]) -> None:
            if not positions:
                return
            c_values = [lattice.c(p) for p in sorted(positions)]
            per_split = [path.scores(c_values) for path in paths]
            for number, position in enumerate(sorted(positions)):
                correct = np.concatenate([split[number][0] for split in per_split])
                losses = np.concatenate([split[number][1] for split in per_split])
                measured[position] = ValidationScores.of(correct, losses)

        stride = coarse_stride(grid) if self.search_for(X) == "coarse-to-fine" else 1
        search_c(
            lattice, stride, measure, lambda: c_focus(measured, rule), lambda: sorted(measured)
        )
        positions = sorted(measured)
        return SweepResult(
            tuple(lattice.c(p) for p in positions),
            tuple(measured[p].accuracy for p in positions),
            lattice.c(choose_c(measured, rule)),
            method,
            tuple(measured[p].log_loss for p in positions),
            extended=positions[0] < 0 or positions[-1] >= len(grid),
            log_loss_se=tuple(measured[p].log_loss_se for p in positions),
            c_rule=rule,
        )

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
        return self.model_.predict_proba(self._as_input(X))

    def predict(self, X: np.ndarray) -> np.ndarray:
        check_is_fitted(self, "model_")
        return self.model_.predict(self._as_input(X))

    def _as_input(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(X, dtype=np.float32 if self.solver_ == "torch" else np.float64)

    @property
    def coef_(self) -> np.ndarray:
        return self.model_.coef_

    @property
    def intercept_(self) -> np.ndarray:
        return self.model_.intercept_


@dataclass(frozen=True)
class ProbeWeights:
    """A fitted probe as plain arrays, with what it needs to be used and trusted elsewhere:
    what the probe files hold (``probe.safetensors``, ``probe.json``; never pickle).

    ``encoder_name`` is the name ``load_encoder`` takes ("" for a probe fitted on precomputed
    embeddings), ``execution_path`` the path its embeddings ran on (e.g. ``fp32``,
    ``int8-dynamic``), ``preprocess_id`` the digest of their preprocessing. ``metrics`` are the
    protocol's measurements with their intervals (``Metrics.to_dict()``), ``protocol`` what
    ran and why, ``images_per_class`` and ``n_fitted`` what the probe was fitted on.
    """

    coef: np.ndarray  # (n_classes, dim); binary probes are stored as two symmetric rows
    intercept: np.ndarray  # (n_classes,)
    class_names: list[str]
    encoder_id: str
    chosen_c: float
    encoder_name: str = ""
    execution_path: str = ""
    preprocess_id: str = ""
    metrics: dict = field(default_factory=dict)
    protocol: dict = field(default_factory=dict)
    images_per_class: dict[str, int] = field(default_factory=dict)
    created: str = ""  # ISO 8601 date and time the probe was written

    @classmethod
    def from_estimator(
        cls, estimator, class_names: list[str], encoder_id: str, **details
    ) -> ProbeWeights:
        """The weights of a fitted ``LinearProbe`` (or any fitted multinomial logistic
        regression with ``coef_`` and ``intercept_``); its C is ``chosen_c_`` (else ``C``).
        ``details`` fill the other fields (``encoder_name``, ``metrics``, ...)."""
        check_is_fitted(estimator)
        coef, intercept = np.asarray(estimator.coef_), np.asarray(estimator.intercept_)
        if coef.shape[0] == 1:  # scikit-learn keeps one row for two classes
            coef = np.vstack([-coef, coef]) / 2
            intercept = np.array([-intercept[0], intercept[0]]) / 2
        if coef.shape[0] != len(class_names):
            raise ValueError(
                f"the estimator has {coef.shape[0]} classes, but {len(class_names)} names"
            )
        chosen_c = getattr(estimator, "chosen_c_", None)
        return cls(
            np.ascontiguousarray(coef, dtype=np.float32),  # scikit-learn's coef_ may be F-order
            np.ascontiguousarray(intercept, dtype=np.float32),
            list(class_names),
            encoder_id,
            float(estimator.C if chosen_c is None else chosen_c),
            **details,
        )

    @property
    def dim(self) -> int:
        return int(self.coef.shape[1])

    def predict_proba(self, vectors: np.ndarray) -> np.ndarray:
        logits = vectors @ self.coef.T + self.intercept
        logits -= logits.max(axis=1, keepdims=True)
        weights = np.exp(logits)
        return weights / weights.sum(axis=1, keepdims=True)
