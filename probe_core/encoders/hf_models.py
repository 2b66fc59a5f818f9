"""``hf:`` names: Hugging Face ``transformers`` vision and vision-text models.

    ``hf:<org>/<repo>``   a model on the hub (``AutoModel`` with its own ``AutoImageProcessor``),
                          downloaded once into the Hugging Face cache
    ``hf:<folder>``       the same from a local folder written by ``save_pretrained`` (the model
                          and its image processor; a tokenizer beside them enables zero-shot)

Features, by what the model offers: ``get_image_features`` when it has a text tower (CLIP,
SigLIP: the embedding its text side is matched against), otherwise ``pooler_output`` (DINOv2:
the layer-normed class token), otherwise the mean of the last hidden state (I-JEPA). A
pooler that the checkpoint does not hold (initialised at random by ``transformers``) is never
used. The encoder id names which (``...#pooler_output``). ``transformers`` is the optional
extra ``probe-studio[hf]``.
"""

from __future__ import annotations

import hashlib
import inspect
import re
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image
from torch import nn

from .base import DEFAULT_ENCODER, Built, EncoderError, EncoderInfo, Family
from .hub import Downloads, HubWeights, file_sha256, is_cached

HF_EXTRA = 'pip install "probe-studio[hf]"'
REPO_NAME = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
IMAGE_FEATURES, POOLER_OUTPUT, MEAN_HIDDEN_STATE = (
    "get_image_features",
    "pooler_output",
    "mean_last_hidden_state",
)

# What a model folder needs (top level): its config, an image processor, the weights (one
# file or shards; safetensors preferred), and the tokenizer where there is one.
CONFIG = "config.json"
IMAGE_PROCESSOR = "preprocessor_config.json"
SAFETENSORS = re.compile(r"model(-\d+-of-\d+)?\.safetensors|model\.safetensors\.index\.json")
PYTORCH_BIN = re.compile(r"pytorch_model(-\d+-of-\d+)?\.bin|pytorch_model\.bin\.index\.json")
TOKENIZER_FILES = frozenset(
    {
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "added_tokens.json",
        "vocab.json",
        "vocab.txt",
        "merges.txt",
        "spiece.model",
        "tokenizer.model",
        "sentencepiece.bpe.model",
        "processor_config.json",
    }
)

# (repo, description): a short list for pickers; any transformers vision model works by name.
SUGGESTED = (
    ("facebook/dinov2-small", "DINOv2 ViT-S/14 (transformers); class token; 384-d"),
    ("facebook/dinov2-base", "DINOv2 ViT-B/14 (transformers); class token; 768-d"),
    ("google/siglip2-base-patch16-224", "SigLIP 2 ViT-B/16 (transformers); image-text; zero-shot"),
    ("openai/clip-vit-base-patch32", "CLIP ViT-B/32 by OpenAI (transformers); zero-shot"),
    ("apple/aimv2-large-patch14-224", "AIMv2 ViT-L/14, autoregressive pretraining"),
    ("facebook/ijepa_vith14_1k", "I-JEPA ViT-H/14, mean of the patch tokens"),
)


def transformers_module():
    """``transformers``, or an error that says which extra to install."""
    try:
        import transformers
    except ImportError as error:
        raise EncoderError(
            f"hf: encoders need the transformers library, an optional extra: {HF_EXTRA}"
        ) from error
    return transformers


class ImageProcessorTransform:
    """A ``transformers`` image processor as the per-image preprocessing: a PIL image to a
    (3, height, width) float tensor. Its repr (the processor's JSON) enters the cache key."""

    def __init__(self, processor):
        self.processor = processor

    def __call__(self, image: Image.Image) -> torch.Tensor:
        if image.mode != "RGB":
            image = image.convert("RGB")
        return self.processor(images=image, return_tensors="pt")["pixel_values"][0]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.processor.to_json_string()})"


def _pooled(output) -> torch.Tensor:
    """A features tensor from what ``get_*_features`` returns (a tensor, or in transformers 5
    an output whose ``pooler_output`` holds the projected features)."""
    if isinstance(output, torch.Tensor):
        return output
    return output.pooler_output


class ImageFeatures(nn.Module):
    """A ``transformers`` model's image features: ``feature`` names which (module docstring)."""

    def __init__(self, model: nn.Module, feature: str, no_text_reason: str = ""):
        super().__init__()
        self.model = model
        self.feature = feature
        self.no_text_reason = no_text_reason  # a text tower that cannot be used, and why

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if self.feature == IMAGE_FEATURES:
            return _pooled(self.model.get_image_features(pixel_values=pixel_values))
        outputs = self.model(pixel_values=pixel_values)
        if self.feature == POOLER_OUTPUT:
            return outputs.pooler_output.flatten(1)
        hidden = outputs.last_hidden_state
        if hidden.ndim == 4:  # convolutional (batch, channels, height, width)
            return hidden.mean(dim=(2, 3))
        return hidden.mean(dim=1)


class ImageTextFeatures(ImageFeatures):
    """``ImageFeatures`` with the model's text tower and tokenizer, for zero-shot."""

    def __init__(self, model: nn.Module, tokenizer, pad_to_max_length: bool):
        super().__init__(model, IMAGE_FEATURES)
        self.tokenizer = tokenizer
        self.pad_to_max_length = pad_to_max_length
        text_config = getattr(model.config, "text_config", None)
        self.max_length = getattr(text_config, "max_position_embeddings", None)
        self.text_inputs = set(inspect.signature(model.get_text_features).parameters)

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        device = next(self.model.parameters()).device
        tokens = self.tokenizer(
            list(texts),
            padding="max_length" if self.pad_to_max_length else True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        inputs = {key: value.to(device) for key, value in tokens.items() if key in self.text_inputs}
        return _pooled(self.model.get_text_features(**inputs))


def offline_options(spec: str) -> str:
    return (
        f"the bundled encoder '{DEFAULT_ENCODER}'; a local folder 'hf:/path/to/folder' written"
        " by save_pretrained (model and image processor); or run once online (models are kept"
        " in the Hugging Face cache), or copy that cache folder from a machine that has them."
    )


def choose_files(names: Sequence[str]) -> list[str]:
    """The top-level files a transformers vision model loads from its repo."""
    top = [name for name in names if "/" not in name]
    if CONFIG not in top:
        raise EncoderError(f"no {CONFIG}: not a transformers model")
    if IMAGE_PROCESSOR not in top:
        raise EncoderError(f"no {IMAGE_PROCESSOR}: the model has no image processor")
    weights = [name for name in top if SAFETENSORS.fullmatch(name)]
    weights = weights or [name for name in top if PYTORCH_BIN.fullmatch(name)]
    if not weights:
        raise EncoderError("no weights (model.safetensors or pytorch_model.bin)")
    tokenizer = [name for name in top if name in TOKENIZER_FILES]
    return [CONFIG, IMAGE_PROCESSOR, *weights, *tokenizer]


def _folder_digest(folder: Path, names: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for name in sorted(names):
        digest.update(f"{name}\0{file_sha256(str(folder / name))}\n".encode())
    return digest.hexdigest()


def _load(folder: Path, what: str) -> tuple[nn.Module, object, object | None, bool]:
    """The model (fp32, eval), its image processor, its tokenizer (None without one), and
    whether the checkpoint holds the model's pooler (if it has one)."""
    transformers = transformers_module()
    try:
        model, loading = transformers.AutoModel.from_pretrained(
            folder, dtype=torch.float32, output_loading_info=True
        )
        processor = transformers.AutoImageProcessor.from_pretrained(folder)
    except (OSError, ValueError, KeyError) as error:
        raise EncoderError(f"cannot load {what} with transformers: {error}") from error
    missing = sorted(key for key in loading["missing_keys"] if not key.startswith("pooler."))
    if missing or loading["mismatched_keys"]:
        shown = ", ".join(missing[:5] or sorted(map(str, loading["mismatched_keys"]))[:5])
        raise EncoderError(f"{what}: the weights do not fit the model's config ({shown})")
    model.eval()
    tokenizer = None
    has_text = callable(getattr(model, "get_text_features", None))
    if has_text and any((folder / name).is_file() for name in TOKENIZER_FILES):
        try:
            tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
        except (OSError, ValueError, KeyError):
            tokenizer = None
    pooler_trained = not any(key.startswith("pooler.") for key in loading["missing_keys"])
    return model, processor, tokenizer, pooler_trained


def _features(
    model: nn.Module, tokenizer, preprocess: ImageProcessorTransform, pooler_trained: bool
) -> ImageFeatures:
    has_text = callable(getattr(model, "get_image_features", None)) and callable(
        getattr(model, "get_text_features", None)
    )
    if has_text and tokenizer is not None:
        pad = "siglip" in str(getattr(model.config, "model_type", ""))
        return ImageTextFeatures(model, tokenizer, pad_to_max_length=pad)
    if has_text:
        return ImageFeatures(model, IMAGE_FEATURES, "its folder holds no tokenizer")
    with torch.inference_mode():
        outputs = model(pixel_values=preprocess(Image.new("RGB", (64, 64)))[None])
    pooler = getattr(outputs, "pooler_output", None)
    if pooler is not None and pooler_trained:
        return ImageFeatures(model, POOLER_OUTPUT)
    return ImageFeatures(model, MEAN_HIDDEN_STATE)


def hub_weights(spec: str) -> HubWeights | None:
    """The hub files of ``hf:<org>/<repo>`` (None for a local folder, or a name that is
    neither); fetching them first checks that transformers is installed."""
    if Path(spec).expanduser().is_dir() or not REPO_NAME.fullmatch(spec):
        return None
    return HubWeights(spec, choose_files, offline_options(spec), requires=transformers_module)


def build(spec: str, downloads: Downloads) -> Built:
    downloads.offline = offline_options(spec)
    folder = Path(spec).expanduser()
    weights_on_hub = hub_weights(spec)
    if folder.is_dir():
        present = [path.name for path in folder.iterdir() if path.is_file()]
        try:
            names = choose_files(present)
        except EncoderError as error:
            raise EncoderError(
                f"{folder} is not a saved transformers vision model: {error}"
            ) from error
        weights = f"{folder.name}@sha256:{_folder_digest(folder, names)[:16]}"
        what = str(folder)
    elif weights_on_hub is not None:
        files = downloads.fetch_weights(weights_on_hub)  # says first if transformers is missing
        folder, weights, what = files.folder, files.identity, f"hf:{spec}"
    else:
        raise EncoderError(
            f"hf:{spec}: no such folder, and not a hub name: hf: takes <org>/<repo> on the"
            " Hugging Face hub or a folder written by save_pretrained"
        )
    model, processor, tokenizer, pooler_trained = _load(folder, what)
    preprocess = ImageProcessorTransform(processor)
    features = _features(model, tokenizer, preprocess, pooler_trained)
    with torch.inference_mode():
        dim = int(features(preprocess(Image.new("RGB", (64, 64)))[None]).shape[-1])
    return Built(features, preprocess, dim, f"{weights}#{features.feature}")


def catalogue() -> list[EncoderInfo]:
    return [
        EncoderInfo(
            f"hf:{repo}", description, needs_download=not is_cached(repo, choose_files), family="hf"
        )
        for repo, description in SUGGESTED
    ]


def recognise(repo: str, names: Sequence[str]) -> list[str]:
    """``hf:<repo>`` for a cached repo holding a transformers model with an image processor."""
    try:
        choose_files(names)
    except EncoderError:
        return []
    return [f"hf:{repo}"]


FAMILY = Family(
    "hf",
    build,
    catalogue,
    recognise=recognise,
    hub_weights=hub_weights,
    title="transformers: DINOv2, SigLIP 2, CLIP, AIMv2, I-JEPA",
)
