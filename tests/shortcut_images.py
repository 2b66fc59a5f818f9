"""Constructed shortcut folders: classes that differ only by a mark at a fixed place.

Every image is ``SIDE`` x ``SIDE`` pixels: a smooth random colour field with a few random
ellipses and pixel noise (the backgrounds of both classes come from the same distribution,
with different seeds, so they carry no class signal). Then:

- ``marked`` images carry a saturated red square of ``SQUARE_SIDE`` pixels at
  ``SQUARE_TOP_LEFT``; ``plain`` images do not. The bundled encoder (Resize 256, centre crop
  224) sees the square at rows and columns 32-96 of its crop, cells 1-2 of its 7x7 map,
  about 8% of the crop: big enough for a pretrained CNN to tell the classes apart on new
  backgrounds, small enough that a map spread over the image cannot pass for one on it.
- ``framed`` images carry a red frame ``FRAME_WIDTH`` pixels wide along the image's edge;
  after the bundled encoder's crop 24 pixels of it remain along each side of the crop, all
  inside the crop's border band (its outer 28 pixels).

Seeds make every image the same on every run.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw

SIDE = 256
SQUARE_TOP_LEFT = (48, 48)  # (row, column) in the image
SQUARE_SIDE = 64
FRAME_WIDTH = 40
MARK_COLOUR = (230, 30, 30)


def background(seed: int) -> np.ndarray:
    """A (SIDE, SIDE, 3) uint8 background: smooth colours, ellipses, noise."""
    rng = np.random.default_rng(seed)
    field = rng.uniform(70, 190, (3, 3, 3)).astype(np.uint8)
    image = Image.fromarray(field).resize((SIDE, SIDE), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(image)
    for _ in range(4):
        x, y = (int(v) for v in rng.integers(0, SIDE, 2))
        width, height = (int(v) for v in rng.integers(20, 90, 2))
        colour = tuple(int(v) for v in rng.uniform(60, 200, 3))
        draw.ellipse((x, y, x + width, y + height), fill=colour)
    pixels = np.asarray(image, dtype=np.float64) + rng.normal(0, 10, (SIDE, SIDE, 3))
    return np.clip(pixels, 0, 255).astype(np.uint8)


def square_mask() -> np.ndarray:
    """True on the square's pixels, in image coordinates."""
    mask = np.zeros((SIDE, SIDE), dtype=bool)
    top, left = SQUARE_TOP_LEFT
    mask[top : top + SQUARE_SIDE, left : left + SQUARE_SIDE] = True
    return mask


def marked(seed: int) -> Image.Image:
    pixels = background(seed)
    pixels[square_mask()] = MARK_COLOUR
    return Image.fromarray(pixels)


def framed(seed: int) -> Image.Image:
    pixels = background(seed)
    pixels[:FRAME_WIDTH] = pixels[-FRAME_WIDTH:] = MARK_COLOUR
    pixels[:, :FRAME_WIDTH] = pixels[:, -FRAME_WIDTH:] = MARK_COLOUR
    return Image.fromarray(pixels)


def plain(seed: int) -> Image.Image:
    return Image.fromarray(background(seed))


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def shortcut_files(kind: str, per_class: int, first_seed: int = 0) -> list[tuple[str, bytes]]:
    """``(path, PNG bytes)`` for two classes: ``kind`` (``marked`` or ``framed``) and
    ``plain``, ``per_class`` each, from seeds ``first_seed`` on (plain images use seeds
    1000 higher, so no background is shared)."""
    make = {"marked": marked, "framed": framed}[kind]
    files = []
    for number in range(per_class):
        files.append((f"{kind}/{number:03d}.png", png(make(first_seed + number))))
        files.append((f"plain/{number:03d}.png", png(plain(first_seed + 1000 + number))))
    return files
