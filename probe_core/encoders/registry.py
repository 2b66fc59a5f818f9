"""The encoder families by prefix, and the one place that parses an encoder name.

Adding a family: one module that defines a ``Family``, and one line in ``FAMILIES``.
"""

from __future__ import annotations

from . import baselines, bundled, open_clip_models
from .base import EncoderError, EncoderInfo, Family
from .bundled import DEFAULT_ENCODER

FAMILIES: dict[str, Family] = {
    family.name: family
    for family in (
        bundled.FAMILY,
        open_clip_models.FAMILY,
        baselines.FAMILY,
    )
}


def parse_name(name: str) -> tuple[Family, str]:
    """An encoder name's family and spec (what follows the first colon)."""
    prefix, sep, spec = name.partition(":")
    if not sep or prefix not in FAMILIES:
        raise EncoderError(
            f"unknown encoder {name!r}: expected one of {', '.join(FAMILIES)} as prefix,"
            f" e.g. '{DEFAULT_ENCODER}' or 'open_clip:ViT-B-32/laion2b_s34b_b79k'"
        )
    return FAMILIES[prefix], spec


def is_weight_free(name: str) -> bool:
    """Whether the encoder uses no trained weights: a baseline, or random initialisation."""
    try:
        family, spec = parse_name(name)
    except EncoderError:
        return False
    return family.weight_free(spec)


def list_encoders() -> list[EncoderInfo]:
    """Every family's offer, the encoders with trained weights first, then the weight-free
    ones (baselines, random weights)."""
    infos = [info for family in FAMILIES.values() for info in family.catalogue()]
    return sorted(infos, key=lambda info: info.weight_free)
