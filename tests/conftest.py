"""Shared fixtures: the bundled encoder (loaded once) and small generated image folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from probe_core.encoders import DEFAULT_ENCODER, load_encoder

REPO = Path(__file__).resolve().parent.parent
DEMO_DIR = REPO / "assets" / "demo"


@pytest.fixture(scope="session")
def encoder():
    """The bundled offline encoder on the CPU, shared by every test."""
    return load_encoder(DEFAULT_ENCODER, device="cpu")


def pattern_image(class_index: int, variant: int, size: int = 48) -> Image.Image:
    """A small RGB image whose colour and stripes depend on its class, varied per image."""
    rng = np.random.default_rng(1000 * class_index + variant)
    palette = [(220, 40, 40), (40, 160, 60), (40, 70, 220), (230, 200, 30), (150, 50, 180)]
    base = np.array(palette[class_index % len(palette)], dtype=float)
    pixels = np.tile(base, (size, size, 1))
    stripes = (np.arange(size) // (3 + class_index)) % 2 == 0
    pixels[stripes, :, :] *= 0.55
    pixels += rng.normal(0, 18, pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def write_image_folder(root: Path, counts: dict[str, int], fmt: str = "PNG") -> Path:
    """Write ``counts[class]`` pattern images into ``root/<class>/``."""
    suffix = {"PNG": "png", "JPEG": "jpg"}[fmt]
    for class_index, (name, count) in enumerate(counts.items()):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for variant in range(count):
            pattern_image(class_index, variant).save(folder / f"{name}_{variant:03d}.{suffix}", fmt)
    return root


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """Three classes of eight generated images each."""
    return write_image_folder(tmp_path / "images", {"red": 8, "green": 8, "blue": 8})
