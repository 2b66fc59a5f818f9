"""Live view benchmark, run on demand (not a test): how many updates a second one session's
Live page gets on this machine with the bundled encoder.

Two measurements:

1. ``server``: ``studio.webcam.classify_frame`` in this process on 256 px camera-like JPEG
   frames, as the Live page's fragment runs it for each frame (data URL decoded, image
   decoded, preprocessed, encoder forward pass, probe), after a warm-up: the median of each
   stage and the ceiling it puts on updates a second.
2. ``browser``: the whole loop. ``streamlit run app.py`` serves the studio; Chromium with its
   fake camera opens it, runs the bundled demo's probe (Data page, Run probe), opens Live and
   turns the camera on. The page's own counter (updates in its last 3 s) is read once a
   second for ``--seconds``; the median and the lowest are printed, with the server's
   milliseconds per frame as the page shows them.

Run it niced on a shared machine and quote the load average it prints::

    nice -n 10 python bench/live.py                # both, 20 s in the browser
    nice -n 10 python bench/live.py --server-only  # no browser
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from probe_core.openmp import let_idle_threads_sleep  # noqa: E402

let_idle_threads_sleep()

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from probe_core.encoders import DEFAULT_ENCODER, load_encoder  # noqa: E402
from probe_core.probe import ProbeWeights  # noqa: E402
from studio.webcam import CAPTURE_SIDE, classify_frame  # noqa: E402


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f}, {five:.2f}, {fifteen:.2f} on {os.cpu_count()} CPUs"


def camera_frame(step: int) -> str:
    """A 256 px JPEG data URL like the browser's: a background, a moving disc, noise."""
    rng = np.random.default_rng(step)
    y, x = np.mgrid[0:CAPTURE_SIDE, 0:CAPTURE_SIDE]
    cx = CAPTURE_SIDE / 2 + 60 * np.cos(step / 5)
    cy = CAPTURE_SIDE / 2 + 60 * np.sin(step / 5)
    disc = (x - cx) ** 2 + (y - cy) ** 2 < 40**2
    pixels = np.full((CAPTURE_SIDE, CAPTURE_SIDE, 3), (40.0, 120.0, 60.0))
    pixels[disc] = (230, 200, 40)
    pixels += rng.normal(0, 10, pixels.shape)
    buffer = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=92)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def server_side(frames: int) -> None:
    encoder = load_encoder(DEFAULT_ENCODER, device="cpu")
    rng = np.random.default_rng(0)
    weights = ProbeWeights(
        coef=rng.normal(0, 1, (6, encoder.dim)).astype(np.float32),
        intercept=np.zeros(6, dtype=np.float32),
        class_names=[f"class {i}" for i in range(6)],
        encoder_id=encoder.encoder_id,
        chosen_c=1.0,
        encoder_name=DEFAULT_ENCODER,
    )
    urls = [camera_frame(step) for step in range(frames + 5)]
    for url in urls[:5]:  # warm-up
        classify_frame({"id": "w", "image": url}, encoder, weights)
    stages: dict[str, list[float]] = {"decode": [], "preprocess": [], "forward": [], "probe": []}
    totals = []
    for step, url in enumerate(urls[5:]):
        started = time.perf_counter()
        answer = classify_frame({"id": str(step), "image": url}, encoder, weights)
        totals.append((time.perf_counter() - started) * 1000)
        for stage, values in stages.items():
            values.append(answer["ms"][stage])
    median = statistics.median(totals)
    parts = ", ".join(f"{stage} {statistics.median(v):.1f}" for stage, v in stages.items())
    print(
        f"server   {frames} frames of {CAPTURE_SIDE} px: median {median:.0f} ms a frame"
        f" (p90 {np.percentile(totals, 90):.0f} ms; {parts} ms)"
        f" -> at most {1000 / median:.1f} updates a second"
    )


def browser_side(seconds: float) -> None:
    from playwright import sync_api

    from tests.conftest import CHROMIUM_ARGS, chromium_executable, streamlit_server

    fake_camera = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]
    with tempfile.TemporaryDirectory(prefix="probe-studio-bench-live-") as work:
        env = {**os.environ, "PROBE_STUDIO_CACHE_DIR": str(Path(work) / "cache")}
        with (
            streamlit_server(Path(work) / "streamlit.log", env) as (url, _),
            sync_api.sync_playwright() as playwright,
        ):
            browser = playwright.chromium.launch(
                executable_path=str(chromium_executable()), args=CHROMIUM_ARGS + fake_camera
            )
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(300_000)
            page.goto(url)
            page.get_by_role("button", name="Run probe").click()
            page.get_by_test_id("stMetric").filter(
                has=page.get_by_text("Accuracy", exact=True)
            ).wait_for()  # on Results
            page.locator('[data-testid="stApp"][data-test-script-state="notRunning"]').wait_for()
            page.get_by_test_id("stSidebarNavLink").filter(has_text="Live").click()
            page.get_by_role("button", name="Turn on the camera").click()
            rate = page.locator(".ps-rate")
            page.wait_for_function(
                "() => [...document.querySelectorAll('*')].map((x) => x.shadowRoot)"
                ".filter(Boolean).some((r) => { const e = r.querySelector('.ps-rate');"
                " return e && e.dataset.rate; })"
            )
            time.sleep(3)  # a full window of the page's counter
            rates = []
            for _ in range(int(seconds)):
                rates.append(float(rate.get_attribute("data-rate")))
                time.sleep(1)
            timing = page.locator(".ps-timing").inner_text()
            browser.close()
    server_ms = re.search(r"(\d+) ms a frame", timing)
    print(
        f"browser  {len(rates)} readings of the Live page's updates a second (its last 3 s):"
        f" median {statistics.median(rates):.1f}, lowest {min(rates):.1f}, highest"
        f" {max(rates):.1f}; the page's last server time {server_ms.group(1)} ms a frame"
        if server_ms
        else f"browser  no server time shown ({timing!r})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=60, help="frames timed in-process")
    parser.add_argument("--seconds", type=float, default=20, help="seconds read in the browser")
    parser.add_argument("--server-only", action="store_true", help="skip the browser")
    args = parser.parse_args()
    import torch

    print(f"machine  {load_average()}; torch threads {torch.get_num_threads()}")
    server_side(args.frames)
    print(f"machine  {load_average()}")
    if not args.server_only:
        browser_side(args.seconds)
        print(f"machine  {load_average()}")


if __name__ == "__main__":
    main()
