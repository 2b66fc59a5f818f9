"""Evaluation: protocols, splits, metrics and their intervals. One concept per module."""

from .metrics import Metrics
from .protocols import ProbeResult, run_probe
from .splits import Split, stratified_split

__all__ = ["Metrics", "ProbeResult", "Split", "run_probe", "stratified_split"]
