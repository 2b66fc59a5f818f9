"""How C is chosen, run on demand (not a test): accuracy and robustness of each C rule.

For the demo and a generated folder (``bench/folders.py``; 10,000 images by default), embeds
once (through the embedding cache), then runs the protocol ``auto`` picks (``cv`` on the demo,
``holdout`` on 10,000 images) under each rule of ``probe_core.probe.C_RULES``: the one the
probe uses (``one-standard-error``) and today's alternatives, among them the rule used before
issue 19 (``best-accuracy``). For each it prints the accuracy, the C chosen in every outer
fold, and what Gaussian noise of standard deviation 1e-6 added to every vector (renormalised)
changes: the chosen Cs and the predictions, over ``--noise-draws`` seeded draws. With
``--lbfgs``, also the probe's rule with its fits as they were before Newton-CG (scikit-learn's
L-BFGS, the final refit stopped at ``DEFAULT_TOL``), timed in the same run.

Usage::

    python bench/c_rule.py                    # demo + 10,000 generated images
    python bench/c_rule.py --size 2000        # a smaller generated folder
    python bench/c_rule.py --skip-large       # demo only
    python bench/c_rule.py --rules one-standard-error best-accuracy
    python bench/c_rule.py --lbfgs --noise-draws 2
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import sys
import time
from dataclasses import replace
from functools import partial
from pathlib import Path
from unittest import mock

import numpy as np
from platformdirs import user_cache_dir

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.folders import synthetic_folder  # noqa: E402
from probe_core import probe as probe_module  # noqa: E402
from probe_core.cache import EmbeddingCache  # noqa: E402
from probe_core.embeddings import Embeddings  # noqa: E402
from probe_core.evaluation.protocols import ProbeResult, run_probe  # noqa: E402
from probe_core.probe import C_RULES, DEFAULT_C_RULE, DEFAULT_TOL, LinearProbe  # noqa: E402
from probe_core.study import Study, StudySettings  # noqa: E402

NOISE_STD = 1e-6


def with_noise(embeddings: Embeddings, seed: int, std: float = NOISE_STD) -> Embeddings:
    """The same embeddings with Gaussian noise of ``std`` added to every vector, renormalised."""
    rng = np.random.default_rng(seed)
    noisy = embeddings.vectors + rng.normal(0, std, embeddings.vectors.shape).astype(np.float32)
    noisy /= np.linalg.norm(noisy, axis=1, keepdims=True)
    return replace(embeddings, vectors=noisy.astype(np.float32))


def fold_cs(result: ProbeResult) -> list[float]:
    """The C chosen for every outer fold (holdout: the one split's)."""
    return [s.chosen_c for s in result.fold_sweeps] or [result.chosen_c]


def compare_rules(
    name: str, embeddings: Embeddings, rules: list[str], noise_draws: int, lbfgs: bool = False
) -> None:
    classes = len(embeddings.class_names)
    print(f"\n{name}: {len(embeddings)} images, {embeddings.dim}-d, {classes} classes")
    variants = [(rule, LinearProbe(seed=0, c_rule=rule), contextlib.nullcontext) for rule in rules]
    if lbfgs:
        before = LinearProbe(seed=0, c_rule=DEFAULT_C_RULE, refit_tol=DEFAULT_TOL)
        lbfgs_fits = partial(mock.patch.object, probe_module, "SKLEARN_SOLVER", "lbfgs")
        variants.append((f"{DEFAULT_C_RULE}, L-BFGS", before, lbfgs_fits))
    for label, probe, solver in variants:
        with solver():
            started = time.perf_counter()
            result = run_probe(embeddings, probe=probe)
            seconds = time.perf_counter() - started
            cs = fold_cs(result)
            flipped_c, flipped_predictions = 0, 0
            for draw in range(noise_draws):
                noisy = run_probe(with_noise(embeddings, draw), probe=probe)
                flipped_c += sum(a != b for a, b in zip(cs, fold_cs(noisy), strict=True))
                flipped_predictions += int(np.sum(noisy.predictions != result.predictions))
        print(
            f"  {label:34s} accuracy {result.metrics.accuracy.value:.4f}"
            f"  C per fold {', '.join(f'{c:.3g}' for c in cs)}"
            f"  under noise ({noise_draws} draws): {flipped_c} C changed,"
            f" {flipped_predictions} predictions changed"
            f"   [{result.protocol.name}, {seconds:.1f} s]"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=10_000, help="generated folder size")
    parser.add_argument("--skip-large", action="store_true")
    parser.add_argument("--rules", nargs="+", default=list(C_RULES), choices=C_RULES)
    parser.add_argument("--noise-draws", type=int, default=3)
    parser.add_argument(
        "--lbfgs", action="store_true", help="also the probe's fits as before Newton-CG"
    )
    parser.add_argument("--cache-dir", default=None, help="embedding cache (default: the user's)")
    args = parser.parse_args()
    study = Study(StudySettings(projection="none"), cache=EmbeddingCache(args.cache_dir))
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs,"
        f" load average {os.getloadavg()[0]:.2f}, Python {platform.python_version()}"
    )
    demo = study.embed(study.scan(REPO / "assets" / "demo"))
    compare_rules("demo", demo, args.rules, args.noise_draws, args.lbfgs)
    if not args.skip_large:
        folder = Path(user_cache_dir("probe-studio")) / "bench" / f"synthetic-{args.size}"
        synthetic_folder(folder, args.size)
        large = study.embed(study.scan(folder))
        compare_rules(
            f"generated folder of {args.size:,}", large, args.rules, args.noise_draws, args.lbfgs
        )


if __name__ == "__main__":
    main()
