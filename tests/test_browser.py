"""End-to-end tests in a real browser: Streamlit serves ``app.py``, Debian's Chromium drives it.

Run with ``python -m pytest tests/test_browser.py``; deselect with ``-m "not browser"``.
They fail with a clear message when no Chromium binary is found (``playwright install`` is
not needed: Debian's Chromium is used, which ``scripts/test.sh`` installs;
``PROBE_STUDIO_CHROMIUM`` can point at another binary).
Screenshots go to ``test-artifacts/`` at the repo root, with the server log.

Only fixtures with our own names are used (``st_server``, ``chromium_browser``,
``open_app``): requesting pytest-playwright's ``page``/``browser`` fixtures would make its
plugin parametrize tests by browser and start a second Playwright.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright import sync_api

from tests.conftest import pattern_image, streamlit_server, write_image_folder

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "test-artifacts"
VIEWPORT = {"width": 1400, "height": 1000}
TALL_VIEWPORT = {"width": 1400, "height": 2000}
# Generous ceilings (ms): the first encoder load + embedding and the first UMAP (numba JIT)
# take 10-30 s each on a small CPU machine; waits return as soon as the condition holds.
SHORT = 15_000
LONG = 180_000


# --------------------------------------------------------------------------- helpers


def shot(page, name: str) -> Path:
    """Save a screenshot of the viewport to ``test-artifacts/<name>.png``."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path))
    return path


def wait_for_idle(page) -> None:
    """Wait until the current script run is over (its stale elements are then gone).

    Call it after waiting for something the new run shows, so that run has started.
    """
    page.locator('[data-testid="stApp"][data-test-script-state="notRunning"]').wait_for(
        timeout=LONG
    )


def open_tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()


def run_probe_and_open_results(page) -> None:
    """Press "Run probe" on the Data page; the app goes straight to Results after the fit."""
    page.get_by_role("button", name="Run probe").click()
    accuracy_metric(page).wait_for(timeout=LONG)
    wait_for_idle(page)


def accuracy_metric(page):
    return page.get_by_test_id("stMetric").filter(has=page.get_by_text("Accuracy", exact=True))


def preview_classes(page) -> dict[str, int]:
    """Class name -> image count as listed in the Data page preview (``**name** · N images``)."""
    found = {}
    for text in page.get_by_test_id("stMarkdownContainer").all_inner_texts():
        match = re.fullmatch(r"(.+) · (\d+) images?", text.strip())
        if match:
            found[match.group(1)] = int(match.group(2))
    return found


def plotly_graph(page, key: str):
    """The Plotly graph div (``.js-plotly-plot``) of the chart with widget key ``key``."""
    return page.locator(f".st-key-{key} .js-plotly-plot").first


def wait_for_plot(page, key: str) -> None:
    """Wait until the chart with widget key ``key`` is drawn (layout and data computed)."""
    page.locator(f".st-key-{key} .nsewdrag").first.wait_for(timeout=LONG)
    page.wait_for_function(
        "(key) => { const gd = document.querySelector(`.st-key-${key} .js-plotly-plot`);"
        " return !!(gd && gd._fullLayout && gd.calcdata && gd.calcdata.length); }",
        arg=key,
        timeout=SHORT,
    )


# Where the text of an element wraps inside a word: pairs of characters on either side of a
# line change, other than after a separator (_ - . space) or at an explicit line break.
MID_WORD_BREAKS = """(element) => {
  const walker = document.createTreeWalker(element, NodeFilter.SHOW_TEXT);
  const chars = [];
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const afterBreak = !!node.previousSibling && node.previousSibling.nodeName === 'BR';
    for (let i = 0; i < node.length; i++) {
      const range = document.createRange();
      range.setStart(node, i);
      range.setEnd(node, i + 1);
      const rect = range.getClientRects()[0];
      if (rect) chars.push({c: node.data[i], top: rect.top, lineStart: afterBreak && i === 0});
    }
  }
  const breaks = [];
  for (let i = 1; i < chars.length; i++) {
    const wrapped = chars[i].top > chars[i - 1].top + 2;
    const allowed = '_-. \u00b7'.includes(chars[i - 1].c) || chars[i].c === ' '
      || chars[i].lineStart;
    if (wrapped && !allowed) breaks.push(chars[i - 1].c + chars[i].c);
  }
  return breaks;
}"""


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def st_server(tmp_path_factory) -> Iterator[str]:
    """``streamlit run app.py`` on a free local port; yields its base URL."""
    work = tmp_path_factory.mktemp("streamlit")
    env = {**os.environ, "PROBE_STUDIO_CACHE_DIR": str(work / "cache")}
    log_path = work / "streamlit.log"
    try:
        with streamlit_server(log_path, env) as (url, _):
            yield url
    finally:
        ARTIFACTS.mkdir(exist_ok=True)
        shutil.copyfile(log_path, ARTIFACTS / "streamlit.log")


@pytest.fixture
def open_app(request, st_server, chromium_browser):
    """Open the app in a fresh browser context (so a fresh Streamlit session) on the Data page.

    Call it with an optional viewport. The last state of each page opened is saved as
    ``test-artifacts/<test>-final.png``.
    """
    contexts = []

    def open_page(viewport: dict[str, int] = VIEWPORT):
        context = chromium_browser.new_context(viewport=viewport)
        context.set_default_timeout(SHORT)
        contexts.append(context)
        page = context.new_page()
        page.goto(st_server)
        page.get_by_role("button", name="Run probe").wait_for(timeout=LONG)
        return page

    yield open_page
    for number, context in enumerate(contexts):
        for page in context.pages:
            with contextlib.suppress(Exception):
                shot(page, f"{request.node.name}-final" + (f"-{number}" if number else ""))
        context.close()


# --------------------------------------------------------------------------- tests


def test_browse_folder_upload_then_run_probe(open_app, tmp_path):
    """Browse tab: a picked folder keeps its class subfolders; the probe runs to Results."""
    counts = {"red": 8, "green": 8, "blue": 8}
    folder = write_image_folder(tmp_path / "colours", counts)
    page = open_app()

    open_tab(page, "Browse")
    uploader = page.get_by_test_id("stFileUploader").filter(has_text="Pick a folder")
    uploader.get_by_test_id("stFileUploaderDropzoneInput").set_input_files(folder)

    page.get_by_role("heading", name="Uploaded folder “colours” (24 files)").wait_for(timeout=LONG)
    wait_for_idle(page)
    assert preview_classes(page) == counts
    shot(page, "browse-upload-preview")

    run_probe_and_open_results(page)
    value = accuracy_metric(page).get_by_test_id("stMetricValue").inner_text()
    assert re.fullmatch(r"\d{1,3}\.\d%", value), value
    page.get_by_text("24 images scored", exact=False).wait_for()
    page.get_by_text("Every image was scored by a probe that never saw it", exact=False).wait_for()
    shot(page, "browse-upload-results")


def test_folder_drop_keeps_subfolders(open_app, tmp_path):
    """A real folder drop on the custom zone: classes are the subfolders, nested files count."""
    folder = write_image_folder(tmp_path / "pets", {"birds": 3, "cats": 4, "dogs": 3})
    nested = folder / "dogs" / "puppies"
    nested.mkdir()
    pattern_image(2, 99).save(nested / "puppy.png")
    page = open_app()

    open_tab(page, "Drop a folder")
    zone = page.locator(".ps-drop")
    zone.wait_for(state="visible")
    box = zone.bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    cdp = page.context.new_cdp_session(page)
    data = {"items": [], "files": [str(folder)], "dragOperationsMask": 1}
    for kind in ("dragEnter", "dragOver", "drop"):
        cdp.send("Input.dispatchDragEvent", {"type": kind, "x": x, "y": y, "data": data})

    page.get_by_role("heading", name="Dropped folder “pets” (11 files)").wait_for(timeout=LONG)
    wait_for_idle(page)
    assert preview_classes(page) == {"birds": 3, "cats": 4, "dogs": 4}
    shot(page, "folder-drop-preview")


def test_confusion_cell_click_shows_its_images(open_app):
    """Results of the demo: clicking a confusion-matrix cell lists that cell's images."""
    page = open_app(TALL_VIEWPORT)
    run_probe_and_open_results(page)
    wait_for_plot(page, "confusion")

    heatmap = plotly_graph(page, "confusion").evaluate(
        "(gd) => ({names: gd.data[0].y, text: gd.data[0].text})"
    )
    names = heatmap["names"]
    counts = [[int(cell) for cell in row] for row in heatmap["text"]]
    n = len(names)
    cells = [(r, c) for r in range(n) for c in range(n) if counts[r][c] > 0]
    # Prefer a mistake (off-diagonal); otherwise any diagonal cell but the default first one.
    row, col = max(cells, key=lambda rc: (rc[0] != rc[1], rc != (0, 0), counts[rc[0]][rc[1]]))
    count = counts[row][col]
    expected = f"{names[row]} → {names[col]}: {count} scored image" + ("s" if count != 1 else "")

    area = page.locator(".st-key-confusion .nsewdrag").first.bounding_box()
    page.mouse.click(
        area["x"] + area["width"] * (col + 0.5) / n,
        area["y"] + area["height"] * (row + 0.5) / n,
    )
    page.get_by_text(expected, exact=True).wait_for(timeout=LONG)
    wait_for_idle(page)

    column = page.get_by_test_id("stColumn").filter(has=page.locator(".st-key-confusion"))
    images = column.get_by_test_id("stImage")
    images.nth(counts[row][col] - 1).wait_for()
    assert images.count() == counts[row][col]
    captions = column.get_by_test_id("stCaptionContainer")
    names = [caption.evaluate("(e) => e.innerText") for caption in captions.all()]
    assert sum(bool(re.search(r"\.png\n", name)) for name in names) == count  # a name each
    wrapped = {
        name: caption.evaluate(MID_WORD_BREAKS)
        for name, caption in zip(names, captions.all(), strict=True)
    }
    assert {name: pairs for name, pairs in wrapped.items() if pairs} == {}
    page.mouse.move(1380, 1980)  # off the chart (and the sidebar button) before the picture
    page.wait_for_timeout(500)  # and let the thumbnails paint
    shot(page, "results-tall")  # the README's docs/results.png is a copy of this artifact


def test_map_hover_thumbnail_and_lasso(open_app):
    """Map of the demo: hovering a point shows its thumbnail; a lasso selects images."""
    page = open_app()
    run_probe_and_open_results(page)
    page.get_by_role("link", name="Map").click()
    page.get_by_text("Hover a point for its thumbnail").wait_for(timeout=LONG)
    wait_for_idle(page)
    wait_for_plot(page, "map")
    graph = plotly_graph(page, "map")

    # Page coordinates of the first point, and how many points there are in all.
    first, total = graph.evaluate(
        """(gd) => {
          const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
          const rect = gd.getBoundingClientRect();
          const point = gd.calcdata[0][0];
          const total = gd.calcdata.reduce((sum, trace) => sum + trace.length, 0);
          return [[rect.left + xa._offset + xa.c2p(point.x),
                   rect.top + ya._offset + ya.c2p(point.y)], total];
        }"""
    )
    # The hover component attaches to the chart on a 500 ms timer: hover again until it has.
    area = page.locator(".st-key-map .nsewdrag").first.bounding_box()
    for _ in range(20):
        page.mouse.move(area["x"] + 2, area["y"] + 2)
        page.mouse.move(*first, steps=3)
        try:
            page.wait_for_function(THUMB_SHOWN, timeout=1000)
            break
        except sync_api.TimeoutError:
            continue
    else:
        pytest.fail("the hover thumbnail never appeared")
    shot(page, "map-hover")

    page.mouse.move(area["x"] + 4, area["y"] + 4)
    page.mouse.down()
    for fx, fy in [(0.99, 0.01), (0.99, 0.99), (0.01, 0.99), (0.01, 0.02)]:
        page.mouse.move(area["x"] + area["width"] * fx, area["y"] + area["height"] * fy, steps=8)
    page.mouse.up()
    heading = page.get_by_role("heading", name=re.compile(r"^\d+ selected images$"))
    heading.wait_for(timeout=LONG)
    wait_for_idle(page)
    assert heading.inner_text() == f"{total} selected images"
    page.get_by_role("button", name="Download selection as CSV").wait_for()
    shot(page, "map-lasso")


THUMB_SHOWN = (
    "() => { const tip = document.getElementById('ps-hover-thumb');"
    " return !!tip && tip.style.display === 'block' && tip.src.startsWith('data:image'); }"
)

# Labels shown cut short (Streamlit ends a label that does not fit with an ellipsis).
TRUNCATED_LABELS = """() => [...document.querySelectorAll(
    '[data-testid=stMetricLabel], [data-testid=stWidgetLabel], [data-testid=stCheckbox] label')]
  .filter((label) => [label, ...label.querySelectorAll('*')]
    .some((e) => getComputedStyle(e).textOverflow === 'ellipsis'
      && e.scrollWidth > e.clientWidth + 1))
  .map((label) => label.innerText)"""


def test_map_labels_are_shown_whole_in_2d_and_3d(open_app):
    page = open_app(TALL_VIEWPORT)
    run_probe_and_open_results(page)
    page.get_by_role("link", name="Map").click()
    page.get_by_text("How far to trust this map").wait_for(timeout=LONG)
    wait_for_idle(page)
    wait_for_plot(page, "map")
    assert page.evaluate(TRUNCATED_LABELS) == []
    page.get_by_text("Highlight the ", exact=False).wait_for()
    page.mouse.move(1380, 1980)  # off the chart, so no hover label is in the picture
    page.wait_for_timeout(500)
    shot(page, "map-2d")  # the README's docs/map.png is a copy of this artifact

    page.get_by_text("3-D", exact=True).click()
    page.get_by_text("drag to turn the view", exact=False).wait_for(timeout=LONG)
    wait_for_idle(page)
    page.wait_for_function(
        "() => { const gd = document.querySelector('.st-key-map .js-plotly-plot');"
        " return !!(gd && gd._fullLayout && gd._fullLayout.scene); }",
        timeout=LONG,
    )
    assert page.evaluate(TRUNCATED_LABELS) == []
    assert page.get_by_text("box or lasso", exact=False).count() == 0

    # Hovering a point of the 3-D view shows its thumbnail too (Plotly drops the chart's
    # listeners when it redraws it in 3-D: the component attaches them again).
    graph = plotly_graph(page, "map")
    graph.evaluate(
        "(gd) => { window.__hovered = null;"
        " gd.on('plotly_hover', (e) => { window.__hovered = e.points[0].customdata[1]; }); }"
    )
    area = graph.bounding_box()
    for fy, fx in ((y / 30, x / 30) for y in range(6, 28) for x in range(6, 24)):
        page.mouse.move(area["x"] + area["width"] * fx, area["y"] + area["height"] * fy)
        page.wait_for_timeout(60)
        if page.evaluate("() => window.__hovered !== null"):
            break
    else:
        pytest.fail("no point of the 3-D view could be hovered")
    page.wait_for_function(THUMB_SHOWN, timeout=SHORT)
    shot(page, "map-3d")
