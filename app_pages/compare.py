"""Compare: several encoders on the loaded images (or several precomputed embedding files), same
folds, paired tests, zero- and few-shot."""

from __future__ import annotations

import dataclasses
import itertools
import time
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import NoReturn

import pandas as pd
import streamlit as st

from probe_core.embeddings_io import EmbeddingsFileError, read_for_comparison
from probe_core.encoders import EncoderError, EncoderInfo, describe, ready_sets
from probe_core.evaluation.comparison import comparison_table, pairs_table, per_image_table
from probe_core.evaluation.fewshot import crossing_sentence, fewshot_table
from probe_core.evaluation.intervals import Estimate
from probe_core.evaluation.zeroshot import (
    TemplateError,
    default_templates,
    parse_templates,
    template_text,
)
from probe_core.figures import confusion_figure, embedding_figure, fewshot_figure
from probe_core.probe import ProbeError
from probe_core.projection import Projection
from probe_core.roots import FolderNotAllowedError, configured_roots, resolve_server_path
from probe_core.study import ComparisonOutcome, Study, StudyProgress, StudySettings
from probe_core.wording import plural
from studio import shared
from studio.encoder_picker import NAME_HELP, ready_set_buttons
from studio.progress import ProgressBar

BASELINE = "baseline:pixels"
MAP_KEY_PREFIX = "compare_map_"
ENCODERS_KEY = "compare_encoders"


@dataclass
class ComparisonRun:
    """A finished comparison, kept in the session so that reruns only redraw it."""

    outcome: ComparisonOutcome
    settings: StudySettings
    seconds: float
    number: int  # part of the map widget keys: a new comparison starts with no selection
    fewshot_asked: bool
    projections: dict[tuple[str, str], Projection] = field(default_factory=dict)
    session: shared.Session | None = None  # the study it was made for


def require_dataset() -> shared.Session | None:
    """The study once images are loaded (no results needed), or a hint and None."""
    current = shared.session()
    if current is not None and current.precomputed:
        return current
    if current is None or current.dataset is None or not current.dataset.items:
        st.info("No images yet: choose images on the **Data** page.")
        if st.button("Use the bundled demo"):
            shared.load_demo()
            st.rerun()
        return None
    return current


def describe_label(name: str, infos: list[EncoderInfo]) -> str:
    """``name (status)`` for a name the picker does not list; the name alone if it is none."""
    try:
        return describe(name, infos).label
    except EncoderError:
        return name


def percent(estimate: Estimate) -> str:
    return f"{estimate.value:.1%} (95% CI {estimate.low:.1%} to {estimate.high:.1%})"


def comparison_form(current: shared.Session) -> tuple[list[str], bool, list[str]] | None:
    """The encoders, few-shot flag and templates when the form was submitted, else None."""
    infos = shared.available_encoders()
    labels = {info.name: info.label for info in infos}
    failed = shared.failed_encoders()
    labels.update({name: f"{name} (failed to load)" for name in failed})
    settings = current.settings
    if ENCODERS_KEY not in st.session_state:  # never an encoder that failed or needs a download
        st.session_state[ENCODERS_KEY] = shared.preselected_encoders(
            [settings.encoder, BASELINE], infos, st.session_state.get("encoder_loads", {})
        )
    dropped = st.session_state.pop("compare_drop", [])  # failed in the last comparison
    if dropped:
        kept = [name for name in st.session_state[ENCODERS_KEY] if name not in dropped]
        st.session_state[ENCODERS_KEY] = kept
    ready_set_buttons(ready_sets(infos), ENCODERS_KEY)
    options = list(dict.fromkeys([*st.session_state[ENCODERS_KEY], *labels]))
    for name in options:
        if name not in labels:  # typed, or from a ready set: described all the same
            labels[name] = describe_label(name, infos)
    with st.form("compare_settings"):
        names = st.multiselect(
            "Encoders",
            options,
            key=ENCODERS_KEY,
            format_func=lambda name: labels.get(name, name),
            accept_new_options=True,
            help="Two or more; type a name to add one. " + NAME_HELP,
        )
        fewshot = st.checkbox(
            "Few-shot curve (how many images per class do I need?)",
            help="Refits the probe on 1, 2, 4, … images per class, ten draws each: on the"
            " demo, comparing two encoders took about 2.5 times as long with it (7 s more of"
            " CPU on two cores); more on larger folders (bench/fewshot_speed.py).",
        )
        with st.expander("Zero-shot prompt templates"):
            text = st.text_area(
                "One template per line, `{}` stands for the class name",
                "\n".join(template_text(t) for t in default_templates()),
                height=200,
                key="compare_templates",
            )
        st.caption(
            f"Evaluation protocol **{settings.protocol}** ({settings.folds} folds under"
            f" cross-validation), seed {settings.seed}: set on the Data page. Every encoder is"
            " scored on the same images and folds."
        )
        submitted = st.form_submit_button("Compare", type="primary")
    if not submitted:
        return None
    try:
        templates = parse_templates(text)
    except TemplateError as problem:
        st.error(str(problem))
        return None
    return names, fewshot, templates


def embeddings_form(current: shared.Session) -> tuple[dict, bool] | None:
    """For a study opened from embeddings: more embedding files (uploaded or on the server),
    read and checked, by name; None until the form is submitted with at least one."""
    roots = configured_roots()
    with st.form("compare_embeddings"):
        st.markdown(
            f"Compare **{current.embeddings.encoder_id}** with other embeddings of the same"
            " images (Parquet files of `path, label, vector`, matched by path)."
        )
        uploads = st.file_uploader(
            "Upload embedding files", type=["parquet"], accept_multiple_files=True
        )
        paths = st.text_area(
            "…or files or folders of shards on the server, one per line",
            help="Allowed server folders: " + ", ".join(str(root) for root in roots),
        )
        fewshot = st.checkbox("Few-shot curve (how many images per class do I need?)")
        submitted = st.form_submit_button("Compare", type="primary")
    if not submitted:
        return None
    # A generator: each upload is read before the next replaces it in the workspace.
    sources = itertools.chain(
        (
            shared.workspace().add_embeddings_file(upload.name, upload.getvalue())
            for upload in uploads or []
        ),
        (resolve_server_path(line, roots) for line in paths.splitlines() if line.strip()),
    )
    try:
        found = read_for_comparison(sources, {current.embeddings.encoder_id: current.embeddings})
    except (EmbeddingsFileError, FolderNotAllowedError) as error:
        st.error(str(error))
        return None
    if len(found) < 2:
        st.warning("Add at least one more embeddings file to compare with.")
        return None
    return found, fewshot


def compare_embeddings(
    current: shared.Session, embeddings: dict, fewshot: bool
) -> ComparisonRun | None:
    started = time.perf_counter()
    with st.spinner("Scoring a probe per set of embeddings on the same folds…"):
        try:
            outcome = Study(current.settings).compare_embeddings(embeddings, fewshot=fewshot)
        except (ProbeError, ValueError) as error:
            st.error(str(error))
            return None
    number = st.session_state.get("compare_runs", 0) + 1
    st.session_state.compare_runs = number
    seconds = time.perf_counter() - started
    return ComparisonRun(outcome, current.settings, seconds, number, fewshot, session=current)


def failed(message: str, drop: list[str] | None = None) -> NoReturn:
    """Show why the comparison failed below the form, in plain sight (not inside the collapsed
    progress box), and take encoders that cannot be loaded out of the selection."""
    st.session_state.compare_failure = message
    st.session_state.compare_drop = drop or []
    st.rerun()


def compare_with_progress(
    current: shared.Session, names: list[str], fewshot: bool, templates: list[str]
) -> ComparisonRun | None:
    """Run the library's comparison with a live status (outside any cached function)."""
    started = time.perf_counter()
    with st.status("Comparing encoders…", expanded=True) as status:
        bar = ProgressBar("Loading the encoders…")
        position = {"encoder": names[0], "done": 0}

        def update(event: StudyProgress) -> None:
            if event.stage == "load encoder":
                position["encoder"] = event.message
                position["done"] = names.index(event.message) if event.message in names else 0
                bar.update(position["done"] / len(names), f"Embedding with {event.message}…")
            elif event.stage == "embed" and event.total:
                fraction = (position["done"] + event.done / event.total) / len(names)
                bar.update(
                    min(fraction, 1.0),
                    f"{position['encoder']}: {event.done}/{event.total} images"
                    f" · {event.rate:.1f} images/s",
                )
            elif event.stage == "evaluate":
                bar.update(1.0, "Embedded with every encoder", final=True)
                status.update(label="Scoring a probe per encoder on the same folds…")
            elif event.stage == "few-shot":
                status.update(label=f"Few-shot curve of {event.message}…")

        encoders = {}
        for name in dict.fromkeys(names):
            try:
                encoders[name] = shared.encoder_for_session(name)
            except EncoderError as error:
                failed(
                    f"**{name}** could not be loaded, so it was taken out of the selection:"
                    f" {error}",
                    drop=[name],
                )
        try:
            outcome = Study(
                current.settings, cache=shared.embedding_cache(), progress=update
            ).compare(
                current.dataset,
                names,
                encoders=encoders,
                fewshot=fewshot,
                zero_shot_templates=templates,
            )
        except (EncoderError, ProbeError, ValueError) as error:
            failed(f"The comparison failed: {error}")
        seconds = time.perf_counter() - started
        status.update(
            label=f"Compared {len(outcome.embeddings)} encoders in {seconds:.1f} s",
            state="complete",
            expanded=False,
        )
    number = st.session_state.get("compare_runs", 0) + 1
    st.session_state.compare_runs = number
    return ComparisonRun(outcome, current.settings, seconds, number, fewshot, session=current)


def scores(run: ComparisonRun) -> None:
    comparison = run.outcome.comparison
    protocol = comparison.protocol
    described = protocol.describe()
    st.info(
        f"**{described[:1].upper()}{described[1:]}**: {protocol.reason}."
        f" {protocol.scored_sentence(len(comparison.paths))}",
        icon=":material/verified:",
    )
    table = comparison_table(comparison)
    st.dataframe(
        pd.DataFrame(
            {
                "encoder": table["encoder"],
                "dim": table["dim"],
                "images/s": table["images_per_second"].round(1),
                "accuracy": [percent(s.accuracy) for s in comparison.encoders],
                "balanced accuracy": [percent(s.balanced_accuracy) for s in comparison.encoders],
            }
        ),
        hide_index=True,
        width="stretch",
    )
    for warning in run.outcome.warnings:
        st.warning(warning)
    for message in comparison.messages:
        st.caption(message)
    st.subheader("Paired comparisons")
    for pair in comparison.pairs:
        st.markdown(pair.sentence())
        st.caption(
            f"Only {pair.a} right: {plural(pair.only_a_correct, 'image')} ·"
            f" only {pair.b} right: {plural(pair.only_b_correct, 'image')}"
        )


def zero_and_few_shot(run: ComparisonRun) -> None:
    outcome = run.outcome
    results = outcome.comparison.results
    st.subheader("Zero-shot")
    for name, zero in outcome.zero_shot.items():
        if zero.available:
            st.markdown(
                f"**{name}** · zero-shot {percent(zero.accuracy)}"
                f" · linear probe {percent(results[name].metrics.accuracy)}"
            )
        else:
            st.caption(zero.reason)
    if not run.fewshot_asked:
        return
    st.subheader("Few-shot")
    zero_shot = outcome.zero_shot_accuracies()
    st.plotly_chart(fewshot_figure(outcome.fewshot, zero_shot=zero_shot), width="stretch")
    for curve in outcome.fewshot:
        if curve.encoder in zero_shot:
            sentence = crossing_sentence(curve, zero_shot[curve.encoder])
            st.markdown(f"**{curve.encoder}**: {sentence}")
        for message in curve.messages:
            st.caption(f"{curve.encoder}: {message}")


def projection_of(run: ComparisonRun, name: str, method: str) -> Projection:
    """Each encoder's map through ``Study.project`` and the server's map cache (the Map
    page's maps come the same way), kept with the comparison once computed."""
    key = (name, method)
    if key not in run.projections:
        with st.spinner(f"{method.upper()} of {name}…"):
            study = Study(run.settings, result_cache=shared.result_cache())
            run.projections[key] = study.project(run.outcome.embeddings[name], method=method)
    return run.projections[key]


def side_by_side(run: ComparisonRun) -> int | None:
    """Confusion matrices and maps, one column per encoder; the image last clicked on a map."""
    outcome = run.outcome
    names = list(outcome.embeddings)
    st.subheader("Side by side")
    for column, name in zip(st.columns(len(names)), names, strict=True):
        with column:
            st.markdown(f"**{name}**")
            st.plotly_chart(
                confusion_figure(outcome.comparison.results[name].metrics),
                key=f"compare_confusion_{names.index(name)}",
                width="stretch",
            )
    method = st.radio(
        "Map", ["pca", "umap"], format_func=str.upper, horizontal=True, key="compare_map_method"
    )
    events = {}
    for column, name in zip(st.columns(len(names)), names, strict=True):
        figure = embedding_figure(
            projection_of(run, name, method),
            outcome.embeddings[name],
            outcome.comparison.results[name],
        )
        figure.update_layout(
            title=name, height=520, legend={"orientation": "h", "y": -0.02, "title": None}
        )
        key = f"{MAP_KEY_PREFIX}{run.number}_{names.index(name)}"
        events[key] = column.plotly_chart(
            figure, key=key, on_select="rerun", selection_mode="points", width="stretch"
        )
    st.caption("Click a point on any map to see that image and what each encoder predicted.")
    return clicked_index(run, events)


def clicked_index(run: ComparisonRun, events: dict) -> int | None:
    """The row of the point clicked last, on whichever map (each map keeps its own selection)."""
    seen = st.session_state.setdefault("compare_map_seen", {})
    for key, event in events.items():
        points = event.selection.points if event else []
        index = int(points[0]["customdata"][1]) if points else None
        if index != seen.get(key):
            seen[key] = index
            if index is not None:
                st.session_state.compare_clicked = (run.number, index)
    clicked = st.session_state.get("compare_clicked")
    return clicked[1] if clicked and clicked[0] == run.number else None


def clicked_image(run: ComparisonRun, current: shared.Session, index: int) -> None:
    outcome = run.outcome
    path = next(iter(outcome.embeddings.values())).paths[index]
    rows = per_image_table(outcome.comparison).set_index("path")
    st.subheader(f"Image {PurePath(path).name}")
    picture, predictions = st.columns([1, 3])
    uri = current.images.thumbnail_uri(path, 160)
    if uri:
        picture.image(uri, width=160)
    picture.caption(path)
    with predictions:
        if path not in rows.index:
            st.write("Not scored: this image was only used to train the probes.")
            return
        row = rows.loc[path]
        st.markdown(f"True class: **{row['true']}**")
        for name in outcome.comparison.names:
            verdict = "right" if row[name] == row["true"] else "wrong"
            st.markdown(f"**{name}** predicted **{row[name]}** ({verdict})")


def downloads(run: ComparisonRun) -> None:
    comparison = run.outcome.comparison
    tables = {
        "comparison.csv": comparison_table(comparison),
        "pairs.csv": pairs_table(comparison),
        "per_image.csv": per_image_table(comparison),
    }
    if run.fewshot_asked:
        tables["fewshot.csv"] = fewshot_table(run.outcome.fewshot)
    stem = run.session.file_stem(comparison.names) if run.session else "comparison"
    for column, (file_name, table) in zip(st.columns(len(tables)), tables.items(), strict=True):
        column.download_button(
            f"Download {file_name}",
            table.to_csv(index=False),
            file_name=f"{stem}_{file_name}",
            mime="text/csv",
            key=f"download_{file_name}",
        )


def stored_run(current: shared.Session) -> ComparisonRun | None:
    """The session's last comparison, dropped once another dataset is loaded."""
    run = st.session_state.get("comparison_run")
    if run is not None and run.session is not current:
        del st.session_state["comparison_run"]
        return None
    return run


current = require_dataset()
if current is not None:
    st.title("Compare encoders")
    count = len(current.embeddings) if current.precomputed else len(current.dataset)
    st.caption(
        f"{current.label}: {plural(count, 'image')}. Which encoder separates these classes best, is"
        " the difference real, and does a trivial baseline do as well?"
    )
    if current.precomputed:
        asked_files = embeddings_form(current)
        if asked_files is not None:
            run = compare_embeddings(current, *asked_files)
            if run is not None:
                st.session_state.comparison_run = run
    else:
        asked = comparison_form(current)
        if asked is not None:
            st.session_state.pop("compare_failure", None)
            run = compare_with_progress(current, *asked)
            if run is not None:
                st.session_state.comparison_run = run
        if "compare_failure" in st.session_state:
            st.error(st.session_state.compare_failure)
    run = stored_run(current)
    if run is not None:
        unchanged = dataclasses.replace(current.settings, encoder=run.settings.encoder)
        if unchanged != run.settings:
            st.caption("The settings on the Data page changed since: press Compare to redo it.")
        scores(run)
        zero_and_few_shot(run)
        index = side_by_side(run)
        if index is not None:
            clicked_image(run, current, index)
        st.subheader("Downloads")
        downloads(run)
