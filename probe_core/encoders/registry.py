"""The encoder families by prefix, and the one place that parses an encoder name.

Adding a family: one module that defines a ``Family``, and one line in ``FAMILIES``.
"""

from __future__ import annotations

from . import baselines, bundled, hf_models, open_clip_models, timm_models
from .base import DEFAULT_ENCODER, EncoderError, Family

FAMILIES: dict[str, Family] = {
    family.name: family
    for family in (
        bundled.FAMILY,
        open_clip_models.FAMILY,
        timm_models.FAMILY,
        hf_models.FAMILY,
        baselines.FAMILY,
    )
}

# Every name form, for help texts and error messages.
NAME_FORMS = (
    "bundled:efficientnet-lite0",
    "open_clip:<arch>/<tag>",
    "open_clip:<arch>@<file>",
    "open_clip:<arch>",
    "open_clip:hf-hub:<org>/<repo>",
    "timm:<model>[.<tag>]",
    "timm:<model>@<file>",
    "timm:<model>@random",
    "hf:<org>/<repo>",
    "hf:<folder>",
    "baseline:pixels",
    "baseline:color-histogram",
)


def parse_name(name: str) -> tuple[Family, str]:
    """An encoder name's family and spec (what follows the first colon)."""
    prefix, sep, spec = name.strip().partition(":")
    if not sep or prefix not in FAMILIES:
        raise EncoderError(
            f"unknown encoder {name!r}: expected one of {', '.join(FAMILIES)} as prefix,"
            f" e.g. '{DEFAULT_ENCODER}', 'open_clip:ViT-B-32/laion2b_s34b_b79k',"
            " 'timm:resnet50.tv2_in1k' or 'hf:facebook/dinov2-small'"
        )
    if not spec:
        raise EncoderError(f"encoder {name!r} names no model after '{prefix}:'")
    return FAMILIES[prefix], spec


def is_weight_free(name: str) -> bool:
    """Whether the encoder uses no trained weights: a baseline, or random initialisation."""
    try:
        family, spec = parse_name(name)
    except EncoderError:
        return False
    return family.weight_free(spec)
