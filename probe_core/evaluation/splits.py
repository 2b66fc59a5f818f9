"""Which images train and which are scored: stratified, seeded, duplicate-aware splits.

A group (duplicate images, see ``duplicates.py``) never straddles train and test or two
cross-validation folds: scikit-learn's ``StratifiedGroupKFold`` keeps it whole.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold, train_test_split

from ..embeddings import Embeddings
from ..probe import MIN_IMAGES_PER_CLASS, ProbeError, groups_per_class, has_groups


@dataclass(frozen=True)
class Split:
    """Indices into the embeddings for the train and test parts."""

    train: np.ndarray
    test: np.ndarray


def stratified_split(
    labels: np.ndarray, test_size: float = 0.25, seed: int = 0, groups: np.ndarray | None = None
) -> Split:
    """A stratified, seeded train/test split with at least one test image per class.

    With duplicate ``groups``, the test part is one fold of a ``StratifiedGroupKFold`` with
    ``round(1 / test_size)`` folds, so its size is close to, not exactly, ``test_size``.
    """
    labels = np.asarray(labels)
    n_classes = len(np.unique(labels))
    n_test = max(n_classes, int(np.ceil(test_size * len(labels))))
    if len(labels) - n_test < n_classes:
        raise ProbeError(
            f"{len(labels)} images are too few for a train/test split over {n_classes} classes"
        )
    if has_groups(groups):
        n_splits = fold_count(labels, max(2, round(1 / test_size)), groups)
        folds = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # a class smaller than n_splits
            train, test = next(folds.split(np.zeros(len(labels)), labels, groups))
    else:
        train, test = train_test_split(
            np.arange(len(labels)), test_size=n_test, stratify=labels, random_state=seed
        )
    return Split(train=np.sort(train), test=np.sort(test))


def fold_count(labels: np.ndarray, requested: int, groups: np.ndarray | None = None) -> int:
    """``requested`` folds, fewer when the smallest class is smaller, never below 2.

    With duplicate ``groups``, a class counts its groups, not its images: a fold holds
    whole groups.
    """
    sizes = groups_per_class(labels, groups)
    return max(2, min(requested, min(sizes.values(), default=2)))


def classes_in_one_group(labels: np.ndarray, groups: np.ndarray | None) -> list[int]:
    """Classes whose images are all copies of each other: none can be held out honestly."""
    if not has_groups(groups):
        return []
    return [label for label, size in groups_per_class(labels, groups).items() if size < 2]


def cross_validation_folds(
    labels: np.ndarray, n_folds: int, seed: int = 0, groups: np.ndarray | None = None
) -> list[Split]:
    """Stratified k-fold (group-aware with duplicates): every index is tested exactly once."""
    labels = np.asarray(labels)
    if has_groups(groups):
        splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    else:
        splitter = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # a class smaller than n_folds
        return [
            Split(train=np.sort(train), test=np.sort(test))
            for train, test in splitter.split(np.zeros(len(labels)), labels, groups)
        ]


def usable_classes(embeddings: Embeddings) -> tuple[np.ndarray, list[str], list[str]]:
    """Indices of images in classes big enough to split, kept class names, and messages."""
    counts = np.bincount(embeddings.labels, minlength=len(embeddings.class_names))
    messages = []
    for name, count in zip(embeddings.class_names, counts, strict=True):
        if count < MIN_IMAGES_PER_CLASS:
            found = "no usable images" if count == 0 else f"only {count} usable image"
            messages.append(
                f"class '{name}' excluded: {found}; a class needs at least"
                f" {MIN_IMAGES_PER_CLASS} (one to train on, one to test)"
            )
    keep = counts >= MIN_IMAGES_PER_CLASS
    used = np.flatnonzero(keep[embeddings.labels]) if len(embeddings.labels) else np.array([], int)
    return used, [n for n, k in zip(embeddings.class_names, keep, strict=True) if k], messages
