"""Data: choose images (demo, webcam, drop, browse, zip, built classes, server folder) or open
precomputed embeddings, preview, run."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from probe_core import decode_check
from probe_core.capture import CapturedImage, CaptureError, CaptureSet
from probe_core.dataset import ArchiveError, missing_classes_by_split, scan_folder, top_folders
from probe_core.embeddings_io import EmbeddingsFileError, read_embeddings
from probe_core.encoders import EncoderError
from probe_core.evaluation.duplicates import DEFAULT_DUPLICATE_COSINE
from probe_core.evaluation.protocols import AUTO_CV_LIMIT, PROTOCOLS
from probe_core.images import load_image
from probe_core.probe import MIN_IMAGES_PER_CLASS, ProbeError
from probe_core.roots import (
    FolderNotAllowedError,
    configured_roots,
    resolve_server_folder,
    resolve_server_path,
)
from probe_core.study import StudySettings
from probe_core.thumbnails import thumbnail, to_data_uri
from probe_core.wording import caption_text, percent_with_interval, plural
from studio import shared
from studio.components import folder_drop_zone
from studio.encoder_picker import encoder_picker
from studio.webcam import capture_gallery, webcam_recorder

MAX_UPLOAD_MB = int(st.get_option("server.maxUploadSize"))


def _bump(name: str) -> None:
    """Give an uploader a fresh key, which empties it once its files are taken."""
    st.session_state[name] = st.session_state.get(name, 0) + 1


def _uploader_key(name: str) -> str:
    return f"{name}_{st.session_state.get(name, 0)}"


def _loaded_from(tab: str) -> None:
    """Images (or embeddings) were just loaded from this tab: it stays open."""
    st.session_state.data_tab = tab


def _take(files: list[tuple[str, bytes]], kind: str, counter: str, tab: str) -> None:
    """Start a study on uploaded files, titled by what was uploaded ("Dropped folder “pets”
    (11 files)")."""
    if files:
        folders = top_folders(name for name, _ in files)
        named = f"{'folder' if len(folders) < 2 else 'folders'} " + ", ".join(
            f"“{folder}”" for folder in folders
        )
        label = f"{kind} {named.strip()} ({plural(len(files), 'file')})"
        shared.set_dataset(shared.workspace().add_files(files), label, name="upload")
        _loaded_from(tab)
        _bump(counter)
        st.rerun()


TABS = [
    "Demo",
    "Webcam",
    "Drop a folder",
    "Browse",
    "Zip file",
    "Build classes",
    "Server folder",
    "Open embeddings",
]


def choose_images() -> None:
    # The tab that loaded the images stays open after visiting other pages. (Tracking every
    # tab click would rerun the page on each one, racing a drop made right after the click.)
    demo, webcam, drop, browse, archive, build, server, precomputed = st.tabs(
        TABS, default=st.session_state.get("data_tab", TABS[0])
    )
    with demo:
        st.write(f"{shared.DEMO_LABEL}. Works offline.")
        if st.button("Use the demo", type="primary", key="use_demo"):
            shared.load_demo()
            _loaded_from("Demo")
            st.rerun()
    with webcam:
        webcam_classes()
    with drop:
        files = folder_drop_zone(_uploader_key("drop"))
        _take(files, "Dropped", "drop", "Drop a folder")
    with browse:
        uploads = st.file_uploader(
            "Pick a folder with one subfolder per class",
            accept_multiple_files="directory",
            key=_uploader_key("browse"),
            help=f"Up to {MAX_UPLOAD_MB} MB per file.",
        )
        _take([(u.name, u.getvalue()) for u in uploads or []], "Uploaded", "browse", "Browse")
    with archive:
        upload = st.file_uploader(
            "A .zip with one folder per class",
            type=["zip"],
            key=_uploader_key("zip"),
            help=f"Up to {MAX_UPLOAD_MB} MB.",
        )
        if upload is not None:
            try:
                dataset = shared.workspace().add_zip(upload.name, upload.getvalue())
            except ArchiveError as error:
                st.error(str(error))
                _bump("zip")  # else every rerun takes the bad zip again, replacing newer uploads
            else:
                shared.set_dataset(dataset, f"Zip: {upload.name}", name=Path(upload.name).stem)
                _loaded_from("Zip file")
                _bump("zip")
                st.rerun()
    with build:
        build_classes()
    with server:
        server_folder()
    with precomputed:
        open_embeddings()
    st.caption(f"Uploads: up to {MAX_UPLOAD_MB} MB per file; they stay private to this session.")


def build_classes() -> None:
    """Teachable-Machine style: name a class, drop its images, repeat."""
    classes = st.session_state.setdefault("built_classes", ["class 1", "class 2"])
    collected: dict[str, list[tuple[str, bytes]]] = {}
    for position, default in enumerate(classes):
        left, right = st.columns([1, 3])
        name = left.text_input("Class name", value=default, key=f"class_name_{position}")
        images = right.file_uploader(
            f"Images of “{name}”",
            type=shared.IMAGE_TYPES,
            accept_multiple_files=True,
            key=f"class_images_{position}",
        )
        if images:
            collected.setdefault(name, []).extend((img.name, img.getvalue()) for img in images)
    add, use = st.columns(2)
    if add.button("Add a class", key="add_class"):
        classes.append(f"class {len(classes) + 1}")
        st.rerun()
    if use.button("Use these classes", type="primary", key="use_classes"):
        if sum(len(v) for v in collected.values()) == 0:
            st.warning("Add images to at least two classes first.")
        else:
            shared.set_dataset(
                shared.workspace().add_classes(collected), "Classes built here", name="classes"
            )
            _loaded_from("Build classes")
            st.rerun()


CAMERA_PROBLEMS = {"denied", "missing", "insecure", "busy", "failed"}
THUMBNAIL_SIDE = 56  # px, as the gallery shows them


@st.fragment
def webcam_classes() -> None:
    """Teachable-Machine style from the webcam: name a class, hold to record (or take single
    photos, or add images), add the next class. The classes live in the session's workspace
    as one folder per class; only this fragment reruns while frames arrive."""
    captures = shared.workspace().captures
    names = captures.class_names
    if st.session_state.get("webcam_active") not in names:
        st.session_state.webcam_active = names[-1] if names else None
    camera_col, classes_col = st.columns([2, 3], gap="large")
    with camera_col:
        camera = webcam_recorder(captures, st.session_state.webcam_active)
        if camera in CAMERA_PROBLEMS:
            st.info(
                "Without the camera, each class still takes images from its uploader, and"
                " the other tabs work as usual.",
                icon=":material/no_photography:",
            )
        st.caption(
            "Frames go only to this studio's server, where they are kept as PNG files in"
            " this session's private folder until the session ends."
        )
    with classes_col:
        new_class_form(captures)
        if names:
            st.radio(
                "Record into",
                names,
                key="webcam_active",
                horizontal=True,
                help="Hold to record and Take a photo add frames to this class.",
            )
        for name in names:
            capture_class(captures, name)
    use_col, download_col = st.columns(2)
    total = len(captures)
    if use_col.button(
        "Use the recorded classes", type="primary", key="use_webcam", disabled=total == 0
    ):
        shared.set_dataset(
            shared.workspace().add_captures(),
            f"Webcam classes ({plural(len(names), 'class')}, {plural(total, 'image')})",
            name="webcam",
        )
        _loaded_from("Webcam")
        st.rerun(scope="app")
    download_col.download_button(
        "Download the set (.zip)",
        data=captures.to_zip,  # built when clicked, not on every frame
        file_name="webcam-classes.zip",
        mime="application/zip",
        on_click="ignore",
        disabled=total == 0,
        key="download_webcam",
        help="One folder per class. Open it again in the Zip file tab, or continue it here.",
    )
    reopen_capture_zip(captures)
    reopened_message()


def new_class_form(captures: CaptureSet) -> None:
    def add() -> None:
        typed = st.session_state.get("webcam_new_class", "")
        if not typed.strip() and st.session_state.get("webcam_just_added"):
            return  # the click that left the field, whose change already added the class
        try:
            added = captures.add_class(typed)
        except CaptureError as error:
            st.session_state.webcam_error = str(error)
        else:
            st.session_state.webcam_active = added
            st.session_state.webcam_new_class = ""
            st.session_state.webcam_just_added = True

    name_col, add_col = st.columns([3, 1], vertical_alignment="bottom")
    placeholder = "e.g. thumbs up" if not captures.class_names else "the next class"
    name_col.text_input(
        "Name a class", key="webcam_new_class", placeholder=placeholder, on_change=add
    )
    add_col.button("Add this class", key="webcam_add_class", on_click=add, width="stretch")
    st.session_state.webcam_just_added = False  # for the next run's callbacks
    error = st.session_state.pop("webcam_error", None)
    if error:
        st.error(f"Class not added: {error}.")


def capture_class(captures: CaptureSet, name: str) -> None:
    """One recorded class: its thumbnails (any can be deleted), an uploader for images of the
    class, and a button that removes it."""
    images = captures.images(name)
    frames = sum(image.is_frame for image in images)
    with st.container(border=True, key=f"webcam_class_{_css_safe(name)}"):
        head, remove = st.columns([4, 1], vertical_alignment="center")
        counts = plural(len(images), "image")
        if 0 < frames < len(images):
            counts += f" ({plural(frames, 'webcam frame')}, {len(images) - frames:,} added)"
        head.markdown(f"**{caption_text(name)}** · {counts}", unsafe_allow_html=True)
        remove.button(
            "Remove",
            key=f"webcam_remove_{name}",
            on_click=_remove_class,
            args=(captures, name),
            help=f"Remove “{name}” and its images",
            width="stretch",
        )
        capture_gallery(
            [(image.name, uri) for image in images if (uri := _thumbnail_uri(image))],
            on_delete=lambda image_name: captures.delete(name, image_name),
            key=f"webcam_gallery_{name}",
            empty="No images yet: hold to record, take a photo, or add images below.",
        )
        counter = f"webcam_upload_{name}"

        def add_uploads() -> None:  # before the run: the uploader then starts empty
            uploads = st.session_state.get(_uploader_key(counter)) or []
            _, skipped = captures.add_images(name, [(u.name, u.getvalue()) for u in uploads])
            st.session_state[f"{counter}_skipped"] = skipped
            _bump(counter)

        st.file_uploader(
            f"Add images to “{name}”",
            type=shared.IMAGE_TYPES,
            accept_multiple_files=True,
            key=_uploader_key(counter),
            on_change=add_uploads,
        )
        for item in st.session_state.pop(f"{counter}_skipped", []):
            st.warning(f"{item.path} was not added: {item.reason}.")


def _remove_class(captures: CaptureSet, name: str) -> None:
    if name in captures.class_names:  # a second click before the rerun finds it gone
        captures.remove_class(name)


def _css_safe(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name)


def _thumbnail_uri(image: CapturedImage) -> str | None:
    """A small data URI of a recorded image, made once per file (kept in the session)."""
    kept = st.session_state.setdefault("webcam_thumbnails", {})
    try:
        stamp = image.path.stat().st_mtime_ns
    except OSError:
        return None
    key = (str(image.path), stamp)
    if key not in kept:
        try:
            picture = load_image(image.path.read_bytes())
        except Exception:  # an unreadable upload shows no thumbnail; the preview names it
            kept[key] = None
        else:
            picture.thumbnail((2 * THUMBNAIL_SIDE, 2 * THUMBNAIL_SIDE))
            kept[key] = to_data_uri(picture, quality=75)
    return kept[key]


def reopen_capture_zip(captures: CaptureSet) -> None:
    def reopen() -> None:  # before the run, so the classes below show what it added
        upload = st.session_state.get(_uploader_key("webcam_zip"))
        if upload is None:
            return
        try:
            added, skipped = captures.add_zip(upload.getvalue())
        except ArchiveError as error:
            st.session_state.webcam_reopened = (upload.name, str(error), [])
        else:
            st.session_state.webcam_reopened = (upload.name, len(added), skipped)
        _bump("webcam_zip")

    st.file_uploader(
        "Continue a set downloaded before (.zip)",
        type=["zip"],
        key=_uploader_key("webcam_zip"),
        on_change=reopen,
        help="Its classes come back here with their images; recording adds to them.",
    )


def reopened_message() -> None:
    """What the last zip opened for recording added (shown once)."""
    reopened = st.session_state.pop("webcam_reopened", None)
    if reopened is None:
        return
    name, added, skipped = reopened
    if isinstance(added, str):
        st.error(f"{name} could not be opened: {added}")
        return
    st.success(f"{name}: {plural(added, 'image')} added to the classes above.")
    for item in skipped[:10]:
        st.warning(f"{item.path} was not added: {item.reason}.")
    if len(skipped) > 10:
        st.warning(f"… and {len(skipped) - 10:,} more files were not added.")


def server_folder() -> None:
    roots = configured_roots()
    st.caption(
        "Allowed server folders: "
        + ", ".join(f"`{root}`" for root in roots)
        + " (operators set `PROBE_STUDIO_SERVER_ROOTS`)."
    )
    path = st.text_input("Folder on the server", value=str(roots[0]), key="server_path")
    if st.button("Load folder", key="load_server"):
        try:
            folder = resolve_server_folder(path, roots)
        except FolderNotAllowedError as error:
            st.error(str(error))
        else:
            shared.set_dataset(scan_folder(folder), f"Server folder {folder}", name=folder.name)
            _loaded_from("Server folder")
            st.rerun()


def open_embeddings() -> None:
    """Precomputed embeddings (``path, label, vector``): an uploaded Parquet file, or a file or
    folder of shards on the server under the allowed roots."""
    st.write(
        "A Parquet file with columns `path`, `label` and `vector` (as `probe-studio embed` or"
        " `run` writes `embeddings.parquet`, or any other tool), or a folder of such shards."
        " The probe, the metrics and the map work from the vectors alone."
    )
    roots = configured_roots()
    upload_col, server_col = st.columns(2)
    upload = upload_col.file_uploader(
        "Upload a Parquet file", type=["parquet"], key=_uploader_key("embeddings_upload")
    )
    path = server_col.text_input(
        "…or a file or folder of shards on the server",
        placeholder=str(roots[0] / "embeddings.parquet"),
        key="embeddings_path",
        help="Allowed server folders: " + ", ".join(str(root) for root in roots),
    )
    image_root = st.text_input(
        "Image folder for thumbnails (optional)",
        key="embeddings_image_root",
        help="Where the `path` column's relative paths start; by default the folder recorded"
        " in the file. Thumbnails show only for images under the allowed server folders.",
    )
    opened = None
    try:
        if upload is not None:
            target = shared.workspace().add_embeddings_file(upload.name, upload.getvalue())
            opened = read_embeddings(target), f"Embeddings: {upload.name}"
            _bump("embeddings_upload")
        elif st.button("Open embeddings", key="open_embeddings") and path.strip():
            located = resolve_server_path(path, roots)
            opened = read_embeddings(located), f"Embeddings: {located}"
    except (EmbeddingsFileError, FolderNotAllowedError) as error:
        st.error(str(error))
        if upload is not None:
            _bump("embeddings_upload")
        return
    if opened is not None:
        embeddings, label = opened
        root = ""
        if image_root.strip():
            try:
                root = str(resolve_server_folder(image_root, roots))
            except FolderNotAllowedError as error:
                st.warning(f"No thumbnails: {error}")
        shared.set_embeddings(embeddings, label, root, name=Path(embeddings.source).stem)
        _loaded_from("Open embeddings")
        st.rerun()


def preview_embeddings(current: shared.Session) -> None:
    embeddings = current.embeddings
    st.subheader(current.label)
    rows, classes, dims = st.columns(3)
    rows.metric("Embeddings", f"{len(embeddings):,}")
    classes.metric("Classes", len(embeddings.class_names))
    dims.metric("Dimensions", embeddings.dim)
    st.caption(f"Encoder: `{embeddings.encoder_id}` (as recorded in the file).")
    for message in getattr(embeddings, "messages", []):
        st.info(message)
    if current.images.reason:
        st.info(f"No thumbnails: {current.images.reason}.", icon=":material/hide_image:")
    counts = np.bincount(embeddings.labels, minlength=len(embeddings.class_names))
    table = pd.DataFrame({"class": embeddings.class_names, "embeddings": counts})
    st.dataframe(table, hide_index=True, height=min(400, 36 + 35 * len(table)))
    for name, count in zip(embeddings.class_names, counts, strict=True):
        if count < MIN_IMAGES_PER_CLASS:
            st.warning(
                f"“{name}” has fewer than {plural(MIN_IMAGES_PER_CLASS, 'embedding')} and will"
                " be left out of the probe."
            )


def preview(current: shared.Session) -> None:
    st.subheader(current.label)
    shared.check_images(current)  # once per dataset: unreadable files move to the skipped ones
    dataset = current.dataset
    counts = dataset.class_counts()
    images, classes, skipped = st.columns(3)
    images.metric(
        "Images",
        f"{len(dataset):,}",
        help="Every file here decoded as an image."
        if current.pixels_decoded
        else "Headers checked; the pixels are decoded when the probe runs.",
    )
    classes.metric("Classes", len(dataset.class_names))
    skipped.metric("Skipped files", f"{len(dataset.skipped):,}")
    if not current.pixels_decoded:
        st.caption(
            f"Over {plural(decode_check.FULL_DECODE_LIMIT, 'image')}: only the file headers"
            " were checked here. A file whose image data turns out damaged while embedding"
            " moves from Images to Skipped files."
        )
    if dataset.has_splits:
        counts_by_split = dataset.split_counts()
        parts = ", ".join(f"{split}/ {sum(c.values())}" for split, c in counts_by_split.items())
        st.info(
            f"This folder ships its own split ({parts} images): the **given** protocol scores"
            " test/ once, with C chosen on val/ (or on part of train/).",
            icon=":material/call_split:",
        )
        for split, missing in missing_classes_by_split(dataset).items():
            if missing:
                st.error(f"{split}/ has no images of {', '.join(missing)}.")
    if not dataset.items:
        st.error("No images found. Expected one subfolder per class with images inside.")
    elif len(dataset.class_names) < 2:
        st.error(f"Only one class ({dataset.class_names[0]}): a probe needs at least two.")
    for name in dataset.class_names:
        members = [item for item in dataset.items if dataset.class_names[item.label] == name]
        st.markdown(f"**{name}** · {plural(counts[name], 'image')}")
        strip = current.preview_strips.get(name)
        if strip is None:  # decoded once per dataset, not on every rerun
            strip = [image for item in members[:10] if (image := thumbnail(item, 80)) is not None]
            current.preview_strips[name] = strip
        if strip:
            st.image(strip, width=64)
        if counts[name] < MIN_IMAGES_PER_CLASS:
            st.warning(
                f"“{name}” has fewer than {plural(MIN_IMAGES_PER_CLASS, 'image')} and will be"
                " left out of the probe."
            )
    if dataset.skipped:
        with st.expander(f"Skipped files ({len(dataset.skipped):,})"):
            st.dataframe(
                pd.DataFrame(
                    [(s.path, s.reason) for s in dataset.skipped], columns=["file", "reason"]
                ),
                hide_index=True,
                width="stretch",
            )


PROTOCOL_LABELS = {
    "auto": "Auto (recommended)",
    "cv": "Cross-validation: every image scored",
    "holdout": "Held-out test split",
    "given": "The folder's own train/ and test/",
}
PROTOCOL_HELP = (
    "Auto: the folder's own train/test folders when it has them, cross-validation up to"
    f" {AUTO_CV_LIMIT:,} images, a held-out split above. Cross-validation scores every image"
    " with a probe that never saw it (C chosen inside each training fold); a held-out split"
    " scores only the test part."
)


def settings_form(current: shared.Session) -> bool:
    if current.precomputed:
        return precomputed_settings_form(current)
    settings = current.settings
    st.markdown(f"**Encoder** · device: **{shared.device_label()}**")
    encoder = encoder_picker(settings.encoder, shared.available_encoders())
    with st.form("probe_settings"):
        evaluation = evaluation_settings(settings)
        submitted = st.form_submit_button("Run probe", type="primary")
    if submitted:
        current.settings = replace(evaluation, encoder=encoder)
    return submitted


def precomputed_settings_form(current: shared.Session) -> bool:
    with st.form("probe_settings"):
        st.markdown(f"**Precomputed embeddings** · encoder `{current.embeddings.encoder_id}`")
        evaluation = evaluation_settings(current.settings)
        submitted = st.form_submit_button("Run probe", type="primary")
    if submitted:
        current.settings = replace(evaluation, encoder=current.embeddings.encoder_id)
    return submitted


def evaluation_settings(settings: StudySettings) -> StudySettings:
    """The form's protocol, seed, C and duplicate widgets (inside an open ``st.form``)."""
    protocol_col, folds_col, repeats_col, test_col = st.columns([2, 1, 1, 1])
    protocol = protocol_col.selectbox(
        "Evaluation protocol",
        PROTOCOLS,
        index=PROTOCOLS.index(settings.protocol),
        format_func=PROTOCOL_LABELS.get,
        help=PROTOCOL_HELP,
        key="protocol",
    )
    folds = folds_col.number_input(
        "Folds (cv)", 2, 20, settings.folds, help="fewer when the smallest class is smaller"
    )
    repeats = repeats_col.number_input(
        "Repeats (cv)", 1, 20, settings.repeats, help="re-run with other fold seeds"
    )
    test_size = test_col.slider("Test fraction (holdout)", 0.1, 0.5, settings.test_size, 0.05)
    settings = replace(
        settings,
        protocol=protocol,
        folds=int(folds),
        repeats=int(repeats),
        test_size=float(test_size),
    )
    seed_col, c_col, duplicate_col = st.columns(3)
    seed = seed_col.number_input("Seed", 0, 2**31 - 1, settings.seed)
    # One control, empty by default: a form cannot disable a "fixed C" box while C is chosen.
    fixed = c_col.number_input(
        "C (regularisation)",
        1e-4,
        1e5,
        settings.fixed_c,
        format="%.4g",
        placeholder="chosen on validation data",
        help="Empty: C is chosen on validation data the score never sees (recommended)."
        " Type a value to fix C instead.",
    )
    threshold = duplicate_col.number_input(
        "Duplicate cosine",
        0.9,
        1.0,
        settings.duplicate_threshold or DEFAULT_DUPLICATE_COSINE,
        0.001,
        format="%.3f",
        help="images this similar (or with identical bytes) are kept on one side of every split",
    )
    return replace(
        settings,
        seed=int(seed),
        fixed_c=None if fixed is None else float(fixed),
        duplicate_threshold=float(threshold),
    )


def run(current: shared.Session, fallback_encoder: str) -> bool:
    """Embed (if needed) and evaluate; True when results are ready. An encoder that cannot be
    loaded gives way to ``fallback_encoder`` (the one chosen before) in the settings."""
    if current.precomputed:
        return evaluate(current, None)
    name = current.settings.encoder
    try:
        encoder = shared.encoder_for_session(name)
    except EncoderError as error:
        st.error(f"**{name}** could not be loaded: {error}")
        current.settings = replace(current.settings, encoder=fallback_encoder)
        return False
    if current.embeddings is None or current.embeddings.encoder_id != encoder.encoder_id:
        current.embeddings = shared.embed_with_progress(current, encoder)
        current.projections.clear()
        current.thumbnails.clear()
        unreadable = [s for s in current.embeddings.skipped if s not in current.dataset.skipped]
        current.pixels_decoded = True  # embedding decoded every image
        if unreadable:
            current.dataset = current.dataset.without(unreadable)  # the counts stay true
            listed = "; ".join(f"{s.path} ({s.reason})" for s in unreadable[:5])
            more = f"; and {len(unreadable) - 5} more" if len(unreadable) > 5 else ""
            st.session_state.run_warning = (
                f"{plural(len(unreadable), 'file')} could not be read as an image and"
                f" {'was' if len(unreadable) == 1 else 'were'} left out: {listed}{more}."
                " Skipped files on the Data page lists every file left out."
            )
    return evaluate(current, encoder)


def evaluate(current: shared.Session, encoder) -> bool:
    try:
        with st.spinner("Fitting and scoring the probe (C chosen on training data only)…"):
            current.result = shared.fit_probe(current, encoder)
    except ProbeError as error:
        current.result = None
        st.error(str(error))
        return False
    return True


st.title("Probe Studio")
st.caption("How well does a frozen image encoder separate the classes in your image folder?")
run_demo_now = st.session_state.pop("run_demo", False)
if shared.session() is None or run_demo_now:
    shared.load_demo()
choose_images()
current = shared.session()
st.divider()
if current.precomputed:
    preview_embeddings(current)
else:
    preview(current)
if current.precomputed or current.dataset.items:
    chosen_before = current.settings.encoder
    if (settings_form(current) or run_demo_now) and run(current, chosen_before):
        st.switch_page("app_pages/results.py")
    elif current.result is not None:
        accuracy = percent_with_interval(current.result.metrics.accuracy)
        st.success(f"Results ready: accuracy {accuracy}.")
        st.page_link("app_pages/results.py", label="See the results", icon=":material/monitoring:")
