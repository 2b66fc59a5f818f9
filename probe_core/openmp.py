"""Let OpenMP's worker threads sleep soon after each parallel region instead of spinning.

GNU OpenMP, the runtime of torch's Linux wheels, keeps every worker thread spinning for
``GOMP_SPINCOUNT`` iterations (300,000 by default: about 9 ms of a core here) after each
parallel region, in case another follows at once. On a small CPU that spin takes the core
away from the threads that decode the next batch of images, while the forward pass itself
runs no faster with it (bench/extract.py). The runtime reads the setting once, when it
loads at ``import torch``, so entry points (the CLI, the app, the benchmarks) call this
before anything imports torch; the library itself never does.
"""

from __future__ import annotations

import os
import sys

SPIN_COUNT = 2000
"""Iterations a worker spins before it sleeps: microseconds here, against 9 ms by default."""

USER_SETTINGS = ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")


def let_idle_threads_sleep() -> bool:
    """Set ``GOMP_SPINCOUNT`` for the OpenMP runtimes loaded from now on; True if set.

    Nothing changes when torch is already imported (its runtime has read the setting) or
    when the user has chosen a spin count or a wait policy themselves.
    """
    if "torch" in sys.modules or any(name in os.environ for name in USER_SETTINGS):
        return False
    os.environ["GOMP_SPINCOUNT"] = str(SPIN_COUNT)
    return True
