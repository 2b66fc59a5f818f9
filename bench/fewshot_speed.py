"""Few-shot benchmark, run on demand (not a test): what does the few-shot curve cost?

On the demo (144 images, 6 classes; or ``--folder``), for two encoders (default the bundled
encoder and the pixel baseline), in one process:

1. evaluation only: ``Study.compare_embeddings`` on the cached embeddings, without and with
   the few-shot curve, trials interleaved; wall and CPU seconds, and the ratio;
2. end to end: ``Study.compare(folder, encoders)`` without and with it (loading the encoders,
   hashing the files, embeddings from the cache), trials interleaved, and the ratio;
3. with ``--reference``: the batched curve against the per-draw reference (a ``LinearProbe``
   per draw choosing its own C, what the curve cost before) on the demo and on a generated
   folder (``--folder-size`` images, 10 classes): each k's mean, the reference's 2.5-97.5%
   band, and whether the batched mean lies inside it.

Usage::

    python bench/fewshot_speed.py                        # 1 and 2, three trials each
    python bench/fewshot_speed.py --trials 5 --reference # and the reference check (minutes)
    python bench/fewshot_speed.py --encoders bundled:efficientnet-lite0,open_clip:ViT-B-32
    python bench/fewshot_speed.py --folder ~/photos --trials 1
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

from platformdirs import user_cache_dir

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from probe_core.openmp import let_idle_threads_sleep  # noqa: E402

let_idle_threads_sleep()  # as the CLI and the app do

import numpy as np  # noqa: E402
import scipy  # noqa: E402
import sklearn  # noqa: E402

from bench.extract import cpu_seconds, other_processes_cpu_seconds  # noqa: E402
from bench.folders import synthetic_folder  # noqa: E402
from probe_core.cache import EmbeddingCache  # noqa: E402
from probe_core.evaluation.fewshot import fewshot_curve  # noqa: E402
from probe_core.study import Study, StudySettings  # noqa: E402

DEMO = REPO / "assets" / "demo"
DEFAULT_ENCODERS = "bundled:efficientnet-lite0,baseline:pixels"


def timed(action) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of ``action()``."""
    wall, cpu = time.perf_counter(), time.process_time()
    action()
    return time.perf_counter() - wall, time.process_time() - cpu


def compare_rows(label: str, runs: dict[bool, list[tuple[float, float]]]) -> None:
    without, with_curve = runs[False], runs[True]
    for name, index in (("wall", 0), ("CPU", 1)):
        plain = statistics.median(r[index] for r in without)
        curve = statistics.median(r[index] for r in with_curve)
        print(
            f"  {label:16s} {name:4s}  without few-shot {plain:6.2f} s   with {curve:6.2f} s"
            f"   ratio {curve / plain:4.2f}   (few-shot alone {curve - plain:5.2f} s)"
        )


def speed(args: argparse.Namespace, cache: EmbeddingCache, names: list[str]) -> None:
    source = Path(args.folder)
    study = Study(StudySettings(projection="none", seed=args.seed), cache=cache)
    embeddings = study.compare(str(source), names).embeddings  # fills the cache
    n_images = len(next(iter(embeddings.values())))
    print(f"\n{source.name}: {n_images} images, encoders {', '.join(names)}")
    evaluation: dict[bool, list] = {False: [], True: []}
    end_to_end: dict[bool, list] = {False: [], True: []}
    for _ in range(args.trials):
        for fewshot in (False, True):
            evaluation[fewshot].append(
                timed(lambda f=fewshot: study.compare_embeddings(embeddings, fewshot=f))
            )
    for _ in range(args.trials):
        for fewshot in (False, True):
            fresh = Study(StudySettings(projection="none", seed=args.seed), cache=cache)
            end_to_end[fewshot].append(
                timed(lambda f=fewshot, s=fresh: s.compare(str(source), names, fewshot=f))
            )
    print(f"medians of {args.trials} trials, interleaved:")
    compare_rows("evaluation only", evaluation)
    compare_rows("end to end", end_to_end)


def reference(label: str, source: Path, cache: EmbeddingCache, names: list[str], seed: int):
    study = Study(StudySettings(projection="none", seed=seed), cache=cache)
    outcome = study.compare(str(source), names)
    print(f"\n{label}: {len(next(iter(outcome.embeddings.values())))} images")
    for name in names:
        arguments = {
            "embeddings": outcome.embeddings[name],
            "result": outcome.comparison.results[name],
            "seed": seed,
            "groups": outcome.comparison.groups,
        }
        curves = {}
        seconds = {}
        for fit in ("per-draw", "batched"):
            started = time.perf_counter()
            curves[fit] = fewshot_curve(**arguments, fit=fit)
            seconds[fit] = time.perf_counter() - started
        print(
            f"  {name}: per-draw reference {seconds['per-draw']:.1f} s, batched"
            f" {seconds['batched']:.2f} s ({seconds['per-draw'] / seconds['batched']:.0f}x)"
        )
        inside = 0
        for old, new in zip(curves["per-draw"].points, curves["batched"].points, strict=True):
            within = old.low <= new.accuracy <= old.high
            inside += within
            print(
                f"    k = {old.k:3d}  reference {old.accuracy:.3f} [{old.low:.3f}, {old.high:.3f}]"
                f"  batched {new.accuracy:.3f} [{new.low:.3f}, {new.high:.3f}]"
                f"  {'inside' if within else 'OUTSIDE'}"
            )
        print(f"    {inside} of {len(curves['batched'].points)} batched means inside the band")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoders", default=DEFAULT_ENCODERS)
    parser.add_argument("--folder", default=str(DEMO), help="the folder timed (default: demo)")
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reference", action="store_true", help="also check against per-draw")
    parser.add_argument("--folder-size", type=int, default=600, help="generated folder size")
    parser.add_argument("--cache-dir", default=None, help="embedding cache (default: the user's)")
    args = parser.parse_args()
    names = args.encoders.split(",")
    cache = EmbeddingCache(args.cache_dir)
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"machine: {platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, load average"
        f" {load} at start, Python {platform.python_version()}, numpy {np.__version__}, scipy"
        f" {scipy.__version__}, scikit-learn {sklearn.__version__}"
    )
    at_start = cpu_seconds()
    started = time.perf_counter()
    speed(args, cache, names)
    if args.reference:
        reference("demo", DEMO, cache, names, args.seed)
        folder = Path(user_cache_dir("probe-studio")) / "bench" / f"synthetic-{args.folder_size}"
        synthetic_folder(folder, args.folder_size)
        reference(f"generated folder of {args.folder_size}", folder, cache, names, args.seed)
    others = other_processes_cpu_seconds(at_start)
    if others is not None:
        share = others / (time.perf_counter() - started) / (os.cpu_count() or 1)
        print(
            f"\nother processes used {share:.0%} of the machine's CPU during the run"
            + ("  (figures pessimistic)" if share > 0.10 else "")
        )


if __name__ == "__main__":
    main()
