"""Duplicate and near-duplicate images, grouped so that no copy can inflate a probe's accuracy.

Two images are linked when their file bytes are identical (same digest) or their embeddings
have cosine similarity at or above a threshold; groups are the connected components of those
links, so linking is transitive (a~b and b~c put a, b and c in one group). ``group_of`` gives
every image a group id and can be passed as ``groups=`` to scikit-learn's group-aware
splitters, which keeps all copies of an image on one side of every split.

Neighbour search is exact (blockwise ``rows @ vectors.T``) up to ``exact_limit`` distinct
images and approximate above it (pynndescent's k-nearest-neighbour graph, cosine metric,
seeded): exact search grows with n squared, and past about 20,000 images it costs more than
the embedding itself on a small CPU. The approximate graph can miss a link, most likely inside
a cluster of more near-copies than ``APPROXIMATE_NEIGHBOURS``; byte-identical copies are always
linked through their digests.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from ..wording import plural

DEFAULT_DUPLICATE_COSINE = 0.995
EXACT_SEARCH_LIMIT = 20_000  # distinct images; above this the search is approximate
APPROXIMATE_NEIGHBOURS = 15
BLOCK_BYTES = 128 * 2**20  # bound on one block of the similarity matrix

TRAIN_SIDE_SPLITS = frozenset({"train", "val"})
TEST_SPLIT = "test"
KNOWN_SPLITS = TRAIN_SIDE_SPLITS | {TEST_SPLIT, ""}


@dataclass(frozen=True)
class DuplicateGroup:
    """Two or more images that are copies or near-copies of each other."""

    id: int
    members: tuple[int, ...]
    labels: tuple[int, ...]
    identical_bytes: bool
    label_conflict: bool
    leak: bool

    def __len__(self) -> int:
        return len(self.members)


@dataclass(frozen=True)
class Duplicates:
    """Every image's group id, and the groups of two or more images."""

    group_of: np.ndarray
    groups: tuple[DuplicateGroup, ...]
    threshold: float
    exact_search: bool = True

    @property
    def has_groups(self) -> bool:
        return bool(self.groups)

    @property
    def n_duplicate_images(self) -> int:
        """Images that belong to a group of two or more."""
        return sum(len(group) for group in self.groups)

    @property
    def conflicts(self) -> tuple[DuplicateGroup, ...]:
        """Groups whose members carry different labels."""
        return tuple(group for group in self.groups if group.label_conflict)

    @property
    def leaks(self) -> tuple[DuplicateGroup, ...]:
        """Groups with members on both sides of the dataset's own train/test layout."""
        return tuple(group for group in self.groups if group.leak)


def find_duplicates(
    vectors: np.ndarray,
    digests: Sequence[Hashable],
    labels: np.ndarray,
    *,
    threshold: float = DEFAULT_DUPLICATE_COSINE,
    splits: Sequence[str] | None = None,
    exact_limit: int = EXACT_SEARCH_LIMIT,
    seed: int = 0,
) -> Duplicates:
    """Group images whose bytes are identical or whose unit-norm embeddings nearly coincide.

    ``digests`` holds one content hash per image (str or bytes), ``splits`` optionally one of
    "train", "val", "test" or "" per image. Above ``exact_limit`` distinct images the
    neighbour search is approximate (pynndescent, seeded with ``seed``).
    """
    vectors, labels, splits = _validated(vectors, digests, labels, splits, threshold)
    n = len(labels)

    # Byte-identical images are linked to the first image with their digest; only those
    # first images (the representatives) take part in the similarity search.
    first_with_digest: dict[Hashable, int] = {}
    same_bytes = np.array([first_with_digest.setdefault(d, i) for i, d in enumerate(digests)])
    representatives = np.flatnonzero(same_bytes == np.arange(n))
    exact_search = len(representatives) <= exact_limit
    search = _similar_pairs_exact if exact_search else _similar_pairs_approximate
    left, right = search(vectors[representatives], threshold, seed)

    rows = np.concatenate([np.arange(n), representatives[left]])
    cols = np.concatenate([same_bytes, representatives[right]])
    graph = coo_matrix((np.ones(len(rows), dtype=np.int32), (rows, cols)), shape=(n, n))
    _, component = connected_components(graph, directed=False)

    group_of, groups = _numbered_groups(component, same_bytes, labels, splits)
    return Duplicates(
        group_of=group_of, groups=groups, threshold=float(threshold), exact_search=exact_search
    )


def duplicates_table(
    duplicates: Duplicates, paths: Sequence[str], class_names: Sequence[str]
) -> pd.DataFrame:
    """One row per image in a group of two or more: columns ``group,path,label``."""
    if len(paths) != len(duplicates.group_of):
        raise ValueError(
            f"{len(paths)} paths for {len(duplicates.group_of)} images in the duplicate groups"
        )
    records = [
        (group.id, paths[member], class_names[label])
        for group in duplicates.groups
        for member, label in zip(group.members, group.labels, strict=True)
    ]
    return pd.DataFrame(records, columns=["group", "path", "label"])


def summary(duplicates: Duplicates) -> str:
    """One line for the CLI, e.g. '2 duplicate groups (5 images); 1 label conflict'."""
    if not duplicates.has_groups:
        return "no duplicates"
    parts = [
        f"{plural(len(duplicates.groups), 'duplicate group')}"
        f" ({plural(duplicates.n_duplicate_images, 'image')})"
    ]
    if duplicates.conflicts:
        parts.append(plural(len(duplicates.conflicts), "label conflict"))
    if duplicates.leaks:
        n_leaks = len(duplicates.leaks)
        parts.append(
            f"{plural(n_leaks, 'group')} {'leaks' if n_leaks == 1 else 'leak'} across train/test"
        )
    if not duplicates.exact_search:
        parts.append("near-duplicates searched approximately")
    return "; ".join(parts)


def _validated(
    vectors: np.ndarray,
    digests: Sequence[Hashable],
    labels: np.ndarray,
    splits: Sequence[str] | None,
    threshold: float,
) -> tuple[np.ndarray, np.ndarray, list[str] | None]:
    vectors = np.asarray(vectors, dtype=np.float32)
    labels = np.asarray(labels)
    if vectors.ndim != 2:
        raise ValueError(f"vectors must be a 2-D array (images x dims), got shape {vectors.shape}")
    n = len(vectors)
    lengths = {"digests": len(digests), "labels": len(labels)}
    if splits is not None:
        lengths["splits"] = len(splits)
    wrong = [f"{v} {name}" for name, v in lengths.items() if v != n]
    if wrong:
        raise ValueError(f"{n} vectors but {', '.join(wrong)}: one of each is needed per image")
    if labels.ndim != 1 or (n and not np.issubdtype(labels.dtype, np.integer)):
        raise ValueError("labels must be a 1-D array of integer class indices")
    if not -1.0 <= threshold <= 1.0:
        raise ValueError(f"threshold is a cosine similarity in [-1, 1], got {threshold}")
    if n and not np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-3):
        raise ValueError("vectors must be L2-normalised (unit-norm rows)")
    if splits is not None:
        splits = [str(s) for s in splits]
        unknown = sorted(set(splits) - KNOWN_SPLITS)
        if unknown:
            raise ValueError(f"unknown split names {unknown}; expected train, val, test or ''")
    return vectors, labels, splits


def _similar_pairs_exact(
    vectors: np.ndarray, threshold: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """All pairs i < j with cosine >= threshold, one bounded block of rows at a time."""
    del seed  # exact search is deterministic
    n = len(vectors)
    block = max(1, BLOCK_BYTES // (4 * max(n, 1)))
    left, right = [], []
    for start in range(0, n, block):
        stop = min(n, start + block)
        # Only columns from `start` on: the pairs below the diagonal were found earlier.
        similar = vectors[start:stop] @ vectors[start:].T >= threshold
        i, j = np.nonzero(similar)
        above_diagonal = j > i
        left.append(i[above_diagonal] + start)
        right.append(j[above_diagonal] + start)
    if not left:
        return np.array([], dtype=np.intp), np.array([], dtype=np.intp)
    return np.concatenate(left), np.concatenate(right)


def approximate_index(vectors: np.ndarray, seed: int = 0, n_neighbours: int | None = None):
    """pynndescent's cosine nearest-neighbour index over ``vectors`` (two or more rows),
    seeded: the approximate search used above ``EXACT_SEARCH_LIMIT`` images, and by
    ``probe_core.explain.neighbours`` for nearest images in large sets. Its
    ``neighbor_graph`` holds ``n_neighbours`` (default ``APPROXIMATE_NEIGHBOURS``) per row."""
    from pynndescent import NNDescent  # slow to import (numba); only needed for big sets

    wanted = APPROXIMATE_NEIGHBOURS if n_neighbours is None else n_neighbours
    return NNDescent(
        vectors, metric="cosine", n_neighbors=min(wanted, len(vectors) - 1), random_state=seed
    )


def _similar_pairs_approximate(
    vectors: np.ndarray, threshold: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs among each image's approximate nearest neighbours with cosine >= threshold."""
    n = len(vectors)
    if n < 2:
        return np.array([], dtype=np.intp), np.array([], dtype=np.intp)
    neighbours, _ = approximate_index(vectors, seed).neighbor_graph
    left = np.repeat(np.arange(n), neighbours.shape[1])
    right = neighbours.ravel()
    found = (right >= 0) & (right != left)
    left, right = left[found], right[found]
    # Similarities recomputed exactly, so the threshold means the same as in exact search;
    # in blocks of pairs, since all of them at once would copy 15 vectors per image.
    step = max(1, BLOCK_BYTES // max(1, 2 * vectors.shape[1] * vectors.itemsize))
    similarity = np.concatenate(
        [
            np.einsum("ij,ij->i", vectors[left[i : i + step]], vectors[right[i : i + step]])
            for i in range(0, len(left), step)
        ]
        or [np.zeros(0, dtype=vectors.dtype)]
    )
    keep = similarity >= threshold
    return left[keep], right[keep]


def _numbered_groups(
    component: np.ndarray,
    same_bytes: np.ndarray,
    labels: np.ndarray,
    splits: list[str] | None,
) -> tuple[np.ndarray, tuple[DuplicateGroup, ...]]:
    """Renumber components: groups of two or more first (largest first), then singletons."""
    n = len(component)
    _, first_member, inverse, sizes = np.unique(
        component, return_index=True, return_inverse=True, return_counts=True
    )
    order = np.lexsort((first_member, -sizes))  # by size descending, then first member
    new_id = np.empty(len(order), dtype=np.int64)
    new_id[order] = np.arange(len(order))
    group_of = new_id[inverse] if n else np.zeros(0, dtype=np.int64)

    n_groups = int(np.sum(sizes >= 2))
    by_group = np.argsort(group_of, kind="stable")  # members of each group, in index order
    bounds = np.cumsum(np.bincount(group_of, minlength=len(order)))[:n_groups]
    groups = []
    for group_id, members in enumerate(np.split(by_group, bounds)[:n_groups]):
        member_splits = {splits[m] for m in members} if splits is not None else set()
        groups.append(
            DuplicateGroup(
                id=group_id,
                members=tuple(int(m) for m in members),
                labels=tuple(int(label) for label in labels[members]),
                identical_bytes=len(np.unique(same_bytes[members])) == 1,
                label_conflict=len(np.unique(labels[members])) > 1,
                leak=TEST_SPLIT in member_splits and bool(member_splits & TRAIN_SIDE_SPLITS),
            )
        )
    return group_of, tuple(groups)
