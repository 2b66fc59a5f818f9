"""Decode image bytes into an RGB Pillow image, or say precisely why not.

Large JPEGs can be decoded at a reduced size (Pillow's draft mode: libjpeg scales by 1/2,
1/4 or 1/8 while decoding, several times faster) when the caller says how long the shorter
side must stay (``draft_min_side``); embed.py asks for twice the encoder's resize target.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Iterator

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Aspect ratios beyond this are padded (on white) before the encoder's resize, so that
# resizing the short side of a 1x10000 strip cannot allocate gigabytes.
MAX_ASPECT_RATIO = 16
BACKGROUND = (255, 255, 255)


class ImageLoadError(ValueError):
    """The bytes are not a usable image; the message is the reason shown to the user."""


_IMAGE_SIGNATURES = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)


def _image_format(data: bytes) -> str | None:
    """The image format that the leading bytes claim, if any."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    return next((name for magic, name in _IMAGE_SIGNATURES if data.startswith(magic)), None)


def _sniff(data: bytes) -> str:
    """A short guess of what non-image bytes are, for the error message."""
    head = data[:512].lstrip().lower()
    if head.startswith(b"%pdf"):
        return "a PDF document"
    if head.startswith(b"<!doctype html") or b"<html" in head:
        return "an HTML page"
    if head.startswith(b"pk\x03\x04"):
        return "a zip archive"
    if b"<svg" in head:
        return "an SVG drawing (vector images are not supported)"
    try:
        head.decode("utf-8")
        return "a text file"
    except UnicodeDecodeError:
        return "an unknown binary format"


def _to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB; transparency is composited on white."""
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
        if image.mode == "F":
            top = max(float(array.max()), 1.0) if array.max() > 1.0 else 1.0
        array = np.clip(array / top * 255.0, 0, 255).astype(np.uint8)
        image = Image.fromarray(array, mode="L")
    has_alpha = image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (
        image.mode == "P" and "transparency" in image.info
    )
    if has_alpha:
        rgba = image.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, BACKGROUND)
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    if image.mode != "RGB":
        return image.convert("RGB")
    return image


def _pad_extreme_aspect(image: Image.Image) -> Image.Image:
    width, height = image.size
    if max(width, height) <= MAX_ASPECT_RATIO * min(width, height):
        return image
    long_side = max(width, height)
    short_side = -(-long_side // MAX_ASPECT_RATIO)
    size = (width, short_side) if width > height else (short_side, height)
    canvas = Image.new("RGB", size, BACKGROUND)
    canvas.paste(image, ((size[0] - width) // 2, (size[1] - height) // 2))
    return canvas


def draft_scale(size: tuple[int, int], min_side: int) -> int:
    """The JPEG draft scale (1, 2, 4 or 8) that keeps the shorter side at least ``min_side``."""
    room = min(size) // max(1, min_side)
    return next((scale for scale in (8, 4, 2) if room >= scale), 1)


@contextlib.contextmanager
def _decoding(data: bytes) -> Iterator[None]:
    """Turns what Pillow raises while opening or decoding ``data`` into an ImageLoadError with
    a reason a user can act on."""
    if not data:
        raise ImageLoadError("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    except Image.DecompressionBombError as error:
        raise ImageLoadError(
            f"image too large: {error} (Pillow's decompression-bomb limit)"
        ) from error
    except UnidentifiedImageError as error:
        claimed = _image_format(data)
        if claimed:
            raise ImageLoadError(f"corrupt {claimed} image (its data cannot be decoded)") from error
        raise ImageLoadError(f"not an image: the content looks like {_sniff(data)}") from error
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        message = str(error) or type(error).__name__
        if "truncated" in message.lower():
            raise ImageLoadError(f"truncated image ({message})") from error
        raise ImageLoadError(f"corrupt image ({message})") from error


def load_image(data: bytes, *, draft_min_side: int | None = None) -> Image.Image:
    """Decode bytes to an RGB image with EXIF orientation applied (first frame of animations).

    Raises ImageLoadError with a reason a user can act on. Pillow's
    decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``) is kept. With ``draft_min_side``,
    a JPEG whose shorter side is at least twice that decodes at 1/2, 1/4 or 1/8 of its size,
    its shorter side staying at least ``draft_min_side``.
    """
    with _decoding(data):
        image = Image.open(io.BytesIO(data))
        image.seek(0)
        if draft_min_side and image.format == "JPEG":
            scale = draft_scale(image.size, draft_min_side)
            if scale > 1:  # asks libjpeg for exactly this scale; the mode stays
                image.draft(image.mode, (image.width // scale, image.height // scale))
        image.load()
    # A broken EXIF block leaves the pixels usable: keep the image unrotated.
    with contextlib.suppress(Exception):
        image = ImageOps.exif_transpose(image)
    try:
        return _pad_extreme_aspect(_to_rgb(image))
    except (OSError, ValueError) as error:
        raise ImageLoadError(f"unsupported image mode {image.mode!r} ({error})") from error


def check_image(data: bytes, *, decode: bool = True) -> None:
    """Raise ImageLoadError, with the reason ``load_image`` would give, when ``data`` is not a
    usable image. ``decode=True`` decodes every pixel (a JPEG at 1/8 of its size: libjpeg still
    reads all of its data); ``decode=False`` reads only the header and, where the format has
    them, checks the checksums (Pillow's ``verify``: a PNG's), which is much cheaper but misses
    a JPEG whose compressed data is damaged."""
    if decode:
        load_image(data, draft_min_side=1)
        return
    with _decoding(data):
        Image.open(io.BytesIO(data)).verify()
