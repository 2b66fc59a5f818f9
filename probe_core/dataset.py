"""Scan an image folder, a zip archive or uploaded blobs into a labelled dataset.

Layout: one first-level subfolder per class (ImageFolder); files nested deeper
belong to their top-level class. A dataset that ships its own split has top-level
``train/`` and ``test/`` folders (optionally ``val/`` or ``validation/``, any letter
case), each holding the class folders; its images carry their split. A top level
that mixes split names with other folders (``train/``, ``test/``, ``extra/``) is not
a split layout: every top-level folder is then a class. Nothing here decodes images:
that happens during extraction, where a bad file is skipped with its reason.
"""

from __future__ import annotations

import errno
import os
import stat
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
ARCHIVE_EXTENSIONS = frozenset({".zip", ".tar", ".gz", ".tgz", ".bz2", ".xz", ".7z", ".rar"})
JUNK_NAMES = frozenset({"__MACOSX", "Thumbs.db", "desktop.ini"})

# Top-level folder names (lower case) of a shipped split, and the split each one means.
SPLIT_FOLDERS = {"train": "train", "val": "val", "validation": "val", "test": "test"}
SPLIT_ORDER = ("train", "val", "test")

# Limits for archives, checked on the central directory before any member is read.
MAX_ARCHIVE_MEMBERS = 100_000
MAX_ARCHIVE_TOTAL_BYTES = 8 * 1024**3
MAX_MEMBER_BYTES = 256 * 1024**2
MAX_COMPRESSION_RATIO = 200


@dataclass(frozen=True)
class ZipMember:
    """An image inside a zip archive on disk, read lazily."""

    archive: Path
    name: str

    def read_bytes(self) -> bytes:
        """The member's bytes; never more than its header declares (zipfile stops there)."""
        try:
            with zipfile.ZipFile(self.archive) as archive:
                return archive.read(self.name)
        except (zipfile.BadZipFile, KeyError, EOFError, NotImplementedError) as error:
            raise OSError(f"damaged archive member ({error})") from error


ImageSource = Path | bytes | ZipMember


@dataclass(frozen=True)
class SkippedItem:
    """An input that is not used, and why."""

    path: str
    reason: str


@dataclass(frozen=True)
class ImageItem:
    """One labelled image: where its bytes come from, its class index and its shipped split.

    ``split`` is "train", "val" or "test" when the dataset ships its own split, else "".
    """

    path: str
    source: ImageSource
    label: int
    split: str = ""

    def read_bytes(self) -> bytes:
        if isinstance(self.source, bytes):
            return self.source
        return self.source.read_bytes()


@dataclass
class ImageDataset:
    """Images with integer labels, the class names, and what was skipped while scanning."""

    items: list[ImageItem]
    class_names: list[str]
    skipped: list[SkippedItem] = field(default_factory=list)
    root: str = ""

    def __len__(self) -> int:
        return len(self.items)

    @property
    def paths(self) -> list[str]:
        return [item.path for item in self.items]

    @property
    def labels(self) -> list[int]:
        return [item.label for item in self.items]

    @property
    def splits(self) -> list[str]:
        return [item.split for item in self.items]

    @property
    def has_splits(self) -> bool:
        """Whether the dataset ships its own train/test (and maybe val) split."""
        return any(item.split for item in self.items)

    def without(self, unusable: Iterable[SkippedItem]) -> ImageDataset:
        """The same dataset with these files (found unreadable later: ``path`` and ``reason``)
        moved from its images to its skipped files; class names and labels stay as they are."""
        reasons = {item.path: item.reason for item in unusable}
        known = {item.path for item in self.skipped}
        moved = [
            SkippedItem(item.path, reasons[item.path])
            for item in self.items
            if item.path in reasons and item.path not in known
        ]
        if not moved:
            return self
        return ImageDataset(
            items=[item for item in self.items if item.path not in reasons],
            class_names=self.class_names,
            skipped=sorted([*self.skipped, *moved], key=lambda s: s.path),
            root=self.root,
        )

    def class_counts(self) -> dict[str, int]:
        counts = dict.fromkeys(self.class_names, 0)
        for item in self.items:
            counts[self.class_names[item.label]] += 1
        return counts

    def split_counts(self) -> dict[str, dict[str, int]]:
        """Images per class in each present split (train, val, test order); empty without splits.

        Every class of the dataset is listed in every split, with 0 where it has no image.
        """
        seen = set(self.splits)
        present = [split for split in SPLIT_ORDER if split in seen]
        counts = {split: dict.fromkeys(self.class_names, 0) for split in present}
        for item in self.items:
            if item.split:
                counts[item.split][self.class_names[item.label]] += 1
        return counts


def missing_classes_by_split(dataset: ImageDataset) -> dict[str, list[str]]:
    """For each present split, the dataset's classes that have no image in it (sorted)."""
    return {
        split: [name for name, count in counts.items() if count == 0]
        for split, counts in dataset.split_counts().items()
    }


def is_hidden(part: str) -> bool:
    """A path part the scan passes over: dot-files and folders, and system junk names."""
    return part.startswith(".") or part in JUNK_NAMES


def _unused_reason(parts: tuple[str, ...]) -> str | None:
    """Why a file at these relative path parts is not an image of a class, or None if it is."""
    if any(is_hidden(part) for part in parts):
        return "hidden or system file"
    if len(parts) < 2:
        return "not inside a class folder (put images in one subfolder per class)"
    return _not_an_image_reason(parts)


def _not_an_image_reason(parts: tuple[str, ...]) -> str | None:
    """Why a file's name says it is not an image (archive, other type), or None."""
    suffix = PurePosixPath(parts[-1]).suffix.lower()
    if suffix in ARCHIVE_EXTENSIONS:
        return f"nested archive ({suffix}) is not opened"
    if suffix not in IMAGE_EXTENSIONS:
        kind = f"'{suffix}'" if suffix else "no extension"
        return (
            f"unsupported file type ({kind}); expected one of {', '.join(sorted(IMAGE_EXTENSIONS))}"
        )
    return None


def _shown(name: str) -> str:
    """A name from the file system as text, with bytes that are not UTF-8 shown as ``\\xNN``.

    Python decodes such bytes to lone surrogates, which no UTF-8 writer (Parquet, CSV,
    the browser) accepts; the file itself is still read through its real path.
    """
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def _strip_wrapper_folders(relpaths: list[tuple[str, ...]]) -> int:
    """How many leading folders all images share above the class folders (e.g. 'data/')."""
    depth = 0
    while relpaths and all(len(p) >= depth + 3 for p in relpaths):
        if len({p[depth] for p in relpaths}) != 1:
            break
        depth += 1
    return depth


def _is_split_layout(relpaths: list[tuple[str, ...]]) -> bool:
    """Whether the top-level folders are split names only (any case), including train and test.

    A top level that mixes split names with other folders (``train/``, ``test/``, ``extra/``)
    is not a split layout: each top-level folder is then a class, as for any other name.
    """
    top = {parts[0].lower() for parts in relpaths}
    return bool(top) and top <= SPLIT_FOLDERS.keys() and {"train", "test"} <= top


def _split_rank(split: str) -> int:
    return SPLIT_ORDER.index(split) if split else 0


def _empty_top_folders(
    folders: Iterable[tuple[str, ...]], wrapper: tuple[str, ...], used: set[str]
) -> list[SkippedItem]:
    """Folders beside the split folders of a split layout that hold no usable image."""
    depth = len(wrapper)
    empty = {
        parts[depth]
        for parts in folders
        if len(parts) == depth + 1 and parts[:depth] == wrapper and not is_hidden(parts[depth])
    } - used
    return [
        SkippedItem(
            "/".join((*wrapper, name)) + "/",
            "split folder has no images"
            if name.lower() in SPLIT_FOLDERS
            else "folder has no images and is not a split folder (train/, val/ or test/)",
        )
        for name in sorted(empty)
    ]


def dataset_from_entries(
    entries: list[tuple[tuple[str, ...], ImageSource]],
    skipped: list[SkippedItem],
    folders: Iterable[tuple[str, ...]] = (),
    root: str = "",
) -> ImageDataset:
    """Turn (relative path parts, source) pairs into a dataset with sorted classes.

    Below any wrapper folder, a split layout (see ``_is_split_layout``) takes the class from
    the second path part and the split from the first; otherwise the first part is the class.
    ``folders`` are the relative parts of the folders seen; those at class level without a
    usable image are reported as empty classes.
    """
    usable: list[tuple[tuple[str, ...], ImageSource]] = []
    for parts, source in entries:
        reason = _unused_reason(parts)
        if reason is None:
            usable.append((parts, source))
        else:
            skipped.append(SkippedItem("/".join(parts), reason))
    depth = _strip_wrapper_folders([parts for parts, _ in usable])
    wrapper = usable[0][0][:depth] if usable else ()
    usable = [(parts[depth:], source) for parts, source in usable]

    split_layout = _is_split_layout([parts for parts, _ in usable])
    # Path parts above the class name: the split folder in a split layout, else nothing.
    level = 1 if split_layout else 0
    if split_layout:
        for parts, _ in usable:
            if len(parts) < 3:
                reason = (
                    f"not inside a class folder under {parts[0]}/ "
                    f"(put images in {parts[0]}/<class>/)"
                )
                skipped.append(SkippedItem("/".join((*wrapper, *parts)), reason))
        usable = [(parts, source) for parts, source in usable if len(parts) >= 3]

    class_names = sorted({parts[level] for parts, _ in usable})
    used_class_folders = {parts[: level + 1] for parts, _ in usable}
    class_folders = {
        parts[depth : depth + level + 1]
        for parts in folders
        if len(parts) > depth + level
        and parts[:depth] == wrapper
        and not any(map(is_hidden, parts))
        and (not split_layout or parts[depth].lower() in SPLIT_FOLDERS)
    }
    for folder in sorted(class_folders - used_class_folders):
        path = "/".join((*wrapper, *folder)) + "/"
        skipped.append(SkippedItem(path, "class folder has no images"))
    if split_layout:
        skipped.extend(_empty_top_folders(folders, wrapper, {parts[0] for parts, _ in usable}))
    index = {name: i for i, name in enumerate(class_names)}
    items = [
        ImageItem(
            "/".join(parts),
            source,
            index[parts[level]],
            SPLIT_FOLDERS[parts[0].lower()] if split_layout else "",
        )
        for parts, source in usable
    ]
    # By class, then split (train, val, test: independent of the folders' letter case), then path.
    items.sort(key=lambda i: (class_names[i.label], _split_rank(i.split), i.path))
    skipped.sort(key=lambda s: s.path)
    return ImageDataset(items=items, class_names=class_names, skipped=skipped, root=root)


def scan_folder(root: str | os.PathLike[str]) -> ImageDataset:
    """Scan a folder with one subfolder per class. Symlinks that leave the folder are skipped."""
    root_path = Path(root).expanduser()
    if not root_path.is_dir():
        raise NotADirectoryError(f"{root_path} is not a folder")
    real_root = root_path.resolve()
    entries: list[tuple[tuple[str, ...], ImageSource]] = []
    skipped: list[SkippedItem] = []
    folders: list[tuple[str, ...]] = []

    def on_error(error: OSError) -> None:
        relative = _shown(os.path.relpath(error.filename or str(root_path), root_path))
        skipped.append(SkippedItem(relative, f"cannot be read: {error.strerror or error}"))

    for dirpath, dirnames, filenames in os.walk(root_path, onerror=on_error):
        relative_dir = Path(dirpath).relative_to(root_path)
        for dirname in dirnames:
            relative = _shown((relative_dir / dirname).as_posix()) + "/"
            if is_hidden(dirname):
                skipped.append(SkippedItem(relative, "hidden or system folder is not scanned"))
            elif os.path.islink(os.path.join(dirpath, dirname)):
                skipped.append(SkippedItem(relative, "symlinked folder is not followed"))
            else:
                folders.append(tuple(map(_shown, (*relative_dir.parts, dirname))))
        dirnames[:] = sorted(d for d in dirnames if not is_hidden(d))
        for filename in sorted(filenames):
            full = Path(dirpath, filename)
            parts = tuple(map(_shown, full.relative_to(root_path).parts))
            reason = None if is_hidden(filename) else _file_problem(full, real_root)
            if reason:
                skipped.append(SkippedItem("/".join(parts), reason))
            else:
                entries.append((parts, full))
    return dataset_from_entries(entries, skipped, folders, root=str(root_path))


def _file_problem(path: Path, real_root: Path) -> str | None:
    """A reason a path on disk cannot be used as a regular file inside the root, or None."""
    try:
        if path.is_symlink():
            target = path.resolve(strict=True)
            if not target.is_relative_to(real_root):
                return "symlink points outside the folder"
        mode = path.stat().st_mode
    except RuntimeError:
        return "symlink loop"
    except FileNotFoundError:
        return "broken symlink"
    except OSError as error:
        if error.errno == errno.ELOOP:
            return "symlink loop"
        return f"cannot be read: {error.strerror or error}"
    if not stat.S_ISREG(mode):
        return "not a regular file"
    return None


def top_folders(paths: Iterable[str]) -> list[str]:
    """The distinct top-level folders of uploaded relative paths (what the user picked or
    dropped, e.g. ``["pets"]`` for ``pets/cats/1.jpg``), sorted; files at the top are ignored."""
    return sorted({parts[0] for name in paths if len(parts := PurePosixPath(name).parts) > 1})


def scan_blobs(files: Iterable[tuple[str, bytes]]) -> ImageDataset:
    """Scan in-memory (relative path, bytes) pairs, e.g. from a browser upload."""
    entries: list[tuple[tuple[str, ...], ImageSource]] = []
    skipped: list[SkippedItem] = []
    seen: set[tuple[str, ...]] = set()
    for name, data in files:
        parts = safe_relative_parts(name)
        if parts is None:
            skipped.append(SkippedItem(name, "unsafe path (absolute or containing '..')"))
        elif parts in seen:
            skipped.append(SkippedItem(name, "duplicate path in upload"))
        else:
            seen.add(parts)
            entries.append((parts, bytes(data)))
    return dataset_from_entries(entries, skipped)


def safe_relative_parts(name: str) -> tuple[str, ...] | None:
    """Split an archive or upload name into parts, or None if it could escape its folder."""
    normalised = name.replace("\\", "/")
    if normalised.startswith("/") or (len(normalised) > 1 and normalised[1] == ":"):
        return None
    parts = tuple(part for part in normalised.split("/") if part not in ("", "."))
    if not parts or ".." in parts:
        return None
    return parts


class ArchiveError(ValueError):
    """A zip archive that cannot be used at all."""


def scan_zip(archive: str | os.PathLike[str]) -> ImageDataset:
    """Scan a zip archive of the same layout; members are checked before any is read."""
    archive_path = Path(archive)
    try:
        zf = zipfile.ZipFile(archive_path)
    except (zipfile.BadZipFile, OSError) as error:
        raise ArchiveError(f"{archive_path.name}: not a readable zip archive ({error})") from error
    with zf:
        infos = zf.infolist()
    if len(infos) > MAX_ARCHIVE_MEMBERS:
        raise ArchiveError(
            f"{archive_path.name}: {len(infos)} entries exceeds the limit of {MAX_ARCHIVE_MEMBERS}"
        )
    total = sum(info.file_size for info in infos)
    if total > MAX_ARCHIVE_TOTAL_BYTES:
        raise ArchiveError(
            f"{archive_path.name}: uncompressed size {total / 1024**3:.1f} GiB exceeds the limit"
            f" of {MAX_ARCHIVE_TOTAL_BYTES / 1024**3:.0f} GiB"
        )
    entries: list[tuple[tuple[str, ...], ImageSource]] = []
    skipped: list[SkippedItem] = []
    folders: set[tuple[str, ...]] = set()
    for info in infos:
        parts = safe_relative_parts(info.filename)
        if parts is not None:
            folder = parts if info.is_dir() else parts[:-1]
            folders.update(folder[:end] for end in range(1, len(folder) + 1))
        if info.is_dir():
            continue
        reason = _member_problem(info)
        if parts is None:
            reason = "unsafe path in archive (absolute or containing '..')"
        if reason:
            skipped.append(SkippedItem(info.filename, reason))
        else:
            entries.append((parts, ZipMember(archive_path, info.filename)))
    return dataset_from_entries(entries, skipped, folders, root=str(archive_path))


def _member_problem(info: zipfile.ZipInfo) -> str | None:
    unix_mode = info.external_attr >> 16
    if stat.S_ISLNK(unix_mode):
        return "symlink inside archive is not followed"
    if info.flag_bits & 0x1:
        return "encrypted archive member"
    if info.file_size > MAX_MEMBER_BYTES:
        return f"member too large ({info.file_size / 1024**2:.0f} MiB uncompressed)"
    if info.compress_size and info.file_size / info.compress_size > MAX_COMPRESSION_RATIO:
        return "suspicious compression ratio (possible zip bomb)"
    return None


def scan_unlabelled(sources: Iterable[str | os.PathLike[str]]) -> ImageDataset:
    """Images to classify, with no classes: image files, folders (every image at any depth)
    and ``.zip`` archives of them, in the order given (inside a folder or archive, by path).

    Items carry label -1 and their path as given, joined with the path inside a folder or
    archive. A file named explicitly is always tried (the decoder says why it is no image);
    inside folders and archives, hidden files and other file types are skipped with their
    reason, like symlinks that leave the folder and unsafe archive members.
    """
    items: list[ImageItem] = []
    skipped: list[SkippedItem] = []
    for source in sources:
        path = Path(source).expanduser()
        shown = _shown(str(source))
        if path.is_dir():
            _unlabelled_folder(path, shown, items, skipped)
        elif path.is_file() and path.suffix.lower() == ".zip":
            _unlabelled_zip(path, shown, items, skipped)
        elif path.is_file():
            items.append(ImageItem(shown, path, -1))
        else:
            skipped.append(SkippedItem(shown, "does not exist"))
    return ImageDataset(items=items, class_names=[], skipped=skipped)


def _unlabelled_folder(
    root: Path, shown: str, items: list[ImageItem], skipped: list[SkippedItem]
) -> None:
    real_root = root.resolve()
    for dirpath, dirnames, filenames in os.walk(root):
        relative_dir = Path(dirpath).relative_to(root)
        for dirname in sorted(dirnames):
            if is_hidden(dirname) or os.path.islink(os.path.join(dirpath, dirname)):
                reason = (
                    "hidden or system folder is not scanned"
                    if is_hidden(dirname)
                    else "symlinked folder is not followed"
                )
                relative = _shown((relative_dir / dirname).as_posix())
                skipped.append(SkippedItem(f"{shown.rstrip('/')}/{relative}/", reason))
        dirnames[:] = sorted(
            d for d in dirnames if not is_hidden(d) and not os.path.islink(os.path.join(dirpath, d))
        )
        for filename in sorted(filenames):
            full = Path(dirpath, filename)
            parts = tuple(map(_shown, full.relative_to(root).parts))
            name = "/".join((shown.rstrip("/"), *parts))
            reason = "hidden or system file" if is_hidden(filename) else None
            reason = reason or _not_an_image_reason(parts) or _file_problem(full, real_root)
            if reason:
                skipped.append(SkippedItem(name, reason))
            else:
                items.append(ImageItem(name, full, -1))


def _unlabelled_zip(
    archive: Path, shown: str, items: list[ImageItem], skipped: list[SkippedItem]
) -> None:
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError) as error:
        skipped.append(SkippedItem(shown, f"not a readable zip archive ({error})"))
        return
    if len(infos) > MAX_ARCHIVE_MEMBERS:
        skipped.append(
            SkippedItem(shown, f"{len(infos)} entries exceeds the limit of {MAX_ARCHIVE_MEMBERS}")
        )
        return
    for info in sorted((i for i in infos if not i.is_dir()), key=lambda i: i.filename):
        parts = safe_relative_parts(info.filename)
        name = f"{shown}/{info.filename}"
        if parts is None:
            reason = "unsafe path in archive (absolute or containing '..')"
        elif any(is_hidden(part) for part in parts):
            reason = "hidden or system file"
        else:
            reason = _not_an_image_reason(parts) or _member_problem(info)
        if reason:
            skipped.append(SkippedItem(name, reason))
        else:
            items.append(ImageItem(name, ZipMember(archive, info.filename), -1))


def scan(source: str | os.PathLike[str]) -> ImageDataset:
    """Scan a folder or a .zip file."""
    path = Path(source).expanduser()
    if path.is_file() and path.suffix.lower() == ".zip":
        return scan_zip(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    return scan_folder(path)
