"""Every page in a real browser: nothing leaves the loopback address, and the very first load
after the server starts lists only the six pages.

Run with ``python -m pytest tests/test_browser_pages.py -m browser``; the fixtures and helpers
are those of ``tests/test_browser.py`` (Debian's Chromium, a Streamlit server with a private
embedding cache). Screenshots of each page go to ``test-artifacts/pages-*.png``.
"""

from __future__ import annotations

import os
import re
import time
from urllib.parse import urlsplit

import pytest

from tests import test_browser
from tests.conftest import DEMO_DIR, streamlit_server
from tests.test_browser import (
    LONG,
    TALL_VIEWPORT,
    run_probe_and_open_results,
    shot,
    wait_for_idle,
    wait_for_plot,
)

pytestmark = pytest.mark.browser

st_server = test_browser.st_server

PAGES = ["Data", "Results", "Compare", "Map", "Predict & export", "Live"]
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}
LOCAL_SCHEMES = {"data", "blob", "about"}  # never leave the browser


def outside_requests(urls: list[str]) -> list[str]:
    """The requests that would leave this machine's loopback address."""
    outside = []
    for url in urls:
        parts = urlsplit(url)
        if parts.scheme in LOCAL_SCHEMES:
            continue
        if parts.scheme not in ("http", "https", "ws", "wss") or parts.hostname not in LOOPBACK:
            outside.append(url)
    return outside


def sidebar_pages(page) -> list[str]:
    """The page names in the sidebar (each link's text ends with its name, after its icon)."""
    links = page.get_by_test_id("stSidebarNavLink").all_inner_texts()
    return [text.strip().splitlines()[-1].strip() for text in links]


def open_sidebar_page(page, name: str) -> None:
    page.get_by_test_id("stSidebarNavLink").filter(has_text=name).click()


def test_no_page_makes_a_request_beyond_the_loopback_address(st_server, chromium_browser):
    """The demo run, then every page with its content drawn (results, a comparison, the map,
    a prediction): every request of the browser, workers included, stays on 127.0.0.1."""
    context = chromium_browser.new_context(viewport=TALL_VIEWPORT)
    context.set_default_timeout(LONG)
    requests: list[str] = []
    context.on("request", lambda request: requests.append(request.url))
    try:
        page = context.new_page()
        page.goto(st_server)
        page.get_by_role("button", name="Run probe").wait_for()
        wait_for_idle(page)
        page.wait_for_timeout(500)  # the favicon and the fonts are asked for after the first run
        shot(page, "pages-data")

        run_probe_and_open_results(page)
        wait_for_plot(page, "confusion")
        shot(page, "pages-results")

        open_sidebar_page(page, "Compare")
        page.get_by_role("button", name="Compare", exact=True).click()
        page.get_by_text(re.compile(r" points \(95% CI ")).wait_for()
        wait_for_idle(page)
        wait_for_plot(page, "compare_map_1_0")
        shot(page, "pages-compare")

        open_sidebar_page(page, "Map")
        page.get_by_text("Hover a point for its thumbnail", exact=False).wait_for()
        wait_for_idle(page)
        wait_for_plot(page, "map")
        shot(page, "pages-map")

        open_sidebar_page(page, "Predict & export")
        uploader = page.get_by_test_id("stFileUploader").filter(has_text="Drop new images")
        image = sorted((DEMO_DIR / "flags").iterdir())[0]
        uploader.get_by_test_id("stFileUploaderDropzoneInput").set_input_files(image)
        page.get_by_text(re.compile(rf"^{re.escape(image.name)}: ")).wait_for()
        wait_for_idle(page)
        page.wait_for_timeout(500)
        shot(page, "pages-predict")

        open_sidebar_page(page, "Live")  # no camera in this browser: the button waits
        page.get_by_role("button", name="Turn on the camera").wait_for()
        wait_for_idle(page)
        shot(page, "pages-live")

        open_sidebar_page(page, "Data")
        page.get_by_role("button", name="Run probe").wait_for()
        wait_for_idle(page)
        page.wait_for_timeout(500)
    finally:
        context.close()

    assert len(requests) > 20  # the recording worked: the app's scripts, styles, media
    assert outside_requests(requests) == []


def test_the_first_load_after_start_lists_only_the_six_pages(tmp_path, chromium_browser):
    """Opened the moment the server answers: the sidebar never shows helper modules, and their
    names are no routable pages (an unknown path opens the Data page)."""
    env = {**os.environ, "PROBE_STUDIO_CACHE_DIR": str(tmp_path / "cache")}
    with streamlit_server(tmp_path / "streamlit.log", env) as (url, _):
        context = chromium_browser.new_context()
        try:
            page = context.new_page()
            page.goto(url)
            # Every list the sidebar shows, from its first appearance for the next 3 s
            # (the first script run starts meanwhile).
            seen: set[tuple[str, ...]] = set()
            first_seen, deadline = None, time.monotonic() + LONG / 1000
            while time.monotonic() < deadline:
                listed = tuple(sidebar_pages(page))
                if listed:
                    seen.add(listed)
                    first_seen = first_seen or time.monotonic()
                    if time.monotonic() - first_seen > 3:
                        break
                page.wait_for_timeout(50)
            assert seen == {tuple(PAGES)}

            for path in ("components", "shared", "studio", "app_pages", "app", "pages"):
                page.goto(f"{url}/{path}")
                page.get_by_role("heading", name="Probe Studio").wait_for(timeout=LONG)
                wait_for_idle(page)
                assert sidebar_pages(page) == PAGES, path
        finally:
            context.close()
