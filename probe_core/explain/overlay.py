"""Saliency drawn over the image: the overlay the CLI writes and the app shows.

The heat colours come from plotly's Inferno scale; each pixel's colour is blended over the
photo in proportion to the square root of its saliency (relative to the map's peak), so weak
evidence stays visible without hiding the photo. What lies outside the crop (which the probe
never saw) is dimmed, and the crop's outline is drawn in white over a dark edge, so it shows
on light and dark images alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..images import load_image
from .geometry import CropGeometry
from .saliency import SaliencyMap

if TYPE_CHECKING:
    from .explainer import ImageExplanation

MAX_SIDE = 1024  # overlays are scaled down to this longer side
MIN_SIDE = 448  # and small images up to this one, so that the map and the caption are legible
PEAK_OPACITY = 0.7
OUTSIDE_DIM = 0.45  # brightness kept outside the crop
CAPTION_FONT_SIZE = 15


@cache
def _colour_table() -> np.ndarray:
    """256 RGB colours along plotly's Inferno scale."""
    from plotly.colors import hex_to_rgb, sequential

    stops = np.array([hex_to_rgb(colour) for colour in sequential.Inferno], dtype=np.float64)
    positions = np.linspace(0, 1, len(stops))
    levels = np.linspace(0, 1, 256)
    return np.stack([np.interp(levels, positions, stops[:, c]) for c in range(3)], axis=1)


def heat_colours(values: np.ndarray) -> np.ndarray:
    """(height, width, 3) float RGB colours for values in [0, 1]."""
    index = np.clip(np.rint(np.asarray(values) * 255), 0, 255).astype(int)
    return _colour_table()[index]


def saliency_overlay(
    image: Image.Image,
    saliency: SaliencyMap,
    *,
    caption: Sequence[str] = (),
    max_side: int = MAX_SIDE,
) -> Image.Image:
    """The image with ``saliency`` blended over it, the crop outlined and the rest dimmed,
    its longer side scaled into ``MIN_SIDE`` .. ``max_side``; ``caption`` lines are written
    underneath."""
    image = image.convert("RGB")
    if (image.height, image.width) != saliency.image.shape:
        raise ValueError(
            f"the map is {saliency.image.shape[1]}x{saliency.image.shape[0]} pixels, the image"
            f" {image.width}x{image.height}"
        )
    photo = np.asarray(image, dtype=np.float64)
    values = saliency.image.astype(np.float64)
    peak = values.max()
    relative = values / peak if peak > 0 else values
    opacity = PEAK_OPACITY * np.sqrt(relative)[..., None]
    blended = photo * (1 - opacity) + heat_colours(relative) * opacity
    outside = _outside_crop(saliency.geometry)
    blended[outside] *= OUTSIDE_DIM
    drawn = Image.fromarray(np.clip(np.rint(blended), 0, 255).astype(np.uint8))
    longer = max(drawn.size)
    scale = min(max_side / longer, max(1.0, min(MIN_SIDE, max_side) / longer))
    if scale != 1:
        size = (max(1, round(drawn.width * scale)), max(1, round(drawn.height * scale)))
        drawn = drawn.resize(size, Image.Resampling.BICUBIC)
    _outline(drawn, saliency.geometry, scale)
    return with_caption(drawn, caption) if caption else drawn


def explanation_caption(explanation: ImageExplanation) -> list[str]:
    """The lines under an overlay: what is explained, for which probe, how, and how the map
    fared in its deletion check."""
    saliency = explanation.saliency
    lines = [
        f"P({explanation.explained_class}) = {saliency.probability:.2f} for"
        f" {explanation.probe_sentence()}, which predicts {saliency.predicted}.",
        f"{saliency.method.name}.",
    ]
    if explanation.deletion is not None:
        lines.append(
            explanation.deletion.sentence()[0].upper() + explanation.deletion.sentence()[1:] + "."
        )
    return lines


def explanation_overlay(
    explanation: ImageExplanation, data: bytes, *, max_side: int = MAX_SIDE, captioned: bool = True
) -> Image.Image:
    """The overlay of an explanation's saliency map over its image (given as file bytes),
    with ``explanation_caption`` underneath unless ``captioned`` is False."""
    if explanation.saliency is None:
        raise ValueError(
            f"{explanation.name} has no saliency map: {explanation.no_saliency_reason}"
        )
    caption = explanation_caption(explanation) if captioned else ()
    return saliency_overlay(
        load_image(data), explanation.saliency, caption=caption, max_side=max_side
    )


def crop_heat_map(values: np.ndarray, *, side: int = 224) -> Image.Image:
    """A map on the crop (e.g. a class's mean saliency) as a square heat image, outlined."""
    values = np.asarray(values, dtype=np.float64)
    peak = values.max() if values.size else 0.0
    colours = heat_colours(values / peak if peak > 0 else values)
    heat = Image.fromarray(np.clip(np.rint(colours), 0, 255).astype(np.uint8))
    heat = heat.resize((side, side), Image.Resampling.BILINEAR)
    ImageDraw.Draw(heat).rectangle((0, 0, side - 1, side - 1), outline=(255, 255, 255))
    return heat


def with_caption(image: Image.Image, lines: Sequence[str]) -> Image.Image:
    """``image`` with ``lines`` of text on a white band underneath, wrapped to its width."""
    font = _font()
    wrapped = [part for line in lines for part in _wrap(line, font, image.width - 16)]
    line_height = CAPTION_FONT_SIZE + 5
    band = 10 + line_height * len(wrapped)
    canvas = Image.new("RGB", (image.width, image.height + band), "white")
    canvas.paste(image, (0, 0))
    draw = ImageDraw.Draw(canvas)
    for number, line in enumerate(wrapped):
        draw.text((8, image.height + 6 + number * line_height), line, fill=(20, 20, 20), font=font)
    return canvas


def _outside_crop(geometry: CropGeometry) -> np.ndarray:
    height, width = geometry.image_size
    left, top, right, bottom = geometry.pixel_box()
    outside = np.ones((height, width), dtype=bool)
    outside[top:bottom, left:right] = False
    return outside


def _outline(image: Image.Image, geometry: CropGeometry, scale: float) -> None:
    if geometry.covers_whole_image:
        return  # the crop is the whole image: its outline is the image's edge
    left, top, right, bottom = (value * scale for value in geometry.pixel_box())
    width = max(2, round(max(image.size) / 250))
    draw = ImageDraw.Draw(image)
    box = (left, top, right - 1, bottom - 1)
    draw.rectangle(box, outline=(0, 0, 0), width=width + 2)
    draw.rectangle(
        (box[0] + 1, box[1] + 1, box[2] - 1, box[3] - 1), outline=(255, 255, 255), width=width
    )


@cache
def _font() -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=CAPTION_FONT_SIZE)
    except (TypeError, OSError):  # a Pillow without FreeType: the small bitmap font
        return ImageFont.load_default()


def _wrap(line: str, font: ImageFont.ImageFont, width: int) -> list[str]:
    words, lines, current = line.split(), [], ""
    for word in words:
        trial = f"{current} {word}".strip()
        if current and font.getlength(trial) > width:
            lines.append(current)
            current = word
        else:
            current = trial
    return [*lines, current] if current else lines
