"""Few-shot curves: how many images per class does the probe need?

For k = 1, 2, 4, 8, … images per class, the probe is fitted on k images per class drawn
from the training pool and scored on the evaluation images of an existing ``ProbeResult``,
so every encoder evaluated on the same folds is scored on the same images:

- ``cv``: for each fold, its held-out images are scored by a probe drawn from the other
  folds' images; a draw's accuracy is pooled over all folds' evaluation images.
- ``holdout`` / ``given``: draws come from ``result.train``, scored on ``result.evaluated``.

Each draw takes, per class, the first k images of a seeded permutation of that class's pool,
so the k = 2 draw extends the k = 1 draw (nested draws make the curve's steps comparable).

Choosing C: below ``MIN_SHOTS_FOR_C_SELECTION`` images per class there is too little to
choose C on, so the probe uses the fixed ``FEWSHOT_FIXED_C``. From there on, one C per fold
and k, shared by that fold's draws: each draw's images are split into stratified validation
folds (``LinearProbe``'s rule: ``min(5, k)`` folds while a fifth of a class is under two
images, else one fold of five), C runs over ``LinearProbe``'s grid (extended past an edge,
as there), and C is chosen by the probe's own rule (``probe.choose_c``, the one-standard-
error rule on validation log loss) from every validation image of all the fold's draws. C is
thus chosen on the drawn training images alone, never on the evaluation images, and from ten
draws' worth of validation images rather than the handful of one draw.

Fitting (``fit="batched"``, the default): the probes of every draw are fitted together, in
one L-BFGS run over stacked problems (``probe_core.batched_logistic``, scikit-learn's
objective and tolerance), each in the span of its own k x classes images, warm-started along
C and, at each k, from the same draw's probe at the previous k. ``fit="per-draw"`` is the
reference it is checked against (tests, ``bench/fewshot_speed.py``): one ``LinearProbe`` per
draw, each choosing its own C on its own images, many times slower.

Duplicates: a pool image whose duplicate group (``result.duplicates`` or ``groups=``) has a
member among the evaluation images is never drawn, so no copy of a scored image is trained
on; within a draw, copies stay on one side of every validation split.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from threadpoolctl import threadpool_limits

from ..batched_logistic import (
    BatchedFit,
    LogisticBatch,
    gram_span,
    in_features,
    span_coordinates,
)
from ..embeddings import Embeddings
from ..probe import (
    MIN_VALIDATION_PER_CLASS,
    CLattice,
    LinearProbe,
    ValidationScores,
    c_focus,
    choose_c,
    coarse_stride,
    search_c,
)
from .protocols import ProbeResult

FEWSHOT_FIXED_C = 1.0  # scikit-learn's default C, used below MIN_SHOTS_FOR_C_SELECTION
MIN_SHOTS_FOR_C_SELECTION = 4
DEFAULT_DRAWS = 10
BAND_PERCENTILES = (2.5, 97.5)
FEWSHOT_COLUMNS = ("encoder", "k", "accuracy", "low", "high", "draws")
FIT_METHODS = ("batched", "per-draw")
FIXED_C_METHOD = "fixed"
# Stacked problems are fitted in chunks of at most this many float64 numbers of X, so that
# a large k on a large folder does not stack gigabytes.
MAX_BATCH_VALUES = 2**23
_LOG_LOSS_FLOOR = np.finfo(np.float64).eps  # scikit-learn's log_loss clips there too


@dataclass(frozen=True)
class FewShotPoint:
    """Accuracy with k training images per class: mean and 2.5-97.5% percentiles over draws."""

    k: int
    accuracy: float
    low: float
    high: float
    draws: int
    accuracies: tuple[float, ...] = ()  # one per draw


@dataclass(frozen=True)
class FewShotDraw:
    """One fitted probe of the curve: what it trained on and what it scored (indices)."""

    k: int
    draw: int
    fold: str  # "1" … "K" under cv, "test" otherwise
    train: np.ndarray
    evaluated: np.ndarray
    chosen_c: float
    c_method: str


@dataclass(frozen=True)
class FewShotCurve:
    """One encoder's few-shot curve, with notes on what limited it.

    ``points`` is empty when some class has no image to draw from; ``messages`` says why.
    ``recorded`` holds every fitted probe's draw when ``fewshot_curve(record=True)``.
    """

    encoder: str
    points: tuple[FewShotPoint, ...]
    max_supported_k: int
    messages: tuple[str, ...] = ()
    recorded: tuple[FewShotDraw, ...] = field(default=(), compare=False, repr=False)

    @property
    def shots(self) -> list[int]:
        return [point.k for point in self.points]


@dataclass(frozen=True)
class _EvaluationTask:
    """One fold (or the test set): the images it scores and the pool of each class."""

    fold: str
    evaluated: np.ndarray
    pools: tuple[np.ndarray, ...]  # per class, indices into the embeddings


def powers_of_two_up_to(limit: int) -> list[int]:
    """1, 2, 4, … up to ``limit`` (empty below 1)."""
    return [2**power for power in range(max(0, int(limit)).bit_length())]


def fewshot_curve(
    embeddings: Embeddings,
    result: ProbeResult,
    *,
    shots: Sequence[int] | None = None,
    draws: int = DEFAULT_DRAWS,
    seed: int = 0,
    encoder_name: str | None = None,
    probe: LinearProbe | None = None,
    groups: np.ndarray | None = None,
    record: bool = False,
    fit: str = "batched",
) -> FewShotCurve:
    """Accuracy against images per class, on the evaluation images of ``result``.

    ``shots`` defaults to 1, 2, 4, … up to the largest k every class's pool holds in every
    fold; asked-for values above that are skipped with a message. Each of the ``draws``
    seeded draws gives one accuracy per k. With k < ``MIN_SHOTS_FOR_C_SELECTION`` the probe
    uses the fixed C ``FEWSHOT_FIXED_C``; otherwise C is chosen on the drawn images (module
    docstring), over ``probe``'s grid and tolerance (default ``LinearProbe``; a fixed
    ``probe.C`` is used as it is). ``fit``: "batched" or the "per-draw" reference.
    ``groups`` (one id per image) overrides ``result.duplicates`` for keeping duplicates of
    evaluation images out of the draws.
    """
    if draws < 1:
        raise ValueError("draws must be at least 1")
    if fit not in FIT_METHODS:
        raise ValueError(f"fit must be one of {', '.join(FIT_METHODS)}")
    name = encoder_name or embeddings.encoder_id
    if groups is None and result.duplicates is not None:
        groups = result.duplicates.group_of
    y = _labels_in_result_classes(embeddings, result)
    tasks, messages = _evaluation_tasks(result, y, groups)

    supported, limiting = _largest_supported_k(tasks, result.class_names)
    if supported == 0:
        return FewShotCurve(name, (), 0, (*messages, f"no few-shot curve: {limiting}"))
    if shots is None:
        ks = powers_of_two_up_to(supported)
        if limiting:
            messages.append(f"k stops at {ks[-1]}: {limiting}")
    else:
        asked = sorted({int(k) for k in shots})
        if any(k < 1 for k in asked):
            raise ValueError("shots must be positive numbers of images per class")
        ks = [k for k in asked if k <= supported]
        if len(ks) < len(asked):
            skipped = ", ".join(str(k) for k in asked if k > supported)
            messages.append(f"k = {skipped} skipped: {limiting}")
        if not ks:
            return FewShotCurve(name, (), supported, tuple(messages))

    base = probe if probe is not None else LinearProbe(seed=seed)
    orders = [
        [_draw_order(task, seed, draw, task_number) for draw in range(draws)]
        for task_number, task in enumerate(tasks)
    ]
    scoring = _Scoring(embeddings.vectors, y, tasks, orders, base, groups, record)
    n_evaluated = sum(len(task.evaluated) for task in tasks)
    correct = np.zeros((len(ks), draws))
    # Many small fits: a multithreaded BLAS only adds overhead (several times slower on 2 cores).
    with warnings.catch_warnings(), threadpool_limits(limits=1, user_api="blas"):
        warnings.simplefilter("ignore", ConvergenceWarning)
        score = scoring.per_draw if fit == "per-draw" else scoring.batched
        for position, k in enumerate(ks):
            correct[position] = score(k)
    accuracies = correct / n_evaluated
    low, high = np.percentile(accuracies, BAND_PERCENTILES, axis=1)
    points = tuple(
        FewShotPoint(
            k=k,
            accuracy=float(accuracies[position].mean()),
            low=float(low[position]),
            high=float(high[position]),
            draws=draws,
            accuracies=tuple(float(a) for a in accuracies[position]),
        )
        for position, k in enumerate(ks)
    )
    return FewShotCurve(name, points, supported, tuple(messages), tuple(scoring.recorded))


def _draw_order(task: _EvaluationTask, seed: int, draw: int, task_number: int) -> list:
    """Each class's pool in the seeded order of one draw (its first k images are drawn)."""
    rng = np.random.default_rng([seed, draw, task_number])
    return [rng.permutation(pool) for pool in task.pools]


class _Scoring:
    """Fits the probes of every draw at one k and counts each draw's correct predictions."""

    def __init__(self, vectors, y, tasks, orders, base: LinearProbe, groups, record: bool):
        self.vectors, self.y, self.tasks, self.orders = vectors, y, tasks, orders
        self.base, self.groups, self.record = base, groups, record
        self.n_classes = len(tasks[0].pools)
        self.n_draws = len(orders[0])
        self.recorded: list[FewShotDraw] = []

    def _train(self, task_number: int, draw: int, k: int) -> np.ndarray:
        return np.concatenate([order[:k] for order in self.orders[task_number][draw]])

    def _keep(self, k, draw, task, train, chosen_c, method) -> None:
        if self.record:
            self.recorded.append(
                FewShotDraw(k, draw, task.fold, np.sort(train), task.evaluated, chosen_c, method)
            )

    def per_draw(self, k: int) -> np.ndarray:
        """The reference: a ``LinearProbe`` per draw, choosing its own C on its images."""
        correct = np.zeros(self.n_draws)
        for task_number, task in enumerate(self.tasks):
            for draw in range(self.n_draws):
                train = self._train(task_number, draw, k)
                model = clone(self.base)
                if k < MIN_SHOTS_FOR_C_SELECTION:
                    model.set_params(C=FEWSHOT_FIXED_C)
                model.fit(
                    self.vectors[train],
                    self.y[train],
                    groups=None if self.groups is None else self.groups[train],
                )
                predicted = model.predict(self.vectors[task.evaluated])
                correct[draw] += np.sum(predicted == self.y[task.evaluated])
                self._keep(k, draw, task, train, model.chosen_c_, model.sweep_.method)
        return correct

    def batched(self, k: int) -> np.ndarray:
        """Every draw of every task in stacked fits, C shared by each task's draws."""
        labels = np.repeat(np.arange(self.n_classes), k)
        trains = np.array(
            [
                [self._train(task_number, draw, k) for draw in range(self.n_draws)]
                for task_number in range(len(self.tasks))
            ]
        )
        if self.base.C is not None:
            choices = [(float(self.base.C), FIXED_C_METHOD)] * len(self.tasks)
        elif k < MIN_SHOTS_FOR_C_SELECTION:
            choices = [(FEWSHOT_FIXED_C, FIXED_C_METHOD)] * len(self.tasks)
        else:
            choices = self._shared_c(trains, labels, k)
        flat = trains.reshape(-1, trains.shape[2])
        c = np.repeat([chosen for chosen, _ in choices], self.n_draws)
        fitted = self._fit_stacked(flat, labels, c)
        correct = np.zeros(self.n_draws)
        for task_number, task in enumerate(self.tasks):
            draws = slice(task_number * self.n_draws, (task_number + 1) * self.n_draws)
            evaluated = self.vectors[task.evaluated].astype(np.float64)
            predicted = fitted.take(draws).predict(evaluated)
            correct += np.sum(predicted == self.y[task.evaluated], axis=1)
            for draw, train in enumerate(trains[task_number]):
                self._keep(k, draw, task, train, *choices[task_number])
        return correct

    def _fit_stacked(self, trains: np.ndarray, labels: np.ndarray, c: np.ndarray) -> BatchedFit:
        """Fits (in feature space) of the drawn sets ``trains`` (problems, n), in chunks."""
        fits = []
        for chunk in _chunks(len(trains), trains.shape[1] * self.vectors.shape[1]):
            Z, basis = span_coordinates(self.vectors[trains[chunk]])
            batch = LogisticBatch(Z, np.broadcast_to(labels, trains[chunk].shape), self.n_classes)
            fit = batch.fit(c[chunk], tol=self.base.tol, max_iter=self.base.max_iter)
            fits.append(in_features(fit, basis))
        return BatchedFit(
            np.concatenate([f.coef for f in fits]), np.concatenate([f.intercept for f in fits])
        )

    def _shared_c(self, trains: np.ndarray, labels: np.ndarray, k: int) -> list[tuple[float, str]]:
        """One C per task, shared by its draws: ``choose_c`` (the probe's ``c_rule``) on the
        validation images of every draw's validation parts, searched as ``LinearProbe`` does.
        All tasks measure the first sweep together; each refines or extends on its own."""
        base = self.base
        n_folds, single = _validation_folds(k, base)
        flat = trains.reshape(-1, trains.shape[2])
        parts = []  # (draw, its training rows, its validation rows): positions in the draw
        for number, train in enumerate(flat):
            fold_of = _fold_assignment(train, labels, n_folds, self.groups)
            for fold in [0] if single else range(n_folds):
                held_out = fold_of == fold
                if held_out.any():  # with copies kept together, a fold may stay empty
                    parts.append((number, np.flatnonzero(~held_out), np.flatnonzero(held_out)))
        grid = sorted(float(c) for c in base.c_grid)
        lattice = CLattice.around(grid, base.c_limits)
        owners = np.array([number // self.n_draws for number, _, _ in parts])  # their task
        search = _ValidationSearch(self.vectors, flat, labels, parts, owners, self.n_classes, base)
        stride = coarse_stride(grid) if base.search_for(trains[0, 0]) == "coarse-to-fine" else 1
        last = len(grid) - 1
        search.measure(range(len(trains)), sorted({*range(0, last + 1, stride), last}), lattice)
        described = "one validation fold of five" if single else f"stratified {n_folds}-fold"
        method = f"shared by the draws ({described} on each draw)"
        choices = []
        for task_number in range(len(trains)):
            search_c(
                lattice,
                stride,
                lambda positions, task=task_number: search.measure([task], positions, lattice),
                lambda task=task_number: c_focus(search.scores(task), base.c_rule),
                lambda task=task_number: search.measured(task),
            )
            chosen = choose_c(search.scores(task_number), base.c_rule)
            choices.append((lattice.c(chosen), method))
        return choices


def _labels_in_result_classes(embeddings: Embeddings, result: ProbeResult) -> np.ndarray:
    """Each image's class as an index into ``result.class_names`` (-1: not a probe class)."""
    position = {name: i for i, name in enumerate(result.class_names)}
    lookup = np.array([position.get(name, -1) for name in embeddings.class_names], dtype=int)
    y = lookup[embeddings.labels] if len(embeddings.labels) else np.array([], dtype=int)
    if not np.array_equal(y[result.evaluated], result.labels):
        raise ValueError("the embeddings are not those the probe result was computed on")
    return y


def _evaluation_tasks(
    result: ProbeResult, y: np.ndarray, groups: np.ndarray | None
) -> tuple[list[_EvaluationTask], list[str]]:
    folds = np.asarray(result.folds)
    if result.protocol.name == "cv":
        names = sorted(set(folds.tolist()), key=_fold_order)
        parts = [
            (name, result.evaluated[folds == name], result.evaluated[folds != name])
            for name in names
        ]
    else:
        parts = [(name, result.evaluated, result.train) for name in sorted(set(folds.tolist()))]
    tasks, n_left_out = [], set()
    for name, evaluated, pool in parts:
        pool = np.setdiff1d(pool, evaluated)
        if groups is not None:
            leaking = np.isin(groups[pool], groups[evaluated])
            n_left_out.update(pool[leaking].tolist())
            pool = pool[~leaking]
        pools = tuple(pool[y[pool] == label] for label in range(len(result.class_names)))
        tasks.append(_EvaluationTask(name, np.sort(evaluated), pools))
    messages = []
    if n_left_out:
        messages.append(
            f"{len(n_left_out)} training images were never drawn: a duplicate of each is"
            " among the evaluation images"
        )
    return tasks, messages


def _fold_order(name: str) -> tuple[int, str]:
    return (int(name), "") if re.fullmatch(r"\d+", name) else (0, name)


def _largest_supported_k(tasks: list[_EvaluationTask], class_names: list[str]) -> tuple[int, str]:
    """The largest k that every class's pool holds in every fold, and what limits it."""
    sizes = np.array([[len(pool) for pool in task.pools] for task in tasks])
    task_number, label = np.unravel_index(np.argmin(sizes), sizes.shape)
    smallest = int(sizes[task_number, label])
    where = f" in fold {tasks[task_number].fold}" if len(tasks) > 1 else ""
    if smallest == 0:
        reason = (
            f"class '{class_names[label]}' has no training images to draw from{where},"
            " too few for even k = 1"
        )
    else:
        images = "image" if smallest == 1 else "images"
        reason = f"class '{class_names[label]}' has {smallest} training {images}{where}"
    return smallest, reason


def fewshot_table(curves: Sequence[FewShotCurve]) -> pd.DataFrame:
    """One row per encoder and k: ``encoder,k,accuracy,low,high,draws`` (fewshot.csv)."""
    rows = [
        (curve.encoder, point.k, point.accuracy, point.low, point.high, point.draws)
        for curve in curves
        for point in curve.points
    ]
    return pd.DataFrame(rows, columns=list(FEWSHOT_COLUMNS))


def crossing_point(curve: FewShotCurve, zero_shot_accuracy: float) -> int | None:
    """The smallest k whose mean accuracy beats zero-shot, or None if none does."""
    return next((p.k for p in curve.points if p.accuracy > zero_shot_accuracy), None)


def crossing_sentence(curve: FewShotCurve, zero_shot_accuracy: float) -> str:
    """The crossing point in plain words."""
    if not curve.points:
        return "there is no few-shot curve to compare with zero-shot"
    k = crossing_point(curve, zero_shot_accuracy)
    if k is None:
        return f"the probe did not beat zero-shot up to k = {curve.points[-1].k}"
    images = "image" if k == 1 else "images"
    return f"the probe needs about {k} {images} per class to beat zero-shot"


def _validation_folds(k: int, probe: LinearProbe) -> tuple[int, bool]:
    """How a draw of k images per class is split to choose C, by ``LinearProbe``'s rule:
    (folds, True) for one validation fold of ``round(1 / val_size)`` once each class has
    ``MIN_VALIDATION_PER_CLASS`` validation images, else (``min(n_folds, k)``, False)."""
    if probe.selection == "auto" and k * probe.val_size >= MIN_VALIDATION_PER_CLASS:
        return max(2, round(1 / probe.val_size)), True
    return max(2, min(probe.n_folds, k)), False


def _fold_assignment(
    train: np.ndarray, labels: np.ndarray, n_folds: int, groups: np.ndarray | None
) -> np.ndarray:
    """A validation fold per drawn image, stratified: each class's images (in the draw's
    random order) go round the folds in turn. Copies (one duplicate group) share a fold,
    unless some class is a single group (then, as in ``LinearProbe``, C is chosen as if
    the images were distinct)."""
    first_of_class = np.searchsorted(labels, labels)  # labels come sorted, k per class
    folds = (np.arange(len(labels)) - first_of_class) % n_folds
    if groups is None:
        return folds
    drawn = groups[train]
    if len(np.unique(drawn)) == len(drawn):
        return folds
    if min(len(np.unique(drawn[labels == label])) for label in np.unique(labels)) < 2:
        return folds
    fold_of_group: dict = {}
    turns = dict.fromkeys(np.unique(labels).tolist(), 0)
    for row, (group, label) in enumerate(zip(drawn.tolist(), labels.tolist(), strict=True)):
        if group not in fold_of_group:
            fold_of_group[group] = turns[label] % n_folds
            turns[label] += 1
        folds[row] = fold_of_group[group]
    return folds


def _padded(rows: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Index lists of different lengths padded to one width: (indices, weights 1 or 0)."""
    width = max(len(r) for r in rows)
    indices = np.zeros((len(rows), width), dtype=np.int64)
    weights = np.zeros((len(rows), width))
    for i, r in enumerate(rows):
        indices[i, : len(r)], weights[i, : len(r)] = r, 1.0
    return indices, weights


def _chunks(n_problems: int, values_per_problem: int) -> list[slice]:
    """Consecutive problems, at most ``MAX_BATCH_VALUES`` values of X per chunk."""
    size = max(1, MAX_BATCH_VALUES // max(1, values_per_problem))
    return [slice(start, start + size) for start in range(0, n_problems, size)]


class _ValidationSearch:
    """Validation accuracy and log loss at C positions, per task pooled over the validation images
    of its parts (every draw's validation folds). Each part is fitted in the span of its
    training rows (found from its draw's Gram matrix, so no part copies the embeddings), warm
    from its own solutions at neighbouring C: between two, blended in log C (as
    ``LinearProbe``'s path); above them all, extrapolated from the two highest (measured: about
    40% fewer L-BFGS iterations on the demo than starting from the highest alone); below them
    all, from zero."""

    def __init__(
        self,
        vectors: np.ndarray,
        trains: np.ndarray,
        labels: np.ndarray,
        parts: list,
        owners: np.ndarray,
        n_classes: int,
        probe: LinearProbe,
    ):
        self.probe, self.owners = probe, owners
        draw_of = np.array([draw for draw, _, _ in parts])
        train, train_weights = _padded([rows for _, rows, _ in parts])
        val, val_weights = _padded([rows for _, _, rows in parts])
        self.val_labels, self.val_weights = labels[val], val_weights
        n_rows, dim = trains.shape[1], vectors.shape[1]
        # whole draws per chunk (parts come ordered by draw), at most MAX_BATCH_VALUES of X
        first_part = np.searchsorted(draw_of, np.arange(len(trains) + 1))
        self.chunks = [
            slice(first_part[draws.start], first_part[min(draws.stop, len(trains))])
            for draws in _chunks(len(trains), n_rows * dim)
        ]
        self.batches, self.val = [], []
        for chunk in self.chunks:
            draws = np.unique(draw_of[chunk])
            X = vectors[trains[draws]].astype(np.float64)  # the chunk's draws, (c, n, d)
            local = np.searchsorted(draws, draw_of[chunk])[:, None, None]
            mask = train_weights[chunk]
            if train.shape[1] < dim:
                gram = np.matmul(X, X.transpose(0, 2, 1))
                part_gram = gram[local, train[chunk][:, :, None], train[chunk][:, None, :]]
                part_gram *= mask[:, :, None] * mask[:, None, :]
                Z, inverse = gram_span(part_gram)
                cross = gram[local, val[chunk][:, :, None], train[chunk][:, None, :]]
                self.val.append(np.matmul(cross * mask[:, None, :], inverse))
            else:  # as many rows as features: fit on the features themselves
                Z = X[local[:, :, 0], train[chunk]] * mask[..., None]
                self.val.append(X[local[:, :, 0], val[chunk]])
            self.batches.append(LogisticBatch(Z, labels[train[chunk]], n_classes, mask))
        self.fitted: dict[int, list[BatchedFit]] = {}  # position -> per chunk, every part
        # position -> per part: sums over its validation images of correctness, log loss and
        # squared log loss, and their count (nan: not measured)
        self.sums: dict[int, np.ndarray] = {}
        self._n_parts = len(parts)

    def measure(self, tasks, positions, lattice: CLattice) -> None:
        """Measure ``positions`` for the parts of ``tasks`` that lack them (ascending)."""
        for position in sorted(positions):
            mask = np.isin(self.owners, list(tasks))
            if position in self.sums:
                mask &= np.isnan(self.sums[position][:, 0])
            if mask.any():
                self._measure(position, lattice, mask)

    def _measure(self, position: int, lattice: CLattice, mask: np.ndarray) -> None:
        c = lattice.c(position)
        measured = [p for p in self.sums if not np.isnan(self.sums[p][mask, 0]).any()]
        below = [p for p in measured if p < position]
        above = [p for p in measured if p > position]
        if position not in self.fitted:
            self.fitted[position] = [None] * len(self.chunks)
            self.sums[position] = np.full((self._n_parts, 4), np.nan)
        for number, (chunk, batch, val) in enumerate(
            zip(self.chunks, self.batches, self.val, strict=True)
        ):
            rows = np.flatnonzero(mask[chunk])
            if len(rows) == 0:
                continue
            init = None
            if below and above:
                low, high = max(below), min(above)
                weight = np.log(c / lattice.c(low)) / np.log(lattice.c(high) / lattice.c(low))
                init = (
                    self.fitted[low][number]
                    .take(rows)
                    .blend(self.fitted[high][number].take(rows), weight)
                )
            elif len(below) >= 2:
                low, lower = sorted(below)[-1], sorted(below)[-2]
                weight = np.log(c / lattice.c(lower)) / np.log(lattice.c(low) / lattice.c(lower))
                init = (
                    self.fitted[lower][number]
                    .take(rows)
                    .blend(self.fitted[low][number].take(rows), weight)
                )
            elif below:
                init = self.fitted[max(below)][number].take(rows)
            fit = batch.take(rows).fit(c, init=init, tol=self._tol(), max_iter=self.probe.max_iter)
            stored = self.fitted[position][number]
            if stored is None:
                stored = BatchedFit(
                    np.zeros((len(batch), *fit.coef.shape[1:])),
                    np.zeros((len(batch), fit.intercept.shape[1])),
                )
                self.fitted[position][number] = stored
            stored.coef[rows], stored.intercept[rows] = fit.coef, fit.intercept
            parts = np.arange(self._n_parts)[chunk][rows]
            self.sums[position][parts] = self._sums(fit, val[rows], chunk, rows)

    def _sums(self, fit: BatchedFit, val: np.ndarray, chunk: slice, rows: np.ndarray):
        """Per part, sums over its validation images: correct predictions, log loss
        (scikit-learn's ``log_loss``), squared log loss, and the images' count."""
        labels = self.val_labels[chunk][rows]
        weights = self.val_weights[chunk][rows]
        logits = fit.decision_function(val)
        right = logits.argmax(axis=2) == labels
        logits -= logits.max(axis=2, keepdims=True)
        log_p = logits - np.log(np.exp(logits).sum(axis=2, keepdims=True))
        truth = np.take_along_axis(log_p, labels[..., None], axis=2)[..., 0]
        losses = -np.maximum(truth, np.log(_LOG_LOSS_FLOOR))
        return np.stack(
            [
                np.sum(weights * right, axis=1),
                np.sum(weights * losses, axis=1),
                np.sum(weights * losses**2, axis=1),
                weights.sum(axis=1),
            ],
            axis=1,
        )

    def _tol(self) -> float:
        tol = self.probe.selection_tol
        return self.probe.tol if tol is None else tol

    def scores(self, task: int) -> dict[int, ValidationScores]:
        """The task's scores at each position measured for all its parts, pooled over every
        validation image of every draw (what ``choose_c`` chooses from)."""
        mine = self.owners == task
        scores = {}
        for position, sums in self.sums.items():
            if not np.isnan(sums[mine, 0]).any():
                correct, loss, squares, n = sums[mine].sum(axis=0)
                scores[position] = ValidationScores.from_sums(n, correct, loss, squares)
        return scores

    def measured(self, task: int) -> list[int]:
        return sorted(self.scores(task))
