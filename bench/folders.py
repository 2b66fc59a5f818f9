"""Generated image folders for benchmarks: N classes of small seeded PNGs, written once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

PALETTE = [
    (220, 40, 40), (40, 160, 60), (40, 70, 220), (230, 200, 30), (150, 50, 180),
    (30, 180, 190), (240, 130, 20), (120, 120, 120), (200, 90, 150), (90, 60, 30),
]  # fmt: skip


def pattern(class_index: int, variant: int, size: int) -> Image.Image:
    """A class-specific colour and stripe frequency, with per-image shifts, tint and noise, so
    that classes overlap a little (a probe is good, not perfect)."""
    rng = np.random.default_rng(1_000_003 * class_index + variant)
    base = np.array(PALETTE[class_index % len(PALETTE)], dtype=float)
    base = base * rng.uniform(0.6, 1.2) + rng.normal(0, 35, 3)
    pixels = np.tile(base, (size, size, 1))
    period = 2 + class_index % 5 + int(rng.integers(0, 2))
    offset = int(rng.integers(0, period))
    stripes = ((np.arange(size) + offset) // period) % 2 == 0
    if (class_index // 5 + variant) % 2:
        pixels[:, stripes, :] *= rng.uniform(0.4, 0.8)
    else:
        pixels[stripes, :, :] *= rng.uniform(0.4, 0.8)
    pixels += rng.normal(0, 30, pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def synthetic_folder(root: Path, n_images: int, n_classes: int = 10, size: int = 28) -> Path:
    """``root/class_k/NNNNN.png``, ``n_images`` in all; reused when already complete."""
    root = Path(root)
    marker = root / f".complete-{n_images}-{n_classes}-{size}"
    if marker.exists():
        return root
    per_class = n_images // n_classes
    for class_index in range(n_classes):
        folder = root / f"class_{class_index}"
        folder.mkdir(parents=True, exist_ok=True)
        for variant in range(per_class):
            pattern(class_index, variant, size).save(folder / f"{variant:05d}.png")
    marker.touch()
    return root
