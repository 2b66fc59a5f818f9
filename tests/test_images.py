"""load_image: any supported bytes become an RGB image; anything else a specific reason."""

from __future__ import annotations

import pytest
from PIL import Image

from probe_core.images import MAX_ASPECT_RATIO, ImageLoadError, load_image
from tests import badfiles
from tests.badfiles import encode

WHITE = (255, 255, 255)
RED = (255, 0, 0)
BLUE = (0, 0, 255)


def load_error(data: bytes) -> str:
    """The reason load_image gives for ``data``, lower-cased."""
    with pytest.raises(ImageLoadError) as caught:
        load_image(data)
    return str(caught.value).lower()


def colours(image: Image.Image) -> set[tuple[int, ...]]:
    """The distinct pixel values of an image with at most 256 of them."""
    return {colour for _, colour in image.getcolors()}


def close_to(pixel, expected, tolerance: int = 8) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(pixel, expected, strict=True))


# --- unusable bytes: each gives its own reason ------------------------------------------------


def test_corrupt_jpeg_data_is_reported_as_corrupt():
    reason = load_error(badfiles.corrupt_jpeg_bytes())
    assert "corrupt" in reason or "truncated" in reason
    assert "not an image" not in reason


def test_png_cut_in_half_is_reported_as_truncated():
    assert "truncated" in load_error(badfiles.truncated_png_bytes())


def test_zero_bytes_are_reported_as_empty():
    assert "empty" in load_error(b"")


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (badfiles.text_bytes(), "text"),
        (badfiles.html_bytes(), "html"),
        (badfiles.pdf_bytes(), "pdf"),
    ],
    ids=["text", "html", "pdf"],
)
def test_non_image_content_is_not_an_image_and_names_what_it_looks_like(data, kind):
    reason = load_error(data)
    assert "not an image" in reason
    assert kind in reason


def test_decompression_bomb_is_refused_before_decoding():
    reason = load_error(badfiles.decompression_bomb_png_bytes(20_000, 20_000))
    assert "too large" in reason
    assert "decompression" in reason


def test_pillow_pixel_limit_is_respected(monkeypatch):
    data = encode(Image.new("RGB", (200, 200)), "PNG")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)  # 40_000 pixels > 2 x limit
    assert "too large" in load_error(data)


# --- awkward but valid images ------------------------------------------------------------------


def assert_rgb(image: Image.Image, size: tuple[int, int]) -> None:
    assert isinstance(image, Image.Image)
    assert image.mode == "RGB"
    assert image.size == size


def test_png_bytes_load_whatever_the_file_was_called():
    # A PNG saved as "photo.jpg": the content decides, not the name.
    image = load_image(encode(Image.new("RGB", (12, 7), (10, 20, 30)), "PNG"))
    assert_rgb(image, (12, 7))
    assert image.getpixel((0, 0)) == (10, 20, 30)


def test_cmyk_jpeg_becomes_rgb_with_the_right_colour():
    image = load_image(badfiles.cmyk_jpeg_bytes((30, 20)))
    assert_rgb(image, (30, 20))
    assert close_to(image.getpixel((15, 10)), RED, tolerance=24)


def test_16_bit_grayscale_maps_the_full_range_to_8_bits():
    image = load_image(badfiles.gray16_png_bytes())
    assert_rgb(image, (16, 16))
    assert image.getpixel((0, 0)) == (255, 255, 255)  # 65535
    assert image.getpixel((1, 0)) == (0, 0, 0)  # 0
    assert close_to(image.getpixel((5, 5)), (128, 128, 128), tolerance=1)  # 32768, not clipped


def test_palette_transparency_is_composited_on_white():
    image = load_image(badfiles.palette_png_with_transparency_bytes())
    assert_rgb(image, (10, 10))
    assert image.getpixel((0, 0)) == WHITE  # transparent red index
    assert image.getpixel((5, 5)) == BLUE  # opaque index keeps its colour


def test_fully_transparent_rgba_becomes_white():
    image = load_image(badfiles.transparent_rgba_png_bytes())
    assert_rgb(image, (10, 10))
    assert colours(image) == {WHITE}


def test_grayscale_with_alpha_becomes_rgb_on_white():
    image = load_image(badfiles.la_png_bytes())
    assert_rgb(image, (10, 10))
    assert image.getpixel((0, 0)) == (0, 0, 0)  # opaque black
    assert image.getpixel((9, 0)) == WHITE  # transparent


def test_one_bit_image_becomes_black_and_white_rgb():
    image = load_image(badfiles.one_bit_png_bytes())
    assert_rgb(image, (10, 10))
    assert image.getpixel((0, 0)) == (0, 0, 0)
    assert image.getpixel((1, 1)) == WHITE


def test_exif_orientation_is_applied():
    image = load_image(badfiles.exif_rotated_jpeg_bytes((40, 20)))
    assert_rgb(image, (20, 40))
    assert close_to(image.getpixel((10, 20)), RED)


def test_animated_gif_gives_its_first_frame():
    image = load_image(badfiles.animated_gif_bytes())
    assert_rgb(image, (10, 10))
    assert image.getpixel((5, 5)) == RED


def test_multipage_tiff_gives_its_first_page():
    image = load_image(badfiles.multipage_tiff_bytes())
    assert_rgb(image, (10, 10))
    assert image.getpixel((5, 5)) == RED


def test_single_pixel_image_loads():
    image = load_image(encode(Image.new("RGB", (1, 1), (1, 2, 3)), "PNG"))
    assert_rgb(image, (1, 1))
    assert image.getpixel((0, 0)) == (1, 2, 3)


@pytest.mark.parametrize("size", [(1, 10_000), (10_000, 1)], ids=["tall", "wide"])
def test_extreme_strip_is_padded_on_white_to_the_maximum_aspect_ratio(size):
    image = load_image(encode(Image.new("L", size, 0), "PNG"))
    assert image.mode == "RGB"
    long_side, short_side = max(image.size), min(image.size)
    assert long_side == 10_000  # the long side is kept, not resized
    assert long_side <= MAX_ASPECT_RATIO * short_side
    assert short_side < 2 * 10_000 / MAX_ASPECT_RATIO  # padded no more than needed
    # The strip itself is centred; the padding is white.
    centre = (image.size[0] // 2, image.size[1] // 2)
    assert image.getpixel(centre) == (0, 0, 0)
    assert image.getpixel((0, 0)) == WHITE


def test_ordinary_aspect_ratios_are_not_padded():
    image = load_image(encode(Image.new("RGB", (16 * 10, 10), RED), "PNG"))
    assert image.size == (160, 10)
    assert colours(image) == {RED}


def test_a_file_with_an_image_signature_but_broken_data_is_called_corrupt_not_foreign():
    with pytest.raises(ImageLoadError, match=r"corrupt PNG image"):
        load_image(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
