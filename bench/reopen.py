"""Re-open benchmark, run on demand (not a test): how much of a CLI run does a re-run redo?

Runs ``probe-studio run`` on one folder twice, back to back, each in a fresh process: cold
(an empty cache folder) and warm (the same cache folder again: embeddings and the probe
result and the map come from the caches). Prints both wall times, warm / cold, where the warm
run's time went (from the moment each progress line appeared), whether it really hit the
caches, and whether it wrote the same numbers. The ratio is measured per ``--projection``
(a cold and a warm run each).

Usage::

    python bench/reopen.py                        # 10,000 generated 28-px PNGs, pca and umap
    python bench/reopen.py --quick                # 1,000 images
    python bench/reopen.py --projection pca       # one map method only
    python bench/reopen.py --folder ~/photos      # your own folder

The generated folder (10 classes, ``bench/folders.py``) is written once to the user's cache
folder and reused. Embedding 10,000 images on 2 CPU cores takes a few minutes per cold run.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from platformdirs import user_cache_dir

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.folders import synthetic_folder  # noqa: E402

HIT_LINE = "probe result from cache"
# Progress lines of ``probe-studio run`` in the order they appear, and what ends at each.
PHASES = (
    (("image files in",), "start-up (imports) + scan"),
    (("encoder ",), "load the encoder"),
    ((HIT_LINE, "fitting and scoring"), "embed: hash every file, read the embedding cache"),
    (("embedded ",), "probe: key + read the result cache (or fit)"),
    (("protocol ",), "write outputs (metrics, tables, parquet, confusion)"),
    (("computing the", "map from cache"), "print the summary"),
    (("results written",), "the map (compute or read the cache, write)"),
)
SAME_OUTPUTS = ("metrics.json", "predictions.csv", "label_issues.csv", "duplicates.csv")
MAP_OUTPUTS = ("projection.csv", "map_quality.json")  # with --projection umap or pca
RUN_DESCRIPTION = "settings"  # the part of metrics.json that tells how the run went


@dataclass
class Run:
    seconds: float
    output: str
    phases: list[tuple[str, float]] = field(default_factory=list)  # (what, seconds)

    @property
    def probe_from_cache(self) -> bool:
        return HIT_LINE in self.output

    @property
    def map_from_cache(self) -> bool:
        return "map from cache" in self.output

    @property
    def embeddings_from_cache(self) -> bool:
        return "embedded 0 images" in self.output


def run_cli(folder: Path, cache_dir: Path, out: Path, projection: str) -> Run:
    """``probe-studio run`` in a fresh process, each output line timestamped on arrival."""
    command = [
        sys.executable, "-m", "probe_core.cli", "run", str(folder), "--out", str(out),
        "--cache-dir", str(cache_dir), "--projection", projection,
    ]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO)}
    started = time.perf_counter()
    process = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines: list[tuple[float, str]] = []
    for line in process.stdout:
        lines.append((time.perf_counter() - started, line))
    process.wait()
    seconds = time.perf_counter() - started
    output = "".join(line for _, line in lines)
    if process.returncode != 0:
        raise SystemExit(f"probe-studio run failed ({process.returncode}):\n{output}")
    return Run(seconds, output, phases_of(lines, seconds))


def phases_of(lines: list[tuple[float, str]], total: float) -> list[tuple[str, float]]:
    phases, last, position = [], 0.0, 0
    for markers, what in PHASES:
        for index in range(position, len(lines)):
            at, line = lines[index]
            if any(marker in line.split("\r")[-1] for marker in markers):
                phases.append((what, at - last))
                last, position = at, index + 1
                break
    phases.append(("exit (interpreter shutdown)", total - last))
    return phases


def same_numbers(cold: Path, warm: Path) -> bool:
    """Identical files; for metrics.json, identical apart from how the run went (e.g. the
    precision recorded while embedding, which a run that embeds nothing does not use)."""
    if cold.suffix != ".json":
        return filecmp.cmp(cold, warm, shallow=False)
    documents = [json.loads(path.read_text()) for path in (cold, warm)]
    for document in documents:
        document.pop(RUN_DESCRIPTION, None)
    return documents[0] == documents[1]


def busy_core_seconds() -> float | None:
    """Busy core-seconds of the whole machine so far (Linux), to flag a noisy measurement."""
    try:
        with open("/proc/stat") as handle:
            fields = [int(value) for value in handle.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def children_core_seconds() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(folder: Path, projection: str, work: Path) -> None:
    cache_dir = work / f"cache-{projection}"
    machine_before, ours_before = busy_core_seconds(), children_core_seconds()
    cold = run_cli(folder, cache_dir, work / f"cold-{projection}", projection)
    warm = run_cli(folder, cache_dir, work / f"warm-{projection}", projection)
    elapsed = cold.seconds + warm.seconds
    expected = SAME_OUTPUTS + (MAP_OUTPUTS if projection != "none" else ())
    same = [
        name
        for name in expected
        if same_numbers(work / f"cold-{projection}" / name, work / f"warm-{projection}" / name)
    ]
    print(f"\n--projection {projection}")
    print(f"  cold  {cold.seconds:7.1f} s   (empty cache folder)")
    print(
        f"  warm  {warm.seconds:7.1f} s   embeddings from cache: {warm.embeddings_from_cache},"
        f" probe result from cache: {warm.probe_from_cache},"
        f" map from cache: {warm.map_from_cache}"
    )
    print(f"  warm / cold = {warm.seconds / cold.seconds:.3f}   (target <= 0.1)")
    print("  warm run, by phase:")
    for what, seconds in warm.phases:
        print(f"    {seconds:7.2f} s  {what}")
    print(f"  identical outputs cold vs warm: {', '.join(same) or 'none'}")
    reused_map = warm.map_from_cache or projection == "none"
    if len(same) < len(expected) or not warm.probe_from_cache or not reused_map:
        print("  WARNING: the warm run did not reuse everything (was code edited in between?)")
    if machine_before is not None:
        others = (busy_core_seconds() - machine_before) - (children_core_seconds() - ours_before)
        share = max(0.0, others) / (elapsed * (os.cpu_count() or 1))
        print(
            f"  CPU used by other processes meanwhile: {max(0.0, others):.0f} core-s"
            f" ({share:.0%} of the machine)"
            + (" - noisy: measure again on a quiet machine" if share > 0.1 else "")
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, default=None, help="default: a generated folder")
    parser.add_argument("--quick", action="store_true", help="1,000 generated images")
    parser.add_argument("--images", type=int, default=None, help="generated folder size")
    parser.add_argument(
        "--projection", nargs="+", choices=("pca", "umap", "none"), default=["pca", "umap"]
    )
    parser.add_argument(
        "--work", type=Path, default=None, help="keep caches and outputs here (default: removed)"
    )
    args = parser.parse_args(argv)
    folder = args.folder
    if folder is None:
        size = args.images or (1_000 if args.quick else 10_000)
        folder = Path(user_cache_dir("probe-studio")) / "bench" / f"synthetic-{size}"
        print(f"generating / reusing {folder}")
        synthetic_folder(folder, size)
    load = os.getloadavg() if hasattr(os, "getloadavg") else ()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()},"
        f" load average {' '.join(f'{value:.1f}' for value in load)}"
    )
    print(f"folder: {folder}")
    with tempfile.TemporaryDirectory(prefix="probe-studio-reopen-") as temporary:
        work = args.work or Path(temporary)
        for projection in args.projection:
            if (work / f"cache-{projection}").exists():
                raise SystemExit(f"{work / f'cache-{projection}'} exists: a cold run needs none")
            measure(folder, projection, work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
