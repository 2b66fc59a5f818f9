"""Nearest images: "it looks like these", in the full embedding space.

Cosine similarity of unit-norm embeddings, so the nearest images are those with the largest
dot product. Up to ``EXACT_LIMIT`` images the search is exact (blockwise ``vectors @ q``);
above it, the approximate index the duplicate search builds
(``probe_core.evaluation.duplicates.approximate_index``: pynndescent, cosine, seeded), built
once per ``NeighbourIndex``: an image of the set takes its row of the index's neighbour graph
(``APPROXIMATE_NEIGHBOURS`` per image), a new image or a larger k a search of the index for
a few more than wanted; their cosines are then recomputed exactly and ranked.
``NearestImages.exact`` says which search ran.

Each neighbour says whether it was in the same fold as the image asked about (``same_fold``),
from the fold every row of the run was in (``row_folds``): under cross-validation the fold it
was scored in (``"1"`` ... ``"K"``), otherwise ``"test"`` for scored images and ``"train"``
for images the probe was fitted on. For a scored image, a neighbour in the same fold was held
out together with it, so the probe that scored the image never saw that neighbour; a neighbour
in another fold (or in ``train``) was among that probe's training images. For an image that
was not part of the run, ``same_fold`` is None.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..evaluation.protocols import ProbeResult

DEFAULT_K = 8
EXACT_LIMIT = 50_000  # images; above this the search uses the approximate index
TRAIN_FOLD = "train"
APPROXIMATE_MARGIN = 8  # extra neighbours asked of the approximate index
BLOCK_ROWS = 65_536  # rows of the embedding matrix per block of the exact search


@dataclass(frozen=True)
class Neighbour:
    """One of an image's nearest images: its row in the embeddings, label and cosine."""

    index: int
    path: str
    label: str
    cosine: float
    fold: str  # the fold it was in ("1".."K", "test", "train"; "" when it took no part)
    same_fold: bool | None  # in the query's fold; None: the query took no part in the run


@dataclass(frozen=True)
class NearestImages:
    """The k nearest images of one image, most similar first."""

    query: str
    neighbours: tuple[Neighbour, ...]
    exact: bool  # exact search (True) or the approximate index (False)
    query_index: int | None = None  # the query's own row when it is one of the images

    def __len__(self) -> int:
        return len(self.neighbours)


def row_folds(result: ProbeResult, n_rows: int) -> np.ndarray:
    """The fold of every embedding row under ``result``'s protocol: the fold it was scored in
    (``"1"`` ... ``"K"`` under cv, ``"test"``), ``"train"`` for rows the reported probe was
    fitted on and that were not scored, ``""`` for rows that took no part (tiny classes)."""
    folds = np.full(n_rows, "", dtype=object)
    folds[np.asarray(result.train, dtype=int)] = TRAIN_FOLD
    folds[np.asarray(result.evaluated, dtype=int)] = np.asarray(result.folds, dtype=object)
    return folds


def same_fold(query_fold: str | None, neighbour_fold: str) -> bool | None:
    """Whether a neighbour was in the query's fold (None: the query was not in the run, or
    took no part in it)."""
    if not query_fold:
        return None
    return bool(neighbour_fold) and neighbour_fold == query_fold


class NeighbourIndex:
    """Nearest-image search over one set of unit-norm embeddings.

    ``labels`` are class names per row and ``folds`` the fold per row (``row_folds``; empty
    strings when unknown). The approximate index, when the set is larger than
    ``exact_limit``, is built on the first query and kept.
    """

    def __init__(
        self,
        vectors: np.ndarray,
        paths: Sequence[str],
        labels: Sequence[str],
        folds: Sequence[str] | None = None,
        *,
        exact_limit: int = EXACT_LIMIT,
        seed: int = 0,
    ):
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2:
            raise ValueError(f"vectors must be 2-D (images x dims), got shape {vectors.shape}")
        n = len(vectors)
        folds = [""] * n if folds is None else [str(f) for f in folds]
        if not len(paths) == len(labels) == len(folds) == n:
            raise ValueError(
                f"{n} vectors but {len(paths)} paths, {len(labels)} labels and {len(folds)}"
                " folds: one of each is needed per image"
            )
        self.vectors = vectors
        self.paths = list(paths)
        self.labels = list(labels)
        self.folds = folds
        self.exact_limit = exact_limit
        self.seed = seed
        self._index = None
        self._prepared = False

    @property
    def exact(self) -> bool:
        return len(self.vectors) <= self.exact_limit

    def __len__(self) -> int:
        return len(self.vectors)

    def nearest(
        self,
        vector: np.ndarray,
        k: int = DEFAULT_K,
        *,
        query: str = "",
        query_index: int | None = None,
    ) -> NearestImages:
        """The ``k`` images most similar to ``vector`` (a unit-norm embedding), leaving out
        the query's own row ``query_index`` when it is one of the images."""
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        vector = np.asarray(vector, dtype=np.float32).reshape(-1)
        if vector.shape[0] != self.vectors.shape[1]:
            raise ValueError(
                f"a {vector.shape[0]}-d query for {self.vectors.shape[1]}-d embeddings"
            )
        wanted = min(k, len(self) - (query_index is not None))
        if wanted <= 0:
            rows = np.zeros(0, dtype=int)
        elif self.exact:
            rows = self._exact(vector, wanted, query_index)
        else:
            rows = self._approximate(vector, wanted, query_index)
        cosines = self.vectors[rows] @ vector
        query_fold = self.folds[query_index] if query_index is not None else None
        neighbours = tuple(
            Neighbour(
                index=int(row),
                path=self.paths[row],
                label=self.labels[row],
                cosine=float(cosine),
                fold=self.folds[row],
                same_fold=same_fold(query_fold, self.folds[row]),
            )
            for row, cosine in zip(rows, cosines, strict=True)
        )
        return NearestImages(query or "", neighbours, self.exact, query_index)

    def nearest_to_row(self, row: int, k: int = DEFAULT_K) -> NearestImages:
        """The nearest images of one of the images itself (it is left out)."""
        return self.nearest(self.vectors[row], k, query=self.paths[row], query_index=row)

    def _exact(self, vector: np.ndarray, k: int, exclude: int | None) -> np.ndarray:
        similarity = np.concatenate(
            [
                self.vectors[start : start + BLOCK_ROWS] @ vector
                for start in range(0, len(self.vectors), BLOCK_ROWS)
            ]
        )
        if exclude is not None:
            similarity[exclude] = -np.inf
        return _top(similarity, np.arange(len(similarity)), k)

    def _approximate(self, vector: np.ndarray, k: int, exclude: int | None) -> np.ndarray:
        if self._index is None:
            from ..evaluation.duplicates import approximate_index

            self._index = approximate_index(self.vectors, self.seed)
        graph, _ = self._index.neighbor_graph
        if exclude is not None and k < graph.shape[1]:
            rows = graph[exclude]  # an image of the set: its row of the neighbour graph
        else:
            if not self._prepared:  # searching for new points compiles more numba code
                self._index.prepare()
                self._prepared = True
            asked = min(len(self), k + APPROXIMATE_MARGIN + (exclude is not None))
            rows = self._index.query(vector[None, :], k=asked)[0][0]
        rows = rows[(rows >= 0) & (rows != (-1 if exclude is None else exclude))]
        return _top(self.vectors[rows] @ vector, rows, k)


def _top(similarity: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` rows of highest similarity, most similar first; ties go to the lower row."""
    k = min(k, len(rows))
    if k == 0:
        return rows[:0]
    candidates = np.argpartition(-similarity, k - 1)[:k] if k < len(rows) else np.arange(len(rows))
    # Ties at the k-th value: take every row sharing it, then keep the first k by row.
    cut = similarity[candidates].min()
    tied = np.flatnonzero(similarity >= cut)
    order = np.lexsort((rows[tied], -similarity[tied]))
    return rows[tied[order][:k]]
