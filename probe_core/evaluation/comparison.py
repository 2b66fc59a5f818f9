"""Several encoders scored on the same images, the same folds, with paired tests.

Every encoder's probe is evaluated on exactly the same images and folds: rows are aligned by
path (an image one encoder could not embed is dropped for all), and the duplicate groups used
for splitting are the union of every encoder's (identical bytes, or near-duplicates under any
encoder), so no copy straddles two folds for any of them.

Two encoders are compared image by image: the difference in accuracy gets a 95% paired
bootstrap interval (the same resampled images for both encoders) and an exact McNemar test on
the images only one of the two got right.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.stats import bootstrap
from statsmodels.stats.contingency_tables import mcnemar

from ..embeddings import Embeddings
from ..probe import LinearProbe
from ..wording import plural
from .duplicates import DEFAULT_DUPLICATE_COSINE, find_duplicates
from .intervals import CONFIDENCE, Estimate
from .protocols import DEFAULT_FOLDS, ProbeResult, ProtocolChoice, run_probe

N_BOOTSTRAP = 2000
SIGNIFICANCE = 0.05
_BOOTSTRAP_BATCH = 250  # resamples held in memory at once
_DASH = "\u2013"
_MINUS = "\u2212"

COMPARISON_COLUMNS = (
    "encoder",
    "dim",
    "images_per_second",
    "accuracy",
    "accuracy_low",
    "accuracy_high",
    "balanced_accuracy",
    "balanced_accuracy_low",
    "balanced_accuracy_high",
)
PAIRS_COLUMNS = (
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
)


@dataclass(frozen=True)
class EncoderScore:
    """One encoder's probe scores on the shared images."""

    name: str
    dim: int
    images_per_second: float  # nan when unknown
    accuracy: Estimate
    balanced_accuracy: Estimate


@dataclass(frozen=True)
class PairedComparison:
    """Encoder ``b`` against encoder ``a`` on the same images; ``difference`` is b - a."""

    a: str
    b: str
    accuracy_a: float
    accuracy_b: float
    difference: float
    difference_low: float
    difference_high: float
    p_value: float  # exact McNemar test on the images only one of the two got right
    only_a_correct: int
    only_b_correct: int

    @property
    def is_clear(self) -> bool:
        """Significant by McNemar and the bootstrap interval excludes zero (both must agree)."""
        excludes_zero = self.difference_low > 0 or self.difference_high < 0
        return self.p_value < SIGNIFICANCE and excludes_zero

    def sentence(self) -> str:
        """E.g. 'B is better by 6.1 points (95% CI 2.0-10.3), p = 0.004'.

        The interval's dash is an en dash and negative numbers carry a true minus sign.
        """
        p = _format_p(self.p_value)
        if not self.is_clear:
            interval = _points_interval(self.difference_low, self.difference_high)
            return (
                f"no clear difference between {self.a} and {self.b}:"
                f" {_points(self.difference)} points ({interval}), {p}"
            )
        if self.difference > 0:
            better, by = self.b, self.difference
            low, high = self.difference_low, self.difference_high
        else:
            better, by = self.a, -self.difference
            low, high = -self.difference_high, -self.difference_low
        return f"{better} is better by {_points(by)} points ({_points_interval(low, high)}), {p}"


@dataclass(frozen=True)
class Comparison:
    """Encoders scored on the same evaluated images, with every pair compared."""

    encoders: tuple[EncoderScore, ...]
    pairs: tuple[PairedComparison, ...]
    paths: tuple[str, ...]  # the evaluated images, in the order of the per-image columns
    true: tuple[str, ...]  # true class name per evaluated image
    predicted: dict[str, tuple[str, ...]]  # encoder name -> predicted class name per image
    results: dict[str, ProbeResult]  # encoder name -> its full probe run
    protocol: ProtocolChoice
    messages: tuple[str, ...] = ()
    groups: np.ndarray | None = None  # the duplicate groups every encoder was split by

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(score.name for score in self.encoders)


def compare_encoders(
    embeddings_by_encoder: Mapping[str, Embeddings],
    *,
    protocol: str = "auto",
    folds: int = DEFAULT_FOLDS,
    repeats: int = 1,
    test_size: float = 0.25,
    seed: int = 0,
    duplicate_threshold: float | None = DEFAULT_DUPLICATE_COSINE,
    images_per_second: Mapping[str, float] | None = None,
    probe: LinearProbe | None = None,
    near_duplicate_encoders: Collection[str] | None = None,
) -> Comparison:
    """Score a linear probe per encoder on the same images and folds, and compare every pair.

    Keys of ``embeddings_by_encoder`` name the encoders in every table and sentence.
    ``duplicate_threshold=None`` turns duplicate grouping off (as in ``run_probe``).
    ``near_duplicate_encoders`` names the encoders whose near-duplicates shape the shared
    groups (default: all); the others contribute identical files only.
    """
    if len(embeddings_by_encoder) < 2:
        raise ValueError("a comparison needs the embeddings of at least two encoders")
    aligned, messages = align_by_path(embeddings_by_encoder)
    near = [near_duplicate_encoders is None or name in near_duplicate_encoders for name in aligned]
    groups = shared_duplicate_groups(aligned.values(), duplicate_threshold, near)
    n_linked = int(np.sum(np.bincount(groups)[groups] > 1))
    if n_linked:
        messages.append(
            f"{plural(n_linked, 'image')} {'is a duplicate' if n_linked == 1 else 'are duplicates'}"
            " under at least one encoder; each group was kept in one fold (or one side of the"
            " split) for every encoder"
        )

    results = {
        name: run_probe(
            embeddings,
            protocol=protocol,
            folds=folds,
            repeats=repeats,
            test_size=test_size,
            seed=seed,
            probe=probe,
            duplicate_threshold=duplicate_threshold,
            groups=groups,
        )
        for name, embeddings in aligned.items()
    }
    first_name, first = next(iter(results.items()))
    for name, result in results.items():
        if not np.array_equal(result.evaluated, first.evaluated) or result.folds != first.folds:
            raise RuntimeError(
                f"encoders {first_name} and {name} were not evaluated on the same images and"
                " folds; a paired comparison would be meaningless"
            )

    class_names = first.class_names
    correct = {name: result.predictions == result.labels for name, result in results.items()}
    rates = images_per_second or {}
    scores = tuple(
        EncoderScore(
            name=name,
            dim=aligned[name].dim,
            images_per_second=float(rates.get(name, float("nan"))),
            accuracy=result.metrics.accuracy,
            balanced_accuracy=result.metrics.balanced_accuracy,
        )
        for name, result in results.items()
    )
    pairs = tuple(
        compare_pair(a, b, correct[a], correct[b], seed=seed)
        for a, b in itertools.combinations(results, 2)
    )
    paths = aligned[first_name].paths
    return Comparison(
        encoders=scores,
        pairs=pairs,
        paths=tuple(paths[i] for i in first.evaluated),
        true=tuple(class_names[k] for k in first.labels),
        predicted={
            name: tuple(class_names[k] for k in result.predictions)
            for name, result in results.items()
        },
        results=results,
        protocol=first.protocol,
        messages=tuple(messages),
        groups=groups,
    )


def align_by_path(
    embeddings_by_encoder: Mapping[str, Embeddings],
) -> tuple[dict[str, Embeddings], list[str]]:
    """Keep the paths every encoder embedded, in the first encoder's order, for all encoders.

    Returns the subset embeddings and messages naming what was dropped. Raises when the
    encoders disagree on class names or on an image's label.
    """
    names = list(embeddings_by_encoder)
    all_embeddings = list(embeddings_by_encoder.values())
    for name, embeddings in embeddings_by_encoder.items():
        if len(set(embeddings.paths)) != len(embeddings.paths):
            raise ValueError(f"the embeddings of {name} list the same path more than once")
        if embeddings.class_names != all_embeddings[0].class_names:
            raise ValueError(
                f"{names[0]} and {name} were embedded with different classes"
                f" ({all_embeddings[0].class_names} against {embeddings.class_names})"
            )
    common = set.intersection(*(set(e.paths) for e in all_embeddings))
    kept_paths = [path for path in all_embeddings[0].paths if path in common]
    if not kept_paths:
        raise ValueError("the encoders' embeddings share no image paths")

    aligned = {}
    for name, embeddings in embeddings_by_encoder.items():
        row_of = {path: i for i, path in enumerate(embeddings.paths)}
        aligned[name] = _subset(embeddings, np.array([row_of[p] for p in kept_paths]))
    reference = next(iter(aligned.values()))
    for name, embeddings in aligned.items():
        differs = np.flatnonzero(embeddings.labels != reference.labels)
        if len(differs):
            raise ValueError(
                f"{names[0]} and {name} give {kept_paths[differs[0]]} different labels"
            )

    messages = []
    every_path = set().union(*(e.paths for e in all_embeddings))
    for name, embeddings in embeddings_by_encoder.items():
        missing = sorted(every_path - set(embeddings.paths))
        if missing:
            example = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
            messages.append(
                f"{len(missing)} image{'s' if len(missing) != 1 else ''} missing from {name}'s"
                f" embeddings (e.g. it could not decode them) were dropped for every encoder:"
                f" {example}"
            )
    return aligned, messages


def shared_duplicate_groups(
    embeddings: Iterable[Embeddings],
    threshold: float | None = DEFAULT_DUPLICATE_COSINE,
    near: Sequence[bool] | None = None,
) -> np.ndarray:
    """One group id per image: linked by identical bytes or near-duplicate under any encoder.

    The groups are the connected components of the union of every encoder's duplicate
    groups. With ``threshold=None`` every image is its own group. ``near`` (one flag per
    encoder) says whose near-duplicates count; the others link identical vectors only
    (a pixel baseline calls many distinct images on white backgrounds near-identical).
    """
    embeddings = list(embeddings)
    n = len(embeddings[0])
    if threshold is None:
        return np.arange(n)
    near = [True] * len(embeddings) if near is None else list(near)
    # A bipartite graph: image i is joined to node (offset of encoder e) + its group under e.
    rows, cols, offset = [], [], n
    for item, counts_near in zip(embeddings, near, strict=True):
        digests = [d or f"row {i}" for i, d in enumerate(item.sha256)]
        duplicates = find_duplicates(
            item.vectors,
            digests,
            item.labels,
            threshold=threshold if counts_near else 1.0,
            splits=item.splits if item.has_splits else None,
        )
        rows.append(np.arange(n))
        cols.append(offset + duplicates.group_of)
        offset += int(duplicates.group_of.max()) + 1
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    graph = coo_matrix((np.ones(len(rows), dtype=np.int8), (rows, cols)), shape=(offset, offset))
    _, component = connected_components(graph, directed=False)
    _, group_of = np.unique(component[:n], return_inverse=True)
    return group_of


def compare_pair(
    a: str,
    b: str,
    correct_a: np.ndarray,
    correct_b: np.ndarray,
    *,
    n_resamples: int = N_BOOTSTRAP,
    seed: int = 0,
) -> PairedComparison:
    """Paired comparison of two encoders from whether each got each image right."""
    correct_a, correct_b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    if correct_a.shape != correct_b.shape or correct_a.ndim != 1 or not len(correct_a):
        raise ValueError("correct_a and correct_b need one entry per evaluated image each")
    low, high = paired_bootstrap_interval(correct_a, correct_b, n_resamples=n_resamples, seed=seed)
    return PairedComparison(
        a=a,
        b=b,
        accuracy_a=float(correct_a.mean()),
        accuracy_b=float(correct_b.mean()),
        difference=float(correct_b.mean() - correct_a.mean()),
        difference_low=low,
        difference_high=high,
        p_value=mcnemar_p_value(correct_a, correct_b),
        only_a_correct=int(np.sum(correct_a & ~correct_b)),
        only_b_correct=int(np.sum(correct_b & ~correct_a)),
    )


def mcnemar_p_value(correct_a: np.ndarray, correct_b: np.ndarray) -> float:
    """Exact (binomial) McNemar p-value; 1.0 when no image was got right by only one."""
    correct_a, correct_b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    table = [
        [np.sum(correct_a & correct_b), np.sum(correct_a & ~correct_b)],
        [np.sum(~correct_a & correct_b), np.sum(~correct_a & ~correct_b)],
    ]
    return float(mcnemar(table, exact=True).pvalue)


def paired_bootstrap_interval(
    correct_a: np.ndarray,
    correct_b: np.ndarray,
    *,
    n_resamples: int = N_BOOTSTRAP,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of accuracy(b) - accuracy(a), images resampled in pairs."""
    correct_a = np.asarray(correct_a, dtype=float)
    correct_b = np.asarray(correct_b, dtype=float)

    def difference(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
        return b.mean(axis=axis) - a.mean(axis=axis)

    # Percentile, not BCa: the statistic takes few distinct values and is often degenerate
    # (two encoders right on the same images), where BCa is undefined.
    result = bootstrap(
        (correct_a, correct_b),
        difference,
        n_resamples=n_resamples,
        batch=_BOOTSTRAP_BATCH,
        vectorized=True,
        paired=True,
        confidence_level=confidence,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def comparison_table(comparison: Comparison) -> pd.DataFrame:
    """One row per encoder (``comparison.csv``)."""
    records = [
        (
            s.name,
            s.dim,
            s.images_per_second,
            s.accuracy.value,
            s.accuracy.low,
            s.accuracy.high,
            s.balanced_accuracy.value,
            s.balanced_accuracy.low,
            s.balanced_accuracy.high,
        )
        for s in comparison.encoders
    ]
    return pd.DataFrame(records, columns=list(COMPARISON_COLUMNS))


def pairs_table(comparison: Comparison) -> pd.DataFrame:
    """One row per pair of encoders (``pairs.csv``)."""
    records = [
        tuple(getattr(pair, column) for column in PAIRS_COLUMNS) for pair in comparison.pairs
    ]
    return pd.DataFrame(records, columns=list(PAIRS_COLUMNS))


def per_image_table(comparison: Comparison) -> pd.DataFrame:
    """``path,true`` and one predicted-class column per encoder (``per_image.csv``)."""
    clashing = {"path", "true"} & set(comparison.predicted)
    if clashing:
        raise ValueError(f"encoder names {sorted(clashing)} clash with the table's own columns")
    columns = {"path": list(comparison.paths), "true": list(comparison.true)}
    columns.update({name: list(labels) for name, labels in comparison.predicted.items()})
    return pd.DataFrame(columns)


def baseline_warnings(comparison: Comparison, weight_free: Callable[[str], bool]) -> list[str]:
    """Warn when a weight-free baseline is not clearly worse than a real encoder.

    On the same images the paired comparison decides (``PairedComparison.is_clear``): two
    accuracies whose own intervals overlap can still differ clearly, image by image. Without a
    pair, the two accuracy intervals overlapping counts as "about as well".
    """
    pairs = {frozenset((pair.a, pair.b)): pair for pair in comparison.pairs}
    caveat = ": your classes may differ in colour or layout rather than content"
    warnings = []
    for score in comparison.encoders:
        if weight_free(score.name):
            continue
        for baseline in comparison.encoders:
            if not weight_free(baseline.name):
                continue
            pair = pairs.get(frozenset((baseline.name, score.name)))
            if pair is None:
                if baseline.accuracy.low <= score.accuracy.high and (
                    score.accuracy.low <= baseline.accuracy.high
                ):
                    warnings.append(
                        f"a trivial baseline ({baseline.name}) does about as well as"
                        f" {score.name}{caveat}"
                    )
                continue
            baseline_ahead = (pair.difference > 0) == (pair.b == baseline.name)
            if not pair.is_clear:
                warnings.append(
                    f"a trivial baseline ({baseline.name}) does about as well as {score.name}"
                    f" (no clear difference on the same images){caveat}"
                )
            elif baseline_ahead:
                warnings.append(
                    f"a trivial baseline ({baseline.name}) does better than {score.name}{caveat}"
                )
    return warnings


def _subset(embeddings: Embeddings, rows: np.ndarray) -> Embeddings:
    return dataclasses.replace(
        embeddings,
        vectors=embeddings.vectors[rows],
        labels=embeddings.labels[rows],
        paths=[embeddings.paths[i] for i in rows],
        sha256=[embeddings.sha256[i] for i in rows],
        splits=[embeddings.splits[i] for i in rows],
    )


def _points(fraction: float) -> str:
    text = f"{100 * fraction:.1f}"
    return "0.0" if float(text) == 0 else text.replace("-", _MINUS)


def _points_interval(low: float, high: float) -> str:
    return f"95% CI {_points(low)}{_DASH}{_points(high)}"


def _format_p(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.2g}"
