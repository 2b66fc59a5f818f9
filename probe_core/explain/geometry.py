"""Where the encoder's input comes from in the original image, and maps carried between them.

An encoder's preprocessing resizes and centre-crops (``Resize`` then ``CenterCrop`` for the
bundled encoder and open_clip models), so the probe sees only part of the image: the crop.
``crop_geometry`` follows the geometric steps of the preprocessing (read by
``probe_core.preprocessing.compose_steps``, the same reading the extraction uses) and gives
the crop's box in the original image's pixel coordinates. ``resample`` carries a coarse map
(one value per cell of a feature grid, e.g. 7x7) onto any pixel grid by bilinear
interpolation between cell centres, like ``F.interpolate(mode="bilinear",
align_corners=False)``: onto the crop at the encoder's input size, or onto the original image,
where pixels outside the crop get zero.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image
from torchvision import transforms
from torchvision.transforms import functional

from ..preprocessing import compose_steps


class GeometryError(ValueError):
    """A preprocessing whose geometry cannot be followed back onto the image."""


@dataclass(frozen=True)
class CropGeometry:
    """The crop the encoder sees, in the original image's pixel coordinates.

    ``box`` is ``(top, left, height, width)`` as floats; it may reach past the image where the
    preprocessing pads. ``input_size`` is the encoder's input ``(height, width)``.
    """

    image_size: tuple[int, int]  # (height, width) of the original image
    box: tuple[float, float, float, float]
    input_size: tuple[int, int]

    @property
    def covers_whole_image(self) -> bool:
        top, left, height, width = self.box
        image_height, image_width = self.image_size
        return (
            top <= 0 and left <= 0 and top + height >= image_height and left + width >= image_width
        )

    def pixel_box(self) -> tuple[int, int, int, int]:
        """The crop as whole pixels inside the image: ``(left, top, right, bottom)``, for
        drawing its outline (right and bottom exclusive)."""
        top, left, height, width = self.box
        image_height, image_width = self.image_size
        return (
            max(0, round(left)),
            max(0, round(top)),
            min(image_width, round(left + width)),
            min(image_height, round(top + height)),
        )


def crop_geometry(preprocess: Callable, image_size: tuple[int, int]) -> CropGeometry:
    """The crop of an image of ``image_size`` (height, width) that ``preprocess`` hands the
    encoder. Raises ``GeometryError`` for a pipeline other than RGB conversions, ``Resize``,
    ``CenterCrop``, ``ToTensor`` and ``Normalize``."""
    steps = compose_steps(preprocess)
    if steps is None:
        raise GeometryError(
            f"the preprocessing is not a plain torchvision pipeline of Resize, CenterCrop,"
            f" ToTensor and Normalize, so its crop cannot be located: {preprocess!r}"
        )
    height, width = (int(side) for side in image_size)
    current = (float(height), float(width))
    top, left, box_height, box_width = 0.0, 0.0, float(height), float(width)
    size = (height, width)
    for step in steps[0]:
        if isinstance(step, transforms.Resize):
            requested = [step.size] if isinstance(step.size, int) else list(step.size)
            size = tuple(functional._compute_resized_output_size(size, requested, step.max_size))
            current = (float(size[0]), float(size[1]))
        elif isinstance(step, transforms.CenterCrop):
            crop_height, crop_width = step.size
            offset_top = _crop_offset(size[0], crop_height)
            offset_left = _crop_offset(size[1], crop_width)
            scale_y, scale_x = box_height / current[0], box_width / current[1]
            top += offset_top * scale_y
            left += offset_left * scale_x
            box_height, box_width = crop_height * scale_y, crop_width * scale_x
            size = (crop_height, crop_width)
            current = (float(crop_height), float(crop_width))
    return CropGeometry((height, width), (top, left, box_height, box_width), size)


def _crop_offset(size: int, crop: int) -> int:
    """Where torchvision's ``center_crop`` starts along one axis: it pads a side shorter than
    the crop by ``(crop - size) // 2`` before it, else starts at ``round((size - crop) / 2)``."""
    if size < crop:
        return -((crop - size) // 2)
    return round((size - crop) / 2.0)


def interpolation_matrix(n_out: int, n_cells: int, start: float, length: float) -> np.ndarray:
    """(n_out, n_cells) weights that carry ``n_cells`` values spanning ``[start, start +
    length)`` onto pixels ``0 .. n_out - 1`` bilinearly (cell centres, clamped at the ends,
    as ``align_corners=False``); a pixel whose centre lies outside the span gets zeros."""
    centres = np.arange(n_out, dtype=np.float64) + 0.5
    position = (centres - start) / length * n_cells - 0.5
    inside = (centres >= start) & (centres < start + length)
    position = np.clip(position, 0, n_cells - 1)
    low = np.floor(position).astype(int)
    high = np.minimum(low + 1, n_cells - 1)
    weight_high = position - low
    matrix = np.zeros((n_out, n_cells))
    rows = np.arange(n_out)
    np.add.at(matrix, (rows, low), 1 - weight_high)
    np.add.at(matrix, (rows, high), weight_high)
    matrix[~inside] = 0
    return matrix


def resample(grid: np.ndarray, size: tuple[int, int], box: tuple[float, float, float, float]):
    """``grid`` (cells_y, cells_x) spread bilinearly over ``box`` (top, left, height, width)
    of a ``size`` (height, width) pixel grid; zero outside the box. float64."""
    grid = np.asarray(grid, dtype=np.float64)
    top, left, height, width = box
    rows = interpolation_matrix(size[0], grid.shape[0], top, height)
    cols = interpolation_matrix(size[1], grid.shape[1], left, width)
    return rows @ grid @ cols.T


def on_crop(grid: np.ndarray, geometry: CropGeometry) -> np.ndarray:
    """``grid`` at the encoder's input size (the crop, as the encoder saw it)."""
    height, width = geometry.input_size
    return resample(grid, (height, width), (0.0, 0.0, float(height), float(width)))


def on_image(grid: np.ndarray, geometry: CropGeometry) -> np.ndarray:
    """``grid`` over the original image: spread over the crop's box, zero outside it."""
    return resample(grid, geometry.image_size, geometry.box)


EXIF_ORIENTATION = 0x0112
TRANSPOSED_ORIENTATIONS = {5, 6, 7, 8}  # rotated by 90 degrees: width and height swap


def file_size(data: bytes) -> tuple[int, int] | None:
    """An image file's (height, width) as the studio shows it (EXIF orientation applied),
    from its header; None when the header cannot be read."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            orientation = None
            with contextlib.suppress(Exception):  # a broken EXIF block: shown unrotated
                orientation = image.getexif().get(EXIF_ORIENTATION)
    except Exception:
        return None
    if orientation in TRANSPOSED_ORIENTATIONS:
        width, height = height, width
    return height, width


def on_file(values: np.ndarray, data: bytes) -> np.ndarray:
    """A map over the decoded image, at the file's own height x width: the studio pads an
    image more than 16 times longer than wide, centred, before the encoder sees it
    (``probe_core.images``); the padding is cut away and the rest renormalised to sum 1."""
    own = file_size(data)
    if own is None or tuple(values.shape) == own:
        return values
    height, width = own
    top = (values.shape[0] - height) // 2
    left = (values.shape[1] - width) // 2
    if top < 0 or left < 0:
        return values
    cut = values[top : top + height, left : left + width].astype(np.float64)
    total = cut.sum()
    cut = cut / total if total > 0 else np.full(cut.shape, 1.0 / cut.size)
    return cut.astype(np.float32)
