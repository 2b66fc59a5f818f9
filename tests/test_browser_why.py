""" "Why?" in a real browser: on the demo's Results page, "Why?" under a mistake opens the
saliency overlay (the method named, the deletion check in one sentence) and the nearest images.

Run with ``python -m pytest tests/test_browser_why.py -m browser``; the fixtures and helpers
are those of ``tests/test_browser.py``. The panel's screenshot goes to
``test-artifacts/why.png`` (the README's ``docs/why.png`` is a copy of it).
"""

from __future__ import annotations

import re

import pytest

from tests import test_browser
from tests.test_browser import LONG, run_probe_and_open_results, shot, wait_for_idle

pytestmark = pytest.mark.browser

st_server = test_browser.st_server
open_app = test_browser.open_app

# The demo's mistake the README explains: the monkey face of the animals_nature folder, which
# the probe (out of sample) takes for smileys_emotion.
MISTAKE = "monkey_face.png"
VIEWPORT = {"width": 1400, "height": 3000}  # the whole panel in view, for its screenshot


def test_why_on_a_mistake_shows_the_overlay_and_the_neighbours(open_app):
    page = open_app(VIEWPORT)
    run_probe_and_open_results(page)
    caption = page.get_by_test_id("stCaptionContainer").filter(
        has_text=re.compile(re.escape(MISTAKE) + r"\s*animals_nature → smileys_emotion")
    )
    # Its card's "Why?" button: the element right after the caption.
    caption.locator(
        "xpath=ancestor::div[contains(@class, 'stElementContainer')][1]"
        "/following-sibling::div[contains(@class, 'stElementContainer')][1]"
    ).get_by_role("button", name="Why?").click()

    panel = page.locator(".st-key-why_panel_mistakes")
    panel.get_by_role("heading", name=f"Why? {MISTAKE}").wait_for(timeout=LONG)
    overlay = panel.get_by_test_id("stImage").filter(has_text="Evidence for smileys_emotion")
    overlay.wait_for(timeout=LONG)  # the saliency and its deletion check are computed
    wait_for_idle(page)

    # The overlay is drawn (a loaded picture, wider than a thumbnail), its method named.
    picture = overlay.locator("img")
    size = picture.evaluate("(img) => [img.complete, img.naturalWidth, img.naturalHeight]")
    assert size[0] and size[1] >= 400 and size[2] >= 400, size
    assert panel.get_by_text("Method: Grad-CAM (last convolutional stage).").is_visible()
    sentence = panel.get_by_text(re.compile(r"^Hiding the highlighted 10% ")).inner_text()
    assert re.fullmatch(
        r"Hiding the highlighted 10% lowers P\(smileys_emotion\) by \d\.\d\d; hiding a random 10%"
        r" (lowers|raises) it by \d\.\d\d \(mean of 8 draws; .+\)\.",
        sentence,
    ), sentence

    # The nearest images: eight thumbnails, each with its label, cosine and fold.
    neighbours = panel.get_by_test_id("stCaptionContainer").filter(
        has_text=re.compile(r" · cos \d\.\d\d\s*(same|other) fold")
    )
    assert neighbours.count() == 8
    first = neighbours.first.inner_text()
    assert re.fullmatch(r".+\.png\n\w+ · cos 0\.\d\d\n(same|other) fold", first), first
    thumbnails = panel.get_by_test_id("stImage")
    assert thumbnails.count() >= 1 + 8  # the overlay, the neighbours, the class's images
    # The class it was taken for, and its own class.
    assert [tab.inner_text() for tab in panel.get_by_role("tab").all()] == [
        "Class smileys_emotion",
        "Class animals_nature",
    ]
    assert panel.get_by_text(re.compile(r"^Ranked by the probe's margin")).first.is_visible()

    page.mouse.move(1380, 2980)  # off every image before the picture
    page.wait_for_timeout(500)  # let the thumbnails paint
    panel.scroll_into_view_if_needed()
    path = shot(page, "why-page")
    assert path.exists()
    panel.screenshot(path=str(path.with_name("why.png")))  # the README's docs/why.png
