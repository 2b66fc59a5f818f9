"""Embeddings: unit-norm vectors in dataset order, with labels, paths and provenance.

A plain data holder (numpy only), so that evaluation, figures and files can use it without
loading torch: the stage that computes them is ``probe_core.embed``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .dataset import SkippedItem


@dataclass
class Embeddings:
    """Unit-norm embeddings in dataset order, with labels and what could not be used."""

    vectors: np.ndarray
    labels: np.ndarray
    paths: list[str]
    class_names: list[str]
    encoder_id: str
    skipped: list[SkippedItem] = field(default_factory=list)
    n_computed: int = 0
    n_from_cache: int = 0
    seconds: float = 0.0
    sha256: list[str] = field(default_factory=list)  # hex digest of each file's bytes
    splits: list[str] = field(default_factory=list)  # "train"/"val"/"test" in a split layout
    image_root: str = ""  # the local folder the relative paths start from ("" when none)

    def __post_init__(self) -> None:
        # Rows built without files (tests, other tools) get no digests and no split layout.
        if not self.sha256:
            self.sha256 = [""] * len(self.paths)
        if not self.splits:
            self.splits = [""] * len(self.paths)

    @property
    def has_splits(self) -> bool:
        """Whether the images came in a dataset's own train/test folders."""
        return any(self.splits)

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])
