"""The encoder's crop located in the original image, and maps carried onto either."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from torchvision import transforms

from probe_core.explain.geometry import (
    GeometryError,
    crop_geometry,
    file_size,
    interpolation_matrix,
    on_crop,
    on_file,
    on_image,
)
from probe_core.images import load_image
from tests import badfiles

BUNDLED_LIKE = transforms.Compose(
    [
        transforms.Resize(256, interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.CenterCrop(224),
        transforms.ToTensor(),
        transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    ]
)


def marker_image(width: int, height: int, centre: tuple[int, int]) -> Image.Image:
    pixels = np.full((height, width, 3), 255, dtype=np.uint8)
    row, column = centre
    pixels[row - 10 : row + 10, column - 10 : column + 10] = 0
    return Image.fromarray(pixels)


@pytest.mark.parametrize(
    ("width", "height", "centre"),
    [(400, 300, (150, 120)), (300, 500, (300, 200)), (256, 256, (60, 200))],
)
def test_the_crop_box_maps_input_pixels_back_to_where_they_came_from(width, height, centre):
    image = marker_image(width, height, centre)
    seen = BUNDLED_LIKE(image)[0].numpy()  # the encoder's input, dark where the marker is
    rows, columns = np.nonzero(seen < 0)
    geometry = crop_geometry(BUNDLED_LIKE, (height, width))
    top, left, box_height, box_width = geometry.box
    assert geometry.input_size == (224, 224) and geometry.image_size == (height, width)
    row = top + (rows.mean() + 0.5) * box_height / 224 - 0.5
    column = left + (columns.mean() + 0.5) * box_width / 224 - 0.5
    assert row == pytest.approx(centre[0] - 0.5, abs=1.5)
    assert column == pytest.approx(centre[1] - 0.5, abs=1.5)


def test_a_crop_larger_than_the_image_reaches_past_it():
    geometry = crop_geometry(
        transforms.Compose([transforms.CenterCrop(224), transforms.ToTensor()]), (100, 300)
    )
    top, left, height, width = geometry.box
    assert (top, height) == (-62, 224) and (left, width) == (38, 224)
    assert geometry.pixel_box() == (38, 0, 262, 100)
    assert not geometry.covers_whole_image


def test_a_plain_resize_covers_the_whole_image():
    preprocess = transforms.Compose([transforms.Resize((32, 32)), transforms.ToTensor()])
    geometry = crop_geometry(preprocess, (90, 120))
    assert geometry.box == (0.0, 0.0, 90.0, 120.0) and geometry.covers_whole_image


def test_other_pipelines_are_refused_with_the_reason():
    with pytest.raises(GeometryError, match="cannot be located"):
        crop_geometry(transforms.Compose([transforms.RandomRotation(5)]), (10, 10))
    with pytest.raises(GeometryError):
        crop_geometry(lambda image: image, (10, 10))


def test_maps_spread_over_the_crop_and_are_zero_outside_it():
    geometry = crop_geometry(BUNDLED_LIKE, (300, 400))
    grid = np.zeros((7, 7))
    grid[0, 0] = 1.0
    on_original = on_image(grid, geometry)
    left, top, right, bottom = geometry.pixel_box()
    assert on_original.shape == (300, 400)
    assert on_original[:, :left].sum() == 0 and on_original[:top].sum() == 0
    assert on_original[:, right:].sum() == 0 and on_original[bottom:].sum() == 0
    peak = np.unravel_index(np.argmax(on_original), on_original.shape)
    assert top <= peak[0] < top + 40 and left <= peak[1] < left + 40  # the top-left cell
    crop = on_crop(grid, geometry)
    assert crop.shape == (224, 224) and crop[:16, :16].min() == pytest.approx(1.0)
    # A constant grid stays constant: the interpolation weights sum to 1 inside the box.
    flat = on_image(np.ones((7, 7)), geometry)
    assert np.allclose(flat[top:bottom, left:right], 1.0)


def test_interpolation_follows_cell_centres_like_align_corners_false():
    import torch

    grid = np.random.default_rng(0).random((5, 3))
    rows = interpolation_matrix(40, 5, 0.0, 40.0)
    cols = interpolation_matrix(24, 3, 0.0, 24.0)
    ours = rows @ grid @ cols.T
    theirs = torch.nn.functional.interpolate(
        torch.tensor(grid)[None, None], size=(40, 24), mode="bilinear", align_corners=False
    )[0, 0].numpy()
    np.testing.assert_allclose(ours, theirs, atol=1e-12)


def test_the_file_size_follows_exif_orientation():
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees: shown 10 wide and 30 high
    rotated = badfiles.encode(Image.new("RGB", (30, 10)), "JPEG", exif=exif)
    assert file_size(rotated) == (30, 10) == load_image(rotated).size[::-1]
    assert file_size(b"not an image") is None


def test_a_map_of_a_padded_strip_is_cut_back_to_the_file_s_own_size():
    strip = badfiles.encode(Image.new("RGB", (400, 20), "red"), "PNG")
    padded = load_image(strip)  # more than 16 times wider than high: padded to 400 x 25
    assert padded.size == (400, 25)
    values = np.zeros((25, 400))
    values[2:23] = 1.0
    cut = on_file(values, strip)
    assert cut.shape == (20, 400) and cut.dtype == np.float32
    assert cut.sum() == pytest.approx(1.0, abs=1e-5) and cut.min() > 0
    same = np.ones((20, 400), dtype=np.float32) / 8000
    assert on_file(same, strip) is same  # nothing to cut
