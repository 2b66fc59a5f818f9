"""Which torch device computes: CUDA, then Apple MPS, then the CPU, or the one asked for.

Its own small module, so that the probe and the encoders both pick devices the same way
without one importing the other.
"""

from __future__ import annotations

import torch


class DeviceUnavailableError(ValueError):
    """A device was asked for by name, but this machine (or this torch build) lacks it."""


def pick_device(requested: str | None = None) -> torch.device:
    """CUDA, then Apple MPS, then CPU; or the requested device, checked."""
    if requested and requested != "auto":
        device = torch.device(requested)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise DeviceUnavailableError(
                f"device {requested!r} requested but CUDA is not available"
            )
        if device.type == "mps" and not torch.backends.mps.is_available():
            raise DeviceUnavailableError(
                f"device {requested!r} requested but Apple MPS is not available"
            )
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")
