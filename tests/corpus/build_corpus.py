"""Write a folder of bad and awkward inputs, and a manifest of what must happen to each one.

``build_corpus(root)`` writes three good classes (``alpha``, ``beta``, ``gamma``, six small
generated images each) so that a probe can run, plus one entry per *kind* of bad or awkward
input, and returns a ``Manifest`` saying, for every kind, which paths must be

* ``USED``: embedded, with the expected class;
* ``SKIPPED``: listed as skipped, with a reason containing a given substring (the real
  reason the code gives, not a vague word);
* ``REPORTED``: something the run reports besides a skipped file: a class folder without
  images, or a class left out of the probe with a message naming it (its files are then
  embedded or skipped as the entry says).

Paths are relative to the root, with ``/``, exactly as the tools report them. Symlink targets
that must lie outside the root are written to a sibling folder, ``Manifest.outside``.

``build_empty_root(root)`` writes the empty-root case. Run as a script to look at a corpus:

    python -m tests.corpus.build_corpus OUT_DIR
"""

from __future__ import annotations

import argparse
import enum
import io
import json
import os
import shutil
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from tests import badfiles

GOOD_CLASSES = ("alpha", "beta", "gamma")
GOOD_PER_CLASS = 6
IMAGE_SIZE = 40
SOLO_CLASS = "solo"  # one image: embedded, but too small for the probe
BROKEN_CLASS = "broken_class"  # its only image cannot be decoded
EMPTY_CLASS = "empty_class"  # a class folder without any file
NOTES_CLASS = "notes_only"  # a class folder with files, none of them images
CLASS_WITHOUT_IMAGES = "class folder has no images"
NOT_AN_IMAGE = "not an image: the content looks like"


class Outcome(enum.Enum):
    USED = "used"
    SKIPPED = "skipped"
    REPORTED = "reported"


@dataclass(frozen=True)
class Expected:
    """One path of an entry: embedded with ``label``, or skipped with ``reason`` in its reason."""

    path: str
    label: str | None = None
    reason: str | None = None

    def __post_init__(self) -> None:
        if (self.label is None) == (self.reason is None):
            raise ValueError(f"{self.path}: give exactly one of label and reason")


@dataclass(frozen=True)
class Entry:
    """One kind of bad or awkward input and what a run must do with it."""

    kind: str
    outcome: Outcome
    expected: tuple[Expected, ...]
    why: str
    excluded_class: str | None = None  # REPORTED: a class left out of the probe
    message: str | None = None  # REPORTED: words of the probe's message about that class

    def __post_init__(self) -> None:
        embedded = [e.label is not None for e in self.expected]
        if self.outcome is Outcome.USED and not all(embedded):
            raise ValueError(f"{self.kind}: a USED entry only has labelled paths")
        if self.outcome is Outcome.SKIPPED and any(embedded):
            raise ValueError(f"{self.kind}: a SKIPPED entry only has paths with reasons")
        if self.outcome is Outcome.REPORTED and not (
            self.excluded_class or any(e.reason == CLASS_WITHOUT_IMAGES for e in self.expected)
        ):
            raise ValueError(f"{self.kind}: a REPORTED entry reports a class")

    @property
    def paths(self) -> tuple[str, ...]:
        return tuple(e.path for e in self.expected)

    def to_dict(self) -> dict:
        document = {
            "kind": self.kind,
            "outcome": self.outcome.value,
            "why": self.why,
            "paths": [
                {"path": e.path, "label": e.label}
                if e.label is not None
                else {"path": e.path, "reason": e.reason}
                for e in self.expected
            ],
        }
        if self.excluded_class:
            document["excluded_class"] = self.excluded_class
            document["message"] = self.message
        return document


@dataclass(frozen=True)
class Manifest:
    root: Path
    outside: Path  # symlink targets outside the root
    classes: tuple[str, ...]  # the classes the probe is fitted on
    good: tuple[Expected, ...]  # the plain generated images, all USED
    entries: tuple[Entry, ...]
    left_out: dict[str, str] = field(default_factory=dict)  # kind -> why this system cannot

    def entry(self, kind: str) -> Entry:
        return next(e for e in self.entries if e.kind == kind)

    def _expected(self) -> list[Expected]:
        return [*self.good, *(e for entry in self.entries for e in entry.expected)]

    def used(self) -> dict[str, str]:
        """Every path that must be embedded -> its class."""
        return {e.path: e.label for e in self._expected() if e.label is not None}

    def skipped(self) -> dict[str, str]:
        """Every path that must be listed as skipped -> words its reason contains."""
        return {e.path: e.reason for e in self._expected() if e.reason is not None}

    def excluded_classes(self) -> dict[str, str]:
        """Classes left out of the probe -> words of the message about each."""
        return {e.excluded_class: e.message for e in self.entries if e.excluded_class}

    def to_dict(self) -> dict:
        return {
            "root": str(self.root),
            "outside": str(self.outside),
            "classes": list(self.classes),
            "n_kinds": len(self.entries),
            "good": {
                label: [e.path for e in self.good if e.label == label] for label in self.classes
            },
            "kinds": [entry.to_dict() for entry in self.entries],
            "left_out": self.left_out,
        }


# --- writing -----------------------------------------------------------------------------------

Writer = Callable[[Path, Path], None]  # (root, outside) -> None


class Unsupported(OSError):
    """This file system cannot hold the kind (e.g. file names that are not UTF-8)."""


def class_image(class_index: int, variant: int, size: int = IMAGE_SIZE) -> Image.Image:
    """A small RGB image whose colour and stripes depend on its class, varied per image."""
    rng = np.random.default_rng(1000 * class_index + variant)
    palette = [(220, 40, 40), (40, 160, 60), (40, 70, 220), (230, 200, 30)]
    pixels = np.tile(np.array(palette[class_index % len(palette)], dtype=float), (size, size, 1))
    stripes = (np.arange(size) // (3 + class_index)) % 2 == 0
    pixels[stripes, :, :] *= 0.55
    pixels += rng.normal(0, 18, pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def png(class_index: int = 3, variant: int = 0, size: int = IMAGE_SIZE) -> bytes:
    return badfiles.encode(class_image(class_index, variant, size), "PNG")


def _put(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _files(files: dict[str, bytes | Callable[[], bytes]]) -> Writer:
    def write(root: Path, outside: Path) -> None:
        for name, data in files.items():
            _put(root / name, data() if callable(data) else data)

    return write


def _symlink(link: Path, target: Path | str) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target, link)


def _relative_link(link: Path, target: Path) -> None:
    _symlink(link, os.path.relpath(target, link.parent))


def _non_utf8_name(root: Path, outside: Path) -> None:
    raw = os.fsencode(root) + b"/alpha/caf\xe9 (latin-1).png"
    try:
        _put(Path(os.fsdecode(raw)), png(0, 90))
    except (OSError, UnicodeError) as error:
        raise Unsupported(str(error)) from error


def _zip_bytes() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("alpha/inner.png", png(0, 80))
    return buffer.getvalue()


def _one_pixel_png() -> bytes:
    return badfiles.encode(Image.new("RGB", (1, 1), (0, 128, 255)), "PNG")


def _wide_png(width: int, height: int) -> Callable[[], bytes]:
    return lambda: badfiles.encode(class_image(1, 7, 1).resize((width, height)), "PNG")


def _float_tiff() -> bytes:
    array = np.linspace(0, 1000, 32 * 32, dtype=np.float32).reshape(32, 32)
    return badfiles.encode(Image.fromarray(array, "F"), "TIFF")


def _broken_exif_jpeg() -> bytes:
    """A JPEG whose EXIF block (APP1) is garbage: the pixels are fine."""
    jpeg = badfiles.encode(class_image(2, 40), "JPEG")
    payload = b"Exif\x00\x00II*\x00\xff\xff\xff\x7f" + bytes(20)
    segment = b"\xff\xe1" + len(payload + b"xx").to_bytes(2, "big") + payload
    return jpeg[:2] + segment + jpeg[2:]


def _bad_crc_png() -> bytes:
    data = bytearray(png(1, 60))
    data[40] ^= 0xFF  # inside the first IDAT chunk: its CRC no longer matches
    return bytes(data)


def _truncated_jpeg() -> bytes:
    return badfiles.encode(class_image(2, 50), "JPEG")[:300]


SVG = b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>\n'
RANDOM_BYTES = bytes(np.random.default_rng(7).integers(1, 256, 2048, dtype=np.uint8))
NFD_NAME = "gamma/cafe\u0301 (NFD).png"
LONG_NAME = "beta/" + "a very long file name " * 10 + "end.png"
NON_UTF8_PATH = "alpha/caf\\xe9 (latin-1).png"  # how the tools show the byte 0xE9


def _used(kind: str, why: str, *paths: str, labels: tuple[str, ...] = ()) -> Entry:
    labels = labels or tuple(p.split("/")[0] for p in paths)
    return Entry(
        kind,
        Outcome.USED,
        tuple(Expected(p, label=lab) for p, lab in zip(paths, labels, strict=True)),
        why,
    )


def _skipped(kind: str, why: str, reason: str, *paths: str) -> Entry:
    return Entry(kind, Outcome.SKIPPED, tuple(Expected(p, reason=reason) for p in paths), why)


def _one(kind, why, path, data, *, reason=None) -> tuple[Entry, Writer]:
    entry = _skipped(kind, why, reason, path) if reason else _used(kind, why, path)
    return entry, _files({path: data})


KINDS: tuple[tuple[Entry, Writer], ...] = (
    # --- files that cannot be decoded: skipped, each with its own reason ---------------------
    _one(
        "corrupt JPEG",
        "valid JPEG header, garbage entropy data with a second start-of-image marker",
        "alpha/corrupt.jpg",
        badfiles.corrupt_jpeg_bytes,
        reason="corrupt image (broken data stream",
    ),
    _one(
        "truncated PNG",
        "a valid PNG cut in half",
        "beta/truncated.png",
        badfiles.truncated_png_bytes,
        reason="truncated image",
    ),
    _one(
        "truncated JPEG",
        "a valid JPEG cut after 300 bytes",
        "gamma/truncated.jpg",
        _truncated_jpeg,
        reason="truncated image",
    ),
    _one(
        "PNG with a bad chunk CRC",
        "one flipped byte inside the image data",
        "beta/bad_crc.png",
        _bad_crc_png,
        reason="corrupt PNG image",
    ),
    _one(
        "zero-byte file",
        "an empty file named .jpg",
        "alpha/zero_bytes.jpg",
        b"",
        reason="empty file (0 bytes)",
    ),
    _one(
        "text named .jpg",
        "notes saved with an image extension",
        "beta/notes.jpg",
        badfiles.text_bytes,
        reason=f"{NOT_AN_IMAGE} a text file",
    ),
    _one(
        "HTML named .jpg",
        "a saved 404 page",
        "gamma/saved_page.jpg",
        badfiles.html_bytes,
        reason=f"{NOT_AN_IMAGE} an HTML page",
    ),
    _one(
        "PDF named .jpg",
        "a PDF document",
        "alpha/document.jpg",
        badfiles.pdf_bytes,
        reason=f"{NOT_AN_IMAGE} a PDF document",
    ),
    _one(
        "SVG named .png",
        "a vector drawing",
        "beta/vector.png",
        SVG,
        reason=f"{NOT_AN_IMAGE} an SVG drawing",
    ),
    _one(
        "zip named .jpg",
        "an archive with an image extension",
        "gamma/archive.jpg",
        _zip_bytes,
        reason=f"{NOT_AN_IMAGE} a zip archive",
    ),
    _one(
        "random bytes named .png",
        "binary data of no known format",
        "alpha/random.png",
        RANDOM_BYTES,
        reason=f"{NOT_AN_IMAGE} an unknown binary format",
    ),
    _one(
        "decompression bomb",
        "a small PNG whose header declares 20000 x 20000 pixels",
        "gamma/bomb.png",
        badfiles.decompression_bomb_png_bytes,
        reason="image too large",
    ),
    # --- files that are not looked at: skipped while scanning --------------------------------
    (
        _skipped(
            "hidden files",
            "dot files, Thumbs.db",
            "hidden or system file",
            "alpha/.hidden.png",
            "gamma/Thumbs.db",
        ),
        _files({"alpha/.hidden.png": png(0, 70), "gamma/Thumbs.db": b"\xd0\xcf\x11\xe0junk"}),
    ),
    (
        _skipped(
            ".DS_Store",
            "macOS folder metadata, in the root and in a class",
            "hidden or system file",
            ".DS_Store",
            "beta/.DS_Store",
        ),
        _files({".DS_Store": b"\x00\x00\x00\x01Bud1", "beta/.DS_Store": b"\x00\x00\x00\x01Bud1"}),
    ),
    (
        _skipped(
            "__MACOSX folder",
            "resource forks left by unzipping on macOS",
            "hidden or system folder is not scanned",
            "__MACOSX/",
        ),
        _files({"__MACOSX/alpha/._alpha_000.png": b"\x00\x05\x16\x07resource fork"}),
    ),
    (
        _skipped(
            "hidden folders",
            "a dot folder of thumbnails, in the root and inside a class",
            "hidden or system folder is not scanned",
            ".thumbnails/",
            "beta/.cache/",
        ),
        _files({".thumbnails/alpha/t.png": png(0, 71), "beta/.cache/c.png": png(1, 71)}),
    ),
    _one(
        "unsupported extension",
        "a .txt file in a class",
        "alpha/readme.txt",
        badfiles.text_bytes,
        reason="unsupported file type ('.txt')",
    ),
    _one(
        "no extension",
        "a file without a suffix",
        "beta/LICENSE",
        badfiles.text_bytes,
        reason="unsupported file type (no extension)",
    ),
    _one(
        "image outside any class folder",
        "an image loose in the root",
        "loose.png",
        lambda: png(0, 72),
        reason="not inside a class folder",
    ),
    _one(
        "nested archive",
        "a zip inside a class",
        "gamma/more.zip",
        _zip_bytes,
        reason="nested archive (.zip) is not opened",
    ),
    (
        _skipped(
            "symlink to a file outside the folder",
            "a link to an image beside the root",
            "symlink points outside the folder",
            "alpha/outside_link.png",
        ),
        lambda root, outside: (
            _put(outside / "secret.png", png(0, 73)),
            _relative_link(root / "alpha/outside_link.png", outside / "secret.png"),
        ),
    ),
    (
        _skipped(
            "symlink loop",
            "two links pointing at each other",
            "symlink loop",
            "beta/loop_a.png",
            "beta/loop_b.png",
        ),
        lambda root, outside: (
            _symlink(root / "beta/loop_a.png", "loop_b.png"),
            _symlink(root / "beta/loop_b.png", "loop_a.png"),
        ),
    ),
    (
        _skipped(
            "broken symlink",
            "a link to a file that does not exist",
            "broken symlink",
            "gamma/dangling.png",
        ),
        lambda root, outside: _symlink(root / "gamma/dangling.png", "gone.png"),
    ),
    (
        _skipped(
            "symlinked folder",
            "a link to another class folder, and one to its own folder",
            "symlinked folder is not followed",
            "gamma/linked_alpha/",
            "gamma/self/",
        ),
        lambda root, outside: (
            _symlink(root / "gamma/linked_alpha", "../alpha"),
            _symlink(root / "gamma/self", "."),
        ),
    ),
    # --- unusual but valid images: used ------------------------------------------------------
    _one(
        "PNG named .jpg",
        "the extension lies, the content is a fine PNG",
        "beta/really_a_png.jpg",
        lambda: png(1, 20),
    ),
    _one("CMYK JPEG", "print-ready red ink", "alpha/cmyk.jpg", badfiles.cmyk_jpeg_bytes),
    _one("16-bit grayscale PNG", "mode I;16", "beta/gray16.png", badfiles.gray16_png_bytes),
    _one(
        "palette PNG with transparency",
        "mode P with a transparent index",
        "gamma/palette_transparent.png",
        badfiles.palette_png_with_transparency_bytes,
    ),
    _one(
        "RGBA",
        "fully transparent red",
        "alpha/rgba.png",
        badfiles.transparent_rgba_png_bytes,
    ),
    _one("LA", "grayscale with alpha", "beta/la.png", badfiles.la_png_bytes),
    _one("1-bit", "mode 1", "gamma/one_bit.png", badfiles.one_bit_png_bytes),
    _one("32-bit float TIFF", "mode F", "gamma/float.tiff", _float_tiff),
    _one(
        "EXIF-rotated JPEG",
        "orientation 6",
        "alpha/exif_rotated.jpg",
        badfiles.exif_rotated_jpeg_bytes,
    ),
    _one(
        "JPEG with a broken EXIF block",
        "garbage in APP1; the pixels are fine",
        "gamma/broken_exif.jpg",
        _broken_exif_jpeg,
    ),
    _one("animated GIF", "two frames", "beta/animated.gif", badfiles.animated_gif_bytes),
    _one(
        "multi-page TIFF",
        "two pages",
        "gamma/multipage.tiff",
        badfiles.multipage_tiff_bytes,
    ),
    (
        _used("WebP and BMP", "less common formats", "beta/web.webp", "gamma/bitmap.bmp"),
        _files(
            {
                "beta/web.webp": lambda: badfiles.encode(class_image(1, 30), "WEBP"),
                "gamma/bitmap.bmp": lambda: badfiles.encode(class_image(2, 31), "BMP"),
            }
        ),
    ),
    _one("uppercase extension", "IMG_0001.JPEG", "alpha/IMG_0001.JPEG", lambda: png(0, 21)),
    _one("1x1 pixel", "a single pixel", "alpha/one_pixel.png", _one_pixel_png),
    _one("extremely wide", "10000 x 1 pixels", "beta/wide.png", _wide_png(10_000, 1)),
    _one("extremely tall", "1 x 10000 pixels", "gamma/tall.png", _wide_png(1, 10_000)),
    _one(
        "unicode file name",
        "accents and CJK",
        "gamma/ünïcødé_猫.png",
        lambda: png(2, 22),
    ),
    _one("emoji file name", "emoji and spaces", "alpha/🐱 emoji 🐶.png", lambda: png(0, 23)),
    _one(
        "decomposed unicode (NFD) file name",
        "e + combining acute, as macOS writes it",
        NFD_NAME,
        lambda: png(2, 24),
    ),
    _one(
        "spaces and #?% in the name",
        "characters that URLs and shells treat specially",
        "beta/my photo #1 (copy) 100% ?.png",
        lambda: png(1, 25),
    ),
    _one("very long file name", "over 200 characters", LONG_NAME, lambda: png(1, 26)),
    (
        _used("non-UTF-8 file name", "the byte 0xE9 (Latin-1 é) in a file name", NON_UTF8_PATH),
        _non_utf8_name,
    ),
    _one(
        "deep nesting",
        "an image four folders below its class",
        "alpha/a/b/c/d/deep.png",
        lambda: png(0, 27),
    ),
    (
        _used(
            "duplicate identical images in two classes",
            "the same bytes in alpha and gamma: embedded once, used twice",
            "alpha/dup.png",
            "gamma/dup_copy.png",
        ),
        _files({"alpha/dup.png": png(3, 28), "gamma/dup_copy.png": png(3, 28)}),
    ),
    (
        _used(
            "symlink to a file inside the folder",
            "a link from alpha to an image of beta",
            "alpha/inside_link.png",
        ),
        lambda root, outside: _relative_link(
            root / "alpha/inside_link.png", root / "beta/beta_000.png"
        ),
    ),
    # --- reported: classes that cannot take part in the probe --------------------------------
    (
        Entry(
            "class folder with no images",
            Outcome.REPORTED,
            (Expected(f"{EMPTY_CLASS}/", reason=CLASS_WITHOUT_IMAGES),),
            "an empty class folder",
        ),
        lambda root, outside: (root / EMPTY_CLASS).mkdir(parents=True),
    ),
    (
        Entry(
            "class folder with only non-image files",
            Outcome.REPORTED,
            (
                Expected(f"{NOTES_CLASS}/", reason=CLASS_WITHOUT_IMAGES),
                Expected(f"{NOTES_CLASS}/readme.md", reason="unsupported file type ('.md')"),
            ),
            "a class folder holding only a readme",
        ),
        _files({f"{NOTES_CLASS}/readme.md": badfiles.text_bytes}),
    ),
    (
        Entry(
            "class with one image",
            Outcome.REPORTED,
            (Expected(f"{SOLO_CLASS}/only.png", label=SOLO_CLASS),),
            "embedded, but a class needs two images to be split into train and test",
            excluded_class=SOLO_CLASS,
            message=f"class '{SOLO_CLASS}' excluded: only 1 usable image",
        ),
        _files({f"{SOLO_CLASS}/only.png": lambda: png(3, 29)}),
    ),
    (
        Entry(
            "class whose only image cannot be decoded",
            Outcome.REPORTED,
            (Expected(f"{BROKEN_CLASS}/garbled.jpg", reason=f"{NOT_AN_IMAGE} a text file"),),
            "found while scanning, empty once decoded",
            excluded_class=BROKEN_CLASS,
            message=f"class '{BROKEN_CLASS}' excluded: no usable images",
        ),
        _files({f"{BROKEN_CLASS}/garbled.jpg": badfiles.text_bytes}),
    ),
)

KIND_NAMES: tuple[str, ...] = tuple(entry.kind for entry, _ in KINDS)


def outside_folder(root: Path) -> Path:
    """Where the targets of links that leave ``root`` are written: a sibling of ``root``."""
    return root.parent / f"{root.name}.outside"


def build_corpus(root: Path) -> Manifest:
    """Write the corpus into ``root`` (which must not exist yet, or be empty)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    if any(root.iterdir()):
        raise FileExistsError(f"{root} is not empty")
    outside = outside_folder(root)
    outside.mkdir(parents=True, exist_ok=True)
    good = []
    for class_index, name in enumerate(GOOD_CLASSES):
        for variant in range(GOOD_PER_CLASS):
            path = f"{name}/{name}_{variant:03d}.png"
            _put(root / path, png(class_index, variant))
            good.append(Expected(path, label=name))
    entries, left_out = [], {}
    for entry, write in KINDS:
        try:
            write(root, outside)
        except Unsupported as error:
            left_out[entry.kind] = str(error)
        else:
            entries.append(entry)
    return Manifest(
        root=root,
        outside=outside,
        classes=GOOD_CLASSES,
        good=tuple(good),
        entries=tuple(entries),
        left_out=left_out,
    )


def build_empty_root(root: Path) -> Path:
    """An existing folder with nothing in it: "no images found"."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    if any(root.iterdir()):
        raise FileExistsError(f"{root} is not empty")
    return root


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path, help="folder to write (must not exist or be empty)")
    parser.add_argument("--force", action="store_true", help="remove out_dir first")
    args = parser.parse_args(argv)
    if args.force:
        shutil.rmtree(args.out_dir, ignore_errors=True)
        shutil.rmtree(outside_folder(args.out_dir), ignore_errors=True)
    manifest = build_corpus(args.out_dir)
    json.dump(manifest.to_dict(), sys.stdout, indent=2, ensure_ascii=False)
    print()
    print(f"{len(manifest.entries)} kinds written to {manifest.root}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
