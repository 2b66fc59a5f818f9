"""App scale benchmark, run on demand (not a test): 100,000 precomputed embeddings in the app.

Generates (once) a Parquet file of 100,000 rows, 512-d, 50 classes (``bench/folders.py``;
every 100th row has a small image file, for thumbnails), then drives the app headless
(``AppTest``) in this process as a user would: open the file from the server ("Open
embeddings"), Run probe, the Results page, the Map page (PCA to 50 dimensions, then UMAP),
a box selection on the map, and one hover thumbnail. It prints the wall time of each stage,
the process's peak RSS after it (the server's memory: AppTest runs the app here), and how
large the map's chart is (what the browser receives).

Usage::

    python bench/app_scale.py                    # 100,000 x 512, 50 classes
    python bench/app_scale.py --rows 20000       # smaller
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from platformdirs import user_cache_dir

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.folders import synthetic_embeddings_file  # noqa: E402

TIMEOUT = 1800


def trace_length(values) -> int:
    """Points in a Plotly trace array: a list, or Plotly's typed array (base64 ``bdata``)."""
    if isinstance(values, dict) and "bdata" in values:
        return len(base64.b64decode(values["bdata"])) // np.dtype(values["dtype"]).itemsize
    return len(values)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--classes", type=int, default=50)
    args = parser.parse_args(argv)
    base = Path(user_cache_dir("probe-studio")) / "bench" / f"embeddings-{args.rows}-{args.dim}"
    started = time.perf_counter()
    parquet = synthetic_embeddings_file(
        base / "embeddings.parquet", args.rows, args.dim, args.classes, image_root=base / "images"
    )
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python"
        f" {platform.python_version()}, load average"
        f" {' '.join(f'{v:.1f}' for v in os.getloadavg())}"
    )
    print(f"file: {parquet} ({parquet.stat().st_size / 2**20:.0f} MiB), ready after"
          f" {time.perf_counter() - started:.1f} s")  # fmt: skip

    with tempfile.TemporaryDirectory(prefix="probe-studio-app-scale-") as temporary:
        os.environ["PROBE_STUDIO_CACHE_DIR"] = temporary  # cold result and map caches
        os.environ["PROBE_STUDIO_SERVER_ROOTS"] = str(base)
        from streamlit.testing.v1 import AppTest

        from studio import shared

        rows: list[tuple[str, float, float]] = []

        def stage(name: str, action) -> None:
            began = time.perf_counter()
            action()
            if at.exception:
                raise SystemExit(f"{name}: {[e.value for e in at.exception]}")
            rows.append((name, time.perf_counter() - began, peak_rss_mib()))
            print(f"  {name:<46}{rows[-1][1]:8.1f} s   peak RSS {rows[-1][2]:7.0f} MiB", flush=True)

        print(f"\nstage{'':<45}seconds   (process peak RSS after the stage)")
        rows.append(("start (imports)", 0.0, peak_rss_mib()))
        at = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT)
        stage("first page (the demo preview)", at.run)

        def open_file() -> None:
            at.text_input(key="embeddings_path").set_value(str(parquet))
            next(b for b in at.button if b.label == "Open embeddings").click().run()

        stage("Open embeddings (read + check the file)", open_file)
        stage(
            "Run probe (protocol auto, then Results)",
            lambda: next(b for b in at.button if b.label == "Run probe").click().run(),
        )
        current = at.session_state["study"]
        result = current.result
        print(
            f"    protocol {result.protocol.name}, {len(result.evaluated):,} images scored,"
            f" accuracy {result.metrics.accuracy.value:.3f}, C = {result.chosen_c:.3g}"
        )
        stage("Map page (PCA 50 -> UMAP, 2-D)", lambda: at.switch_page("app_pages/map.py").run())
        spec = next(c for c in at.get("plotly_chart") if c.key == "map").proto.spec
        traces = json.loads(spec)["data"]
        points = sum(trace_length(trace["x"]) for trace in traces)
        webgl = all(trace["type"] == "scattergl" for trace in traces)
        size = len(spec) / 2**20
        print(f"    map chart: {size:.1f} MiB of JSON, {points:,} points (WebGL: {webgl})")

        def select_box() -> None:
            from streamlit.elements.plotly_chart import PlotlySelectionState, PlotlyState

            paths = current.embeddings.paths
            points = [
                {"point_index": i, "curve_number": 0, "customdata": [paths[i], i]}
                for i in range(0, 5000, 50)
            ]
            at.session_state["map"] = PlotlyState(
                {"selection": PlotlySelectionState(
                    {"points": points, "point_indices": list(range(len(points))), "box": [],
                     "lasso": []})})  # fmt: skip
            at.run()

        stage("box selection of 100 points", select_box)
        headings = [s.value for s in at.subheader if s.value.endswith("selected images")]
        print(f"    {headings[0] if headings else 'NO SELECTION SHOWN'}")
        began = time.perf_counter()
        thumb = shared.thumbnails_for(current, [100])
        seconds = time.perf_counter() - began
        found = "found" if thumb else "MISSING"
        print(f"  {'one hover thumbnail (fetched lazily)':<46}{seconds:8.3f} s   {found}")
    print(f"\npeak RSS {peak_rss_mib():.0f} MiB; total {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
