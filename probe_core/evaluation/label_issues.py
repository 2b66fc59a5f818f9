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


@dataclass(frozen=True)
class LabelIssue:
    """An image whose given label the out-of-fold probe doubts.

    ``index`` points into the embeddings; ``given`` and ``suggested`` are class indices;
    ``score`` is the label-quality score in [0, 1] (lower = more suspicious).
    """

    index: int
    given: int
    suggested: int
    score: float
    probability_given: float
    probability_suggested: float


def find_label_issues(
    labels: np.ndarray,
    probabilities: np.ndarray,
    *,
    indices: np.ndarray | None = None,
) -> tuple[LabelIssue, ...]:
    """Flagged images only, most suspicious first.

    ``labels`` (n,) are the given class indices, ``probabilities`` (n, n_classes) out-of-sample
    predicted probabilities, ``indices`` (n,) the embedding index of each row (default 0..n-1).
    """
    labels, probabilities, indices = _validated(labels, probabilities, indices)
    if len(labels) == 0:
        return ()
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
    suggested = probabilities.argmax(axis=1)
    return tuple(
        LabelIssue(
            index=int(indices[row]),
            given=int(labels[row]),
            suggested=int(suggested[row]),
            score=float(scores[row]),
            probability_given=float(probabilities[row, labels[row]]),
            probability_suggested=float(probabilities[row, suggested[row]]),
        )
        for row in np.asarray(flagged, dtype=np.int64)
    )


def label_issues_table(
    issues: Sequence[LabelIssue], paths: Sequence[str], class_names: Sequence[str]
) -> pd.DataFrame:
    """One row per issue, in the given order: ``path, given, suggested, score`` (class names)."""
    rows = [
        (paths[issue.index], class_names[issue.given], class_names[issue.suggested], issue.score)
        for issue in issues
    ]
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


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
