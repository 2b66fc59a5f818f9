"""The encoder's own preprocessing, split so that batches stay cheap: pixels per image,
scaling and normalisation per batch.

A torchvision ``Compose`` of RGB conversions, ``Resize``/``CenterCrop``, ``ToTensor`` and
``Normalize`` does two kinds of work. The geometry needs each Pillow image; the float
conversion and normalisation are the same element-wise arithmetic for every pixel. Split at
``ToTensor``, each image is decoded and resized to uint8 pixels (in a decoding thread or
worker, which never calls into torch and so never competes with the forward pass's thread
pool), and a whole batch is scaled and normalised at once on the encoder's device (on a GPU,
a quarter of the bytes cross the bus). A ``Resize`` then ``CenterCrop`` resizes only the
cropped region where that provably gives the same pixels (``crop_box``); otherwise the crop
is a view, not a copy. The tensors are bit-identical to the per-image transform's
(tests/test_preprocessing.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from fractions import Fraction
from functools import lru_cache

import numpy as np
import torch
from PIL import Image
from torchvision import transforms
from torchvision.transforms import functional

RGB_STEPS = ("ToRGB", "MaybeConvertMode", "_convert_to_rgb")
_TO_TENSOR = ("ToTensor", "MaybeToTensor")
# Pillow filters whose weights come from libImaging/Resample.c's precompute_coeffs (NEAREST
# takes another path).
_CONVOLUTION_FILTERS = {
    Image.Resampling.BOX,
    Image.Resampling.BILINEAR,
    Image.Resampling.HAMMING,
    Image.Resampling.BICUBIC,
    Image.Resampling.LANCZOS,
}


def step_name(step: object) -> str:
    return getattr(step, "__name__", None) or type(step).__name__


def compose_steps(preprocess: Callable) -> tuple[list, list[transforms.Normalize]] | None:
    """The ``Resize``/``CenterCrop`` steps before ``ToTensor`` and the ``Normalize`` steps
    after it, of a torchvision ``Compose`` of those and RGB conversions (before ``ToTensor``,
    where images are RGB already); None for any other pipeline."""
    geometry: list = []
    normalizes: list[transforms.Normalize] = []
    scaled = False
    for step in getattr(preprocess, "transforms", None) or [None]:
        name = step_name(step)
        if name in RGB_STEPS and not scaled:
            continue  # images come decoded to RGB (images.load_image)
        if isinstance(step, (transforms.Resize, transforms.CenterCrop)) and not scaled:
            geometry.append(step)
        elif name in _TO_TENSOR and not scaled:
            scaled = True
        elif isinstance(step, transforms.Normalize) and scaled:
            normalizes.append(step)
        else:
            return None
    return (geometry, normalizes) if scaled else None


@lru_cache(maxsize=4096)
def crop_box(size_in: int, size_out: int, crop: int) -> tuple[float, float] | None:
    """The source interval ``(x0, x1)`` whose Pillow resize to ``crop`` pixels gives exactly
    the centre ``crop`` pixels of a resize to ``size_out``, along one axis; None when that is
    not certain.

    Pillow (libImaging/Resample.c, ``precompute_coeffs``) gives output pixel ``i`` the filter
    weights and source range of ``center = in0 + (i + 0.5) * scale``, with ``in0``, ``in1``
    float32 and ``scale = (double)(in1 - in0) / out``. The interval is used only when every
    such number is exact, so that each pixel of the crop gets the very same weights (with or
    without a fused multiply-add); and only for a resized axis, since Pillow skips the pass
    over an axis that keeps its size."""
    if size_in == size_out or not 0 < crop <= size_out or size_in >= 2**24:
        return None
    offset = round((size_out - crop) / 2.0)  # as torchvision's center_crop
    x0 = Fraction(offset * size_in, size_out)
    x1 = Fraction((offset + crop) * size_in, size_out)
    if Fraction(float(np.float32(x0))) != x0 or Fraction(float(np.float32(x1))) != x1:
        return None
    width = np.float32(x1) - np.float32(x0)  # float32 arithmetic, as in C
    if Fraction(float(width)) != x1 - x0:
        return None
    scale = size_in / size_out
    if float(width) / crop != scale:
        return None
    start, exact_scale = float(x0), Fraction(scale)
    for i in range(crop):
        full = (i + offset + 0.5) * scale
        with_fma = float(x0 + (i + Fraction(1, 2)) * exact_scale)  # one rounding
        if start + (i + 0.5) * scale != full or with_fma != full:
            return None
    return start, float(x1)


_FUSION_CHECKED: dict[str, bool] = {}


def _horizontal_pass_first(size_in: tuple[int, int], size_out: tuple[int, int]) -> bool:
    """Whether Pillow resamples rows before columns: older versions always do; Pillow 13's
    ``ImagingResampleInner`` does unless the height shrinks by more than twice as many pixels
    as the width. The order decides where the 8-bit intermediate is rounded, so a fused crop
    is used only where both resizes go rows first (and ``_fusion_checks_out`` tests this
    Pillow at construction)."""
    (width_in, height_in), (width_out, height_out) = size_in, size_out
    shrink = height_in - height_out
    return not (shrink > 0 and shrink > (width_in - width_out) * 2)


class SplitPreprocess:
    """``pixels(image)`` per image, then ``batch(pixels, device)``: the same tensors as
    ``torch.stack([preprocess(image) for image in images])``."""

    def __init__(
        self,
        geometry: list[Callable[[Image.Image], Image.Image]],
        crop: transforms.CenterCrop | None,
        normalize: transforms.Normalize | None,
    ):
        self.geometry = list(geometry)
        self.crop = crop
        self.normalize = normalize
        self.resize = None  # a last Resize before the crop, which may be fused with it
        last = self.geometry[-1] if self.geometry else None
        if (
            crop is not None
            and isinstance(last, transforms.Resize)
            and functional.pil_modes_mapping.get(last.interpolation) in _CONVOLUTION_FILTERS
        ):
            self.resize = self.geometry.pop()
            if not self._fusion_checks_out():
                self.geometry.append(self.resize)
                self.resize = None

    @classmethod
    def from_pil(cls, preprocess: Callable) -> SplitPreprocess | None:
        """The split of a torchvision ``Compose`` (``compose_steps``, at most one
        ``Normalize``), or None when it has any other step."""
        steps = compose_steps(preprocess)
        if steps is None or len(steps[1]) > 1:
            return None
        geometry, normalizes = steps
        normalize = normalizes[0] if normalizes else None
        if normalize is not None and not torch.as_tensor(normalize.std, dtype=torch.float32).all():
            return None  # a zero std: the step itself raises, image by image
        ends_in_crop = geometry and isinstance(geometry[-1], transforms.CenterCrop)
        return cls(geometry, geometry.pop() if ends_in_crop else None, normalize)

    def pixels(self, image: Image.Image) -> np.ndarray:
        """The image after the geometric steps, as uint8 (height, width, 3) pixels."""
        if image.mode != "RGB":
            image = image.convert("RGB")
        for step in self.geometry:
            image = step(image)
        if self.resize is not None:
            fused = self._resized_crop(image)
            if fused is not None:
                return fused
            image = self.resize(image)
        if self.crop is not None:
            height, width = self.crop.size
            if image.height < height or image.width < width:  # the crop pads: let it
                return np.asarray(self.crop(image))
            top = round((image.height - height) / 2.0)  # as torchvision's center_crop
            left = round((image.width - width) / 2.0)
            return np.asarray(image)[top : top + height, left : left + width]
        return np.asarray(image)

    def _fusion_checks_out(self) -> bool:
        """Whether this Pillow's fused resize and crop gives the two steps' pixels on a few
        random images whose crop fuses (so a Pillow that computes otherwise is not trusted);
        checked once per process and pair of steps."""
        key = f"{self.resize!r}|{self.crop!r}"
        if key not in _FUSION_CHECKED:
            rng = np.random.default_rng(0)
            tried, agree = 0, True
            for side in (17, 64, 100, 333):
                image = Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8))
                fused = self._resized_crop(image)
                if fused is not None:
                    tried += 1
                    agree &= np.array_equal(fused, np.asarray(self.crop(self.resize(image))))
            _FUSION_CHECKED[key] = tried > 0 and agree
        return _FUSION_CHECKED[key]

    def _resized_crop(self, image: Image.Image) -> np.ndarray | None:
        """Resize and centre crop in one Pillow call on the cropped region, if exact."""
        size = self.resize.size
        height, width = functional._compute_resized_output_size(
            (image.height, image.width),
            [size] if isinstance(size, int) else list(size),
            self.resize.max_size,
        )
        crop_height, crop_width = self.crop.size
        across = crop_box(image.width, width, crop_width)
        down = crop_box(image.height, height, crop_height)
        if across is None or down is None:
            return None
        if not (
            _horizontal_pass_first(image.size, (width, height))
            and _horizontal_pass_first(image.size, (crop_width, crop_height))
        ):
            return None
        box = (across[0], down[0], across[1], down[1])
        resample = functional.pil_modes_mapping[self.resize.interpolation]
        return np.asarray(image.resize((crop_width, crop_height), resample, box=box))

    def batch(
        self,
        pixels: Sequence[np.ndarray] | np.ndarray | torch.Tensor,
        device: torch.device | None = None,
        channels_last: bool = False,
    ) -> torch.Tensor:
        """Float (n, 3, height, width) tensors on ``device`` from same-size pixels (a list, or
        stacked as (n, height, width, 3) uint8): ``ToTensor``'s cast and ``/ 255``, then
        ``Normalize``'s ``- mean`` and ``/ std``, on ``device``, the same IEEE arithmetic as
        the per-image steps. ``channels_last``: in NHWC memory order."""
        if not isinstance(pixels, torch.Tensor):
            pixels = torch.from_numpy(
                pixels if isinstance(pixels, np.ndarray) else np.stack(pixels)
            )
        stacked = pixels
        if device is not None:
            stacked = stacked.to(device, non_blocking=True)
        if not channels_last:
            scaled = torch.div(stacked.permute(0, 3, 1, 2).contiguous(), 255)
            if self.normalize is None:
                return scaled
            # in place on the fresh tensor: the step's own arithmetic, without its copy
            mean, std = self.normalize.mean, self.normalize.std
            return functional.normalize(scaled, mean, std, inplace=True)
        scaled = torch.div(stacked, 255)  # ToTensor's cast and division, in one pass
        if self.normalize is not None:
            self._normalize_interleaved(scaled)
        return scaled.permute(0, 3, 1, 2)  # a channels-last view of the NHWC tensor

    def _normalize_interleaved(self, pixels: torch.Tensor) -> None:
        """``Normalize``'s ``- mean`` then ``/ std`` in place on (n, height, width, 3) values.

        The per-channel constants are tiled to a row of 16 pixels, so that the innermost loop
        runs over 48 contiguous values rather than 3 (about 3x faster on a CPU); each value
        gets the same two IEEE operations as in the step itself."""
        channels = pixels.shape[-1]
        pixels_per_row = math.gcd(pixels.numel() // channels, 16)
        rows = pixels.view(-1, channels * pixels_per_row)
        mean, std = (
            torch.as_tensor(values, dtype=pixels.dtype, device=pixels.device).repeat(pixels_per_row)
            for values in (self.normalize.mean, self.normalize.std)
        )
        rows.sub_(mean).div_(std)


class TensorPreprocess:
    """The encoder's PIL preprocessing replayed on decoded uint8 CHW tensors (e.g. on the GPU).

    Built from a torchvision ``Compose`` of Resize / CenterCrop / (Maybe)ToTensor /
    Normalize and RGB conversions (``compose_steps``); ``from_pil`` returns None otherwise.
    """

    def __init__(self, steps: list[Callable[[torch.Tensor], torch.Tensor]], description: str):
        self.steps = steps
        self.description = description

    @classmethod
    def from_pil(cls, preprocess: Callable) -> TensorPreprocess | None:
        steps = compose_steps(preprocess)
        if steps is None:
            return None
        geometry, normalizes = steps
        return cls([*geometry, _to_unit_float, *normalizes], repr(preprocess))

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        for step in self.steps:
            image = step(image)
        return image


def _to_unit_float(image: torch.Tensor) -> torch.Tensor:
    return image.to(torch.float32) / 255.0
