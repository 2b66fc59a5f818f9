"""``open_clip:`` names: any open_clip model, pretrained (weights via the Hugging Face
cache), from a local checkpoint, or with seeded random weights.

    ``open_clip:<arch>/<pretrained tag>``   e.g. ``open_clip:ViT-B-32/laion2b_s34b_b79k``
    ``open_clip:<arch>@<checkpoint path>``  a local checkpoint, loaded with weights_only=True
    ``open_clip:<arch>``                    random initialisation (seeded): does pretraining matter?
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from .base import Built, EncoderError, EncoderInfo, EncoderUnavailableError, Family
from .bundled import DEFAULT_ENCODER
from .hub import file_sha256, hub_reachable

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


class ImageTower(nn.Module):
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


def is_cached(arch: str, tag: str) -> bool:
    import open_clip
    from huggingface_hub import try_to_load_from_cache

    config = open_clip.get_pretrained_cfg(arch, tag)
    repo = (config.get("hf_hub") or "").rstrip("/")
    if not repo:
        return False
    names = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
    return any(isinstance(try_to_load_from_cache(repo, name), str) for name in names)


def build(spec: str) -> Built:
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
        if not is_cached(arch, tag) and not hub_reachable():
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
    tower = ImageTower(model, open_clip.get_tokenizer(arch))
    return Built(tower, preprocess, int(model.visual.output_dim), identity)


def _offline_message(arch: str, tag: str, details: str) -> str:
    return (
        f"Could not download the weights of open_clip:{arch}/{tag} from the Hugging Face hub"
        f" (are you offline?). Use the bundled offline encoder '{DEFAULT_ENCODER}', or a local"
        f" checkpoint as 'open_clip:{arch}@/path/to/checkpoint.pt'. Details: {details}"
    )


def weight_free(spec: str) -> bool:
    """open_clip's random initialisation: an architecture with neither tag nor file."""
    return bool(spec) and "/" not in spec and "@" not in spec


def catalogue() -> list[EncoderInfo]:
    infos = []
    for suggestion in SUGGESTED_OPEN_CLIP:
        arch, tag = suggestion.split("/")
        try:
            cached = is_cached(arch, tag)
        except Exception:
            continue
        infos.append(
            EncoderInfo(
                f"open_clip:{suggestion}",
                f"open_clip {arch}, {tag} weights",
                needs_download=not cached,
            )
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


FAMILY = Family("open_clip", build, catalogue, weight_free)
