"""The Streamlit app, driven headless with AppTest: every page, every way in, and bad input.

Each test reads as a specification of what a user sees. The bundled demo is embedded once
per module (``demo_run``) and shared by the tests of the Results, Map and Predict & export
pages; every other test starts its own session with a small generated folder.
"""

from __future__ import annotations

import io
import json
import re
import tempfile
import zipfile
from dataclasses import replace
from pathlib import Path, PurePosixPath
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from streamlit.elements.plotly_chart import PlotlySelectionState, PlotlyState
from streamlit.proto.Block_pb2 import Block as BlockProto
from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage
from streamlit.testing.v1 import AppTest

from probe_core.embeddings_io import read_embeddings
from probe_core.evaluation.label_issues import LowConfidenceLabel
from probe_core.export import predictions_table, read_probe_file, result_label_issues_table
from probe_core.roots import ROOTS_ENV
from probe_core.wording import caption_text, file_name_caption
from studio import shared
from tests import badfiles
from tests.conftest import DEMO_DIR, pattern_image, write_image_folder

REPO = Path(__file__).resolve().parent.parent
TIMEOUT = 180  # seconds per script run: the first one loads the encoder, UMAP compiles numba

RESULTS = "app_pages/results.py"
MAP = "app_pages/map.py"
PREDICT = "app_pages/predict_export.py"

DEMO_CLASSES = [
    "animals_nature",
    "flags",
    "food_drink",
    "objects",
    "smileys_emotion",
    "travel_places",
]
DOWNLOAD_LABELS = [
    "Embeddings (Parquet)",
    "Predictions (CSV)",
    "Probe (safetensors)",
    "Probe (JSON)",
    "Report (standalone HTML)",
]


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def app_env(tmp_path_factory):
    """A private embedding cache, no operator roots, session folders under tmp, and a record of
    every file handed to ``st.download_button`` (AppTest drops its media store after a run)."""
    cache_dir = tmp_path_factory.mktemp("embedding-cache")
    sessions_dir = tmp_path_factory.mktemp("sessions")
    media: dict[str, object] = {}
    original = MemoryMediaFileStorage.load_and_get_id

    def recording(self, path_or_data, mimetype, kind, filename=None):
        file_id = original(self, path_or_data, mimetype, kind, filename)
        media[file_id] = self._files_by_id[file_id]
        return file_id

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PROBE_STUDIO_CACHE_DIR", str(cache_dir))
        patch.delenv(ROOTS_ENV, raising=False)
        patch.setattr(tempfile, "tempdir", str(sessions_dir))
        patch.setattr(MemoryMediaFileStorage, "load_and_get_id", recording)
        shared.embedding_cache.clear()  # st.cache_resource: re-created under the new directory
        yield SimpleNamespace(cache_dir=cache_dir, media=media)
        shared.embedding_cache.clear()


@pytest.fixture(scope="module")
def demo_run(app_env):
    """A session that pressed "Run probe" on the bundled demo (what the Data page then said)."""
    at = new_app()
    run_probe(at)
    assert_ok(at)
    return SimpleNamespace(
        at=at,
        titles=values(at.title),
        infos=values(at.info),
        warnings=[w.value for w in at.warning],
    )


# --- helpers ----------------------------------------------------------------------------------


def new_app() -> AppTest:
    """A fresh browser session on the app, after its first run."""
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT)
    at.run()
    assert_ok(at)
    return at


def assert_ok(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def png_bytes(class_index: int, variant: int) -> bytes:
    buffer = io.BytesIO()
    pattern_image(class_index, variant).save(buffer, "PNG")
    return buffer.getvalue()


def folder_upload(classes, per_class: int = 6, top: str = "data") -> list[tuple[str, bytes, str]]:
    """What Browse sends for a picked folder ``top/<class>/<image>``: names keep the folder."""
    return [
        (f"{top}/{name}/{name}_{variant}.png", png_bytes(index, variant), "image/png")
        for index, name in enumerate(classes)
        for variant in range(per_class)
    ]


def zipped(files: list[tuple[str, bytes, str]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data, _ in files:
            archive.writestr(name, data)
    return buffer.getvalue()


def uploader(at: AppTest, prefix: str):
    """The file uploader whose key starts with ``prefix`` (keys change once files are taken)."""
    found = [u for u in at.file_uploader if u.key and u.key.startswith(prefix)]
    assert len(found) == 1, [u.key for u in at.file_uploader]
    return found[0]


def button(at: AppTest, label: str):
    found = [b for b in at.button if b.label == label]
    assert len(found) == 1, [b.label for b in at.button]
    return found[0]


def run_probe(at: AppTest) -> AppTest:
    """Press the settings form's "Run probe" button."""
    button(at, "Run probe").click().run()
    assert_ok(at)
    return at


def open_page(at: AppTest, page: str) -> AppTest:
    at.switch_page(page).run()
    assert_ok(at)
    return at


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def values(elements) -> list[str]:
    return [e.value for e in elements]


def study(at: AppTest):
    return at.session_state["study"]


def preview_lines(at: AppTest) -> list[str]:
    """The per-class lines of the Data page preview, e.g. ``**red** · 6 images``."""
    return [m for m in values(at.markdown) if re.fullmatch(r"\*\*.+\*\* · \d+ images?", m)]


def download(at: AppTest, media: dict, label: str):
    """(file name, bytes) a download button serves."""
    found = [d for d in at.get("download_button") if d.label == label]
    assert len(found) == 1, [d.label for d in at.get("download_button")]
    stored = media[PurePosixPath(found[0].proto.url).stem]
    return stored.filename, stored.content


def chart(at: AppTest, key: str):
    found = [c for c in at.get("plotly_chart") if c.key == key]
    assert len(found) == 1, [c.key for c in at.get("plotly_chart")]
    return json.loads(found[0].proto.spec)


def select(at: AppTest, key: str, points: list[dict], box: list | None = None) -> AppTest:
    """What the browser sends when the user clicks, boxes or lassos points of a chart."""
    at.session_state[key] = PlotlyState(
        {
            "selection": PlotlySelectionState(
                {
                    "points": points,
                    "point_indices": [p["point_index"] for p in points],
                    "box": box or [],
                    "lasso": [],
                }
            )
        }
    )
    at.run()
    assert_ok(at)
    return at


def files_under(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


# --- first start and the demo -----------------------------------------------------------------


def test_first_start_previews_the_bundled_demo():
    at = new_app()
    assert values(at.subheader)[0] == shared.DEMO_LABEL
    assert metrics(at) == {"Images": "144", "Classes": "6", "Skipped files": "0"}
    assert preview_lines(at) == [f"**{name}** · 24 images" for name in DEMO_CLASSES]
    assert not at.error
    assert button(at, "Run probe").form_id == "probe_settings"
    assert study(at).result is None


def test_run_probe_on_the_demo_embeds_fits_and_reports_accuracy(demo_run, app_env):
    result = study(demo_run.at).result
    assert result is not None
    assert demo_run.titles == ["Results"]  # "Run probe" goes straight to the results
    assert result.protocol.name == "cv"
    assert any(
        "Every image was scored by a probe that never saw it" in info for info in demo_run.infos
    )
    assert result.metrics.n_test == 144
    assert result.class_names == DEMO_CLASSES
    assert len(study(demo_run.at).embeddings) == 144
    assert demo_run.warnings == []
    # The embeddings went to PROBE_STUDIO_CACHE_DIR, not to the user's cache.
    assert list(app_env.cache_dir.rglob("*.npz"))


def test_results_page_shows_headline_metrics_each_with_a_95_ci(demo_run):
    at = open_page(demo_run.at, RESULTS)
    m = study(at).result.metrics
    estimates = {
        "Accuracy": m.accuracy,
        "Balanced accuracy": m.balanced_accuracy,
        "Macro F1": m.macro_f1,
        "Top-5 accuracy": m.top5_accuracy,
    }
    assert metrics(at) == {label: f"{e.value:.1%}" for label, e in estimates.items()}
    captions = values(at.caption)
    for estimate in estimates.values():
        assert f"95% CI {estimate.low:.1%} to {estimate.high:.1%}" in captions
    assert sum(c.startswith("95% CI ") for c in captions) == 4
    assert any(c.startswith("144 images scored") for c in captions)
    # Which execution path embedded the images, and when it was decided (kept beside the cache).
    (path_caption,) = [c for c in captions if c.startswith("Execution path ")]
    assert ", decided 20" in path_caption
    assert "out-of-fold predictions" in " ".join(captions)  # the cv caveat
    assert values(at.subheader)[:5] == [
        "Confusion matrix",
        "Choosing C",
        "Per class",
        "Most confident mistakes",
        "Possible label errors",
    ]
    per_class = at.dataframe[0].value
    assert list(per_class["name"]) == DEMO_CLASSES
    assert per_class["support"].sum() == 144


def test_label_issue_cards_never_say_an_image_looks_like_its_own_class(demo_run):
    at = open_page(demo_run.at, RESULTS)
    result = study(at).result
    cards = [c for c in values(at.caption) if "  \nlabelled " in c]  # file name, then sentence
    assert not [c for c in cards if re.search(r"labelled (\S+), looks like \1\b", c)]
    looks_like = [c for c in cards if ", looks like " in c]
    assert len(looks_like) == min(18, len(result.label_issues)) > 0
    assert ("**Low confidence in its own label**" in values(at.markdown)) == bool(
        result.low_confidence_labels
    )


def test_images_flagged_with_their_own_class_first_are_a_separate_group_with_a_runner_up(
    demo_run, app_env
):
    # Whether cleanlab flags such images on the demo depends on the chosen C (under the
    # one-standard-error rule it flags none), so the page is given three of the demo's
    # least confident correct predictions as the flagged group.
    current = study(demo_run.at)
    original = current.result
    own_first = np.flatnonzero(original.predictions == original.labels)
    least_sure = own_first[np.argsort(original.probabilities[own_first].max(axis=1))[:3]]
    flagged = []
    for row in least_sure:
        given = int(original.labels[row])
        ranked = np.argsort(-original.probabilities[row])
        runner_up = int(ranked[1])
        flagged.append(
            LowConfidenceLabel(
                index=int(original.evaluated[row]),
                given=given,
                runner_up=runner_up,
                score=float(original.probabilities[row, given]),
                probability_given=float(original.probabilities[row, given]),
                probability_runner_up=float(original.probabilities[row, runner_up]),
            )
        )
    current.result = replace(original, low_confidence_labels=tuple(flagged))
    try:
        at = open_page(demo_run.at, RESULTS)
        assert_ok(at)
        assert "**Low confidence in its own label**" in values(at.markdown)
        cards = [c for c in values(at.caption) if "  \nlabelled " in c]
        unsure = [c for c in cards if "low confidence" in c and "runner-up" in c]
        assert len(unsure) == 3
        names = original.class_names
        for item in flagged:
            assert any(caption_text(item.sentence(names)) in c for c in unsure)
            assert names[item.runner_up] != names[item.given]
        assert not [c for c in unsure if re.search(r"labelled (\S+), looks like", c)]
        name, content = download(at, app_env.media, "Download low_confidence_labels.csv")
        assert name.endswith("_low_confidence_labels.csv")
        table = pd.read_csv(io.BytesIO(content))
        assert list(table.columns) == ["path", "given", "runner_up", "score"]
        assert len(table) == 3 and not (table["given"] == table["runner_up"]).any()
    finally:
        current.result = original


def test_clicking_a_confusion_cell_lists_its_held_out_images(demo_run):
    at = open_page(demo_run.at, RESULTS)
    m = study(at).result.metrics
    names = m.class_names
    off_diagonal = m.confusion - np.diag(np.diag(m.confusion))
    for row, col in [
        np.unravel_index(np.argmax(off_diagonal), m.confusion.shape),  # the worst confusion
        (0, 0),  # then a diagonal cell: the heading follows the latest click
    ]:
        true_name, predicted_name = names[row], names[col]
        point = {"x": predicted_name, "y": true_name, "curve_number": 1, "point_index": 0}
        select(at, "confusion", [point])
        count = int(m.confusion[row, col])
        assert count > 0
        images = "image" if count == 1 else "images"
        heading = f"**{caption_text(true_name)} → {caption_text(predicted_name)}**:"
        assert f"{heading} {count} scored {images}" in values(at.markdown)
        assert at.selectbox(key="cell_true").value == true_name
        assert at.selectbox(key="cell_predicted").value == predicted_name
        probability = f"p({caption_text(predicted_name)}) = "
        image_captions = [c for c in values(at.caption) if f"  \n{probability}" in c]
        assert len(image_captions) == count


def test_mistake_and_label_issue_cards_name_their_file_and_label_every_probability(demo_run):
    at = open_page(demo_run.at, RESULTS)
    current = study(at)
    captions = values(at.caption)
    table = predictions_table(current.embeddings, current.result)
    mistakes = table[~table["correct"]].nlargest(12, "confidence")
    assert len(mistakes) == 12
    for _, row in mistakes.iterrows():
        true, predicted = caption_text(row["true"]), caption_text(row["predicted"])
        assert (
            f"{file_name_caption(row['path'])}  \n{true} → {predicted}"
            f" · p({predicted}) = {row['confidence']:.2f}"
        ) in captions
    issues = result_label_issues_table(current.embeddings, current.result)
    assert not issues.empty
    for path in issues.head(18)["path"]:
        assert any(
            c.startswith(f"{file_name_caption(path)}  \n") and "looks like" in c for c in captions
        ), path
    assert [c for c in captions if re.search(r"\bp\s*=", c)] == []  # every p names its class


def test_map_page_draws_pca_and_box_selection_downloads_the_selected_paths(demo_run, app_env):
    at = demo_run.at
    at.session_state["map_method"] = "pca"
    open_page(at, MAP)
    assert any(s.label.startswith("PCA done in") for s in at.status)
    figure = chart(at, "map")
    assert figure["layout"]["title"]["text"].startswith("PCA of normalised embeddings")
    paths = study(at).embeddings.paths
    carried = [tuple(point[:2]) for trace in figure["data"] for point in trace["customdata"]]
    assert sorted(carried, key=lambda c: c[1]) == [(path, i) for i, path in enumerate(paths)]
    assert not [s for s in values(at.subheader) if s.endswith("selected images")]

    embeddings = study(at).embeddings
    chosen = [140, 3, 51, 50, 3]  # unordered, one point twice (box and lasso overlap)
    points = [
        {
            "customdata": [embeddings.paths[i], i, "any", "hover", "data"],
            "curve_number": 0,
            "point_index": position,
            "x": 0.0,
            "y": 0.0,
        }
        for position, i in enumerate(chosen)
    ]
    box = [{"x": [-1.0, 1.0], "y": [-1.0, 1.0], "xref": "x", "yref": "y"}]
    select(at, "map", points, box=box)
    assert "4 selected images" in values(at.subheader)
    name, data = download(at, app_env.media, "Download selection as CSV")
    assert name == "demo_efficientnet-lite0_selection.csv"
    frame = pd.read_csv(io.BytesIO(data))
    assert list(frame.columns) == ["path", "true", "predicted", "split"]
    assert list(frame["path"]) == [embeddings.paths[i] for i in sorted(set(chosen))]
    assert list(frame["true"]) == [
        embeddings.class_names[embeddings.labels[i]] for i in sorted(set(chosen))
    ]

    at.radio(key="map_dims").set_value(3).run()
    assert_ok(at)
    assert {trace["type"] for trace in chart(at, "map")["data"]} == {"scatter3d"}


def test_map_page_draws_umap(demo_run):
    at = demo_run.at
    at.session_state["map_method"] = "umap"
    at.session_state["map_dims"] = 2
    open_page(at, MAP)
    assert any(s.label.startswith("UMAP done in") for s in at.status)
    figure = chart(at, "map")
    assert figure["layout"]["title"]["text"].startswith("UMAP of normalised embeddings")
    assert sum(len(trace["customdata"]) for trace in figure["data"]) == 144


def test_predict_and_export_page_offers_working_downloads(demo_run, app_env):
    at = open_page(demo_run.at, PREDICT)
    current = study(at)
    embeddings, result = current.embeddings, current.result
    assert [d.label for d in at.get("download_button")] == DOWNLOAD_LABELS

    name, data = download(at, app_env.media, "Probe (JSON)")
    assert name == "demo_efficientnet-lite0_probe.json"
    document = json.loads(data)
    assert document["class_names"] == DEMO_CLASSES
    assert document["encoder_id"] == embeddings.encoder_id
    assert np.asarray(document["coef"]).shape == (6, embeddings.dim)
    assert len(document["intercept"]) == 6

    name, data = download(at, app_env.media, "Probe (safetensors)")
    assert name == "demo_efficientnet-lite0_probe.safetensors"
    weights = read_probe_file(data)
    assert weights.class_names == DEMO_CLASSES
    assert weights.encoder_id == embeddings.encoder_id
    np.testing.assert_allclose(weights.coef, np.asarray(document["coef"]), rtol=1e-6)
    # The exported probe is the one fitted on all images: it reproduces its own predictions.
    predicted = weights.predict_proba(embeddings.vectors).argmax(axis=1)
    np.testing.assert_array_equal(predicted, result.probe.predict(embeddings.vectors))

    name, data = download(at, app_env.media, "Predictions (CSV)")
    assert name == "demo_efficientnet-lite0_predictions.csv"
    predictions = pd.read_csv(io.BytesIO(data))
    assert len(predictions) == 144  # every image, scored out of fold
    assert set(predictions["fold"]) == {1, 2, 3, 4, 5}
    assert {"path", "true", "predicted", "correct", "confidence"} <= set(predictions.columns)

    name, data = download(at, app_env.media, "Embeddings (Parquet)")
    assert name == "demo_efficientnet-lite0_embeddings.parquet"
    table = pd.read_parquet(io.BytesIO(data))
    assert len(table) == 144
    assert len(table["vector"].iloc[0]) == embeddings.dim
    # The CLI's embeddings.parquet, metadata included: it reopens with its encoder.
    reopened_path = app_env.cache_dir / "downloaded_embeddings.parquet"
    reopened_path.write_bytes(data)
    reopened = read_embeddings(reopened_path)
    assert reopened.encoder_id == embeddings.encoder_id
    assert reopened.class_names == embeddings.class_names == DEMO_CLASSES
    assert reopened.image_root == embeddings.image_root
    np.testing.assert_array_equal(reopened.vectors, embeddings.vectors)

    name, data = download(at, app_env.media, "Report (standalone HTML)")
    assert name == "demo_efficientnet-lite0_report.html"
    report = data.decode()
    assert "Confusion matrix" in report
    assert "plotly.js v" in report  # plotly.js is inlined, so the report opens offline
    assert not re.search(r"<script[^>]*\bsrc=", report)  # nothing fetched from a CDN
    assert "pickle" in " ".join(values(at.caption))


def test_predict_new_images_shows_a_class_per_image_and_skips_bad_files(demo_run):
    at = open_page(demo_run.at, PREDICT)
    first_animal = sorted((DEMO_DIR / "animals_nature").iterdir())[0]
    uploads = [
        (first_animal.name, first_animal.read_bytes(), "image/png"),
        ("notes.png", badfiles.text_bytes(), "image/png"),
    ]
    at.file_uploader(key="predict_images").set_value(uploads).run()
    assert_ok(at)
    captions = [c for c in values(at.caption) if c.startswith(f"{first_animal.name}: ")]
    assert len(captions) == 1
    predicted = captions[0].removeprefix(f"{first_animal.name}: ").strip("*")
    assert predicted in DEMO_CLASSES
    assert any(w.startswith("notes.png: ") for w in values(at.warning))
    assert [c.key for c in at.get("plotly_chart")] == [f"prediction_{first_animal.name}"]
    [bars] = chart(at, f"prediction_{first_animal.name}")["data"]
    shown = dict(zip(bars["y"], bars["text"], strict=True))  # each bar says its probability
    assert list(shown) == DEMO_CLASSES
    assert all(re.fullmatch(r"\d{1,3}\.\d%", text) for text in shown.values())
    assert max(shown, key=lambda name: float(shown[name][:-1])) == predicted


def test_predict_asks_for_new_images_first_and_a_saved_probe_as_an_option():
    at = open_page(new_app(), PREDICT)
    assert [u.label for u in at.file_uploader] == [
        "Drop new images",
        "Use a saved probe instead (optional: a .safetensors or .json file exported here)",
    ]


def test_the_data_page_gives_the_accuracy_as_the_results_page_does(demo_run):
    at = open_page(demo_run.at, "app_pages/data.py")
    accuracy = study(at).result.metrics.accuracy
    shown = f"{accuracy.value:.1%} (95% CI {accuracy.low:.1%} to {accuracy.high:.1%})"
    assert values(at.success) == [f"Results ready: accuracy {shown}."]
    open_page(at, RESULTS)
    assert metrics(at)["Accuracy"] == f"{accuracy.value:.1%}"
    assert f"95% CI {accuracy.low:.1%} to {accuracy.high:.1%}" in values(at.caption)


def test_c_is_chosen_on_validation_data_unless_a_value_is_typed():
    at = new_app()
    c_inputs = [n for n in at.number_input if n.label.startswith("C ")]
    assert [n.label for n in c_inputs] == ["C (regularisation)"]
    assert c_inputs[0].value is None  # shows "chosen on validation data"
    assert c_inputs[0].proto.placeholder == "chosen on validation data"
    assert "Fixed C" not in [n.label for n in at.number_input]  # nothing editable but unused
    uploader(at, "browse_").set_value(folder_upload(["red", "green"], per_class=6)).run()
    run_probe(at)
    assert study(at).settings.fixed_c is None
    assert study(at).result.sweep.method != "fixed"

    open_page(at, "app_pages/data.py")
    next(n for n in at.number_input if n.label == "C (regularisation)").set_value(0.5)
    run_probe(at)
    assert study(at).settings.fixed_c == 0.5
    assert study(at).result.chosen_c == 0.5


def test_pages_without_results_offer_to_run_the_demo():
    at = new_app()
    for page in (RESULTS, MAP, PREDICT):
        open_page(at, page)
        assert values(at.info) == [
            "No results yet: choose images on the **Data** page and press **Run probe**."
        ]
        assert [b.label for b in at.button] == ["Run the bundled demo"]
    button(at, "Run the bundled demo").click().run()
    assert_ok(at)
    assert values(at.title) == ["Results"]  # the demo ran on the Data page, then results
    assert study(at).label == shared.DEMO_LABEL
    open_page(at, RESULTS)
    assert "Accuracy" in metrics(at)


# --- ways in: Browse, zip, Build classes, server folder ------------------------------------------


def test_browsed_folder_takes_classes_from_its_subfolders_and_runs():
    at = new_app()
    uploader(at, "browse_").set_value(folder_upload(["red", "green", "blue"])).run()
    assert_ok(at)
    assert values(at.subheader)[0] == "Uploaded folder “data” (18 files)"
    assert metrics(at) == {"Images": "18", "Classes": "3", "Skipped files": "0"}
    assert study(at).dataset.class_names == ["blue", "green", "red"]  # not "data"
    assert preview_lines(at) == [f"**{name}** · 6 images" for name in ("blue", "green", "red")]
    assert uploader(at, "browse_").value in (None, [])  # emptied once its files were taken

    run_probe(at)
    assert values(at.title) == ["Results"]
    open_page(at, RESULTS)
    assert list(metrics(at)) == ["Accuracy", "Balanced accuracy", "Macro F1"]  # no top-5
    assert list(at.dataframe[0].value["name"]) == ["blue", "green", "red"]


def test_a_folder_with_its_own_train_and_test_runs_the_given_protocol():
    at = new_app()
    files = folder_upload(["red", "green"], per_class=6, top="data/train")
    files += folder_upload(["red", "green"], per_class=3, top="data/Test")
    uploader(at, "browse_").set_value(files).run()
    assert_ok(at)
    assert any("ships its own split (train/ 12, test/ 6 images)" in i for i in values(at.info))
    run_probe(at)
    result = study(at).result
    assert result.protocol.name == "given"
    assert len(result.evaluated) == 6
    assert any("own train/ and test/ folders" in info for info in values(at.info))
    assert any("6 images of the test/ folder were scored" in info for info in values(at.info))


def test_duplicates_and_label_issues_are_shown_with_thumbnails():
    at = new_app()
    files = folder_upload(["red", "green", "blue"], per_class=8)
    copied = files[0][1]  # a red image, also filed under green: a label conflict
    files.append(("data/green/copy_of_red.png", copied, "image/png"))
    uploader(at, "browse_").set_value(files).run()
    assert_ok(at)
    run_probe(at)
    result = study(at).result
    assert len(result.duplicates.conflicts) == 1
    headings = values(at.subheader)
    assert "Possible label errors" in headings and "Duplicates" in headings
    group = next(m for m in values(at.markdown) if m.startswith("**Group "))
    assert "identical files" in group and "label conflict" in group
    captions = values(at.caption)
    assert any(c.startswith(f"{file_name_caption('copy_of_red.png')}  \n") for c in captions)
    downloads = [d.label for d in at.get("download_button")]
    assert "Download duplicates.csv" in downloads and "Download label_issues.csv" in downloads


def test_zip_upload_takes_classes_from_its_folders():
    at = new_app()
    archive = zipped(folder_upload(["red", "green", "blue"], per_class=4))
    uploader(at, "zip_").set_value([("images.zip", archive, "application/zip")]).run()
    assert_ok(at)
    assert values(at.subheader)[0] == "Zip: images.zip"
    assert metrics(at) == {"Images": "12", "Classes": "3", "Skipped files": "0"}
    assert preview_lines(at) == [f"**{name}** · 4 images" for name in ("blue", "green", "red")]
    assert not at.error


def test_a_file_that_is_not_a_zip_gives_a_clear_error():
    at = new_app()
    uploader(at, "zip_").set_value([("photos.zip", badfiles.text_bytes(), "application/zip")])
    at.run()
    assert_ok(at)
    assert values(at.error) == ["photos.zip: not a readable zip archive (File is not a zip file)"]
    assert study(at).label == shared.DEMO_LABEL  # the previous dataset stays


def test_an_upload_after_a_failed_zip_is_usable():
    """The bad zip is taken once (its uploader is emptied), not again on every rerun."""
    at = new_app()
    uploader(at, "zip_").set_value([("photos.zip", badfiles.text_bytes(), "application/zip")])
    at.run()
    assert_ok(at)
    uploader(at, "browse_").set_value(folder_upload(["red", "green", "blue"])).run()
    assert_ok(at)
    assert values(at.subheader)[0] == "Uploaded folder “data” (18 files)"
    run_probe(at)
    assert values(at.title) == ["Results"], values(at.error)
    assert len(study(at).embeddings) == 18


def test_a_failed_zip_upload_keeps_the_previous_upload_usable():
    at = new_app()
    uploader(at, "browse_").set_value(folder_upload(["red", "green", "blue"])).run()
    assert_ok(at)
    uploader(at, "zip_").set_value([("photos.zip", badfiles.text_bytes(), "application/zip")])
    at.run()
    assert_ok(at)
    assert values(at.error) == ["photos.zip: not a readable zip archive (File is not a zip file)"]
    assert values(at.subheader)[0] == "Uploaded folder “data” (18 files)"
    run_probe(at)
    assert values(at.title) == ["Results"], values(at.error)
    assert len(study(at).embeddings) == 18


def test_built_classes_use_the_typed_names():
    at = new_app()
    button(at, "Use these classes").click().run()
    assert_ok(at)
    assert values(at.warning) == ["Add images to at least two classes first."]

    at.text_input(key="class_name_0").set_value("cats")
    at.text_input(key="class_name_1").set_value("dogs")
    for position in (0, 1):
        images = [
            (f"IMG_{v}.png", png_bytes(position, v), "image/png") for v in range(4)
        ]  # same file names in both classes, as phone photos have
        at.file_uploader(key=f"class_images_{position}").set_value(images)
    button(at, "Use these classes").click().run()
    assert_ok(at)
    assert values(at.subheader)[0] == "Classes built here"
    assert study(at).dataset.class_names == ["cats", "dogs"]
    assert preview_lines(at) == ["**cats** · 4 images", "**dogs** · 4 images"]
    run_probe(at)
    assert study(at).result.class_names == ["cats", "dogs"]


def open_data_tab(at: AppTest) -> str:
    """The label of the tab the Data page opens with."""
    found = []

    def walk(node) -> None:
        proto = getattr(node, "proto", None)
        if isinstance(proto, BlockProto) and proto.WhichOneof("type") == "tab_container":
            found.append(proto.tab_container)
        for child in getattr(node, "children", {}).values():
            walk(child)

    walk(at._tree)
    assert len(found) == 1
    labels = [tab.label for tab in at.tabs]
    return found[0].default_tab_label or labels[found[0].default_tab_index]


def test_the_tab_that_loaded_the_images_stays_open_after_visiting_other_pages():
    at = new_app()
    assert open_data_tab(at) == "Demo"
    archive = zipped(folder_upload(["red", "green"], per_class=3))
    uploader(at, "zip_").set_value([("colours.zip", archive, "application/zip")]).run()
    assert_ok(at)
    assert open_data_tab(at) == "Zip file"
    open_page(at, RESULTS)
    open_page(at, "app_pages/data.py")
    assert values(at.subheader)[0] == "Zip: colours.zip"
    assert open_data_tab(at) == "Zip file"


def test_server_folder_outside_the_allowed_roots_is_refused():
    at = new_app()
    at.text_input(key="server_path").set_value("/etc")
    button(at, "Load folder").click().run()
    assert_ok(at)
    assert len(at.error) == 1
    message = at.error[0].value
    assert "outside the allowed server folders" in message
    assert str(DEMO_DIR.resolve()) in message
    assert study(at).label == shared.DEMO_LABEL

    at.text_input(key="server_path").set_value(str(DEMO_DIR))
    button(at, "Load folder").click().run()
    assert_ok(at)
    assert not at.error
    assert values(at.subheader)[0] == f"Server folder {DEMO_DIR.resolve()}"
    assert metrics(at) == {"Images": "144", "Classes": "6", "Skipped files": "0"}


def test_server_folder_under_an_operator_root_loads(monkeypatch, tmp_path):
    root = write_image_folder(tmp_path / "shared-images", {"cats": 3, "dogs": 3})
    monkeypatch.setenv(ROOTS_ENV, str(root))
    at = new_app()
    assert any(f"`{root.resolve()}`" in c for c in values(at.caption))
    assert at.text_input(key="server_path").value == str(root.resolve())
    button(at, "Load folder").click().run()
    assert_ok(at)
    assert study(at).dataset.class_names == ["cats", "dogs"]
    assert metrics(at) == {"Images": "6", "Classes": "2", "Skipped files": "0"}


# --- bad input ---------------------------------------------------------------------------------


def test_unreadable_files_are_listed_with_reasons_before_the_run_and_the_run_completes():
    at = new_app()
    files = folder_upload(["red", "green", "blue"])
    files += [
        ("data/red/broken.jpg", badfiles.corrupt_jpeg_bytes(), "image/jpeg"),
        ("data/green/notes.jpg", badfiles.text_bytes(), "image/jpeg"),
        ("data/blue/readme.txt", badfiles.text_bytes(), "text/plain"),
    ]
    uploader(at, "browse_").set_value(files).run()
    assert_ok(at)
    # The preview decodes every image: 21 files, 18 usable, 3 skipped, before any run.
    assert metrics(at) == {"Images": "18", "Classes": "3", "Skipped files": "3"}
    assert preview_lines(at) == [f"**{name}** · 6 images" for name in ("blue", "green", "red")]
    assert [e.label for e in at.expander] == ["Skipped files (3)"]
    table = at.expander[0].dataframe[0].value
    reasons = {
        PurePosixPath(path).name: reason
        for path, reason in zip(table["file"], table["reason"], strict=True)
    }
    assert set(reasons) == {"readme.txt", "notes.jpg", "broken.jpg"}
    assert "unsupported file type" in reasons["readme.txt"]
    assert "text file" in reasons["notes.jpg"]
    assert "corrupt" in reasons["broken.jpg"]

    run_probe(at)
    assert values(at.title) == ["Results"]
    assert len(study(at).embeddings) == 18
    assert values(at.warning) == []  # nothing new was found while embedding
    open_page(at, "app_pages/data.py")
    assert metrics(at) == {"Images": "18", "Classes": "3", "Skipped files": "3"}
    assert [e.label for e in at.expander] == ["Skipped files (3)"]


def test_a_corrupt_jpeg_in_a_zip_counts_once_as_skipped_before_and_after_the_run():
    """Ten files: cats has four images, a corrupt JPEG and a text file; dogs four images."""
    files = folder_upload(["cats", "dogs"], per_class=4)
    files += [
        ("data/cats/broken.jpg", badfiles.corrupt_jpeg_bytes(), "image/jpeg"),
        ("data/cats/notes.txt", badfiles.text_bytes(), "text/plain"),
    ]
    at = new_app()
    uploader(at, "zip_").set_value([("pets.zip", zipped(files), "application/zip")]).run()
    assert_ok(at)
    expected = {"Images": "8", "Classes": "2", "Skipped files": "2"}
    assert metrics(at) == expected
    assert preview_lines(at) == ["**cats** · 4 images", "**dogs** · 4 images"]
    run_probe(at)
    open_page(at, "app_pages/data.py")
    assert metrics(at) == expected  # eight images and two skipped files: ten, as uploaded
    assert preview_lines(at) == ["**cats** · 4 images", "**dogs** · 4 images"]


def test_damaged_image_data_found_while_embedding_moves_from_images_to_skipped(monkeypatch):
    """Above the decode limit only headers are read: the preview says so, and a JPEG whose data
    is damaged is found while embedding, after which the counts still add up."""
    monkeypatch.setattr("probe_core.decode_check.FULL_DECODE_LIMIT", 5)
    files = folder_upload(["cats", "dogs"], per_class=4)
    files.append(("data/cats/broken.jpg", badfiles.corrupt_jpeg_bytes(), "image/jpeg"))
    at = new_app()
    uploader(at, "browse_").set_value(files).run()
    assert_ok(at)
    assert metrics(at) == {"Images": "9", "Classes": "2", "Skipped files": "0"}
    assert any(c.startswith("Over 5 images: only the file headers") for c in values(at.caption))
    run_probe(at)
    assert [w for w in values(at.warning) if "broken.jpg" in w] == [
        "1 file could not be read as an image and was left out: cats/broken.jpg"
        f" ({study(at).dataset.skipped[0].reason}). Skipped files on the Data page lists every"
        " file left out."
    ]
    open_page(at, "app_pages/data.py")
    assert metrics(at) == {"Images": "8", "Classes": "2", "Skipped files": "1"}
    assert preview_lines(at) == ["**cats** · 4 images", "**dogs** · 4 images"]
    assert not any(c.startswith("Over 5 images") for c in values(at.caption))


def test_counts_of_one_read_in_the_singular():
    at = new_app()
    files = folder_upload(["red", "green"], per_class=3)[:4]  # red: 3 images, green: 1
    files.append(("data/green/readme.txt", badfiles.text_bytes(), "text/plain"))
    uploader(at, "browse_").set_value(files).run()
    assert_ok(at)
    assert preview_lines(at) == ["**green** · 1 image", "**red** · 3 images"]
    assert values(at.subheader)[0] == "Uploaded folder “data” (5 files)"
    assert [e.label for e in at.expander] == ["Skipped files (1)"]


def test_a_single_class_explains_that_two_are_needed():
    at = new_app()
    uploader(at, "browse_").set_value(folder_upload(["red"])).run()
    assert_ok(at)
    assert study(at).dataset.class_names == ["red"]
    assert values(at.error) == ["Only one class (red): a probe needs at least two."]

    run_probe(at)
    assert values(at.title) == ["Probe Studio"]  # no results: the Data page stays
    assert len(at.error) == 2
    assert "at least two classes" in at.error[1].value
    assert study(at).result is None


def test_an_upload_without_images_says_no_images_found():
    at = new_app()
    files = [
        ("data/notes/readme.txt", badfiles.text_bytes(), "text/plain"),
        ("data/notes/page.html", badfiles.html_bytes(), "text/html"),
    ]
    uploader(at, "browse_").set_value(files).run()
    assert_ok(at)
    assert values(at.error) == [
        "No images found. Expected one subfolder per class with images inside."
    ]
    assert metrics(at)["Images"] == "0"
    assert "Run probe" not in [b.label for b in at.button]
    assert len(at.expander) == 1 and at.expander[0].label.startswith("Skipped files")
    table = at.expander[0].dataframe[0].value
    reasons = dict(zip(table["file"], table["reason"], strict=True))
    for name in ("data/notes/readme.txt", "data/notes/page.html"):
        assert reasons[name].startswith("unsupported file type")


# --- sessions ------------------------------------------------------------------------------------


def test_two_sessions_keep_separate_datasets_results_and_upload_folders():
    first, second = new_app(), new_app()
    uploader(first, "browse_").set_value(folder_upload(["cats", "dogs"], per_class=4)).run()
    uploader(second, "browse_").set_value(
        folder_upload(["apples", "pears", "plums"], per_class=4)
    ).run()
    run_probe(first)
    run_probe(second)
    first.run()  # the other session's run changed nothing here

    assert study(first).result.class_names == ["cats", "dogs"]
    assert study(second).result.class_names == ["apples", "pears", "plums"]
    for at, classes in ((first, ["cats", "dogs"]), (second, ["apples", "pears", "plums"])):
        open_page(at, RESULTS)
        assert list(at.dataframe[0].value["name"]) == classes

    first_folder = first.session_state["workspace"].path
    second_folder = second.session_state["workspace"].path
    assert first_folder != second_folder
    assert files_under(first_folder) == {
        f"upload-1/data/{name}/{name}_{v}.png" for name in ("cats", "dogs") for v in range(4)
    }
    assert files_under(second_folder) == {
        f"upload-1/data/{name}/{name}_{v}.png"
        for name in ("apples", "pears", "plums")
        for v in range(4)
    }


def test_a_saved_probe_predicts_new_images_without_a_run(encoder, tmp_path):
    """Predict & export accepts a probe file exported earlier (JSON here), no pickle involved."""
    from probe_core.dataset import scan_folder
    from probe_core.embed import extract_embeddings
    from probe_core.evaluation.protocols import run_probe
    from probe_core.export import probe_to_json
    from probe_core.probe import ProbeWeights
    from tests.conftest import write_image_folder

    folder = write_image_folder(tmp_path / "colours", {"red": 6, "green": 6, "blue": 6})
    result = run_probe(extract_embeddings(scan_folder(folder), encoder, num_workers=0), seed=0)
    good = ProbeWeights.from_estimator(
        result.probe, result.class_names, encoder.encoder_id, encoder_name=encoder.name
    )
    image = (folder / "green" / "green_000.png").read_bytes()

    at = open_page(new_app(), PREDICT)
    at.file_uploader(key="saved_probe").set_value(
        [("probe.json", probe_to_json(good).encode(), "application/json")]
    ).run()
    at.file_uploader(key="predict_images").set_value([("mystery.png", image, "image/png")]).run()
    assert_ok(at)
    assert "mystery.png: **green**" in values(at.caption)

    foreign = ProbeWeights.from_estimator(
        result.probe, result.class_names, "open_clip:ViT-B-32/openai", encoder_name=encoder.name
    )
    at.file_uploader(key="saved_probe").set_value(
        [("other.json", probe_to_json(foreign).encode(), "application/json")]
    ).run()
    assert_ok(at)
    assert any("fitted on embeddings of open_clip:ViT-B-32/openai" in e for e in values(at.error))

    at.file_uploader(key="saved_probe").set_value(
        [("evil.json", b"\x80\x04 not a probe", "application/json")]
    ).run()
    assert_ok(at)
    assert any(e.startswith("evil.json: not a probe") for e in values(at.error))
