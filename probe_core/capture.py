"""Classes recorded in the studio: webcam frames (and images added to the same classes),
written as files in one folder per class, so that a recorded set is an ordinary image folder.

    captures = CaptureSet(workspace.path / "captures")
    captures.add_class("thumbs up")
    captures.add_frame("thumbs up", jpeg_bytes_from_the_browser)   # -> frame-0001.png
    captures.add_images("thumbs up", [("mine.jpg", data)])          # uploads, kept as they are
    captures.delete("thumbs up", "frame-0001.png")
    zip_bytes = captures.to_zip()                                   # reopens as a dataset

A frame is decoded (any format a browser sends), converted to RGB and written as PNG, so the
pixels kept are exactly the ones decoded. Uploaded images keep their bytes: embedded, they
give the same vectors as the same file in a folder.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import tempfile
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .dataset import (
    IMAGE_EXTENSIONS,
    JUNK_NAMES,
    SPLIT_FOLDERS,
    ImageDataset,
    SkippedItem,
    scan_folder,
    scan_zip,
)
from .images import ImageLoadError, load_image

FRAME_PREFIX = "frame-"
MAX_CLASS_NAME = 80  # characters; a class folder's name
ZIP_FOLDER = "webcam-classes"  # the folder a downloaded set unpacks into
_FRAME_NAME = re.compile(rf"^{FRAME_PREFIX}(\d+)\.png$")


class CaptureError(ValueError):
    """A class name that cannot be used, or a class that does not exist; the message says why."""


@dataclass(frozen=True)
class CapturedImage:
    """One image of a recorded class: a webcam frame (``frame-0001.png``) or an added file."""

    class_name: str
    name: str
    path: Path

    @property
    def is_frame(self) -> bool:
        return _FRAME_NAME.match(self.name) is not None


def clean_class_name(name: str) -> str:
    """The folder name for a typed class name: trimmed, path separators replaced; raises
    ``CaptureError`` for a name that cannot be a class folder."""
    cleaned = " ".join(name.replace("/", "_").replace("\\", "_").split())
    if not cleaned:
        raise CaptureError("a class needs a name")
    if cleaned.startswith(".") or cleaned in JUNK_NAMES:
        raise CaptureError(
            f"“{cleaned}” cannot name a class: folders starting with '.' and system folders"
            " are not scanned"
        )
    if len(cleaned) > MAX_CLASS_NAME:
        raise CaptureError(f"a class name has at most {MAX_CLASS_NAME} characters")
    return cleaned


class CaptureSet:
    """Recorded classes under ``root``: one folder per class, in the order they were added."""

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._order = sorted(p.name for p in self.root.iterdir() if p.is_dir())
        self._frame_ids: set[str] = set()
        self._last_frame: dict[str, int] = {}  # numbers are never reused, even after deletion

    # ----------------------------------------------------------------- classes

    @property
    def class_names(self) -> list[str]:
        return list(self._order)

    def add_class(self, name: str) -> str:
        """Add an empty class; returns its (cleaned) name."""
        cleaned = clean_class_name(name)
        self._check_new(cleaned)
        (self.root / cleaned).mkdir()
        self._order.append(cleaned)
        return cleaned

    def rename_class(self, old: str, new: str) -> str:
        """Rename a class (its images move with it); returns the cleaned new name."""
        folder = self._folder(old)
        cleaned = clean_class_name(new)
        if cleaned == old:
            return old
        self._check_new(cleaned, replacing=old)
        folder.rename(self.root / cleaned)
        self._order[self._order.index(old)] = cleaned
        if old in self._last_frame:
            self._last_frame[cleaned] = self._last_frame.pop(old)
        return cleaned

    def remove_class(self, name: str) -> None:
        """Remove a class and its images."""
        shutil.rmtree(self._folder(name))
        self._order.remove(name)

    def _check_new(self, name: str, replacing: str | None = None) -> None:
        others = [n for n in self._order if n != replacing]
        taken = next((n for n in others if n.casefold() == name.casefold()), None)
        if taken is not None:  # folders differing only in case are one folder on some systems
            raise CaptureError(f"there is already a class named “{taken}”")
        names = {n.lower() for n in [*others, name]}
        if names <= SPLIT_FOLDERS.keys() and {"train", "test"} <= names:
            raise CaptureError(
                f"classes named only {', '.join(sorted(names))} read as a dataset's own train"
                " and test split folders: give one of them another name"
            )

    def _folder(self, name: str) -> Path:
        if name not in self._order:
            raise CaptureError(f"no class named “{name}”")
        return self.root / name

    # ----------------------------------------------------------------- images

    def add_frame(
        self, class_name: str, data: bytes, frame_id: str | None = None
    ) -> CapturedImage | None:
        """Decode a frame, write it as the class's next ``frame-NNNN.png``. A frame whose
        ``frame_id`` was already written (a browser resending it) is not written again: None.
        Raises ``ImageLoadError`` for bytes that are not an image."""
        folder = self._folder(class_name)
        if frame_id is not None and frame_id in self._frame_ids:
            return None
        image = load_image(data)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", compress_level=3)
        number = max(self._last_frame.get(class_name, 0), _last_frame_number(folder)) + 1
        self._last_frame[class_name] = number
        name = f"{FRAME_PREFIX}{number:04d}.png"
        _write_new(folder / name, buffer.getvalue())
        if frame_id is not None:
            self._frame_ids.add(frame_id)
        return CapturedImage(class_name, name, folder / name)

    def add_images(
        self, class_name: str, files: Iterable[tuple[str, bytes]]
    ) -> tuple[list[CapturedImage], list[SkippedItem]]:
        """Add uploaded images to a class, their bytes as they are (a name already taken gets
        a number); files that are not images are skipped with the reason."""
        folder = self._folder(class_name)
        added, skipped = [], []
        for name, data in files:
            base = PurePosixPath(name.replace("\\", "/")).name
            suffix = PurePosixPath(base).suffix.lower()
            if suffix not in IMAGE_EXTENSIONS:
                skipped.append(SkippedItem(name, f"not an image file type ({suffix or 'none'})"))
                continue
            try:
                load_image(data)
            except ImageLoadError as error:
                skipped.append(SkippedItem(name, str(error)))
                continue
            target = _free_name(folder, base.lstrip(".") or f"image{suffix}")
            _write_new(target, data)
            added.append(CapturedImage(class_name, target.name, target))
        return added, skipped

    def images(self, class_name: str) -> list[CapturedImage]:
        """A class's images: frames in the order recorded, then added files by name."""
        folder = self._folder(class_name)
        found = [
            CapturedImage(class_name, path.name, path)
            for path in folder.iterdir()
            if path.is_file() and not path.name.startswith(".")
        ]
        return sorted(found, key=lambda image: (not image.is_frame, image.name))

    def delete(self, class_name: str, name: str) -> bool:
        """Delete one image of a class; False when it is not there."""
        folder = self._folder(class_name)
        target = folder / PurePosixPath(name).name
        if target.parent != folder or not target.is_file():
            return False
        target.unlink()
        return True

    def counts(self) -> dict[str, int]:
        return {name: len(self.images(name)) for name in self._order}

    def __len__(self) -> int:
        return sum(self.counts().values())

    # ----------------------------------------------------------------- the set as a whole

    def to_zip(self, folder: str = ZIP_FOLDER) -> bytes:
        """The set as a zip of ``<folder>/<class>/<image>``, which the Zip source (and
        ``scan_zip``) opens as the same classes and images."""
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
            for class_name in self._order:
                for image in self.images(class_name):
                    archive.write(image.path, f"{folder}/{class_name}/{image.name}")
        return buffer.getvalue()

    def add_zip(self, data: bytes) -> tuple[list[CapturedImage], list[SkippedItem]]:
        """Continue a set downloaded before (``to_zip``), or any zip of class folders: each
        class is created when missing and its images added as uploads are (recorded frames
        keep their names, so numbering goes on after them). Raises ``ArchiveError`` for a
        zip that cannot be read."""
        with tempfile.TemporaryDirectory(prefix="probe-studio-capture-zip-") as folder:
            archive = Path(folder) / "set.zip"
            archive.write_bytes(data)
            dataset = scan_zip(archive)
            added: list[CapturedImage] = []
            skipped = list(dataset.skipped)
            for label, class_name in enumerate(dataset.class_names):
                try:
                    cleaned = clean_class_name(class_name)
                    if cleaned not in self._order:
                        self.add_class(cleaned)
                except CaptureError as error:
                    skipped.append(SkippedItem(class_name, str(error)))
                    continue
                files = [
                    (PurePosixPath(item.path).name, item.read_bytes())
                    for item in dataset.items
                    if item.label == label
                ]
                images, refused = self.add_images(cleaned, files)
                added += images
                skipped += refused
        return added, skipped

    def scan(self) -> ImageDataset:
        """The set as it is now, scanned like any folder (an empty class is listed as skipped)."""
        return scan_folder(self.root)


def _last_frame_number(folder: Path) -> int:
    numbers = [int(m.group(1)) for p in folder.iterdir() if (m := _FRAME_NAME.match(p.name))]
    return max(numbers, default=0)


def _free_name(folder: Path, name: str) -> Path:
    """``folder / name``, or ``name`` with ``-2``, ``-3``, ... before its suffix when taken."""
    target = folder / name
    stem, suffix = PurePosixPath(name).stem, PurePosixPath(name).suffix
    number = 1
    while target.exists():
        number += 1
        target = folder / f"{stem}-{number}{suffix}"
    return target


def _write_new(target: Path, data: bytes) -> None:
    """Write a file whole (a scan never sees it half written)."""
    partial = target.with_name(f".{target.name}.partial")
    partial.write_bytes(data)
    os.replace(partial, target)
