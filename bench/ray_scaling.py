"""Ray engine scaling, run on demand (not a test): images/s with 1, 2, ... CPU encoder actors.

The folder's images are written ``--repeat`` times into a temporary folder of the same layout,
each copy made unique by a few trailing bytes (decoders ignore them; the sha256 differs, so
neither the dedup nor a cache collapses them). A local Ray cluster then embeds the whole
folder with ``ray_extract_embeddings`` (no cache: every image is read, hashed, decoded and
embedded), once per actor count and trial, interleaved. Each timing includes the hash pass and
the actor pool's start (one model load per actor); a warm-up run starts Ray's workers first.

Usage::

    python bench/ray_scaling.py                          # assets/demo x 2, 1 vs 2 actors
    python bench/ray_scaling.py --repeat 4 --trials 2
    python bench/ray_scaling.py --folder ~/photos --actors 1,2,4 --repeat 1

The cluster gets ``max(actors) + 1`` logical CPUs: one per actor (each runs one torch thread)
plus one for reading and decoding tasks. On a machine with fewer cores than that the actors
share them, so expect less than linear scaling; other processes' load skews the figures too
(the load average is printed before and after).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from probe_core.dataset import ImageDataset, scan_folder
from probe_core.distributed import (
    plan_actors,
    ray_extract_embeddings,
    replica_identity,
    require_ray,
)
from probe_core.encoders import DEFAULT_ENCODER

REPO = Path(__file__).resolve().parent.parent
WARM_UP_IMAGES = 32


def write_copies(folder: Path, repeat: int, out: Path) -> int:
    """``repeat`` unique copies of every image of ``folder`` under ``out/<class>/``."""
    dataset = scan_folder(folder)
    for copy in range(repeat):
        for item in dataset.items:
            target = out / item.path
            target = target.with_name(f"copy{copy}-{target.name}")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(item.read_bytes() + f"\nprobe-studio-copy={copy}\n".encode())
    return repeat * len(dataset)


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, default=REPO / "assets" / "demo")
    parser.add_argument("--repeat", type=int, default=2, help="copies of the folder (default 2)")
    parser.add_argument("--encoder", default=DEFAULT_ENCODER)
    parser.add_argument(
        "--actors", default="1,2", help="comma-separated actor counts (default 1,2)"
    )
    parser.add_argument("--trials", type=int, default=1, help="runs per actor count (median)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    counts = [int(n) for n in args.actors.split(",")]
    ray = require_ray()
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary) / "images"
        total = write_copies(args.folder, args.repeat, folder)
        dataset = scan_folder(folder)
        logical_cpus = max(counts) + 1
        print(
            f"{total} images ({args.repeat} x {args.folder.name}), encoder {args.encoder};"
            f" Ray with {logical_cpus} logical CPUs on a machine with {os.cpu_count()} cores;"
            f" load average {load_average()}",
            flush=True,
        )
        ray.init(num_cpus=logical_cpus, include_dashboard=False, log_to_driver=False)
        try:
            resources = ray.cluster_resources()
            identity = replica_identity(ray, args.encoder, plan_actors(resources, 1))
            warm_up = ImageDataset(dataset.items[:WARM_UP_IMAGES], dataset.class_names)
            ray_extract_embeddings(warm_up, plan=plan_actors(resources, 1), identity=identity)
            seconds: dict[int, list[float]] = {n: [] for n in counts}
            for _ in range(args.trials):
                for count in counts:
                    started = time.perf_counter()
                    embeddings = ray_extract_embeddings(
                        dataset, plan=plan_actors(resources, count), identity=identity
                    )
                    seconds[count].append(time.perf_counter() - started)
                    assert embeddings.n_computed == total, embeddings.n_computed
        finally:
            ray.shutdown()
    print()
    print(f"{'actors':>6}  {'seconds':>8}  {'images/s':>8}  {'vs 1 actor':>10}")
    rates = {n: total / statistics.median(runs) for n, runs in seconds.items()}
    for count, runs in seconds.items():
        ratio = f"{rates[count] / rates[counts[0]]:.2f}x"
        print(f"{count:>6}  {statistics.median(runs):8.1f}  {rates[count]:8.1f}  {ratio:>10}")
    print(f"\nload average after: {load_average()} (other processes slow every figure down)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
