"""Evaluation: protocols, splits, metrics and their intervals, duplicates, label issues.

One concept per module: ``protocols`` (cv, holdout, given, auto), ``splits``, ``metrics``,
``intervals``, ``duplicates``, ``label_issues``.
"""

from .duplicates import DEFAULT_DUPLICATE_COSINE, Duplicates, find_duplicates
from .intervals import Estimate
from .label_issues import LabelIssue, LowConfidenceLabel, find_label_issues, review_labels
from .metrics import Metrics
from .protocols import PROTOCOLS, ProbeResult, ProtocolChoice, run_probe
from .splits import Split, stratified_split

__all__ = [
    "DEFAULT_DUPLICATE_COSINE",
    "PROTOCOLS",
    "Duplicates",
    "Estimate",
    "LabelIssue",
    "LowConfidenceLabel",
    "Metrics",
    "ProbeResult",
    "ProtocolChoice",
    "Split",
    "find_duplicates",
    "find_label_issues",
    "review_labels",
    "run_probe",
    "stratified_split",
]
