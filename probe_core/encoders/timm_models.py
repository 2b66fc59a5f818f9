"""``timm:`` names: any timm model's pooled pre-logits features.

    ``timm:<model>[.<tag>]``   pretrained weights (timm's tag convention, e.g.
                               ``timm:vit_small_patch14_dinov2.lvd142m``), downloaded once into
                               the Hugging Face cache; no tag: timm's default tag
    ``timm:<model>@<file>``    the same architecture with local weights: a safetensors file or a
                               torch state dict (``weights_only=True``), with or without the
                               classifier head
    ``timm:<model>@random``    seeded random weights: does pretraining matter? (offline)

Features are ``forward_head(forward_features(x), pre_logits=True)``, the same as a model
built with ``num_classes=0``; images go through the eval transform that
``timm.data.resolve_model_data_config`` gives for those weights (the tag's input size, crop,
interpolation, mean and std).
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from .base import DEFAULT_ENCODER, Built, EncoderError, EncoderInfo, Family
from .hub import Downloads, HubWeights, file_sha256, is_cached

RANDOM = "random"
RANDOM_SEED = 0
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # timm's hub layout, preferred first

# (name, description): a short list for pickers; any timm model works by name.
SUGGESTED = (
    ("vit_small_patch14_dinov2.lvd142m", "DINOv2 ViT-S/14, self-supervised on LVD-142M; 384-d"),
    ("vit_base_patch14_dinov2.lvd142m", "DINOv2 ViT-B/14, self-supervised on LVD-142M; 768-d"),
    ("vit_base_patch16_dinov3.lvd1689m", "DINOv3 ViT-B/16, self-supervised on LVD-1689M; 768-d"),
    ("eva02_base_patch14_224.mim_in22k", "EVA-02 ViT-B/14, masked image modelling on IN-22k"),
    ("convnext_base.fb_in22k", "ConvNeXt-B, supervised on ImageNet-22k; 1024-d"),
    ("vit_base_patch16_224.mae", "MAE ViT-B/16, masked autoencoder on ImageNet-1k; 768-d"),
    ("resnet50.tv2_in1k", "ResNet-50, torchvision's ImageNet-1k recipe v2; 2048-d"),
)
RANDOM_SUGGESTION = "resnet50"  # listed as timm:resnet50@random


class PooledFeatures(nn.Module):
    """A timm model's pooled pre-logits features (a classifier head, if any, is unused)."""

    def __init__(self, classifier: nn.Module):
        super().__init__()
        self.classifier = classifier

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.classifier.forward_features(images)
        return self.classifier.forward_head(features, pre_logits=True)


def offline_options(model_name: str) -> str:
    arch = model_name.split(".")[0]
    return (
        f"the bundled encoder '{DEFAULT_ENCODER}'; random weights 'timm:{arch}@random';"
        f" local weights 'timm:{model_name}@/path/to/weights.safetensors' (or a .pth state dict);"
        " or run once online (weights are kept in the Hugging Face cache), or copy that cache"
        " folder from a machine that has them."
    )


def _pretrained_config(model_name: str):
    import timm
    from timm.models import get_pretrained_cfg, split_model_name_tag

    arch, tag = split_model_name_tag(model_name)
    if not timm.is_model(arch):
        raise EncoderError(f"unknown timm model {arch!r} (see timm.list_models())")
    try:
        config = get_pretrained_cfg(model_name)
    except RuntimeError as error:
        tags = [name.split(".", 1)[1] for name in timm.list_pretrained(f"{arch}.*")]
        raise EncoderError(
            f"unknown pretrained tag {tag!r} for timm model {arch}; known: {', '.join(tags)}"
        ) from error
    return config


def _classifier_names(config) -> tuple[str, ...]:
    classifier = getattr(config, "classifier", None) if config is not None else None
    if not classifier:
        return ()
    return (classifier,) if isinstance(classifier, str) else tuple(classifier)


def _load_weights(path: Path):
    from timm.models import load_state_dict

    try:
        return load_state_dict(str(path), weights_only=True)
    except Exception as error:
        # timm re-raises torch's refusal as a RuntimeError caused by the UnpicklingError
        if isinstance(error, pickle.UnpicklingError) or isinstance(
            error.__cause__, pickle.UnpicklingError
        ):
            raise EncoderError(
                f"refusing weights file {path}: it is not a plain weights file (it would run"
                f" pickled code, and weights are only loaded with weights_only=True): {error}"
            ) from error
        raise EncoderError(f"cannot read weights file {path}: {error}") from error


def _from_file(model_name: str, path: Path, config) -> nn.Module:
    """The model with the weights of ``path`` loaded strictly, with the file's own head when
    it has one (so that a fine-tuned head of any size loads too)."""
    import timm

    state_dict = _load_weights(path)
    heads = [name for name in _classifier_names(config) if f"{name}.weight" in state_dict]
    num_classes = int(state_dict[f"{heads[0]}.weight"].shape[0]) if heads else 0
    del state_dict
    try:
        return timm.create_model(
            model_name,
            pretrained=True,
            num_classes=num_classes,
            pretrained_cfg_overlay={"file": str(path), "num_classes": num_classes},
        )
    except (RuntimeError, KeyError, ValueError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise EncoderError(
            f"{path} does not hold weights of the timm model {model_name}: {first}"
        ) from error


def _random(model_name: str) -> nn.Module:
    import timm

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_SEED)
        return timm.create_model(model_name, pretrained=False, num_classes=0)


def _weights_chooser(config):
    wanted = (config.hf_hub_filename,) if config.hf_hub_filename else WEIGHT_FILES

    def choose(names: Sequence[str]) -> list[str]:
        for name in wanted:
            if name in names:
                return [name]
        raise EncoderError(f"no weights file ({' or '.join(wanted)}) in {config.hf_hub_id}")

    return choose


def hub_weights(spec: str) -> HubWeights | None:
    """The hub weights of a pretrained name (None for local weights, random weights, and
    old URL-only checkpoints, which timm downloads itself)."""
    model_name, _, source = spec.partition("@")
    if source:
        return None
    config = _pretrained_config(model_name)
    if config is None or not config.hf_hub_id:
        return None
    return HubWeights(config.hf_hub_id, _weights_chooser(config), offline_options(model_name))


def build(spec: str, downloads: Downloads) -> Built:
    import timm

    model_name, _, source = spec.partition("@")
    config = _pretrained_config(model_name)
    downloads.offline = offline_options(model_name)
    if source == RANDOM:
        model = _random(model_name)
        identity = f"{model_name}@random-init-seed{RANDOM_SEED}"
    elif source:
        path = Path(source).expanduser()
        if not path.is_file():
            raise EncoderError(f"weights file not found: {path}")
        model = _from_file(model_name, path, config)
        identity = f"{model_name}@sha256:{file_sha256(str(path))[:16]}"
    else:
        if config is None:
            raise EncoderError(
                f"timm model {model_name!r} has no pretrained weights; use"
                f" 'timm:{model_name}@random' or 'timm:{model_name}@/path/to/weights'"
            )
        resolved = f"{config.architecture}.{config.tag}" if config.tag else config.architecture
        weights = hub_weights(spec)
        if weights is not None:
            files = downloads.fetch_weights(weights)
            model = _from_file(resolved, Path(next(iter(files.paths.values()))), config)
            identity = f"{resolved}@{files.identity}"
        else:  # an old URL-only checkpoint: timm downloads it (torch hub, with its progress)
            if not downloads.online():
                raise downloads.unavailable("the download server cannot be reached")
            model = timm.create_model(resolved, pretrained=True)
            identity = f"{resolved}@url:{Path(config.url).name}"
    model.reset_classifier(0)
    model.eval()
    data_config = timm.data.resolve_model_data_config(model)
    preprocess = timm.data.create_transform(**data_config, is_training=False)
    dim = int(getattr(model, "head_hidden_size", None) or model.num_features)
    return Built(PooledFeatures(model), preprocess, dim, identity)


def weight_free(spec: str) -> bool:
    return spec.partition("@")[2] == RANDOM


def catalogue() -> list[EncoderInfo]:
    infos = []
    for name, description in SUGGESTED:
        config = _pretrained_config(name)
        infos.append(
            EncoderInfo(
                f"timm:{name}",
                f"timm {description}",
                needs_download=not is_cached(config.hf_hub_id, _weights_chooser(config)),
                family="timm",
            )
        )
    infos.append(
        EncoderInfo(
            f"timm:{RANDOM_SUGGESTION}@random",
            f"timm {RANDOM_SUGGESTION}, random weights — does pretraining matter?",
            needs_download=False,
            weight_free=True,
            family="timm",
        )
    )
    return infos


def recognise(repo: str, names: Sequence[str]) -> list[str]:
    """``timm:<model>.<tag>`` for a cached ``timm/<model>.<tag>`` repo holding its weights."""
    owner, _, model_name = repo.partition("/")
    if owner != "timm":
        return []
    try:
        config = _pretrained_config(model_name)
        _weights_chooser(config)(names)
    except (EncoderError, AttributeError):
        return []
    return [f"timm:{model_name}"] if config.hf_hub_id == repo else []


FAMILY = Family(
    "timm",
    build,
    catalogue,
    weight_free,
    recognise,
    hub_weights,
    title="DINOv2, DINOv3, EVA-02, ConvNeXt, MAE, ResNet",
)
