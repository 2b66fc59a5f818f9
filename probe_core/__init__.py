"""Probe Studio's library: how well does a frozen image encoder separate my classes?

Data flows one way: folder -> images -> embeddings -> probe -> results -> figures.
"""

from .cache import EmbeddingCache
from .dataset import ImageDataset, SkippedItem, scan, scan_blobs, scan_folder, scan_zip
from .embed import Embeddings, extract_embeddings
from .encoders import DEFAULT_ENCODER, Encoder, list_encoders, load_encoder, pick_device
from .evaluation.metrics import Metrics
from .evaluation.protocols import ProbeResult, run_probe
from .probe import LinearProbe
from .projection import Projection, project
from .study import Study, StudyOutcome, StudyProgress, StudySettings

__all__ = [
    "DEFAULT_ENCODER",
    "EmbeddingCache",
    "Embeddings",
    "Encoder",
    "ImageDataset",
    "LinearProbe",
    "Metrics",
    "ProbeResult",
    "Projection",
    "SkippedItem",
    "Study",
    "StudyOutcome",
    "StudyProgress",
    "StudySettings",
    "extract_embeddings",
    "list_encoders",
    "load_encoder",
    "pick_device",
    "project",
    "run_probe",
    "scan",
    "scan_blobs",
    "scan_folder",
    "scan_zip",
]
