"""Each class's most typical and least typical images: where odd ones and mislabels show up.

Two measures, and every result says which one it used (``Typicality.measure``):

- ``"margin"``: the probe's margin on the image's own class, ``p(own class) - max p(any other
  class)``, from the out-of-sample probabilities of the run (each image scored by a probe
  that never saw it). From +1 (confidently right) to -1 (confidently another class). Only
  scored images have one: every image under cross-validation, the test images otherwise.
- ``"centre"``: the cosine between the image's embedding and its class centre (the mean of
  the class's unit-norm embeddings, normalised). Every image has one, with or without a
  probe; it says how far an image lies from the rest of its class, not what a probe made of
  it.

``"auto"`` uses the margin when the run scored images of the class, the centre otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

MEASURES = ("auto", "margin", "centre")
DEFAULT_COUNT = 6


@dataclass(frozen=True)
class TypicalImage:
    """One image and how typical of its class it is under ``Typicality.measure``."""

    index: int  # row in the embeddings
    path: str
    score: float  # the margin or the cosine to the class centre
    predicted: str = ""  # the probe's out-of-sample prediction ("" under "centre")


@dataclass(frozen=True)
class Typicality:
    """A class's most typical images (highest score first) and least typical (lowest first)."""

    class_name: str
    measure: str  # "margin" | "centre"
    typical: tuple[TypicalImage, ...]
    atypical: tuple[TypicalImage, ...]
    n_images: int  # images of the class the measure was computed for

    def describe(self) -> str:
        if self.measure == "margin":
            return (
                "by the probe's margin, p(own class) - max p(other class), from out-of-sample"
                " predictions"
            )
        return "by cosine similarity to the class centre (mean embedding of the class)"


def class_typicality(
    vectors: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    paths: Sequence[str],
    *,
    evaluated: np.ndarray | None = None,
    probabilities: np.ndarray | None = None,
    probe_classes: Sequence[str] | None = None,
    by: str = "auto",
    count: int = DEFAULT_COUNT,
) -> dict[str, Typicality]:
    """Per class, its ``count`` most and least typical images.

    ``labels`` index ``class_names`` per row of ``vectors``. For the margin, ``evaluated``
    (rows scored out of sample) and ``probabilities`` (one row per evaluated image, one
    column per class of ``probe_classes``, by default ``class_names``) come from the run.
    Classes the probe was not fitted on only have the centre measure.
    """
    if by not in MEASURES:
        raise ValueError(f"by must be one of {', '.join(MEASURES)}, got {by!r}")
    vectors = np.asarray(vectors, dtype=np.float32)
    labels = np.asarray(labels)
    probe_classes = list(class_names if probe_classes is None else probe_classes)
    has_scores = evaluated is not None and probabilities is not None
    if by == "margin" and not has_scores:
        raise ValueError("the margin needs the run's evaluated rows and their probabilities")
    result = {}
    for label, name in enumerate(class_names):
        rows = np.flatnonzero(labels == label)
        margin_rows = np.zeros(0, dtype=int)
        if has_scores and name in probe_classes:
            scored = np.flatnonzero(labels[np.asarray(evaluated, dtype=int)] == label)
            margin_rows = scored
        use_margin = by == "margin" or (by == "auto" and len(margin_rows) > 0)
        if use_margin:
            column = probe_classes.index(name) if name in probe_classes else None
            chosen = np.asarray(evaluated, dtype=int)[margin_rows]
            scores = (
                _margins(np.asarray(probabilities)[margin_rows], column)
                if column is not None
                else np.zeros(0)
            )
            predicted = [
                probe_classes[int(i)] for i in np.argmax(np.asarray(probabilities)[margin_rows], 1)
            ]
            measure = "margin"
        else:
            chosen = rows
            scores = _centre_cosines(vectors[rows])
            predicted = [""] * len(rows)
            measure = "centre"
        result[name] = _ranked(name, measure, chosen, scores, predicted, paths, count)
    return result


def _margins(probabilities: np.ndarray, column: int) -> np.ndarray:
    own = probabilities[:, column]
    others = np.delete(probabilities, column, axis=1)
    best_other = others.max(axis=1) if others.shape[1] else np.zeros(len(own))
    return own - best_other


def _centre_cosines(vectors: np.ndarray) -> np.ndarray:
    if len(vectors) == 0:
        return np.zeros(0)
    centre = vectors.astype(np.float64).mean(axis=0)
    norm = np.linalg.norm(centre)
    if norm == 0:
        return np.zeros(len(vectors))
    return vectors.astype(np.float64) @ (centre / norm)


def _ranked(
    name: str,
    measure: str,
    rows: np.ndarray,
    scores: np.ndarray,
    predicted: list[str],
    paths: Sequence[str],
    count: int,
) -> Typicality:
    # Highest score first; ties by row, so the order never depends on the sort's whims.
    order = np.lexsort((rows, -scores)) if len(rows) else np.zeros(0, dtype=int)

    def image(position: int) -> TypicalImage:
        row = int(rows[position])
        return TypicalImage(row, paths[row], float(scores[position]), predicted[position])

    # A small class is split in two rather than shown as both typical and atypical.
    n_typical = min(count, (len(order) + 1) // 2)
    n_atypical = min(count, len(order) - n_typical)
    typical = tuple(image(p) for p in order[:n_typical])
    atypical = tuple(image(p) for p in order[::-1][:n_atypical])
    return Typicality(name, measure, typical, atypical, len(rows))
