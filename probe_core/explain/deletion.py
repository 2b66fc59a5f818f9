"""The deletion check: does hiding what the map highlights change the probe's mind more than
hiding the same share of random pixels?

On the crop the probe saw (the encoder's input, as uint8 pixels), the most salient
``fraction`` of the pixels (10%, 20% and 50%) are replaced by a Gaussian blur of the crop
(sigma ``BLUR_SIGMA_SHARE`` of the crop's shorter side), and the probe's probability of the
explained class is measured again; its drop is compared with the drop after blurring the
same share of random pixels, over ``RANDOM_DRAWS`` seeded draws.

The random pixels are drawn with the map's own grain: a random value per cell of the map's
grid (e.g. 7x7), spread over the crop by the same bilinear interpolation as the map, and its
top ``fraction`` taken. Scattered single pixels would be a baseline any map beats, since a
network barely notices isolated blurred pixels; patches of the map's size are the fair
comparison. Ties in a map (e.g. the zeros of a sparse Grad-CAM) are broken at random, with
the same seed.

A map **beats random** at a fraction when hiding its pixels lowers the probability more than
every one of the random draws does (by chance alone, for a map no better than random, that
happens with probability ``1 / (RANDOM_DRAWS + 1)``). The headline is the smallest fraction:
"hiding the highlighted 10% lowers P(cat) by 0.41; hiding a random 10% lowers it by 0.03".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

from ..probe import ProbeWeights
from .geometry import on_crop
from .saliency import SaliencyMap, SaliencyModel

DELETION_FRACTIONS = (0.1, 0.2, 0.5)
RANDOM_DRAWS = 8
BLUR_SIGMA_SHARE = 1 / 16  # of the crop's shorter side: 14 pixels at 224
DEFAULT_SEED = 0
BATCH = 16


@dataclass(frozen=True)
class DeletionStep:
    """One share of the pixels hidden: the drop of P(class) for the map's pixels and for
    each random draw (drop = probability before - after; negative: it rose)."""

    fraction: float
    salient_drop: float
    random_drops: tuple[float, ...]

    @property
    def random_drop(self) -> float:
        """The mean drop over the random draws."""
        return float(np.mean(self.random_drops))

    @property
    def beats_random(self) -> bool:
        """Whether hiding the map's pixels lowers P(class) more than every random draw."""
        return self.salient_drop > max(self.random_drops)


@dataclass(frozen=True)
class DeletionCheck:
    """A saliency map's deletion test against its own random baseline."""

    class_name: str
    probability: float  # P(class) for the intact crop
    steps: tuple[DeletionStep, ...]
    draws: int
    seed: int
    blur_sigma: float  # pixels at the encoder's input size

    @property
    def headline(self) -> DeletionStep:
        return self.steps[0]

    @property
    def better_than_random(self) -> bool:
        """Whether the map beats random at the headline (smallest) fraction."""
        return self.headline.beats_random

    def sentence(self) -> str:
        """One plain sentence, e.g. 'hiding the highlighted 10% lowers P(cat) by 0.41;
        hiding a random 10% lowers it by 0.03 (mean of 8 draws; the most any draw lowered it:
        0.06)'."""
        step = self.headline
        share = f"{step.fraction:.0%}"
        salient = (
            f"hiding the highlighted {share} {_effect(step.salient_drop, f'P({self.class_name})')}"
        )
        random = f"hiding a random {share} {_effect(step.random_drop, 'it')}"
        if self.better_than_random:
            most = max(step.random_drops)
            spread = (
                f"the most any draw lowered it: {most:.2f}" if most >= 0.005 else "none lowered it"
            )
            return f"{salient}; {random} (mean of {self.draws} draws; {spread})"
        verdict = f"the map does no better than random here: {salient}; {random} on average"
        if step.salient_drop < 0.005:
            return verdict
        as_much = sum(drop >= step.salient_drop for drop in step.random_drops)
        return f"{verdict}, and {as_much} of {self.draws} random draws lowered it at least as much"


def _effect(drop: float, target: str) -> str:
    if abs(drop) < 0.005:
        return f"barely changes {target}"
    if drop > 0:
        return f"lowers {target} by {drop:.2f}"
    return f"raises {target} by {-drop:.2f}"


def deletion_check(
    model: SaliencyModel,
    image: Image.Image,
    saliency: SaliencyMap,
    weights: ProbeWeights,
    *,
    fractions: Sequence[float] = DELETION_FRACTIONS,
    draws: int = RANDOM_DRAWS,
    seed: int = DEFAULT_SEED,
) -> DeletionCheck:
    """Blur the map's most salient ``fractions`` of the crop, and as many random pixels in
    ``draws`` seeded draws, and measure the drop of P(``saliency.class_name``)."""
    if draws < 1:
        raise ValueError(f"draws must be at least 1, got {draws}")
    if not fractions or not all(0 < f < 1 for f in fractions):
        raise ValueError(f"fractions must lie strictly between 0 and 1, got {list(fractions)}")
    pixels = model.pixels(image.convert("RGB"))
    height, width = pixels.shape[:2]
    sigma = BLUR_SIGMA_SHARE * min(height, width)
    blurred = np.asarray(Image.fromarray(pixels).filter(ImageFilter.GaussianBlur(sigma)))
    rng = np.random.default_rng(seed)
    tie_break = rng.random(height * width)
    random_maps = [
        on_crop(rng.random(saliency.grid.shape), saliency.geometry).ravel() for _ in range(draws)
    ]
    salient_order = np.lexsort((tie_break, -saliency.crop.ravel()))
    random_orders = [np.lexsort((tie_break, -values)) for values in random_maps]
    variants = [pixels]
    for fraction in fractions:
        count = round(fraction * height * width)
        for order in (salient_order, *random_orders):
            variants.append(_hidden(pixels, blurred, order[:count]))
    probabilities = np.concatenate(
        [
            model.probabilities(variants[start : start + BATCH], weights)
            for start in range(0, len(variants), BATCH)
        ]
    )[:, saliency.class_index]
    before = float(probabilities[0])
    drops = before - probabilities[1:].reshape(len(fractions), draws + 1)
    steps = tuple(
        DeletionStep(float(f), float(row[0]), tuple(float(d) for d in row[1:]))
        for f, row in zip(fractions, drops, strict=True)
    )
    return DeletionCheck(saliency.class_name, before, steps, draws, seed, sigma)


def _hidden(pixels: np.ndarray, blurred: np.ndarray, flat_positions: np.ndarray) -> np.ndarray:
    hidden = pixels.copy().reshape(-1, pixels.shape[-1])
    hidden[flat_positions] = blurred.reshape(-1, pixels.shape[-1])[flat_positions]
    return hidden.reshape(pixels.shape)
