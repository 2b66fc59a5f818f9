"""Protocol benchmark, run on demand (not a test): what does scoring every image cost?

For the demo and a generated 10k-image folder (10 classes of 28-px PNGs), embeds once
(through the embedding cache) and then times ``Study.evaluate`` under ``cv`` (nested 5-fold:
every image scored) and ``holdout`` (25% scored), printing both and the ratio measured in
the same run, with the accuracy and interval width each gives.

Usage::

    python bench/protocols.py                 # demo + 10,000 generated images
    python bench/protocols.py --size 2000     # a smaller generated folder
    python bench/protocols.py --skip-large    # demo only
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

from platformdirs import user_cache_dir

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.folders import synthetic_folder  # noqa: E402
from probe_core.allocator import keep_freed_memory_for_reuse  # noqa: E402
from probe_core.cache import EmbeddingCache  # noqa: E402
from probe_core.study import Study, StudySettings  # noqa: E402


def time_protocols(name: str, study_for, dataset_source) -> None:
    study = study_for("holdout")
    embeddings = study.embed(study.scan(dataset_source))
    classes = len(embeddings.class_names)
    print(f"\n{name}: {len(embeddings)} images, {embeddings.dim}-d, {classes} classes")
    timings = {}
    for protocol in ("holdout", "cv"):
        started = time.perf_counter()
        result = study_for(protocol).evaluate(embeddings)
        timings[protocol] = time.perf_counter() - started
        accuracy = result.metrics.accuracy
        print(
            f"  {protocol:8s} {timings[protocol]:7.1f} s   {len(result.evaluated):6d} images scored"
            f"   accuracy {accuracy}   interval width {accuracy.high - accuracy.low:.3f}"
            f"   {result.protocol.describe()}"
        )
    print(f"  cv / holdout time: {timings['cv'] / timings['holdout']:.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=10_000, help="generated folder size")
    parser.add_argument("--skip-large", action="store_true")
    parser.add_argument("--cache-dir", default=None, help="embedding cache (default: the user's)")
    args = parser.parse_args()
    keep_freed_memory_for_reuse()
    cache = EmbeddingCache(args.cache_dir)
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs,"
        f" Python {platform.python_version()}"
    )

    def study_for(protocol: str) -> Study:
        return Study(StudySettings(protocol=protocol, projection="none"), cache=cache)

    time_protocols("demo", study_for, REPO / "assets" / "demo")
    if not args.skip_large:
        folder = Path(user_cache_dir("probe-studio")) / "bench" / f"synthetic-{args.size}"
        print(f"\ngenerating / reusing {folder} (embedding it the first time takes minutes)")
        synthetic_folder(folder, args.size)
        time_protocols(f"generated folder of {args.size:,}", study_for, folder)


if __name__ == "__main__":
    main()
