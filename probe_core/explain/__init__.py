"""Explanations: why the probe decided what it did, checked rather than decorative.

One concept per module:

- ``neighbours``: an image's nearest images in the full embedding space (cosine), with
  whether each was in the same fold;
- ``typicality``: each class's most and least typical images (by the probe's margin or by
  distance to the class centre);
- ``geometry``: where the encoder's crop lies in the original image, and maps carried
  between the two;
- ``saliency``: the gradient of the probe's class logit through the frozen encoder
  (Grad-CAM for CNNs, gradient x input on patch tokens for ViTs), on the original image;
- ``deletion``: each map checked against its own random baseline;
- ``shortcuts``: a class's mean saliency on the crop, and the possible-shortcut flag;
- ``overlay``: the map drawn over the image, with the crop's outline;
- ``explainer``: all of it for one run (``Explainer``), as the app, the CLI and a notebook
  use it; ``run_dir``: an ``Explainer`` from a ``run`` output folder, and the files
  ``probe-studio explain`` writes.

The names below load on first use (saliency imports torch; neighbours do not).
"""

from __future__ import annotations

from importlib import import_module

_HOMES = {
    "Neighbour": ".neighbours",
    "NearestImages": ".neighbours",
    "NeighbourIndex": ".neighbours",
    "row_folds": ".neighbours",
    "Typicality": ".typicality",
    "TypicalImage": ".typicality",
    "class_typicality": ".typicality",
    "CropGeometry": ".geometry",
    "crop_geometry": ".geometry",
    "SaliencyMap": ".saliency",
    "SaliencyMethod": ".saliency",
    "SaliencyModel": ".saliency",
    "SaliencyUnavailable": ".saliency",
    "DeletionCheck": ".deletion",
    "DeletionStep": ".deletion",
    "deletion_check": ".deletion",
    "ClassSaliency": ".shortcuts",
    "border_share": ".shortcuts",
    "class_saliency": ".shortcuts",
    "saliency_overlay": ".overlay",
    "crop_heat_map": ".overlay",
    "Explainer": ".explainer",
    "ExplainError": ".explainer",
    "ImageExplanation": ".explainer",
    "RunScores": ".explainer",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(_HOMES[name], __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
