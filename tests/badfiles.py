"""Bad and awkward image files, for tests of how inputs are decoded or skipped.

Each ``*_bytes()`` function returns the content of one kind of file; each ``write_*(path)``
writes that content to ``path`` (creating its folder) and returns the path. Everything is
deterministic: the same call gives the same bytes.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

EXIF_ORIENTATION = 0x0112


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    """The bytes of ``image`` saved in ``fmt`` with Pillow."""
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def noise_image(width: int = 48, height: int = 48, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def _write(path: str | Path, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# --- files that cannot be used -------------------------------------------------------------


def corrupt_jpeg_bytes() -> bytes:
    """A real JPEG header (through the start-of-scan segment) followed by random bytes.

    libjpeg decodes most random entropy data into garbage pixels without complaint, so
    the random data contains a second start-of-image marker, which it always rejects.
    """
    valid = encode(noise_image(), "JPEG")
    start_of_scan = valid.index(b"\xff\xda")
    header_length = struct.unpack(">H", valid[start_of_scan + 2 : start_of_scan + 4])[0]
    header = valid[: start_of_scan + 2 + header_length]
    rng = np.random.default_rng(1)
    garbage = bytes(b for b in rng.bytes(16) if b != 0xFF)
    return header + garbage + b"\xff\xd8" + rng.bytes(len(valid))


def truncated_png_bytes() -> bytes:
    """A valid PNG cut in half."""
    valid = encode(noise_image(), "PNG")
    return valid[: len(valid) // 2]


def text_bytes() -> bytes:
    return b"These are my notes about the cat photos.\nNothing to see here.\n"


def html_bytes() -> bytes:
    return (
        b"<!DOCTYPE html>\n<html><head><title>Not Found</title></head>"
        b"<body><h1>404</h1></body></html>\n"
    )


def pdf_bytes() -> bytes:
    return b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\ntrailer\n%%EOF\n"


def decompression_bomb_png_bytes(width: int = 20_000, height: int = 20_000) -> bytes:
    """A tiny PNG whose header (IHDR, with a correct CRC) declares ``width`` x ``height``."""
    data = bytearray(encode(Image.new("L", (8, 8)), "PNG"))
    # 8-byte signature, then the IHDR chunk: length (4), type (4), width, height, ..., CRC.
    assert data[12:16] == b"IHDR"
    struct.pack_into(">II", data, 16, width, height)
    struct.pack_into(">I", data, 29, zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def write_corrupt_jpeg(path: str | Path) -> Path:
    return _write(path, corrupt_jpeg_bytes())


def write_truncated_png(path: str | Path) -> Path:
    return _write(path, truncated_png_bytes())


def write_zero_byte(path: str | Path) -> Path:
    return _write(path, b"")


def write_text(path: str | Path) -> Path:
    """A text file (name it ``.jpg`` to disguise it as an image)."""
    return _write(path, text_bytes())


def write_html(path: str | Path) -> Path:
    """An HTML page (e.g. a saved error page named ``.png``)."""
    return _write(path, html_bytes())


def write_pdf(path: str | Path) -> Path:
    return _write(path, pdf_bytes())


def write_decompression_bomb_png(path: str | Path) -> Path:
    return _write(path, decompression_bomb_png_bytes())


# --- unusual but valid images ----------------------------------------------------------------

CMYK_RED = (0, 255, 255, 0)


def cmyk_jpeg_bytes(size: tuple[int, int] = (30, 20)) -> bytes:
    """A CMYK JPEG of pure red ink (C=0, M=255, Y=255, K=0)."""
    return encode(Image.new("CMYK", size, CMYK_RED), "JPEG")


def gray16_png_bytes() -> bytes:
    """A 16-bit grayscale PNG (mode I;16): top-left pixel 65535, the next one 0, the rest 32768."""
    array = np.full((16, 16), 32768, dtype=np.uint16)
    array[0, 0] = 65535
    array[0, 1] = 0
    image = Image.fromarray(array)
    assert image.mode == "I;16"
    return encode(image, "PNG")


def palette_png_with_transparency_bytes() -> bytes:
    """A 10x10 palette PNG: index 0 (transparent red) everywhere, index 1 (blue) at (5, 5)."""
    image = Image.new("P", (10, 10), 0)
    image.putpalette([255, 0, 0, 0, 0, 255] + [0] * (256 * 3 - 6))
    image.putpixel((5, 5), 1)
    return encode(image, "PNG", transparency=0)


def transparent_rgba_png_bytes() -> bytes:
    """A fully transparent red RGBA PNG."""
    return encode(Image.new("RGBA", (10, 10), (255, 0, 0, 0)), "PNG")


def la_png_bytes() -> bytes:
    """Grayscale with alpha: left half opaque black, right half fully transparent black."""
    image = Image.new("LA", (10, 10), (0, 255))
    image.paste((0, 0), (5, 0, 10, 10))
    return encode(image, "PNG")


def one_bit_png_bytes() -> bytes:
    """A 1-bit image, black with one white pixel at (1, 1)."""
    image = Image.new("1", (10, 10), 0)
    image.putpixel((1, 1), 1)
    return encode(image, "PNG")


def exif_rotated_jpeg_bytes(size: tuple[int, int] = (40, 20)) -> bytes:
    """A red JPEG stored ``size`` wide x high, with EXIF orientation 6 (rotate 90 degrees CW)."""
    image = Image.new("RGB", size, (255, 0, 0))
    exif = image.getexif()
    exif[EXIF_ORIENTATION] = 6
    return encode(image, "JPEG", exif=exif)


def animated_gif_bytes() -> bytes:
    """Two frames: red, then blue."""
    frames = [Image.new("RGB", (10, 10), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def multipage_tiff_bytes() -> bytes:
    """Two pages: red, then blue."""
    pages = [Image.new("RGB", (10, 10), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    return encode(pages[0], "TIFF", save_all=True, append_images=pages[1:])


def write_cmyk_jpeg(path: str | Path) -> Path:
    return _write(path, cmyk_jpeg_bytes())


def write_gray16_png(path: str | Path) -> Path:
    return _write(path, gray16_png_bytes())


def write_palette_png_with_transparency(path: str | Path) -> Path:
    return _write(path, palette_png_with_transparency_bytes())


def write_transparent_rgba_png(path: str | Path) -> Path:
    return _write(path, transparent_rgba_png_bytes())


def write_exif_rotated_jpeg(path: str | Path) -> Path:
    return _write(path, exif_rotated_jpeg_bytes())


def write_animated_gif(path: str | Path) -> Path:
    return _write(path, animated_gif_bytes())


def write_multipage_tiff(path: str | Path) -> Path:
    return _write(path, multipage_tiff_bytes())


def write_png(path: str | Path, seed: int = 0) -> Path:
    """An ordinary valid PNG (e.g. under an awkward file name)."""
    return _write(path, encode(noise_image(seed=seed), "PNG"))


# --- checking that inputs are left alone -------------------------------------------------------


def tree_fingerprint(root: str | Path) -> dict[str, tuple]:
    """Every entry under ``root`` (symlinks not followed): folders, links and file hashes.

    Two equal fingerprints mean nothing was added, removed, renamed, re-pointed or rewritten.
    """
    root = Path(root)
    fingerprint: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            relative = path.relative_to(root).as_posix()
            info = path.lstat()
            if stat.S_ISLNK(info.st_mode):
                fingerprint[relative] = ("link", os.readlink(path))
            elif stat.S_ISDIR(info.st_mode):
                fingerprint[relative] = ("folder",)
            else:
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                fingerprint[relative] = (
                    "file",
                    digest,
                    info.st_mtime_ns,
                    stat.S_IMODE(info.st_mode),
                )
    return fingerprint
