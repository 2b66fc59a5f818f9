"""Probe Studio's library: how well does a frozen image encoder separate my classes?

Data flows one way: folder -> images -> embeddings -> probe -> results -> figures.

The names below load on first use, so that importing a submodule (``probe_core.cli``,
``probe_core.openmp``) does not import torch before an entry point has set up the process.
"""

from __future__ import annotations

from importlib import import_module

_HOMES = {
    "EmbeddingCache": ".cache",
    "ImageDataset": ".dataset",
    "SkippedItem": ".dataset",
    "scan": ".dataset",
    "scan_blobs": ".dataset",
    "scan_folder": ".dataset",
    "scan_zip": ".dataset",
    "Embeddings": ".embeddings",
    "extract_embeddings": ".embed",
    "DEFAULT_ENCODER": ".encoders",
    "Encoder": ".encoders",
    "list_encoders": ".encoders",
    "load_encoder": ".encoders",
    "pick_device": ".devices",
    "Metrics": ".evaluation.metrics",
    "ProbeResult": ".evaluation.protocols",
    "run_probe": ".evaluation.protocols",
    "LinearProbe": ".probe",
    "Projection": ".projection",
    "project": ".projection",
    "Study": ".study",
    "StudyOutcome": ".study",
    "StudyProgress": ".study",
    "StudySettings": ".study",
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
