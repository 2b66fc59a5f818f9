"""Session state and cached resources shared by the pages. All computing is in probe_core."""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_for
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

import streamlit as st
from streamlit import runtime
from streamlit.logger import get_logger
from streamlit.runtime.scriptrunner import get_script_run_ctx

from probe_core.acceleration import PathChoice
from probe_core.cache import EmbeddingCache
from probe_core.dataset import IMAGE_EXTENSIONS, ImageDataset
from probe_core.decode_check import check_decoding
from probe_core.devices import pick_device
from probe_core.embed import usable_cores
from probe_core.embedding_queue import EmbeddingQueue, QueueLeft, QueuePlace
from probe_core.embeddings import Embeddings
from probe_core.embeddings_io import PrecomputedEmbeddings
from probe_core.encoders import (
    DEFAULT_ENCODER,
    Encoder,
    EncoderError,
    EncoderInfo,
    list_encoders,
    load_encoder,
)
from probe_core.evaluation.protocols import ProbeResult
from probe_core.export import probe_weights
from probe_core.file_names import download_stem
from probe_core.image_lookup import ImageLookup
from probe_core.probe import ProbeWeights
from probe_core.projection import Projection, warm_up
from probe_core.result_cache import ResultCache
from probe_core.roots import DEMO_ROOT
from probe_core.study import Study, StudyProgress, StudySettings
from probe_core.wording import plural
from probe_core.workspace import SessionWorkspace
from studio.encoder_picker import download_weights
from studio.progress import ProgressBar

log = get_logger(__name__)
IMAGE_TYPES = sorted(ext.lstrip(".") for ext in IMAGE_EXTENSIONS)
DEMO_LABEL = "Bundled demo: 144 Noto emoji in 6 categories"


@dataclass
class Session:
    """What one browser session is looking at: a dataset (or precomputed embeddings) and what
    was computed from it."""

    dataset: ImageDataset | None
    label: str
    embeddings: Embeddings | None = None
    result: ProbeResult | None = None
    settings: StudySettings = field(default_factory=StudySettings)
    projections: dict[tuple, Projection] = field(default_factory=dict)
    thumbnails: dict[int, str | None] = field(default_factory=dict)
    preview_strips: dict[str, list] = field(default_factory=dict)
    pixels_decoded: bool | None = None  # None: not checked yet (see check_images)
    images: ImageLookup = field(default_factory=ImageLookup)  # for thumbnails
    name: str = ""  # short dataset name for file names ("demo", a zip's or folder's name)
    shipped_probe: tuple[ProbeResult, ProbeWeights] | None = None  # see session_probe
    path_choice: PathChoice | None = None  # the execution path that embedded ``embeddings``

    def file_stem(self, encoders: str | list[str] | None = None) -> str:
        """What this study's downloads are named after: the dataset and the encoder(s)."""
        return download_stem(self.name or self.label, encoders or self.settings.encoder)

    @property
    def precomputed(self) -> bool:
        """Opened from an embeddings file: no images to embed, no encoder."""
        return self.dataset is None


def workspace() -> SessionWorkspace:
    """This session's private upload folder, removed once the session has ended."""
    if "workspace" not in st.session_state:
        st.session_state.workspace = SessionWorkspace()
        context = get_script_run_ctx()
        if context is not None and runtime.exists():
            workspace_janitor().watch(context.session_id, st.session_state.workspace)
    return st.session_state.workspace


class WorkspaceJanitor:
    """Closes the workspaces of sessions that stayed disconnected past the reconnect TTL.

    Streamlit keeps a disconnected session's state for reconnection and drops it lazily,
    so uploads are not left to garbage collection: a daemon thread checks every few seconds.
    """

    def __init__(self, ttl_seconds: float):
        self.ttl_seconds = ttl_seconds
        self._watched: dict[str, tuple[SessionWorkspace, float]] = {}
        self._lock = threading.Lock()
        interval = max(0.5, min(30.0, ttl_seconds / 2))
        thread = threading.Thread(
            target=self._run, args=(interval,), daemon=True, name="probe-studio-workspace-janitor"
        )
        thread.start()

    def watch(self, session_id: str, space: SessionWorkspace) -> None:
        with self._lock:
            self._watched[session_id] = (space, time.monotonic())

    def sweep(self) -> None:
        now = time.monotonic()
        with self._lock:
            for session_id, (space, seen) in list(self._watched.items()):
                if runtime.get_instance().is_active_session(session_id):
                    self._watched[session_id] = (space, now)
                elif now - seen > self.ttl_seconds:
                    space.close()
                    del self._watched[session_id]
                    log.info("removed the uploads of ended session %s", session_id)

    def _run(self, interval: float) -> None:
        while True:
            time.sleep(interval)
            try:
                self.sweep()
            except RuntimeError:  # the server (or an AppTest run) has shut down
                return


@st.cache_resource
def workspace_janitor() -> WorkspaceJanitor:
    return WorkspaceJanitor(float(st.get_option("server.disconnectedSessionTTL")))


def session() -> Session | None:
    """This browser session's study state (None before a dataset is chosen)."""
    return st.session_state.get("study")


def set_dataset(dataset: ImageDataset, label: str, name: str = "") -> None:
    """Start a new study; the previous one's results are dropped (its settings are kept, but
    for the encoder of embeddings opened from a file, which cannot embed images)."""
    previous = session()
    settings = previous.settings if previous else StudySettings()
    if previous is not None and previous.precomputed:
        settings = replace(settings, encoder=StudySettings().encoder)
    st.session_state.study = Session(
        dataset=dataset,
        label=label,
        settings=settings,
        images=ImageLookup.from_dataset(dataset),
        name=name,
    )


def set_embeddings(
    embeddings: PrecomputedEmbeddings, label: str, image_root: str = "", name: str = ""
) -> None:
    """Start a new study on precomputed embeddings; thumbnails come from files on this server
    under the allowed roots (``image_root``, else the folder the file records), when found."""
    settings = session().settings if session() else StudySettings()
    images = ImageLookup.from_paths(embeddings.paths, image_root or embeddings.image_root or None)
    st.session_state.study = Session(
        dataset=None,
        label=label,
        embeddings=embeddings,
        settings=replace(settings, encoder=embeddings.encoder_id),
        images=images,
        name=name,
    )


def check_images(current: Session) -> None:
    """Check once per dataset which files decode (a progress bar meanwhile); unreadable ones
    move from the dataset's images to its skipped files, with their reasons."""
    if current.dataset is None or current.pixels_decoded is not None:
        return
    bar = ProgressBar("Checking that every image decodes…")

    def update(done: int, total: int) -> None:
        bar.update(done / total, f"Checking that every image decodes: {done:,}/{total:,}")

    check = check_decoding(current.dataset, progress=update)
    bar.empty()
    current.dataset, current.pixels_decoded = check.dataset, check.decoded


def load_demo() -> None:
    from probe_core.dataset import scan_folder

    set_dataset(scan_folder(DEMO_ROOT), DEMO_LABEL, name="demo")


@st.cache_resource(show_spinner="Loading the encoder (once per server process)…")
def shared_encoder(name: str, device: str = "auto") -> Encoder:
    encoder = load_encoder(name, device=device)
    log.info("loaded encoder %s on %s", encoder.encoder_id, encoder.device)
    return encoder


def encoder_for_session(name: str) -> Encoder:
    """The shared encoder for ``name``; whether it loaded is remembered for this session, so
    that a form never preselects an encoder that failed."""
    loads = st.session_state.setdefault("encoder_loads", {})
    try:
        if download_weights(name):  # with a progress bar, outside the cached function
            available_encoders.clear()  # the picker shows it on disk now
        encoder = shared_encoder(name)
    except EncoderError as error:
        loads[name] = str(error)
        raise
    loads[name] = None
    return encoder


def failed_encoders() -> dict[str, str]:
    """Encoders that failed to load in this session (and have not loaded since): the reasons."""
    loads = st.session_state.get("encoder_loads", {})
    return {name: reason for name, reason in loads.items() if reason is not None}


def preselected_encoders(
    wanted: Iterable[str], infos: Iterable[EncoderInfo], loads: dict[str, str | None]
) -> list[str]:
    """What a form starts with: each wanted encoder that works here (it loaded in this session,
    or the picker lists it as ready offline), the bundled encoder in place of one that failed
    or would need a download; no name twice."""
    ready = {info.name for info in infos if not info.needs_download}
    chosen: list[str] = []
    for name in wanted:
        works = loads[name] is None if name in loads else name in ready
        usable = name if works else DEFAULT_ENCODER
        if usable not in chosen:
            chosen.append(usable)
    return chosen


@st.cache_data(ttl=300, show_spinner=False)
def available_encoders() -> list[EncoderInfo]:
    """The picker's list; whether a model is downloaded is rechecked every few minutes."""
    return list_encoders()


@st.cache_resource
def embedding_cache() -> EmbeddingCache:
    return EmbeddingCache()


@st.cache_resource
def result_cache() -> ResultCache:
    """Probe results on disk: re-opening a folder with the same settings does not refit."""
    return ResultCache()


def device_label() -> str:
    device = pick_device()
    return {"cuda": "CUDA GPU", "mps": "Apple MPS", "cpu": "CPU"}[device.type]


def study_runner(current: Session, encoder: Encoder | None) -> Study:
    """The library's study with this session's settings, shared encoder and caches."""
    return Study(
        current.settings, cache=embedding_cache(), result_cache=result_cache(), encoder=encoder
    )


@st.cache_resource(show_spinner=False)
def embedding_queue(encoder_id: str, encoder_key: int, _encoder: Encoder) -> EmbeddingQueue:
    """The server's one embedding queue for a shared encoder (``encoder_key``: its identity):
    every session's images go through it, in shared batches."""
    log.info("embedding queue for %s started", encoder_id)
    return EmbeddingQueue(_encoder)


def this_session() -> tuple[str, Callable[[], bool] | None]:
    """This browser session's id, and a check that it is still connected (None where no
    server runs, as in AppTest)."""
    context = get_script_run_ctx()
    session_id = context.session_id if context is not None else "local"
    if context is None or not runtime.exists():
        return session_id, None
    server = runtime.get_instance()
    return session_id, lambda: server.is_active_session(session_id)


def encoder_name(current: Session) -> str:
    """The name ``load_encoder`` takes for the study's encoder; "" for embeddings opened from a
    file, whose encoder the studio cannot load by its id."""
    return "" if current.precomputed else current.settings.encoder


def session_probe(current: Session) -> ProbeWeights:
    """The probe `probe-studio run` writes: fitted on every image at the protocol's C, with
    the encoder, its execution path and the metrics. Fitted once per result (the Live page
    asks for it on every frame)."""
    if current.shipped_probe is not None and current.shipped_probe[0] is current.result:
        return current.shipped_probe[1]
    encoder = None if current.precomputed else shared_encoder(current.settings.encoder)
    probe = study_runner(current, encoder).final_probe(current.embeddings, current.result)
    weights = probe_weights(
        current.embeddings,
        current.result,
        probe,
        encoder_name=encoder_name(current),
        execution_path=encoder.precision if encoder else "",
        preprocess_id=encoder.preprocess_id if encoder else "",
    )
    current.shipped_probe = (current.result, weights)
    return weights


def embed_with_progress(current: Session, encoder: Encoder) -> Embeddings:
    """Embed outside any cached function so the progress bar is live (cache hits are instant).

    The images the cache lacks go through the server's shared embedding queue; while they
    wait, the bar says the session's place in line and the estimated wait. A session that
    disconnects leaves the queue (and its script stops)."""
    bar = ProgressBar("Embedding…")
    runner = study_runner(current, encoder)
    queue = embedding_queue(encoder.encoder_id, id(encoder), encoder)
    session_id, alive = this_session()
    started = time.perf_counter()
    first_rows = {}  # when this session's first rows came back from the queue

    def update(event: StudyProgress) -> None:
        if event.stage != "embed" or event.done == 0:
            return
        first_rows.setdefault("at", time.perf_counter())
        remaining = (event.total - event.done) / event.rate if event.rate > 0 else 0.0
        bar.update(
            event.done / max(event.total, 1),
            f"Embedding {event.done}/{event.total} images · {event.rate:.1f} images/s"
            f" · ETA {remaining:.0f} s",
        )

    def waiting(place: QueuePlace) -> None:
        bar.update(place.done / max(place.total, 1), place.describe())

    runner.progress = update
    runner.encode = queue.encode_function(session_id, on_wait=waiting, alive=alive)
    try:
        embeddings = runner.embed(current.dataset)
    except QueueLeft:
        bar.empty()
        log.info("session %s left the embedding queue", session_id)
        st.stop()
    current.path_choice = encoder.path_choice
    bar.update(
        1.0,
        f"Embedded {plural(embeddings.n_computed, 'image')},"
        f" {embeddings.n_from_cache:,} from the cache, in {embeddings.seconds:.1f} s",
        final=True,
    )
    stats = queue.stats()
    log.info(
        "session %s embedded %d images (%d from the cache) in %.2f s, %.2f s of it until its"
        " first rows came back; queue: %d batches of up to %d, %d images, %.3f full, %d shared",
        session_id,
        embeddings.n_computed,
        embeddings.n_from_cache,
        embeddings.seconds,
        first_rows.get("at", time.perf_counter()) - started,
        stats.batches,
        stats.batch_size,
        stats.images,
        stats.fill,
        stats.shared_batches,
    )
    return embeddings


# Probe fits at once on this server: one per core. A fit of a small folder is mostly Python
# (the C search's many small solver fits) under the GIL, so 30 sessions fitting at once ran no
# faster than two at a time, and every one of them finished late (bench/classroom.py).
FIT_SLOTS = usable_cores()
_fit_slots = threading.BoundedSemaphore(FIT_SLOTS)
_fits_waiting = 0
_fits_waiting_lock = threading.Lock()


def sessions_waiting_to_fit() -> int:
    return _fits_waiting


@contextmanager
def fit_slot() -> Iterator[float]:
    """Hold one of the server's probe-fitting slots; while none is free, the page says how
    many sessions wait. Yields the seconds waited. A session that disconnects stops waiting."""
    global _fits_waiting
    started = time.perf_counter()
    if not _fit_slots.acquire(blocking=False):
        note = st.empty()
        _, alive = this_session()
        with _fits_waiting_lock:
            _fits_waiting += 1
        try:
            while not _fit_slots.acquire(timeout=0.5):
                note.caption(
                    f"Waiting for a free core to fit the probe: {plural(FIT_SLOTS, 'session')}"
                    f" fitting, {plural(_fits_waiting, 'session')} waiting."
                )
                if alive is not None and not alive():
                    st.stop()
        finally:
            with _fits_waiting_lock:
                _fits_waiting -= 1
        note.empty()
    try:
        yield time.perf_counter() - started
    finally:
        _fit_slots.release()


def fit_probe(current: Session, encoder: Encoder | None) -> ProbeResult:
    """The probe's result (``encoder`` None for precomputed embeddings), fitted in one of the
    server's fitting slots."""
    start_first_map(current)  # in the background, while the probe fits
    with fit_slot() as waited:
        started = time.perf_counter()
        result = study_runner(current, encoder).evaluate(current.embeddings)
    log.info(
        "session %s fitted the probe in %.2f s after %.2f s waiting for a free core",
        this_session()[0],
        time.perf_counter() - started,
        waited,
    )
    return result


@dataclass(frozen=True)
class MapSettings:
    """What the Map page's controls choose; the defaults are what it shows first."""

    method: str = "umap"
    dims: int = 2
    n_neighbors: int = 15
    min_dist: float = 0.1


MAP_SETTING_KEYS = {
    "method": "map_method",
    "dims": "map_dims",
    "n_neighbors": "map_neighbours",
    "min_dist": "map_min_dist",
}
_map_jobs: dict[tuple[int, tuple], Future] = {}  # (id(session), map key) -> running map
_map_jobs_lock = threading.Lock()


@st.cache_resource(show_spinner=False)
def map_worker() -> ThreadPoolExecutor:
    """The server's one background thread for maps. It starts by loading what UMAP runs
    (compiling and caching it, the first time on a machine), so the first map is quick."""
    worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="probe-studio-maps")
    worker.submit(warm_up).add_done_callback(_log_warm_up)
    return worker


def _log_warm_up(job: Future) -> None:
    if job.exception() is not None:
        log.warning("UMAP warm-up failed: %s", job.exception())
    else:
        gc.freeze()  # numba's compiled functions join the frozen imports
        log.info("UMAP warmed up in %.1f s", job.result())


@st.cache_resource(show_spinner=False)
def freeze_loaded_objects() -> int:
    """Once per server process: move the objects loaded so far (torch, scikit-learn, Plotly,
    the pages' modules) out of the garbage collector's sight; returns how many.

    Streamlit runs a full collection after every script run (``runner.postScriptGC``). With
    these libraries loaded it walks about 650,000 objects, 0.6 s holding the GIL on a 2-core
    machine under load, after each rerun of each session: 14-16% of a classroom server's
    samples (bench/classroom.py with py-spy), stalling every other session meanwhile. Frozen
    objects are still freed when their last reference goes; only cycles among them would
    stay, and these are long-lived modules anyway. Called again once UMAP has compiled."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def warm_up_maps() -> None:
    """Called by app.py on every run; the warm-up starts once per server process."""
    map_worker()


def projection_key(current: Session, settings: MapSettings) -> tuple:
    """Where a map sits in ``current.projections``: its settings and the study's seed (not
    ``result_cache.map_key``, the on-disk cache key of a map)."""
    return (
        settings.method,
        settings.dims,
        settings.n_neighbors,
        settings.min_dist,
        current.settings.seed,
        current.embeddings.encoder_id,
    )


def chosen_map_settings() -> MapSettings:
    """The Map page's current choices, or its defaults where it has not been opened."""
    defaults = MapSettings()
    return MapSettings(
        **{
            name: st.session_state.get(key, getattr(defaults, name))
            for name, key in MAP_SETTING_KEYS.items()
        }
    )


def start_first_map(current: Session) -> None:
    """Compute the map the Map page will show first in the background, into the session."""
    settings = chosen_map_settings()
    key = projection_key(current, settings)
    job_key = (id(current), key)
    with _map_jobs_lock:
        if key in current.projections or job_key in _map_jobs:
            return
        embeddings, study_settings, maps = current.embeddings, current.settings, result_cache()

        def make_map() -> None:
            projection = Study(study_settings, result_cache=maps).project(
                embeddings,
                method=settings.method,
                n_components=settings.dims,
                n_neighbors=settings.n_neighbors,
                min_dist=settings.min_dist,
            )
            if current.embeddings is embeddings:  # not re-embedded meanwhile
                current.projections[key] = projection

        job = map_worker().submit(make_map)
        _map_jobs[job_key] = job
    job.add_done_callback(lambda _: _forget_map_job(job_key))


def _forget_map_job(job_key: tuple) -> None:
    with _map_jobs_lock:
        _map_jobs.pop(job_key, None)


def projection_for(
    current: Session, method: str, dims: int, n_neighbors: int, min_dist: float
) -> Projection:
    """Computed once per setting and kept in the study; waits for a map started in the
    background when the probe ran rather than computing it again."""
    key = projection_key(current, MapSettings(method, dims, n_neighbors, min_dist))
    with _map_jobs_lock:
        job = _map_jobs.get((id(current), key))
    if key not in current.projections and job is not None:
        with st.spinner(f"Finishing the {method.upper()} map started when the probe ran…"):
            wait_for([job])
        if job.exception() is not None:
            log.warning("background map failed, computing it again: %s", job.exception())
    if key in current.projections:
        projection = current.projections[key]
        st.status(f"{method.upper()} done in {projection.seconds:.1f} s", state="complete")
        return projection
    with st.status(f"Computing {method.upper()}…") as status:
        projection = Study(current.settings, result_cache=result_cache()).project(
            current.embeddings,
            method=method,
            n_components=dims,
            n_neighbors=n_neighbors,
            min_dist=min_dist,
        )
        current.projections[key] = projection
        status.update(
            label=f"{method.upper()} done in {projection.seconds:.1f} s", state="complete"
        )
    return projection


MAX_KEPT_THUMBNAILS = 5_000  # per session: hovering over 100k points must not fill memory


def thumbnails_for(current: Session, indices) -> dict[int, str]:
    """Data-URI thumbnails of embedded images by embedding index (the latest kept for reuse);
    images that cannot be found are left out."""
    found = {}
    for index in map(int, indices):
        if index not in current.thumbnails:
            if len(current.thumbnails) >= MAX_KEPT_THUMBNAILS:
                current.thumbnails.pop(next(iter(current.thumbnails)))
            uri = current.images.thumbnail_uri(current.embeddings.paths[index])
            current.thumbnails[index] = uri
        if current.thumbnails[index]:
            found[index] = current.thumbnails[index]
    return found


def require_results() -> Session | None:
    """The study with results, or a hint and None."""
    current = session()
    if current is None or current.result is None:
        st.info("No results yet: choose images on the **Data** page and press **Run probe**.")
        if st.button("Run the bundled demo"):
            st.session_state.run_demo = True
            st.switch_page("app_pages/data.py")
        return None
    return current
