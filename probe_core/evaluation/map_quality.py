"""How far to trust a 2-D / 3-D map of the embeddings.

- Trustworthiness (scikit-learn, cosine in the full embedding): how well the map's
  neighbourhoods are made of true neighbours; 1.0 when every map neighbour is a real one.
- k-NN label agreement: the share of points whose k nearest neighbours' majority label is
  their own, in the full embedding (cosine) and in the map (euclidean). A point whose
  neighbourhood is clean in full dimension but mixed on the map is an artefact of the map.

Majority label: the label most frequent among the k neighbours (the point itself excluded).
When two or more labels tie for most frequent there is no majority: the point counts as not
agreeing with its own label, and its "no majority" compares equal only to another "no majority".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.manifold import trustworthiness
from sklearn.neighbors import NearestNeighbors

DEFAULT_NEIGHBOURS = 15
NO_MAJORITY = -1
MAP_AXES = ("x", "y", "z")


@dataclass(frozen=True)
class MapQuality:
    """Trustworthiness and neighbourhood label agreement of a map, overall and per point."""

    trustworthiness: float
    knn_agreement_full: float  # share of points whose full-dimension neighbours agree
    knn_agreement_map: float  # share of points whose map neighbours agree
    k: int  # neighbours used (capped below n / 2)
    n_components: int  # 2 or 3
    agrees_full: np.ndarray  # per point: full-dimension majority label == own label
    agrees_map: np.ndarray  # per point: map majority label == own label
    disagrees: np.ndarray  # per point: map majority label != full-dimension majority label

    @property
    def mixed_only_in_map(self) -> float:
        """Share of points that agree with their label in full dimension but not on the map."""
        return float(np.mean(self.agrees_full & ~self.agrees_map))

    def reading(self) -> str:
        """One line, e.g. 'the map keeps 91% of neighbourhoods; 7% of points look mixed ...'."""
        return (
            f"the map keeps {self.trustworthiness:.0%} of neighbourhoods;"
            f" {self.mixed_only_in_map:.0%} of points look mixed in {self.n_components}-D"
            " but are separable in full dimension"
        )

    def to_json_dict(self) -> dict[str, float | int]:
        """The summary numbers (``map_quality.json``)."""
        return {
            "trustworthiness": self.trustworthiness,
            "knn_agreement_full": self.knn_agreement_full,
            "knn_agreement_map": self.knn_agreement_map,
            "k": self.k,
        }


def map_quality(
    vectors: np.ndarray, coords: np.ndarray, labels: np.ndarray, *, k: int = DEFAULT_NEIGHBOURS
) -> MapQuality:
    """Score a map ``coords`` of ``vectors`` (one row per point each) against ``labels``.

    ``k`` is capped at the largest value scikit-learn's trustworthiness accepts (below n / 2).
    """
    vectors, coords, labels = np.asarray(vectors), np.asarray(coords), np.asarray(labels)
    n = len(vectors)
    if len(coords) != n or len(labels) != n:
        raise ValueError(f"{n} vectors, {len(coords)} map points and {len(labels)} labels")
    if coords.ndim != 2 or coords.shape[1] not in (2, 3):
        raise ValueError(f"coords must have 2 or 3 columns, got shape {coords.shape}")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    k = min(k, (n - 1) // 2)  # trustworthiness needs k < n / 2
    if k < 1:
        raise ValueError(f"a map quality needs at least 3 points, got {n}")

    _, codes = np.unique(labels, return_inverse=True)
    full_majority = neighbourhood_majority(vectors, codes, k=k, metric="cosine")
    map_majority = neighbourhood_majority(coords, codes, k=k, metric="euclidean")
    agrees_full = full_majority == codes
    agrees_map = map_majority == codes
    return MapQuality(
        trustworthiness=float(trustworthiness(vectors, coords, n_neighbors=k, metric="cosine")),
        knn_agreement_full=float(agrees_full.mean()),
        knn_agreement_map=float(agrees_map.mean()),
        k=k,
        n_components=int(coords.shape[1]),
        agrees_full=agrees_full,
        agrees_map=agrees_map,
        disagrees=full_majority != map_majority,
    )


def neighbourhood_majority(
    points: np.ndarray, codes: np.ndarray, *, k: int, metric: str
) -> np.ndarray:
    """Majority class code (``0 .. max(codes)``) of each point's k nearest other points.

    ``NO_MAJORITY`` where two or more classes tie for the most votes.
    """
    n_classes = int(codes.max()) + 1
    # kneighbors() without a query leaves each point out of its own neighbourhood.
    search = NearestNeighbors(n_neighbors=k, metric=metric, algorithm="brute").fit(points)
    neighbours = search.kneighbors(return_distance=False)
    votes = np.zeros((len(points), n_classes), dtype=np.int64)
    np.add.at(votes, (np.arange(len(points))[:, None], codes[neighbours]), 1)
    tied = (votes == votes.max(axis=1, keepdims=True)).sum(axis=1) > 1
    return np.where(tied, NO_MAJORITY, votes.argmax(axis=1))


def projection_table(
    paths: Sequence[str], labels_as_names: Sequence[str], coords: np.ndarray
) -> pd.DataFrame:
    """``path,label,x,y`` (and ``z`` for a 3-D map), one row per point (``projection.csv``)."""
    coords = np.asarray(coords)
    if coords.ndim != 2 or coords.shape[1] not in (2, 3):
        raise ValueError(f"coords must have 2 or 3 columns, got shape {coords.shape}")
    if not len(paths) == len(labels_as_names) == len(coords):
        raise ValueError(
            f"{len(paths)} paths, {len(labels_as_names)} labels and {len(coords)} map points"
        )
    table = pd.DataFrame({"path": list(paths), "label": list(labels_as_names)})
    for axis, column in zip(MAP_AXES, coords.T, strict=False):
        table[axis] = column
    return table
