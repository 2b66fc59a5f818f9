"""The Compare page in a real browser: the demo, the bundled encoder against the pixel baseline.

Run with ``python -m pytest tests/test_browser_compare.py -m browser``; the fixtures and
helpers are those of ``tests/test_browser.py`` (a Streamlit server with a private embedding
cache, Debian's Chromium). The screenshot goes to ``test-artifacts/compare.png``.
"""

from __future__ import annotations

import re

import pytest

from tests import test_browser
from tests.test_browser import LONG, TALL_VIEWPORT, shot, wait_for_idle, wait_for_plot

pytestmark = pytest.mark.browser

st_server = test_browser.st_server
open_app = test_browser.open_app

BUNDLED = "bundled:efficientnet-lite0"
PIXELS = "baseline:pixels"


def test_compare_the_bundled_encoder_with_the_pixel_baseline(open_app):
    page = open_app(TALL_VIEWPORT)
    page.get_by_role("link", name="Compare").click()
    page.get_by_role("heading", name="Compare encoders").wait_for(timeout=LONG)
    wait_for_idle(page)
    chosen = page.get_by_test_id("stMultiSelect").get_by_text(re.compile("^(bundled|baseline):"))
    chosen.nth(1).wait_for()  # the preselection, once drawn
    assert [text.split(" (")[0] for text in chosen.all_inner_texts()] == [BUNDLED, PIXELS]

    page.get_by_role("button", name="Compare", exact=True).click()
    sentence = page.get_by_text(re.compile(r" points \(95% CI "))
    sentence.wait_for(timeout=LONG)
    wait_for_idle(page)
    verdict = rf"^(({BUNDLED}|{PIXELS}) is better by|no clear difference between)"
    assert re.search(verdict, sentence.inner_text()), sentence.inner_text()
    page.get_by_text(re.compile(r"^Compared 2 encoders in [\d.]+ s$")).wait_for()
    table = page.get_by_test_id("stDataFrame")
    assert table.count() == 1
    table.wait_for()
    page.get_by_text(f"{BUNDLED} has no text tower, so zero-shot is not available").wait_for()
    for position in range(2):
        wait_for_plot(page, f"compare_map_1_{position}")
    page.mouse.move(1380, 1980)  # off the charts, so no hover label is in the picture
    page.wait_for_timeout(500)
    shot(page, "compare")  # the README's docs/compare.png is a copy of this artifact
