"""Small previews of dataset images, as PIL images or data URIs for HTML and hover labels."""

from __future__ import annotations

import base64
import io

from PIL import Image

from .dataset import ImageItem
from .images import ImageLoadError, load_image


def thumbnail(item: ImageItem, size: int = 96) -> Image.Image | None:
    """A thumbnail no larger than ``size`` px, or None when the image cannot be decoded."""
    try:
        image = load_image(item.read_bytes())
    except (ImageLoadError, OSError):
        return None
    image.thumbnail((size, size))
    return image


def to_data_uri(image: Image.Image, quality: int = 80) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def thumbnail_uri(item: ImageItem, size: int = 64) -> str | None:
    image = thumbnail(item, size)
    return to_data_uri(image) if image is not None else None
