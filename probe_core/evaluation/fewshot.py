"""Few-shot curves: how many images per class does the probe need?

For k = 1, 2, 4, 8, … images per class, the probe is fitted on k images per class drawn
from the training pool and scored on the evaluation images of an existing ``ProbeResult``,
so every encoder evaluated on the same folds is scored on the same images:

- ``cv``: for each fold, its held-out images are scored by a probe drawn from the other
  folds' images; a draw's accuracy is pooled over all folds' evaluation images.
- ``holdout`` / ``given``: draws come from ``result.train``, scored on ``result.evaluated``.

Each draw takes, per class, the first k images of a seeded permutation of that class's pool,
so the k = 2 draw extends the k = 1 draw (nested draws make the curve's steps comparable).
Below ``MIN_SHOTS_FOR_C_SELECTION`` images per class there is too little to choose C on, so
the probe uses the fixed ``FEWSHOT_FIXED_C``; from there on ``LinearProbe`` chooses C itself,
on the drawn images only.

Duplicates: a pool image whose duplicate group (``result.duplicates`` or ``groups=``) has a
member among the evaluation images is never drawn, so no copy of a scored image is trained on.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from threadpoolctl import threadpool_limits

from ..embeddings import Embeddings
from ..probe import LinearProbe
from .protocols import ProbeResult

FEWSHOT_FIXED_C = 1.0  # scikit-learn's default C, used below MIN_SHOTS_FOR_C_SELECTION
MIN_SHOTS_FOR_C_SELECTION = 4
DEFAULT_DRAWS = 10
BAND_PERCENTILES = (2.5, 97.5)
FEWSHOT_COLUMNS = ("encoder", "k", "accuracy", "low", "high", "draws")


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
) -> FewShotCurve:
    """Accuracy against images per class, on the evaluation images of ``result``.

    ``shots`` defaults to 1, 2, 4, … up to the largest k every class's pool holds in every
    fold; asked-for values above that are skipped with a message. Each of the ``draws``
    seeded draws gives one accuracy per k. With k < ``MIN_SHOTS_FOR_C_SELECTION`` the probe
    uses the fixed C ``FEWSHOT_FIXED_C``; otherwise ``probe`` (default ``LinearProbe``)
    chooses C on the drawn images. ``groups`` (one id per image) overrides
    ``result.duplicates`` for keeping duplicates of evaluation images out of the draws.
    Cost: folds x draws x len(shots) probe fits, those with k >= 4 each with a C sweep.
    """
    if draws < 1:
        raise ValueError("draws must be at least 1")
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
    n_evaluated = sum(len(task.evaluated) for task in tasks)
    correct = np.zeros((len(ks), draws))
    recorded: list[FewShotDraw] = []
    # Many tiny fits: a multithreaded BLAS only adds overhead (several times slower on 2 cores).
    with warnings.catch_warnings(), threadpool_limits(limits=1, user_api="blas"):
        warnings.simplefilter("ignore", ConvergenceWarning)
        for task_number, task in enumerate(tasks):
            for draw in range(draws):
                rng = np.random.default_rng([seed, draw, task_number])
                orders = [rng.permutation(pool) for pool in task.pools]
                for position, k in enumerate(ks):
                    train = np.concatenate([order[:k] for order in orders])
                    model = _probe_for(base, k).fit(
                        embeddings.vectors[train],
                        y[train],
                        groups=None if groups is None else groups[train],
                    )
                    predicted = model.predict(embeddings.vectors[task.evaluated])
                    correct[position, draw] += np.sum(predicted == y[task.evaluated])
                    if record:
                        recorded.append(
                            FewShotDraw(
                                k,
                                draw,
                                task.fold,
                                np.sort(train),
                                task.evaluated,
                                model.chosen_c_,
                                model.sweep_.method,
                            )
                        )
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
    return FewShotCurve(name, points, supported, tuple(messages), tuple(recorded))


def _probe_for(base: LinearProbe, k: int) -> LinearProbe:
    model = clone(base)
    if k < MIN_SHOTS_FOR_C_SELECTION:
        model.set_params(C=FEWSHOT_FIXED_C)
    return model


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


def fewshot_figure(
    curves: Sequence[FewShotCurve], zero_shot: dict[str, float] | None = None
) -> go.Figure:
    """Accuracy against images per class (log axis): a line and 95% band per encoder, and
    a dashed horizontal line per zero-shot accuracy (keyed by encoder name)."""
    palette = px.colors.qualitative.Plotly
    names = [curve.encoder for curve in curves]
    names += [name for name in zero_shot or {} if name not in names]
    colour = {name: palette[i % len(palette)] for i, name in enumerate(names)}
    all_k = [point.k for curve in curves for point in curve.points] or [1]
    figure = go.Figure()
    for curve in curves:
        if not curve.points:
            continue
        ks = [p.k for p in curve.points]
        figure.add_trace(
            go.Scatter(
                x=ks + ks[::-1],
                y=[p.high for p in curve.points] + [p.low for p in curve.points][::-1],
                fill="toself",
                fillcolor=colour[curve.encoder],
                opacity=0.2,
                line={"width": 0},
                hoverinfo="skip",
                showlegend=False,
                legendgroup=curve.encoder,
            )
        )
        figure.add_trace(
            go.Scatter(
                x=ks,
                y=[p.accuracy for p in curve.points],
                mode="lines+markers",
                name=curve.encoder,
                line={"color": colour[curve.encoder]},
                legendgroup=curve.encoder,
                customdata=[[p.low, p.high, p.draws] for p in curve.points],
                hovertemplate=(
                    "k = %{x} images per class<br>accuracy = %{y:.3f}"
                    " (%{customdata[0]:.3f}-%{customdata[1]:.3f} over %{customdata[2]} draws)"
                    "<extra>%{fullData.name}</extra>"
                ),
            )
        )
    for name, accuracy in (zero_shot or {}).items():
        # A trace rather than add_hline, so that it has a legend entry of its own.
        figure.add_trace(
            go.Scatter(
                x=[min(all_k), max(all_k)],
                y=[accuracy, accuracy],
                mode="lines",
                name=f"{name} zero-shot ({accuracy:.3f})",
                line={"dash": "dash", "color": colour[name]},
                hovertemplate=f"{name} zero-shot accuracy = {accuracy:.3f}<extra></extra>",
            )
        )
    figure.update_layout(
        title="Few-shot curve: accuracy with k training images per class",
        xaxis={"title": "images per class (k)", "type": "log", "tickvals": sorted(set(all_k))},
        yaxis={"title": "accuracy", "range": [0, 1.02]},
        margin={"t": 60},
    )
    return figure
