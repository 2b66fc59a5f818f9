"""A private temporary folder per user session for uploads, removed when no longer needed."""

from __future__ import annotations

import shutil
import tempfile
import weakref
from collections.abc import Iterable
from pathlib import Path

from .capture import CaptureSet
from .dataset import ImageDataset, SkippedItem, safe_relative_parts, scan_folder, scan_zip

CAPTURES = "captures"  # recorded classes: kept while other uploads come and go


class SessionWorkspace:
    """Uploads of one session live here; the folder is deleted by ``close()`` or on collection.

    It holds the latest usable upload only: once a new upload has been scanned, what was
    there before is removed (an upload that fails leaves the previous one in place). Classes
    recorded from the webcam (``captures``) stay until the session ends; ``add_captures``
    takes a copy of them as the dataset, so recording on does not change a study under way.
    """

    def __init__(self, parent: str | Path | None = None):
        self.path = Path(tempfile.mkdtemp(prefix="probe-studio-session-", dir=parent))
        self._finalizer = weakref.finalize(self, shutil.rmtree, self.path, ignore_errors=True)
        self._counter = 0
        self._captures: CaptureSet | None = None

    @property
    def captures(self) -> CaptureSet:
        """The classes recorded in this session (created empty on first use)."""
        if self._captures is None:
            self._captures = CaptureSet(self.path / CAPTURES)
        return self._captures

    def _fresh_folder(self, stem: str) -> Path:
        self._counter += 1
        folder = self.path / f"{stem}-{self._counter}"
        folder.mkdir()
        return folder

    def add_files(self, files: Iterable[tuple[str, bytes]]) -> ImageDataset:
        """Write uploaded (relative path, bytes) pairs to a fresh folder and scan it."""
        folder = self._fresh_folder("upload")
        skipped: list[SkippedItem] = []
        for name, data in files:
            parts = safe_relative_parts(name)
            if parts is None:
                skipped.append(SkippedItem(name, "unsafe path (absolute or containing '..')"))
                continue
            target = folder.joinpath(*parts)
            if target.exists():
                skipped.append(SkippedItem(name, "duplicate path in upload"))
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        dataset = scan_folder(folder)
        dataset.skipped = sorted(skipped + dataset.skipped, key=lambda s: s.path)
        self._keep_only(folder)
        return dataset

    def add_classes(self, classes: dict[str, Iterable[tuple[str, bytes]]]) -> ImageDataset:
        """Teachable-Machine style: images grouped by a class name the user typed."""
        files = []
        for class_name, images in classes.items():
            safe = class_name.strip().replace("/", "_").replace("\\", "_") or "unnamed"
            files += [(f"{safe}/{Path(name).name}", data) for name, data in images]
        return self.add_files(files)

    def add_zip(self, name: str, data: bytes) -> ImageDataset:
        """Keep an uploaded zip in the workspace and scan it (members are read lazily)."""
        folder = self._fresh_folder("zip")
        target = folder / (Path(name).name or "upload.zip")
        target.write_bytes(data)
        try:
            dataset = scan_zip(target)
        except Exception:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        self._keep_only(folder)
        return dataset

    def add_captures(self) -> ImageDataset:
        """A copy of the recorded classes as they are now, scanned as the dataset."""
        folder = self._fresh_folder("webcam")
        for class_name in self.captures.class_names:
            target = folder / class_name
            target.mkdir()
            for image in self.captures.images(class_name):
                shutil.copyfile(image.path, target / image.name)
        dataset = scan_folder(folder)
        self._keep_only(folder)
        return dataset

    def add_embeddings_file(self, name: str, data: bytes) -> Path:
        """Keep an uploaded embeddings file (Parquet) here; returns where it was written."""
        folder = self._fresh_folder("embeddings")
        target = folder / (Path(name).name or "embeddings.parquet")
        target.write_bytes(data)
        self._keep_only(folder)
        return target

    def _keep_only(self, current: Path) -> None:
        for previous in self.path.iterdir():
            if previous not in (current, self.path / CAPTURES):
                shutil.rmtree(previous, ignore_errors=True)

    def close(self) -> None:
        self._finalizer()

    @property
    def closed(self) -> bool:
        return not self._finalizer.alive
