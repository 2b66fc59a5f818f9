"""Where the probe looks for each class, and the shortcut a class may hide.

A class's **mean saliency** is the average of the saliency maps of its correctly predicted
images, each taken on the crop the probe saw (the encoder's input, ``SaliencyMap.crop``, which
sums to 1), so the maps are aligned to the crop whatever the images' own sizes.

The **border** of the crop is the band within ``BORDER_BAND`` (one eighth) of its side from
each edge: the outer 12.5% of the rows at the top and at the bottom and of the columns at the
left and at the right, 43.75% of the crop's area. When at least ``SHORTCUT_SHARE`` (60%) of a
class's mean saliency lies in that band (about 1.4 times what a map spread evenly would put
there), and the mean is over at least ``MIN_IMAGES`` images, the class is flagged as a
**possible shortcut**: the probe finds that class by something at the edges (a frame, a
watermark, a scanner margin) rather than in the middle, where the subject usually is. The
weight-free baselines' colour-and-layout warning asks the same question of the whole image;
this one asks it of one class, through the probe itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .saliency import SaliencyMap

BORDER_BAND = 1 / 8  # of the crop's height (top, bottom) and width (left, right)
SHORTCUT_SHARE = 0.6  # of a class's mean saliency in the border band
MIN_IMAGES = 3  # correctly predicted images a flag needs


@dataclass(frozen=True)
class ClassSaliency:
    """A class's mean saliency over its correctly predicted images, on the crop."""

    class_name: str
    mean: np.ndarray  # float32 at the encoder's input size, non-negative, summing to 1
    n_images: int
    border_share: float  # of the mean's mass in the border band
    possible_shortcut: bool

    def sentence(self) -> str:
        share = f"{self.border_share:.0%} of the saliency"
        if self.possible_shortcut:
            return (
                f"possible shortcut: for {self.class_name}, {share} lies on the outer border of"
                f" the crop (the outer {BORDER_BAND:.1%} of each side, {border_area():.0%} of"
                f" its area), over {self.n_images} correctly predicted images"
            )
        if self.n_images < MIN_IMAGES:
            return (
                f"{self.class_name}: {self.n_images} correctly predicted images explained, too"
                f" few to judge a shortcut ({share} on the border)"
            )
        return f"{self.class_name}: {share} lies on the outer border of the crop"


def border_mask(shape: tuple[int, int], band: float = BORDER_BAND) -> np.ndarray:
    """True on the border band of a crop of ``shape`` (height, width)."""
    height, width = shape
    rows, cols = round(height * band), round(width * band)
    mask = np.ones((height, width), dtype=bool)
    mask[rows : height - rows, cols : width - cols] = False
    return mask


def border_area(band: float = BORDER_BAND) -> float:
    """The border band's share of the crop's area (0.4375 for one eighth)."""
    return 1 - (1 - 2 * band) ** 2


def border_share(crop_map: np.ndarray, band: float = BORDER_BAND) -> float:
    """The share of a map's mass that lies in the crop's border band."""
    crop_map = np.asarray(crop_map, dtype=np.float64)
    total = crop_map.sum()
    if total <= 0:
        return 0.0
    return float(crop_map[border_mask(crop_map.shape, band)].sum() / total)


def class_saliency(class_name: str, maps: Sequence[SaliencyMap]) -> ClassSaliency:
    """The mean of ``maps`` (a class's correctly predicted images, explained for that
    class) on the crop, its border share, and whether it is flagged."""
    if any(m.class_name != class_name for m in maps):
        raise ValueError(f"every map must explain {class_name!r}")
    shapes = {m.crop.shape for m in maps}
    if len(shapes) > 1:
        raise ValueError(f"maps of different crop sizes cannot be averaged: {sorted(shapes)}")
    if maps:
        mean = np.mean([m.crop.astype(np.float64) for m in maps], axis=0)
        mean = (mean / mean.sum()).astype(np.float32)
    else:
        mean = np.zeros((0, 0), dtype=np.float32)
    share = border_share(mean) if maps else 0.0
    return ClassSaliency(
        class_name=class_name,
        mean=mean,
        n_images=len(maps),
        border_share=share,
        possible_shortcut=len(maps) >= MIN_IMAGES and share >= SHORTCUT_SHARE,
    )
