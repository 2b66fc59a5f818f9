"""``open_clip:`` names: any open_clip model, pretrained (weights via the Hugging Face
cache), from a local checkpoint, or with seeded random weights.

    ``open_clip:<arch>/<pretrained tag>``   e.g. ``open_clip:ViT-B-32/laion2b_s34b_b79k``
    ``open_clip:<arch>@<checkpoint path>``  a local checkpoint, loaded with weights_only=True
    ``open_clip:<arch>``                    random initialisation (seeded): does pretraining matter?
    ``open_clip:hf-hub:<org>/<repo>``       open_clip's own hub names (e.g. SigLIP 2 checkpoints)

Hub weights come through ``hub.Downloads`` (size and destination first, then progress), and
the encoder id names the repo and the commit they came from.
"""

from __future__ import annotations

import json
import pickle
import re
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path

import torch
from PIL import Image
from torch import nn

from .base import DEFAULT_ENCODER, Built, EncoderError, EncoderInfo, Family
from .hub import Downloads, HubWeights, file_sha256, is_cached

HF_HUB = "hf-hub:"
REPO_NAME = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
CONFIG_NAME = "open_clip_config.json"
WEIGHTS_NAME = "open_clip_pytorch_model.bin"
SAFE_WEIGHTS_NAME = "open_clip_model.safetensors"
TOKENIZER_FILES = frozenset(
    {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "spiece.model"}
)

# (spec, description): open_clip models worth offering in a picker; any other works by name.
SUGGESTED = (
    ("ViT-B-32/laion2b_s34b_b79k", "CLIP ViT-B/32 trained on LAION-2B; 512-d; zero-shot"),
    ("ViT-B-32/openai", "CLIP ViT-B/32 by OpenAI; 512-d; zero-shot"),
    ("ViT-B-16/laion2b_s34b_b88k", "CLIP ViT-B/16 trained on LAION-2B; 512-d; zero-shot"),
    ("ViT-L-14/openai", "CLIP ViT-L/14 by OpenAI; 768-d; zero-shot"),
    ("convnext_base_w/laion2b_s13b_b82k", "CLIP ConvNeXt-B (wide) on LAION-2B; zero-shot"),
    ("hf-hub:timm/ViT-B-16-SigLIP2", "SigLIP 2 ViT-B/16 trained on WebLI; 768-d; zero-shot"),
)
SUGGESTED_OPEN_CLIP = tuple(spec for spec, _ in SUGGESTED)
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


def _hub_weights(arch: str, tag: str) -> tuple[str, tuple[str, ...]] | None:
    """The hub repo of a pretrained tag and its weight files, preferred first (open_clip's
    own rule: the safetensors alternative, then the named file); None for URL-only tags."""
    import open_clip
    from open_clip.pretrained import _get_safe_alternatives

    location = (open_clip.get_pretrained_cfg(arch, tag) or {}).get("hf_hub") or ""
    if not location:
        return None
    repo, filename = location.rstrip("/"), WEIGHTS_NAME
    if not location.endswith("/"):
        repo, filename = location.rsplit("/", 1)
    return repo, (*_get_safe_alternatives(filename), filename)


def _first_of(names: Sequence[str], wanted: Sequence[str], repo: str) -> str:
    for name in wanted:
        if name in names:
            return name
    raise EncoderError(f"no open_clip weights ({' or '.join(wanted)}) in {repo}")


def _hub_repo_files(repo: str) -> Callable[[Sequence[str]], list[str]]:
    def choose(names: Sequence[str]) -> list[str]:
        if CONFIG_NAME not in names:
            raise EncoderError(f"no {CONFIG_NAME} in {repo}: not an open_clip model")
        weights = _first_of(names, (SAFE_WEIGHTS_NAME, WEIGHTS_NAME), repo)
        tokenizer = [name for name in names if name in TOKENIZER_FILES]
        return [CONFIG_NAME, weights, *tokenizer]

    return choose


def offline_options(arch: str) -> str:
    return (
        f"the bundled encoder '{DEFAULT_ENCODER}'; a local checkpoint"
        f" 'open_clip:{arch}@/path/to/checkpoint.pt'; random weights 'open_clip:{arch}';"
        " or run once online (weights are kept in the Hugging Face cache)."
    )


def hub_repo_offline_options(repo: str) -> str:
    """For an ``hf-hub:`` name, whose architecture lives in the repo's own config."""
    return (
        f"the bundled encoder '{DEFAULT_ENCODER}'; run once online (open_clip:hf-hub:{repo} is"
        " then kept in the Hugging Face cache), or copy that cache folder from a machine that"
        " has it."
    )


def _from_hub_repo(repo: str, downloads: Downloads):
    """``open_clip:hf-hub:<org>/<repo>``: the repo's config and weights at one commit."""
    import open_clip

    if not REPO_NAME.fullmatch(repo):
        raise EncoderError(f"open_clip:hf-hub:{repo}: expected open_clip:hf-hub:<org>/<repo>")
    files = downloads.fetch_weights(hub_weights(HF_HUB + repo))
    folder = files.folder
    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{folder}")
    text = json.loads((folder / CONFIG_NAME).read_text())["model_cfg"].get("text_cfg", {})
    local_tokenizer = not text.get("hf_tokenizer_name") or any(
        (folder / name).is_file() for name in TOKENIZER_FILES
    )
    tokenizer = open_clip.get_tokenizer(
        f"local-dir:{folder}" if local_tokenizer else f"hf-hub:{repo}"
    )
    return model, preprocess, tokenizer, f"{HF_HUB}{files.identity}"


def build(spec: str, downloads: Downloads) -> Built:
    import open_clip

    if spec.startswith(HF_HUB):
        model, preprocess, tokenizer, identity = _from_hub_repo(spec[len(HF_HUB) :], downloads)
        return _built(model, preprocess, tokenizer, identity)
    arch, _, checkpoint = spec.partition("@")
    arch, _, tag = arch.partition("/")
    if arch not in open_clip.list_models():
        raise EncoderError(
            f"unknown open_clip architecture {arch!r} (see open_clip.list_models(), or use"
            " open_clip:hf-hub:<org>/<repo>)"
        )
    downloads.offline = offline_options(arch)
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
        pretrained = tag
        weights = hub_weights(spec)
        if weights is not None:
            files = downloads.fetch_weights(weights)
            identity = f"{arch}/{tag}@{files.identity}"
        else:  # a URL-only tag: open_clip downloads it (with its own progress bar)
            if not downloads.online():
                raise downloads.unavailable("the download server cannot be reached")
            url = open_clip.get_pretrained_cfg(arch, tag).get("url", "")
            identity = f"{arch}/{tag}@url:{Path(url).name}"
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
        raise downloads.unavailable(str(error)) from error
    return _built(model, preprocess, open_clip.get_tokenizer(arch), identity)


def _built(model: nn.Module, preprocess: Callable, tokenizer: Callable, identity: str) -> Built:
    model.eval()
    dim = getattr(model.visual, "output_dim", None)
    if dim is None:
        with torch.inference_mode():
            dim = model.encode_image(preprocess(Image.new("RGB", (64, 64)))[None]).shape[-1]
    return Built(ImageTower(model, tokenizer), preprocess, int(dim), identity)


def weight_free(spec: str) -> bool:
    """open_clip's random initialisation: an architecture with neither tag nor file."""
    return bool(spec) and "/" not in spec and "@" not in spec


def hub_weights(spec: str) -> HubWeights | None:
    """The hub files of an ``hf-hub:`` name or of a pretrained tag stored on the hub (None
    for a local checkpoint, random weights, or a URL-only tag, which open_clip downloads)."""
    if spec.startswith(HF_HUB):
        repo = spec[len(HF_HUB) :]
        return HubWeights(repo, _hub_repo_files(repo), hub_repo_offline_options(repo))
    arch, _, tag = spec.partition("@")[0].partition("/")
    if "@" in spec or not tag:
        return None
    hub = _hub_weights(arch, tag)
    if hub is None:
        return None
    repo, wanted = hub
    return HubWeights(repo, lambda names: [_first_of(names, wanted, repo)], offline_options(arch))


def is_spec_cached(spec: str) -> bool:
    """Whether a pretrained spec's weights are in the Hugging Face cache."""
    weights = hub_weights(spec)
    return weights is not None and is_cached(weights.repo, weights.choose)


def catalogue() -> list[EncoderInfo]:
    infos = [
        EncoderInfo(
            f"open_clip:{spec}",
            f"open_clip {description}",
            needs_download=not is_spec_cached(spec),
            family="open_clip",
        )
        for spec, description in SUGGESTED
    ]
    infos.append(
        EncoderInfo(
            f"open_clip:{RANDOM_INIT_SUGGESTION}",
            f"open_clip {RANDOM_INIT_SUGGESTION}, random weights — does pretraining matter?",
            needs_download=False,
            weight_free=True,
            family="open_clip",
        )
    )
    return infos


@cache
def _tags_by_repo() -> dict[str, list[tuple[str, tuple[str, ...]]]]:
    """Every open_clip pretrained tag with hub weights, by repo: (``arch/tag``, weight files)."""
    import open_clip

    found: dict[str, list[tuple[str, tuple[str, ...]]]] = {}
    for arch, tag in open_clip.list_pretrained():
        hub = _hub_weights(arch, tag)
        if hub is not None:
            found.setdefault(hub[0], []).append((f"{arch}/{tag}", hub[1]))
    return found


def recognise(repo: str, names: Sequence[str]) -> list[str]:
    """The pretrained tags whose weights a cached repo holds, else its ``hf-hub:`` name when
    it holds an open_clip config and weights."""
    tags = [
        f"open_clip:{spec}"
        for spec, wanted in _tags_by_repo().get(repo, [])
        if any(name in names for name in wanted)
    ]
    if tags:
        return tags
    try:
        _hub_repo_files(repo)(names)
    except EncoderError:
        return []
    return [f"open_clip:{HF_HUB}{repo}"]


FAMILY = Family(
    "open_clip", build, catalogue, weight_free, recognise, hub_weights, title="CLIP, SigLIP 2"
)
