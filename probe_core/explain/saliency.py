"""Saliency of the probe's decision: where in the image the evidence for a class comes from.

The quantity explained is the probe's logit for one class, ``coef[c] @ (f / |f|) +
intercept[c]`` (the linear head on top of the L2-normalised embedding ``f``), differentiated
through the frozen encoder:

- **CNNs: Grad-CAM** (Selvaraju et al., 2017) on the last convolutional stage, the last
  layer whose output is a spatial feature map (for the bundled EfficientNet-Lite0, the
  activation after ``conv_head``, 7x7 at 224 pixels): each channel weighted by the mean
  gradient of the logit over the map, summed over channels, negative values set to zero.
- **Vision transformers: gradient x input on the patch tokens** entering the last
  transformer block: per patch, the sum over the token's features of token x gradient,
  negative values set to zero. A model is treated as a transformer when its only spatial map
  is the patch embedding (a convolution whose stride equals its kernel) and a stack of
  identical blocks follows it; the patch tokens are the last ``rows x columns`` tokens (after
  the class token and any register tokens).
- **Weight-free baselines** (no parameters) have nothing to explain: ``SaliencyUnavailable``.

The map runs through the encoder's own preprocessing, so it covers the crop the probe saw;
``geometry`` carries it back onto the original image (zero outside the crop), where it is
non-negative and sums to 1 (``SaliencyMap.image``), as does its copy at the encoder's input
size (``SaliencyMap.crop``). When nothing in the crop speaks for the class (every value is
zero), both are uniform over the crop and ``no_positive_evidence`` is set.

Gradients need the plain fp32 model: ``SaliencyModel.from_encoder`` keeps its own copy (a
copy of the encoder's model when that runs plain fp32, otherwise the encoder loaded again with
``precision="fp32"``, since int8 layers and folded batch norms are not the model the
gradients should describe); ``reloaded_fp32`` says which.
"""

from __future__ import annotations

import contextlib
import copy
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..images import load_image
from ..preprocessing import SplitPreprocess
from ..probe import ProbeWeights
from .geometry import CropGeometry, GeometryError, crop_geometry, on_crop, on_image

GRAD_CAM = "grad-cam"
GRADIENT_X_INPUT = "gradient-x-input"
PROBE_IMAGE_SIZE = (256, 256)  # any size: only the encoder's input size is read from it


class SaliencyUnavailable(Exception):
    """The encoder has no saliency (weight-free, or an architecture not understood)."""


@dataclass(frozen=True)
class SaliencyMethod:
    """How a map is computed: ``kind`` (``grad-cam`` or ``gradient-x-input``) at ``layer``."""

    kind: str
    layer: str  # the module's name in the encoder's model
    grid: tuple[int, int]  # cells of the map at the encoder's input size

    @property
    def name(self) -> str:
        """For people, e.g. 'Grad-CAM (last convolutional stage)'."""
        if self.kind == GRAD_CAM:
            return "Grad-CAM (last convolutional stage)"
        return "gradient x input (patch tokens entering the last transformer block)"


@dataclass(frozen=True)
class SaliencyMap:
    """Where the evidence for ``class_name`` comes from in one image.

    ``image``: float32 (height, width) of the original image, non-negative, summing to 1, zero
    outside the crop. ``crop``: the same at the encoder's input size (the crop the probe saw).
    ``grid``: the map as computed, one value per cell (not normalised). ``probabilities``: the
    probe's class probabilities for the image through the fp32 model.
    """

    name: str
    class_name: str
    class_index: int
    class_names: tuple[str, ...]
    probabilities: np.ndarray
    method: SaliencyMethod
    geometry: CropGeometry
    grid: np.ndarray
    crop: np.ndarray
    image: np.ndarray
    no_positive_evidence: bool

    @property
    def predicted(self) -> str:
        return self.class_names[int(np.argmax(self.probabilities))]

    @property
    def probability(self) -> float:
        """The probe's probability of the explained class."""
        return float(self.probabilities[self.class_index])


class SaliencyModel:
    """A private fp32 copy of an encoder's model, for gradients, with its preprocessing.

    Calls are serialised (a lock), since the hooks that read the model's activations belong to
    the model for the length of one call.
    """

    def __init__(
        self,
        model: nn.Module,
        preprocess: Callable,
        device: torch.device | str = "cpu",
        *,
        encoder_id: str = "",
        reloaded_fp32: bool = False,
    ):
        self.model = model.eval()
        self.preprocess = preprocess
        self.device = torch.device(device)
        self.encoder_id = encoder_id
        self.reloaded_fp32 = reloaded_fp32
        self._lock = threading.Lock()
        self._method: SaliencyMethod | None = None
        self._dim = 0  # the embedding's size, found with the method
        self._split = SplitPreprocess.from_pil(preprocess)
        self.unavailable_reason = self._check()

    @classmethod
    def from_encoder(cls, encoder) -> SaliencyModel:
        """The encoder's model in plain fp32 on its device: a copy when the encoder already
        runs that way, else the encoder loaded again with ``precision="fp32"``."""
        plain = encoder.path.name == "fp32" and encoder.dtype == torch.float32
        model = None
        if plain:
            with contextlib.suppress(Exception):  # e.g. a module that cannot be deep-copied
                model = copy.deepcopy(encoder.model)
        if model is None and _has_parameters(encoder.model):
            from ..encoders import load_encoder

            model = load_encoder(encoder.name, device=str(encoder.device), precision="fp32").model
            plain = False
        if model is None:  # weight-free: nothing to copy or reload
            model = encoder.model
        return cls(
            model,
            encoder.preprocess,
            encoder.device,
            encoder_id=encoder.encoder_id,
            reloaded_fp32=not plain and _has_parameters(encoder.model),
        )

    @property
    def available(self) -> bool:
        return self.unavailable_reason is None

    @property
    def method(self) -> SaliencyMethod:
        """The method for this model, found on first use by one forward pass."""
        if self.unavailable_reason is not None:
            raise SaliencyUnavailable(self.unavailable_reason)
        if self._method is None:
            with self._lock:
                self._method, self._dim = _detect_method(
                    self.model, self._input_size(), self.device
                )
        return self._method

    def geometry(self, image: Image.Image) -> CropGeometry:
        return crop_geometry(self.preprocess, (image.height, image.width))

    def pixels(self, image: Image.Image) -> np.ndarray:
        """The crop the encoder sees, as uint8 (height, width, 3) pixels."""
        return self._split.pixels(image)

    def probabilities(self, pixels: list[np.ndarray], weights: ProbeWeights) -> np.ndarray:
        """The probe's class probabilities for crops given as uint8 pixels (fp32 model)."""
        with self._lock, torch.inference_mode():
            features = self.model(self._split.batch(pixels, self.device)).float()
            unit = torch.nn.functional.normalize(features, dim=-1)
        return weights.predict_proba(unit.cpu().numpy().astype(np.float32))

    def explain(
        self,
        image: Image.Image | bytes,
        weights: ProbeWeights,
        class_name: str | None = None,
        *,
        name: str = "",
    ) -> SaliencyMap:
        """The saliency of ``class_name`` (by default the predicted class) for one image."""
        method = self.method
        if isinstance(image, bytes | bytearray):
            image = load_image(bytes(image))
        image = image.convert("RGB")
        if class_name is not None and class_name not in weights.class_names:
            raise ValueError(
                f"unknown class {class_name!r}; the probe's classes are"
                f" {', '.join(weights.class_names)}"
            )
        if weights.coef.shape[1] != self._dim:
            raise ValueError(
                f"the probe takes {weights.coef.shape[1]}-d embeddings, this encoder gives"
                f" {self._dim}-d"
            )
        geometry = self.geometry(image)
        batch = self._split.batch([self.pixels(image)], self.device)
        coef = torch.as_tensor(weights.coef, dtype=torch.float32, device=self.device)
        intercept = torch.as_tensor(weights.intercept, dtype=torch.float32, device=self.device)
        with self._lock:
            grid, logits = _run(self.model, method, batch, coef, intercept, class_name, weights)
        probabilities = torch.softmax(logits.double(), dim=-1).cpu().numpy()
        index = _class_index(weights, class_name, logits)
        return _as_map(name, weights, index, probabilities, method, geometry, grid)

    def _input_size(self) -> tuple[int, int]:
        return crop_geometry(self.preprocess, PROBE_IMAGE_SIZE).input_size

    def _check(self) -> str | None:
        if getattr(self.model, "keeps_float32", False) or not _has_parameters(self.model):
            return (
                "a weight-free encoder has no saliency: its features are fixed functions of"
                " the pixels, with no learned layers whose gradients would show where the"
                " evidence comes from"
            )
        if self._split is None:
            return (
                "the encoder's preprocessing is not a plain torchvision pipeline (Resize,"
                " CenterCrop, ToTensor, Normalize), so its crop cannot be mapped back onto the"
                " image"
            )
        try:
            crop_geometry(self.preprocess, PROBE_IMAGE_SIZE)
        except GeometryError as error:
            return str(error)
        return None


def _has_parameters(model: nn.Module) -> bool:
    return any(parameter.numel() for parameter in model.parameters())


def _class_index(weights: ProbeWeights, class_name: str | None, logits: torch.Tensor) -> int:
    """The explained class: ``class_name``, or the predicted class when it is None."""
    if class_name is None:
        return int(torch.argmax(logits))
    return list(weights.class_names).index(class_name)


def _as_map(
    name: str,
    weights: ProbeWeights,
    index: int,
    probabilities: np.ndarray,
    method: SaliencyMethod,
    geometry: CropGeometry,
    grid: np.ndarray,
) -> SaliencyMap:
    grid = np.maximum(np.nan_to_num(grid.astype(np.float64)), 0.0)
    empty = not grid.sum() > 0
    if empty:
        grid = np.ones_like(grid)
    return SaliencyMap(
        name=name,
        class_name=weights.class_names[index],
        class_index=index,
        class_names=tuple(weights.class_names),
        probabilities=probabilities.astype(np.float64),
        method=method,
        geometry=geometry,
        grid=grid.astype(np.float32),
        crop=_unit_sum(on_crop(grid, geometry)),
        image=_unit_sum(on_image(grid, geometry)),
        no_positive_evidence=empty,
    )


def _unit_sum(values: np.ndarray) -> np.ndarray:
    values = np.maximum(values, 0.0)
    total = values.sum()
    if total <= 0:  # the crop covers no pixel centre of a tiny image: spread over all
        values = np.ones_like(values)
        total = values.sum()
    return (values / total).astype(np.float32)


# ----------------------------------------------------------------------------- the methods


@dataclass
class _Record:
    name: str
    module: nn.Module
    shape: tuple[int, ...]


def _leaf_modules(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    for name, module in model.named_modules():
        if not any(True for _ in module.children()):
            yield name, module


def _detect_method(
    model: nn.Module, input_size: tuple[int, int], device: torch.device
) -> tuple[SaliencyMethod, int]:
    """Grad-CAM on the last spatial feature map, or gradient x input on the patch tokens
    when the only spatial map is a ViT's patch embedding; and the embedding's size."""
    records: list[_Record] = []

    def recorder(name: str, module: nn.Module):
        def hook(_module, _inputs, output):
            if isinstance(output, torch.Tensor):
                records.append(_Record(name, module, tuple(output.shape)))

        return hook

    blocks = _block_stacks(model)
    entered: dict[str, int] = {}

    def block_hook(name: str):
        def hook(_module, args, kwargs):
            tokens = _tokens_argument(args, kwargs)
            if tokens is not None:
                entered[name] = tokens.dim()

        return hook

    handles = [m.register_forward_hook(recorder(n, m)) for n, m in _leaf_modules(model)]
    handles += [
        module.register_forward_pre_hook(block_hook(name), with_kwargs=True)
        for name, module in blocks
    ]
    try:
        with torch.inference_mode():
            dim = int(model(torch.zeros(1, 3, *input_size, device=device)).shape[-1])
    finally:
        for handle in handles:
            handle.remove()
    spatial = [r for r in records if _is_feature_map(r.shape, input_size)]
    if not spatial:
        raise SaliencyUnavailable(
            "the encoder has no spatial feature map to explain (no convolutional stage or"
            " patch embedding was found)"
        )
    last = spatial[-1]
    if _is_patch_embedding(last.module):
        token_blocks = [name for name, _ in blocks if entered.get(name) == 3]
        if not token_blocks:
            raise SaliencyUnavailable(
                f"the encoder embeds patches ({last.name}) but no stack of transformer blocks"
                " taking tokens was found after it"
            )
        return SaliencyMethod(GRADIENT_X_INPUT, token_blocks[-1], last.shape[2:]), dim
    return SaliencyMethod(GRAD_CAM, last.name, last.shape[2:]), dim


def _is_feature_map(shape: tuple[int, ...], input_size: tuple[int, int]) -> bool:
    """A (batch, channels, rows, columns) map of the image: at least 2x2, no larger than the
    input and of its aspect ratio (which rules out attention's (batch, heads, tokens,
    features) tensors)."""
    if len(shape) != 4:
        return False
    rows, columns = shape[2:]
    height, width = input_size
    return (
        2 <= rows <= height
        and 2 <= columns <= width
        and abs(rows * width - columns * height) <= max(height, width)
    )


def _is_patch_embedding(module: nn.Module) -> bool:
    return (
        isinstance(module, nn.Conv2d)
        and module.kernel_size == module.stride
        and min(module.stride) > 1
    )


def _block_stacks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The last block of every stack of two or more identical modules (a transformer's
    blocks), by name, the stack with the most parameters last."""
    stacks = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.ModuleList | nn.Sequential):
            continue
        children = list(module.named_children())
        if len(children) < 2 or len({type(child) for _, child in children}) != 1:
            continue
        size = sum(p.numel() for p in module.parameters())
        last_name, last = children[-1]
        stacks.append((size, f"{name}.{last_name}" if name else last_name, last))
    stacks.sort(key=lambda stack: stack[0])
    return [(name, module) for _, name, module in stacks]


def _tokens_argument(args: tuple, kwargs: dict) -> torch.Tensor | None:
    for value in (*args, *kwargs.values()):
        if isinstance(value, torch.Tensor) and value.dim() == 3:
            return value
    return None


def _run(
    model: nn.Module,
    method: SaliencyMethod,
    batch: torch.Tensor,
    coef: torch.Tensor,
    intercept: torch.Tensor,
    class_name: str | None,
    weights: ProbeWeights,
) -> tuple[np.ndarray, torch.Tensor]:
    """One forward and backward pass: the grid map and the probe's logits."""
    module = model.get_submodule(method.layer)
    captured: dict[str, torch.Tensor] = {}
    if method.kind == GRAD_CAM:

        def hook(_module, _inputs, output):
            captured["activation"] = output
            return output.clone()  # later in-place operations must not touch the capture

        handle = module.register_forward_hook(hook)
    else:

        def hook(_module, args, kwargs):
            captured["activation"] = _tokens_argument(args, kwargs)

        handle = module.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        with torch.inference_mode(False), torch.enable_grad():
            batch = batch.detach().clone().requires_grad_(True)
            features = model(batch).float()
            unit = features / features.norm(dim=-1, keepdim=True)
            logits = unit @ coef.T + intercept
            index = _class_index(weights, class_name, logits[0])
            activation = captured["activation"]
            (gradient,) = torch.autograd.grad(logits[0, index], activation)
    finally:
        handle.remove()
    activation, gradient = activation.detach().float(), gradient.float()
    if method.kind == GRAD_CAM:
        channel_weights = gradient[0].mean(dim=(1, 2))
        grid = torch.relu(torch.einsum("c,chw->hw", channel_weights, activation[0]))
    else:
        grid = _patch_attribution(activation, gradient, method.grid)
    return grid.cpu().numpy(), logits[0].detach()


def _patch_attribution(
    tokens: torch.Tensor, gradient: torch.Tensor, grid: tuple[int, int]
) -> torch.Tensor:
    """Gradient x input summed over features, for the patch tokens, as a (rows, cols) grid."""
    if tokens.shape[0] != 1:  # sequence-first layout (tokens, batch, features)
        tokens, gradient = tokens.transpose(0, 1), gradient.transpose(0, 1)
    per_token = (tokens[0] * gradient[0]).sum(dim=-1)
    n_patches = grid[0] * grid[1]
    if per_token.shape[0] < n_patches:
        raise SaliencyUnavailable(
            f"{per_token.shape[0]} tokens for a {grid[0]}x{grid[1]} patch grid"
        )
    return torch.relu(per_token[-n_patches:]).reshape(grid)
