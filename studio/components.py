"""Two small custom components (plain JS, served by Streamlit, no network).

``folder_drop_zone`` walks dropped folders with ``webkitGetAsEntry()`` (a plain
folder drop onto ``st.file_uploader`` loses the class subfolders) and hands the
files, each named by its relative path, to a hidden ``st.file_uploader``, so they
travel through Streamlit's own chunked upload with its size limits.

``hover_thumbnails`` shows a thumbnail next to the cursor while it hovers a point
of a Plotly chart rendered by ``st.plotly_chart``, fetched from Python for that point only.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import unquote

import streamlit as st

PATH_PREFIX = "ps-path="  # marks an upload whose name is an encoded relative path

_DROP_HTML = """
<div class="ps-drop" tabindex="0" role="button"
     aria-label="Drop a folder of class subfolders here">
  <div class="ps-drop-title">Drop a folder here</div>
  <div class="ps-drop-hint">one subfolder per class &middot;
    class names come from the subfolders</div>
  <div class="ps-drop-status" aria-live="polite"></div>
</div>
"""

_DROP_CSS = """
.ps-drop { border: 2px dashed var(--st-primary-color, #ff4b4b); border-radius: 0.75rem;
  padding: 1.6rem 1rem; text-align: center; cursor: copy; font-family: var(--st-font, sans-serif);
  color: var(--st-text-color, #31333f); background: var(--st-secondary-background-color, #f0f2f6); }
.ps-drop.ps-over { filter: brightness(0.93); }
.ps-drop-title { font-size: 1.15rem; font-weight: 600; }
.ps-drop-hint { opacity: 0.7; font-size: 0.9rem; margin-top: 0.25rem; }
.ps-drop-status { margin-top: 0.5rem; font-size: 0.9rem; }
"""

_DROP_JS = """
export default function (component) {
  const { parentElement, data } = component;
  const zone = parentElement.querySelector('.ps-drop');
  const status = parentElement.querySelector('.ps-drop-status');
  const readBatch = (reader) =>
    new Promise((resolve, reject) => reader.readEntries(resolve, reject));
  async function walk(entry, prefix, out) {
    if (entry.isFile) {
      const file = await new Promise((resolve, reject) => entry.file(resolve, reject));
      out.push([prefix + entry.name, file]);
    } else if (entry.isDirectory) {
      const reader = entry.createReader();
      for (let batch = await readBatch(reader); batch.length; batch = await readBatch(reader)) {
        for (const child of batch) await walk(child, prefix + entry.name + '/', out);
      }
    }
  }
  const over = (on) => (event) => { event.preventDefault(); zone.classList.toggle('ps-over', on); };
  zone.addEventListener('dragenter', over(true));
  zone.addEventListener('dragover', over(true));
  zone.addEventListener('dragleave', over(false));
  zone.addEventListener('drop', async (event) => {
    over(false)(event);
    const entries = [...event.dataTransfer.items]
      .map((item) => (item.webkitGetAsEntry ? item.webkitGetAsEntry() : null))
      .filter(Boolean);
    const files = [];
    for (const entry of entries) await walk(entry, '', files);
    if (!files.length) { status.textContent = 'Nothing to upload: drop a folder.'; return; }
    const transfer = new DataTransfer();
    for (const [path, file] of files) {
      const named = data.prefix + encodeURIComponent(path);
      transfer.items.add(new File([file], named, { type: file.type }));
    }
    const input = document.querySelector('.st-key-' + data.target + ' input[type=file]');
    if (!input) { status.textContent = 'Upload widget not found; use Browse instead.'; return; }
    input.files = transfer.files;
    input.dispatchEvent(new Event('change', { bubbles: true }));
    status.textContent = 'Uploading ' + files.length + ' files\u2026';
  });
}
"""

_HOVER_JS = """
export default function (component) {
  const { data, setStateValue } = component;
  const store = window.__psHover || (window.__psHover = {
    uris: {}, hovered: null, x: 0, y: 0, timer: null, tip: null,
  });
  Object.assign(store.uris, data.thumbnails || {});
  store.request = (index) => setStateValue('hovered', index);
  if (!store.tip) {
    const tip = document.createElement('img');
    tip.id = 'ps-hover-thumb';
    tip.style.cssText = 'position:fixed;z-index:10000;pointer-events:none;display:none;' +
      'width:96px;height:96px;object-fit:contain;background:#fff;border:1px solid #ccc;' +
      'border-radius:6px;box-shadow:0 2px 8px rgba(0,0,0,.25)';
    document.body.appendChild(tip);
    store.tip = tip;
  }
  const tip = store.tip;
  const show = store.show = () => {
    const uri = store.hovered === null ? null : store.uris[String(store.hovered)];
    if (!uri) { tip.style.display = 'none'; return; }
    const x = store.fromMouse ? store.mouseX : store.x;  // 3-D hover events carry no mouse event
    const y = store.fromMouse ? store.mouseY : store.y;
    tip.src = uri;
    tip.style.left = Math.max(0, x - 114) + 'px';  // left of the cursor:
    tip.style.top = Math.max(0, y - 110) + 'px';   // Plotly's label is on the right
    tip.style.display = 'block';
  };
  const hide = () => { store.pendingHide = false; store.hovered = null; show(); };
  // One listener pair for every chart, kept in the store: Plotly drops a chart's listeners
  // when it redraws it from scratch (2-D to 3-D), so each check attaches them again if gone.
  store.onHover = store.onHover || ((event) => {
    const point = event.points && event.points[0];
    const index = point && point.customdata ? point.customdata[1] : null;
    const e = event.event || {};
    store.hovered = index;
    store.pendingHide = false;
    store.fromMouse = !e.clientX;
    store.x = e.clientX || 0;
    store.y = e.clientY || 0;
    store.show();
    if (index === null || String(index) in store.uris) return;
    clearTimeout(store.timer);  // fetched only for a point the cursor rests on
    store.timer = setTimeout(() => { if (store.hovered === index) store.request(index); }, 150);
  });
  // A 3-D scene also "unhovers" a point while the cursor rests on it: the thumbnail goes once
  // the cursor moves on (or leaves the chart).
  store.onUnhover = store.onUnhover || (() => {
    store.pendingHide = true;
    store.unhoveredAt = [store.mouseX, store.mouseY];
  });
  const attach = () => {
    const chart = document.querySelector('.st-key-' + data.target + ' .js-plotly-plot');
    if (!chart || !chart.on) return;
    if (!chart.dataset.psMouse) {
      chart.dataset.psMouse = '1';
      chart.addEventListener('mousemove', (e) => {
        store.mouseX = e.clientX;
        store.mouseY = e.clientY;
        const [x, y] = store.unhoveredAt || [e.clientX, e.clientY];
        if (store.pendingHide && Math.abs(e.clientX - x) + Math.abs(e.clientY - y) > 4) hide();
      }, true);
      chart.addEventListener('mouseleave', hide);
    }
    // Plotly's event emitter: a chart redrawn from scratch gets a new one, without ours.
    const emitter = chart._ev;
    if (!emitter || emitter.listeners('plotly_hover').includes(store.onHover)) return;
    chart.on('plotly_hover', store.onHover);
    chart.on('plotly_unhover', store.onUnhover);
  };
  attach();
  show();  // a thumbnail that just arrived for the point still hovered
  const timer = setInterval(attach, 500);
  return () => { clearInterval(timer); };
}
"""

_drop_zone = st.components.v2.component(
    "probe_studio_folder_drop", html=_DROP_HTML, css=_DROP_CSS, js=_DROP_JS
)
_hover = st.components.v2.component("probe_studio_hover_thumbnails", js=_HOVER_JS)


def folder_drop_zone(key: str) -> list[tuple[str, bytes]]:
    """A drop zone for whole folders; returns (relative path, bytes) of what was dropped."""
    target = f"{key}_transport"
    _drop_zone(data={"target": target, "prefix": PATH_PREFIX}, key=key)
    with st.container(key=f"{key}_hidden"):
        uploads = st.file_uploader(
            "dropped files", accept_multiple_files=True, key=target, label_visibility="collapsed"
        )
    st.html(f"<style>.st-key-{key}_hidden {{ display: none; }}</style>")
    return [(decode_upload_name(upload.name), upload.getvalue()) for upload in uploads or []]


def decode_upload_name(name: str) -> str:
    """The relative path of an uploaded file (drop-zone names are percent-encoded paths)."""
    return unquote(name[len(PATH_PREFIX) :]) if name.startswith(PATH_PREFIX) else name


def hover_thumbnails(chart_key: str, fetch: Callable[[int], str | None]) -> None:
    """Show a thumbnail beside the cursor over the chart with ``chart_key``: the browser asks
    for the hovered point (its ``customdata[1]``) and ``fetch(index)`` makes its data URI,
    one point at a time, in a fragment (the chart is not redrawn). The browser keeps what it
    was sent, so each point is fetched once per page."""
    state_key = f"{chart_key}_hover"
    sent_key = f"{chart_key}_hover_sent"

    def fetch_hovered() -> None:
        index = getattr(st.session_state.get(state_key), "hovered", None)
        if index is not None:
            uri = fetch(int(index))
            st.session_state[sent_key] = {str(int(index)): uri} if uri else {}

    @st.fragment
    def mount() -> None:
        _hover(
            data={"target": chart_key, "thumbnails": st.session_state.get(sent_key, {})},
            key=state_key,
            default={"hovered": None},
            on_hovered_change=fetch_hovered,
        )

    mount()
