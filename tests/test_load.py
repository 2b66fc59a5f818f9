"""Load test: four browser sessions at once against one server, each with its own folder.

Not a timing test: it checks that every session gets its own correct results, the
encoder is loaded once, memory stays bounded and session temp folders are removed after
the sessions end, and prints the figures (kept in the README).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.conftest import pattern_image, streamlit_server
from tests.test_browser import (
    LONG,
    SHORT,
    accuracy_metric,
    preview_classes,
    wait_for_idle,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SESSIONS = 4
IMAGES_PER_CLASS = 10
MEMORY_BOUND_MB = 6000


def session_folder(root: Path, session: int) -> tuple[Path, list[str]]:
    """Three classes named after the session, images unique to it."""
    names = [f"s{session}_{colour}" for colour in ("red", "green", "blue")]
    for class_index, name in enumerate(names):
        folder = root / f"session{session}" / name
        folder.mkdir(parents=True)
        for variant in range(IMAGES_PER_CLASS):
            image = pattern_image(class_index, 1000 * session + variant)
            image.save(folder / f"{variant}.png")
    return root / f"session{session}", names


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def session_dirs(temp: Path) -> list[Path]:
    return sorted(temp.glob("probe-studio-session-*"))


def test_four_concurrent_sessions_get_their_own_results(tmp_path, chromium_browser):
    temp = tmp_path / "tmp"
    temp.mkdir()
    log_path = tmp_path / "streamlit.log"
    env = {**os.environ, "PROBE_STUDIO_CACHE_DIR": str(tmp_path / "cache"), "TMPDIR": str(temp)}
    folders = [session_folder(tmp_path / "data", i) for i in range(SESSIONS)]
    started = time.monotonic()
    with streamlit_server(log_path, env, ("--server.disconnectedSessionTTL", "1")) as (url, server):
        contexts = [
            chromium_browser.new_context(viewport={"width": 1300, "height": 1000})
            for _ in range(SESSIONS)
        ]
        pages = []
        for context, (folder, names) in zip(contexts, folders, strict=True):
            context.set_default_timeout(SHORT)
            page = context.new_page()
            page.goto(url)
            page.get_by_role("button", name="Run probe").wait_for(timeout=LONG)
            page.get_by_role("tab", name="Browse").click()
            uploader = page.get_by_test_id("stFileUploader").filter(has_text="Pick a folder")
            uploader.get_by_test_id("stFileUploaderDropzoneInput").set_input_files(folder)
            page.get_by_text(f"{names[0]} · {IMAGES_PER_CLASS} images").wait_for(timeout=LONG)
            wait_for_idle(page)
            assert preview_classes(page) == dict.fromkeys(names, IMAGES_PER_CLASS)
            pages.append(page)
        for page in pages:  # all four sessions now embed and fit at the same time
            page.get_by_role("button", name="Run probe").click()
        accuracies = []
        for page, (_, names) in zip(pages, folders, strict=True):
            accuracy_metric(page).wait_for(timeout=LONG)  # Run probe opens Results
            wait_for_idle(page)
            page.locator(".st-key-confusion .ytick text").first.wait_for(timeout=LONG)
            shown = page.locator(".st-key-confusion .ytick text").all_text_contents()
            assert sorted(shown) == sorted(names)  # its own classes, no one else's
            value = accuracy_metric(page).get_by_test_id("stMetricValue").inner_text()
            accuracies.append(float(value.rstrip("%")) / 100)
        busy = session_dirs(temp)
        assert len(busy) == SESSIONS
        for context in contexts:
            context.close()
        elapsed = time.monotonic() - started
        peak = peak_rss_mb(server.pid)
        deadline = time.monotonic() + 60
        while session_dirs(temp) and time.monotonic() < deadline:
            time.sleep(0.5)
        remaining = session_dirs(temp)
    loads = log_path.read_text().count("loaded encoder")
    print(
        f"\nload test: {SESSIONS} sessions x {3 * IMAGES_PER_CLASS} images, accuracies"
        f" {accuracies}, encoder loads {loads}, server peak RSS {peak:.0f} MB,"
        f" {elapsed:.1f} s from server start to all results,"
        f" session temp dirs left {len(remaining)}"
    )
    assert all(accuracy > 1 / 3 for accuracy in accuracies)
    assert loads == 1
    assert peak < MEMORY_BOUND_MB
    assert remaining == []
