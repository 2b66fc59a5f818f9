"""Probe speed benchmark, run on demand (not a test): what does choosing C cost?

On one set of embeddings (synthetic by default: 10,000 x 1280, 10 classes, accuracy about
0.9; or cached real ones), in one process, it prints:

1. holdout: ``LinearProbe().fit`` on the training part (C search + refit) against one
   scikit-learn fit at the chosen C, for the default probe and for the probe as it was
   (full grid, float64 fits), with the coarse-to-fine search and float32 fits apart;
2. the C-selection tolerance: chosen C and test accuracy for several ``selection_tol``,
   on these embeddings and on real ones (``assets/demo`` through the bundled encoder);
3. ``run_probe(protocol="cv")`` on 5,000 images, default probe against the probe as it was;
4. the torch solver against scikit-learn on the CPU: one fit at the chosen C, and the probe;
5. scikit-learn's solver for the probe: Newton-CG (the default, final refit to tol 1e-6)
   against L-BFGS (as before, refit to 1e-4), and Newton-CG on both BLAS threads.

Every row gives wall seconds and the CPU seconds of this process; ratios are measured in
this run. The probe's fits run on one BLAS thread (``probe.BLAS_THREADS``); the plain
scikit-learn fit is timed both with scikit-learn's own threads and on one. On a shared
machine wall times are pessimistic and noisy (the last line says how much CPU other
processes took).

Usage::

    python bench/probe_speed.py                      # 10,000 x 1280 synthetic, 10 classes
    python bench/probe_speed.py --quick              # 2,000 x 256: checks that it all runs
    python bench/probe_speed.py --embeddings e.npz   # arrays "vectors" and "labels"
    python bench/probe_speed.py --skip-demo --skip-cv
    python bench/probe_speed.py --n 20000 --dim 512 --classes 50 --only-solvers
    OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 python bench/probe_speed.py   # shared machine
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import numpy as np
import sklearn
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from threadpoolctl import threadpool_info

from probe_core import probe as probe_module
from probe_core.embeddings import Embeddings
from probe_core.evaluation.protocols import run_probe
from probe_core.probe import DEFAULT_TOL, LinearProbe
from probe_core.torch_probe import TorchLogisticRegression

REPO = Path(__file__).resolve().parent.parent
TOLERANCES = (1e-3, 3e-4, 1e-4, 3e-5, 1e-5)
FULL_GRID = {"search": "grid", "selection_tol": DEFAULT_TOL}  # plus float64 selection fits


# ---------------------------------------------------------------------------- data


def synthetic_embeddings(n: int, dim: int, n_classes: int = 10, seed: int = 0):
    """Unit vectors shaped like image embeddings: a large shared direction (mean cosine
    between images about 0.4), classes overlapping in a 96-d subspace with a decaying
    spectrum, a little isotropic noise. A probe reaches about 0.9 at C near 10."""
    rng = np.random.default_rng(seed)
    rank = min(96, dim // 2)
    mean = rng.normal(size=dim)
    basis = np.linalg.qr(rng.normal(size=(dim, rank)))[0]
    scale = 0.26 / np.sqrt(np.arange(1, rank + 1))
    labels = np.arange(n) % n_classes
    latent = (rng.normal(size=(n_classes, rank))[labels] + 3.2 * rng.normal(size=(n, rank))) * scale
    vectors = 1.76 * mean / np.linalg.norm(mean) + latent @ basis.T
    vectors += 0.3 * rng.normal(size=(n, dim)) / np.sqrt(dim)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors.astype(np.float32), labels


def load_embeddings(path: str):
    data = np.load(path)
    vectors = data["vectors"] if "vectors" in data else data["X"]
    labels = data["labels"] if "labels" in data else data["y"]
    vectors = np.asarray(vectors, dtype=np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True), np.asarray(labels)


def demo_embeddings():
    from probe_core.dataset import scan_folder
    from probe_core.embed import extract_embeddings
    from probe_core.encoders import DEFAULT_ENCODER, load_encoder

    embeddings = extract_embeddings(
        scan_folder(REPO / "assets" / "demo"), load_encoder(DEFAULT_ENCODER, device="cpu")
    )
    return embeddings.vectors, embeddings.labels


def as_embeddings(vectors: np.ndarray, labels: np.ndarray) -> Embeddings:
    names = [f"class_{k}" for k in range(int(labels.max()) + 1)]
    return Embeddings(
        vectors=vectors,
        labels=labels,
        paths=[f"{names[label]}/{i}.png" for i, label in enumerate(labels)],
        class_names=names,
        encoder_id="bench",
    )


# ---------------------------------------------------------------------------- timing


@dataclass
class Timing:
    wall: float
    cpu: float
    fits: int = 0
    iterations: int = 0


class FitCounter:
    """Counts scikit-learn fits and L-BFGS iterations while it is active."""

    def __init__(self):
        self.fits = self.iterations = 0
        self.original = LogisticRegression.fit

    def __enter__(self) -> FitCounter:
        counter, original = self, self.original

        def counting_fit(model, *args, **kwargs):
            result = original(model, *args, **kwargs)
            counter.fits += 1
            counter.iterations += int(np.max(model.n_iter_))
            return result

        LogisticRegression.fit = counting_fit
        return self

    def __exit__(self, *_exc) -> None:
        LogisticRegression.fit = self.original


def timed(function: Callable[[], object]) -> tuple[Timing, object]:
    with FitCounter() as counter:
        wall, cpu = time.perf_counter(), time.process_time()
        result = function()
        timing = Timing(time.perf_counter() - wall, time.process_time() - cpu)
    timing.fits, timing.iterations = counter.fits, counter.iterations
    return timing, result


def sklearn_fit(
    C: float, X: np.ndarray, y: np.ndarray, one_thread: bool = False
) -> LogisticRegression:
    """One plain scikit-learn fit: with scikit-learn's own (default) threads, or on the one
    BLAS thread the probe's fits use."""
    context = probe_module._blas_threads() if one_thread else contextlib.nullcontext()
    with context:
        return LogisticRegression(C=C, max_iter=1000).fit(X, y)


def with_selection_dtype(dtype, function: Callable[[], object]) -> Callable[[], object]:
    """``function`` run with the C-selection fits in ``dtype`` (the module's constant)."""

    def run():
        saved = probe_module.SELECTION_DTYPE
        probe_module.SELECTION_DTYPE = dtype
        try:
            return function()
        finally:
            probe_module.SELECTION_DTYPE = saved

    return run


def row(label: str, timing: Timing, note: str = "") -> str:
    fits = f"{timing.fits:5d} {timing.iterations:6d}" if timing.fits else " " * 12
    return f"{label:<46}{timing.wall:8.2f}{timing.cpu:8.2f} {fits}  {note}".rstrip()


def ratio(a: Timing, b: Timing) -> str:
    return f"{a.wall / b.wall:.2f}x wall, {a.cpu / b.cpu:.2f}x cpu"


def header(title: str) -> None:
    print(f"\n{title}\n{'':<46}{'wall s':>8}{'cpu s':>8} {'fits':>5} {'iters':>6}  note")


# ---------------------------------------------------------------------------- load


def busy_core_seconds() -> tuple[float, float] | None:
    """(busy core-seconds of the whole machine, CPU seconds of this process)."""
    try:
        with open("/proc/stat") as handle:
            fields = [int(value) for value in handle.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    machine = (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")
    return machine, time.process_time()


def machine_line() -> str:
    load = " ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    pools = ", ".join(
        f"{pool['internal_api']} {pool['num_threads']} threads" for pool in threadpool_info()
    )
    return (
        f"machine: {platform.system()} {platform.machine()}, {os.cpu_count()} CPUs,"
        f" load average {load}, python {platform.python_version()},"
        f" scikit-learn {sklearn.__version__}, numpy {np.__version__} ({pools}),"
        f" torch {torch.__version__} ({torch.get_num_threads()} threads)"
    )


# ---------------------------------------------------------------------------- sections


def holdout_section(X_train, y_train, X_test, y_test) -> float:
    size = f"{len(X_train)} x {X_train.shape[1]} (test {len(X_test)})"
    header(f"holdout: LinearProbe().fit on {size}; C search + refit")
    default_t, default = timed(lambda: LinearProbe(seed=0).fit(X_train, y_train))
    chosen = default.chosen_c_
    one_t, _ = timed(lambda: sklearn_fit(chosen, X_train.astype(np.float64), y_train))
    single_t, _ = timed(lambda: sklearn_fit(chosen, X_train.astype(np.float64), y_train, True))
    variants = {}  # (search, selection dtype) -> (timing, probe)
    for search in ("grid", "coarse-to-fine"):
        for dtype in (np.float64, np.float32):
            variants[search, dtype] = timed(
                with_selection_dtype(
                    dtype,
                    lambda search=search: LinearProbe(
                        seed=0, search=search, selection_tol=DEFAULT_TOL
                    ).fit(X_train, y_train),
                )
            )

    def note(probe) -> str:
        sweep = probe.sweep_
        return (
            f"C={sweep.chosen_c:.3g}, {len(sweep.c_values)} C measured,"
            f" test acc {probe.score(X_test, y_test):.4f}"
        )

    print(row("one scikit-learn fit at the chosen C", one_t, f"C={chosen:.3g}, its own threads"))
    print(row("  the same on one BLAS thread", single_t, "as the probe's refit runs"))
    print(row(f"default ({default.search_for(X_train)}, float32)", default_t, note(default)))
    for (search, dtype), (timing, probe) in variants.items():
        label = f"{search}, {np.dtype(dtype).name} selection"
        print(row(label, timing, note(probe)))
    grid64 = variants["grid", np.float64][0]
    grid32, fine32 = variants["grid", np.float32][0], variants["coarse-to-fine", np.float32][0]
    print(f"  default / one fit:                 {ratio(default_t, one_t)}   (target <= 1.5x)")
    print(f"  default / one fit on one thread:   {ratio(default_t, single_t)}")
    print(f"  one fit / one fit on one thread:   {ratio(one_t, single_t)}")
    print(f"  grid / coarse-to-fine:             {ratio(grid32, fine32)}   (both float32)")
    print(f"  float64 / float32:                 {ratio(grid64, grid32)}   (both grid)")
    return chosen


def tolerance_section(title: str, X, y, search: str) -> None:
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.25, stratify=y, random_state=0
    )
    header(f"C-selection tolerance, {search} search: {title}")
    for tol in TOLERANCES:
        timing, probe = timed(
            lambda tol=tol: LinearProbe(seed=0, search=search, selection_tol=tol).fit(
                X_train, y_train
            )
        )
        note = f"C={probe.chosen_c_:.3g}, test acc {probe.score(X_test, y_test):.4f}"
        print(row(f"selection_tol={tol:g}", timing, note))
    print(f"  default: selection_tol = tol = {DEFAULT_TOL:g}")


def cv_section(X, y, n: int) -> None:
    rows = np.random.default_rng(0).permutation(len(y))[:n]
    embeddings = as_embeddings(X[rows], y[rows])
    header(f"run_probe(protocol='cv'), {n} images, 5 folds + the final k-fold probe")
    runs = {
        "default": lambda: run_probe(embeddings, protocol="cv", duplicate_threshold=None),
        "full grid, float64 selection": with_selection_dtype(
            np.float64,
            lambda: run_probe(
                embeddings,
                protocol="cv",
                duplicate_threshold=None,
                probe=LinearProbe(**FULL_GRID),
            ),
        ),
    }
    timings = {}
    for label, function in runs.items():
        timing, result = timed(function)
        timings[label] = timing
        note = f"C={result.chosen_c:.3g}, accuracy {result.metrics.accuracy.value:.4f}"
        print(row(label, timing, note))
    default, before = timings.values()
    print(f"  full grid float64 / default: {ratio(before, default)}")


def solver_section(X_train, y_train, X_test, y_test) -> None:
    size = f"{len(X_train)} x {X_train.shape[1]}, {len(np.unique(y_train))} classes"
    header(f"scikit-learn solver: LinearProbe().fit on {size}; C search + refit")

    def fit(**options):
        return lambda: LinearProbe(seed=0, **options).fit(X_train, y_train)

    newton_t, newton = timed(fit())
    with mock.patch.object(probe_module, "SKLEARN_SOLVER", "lbfgs"):
        lbfgs_t, lbfgs = timed(fit(refit_tol=DEFAULT_TOL))
    with mock.patch.object(probe_module, "BLAS_THREADS", os.cpu_count() or 1):
        threads_t, _ = timed(fit())

    def note(probe) -> str:
        return f"C={probe.chosen_c_:.3g}, test acc {probe.score(X_test, y_test):.4f}"

    print(row("Newton-CG, refit to 1e-6 (default)", newton_t, note(newton)))
    print(row("L-BFGS, refit to 1e-4 (before)", lbfgs_t, note(lbfgs)))
    print(row(f"Newton-CG on {os.cpu_count()} BLAS threads", threads_t))
    print(f"  Newton-CG / L-BFGS:                {ratio(newton_t, lbfgs_t)}")
    print(f"  one BLAS thread / all:             {ratio(newton_t, threads_t)}")


def sklearn_objective(model, X, y, C: float) -> float:
    coef, intercept = np.asarray(model.coef_, np.float64), np.asarray(model.intercept_)
    logits = X.astype(np.float64) @ coef.T + intercept
    if logits.shape[1] == 1:
        logits = np.hstack([np.zeros_like(logits), logits])
    logits -= logits.max(axis=1, keepdims=True)
    log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    columns = np.searchsorted(np.unique(y), y)
    penalty = np.sum(coef**2) / (2 * C * len(y))
    return float(-np.mean(log_p[np.arange(len(y)), columns]) + penalty)


def torch_section(X_train, y_train, X_test, y_test, chosen: float) -> None:
    header(f"torch solver on the CPU against scikit-learn, C={chosen:.3g}")
    fits = {
        "scikit-learn, float64": lambda: sklearn_fit(chosen, X_train.astype(np.float64), y_train),
        "scikit-learn, float32": lambda: sklearn_fit(chosen, X_train, y_train),
        "torch L-BFGS, float32": lambda: TorchLogisticRegression(C=chosen, device="cpu").fit(
            X_train, y_train
        ),
        "torch mini-batch (Adam), float32": lambda: TorchLogisticRegression(
            C=chosen, device="cpu", minibatch=True
        ).fit(X_train, y_train),
    }
    timings = {}
    for label, function in fits.items():
        timing, model = timed(function)
        timings[label] = timing
        note = (
            f"{int(np.max(model.n_iter_))} iterations/steps,"
            f" objective {sklearn_objective(model, X_train, y_train, chosen):.5f},"
            f" test acc {model.score(X_test, y_test):.4f}"
        )
        print(row(label, timing, note))
    sk, th = timings["scikit-learn, float64"], timings["torch L-BFGS, float32"]
    print(f"  scikit-learn / torch:    {ratio(sk, th)}   (one fit)")
    probes = {}
    for solver in ("sklearn", "torch"):
        timing, probe = timed(
            lambda solver=solver: LinearProbe(seed=0, solver=solver, device="cpu").fit(
                X_train, y_train
            )
        )
        probes[solver] = timing
        note = f"C={probe.chosen_c_:.3g}, test acc {probe.score(X_test, y_test):.4f}"
        print(row(f"LinearProbe(solver={solver!r})", timing, note))
    print(f"  sklearn / torch probe:   {ratio(probes['sklearn'], probes['torch'])}")


# ---------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--embeddings", help=".npz with 'vectors' and 'labels' (or X, y)")
    parser.add_argument("--n", type=int, default=10_000, help="synthetic images")
    parser.add_argument("--dim", type=int, default=1280, help="synthetic dimensions")
    parser.add_argument("--cv-images", type=int, default=5_000)
    parser.add_argument("--quick", action="store_true", help="2,000 x 256, cv on 1,000")
    parser.add_argument("--skip-demo", action="store_true", help="no real-embedding rows")
    parser.add_argument("--skip-cv", action="store_true")
    parser.add_argument("--skip-torch", action="store_true")
    parser.add_argument("--classes", type=int, default=10, help="synthetic classes")
    parser.add_argument("--only-solvers", action="store_true", help="only section 5")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.quick:
        args.n, args.dim, args.cv_images = 2_000, 256, 1_000
    warnings.simplefilter("ignore", ConvergenceWarning)
    started, at_start = time.perf_counter(), busy_core_seconds()
    if args.embeddings:
        X, y = load_embeddings(args.embeddings)
        source = args.embeddings
    else:
        X, y = synthetic_embeddings(args.n, args.dim, args.classes)
        source = "synthetic"
    print(machine_line())
    print(f"data: {source}, {X.shape[0]} x {X.shape[1]}, {len(np.unique(y))} classes")
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.25, stratify=y, random_state=0
    )
    solver_section(X_train, y_train, X_test, y_test)
    if args.only_solvers:
        return 0
    chosen = holdout_section(X_train, y_train, X_test, y_test)
    tolerance_section(f"{source} {X.shape[0]} x {X.shape[1]}", X, y, "coarse-to-fine")
    if not args.skip_demo:
        demo_X, demo_y = demo_embeddings()
        tolerance_section(f"assets/demo, {demo_X.shape[0]} real images", demo_X, demo_y, "grid")
    if not args.skip_cv:
        cv_section(X, y, min(args.cv_images, len(y)))
    if not args.skip_torch:
        torch_section(X_train, y_train, X_test, y_test, chosen)

    wall = time.perf_counter() - started
    print(f"\ntotal benchmark time {wall:.1f} s")
    now = busy_core_seconds()
    if at_start is not None and now is not None:
        others = max(0.0, (now[0] - at_start[0]) - (now[1] - at_start[1]))
        share = others / (wall * (os.cpu_count() or 1))
        print(
            f"CPU used by other processes meanwhile: {others:.1f} core-s ({share:.0%} of the"
            " machine)"
            + (" - wall times are pessimistic, run again on a quiet machine" if share > 0.1 else "")
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
