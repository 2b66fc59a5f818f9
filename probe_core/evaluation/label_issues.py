"""Label-error candidates from out-of-fold probe probabilities, found with cleanlab.

Every image is scored with ``cleanlab.rank.get_label_quality_scores`` (self-confidence: the
out-of-fold probability of its given label; lower is more suspicious). Confident learning
(``cleanlab.count.num_label_issues``, through ``cleanlab.filter.find_label_issues`` with
``filter_by="low_self_confidence"``) estimates how many labels are wrong, and that many of the
lowest-scoring images are flagged. So the flagged list is exactly the top of the ranking and
agrees with the score it shows; cleanlab's default ``prune_by_noise_rate`` can leave out the
image with the lowest score of all (on the demo set it often left out a deliberately
mislabelled one) while flagging images with higher scores.

Fallback, when cleanlab cannot run (e.g. all images carry one label): flag the images whose
most probable class is not their given label, lowest score first.

A flagged image is one of two kinds, kept apart so that no sentence contradicts itself:

- ``LabelIssue``: its most probable class is another one, "labelled X, looks like Y"
  (``suggested`` is never the given class);
- ``LowConfidenceLabel``: its given class is still the most probable, only with a low
  probability, "low confidence in its own label"; ``runner_up`` is the most probable other
  class.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from cleanlab.filter import find_label_issues as cleanlab_find_label_issues
from cleanlab.rank import get_label_quality_scores

RANKED_BY = "self_confidence"
FLAGGED_BY = "low_self_confidence"
ROW_SUM_TOLERANCE = 1e-3
TABLE_COLUMNS = ["path", "given", "suggested", "score"]
LOW_CONFIDENCE_COLUMNS = ["path", "given", "runner_up", "score"]


@dataclass(frozen=True)
class LabelIssue:
    """A flagged image whose most probable class is not its given one: "labelled X, looks
    like Y".

    ``index`` points into the embeddings; ``given`` and ``suggested`` (the most probable
    class, never ``given``) are class indices; ``score`` is the label-quality score in
    [0, 1] (lower = more suspicious).
    """

    index: int
    given: int
    suggested: int
    score: float
    probability_given: float
    probability_suggested: float

    def __post_init__(self):
        if self.suggested == self.given:
            raise ValueError("a label issue suggests another class than the given one")

    def sentence(self, class_names: Sequence[str]) -> str:
        """ "labelled X, looks like Y (p(Y) = …, p(X) = …)"."""
        given, suggested = class_names[self.given], class_names[self.suggested]
        return (
            f"labelled {given}, looks like {suggested} (p({suggested}) ="
            f" {self.probability_suggested:.2f}, p({given}) = {self.probability_given:.2f})"
        )


@dataclass(frozen=True)
class LowConfidenceLabel:
    """A flagged image whose given class is still the most probable, with a low probability:
    low confidence in its own label. ``runner_up`` is the most probable other class."""

    index: int
    given: int
    runner_up: int
    score: float
    probability_given: float
    probability_runner_up: float

    def sentence(self, class_names: Sequence[str]) -> str:
        """ "labelled X, low confidence (p(X) = …); runner-up Y (p(Y) = …)"."""
        given, runner_up = class_names[self.given], class_names[self.runner_up]
        return (
            f"labelled {given}, low confidence (p({given}) = {self.probability_given:.2f});"
            f" runner-up {runner_up} (p({runner_up}) = {self.probability_runner_up:.2f})"
        )


@dataclass(frozen=True)
class LabelReview:
    """What cleanlab flagged, in its two kinds, each most suspicious first."""

    issues: tuple[LabelIssue, ...] = ()
    low_confidence: tuple[LowConfidenceLabel, ...] = ()


def find_label_issues(
    labels: np.ndarray,
    probabilities: np.ndarray,
    *,
    indices: np.ndarray | None = None,
) -> tuple[LabelIssue, ...]:
    """Flagged images that look like another class, most suspicious first (``review_labels``)."""
    return review_labels(labels, probabilities, indices=indices).issues


def review_labels(
    labels: np.ndarray,
    probabilities: np.ndarray,
    *,
    indices: np.ndarray | None = None,
) -> LabelReview:
    """Flagged images, most suspicious first, split into the two kinds (module docstring).

    ``labels`` (n,) are the given class indices, ``probabilities`` (n, n_classes) out-of-sample
    predicted probabilities, ``indices`` (n,) the embedding index of each row (default 0..n-1).
    """
    labels, probabilities, indices = _validated(labels, probabilities, indices)
    if len(labels) == 0:
        return LabelReview()
    with _quiet():
        scores = get_label_quality_scores(labels, probabilities, method=RANKED_BY)
        try:
            flagged = cleanlab_find_label_issues(
                labels,
                probabilities,
                filter_by=FLAGGED_BY,
                return_indices_ranked_by=RANKED_BY,
                n_jobs=1,  # no process pool on small shared machines
            )
        except Exception:  # cleanlab raises assorted errors on degenerate label sets
            flagged = _disagreements(labels, probabilities, scores)
    others = probabilities.copy()
    others[np.arange(len(labels)), labels] = -np.inf
    alternative = others.argmax(axis=1)  # the most probable class other than the given one
    most_likely = probabilities.argmax(axis=1)
    issues, low_confidence = [], []
    for row in np.asarray(flagged, dtype=np.int64):
        common = {
            "index": int(indices[row]),
            "given": int(labels[row]),
            "score": float(scores[row]),
            "probability_given": float(probabilities[row, labels[row]]),
        }
        # ties with the given class go to the given class (argmax takes the first): such an
        # image does not look like another class more than like its own
        tied = probabilities[row, alternative[row]] == probabilities[row, labels[row]]
        if most_likely[row] != labels[row] and not tied:
            issues.append(
                LabelIssue(
                    **common,
                    suggested=int(alternative[row]),
                    probability_suggested=float(probabilities[row, alternative[row]]),
                )
            )
        elif len(probabilities[row]) > 1:
            low_confidence.append(
                LowConfidenceLabel(
                    **common,
                    runner_up=int(alternative[row]),
                    probability_runner_up=float(probabilities[row, alternative[row]]),
                )
            )
    return LabelReview(tuple(issues), tuple(low_confidence))


def label_issues_table(
    issues: Sequence[LabelIssue], paths: Sequence[str], class_names: Sequence[str]
) -> pd.DataFrame:
    """One row per issue, in the given order: ``path, given, suggested, score`` (class names)."""
    rows = [
        (paths[issue.index], class_names[issue.given], class_names[issue.suggested], issue.score)
        for issue in issues
    ]
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def low_confidence_table(
    flagged: Sequence[LowConfidenceLabel], paths: Sequence[str], class_names: Sequence[str]
) -> pd.DataFrame:
    """One row per image: ``path, given, runner_up, score`` (class names), in the given order."""
    rows = [
        (paths[item.index], class_names[item.given], class_names[item.runner_up], item.score)
        for item in flagged
    ]
    return pd.DataFrame(rows, columns=LOW_CONFIDENCE_COLUMNS)


def _disagreements(labels: np.ndarray, probabilities: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Fallback rule: rows whose most probable class is not the given one, lowest score first."""
    disagreeing = np.flatnonzero(probabilities.argmax(axis=1) != labels)
    return disagreeing[np.argsort(scores[disagreeing], kind="stable")]


@contextlib.contextmanager
def _quiet():
    """Silence cleanlab's (and scikit-learn's) warnings and prints about small classes."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def _validated(
    labels: np.ndarray, probabilities: np.ndarray, indices: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    labels = np.asarray(labels)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if labels.ndim != 1:
        raise ValueError(f"labels must be one-dimensional, got shape {labels.shape}")
    n = len(labels)
    indices = np.arange(n) if indices is None else np.asarray(indices)
    if indices.shape != (n,):
        raise ValueError(f"indices must have shape ({n},) like labels, got {indices.shape}")
    if n == 0:
        return labels, probabilities, indices
    if probabilities.ndim != 2 or probabilities.shape[0] != n or probabilities.shape[1] < 1:
        raise ValueError(
            f"probabilities must have shape ({n}, n_classes) to match labels, "
            f"got {probabilities.shape}"
        )
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integer class indices, got dtype {labels.dtype}")
    if not np.issubdtype(indices.dtype, np.integer):
        raise ValueError(f"indices must be integers, got dtype {indices.dtype}")
    n_classes = probabilities.shape[1]
    if labels.min() < 0 or labels.max() >= n_classes:
        raise ValueError(f"labels must lie in 0..{n_classes - 1} (the probability columns)")
    if not np.all(np.isfinite(probabilities)) or probabilities.min() < 0:
        raise ValueError("probabilities must be finite and non-negative")
    if not np.allclose(probabilities.sum(axis=1), 1.0, atol=ROW_SUM_TOLERANCE):
        raise ValueError("each row of probabilities must sum to 1")
    return labels.astype(np.int64), probabilities, indices.astype(np.int64)
