"""``baseline:`` names: weight-free features, a baseline to beat.

    ``baseline:pixels``           16x16 RGB pixels, no weights: a layout/colour baseline
    ``baseline:color-histogram``  8x8x8 joint RGB histogram, no weights: a colour baseline

They tell whether a trivial feature already separates the classes, i.e. whether the classes
differ in colour or layout rather than in content.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from PIL import Image
from torch import nn
from torchvision import transforms

from .base import Built, EncoderError, EncoderInfo, Family
from .hub import Downloads


class _WeightFreeFeatures(nn.Module):
    """Base of the baseline "models": no parameters, and kept in float32 on every device
    (``load_encoder`` honours ``keeps_float32``), since fp16 would blur small differences."""

    keeps_float32 = True


class CentredPixels(_WeightFreeFeatures):
    """Flattened pixels minus 0.5, the middle of ``ToTensor``'s [0, 1] range.

    A fixed offset rather than each vector's own mean: brightness stays part of the feature
    (classes that differ only in exposure are a shortcut worth catching), and no 8-bit image
    maps to the zero vector (k/255 is never 0.5), so the L2 normalisation is always defined.
    """

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images.flatten(1) - 0.5


class Flattened(_WeightFreeFeatures):
    """Features computed entirely in preprocessing, passed through as (n, dim) rows."""

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features.flatten(1)


class ToRGB:
    """PIL image to RGB (a top-level class, so that DataLoader workers can pickle it)."""

    def __call__(self, image: Image.Image) -> Image.Image:
        return image.convert("RGB")

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class ColorHistogram:
    """PIL image to its joint RGB histogram, ``bins_per_channel ** 3`` bins summing to 1.

    Counted exactly over every pixel of the 8-bit image (no resizing, which would blend
    colours into bins that the image does not use).
    """

    def __init__(self, bins_per_channel: int = 8):
        if not 1 <= bins_per_channel <= 256:
            raise ValueError(f"bins_per_channel must be in 1..256, got {bins_per_channel}")
        self.bins_per_channel = bins_per_channel

    @property
    def dim(self) -> int:
        return self.bins_per_channel**3

    def __call__(self, image: Image.Image) -> torch.Tensor:
        pixels = np.asarray(image.convert("RGB"), dtype=np.intp).reshape(-1, 3)
        bins = (pixels * self.bins_per_channel) >> 8  # 0..255 -> 0..bins-1, equal widths
        joint = np.ravel_multi_index(bins.T, (self.bins_per_channel,) * 3)
        counts = np.bincount(joint, minlength=self.dim)
        return torch.from_numpy(counts / counts.sum()).float()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(bins_per_channel={self.bins_per_channel})"


PIXELS_SIDE = 16
HISTOGRAM_BINS_PER_CHANNEL = 8
# Bump a recipe's version when its features change, so that cached embeddings are not reused.
BASELINE_VERSION = "v1"


def _pixels_baseline() -> Built:
    preprocess = transforms.Compose(
        [
            ToRGB(),
            transforms.Resize(
                (PIXELS_SIDE, PIXELS_SIDE),
                interpolation=transforms.InterpolationMode.BILINEAR,
                antialias=True,
            ),
            transforms.ToTensor(),
        ]
    )
    identity = f"pixels-{PIXELS_SIDE}@{BASELINE_VERSION}"
    return Built(CentredPixels(), preprocess, 3 * PIXELS_SIDE**2, identity)


def _color_histogram_baseline() -> Built:
    histogram = ColorHistogram(HISTOGRAM_BINS_PER_CHANNEL)
    bins = HISTOGRAM_BINS_PER_CHANNEL
    identity = f"color-histogram-{bins}x{bins}x{bins}@{BASELINE_VERSION}"
    return Built(Flattened(), histogram, histogram.dim, identity)


BASELINES: dict[str, Callable[[], Built]] = {
    "pixels": _pixels_baseline,
    "color-histogram": _color_histogram_baseline,
}

BASELINE_DESCRIPTIONS = {
    "pixels": (
        f"{PIXELS_SIDE}x{PIXELS_SIDE} RGB pixels ({3 * PIXELS_SIDE**2}-d), no weights:"
        " can classes be told apart by layout and colour alone?"
    ),
    "color-histogram": (
        f"RGB colour histogram ({HISTOGRAM_BINS_PER_CHANNEL**3}-d), no weights:"
        " can classes be told apart by colour alone?"
    ),
}


def build(spec: str, downloads: Downloads) -> Built:
    if spec not in BASELINES:
        raise EncoderError(
            f"unknown baseline encoder {spec!r}; available: "
            + ", ".join(f"baseline:{name}" for name in BASELINES)
        )
    return BASELINES[spec]()


def weight_free(spec: str) -> bool:
    return spec in BASELINES


def catalogue() -> list[EncoderInfo]:
    return [
        EncoderInfo(
            f"baseline:{name}",
            description,
            needs_download=False,
            weight_free=True,
            family="baseline",
        )
        for name, description in BASELINE_DESCRIPTIONS.items()
    ]


FAMILY = Family("baseline", build, catalogue, weight_free, title="no weights: a baseline to beat")
