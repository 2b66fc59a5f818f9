"""Which images train and which are scored: stratified, seeded splits and usable classes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import train_test_split

from ..embed import Embeddings
from ..probe import MIN_IMAGES_PER_CLASS, ProbeError


@dataclass(frozen=True)
class Split:
    """Indices into the embeddings for the train and test parts."""

    train: np.ndarray
    test: np.ndarray


def stratified_split(labels: np.ndarray, test_size: float = 0.25, seed: int = 0) -> Split:
    """A stratified, seeded train/test split with at least one test image per class."""
    labels = np.asarray(labels)
    n_classes = len(np.unique(labels))
    n_test = max(n_classes, int(np.ceil(test_size * len(labels))))
    if len(labels) - n_test < n_classes:
        raise ProbeError(
            f"{len(labels)} images are too few for a train/test split over {n_classes} classes"
        )
    train, test = train_test_split(
        np.arange(len(labels)), test_size=n_test, stratify=labels, random_state=seed
    )
    return Split(train=np.sort(train), test=np.sort(test))


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
