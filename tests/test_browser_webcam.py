"""The webcam in a real browser: Chromium's fake camera (a moving test pattern, permission
granted by ``--use-fake-ui-for-media-stream``) records two classes on the Data page's Webcam
tab, the probe runs on them, and the Live page's bars follow the camera.

Run with ``python -m pytest tests/test_browser_webcam.py -m browser``; the server fixture is
``tests/test_browser.py``'s. Screenshots go to ``test-artifacts/webcam-*.png``.
"""

from __future__ import annotations

import re
import time
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import expect

from tests import test_browser
from tests.conftest import CHROMIUM_ARGS, chromium_executable, pattern_image
from tests.test_browser import (
    LONG,
    SHORT,
    VIEWPORT,
    accuracy_metric,
    open_tab,
    preview_classes,
    run_probe_and_open_results,
    shot,
    wait_for_idle,
)

pytestmark = pytest.mark.browser

st_server = test_browser.st_server

FAKE_CAMERA = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}


@pytest.fixture(scope="module")
def camera_browser(playwright_driver):
    """Chromium with a fake camera whose permission is already granted."""
    executable = chromium_executable()
    if executable is None:
        pytest.fail("no Chromium binary found: run `apt-get install chromium`")
    browser = playwright_driver.chromium.launch(
        executable_path=str(executable), args=CHROMIUM_ARGS + FAKE_CAMERA
    )
    try:
        yield browser
    finally:
        browser.close()


@pytest.fixture
def camera_page(st_server, camera_browser, request):
    context = camera_browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(SHORT)
    page = context.new_page()
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.requests = requests
    page.goto(st_server)
    page.get_by_role("button", name="Run probe").wait_for(timeout=LONG)
    yield page
    shot(page, f"{request.node.name}-final")
    context.close()


def class_card(page, name: str):
    return page.locator(f".st-key-webcam_class_{name}")


def card_count(page, name: str) -> int:
    """The count the class card's heading states, once it states one (while a rerun redraws
    the card, its first Markdown can be momentarily empty)."""
    heading = class_card(page, name).get_by_test_id("stMarkdownContainer").first
    expect(heading).to_have_text(re.compile(rf"^\s*{name} · \d+ images?"), timeout=SHORT)
    match = re.match(rf"{name} · (\d+) images?", heading.inner_text().strip())
    assert match, heading.inner_text()
    return int(match.group(1))


def add_class(page, name: str) -> None:
    page.get_by_label("Name a class").fill(name)
    page.get_by_role("button", name="Add this class").click()
    class_card(page, name).wait_for()
    page.get_by_role("radio", name=name).wait_for()
    wait_for_idle(page)


def hold_to_record(page, seconds: float) -> None:
    hold = page.get_by_role("button", name="Hold to record")
    hold.wait_for()
    page.wait_for_function(
        "() => [...document.querySelectorAll('*')].some((e) => e.shadowRoot"
        " && e.shadowRoot.querySelector('.ps-hold:not([disabled])'))",
        timeout=SHORT,
    )
    box = hold.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.down()
    time.sleep(seconds)
    page.mouse.up()


def recorded(page, name: str) -> int:
    """The number of images of class ``name`` once every frame sent has been saved: the
    recorder says so when the last batch is acknowledged, and the run that acknowledged it
    (which also draws the class cards below the recorder) has finished."""
    page.get_by_text(f"Recording into “{name}”: hold the button").wait_for(timeout=LONG)
    wait_for_idle(page)
    # On a loaded machine the last frame's save can still be under way: read until the count
    # holds for a second.
    count, deadline = card_count(page, name), time.monotonic() + LONG / 1000
    while time.monotonic() < deadline:
        time.sleep(1.0)
        wait_for_idle(page)
        again = card_count(page, name)
        if again == count:
            break
        count = again
    return count


def test_record_two_classes_run_the_probe_and_watch_the_live_bars(camera_page, tmp_path):
    page = camera_page
    open_tab(page, "Webcam")
    page.get_by_role("button", name="Turn on the camera").click()
    add_class(page, "left")
    hold_to_record(page, 2.0)
    # about 5 frames a second while held (the rate itself is measured in bench/live.py)
    left = recorded(page, "left")
    assert left >= 3, left

    add_class(page, "right")
    assert page.get_by_role("radio", name="right").is_checked()
    hold_to_record(page, 1.6)
    page.get_by_role("button", name="Take a photo").click()
    right = recorded(page, "right")
    assert right >= 3, right
    assert card_count(page, "left") == left  # frames went to the class chosen
    shot(page, "webcam-recorded")

    # Delete one thumbnail of "left"
    thumb = class_card(page, "left").locator(".ps-thumb").first
    thumb.hover()
    thumb.get_by_role("button").click()
    deadline = time.monotonic() + LONG / 1000  # the click reruns the class list
    while card_count(page, "left") != left - 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert card_count(page, "left") == left - 1
    left -= 1

    page.get_by_role("button", name="Use the recorded classes").click()
    page.get_by_role("heading", name=f"Webcam classes (2 classes, {left + right} images)").wait_for(
        timeout=LONG
    )
    wait_for_idle(page)
    assert preview_classes(page) == {"left": left, "right": right}

    # The fake camera shows the same moving pattern for both classes: a fixed, large C keeps
    # the probe from flattening to the class shares, so its bars follow the pattern.
    c_box = page.get_by_role("spinbutton", name="C (regularisation)")
    c_box.fill("100")
    c_box.press("Tab")
    run_probe_and_open_results(page)
    value = accuracy_metric(page).get_by_test_id("stMetricValue").inner_text()
    assert re.fullmatch(r"\d{1,3}\.\d%", value), value

    # Live: the camera (granted once, in this tab) streams through the encoder and the probe
    page.get_by_test_id("stSidebarNavLink").filter(has_text="Live").click()
    rate = page.locator(".ps-rate")
    page.wait_for_function(
        "() => { const e = [...document.querySelectorAll('*')].map((x) => x.shadowRoot)"
        ".filter(Boolean).map((r) => r.querySelector('.ps-rate')).find(Boolean);"
        " return e && /updates a second/.test(e.textContent); }",
        timeout=LONG,
    )
    assert [row.get_attribute("data-class") for row in page.locator(".ps-bar").all()] == [
        "left",
        "right",
    ]
    seen = set()
    deadline = time.monotonic() + 30
    while len(seen) < 3 and time.monotonic() < deadline:
        values = tuple(page.locator(".ps-bar-value").all_inner_texts())
        assert all(re.fullmatch(r"\d{1,3}\.\d%", v) for v in values), values
        total = sum(float(v.rstrip("%")) for v in values)
        assert abs(total - 100) < 0.2, values
        seen.add(values)
        time.sleep(0.3)
    assert len(seen) >= 3, seen  # the bars follow the moving test pattern
    assert re.fullmatch(r"\d+\.\d updates a second", rate.inner_text()), rate.inner_text()
    assert float(rate.get_attribute("data-rate")) > 0
    assert page.locator(".ps-timing").inner_text().startswith("On the server: ")
    shot(page, "webcam-live")

    # The same view takes a dropped (here: chosen) image
    image = tmp_path / "mug.png"
    pattern_image(1, 3, size=120).save(image)
    page.locator(".ps-pick input").set_input_files(image)
    page.get_by_text("Dropped image: mug.png").wait_for(timeout=LONG)
    page.get_by_text("Showing the dropped image").wait_for(timeout=LONG)
    page.get_by_role("button", name="Back to the camera").click()
    page.get_by_text("Camera", exact=True).wait_for(timeout=LONG)

    outside = [
        url
        for url in page.requests
        if urlsplit(url).scheme in ("http", "https", "ws", "wss")
        and urlsplit(url).hostname not in LOOPBACK
    ]
    assert outside == []


def test_without_a_camera_the_tab_says_so_and_uploads_still_fill_a_class(
    st_server, chromium_browser, tmp_path
):
    """Chromium without the fake camera (no device, no permission): the recorder says why
    there is no camera, the page points to the uploaders, and a class fills from an upload."""
    context = chromium_browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(SHORT)
    page = context.new_page()
    try:
        page.goto(st_server)
        page.get_by_role("button", name="Run probe").wait_for(timeout=LONG)
        open_tab(page, "Webcam")
        page.get_by_role("button", name="Turn on the camera").click()
        page.get_by_text(
            "Without the camera, each class still takes images from its uploader"
        ).wait_for(timeout=LONG)
        message = page.locator(".ps-message").inner_text()
        assert message.startswith(("No camera was found", "Camera permission was refused")), message
        assert page.get_by_role("button", name="Hold to record").is_disabled()

        add_class(page, "mugs")
        image = tmp_path / "mug.png"
        pattern_image(0, 1).save(image)
        class_card(page, "mugs").get_by_test_id("stFileUploaderDropzoneInput").set_input_files(
            image
        )
        deadline = time.monotonic() + LONG / 1000
        while card_count(page, "mugs") != 1 and time.monotonic() < deadline:
            time.sleep(0.3)
        assert card_count(page, "mugs") == 1
        assert page.get_by_test_id("stAlertContentError").count() == 0
        shot(page, "webcam-no-camera")
    finally:
        context.close()
