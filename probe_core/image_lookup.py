"""Where the images behind a set of embeddings are, for thumbnails.

Images scanned by the studio are known by path. Precomputed embeddings (``read_embeddings``)
only carry paths: they are looked up on this server, absolute or relative to an image folder
(the one the embeddings were made from, when the file records it), and used only when they
resolve under the allowed server roots. When none do, ``ImageLookup.reason`` says why.
Paths are resolved one at a time, when a thumbnail is asked for, so 100,000 rows cost nothing
up front.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from .dataset import ImageDataset, ImageItem
from .roots import ROOTS_ENV, configured_roots
from .thumbnails import thumbnail_uri

PROBE_SAMPLE = 20  # paths tried to tell whether thumbnails can be shown at all


@dataclass
class ImageLookup:
    """Image bytes by embedding path: from a dataset's items, or from files on this server.

    ``image_root``: the folder relative paths are taken from (None: only absolute paths).
    ``roots``: the allowed server folders (``configured_roots()`` by default).
    """

    items: dict[str, ImageItem] = field(default_factory=dict)
    image_root: Path | None = None
    roots: list[Path] = field(default_factory=list)
    reason: str | None = None  # why no thumbnails can be shown; None: they can

    @classmethod
    def from_dataset(cls, dataset: ImageDataset) -> ImageLookup:
        return cls(items={item.path: item for item in dataset.items})

    @classmethod
    def from_paths(
        cls,
        paths: Sequence[str],
        image_root: str | os.PathLike[str] | None = None,
        roots: Sequence[Path] | None = None,
    ) -> ImageLookup:
        """A lookup for files named by ``paths``; ``reason`` is set when a sample of them
        resolves to no readable file under ``roots``."""
        lookup = cls(
            image_root=Path(image_root).expanduser() if image_root else None,
            roots=[Path(root).resolve() for root in (roots or configured_roots())],
        )
        lookup.reason = lookup._probe(paths)
        return lookup

    def resolve(self, path: str) -> Path | None:
        """The real file for ``path`` if it exists under an allowed root, else None."""
        candidate = PurePosixPath(path.replace("\\", "/"))
        if ".." in candidate.parts:
            return None
        if candidate.is_absolute():
            located = Path(candidate)
        elif self.image_root is not None:
            located = self.image_root / candidate
        else:
            return None
        try:
            real = located.resolve(strict=True)
        except (OSError, RuntimeError):
            return None
        if not real.is_file() or not self._allowed(real):
            return None
        return real

    def read(self, path: str) -> bytes | None:
        """The image's bytes, or None when it cannot be found or read."""
        item = self.items.get(path)
        try:
            if item is not None:
                return item.read_bytes()
            if self.reason is not None:
                return None
            real = self.resolve(path)
            return real.read_bytes() if real is not None else None
        except OSError:
            return None

    def thumbnail_uri(self, path: str, size: int = 64) -> str | None:
        """A JPEG data URI of the image at ``path``, or None."""
        data = self.read(path)
        if data is None:
            return None
        return thumbnail_uri(ImageItem(path=path, source=data, label=0), size)

    def _allowed(self, real: Path) -> bool:
        return any(real == root or real.is_relative_to(root) for root in self.roots)

    def _probe(self, paths: Sequence[str]) -> str | None:
        if not paths:
            return "there are no images"
        step = max(1, len(paths) // PROBE_SAMPLE)
        sample = list(paths[::step][:PROBE_SAMPLE])
        if any(self.resolve(path) is not None for path in sample):
            return None
        example = sample[0]
        relative = not PurePosixPath(example.replace("\\", "/")).is_absolute()
        if relative and self.image_root is None:
            return (
                f"the paths are relative (e.g. '{example}') and the image folder they are"
                " relative to is not known: give it to see thumbnails"
            )
        where = self.image_root / example if relative else Path(example)
        try:
            real = where.resolve(strict=True)
        except (OSError, RuntimeError):
            return f"the images are not on this server (e.g. '{where}' does not exist)"
        if not self._allowed(real):
            allowed = ", ".join(str(root) for root in self.roots)
            return (
                f"the images (e.g. '{real}') lie outside the allowed server folders"
                f" ({allowed}); the operator can allow more with {ROOTS_ENV}"
            )
        return f"the images cannot be read (e.g. '{real}')"
