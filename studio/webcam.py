"""The webcam in the studio: two small components (plain JS, served by Streamlit, no network).

``webcam_recorder`` shows the camera's live preview with *Hold to record* (about
``FRAMES_PER_SECOND`` frames a second while the button is held) and *Take a photo*. Frames
are square, mirrored like the preview, ``CAPTURE_SIDE`` px, JPEG; they queue in the browser
and travel to this server in small batches as a component trigger. Each frame carries an id
and the class it was recorded for; the server writes it (``CaptureSet.add_frame``, a resent
id written once) and acknowledges the ids, and the browser drops only acknowledged frames,
so none is lost when Streamlit coalesces two triggers into one rerun.

``live_camera`` streams frames one at a time: the browser sends a frame, the server
classifies it (``classify_frame``) and answers with the probabilities, the browser draws the
bars and sends the next. It shows how many updates a second arrive. An image dropped on
the view (or chosen with its button) is classified the same way, its bytes as they are.

The camera is asked for once per page: both components share one stream, and once it has
been granted in a browser tab the components turn it on by themselves.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import streamlit as st

from probe_core.capture import CaptureError, CaptureSet
from probe_core.encoders import Encoder
from probe_core.images import ImageLoadError
from probe_core.predict import classify_image
from probe_core.probe import ProbeWeights

CAPTURE_SIDE = 256  # px, square: recorded frames and live frames alike
FRAMES_PER_SECOND = 5  # while "Hold to record" is held
MAX_FRAME_BYTES = 8 * 1024 * 1024  # a data URL larger than this is refused
_DATA_URL = re.compile(r"^data:image/[a-z0-9.+-]+;base64,(?P<payload>[A-Za-z0-9+/=\s]*)$")


class FrameError(ValueError):
    """A frame from the browser that is not an image data URL; the message says why."""


def decode_data_url(url: str) -> bytes:
    """The bytes of an image ``data:`` URL as the browser's canvas or file reader gives it."""
    if not isinstance(url, str):
        raise FrameError("a frame must be an image data URL")
    if len(url) > MAX_FRAME_BYTES:
        raise FrameError(f"a frame is limited to {MAX_FRAME_BYTES // (1024 * 1024)} MB")
    match = _DATA_URL.match(url)
    if match is None:
        raise FrameError("a frame must be an image data URL (data:image/...;base64,...)")
    try:
        return base64.b64decode(match.group("payload"), validate=False)
    except (binascii.Error, ValueError) as error:
        raise FrameError(f"a frame's base64 payload is damaged ({error})") from error


# --------------------------------------------------------------------------- recording


@dataclass
class StoredFrames:
    """What one batch of recorded frames did: ids to acknowledge (written, already written,
    or refused: the browser must not send them again), how many were written, and why any
    were refused."""

    acknowledged: list[str] = field(default_factory=list)
    written: int = 0
    problems: list[str] = field(default_factory=list)


def store_frames(captures: CaptureSet, batch: object) -> StoredFrames:
    """Write a batch of frames from the recorder (``[{id, class_name, image}]``) into their
    classes. A frame of a class removed meanwhile, or one that does not decode, is refused
    with the reason; every frame with an id is acknowledged."""
    stored = StoredFrames()
    for entry in batch if isinstance(batch, list) else []:
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
            stored.problems.append("a frame without an id was ignored")
            continue
        frame_id = entry["id"]
        stored.acknowledged.append(frame_id)
        class_name = entry.get("class_name")
        if class_name not in captures.class_names:
            stored.problems.append(
                f"a frame for “{class_name}” was dropped: there is no class of that name now"
            )
            continue
        try:
            written = captures.add_frame(
                class_name, decode_data_url(entry.get("image")), frame_id=frame_id
            )
        except (FrameError, ImageLoadError, CaptureError) as error:
            stored.problems.append(f"a frame for “{class_name}” was not saved: {error}")
            continue
        if written is not None:
            stored.written += 1
    return stored


_CAMERA_JS = """
// One camera stream per page, shared by the studio's components: asked for once.
const camera = window.__psCamera
  || (window.__psCamera = { stream: null, pending: null, users: new Set() });
const GRANTED = 'probe-studio-camera-granted';

function cameraProblem(error) {
  if (!window.isSecureContext || !navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    return ['insecure', 'This page is not a secure origin, so the browser offers no camera here.'
      + ' Open the studio at http://localhost on the computer that runs it, or serve it'
      + ' over HTTPS (README: Teaching with the studio). The other sources still work.'];
  }
  const name = error && error.name;
  if (name === 'NotAllowedError' || name === 'SecurityError') {
    return ['denied', 'Camera permission was refused. Allow the camera for this site'
      + ' (the camera icon in the address bar), then press Turn on the camera again.'
      + ' The other sources still work.'];
  }
  if (['NotFoundError', 'OverconstrainedError', 'DevicesNotFoundError'].includes(name)) {
    return ['missing', 'No camera was found on this device. The other sources still work.'];
  }
  if (name === 'NotReadableError' || name === 'AbortError') {
    return ['busy', 'The camera is in use by another application or could not start.'
      + ' Close the other application, then press Turn on the camera again.'];
  }
  return ['failed', 'The camera could not start (' + (error && error.message || error) + ').'];
}

async function openCamera(user) {
  camera.users.add(user);
  if (camera.stream && camera.stream.active) return camera.stream;
  if (!window.isSecureContext || !navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    throw new Error('insecure');
  }
  if (!camera.pending) {
    camera.pending = navigator.mediaDevices.getUserMedia({
      video: { width: { ideal: 640 }, height: { ideal: 480 }, facingMode: 'user' }, audio: false,
    }).then((stream) => {
      camera.stream = stream;
      try { sessionStorage.setItem(GRANTED, '1'); } catch (e) {}
      return stream;
    }).finally(() => { camera.pending = null; });
  }
  return camera.pending;
}

function releaseCamera(user) {
  camera.users.delete(user);
  setTimeout(() => {  // a page switch mounts the next user first; else the light goes off
    if (!camera.users.size && camera.stream) {
      camera.stream.getTracks().forEach((track) => track.stop());
      camera.stream = null;
    }
  }, 1500);
}

function wasGranted() {
  try { return sessionStorage.getItem(GRANTED) === '1'; } catch (e) { return false; }
}

// A square frame from the middle of the video, mirrored like the preview, as a JPEG data URL.
function grabFrame(video, canvas, side) {
  const w = video.videoWidth, h = video.videoHeight;
  if (!w || !h) return null;
  const m = Math.min(w, h);
  canvas.width = side; canvas.height = side;
  const g = canvas.getContext('2d');
  g.setTransform(-1, 0, 0, 1, side, 0);
  g.drawImage(video, (w - m) / 2, (h - m) / 2, m, m, 0, 0, side, side);
  g.setTransform(1, 0, 0, 1, 0, 0);
  return canvas.toDataURL('image/jpeg', 0.92);
}

function startPreview(state, parent, setStateValue) {
  const message = parent.querySelector('.ps-message');
  const startButton = parent.querySelector('.ps-start');
  message.textContent = 'Starting the camera\\u2026';
  openCamera(state).then((stream) => {
    state.video.srcObject = stream;
    state.video.play().catch(() => {});
    state.cameraOn = true;
    message.textContent = '';
    startButton.hidden = true;
    parent.querySelector('.ps-root').classList.add('ps-camera-on');
    setStateValue('camera', 'on');
    if (state.onCamera) state.onCamera();
  }).catch((error) => {
    const [status, text] = cameraProblem(error && error.message === 'insecure' ? null : error);
    state.cameraOn = false;
    message.textContent = text;
    startButton.hidden = status === 'insecure' || status === 'missing';
    parent.querySelector('.ps-root').classList.remove('ps-camera-on');
    setStateValue('camera', status);
  });
}
"""

_RECORDER_HTML = """
<div class="ps-root ps-recorder">
  <div class="ps-stage">
    <video class="ps-video" muted playsinline aria-label="Camera preview"></video>
    <div class="ps-flash"></div>
  </div>
  <div class="ps-controls">
    <button type="button" class="ps-start">Turn on the camera</button>
    <button type="button" class="ps-hold" disabled
            aria-label="Hold to record">&#9679; Hold to record</button>
    <button type="button" class="ps-shot" disabled>Take a photo</button>
  </div>
  <div class="ps-status" aria-live="polite"></div>
  <div class="ps-message" role="status"></div>
</div>
"""

_SHARED_CSS = """
.ps-root { font-family: var(--st-font, sans-serif); color: var(--st-text-color, #31333f); }
.ps-stage { position: relative; width: 100%; max-width: 360px; aspect-ratio: 1 / 1;
  background: var(--st-secondary-background-color, #f0f2f6); border-radius: 0.6rem;
  overflow: hidden; }
.ps-video, .ps-dropped { width: 100%; height: 100%; object-fit: cover; display: block; }
.ps-video { transform: scaleX(-1); }
.ps-dropped[hidden] { display: none; }
.ps-root:not(.ps-camera-on) .ps-video { visibility: hidden; }
.ps-flash { position: absolute; inset: 0; pointer-events: none; box-shadow: none; }
.ps-recording .ps-flash { box-shadow: inset 0 0 0 4px #e0312b; }
.ps-controls { display: flex; flex-wrap: wrap; gap: 0.5rem; margin-top: 0.6rem; }
.ps-controls button, .ps-controls label {
  font: inherit; font-size: 0.95rem; padding: 0.45rem 0.9rem; border-radius: 0.5rem;
  border: 1px solid rgba(49, 51, 63, 0.25); background: var(--st-background-color, #fff);
  color: inherit; cursor: pointer; user-select: none; touch-action: none; }
.ps-controls button[disabled] { opacity: 0.45; cursor: not-allowed; }
.ps-controls .ps-hold:not([disabled]) { background: var(--st-primary-color, #ff4b4b);
  color: #fff; border-color: transparent; }
.ps-recording .ps-hold { filter: brightness(0.85); }
.ps-status { margin-top: 0.4rem; font-size: 0.9rem; min-height: 1.2rem; }
.ps-message { margin-top: 0.3rem; font-size: 0.9rem; color: #9c2b23; }
"""

_RECORDER_JS = (
    _CAMERA_JS
    + """
export default function (component) {
  const { data, setTriggerValue, setStateValue, parentElement } = component;
  const parent = parentElement;
  let s = parent.__psRecorder;
  if (!s) {
    s = parent.__psRecorder = {
      pending: [], inflight: 0, ackSeq: null, counter: 0, recorded: 0, timer: null,
      sendTimer: null, lastSend: 0, recording: false, cameraOn: false,
      prefix: Math.random().toString(36).slice(2, 10),
      video: parent.querySelector('.ps-video'), canvas: document.createElement('canvas'),
    };
    const root = parent.querySelector('.ps-root');
    const hold = parent.querySelector('.ps-hold');
    const shot = parent.querySelector('.ps-shot');
    const queue = () => {
      const active = s.data.active_class;
      if (!s.cameraOn || !active) return;
      const image = grabFrame(s.video, s.canvas, s.data.side);
      if (!image) return;
      s.counter += 1;
      s.recorded += 1;
      s.pending.push({ id: s.prefix + '-' + s.counter, class_name: active, image });
      s.render();
      s.send();
    };
    const start = (byKey) => {
      if (s.recording || hold.disabled) return;
      s.recording = true;
      s.byKey = byKey;
      s.recorded = 0;
      root.classList.add('ps-recording');
      queue();
      s.timer = setInterval(queue, 1000 / s.data.fps);
    };
    const stop = () => {
      if (!s.recording) return;
      s.recording = false;
      clearInterval(s.timer);
      root.classList.remove('ps-recording');
      s.render();
    };
    hold.addEventListener('pointerdown', (e) => {
      hold.setPointerCapture(e.pointerId);
      start(false);
    });
    hold.addEventListener('pointerup', stop);
    hold.addEventListener('pointercancel', stop);
    hold.addEventListener('lostpointercapture', stop);
    hold.addEventListener('keydown', (e) => {
      if ((e.key === ' ' || e.key === 'Enter') && !e.repeat) { e.preventDefault(); start(true); }
    });
    hold.addEventListener('keyup', (e) => { if (e.key === ' ' || e.key === 'Enter') stop(); });
    hold.addEventListener('blur', () => { if (s.byKey) stop(); });  // a key up lost elsewhere
    shot.addEventListener('click', () => { s.recorded = 0; queue(); });
    parent.querySelector('.ps-start').addEventListener('click', () => {
      startPreview(s, parent, s.setStateValue);
    });
    s.onCamera = () => s.render();
    s.render = () => {
      const active = s.data.active_class;
      hold.disabled = shot.disabled = !(s.cameraOn && active);
      const status = parent.querySelector('.ps-status');
      const waiting = s.pending.length;
      if (!active) {
        status.textContent = s.cameraOn ? 'Add a class to record into.' : '';
      } else if (s.recording) {
        status.textContent = 'Recording into \\u201c' + active + '\\u201d\\u2026 '
          + s.recorded + (s.recorded === 1 ? ' frame' : ' frames');
      } else if (waiting) {
        status.textContent = waiting + (waiting === 1 ? ' frame' : ' frames')
          + ' on the way\\u2026';
      } else if (s.cameraOn) {
        status.textContent = 'Recording into \\u201c' + active + '\\u201d: hold the button'
          + ' (about ' + s.data.fps + ' frames a second) or take single photos.';
      } else {
        status.textContent = '';
      }
    };
    // Frames travel in small batches, one batch at a time; a batch not acknowledged within
    // a few seconds (its rerun was lost) is sent again: the server writes each id once.
    s.send = () => {
      clearTimeout(s.sendTimer);
      if (!s.pending.length) return;
      const now = Date.now();
      const wait = Math.max(s.inflight ? s.inflight + 4000 - now : 0, s.lastSend + 400 - now);
      if (wait > 0) { s.sendTimer = setTimeout(s.send, wait); return; }
      s.inflight = now;
      s.lastSend = now;
      s.setTriggerValue('frames', s.pending.slice(0, 8));
      s.sendTimer = setTimeout(s.send, 4000);
    };
    if (wasGranted()) startPreview(s, parent, setStateValue);
  }
  s.data = data;
  s.setTriggerValue = setTriggerValue;
  s.setStateValue = setStateValue;
  if (data.ack_seq !== s.ackSeq) {
    s.ackSeq = data.ack_seq;
    const acknowledged = new Set(data.acknowledged || []);
    s.pending = s.pending.filter((frame) => !acknowledged.has(frame.id));
    s.inflight = 0;
  }
  s.render();
  s.send();
  return () => {
    clearInterval(s.timer);
    clearTimeout(s.sendTimer);
    releaseCamera(s);
  };
}
"""
)

_recorder = st.components.v2.component(
    "probe_studio_webcam_recorder", html=_RECORDER_HTML, css=_SHARED_CSS, js=_RECORDER_JS
)


def webcam_recorder(
    captures: CaptureSet, active_class: str | None, key: str = "webcam_recorder"
) -> str | None:
    """The recorder; frames it sends are written into their classes of ``captures`` before
    the (fragment) run that shows them. Returns the camera's state as the browser reported
    it: None (not turned on yet), "on", "denied", "missing", "insecure", "busy", "failed"."""
    seq_key, acknowledged_key, problems_key = f"{key}_seq", f"{key}_acked", f"{key}_problems"

    def take_frames() -> None:
        batch = getattr(st.session_state.get(key), "frames", None)
        if batch is None:
            return
        stored = store_frames(captures, batch)
        st.session_state[seq_key] = st.session_state.get(seq_key, 0) + 1
        st.session_state[acknowledged_key] = stored.acknowledged
        st.session_state[problems_key] = stored.problems

    result = _recorder(
        data={
            "active_class": active_class,
            "side": CAPTURE_SIDE,
            "fps": FRAMES_PER_SECOND,
            "ack_seq": st.session_state.get(seq_key, 0),
            "acknowledged": st.session_state.get(acknowledged_key, []),
        },
        key=key,
        default={"camera": None},
        on_frames_change=take_frames,
        on_camera_change=lambda: None,
    )
    for problem in st.session_state.pop(problems_key, []):
        st.warning(problem)
    return getattr(result, "camera", None)


# --------------------------------------------------------------------------- thumbnails

_GALLERY_JS = """
export default function (component) {
  const { data, setTriggerValue, parentElement } = component;
  let grid = parentElement.querySelector('.ps-gallery');
  if (!grid) {
    grid = document.createElement('div');
    grid.className = 'ps-gallery';
    parentElement.appendChild(grid);
    grid.addEventListener('click', (event) => {
      const button = event.target.closest('button[data-name]');
      if (button) {
        button.disabled = true;
        setTriggerValue('delete', button.dataset.name);
      }
    });
  }
  grid.replaceChildren(...data.images.map((image) => {
    const cell = document.createElement('figure');
    cell.className = 'ps-thumb';
    cell.title = image.name;
    const img = document.createElement('img');
    img.src = image.uri;
    img.alt = image.name;
    const remove = document.createElement('button');
    remove.type = 'button';
    remove.dataset.name = image.name;
    remove.textContent = '\\u00d7';
    remove.setAttribute('aria-label', 'Delete ' + image.name);
    cell.append(img, remove);
    return cell;
  }));
  if (!data.images.length) {
    const empty = document.createElement('div');
    empty.className = 'ps-empty';
    empty.textContent = data.empty;
    grid.append(empty);
  }
}
"""

_GALLERY_CSS = """
.ps-gallery { display: flex; flex-wrap: wrap; gap: 4px; max-height: 184px; overflow-y: auto;
  font-family: var(--st-font, sans-serif); }
.ps-thumb { position: relative; margin: 0; width: 56px; height: 56px; }
.ps-thumb img { width: 56px; height: 56px; object-fit: cover; border-radius: 4px; display: block; }
.ps-thumb button { position: absolute; top: 1px; right: 1px; width: 18px; height: 18px;
  padding: 0; border: none; border-radius: 9px; background: rgba(0, 0, 0, 0.6); color: #fff;
  font-size: 13px; line-height: 18px; cursor: pointer; opacity: 0; }
.ps-thumb:hover button, .ps-thumb button:focus { opacity: 1; }
@media (hover: none) { .ps-thumb button { opacity: 1; } }
.ps-empty { font-size: 0.9rem; opacity: 0.7; padding: 0.3rem 0; }
"""

_gallery = st.components.v2.component(
    "probe_studio_capture_gallery", css=_GALLERY_CSS, js=_GALLERY_JS
)


def capture_gallery(
    images: list[tuple[str, str]], on_delete: Callable[[str], None], key: str, empty: str
) -> None:
    """Thumbnails (name, data URI) with a delete button each (shown on hover; always on touch
    screens); ``on_delete(name)`` runs before the rerun that follows a click."""

    def deleted() -> None:
        name = getattr(st.session_state.get(key), "delete", None)
        if isinstance(name, str):
            on_delete(name)

    _gallery(
        data={"images": [{"name": n, "uri": u} for n, u in images], "empty": empty},
        key=key,
        on_delete_change=deleted,
    )


# --------------------------------------------------------------------------- live prediction


def classify_frame(payload: object, encoder: Encoder, weights: ProbeWeights) -> dict | None:
    """The answer the live view draws for one frame (``{id, image}`` from the browser):
    the class probabilities in ``weights.class_names`` order and the server's milliseconds
    per stage; or the frame's id with an error message. None for no frame."""
    if not isinstance(payload, dict) or not isinstance(payload.get("id"), str):
        return None
    answer: dict = {"id": payload["id"], "name": str(payload.get("name") or "")}
    try:
        data = decode_data_url(payload.get("image"))
        classified = classify_image(
            data, encoder, weights, name=answer["name"] or "frame", live=True
        )
    except (FrameError, ImageLoadError) as error:
        answer["error"] = str(error)
        return answer
    seconds = classified.seconds
    probabilities = np.asarray(classified.prediction.probabilities, dtype=float)
    answer.update(
        probabilities=[round(float(p), 5) for p in probabilities],
        predicted=classified.prediction.predicted,
        ms={
            "decode": round(seconds.decode * 1000, 1),
            "preprocess": round(seconds.preprocess * 1000, 1),
            "forward": round(seconds.forward * 1000, 1),
            "probe": round(seconds.probe * 1000, 2),
        },
        size=list(classified.size),
    )
    return answer


_LIVE_HTML = """
<div class="ps-root ps-live">
  <div class="ps-columns">
    <div class="ps-left">
      <div class="ps-stage ps-drop-target" aria-label="Camera preview; drop an image here">
        <video class="ps-video" muted playsinline></video>
        <img class="ps-dropped" alt="Dropped image" hidden>
        <div class="ps-drop-hint">Drop an image here</div>
      </div>
      <div class="ps-controls">
        <button type="button" class="ps-start">Turn on the camera</button>
        <button type="button" class="ps-pause" hidden>Pause</button>
        <button type="button" class="ps-back" hidden>Back to the camera</button>
        <label class="ps-pick">Choose an image<input type="file" accept="image/*" hidden></label>
      </div>
      <div class="ps-message" role="status"></div>
    </div>
    <div class="ps-right">
      <div class="ps-source"></div>
      <div class="ps-bars" role="list"></div>
      <div class="ps-rate" aria-live="off"></div>
      <div class="ps-timing"></div>
    </div>
  </div>
</div>
"""

_LIVE_CSS = (
    _SHARED_CSS
    + """
.ps-columns { display: flex; flex-wrap: wrap; gap: 1.5rem; align-items: flex-start; }
.ps-left { flex: 0 1 360px; min-width: 240px; }
.ps-right { flex: 1 1 320px; min-width: 260px; }
.ps-dropped { position: absolute; inset: 0; object-fit: contain;
  background: var(--st-secondary-background-color, #f0f2f6); }
.ps-drop-hint { position: absolute; left: 0; right: 0; bottom: 0.5rem; text-align: center;
  font-size: 0.85rem; color: #fff; text-shadow: 0 1px 2px rgba(0,0,0,.7); pointer-events: none; }
.ps-root:not(.ps-camera-on) .ps-drop-hint { color: inherit; text-shadow: none; top: 45%; }
.ps-over .ps-stage { outline: 3px dashed var(--st-primary-color, #ff4b4b); }
.ps-source { font-size: 0.9rem; opacity: 0.75; margin-bottom: 0.4rem; min-height: 1.2rem; }
.ps-bar { display: grid; grid-template-columns: minmax(5rem, 11rem) 1fr 4.2rem; gap: 0.6rem;
  align-items: center; margin: 0.35rem 0; font-size: 1rem; }
.ps-bar-name { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.ps-bar-track { height: 1.4rem; background: var(--st-secondary-background-color, #f0f2f6);
  border-radius: 0.35rem; overflow: hidden; }
.ps-bar-fill { height: 100%; width: 0; background: #8fa9c9; transition: width 0.05s linear; }
.ps-top .ps-bar-fill { background: var(--st-primary-color, #ff4b4b); }
.ps-top .ps-bar-name { font-weight: 600; }
.ps-bar-value { text-align: right; font-variant-numeric: tabular-nums; }
.ps-rate { margin-top: 0.8rem; font-size: 1.05rem; font-variant-numeric: tabular-nums; }
.ps-timing { font-size: 0.85rem; opacity: 0.7; font-variant-numeric: tabular-nums; }
"""
)

_LIVE_JS = (
    _CAMERA_JS
    + """
export default function (component) {
  const { data, setTriggerValue, setStateValue, parentElement } = component;
  const parent = parentElement;
  let s = parent.__psLive;
  if (!s) {
    s = parent.__psLive = {
      counter: 0, awaiting: null, sentAt: 0, shownId: null, updates: [], paused: false,
      mode: 'camera', cameraOn: false, timer: null,
      prefix: Math.random().toString(36).slice(2, 10),
      video: parent.querySelector('.ps-video'), canvas: document.createElement('canvas'),
    };
    const root = parent.querySelector('.ps-root');
    const dropped = parent.querySelector('.ps-dropped');
    const pause = parent.querySelector('.ps-pause');
    const back = parent.querySelector('.ps-back');
    const send = (image, name) => {
      s.counter += 1;
      s.awaiting = s.prefix + '-' + s.counter;
      s.sentAt = Date.now();
      s.setTriggerValue('frame', { id: s.awaiting, image, name: name || '' });
    };
    // The next frame goes as soon as the answer to the last one has arrived (one in flight);
    // a frame whose answer never came (its rerun was superseded) is replaced after 3 s.
    s.next = () => {
      clearTimeout(s.timer);
      if (s.mode !== 'camera' || s.paused || !s.cameraOn) return;
      if (s.awaiting && Date.now() - s.sentAt < 3000) { s.timer = setTimeout(s.next, 200); return; }
      const image = grabFrame(s.video, s.canvas, s.data.side);
      if (!image) { s.timer = setTimeout(s.next, 100); return; }
      send(image, '');
      s.timer = setTimeout(s.next, 3000);
    };
    s.onCamera = () => {
      pause.hidden = false;
      s.next();
    };
    const showImage = (file) => {
      if (!file || !file.type.startsWith('image/')) {
        parent.querySelector('.ps-message').textContent = 'Drop an image file (PNG, JPEG, ...).';
        return;
      }
      const reader = new FileReader();
      reader.onload = () => {
        s.mode = 'image';
        dropped.src = reader.result;
        dropped.hidden = false;
        back.hidden = false;
        pause.hidden = true;
        s.updates = [];
        parent.querySelector('.ps-message').textContent = '';
        send(reader.result, file.name);
      };
      reader.readAsDataURL(file);
    };
    const stage = parent.querySelector('.ps-stage');
    stage.addEventListener('dragover', (e) => {
      e.preventDefault();
      root.classList.add('ps-over');
    });
    stage.addEventListener('dragleave', () => root.classList.remove('ps-over'));
    stage.addEventListener('drop', (e) => {
      e.preventDefault();
      root.classList.remove('ps-over');
      showImage(e.dataTransfer.files[0]);
    });
    parent.querySelector('.ps-pick input').addEventListener('change', (e) => {
      showImage(e.target.files[0]);
      e.target.value = '';
    });
    back.addEventListener('click', () => {
      s.mode = 'camera';
      dropped.hidden = true;
      back.hidden = true;
      s.updates = [];
      if (s.cameraOn) { pause.hidden = false; s.next(); }
      else startPreview(s, parent, s.setStateValue);
    });
    pause.addEventListener('click', () => {
      s.paused = !s.paused;
      pause.textContent = s.paused ? 'Resume' : 'Pause';
      s.updates = [];
      s.next();
    });
    parent.querySelector('.ps-start').addEventListener('click', () => {
      if (s.mode === 'image') back.click(); else startPreview(s, parent, s.setStateValue);
    });
    s.draw = (answer) => {
      const bars = parent.querySelector('.ps-bars');
      const classes = s.data.classes;
      if (bars.childElementCount !== classes.length) {
        bars.replaceChildren(...classes.map((name) => {
          const row = document.createElement('div');
          row.className = 'ps-bar';
          row.setAttribute('role', 'listitem');
          row.dataset.class = name;
          row.innerHTML = '<span class="ps-bar-name"></span><span class="ps-bar-track">'
            + '<span class="ps-bar-fill" style="display:block"></span></span>'
            + '<span class="ps-bar-value"></span>';
          row.querySelector('.ps-bar-name').textContent = name;
          row.querySelector('.ps-bar-name').title = name;
          return row;
        }));
      }
      const probabilities = answer && answer.probabilities;
      const top = probabilities ? probabilities.indexOf(Math.max(...probabilities)) : -1;
      [...bars.children].forEach((row, i) => {
        const p = probabilities ? probabilities[i] : null;
        row.classList.toggle('ps-top', i === top);
        row.dataset.p = p === null ? '' : String(p);
        const shown = p === null ? null : (100 * p).toFixed(1) + '%';
        row.querySelector('.ps-bar-fill').style.width = shown || '0';
        row.querySelector('.ps-bar-value').textContent = shown || '\\u2013';
      });
    };
    if (wasGranted()) startPreview(s, parent, setStateValue);
  }
  s.data = data;
  s.setTriggerValue = setTriggerValue;
  s.setStateValue = setStateValue;
  const answer = data.result;
  if (!s.shownId) s.draw(null);
  if (answer && answer.id !== s.shownId) {
    s.shownId = answer.id;
    const message = parent.querySelector('.ps-message');
    message.textContent = answer.error ? answer.error : '';
    if (!answer.error) s.draw(answer);
    const source = parent.querySelector('.ps-source');
    source.textContent = answer.name ? 'Dropped image: ' + answer.name : 'Camera';
    if (answer.ms) {
      const ms = answer.ms;
      const server = ms.decode + ms.preprocess + ms.forward + ms.probe;
      parent.querySelector('.ps-timing').textContent = 'On the server: ' + server.toFixed(0)
        + ' ms a frame (decode ' + ms.decode.toFixed(0) + ', preprocess '
        + ms.preprocess.toFixed(0) + ', encoder ' + ms.forward.toFixed(0) + ', probe '
        + ms.probe.toFixed(1) + ')';
    }
    if (answer.id === s.awaiting) {
      s.awaiting = null;
      const now = Date.now();
      if (!answer.name) {
        s.updates.push(now);
        s.updates = s.updates.filter((t) => now - t <= 3000);
      }
      const rate = parent.querySelector('.ps-rate');
      if (s.mode === 'image') {
        rate.textContent = 'Showing the dropped image';
      } else if (s.updates.length >= 2) {
        const span = (s.updates[s.updates.length - 1] - s.updates[0]) / 1000;
        const perSecond = (s.updates.length - 1) / Math.max(span, 0.001);
        rate.textContent = perSecond.toFixed(1) + ' updates a second';
        rate.dataset.rate = perSecond.toFixed(2);
      } else {
        rate.textContent = 'Measuring the frame rate\\u2026';
      }
      s.next();
    }
  }
  return () => {
    clearTimeout(s.timer);
    releaseCamera(s);
  };
}
"""
)

_live = st.components.v2.component(
    "probe_studio_live_camera", html=_LIVE_HTML, css=_LIVE_CSS, js=_LIVE_JS
)


def live_camera(encoder: Encoder, weights: ProbeWeights, key: str = "live_camera") -> str | None:
    """The live view: each frame (or dropped image) the browser sends is classified before
    the (fragment) run that answers it. Returns the camera's state as for
    ``webcam_recorder``."""
    answer_key = f"{key}_answer"

    def classify() -> None:
        answer = classify_frame(getattr(st.session_state.get(key), "frame", None), encoder, weights)
        if answer is not None:
            st.session_state[answer_key] = answer

    result = _live(
        data={
            "classes": list(weights.class_names),
            "side": CAPTURE_SIDE,
            "result": st.session_state.get(answer_key),
        },
        key=key,
        default={"camera": None},
        on_frame_change=classify,
        on_camera_change=lambda: None,
    )
    return getattr(result, "camera", None)
