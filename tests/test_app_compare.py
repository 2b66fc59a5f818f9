"""The Compare page, driven headless with AppTest: encoders side by side on the loaded images.

The bundled demo is compared once per module (``demo_comparison``: the bundled encoder
against the pixel baseline, embedded from an empty cache, so those tests are marked slow) and
the tests read what that session shows. A small generated folder covers the few-shot curve.
"""

from __future__ import annotations

import io
from types import SimpleNamespace

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from probe_core.evaluation.comparison import COMPARISON_COLUMNS, PAIRS_COLUMNS
from probe_core.evaluation.fewshot import FEWSHOT_COLUMNS
from probe_core.wording import plural
from tests import test_app
from tests.test_app import (
    REPO,
    TIMEOUT,
    assert_ok,
    button,
    chart,
    download,
    folder_upload,
    new_app,
    open_page,
    select,
    study,
    uploader,
    values,
)

COMPARE = "app_pages/compare.py"
BUNDLED = "bundled:efficientnet-lite0"
PIXELS = "baseline:pixels"

# The module fixture of tests/test_app.py: a private embedding cache (PROBE_STUDIO_CACHE_DIR)
# and a record of every file handed to st.download_button.
app_env = test_app.app_env


@pytest.fixture(scope="module")
def demo_comparison(app_env):
    """A session on the demo that opened Compare and pressed the button with the defaults."""
    at = open_page(new_app(), COMPARE)
    before = SimpleNamespace(
        encoders=at.multiselect[0].value,
        captions=values(at.caption),
        dataframes=len(at.dataframe),
    )
    button(at, "Compare").click().run()
    assert_ok(at)
    return SimpleNamespace(at=at, before=before)


def compare(at: AppTest) -> AppTest:
    button(at, "Compare").click().run()
    assert_ok(at)
    return at


def map_keys(at: AppTest) -> list[str]:
    return [c.key for c in at.get("plotly_chart") if c.key and c.key.startswith("compare_map_")]


DEMO_STEM = "demo_efficientnet-lite0-vs-baseline-pixels"  # the dataset and both encoders


def csv(at: AppTest, media: dict, file_name: str, stem: str = DEMO_STEM) -> pd.DataFrame:
    name, data = download(at, media, f"Download {file_name}")
    assert name == f"{stem}_{file_name}"
    return pd.read_csv(io.BytesIO(data))


@pytest.mark.slow  # the demo, embedded by two encoders from an empty cache: ~45 s
def test_the_form_starts_with_the_session_encoder_and_the_pixel_baseline(demo_comparison):
    before = demo_comparison.before
    assert before.encoders == [BUNDLED, PIXELS]
    assert before.dataframes == 0  # nothing is compared before the button is pressed
    assert any("Evaluation protocol **auto**" in c and "seed 0" in c for c in before.captions)


@pytest.mark.slow  # the demo, embedded by two encoders from an empty cache: ~45 s
def test_compare_shows_a_row_per_encoder_and_one_paired_sentence(demo_comparison):
    at = demo_comparison.at
    comparison = at.session_state["comparison_run"].outcome.comparison
    assert values(at.title) == ["Compare encoders"]
    assert any(s.label.startswith("Compared 2 encoders in") for s in at.status)
    table = at.dataframe[0].value
    assert list(table["encoder"]) == [BUNDLED, PIXELS]
    assert list(table["dim"]) == [1280, 768]
    accuracy = comparison.encoders[0].accuracy
    assert table["accuracy"][0] == (
        f"{accuracy.value:.1%} (95% CI {accuracy.low:.1%} to {accuracy.high:.1%})"
    )

    (pair,) = comparison.pairs
    assert [m for m in values(at.markdown) if " points (95% CI " in m] == [pair.sentence()]
    assert (
        f"Only {BUNDLED} right: {plural(pair.only_a_correct, 'image')} ·"
        f" only {PIXELS} right: {plural(pair.only_b_correct, 'image')}"
    ) in values(at.caption)
    assert pair.only_a_correct + pair.only_b_correct > 0
    assert "Every image was scored by a probe that never saw it" in values(at.info)[0]


@pytest.mark.slow  # the demo, embedded by two encoders from an empty cache: ~45 s
def test_zero_shot_says_the_bundled_encoder_has_no_text_tower(demo_comparison):
    captions = values(demo_comparison.at.caption)
    assert f"{BUNDLED} has no text tower, so zero-shot is not available" in captions
    assert f"{PIXELS} has no text tower, so zero-shot is not available" in captions


@pytest.mark.slow  # the demo, embedded by two encoders from an empty cache: ~45 s
def test_downloads_have_exactly_the_specified_columns(demo_comparison, app_env):
    at = demo_comparison.at
    labels = [d.label for d in at.get("download_button")]
    assert labels == [
        "Download comparison.csv",
        "Download pairs.csv",
        "Download per_image.csv",
    ]  # no fewshot.csv: the few-shot curve was not asked for

    table = csv(at, app_env.media, "comparison.csv")
    assert tuple(table.columns) == COMPARISON_COLUMNS == (
        "encoder", "dim", "images_per_second",
        "accuracy", "accuracy_low", "accuracy_high",
        "balanced_accuracy", "balanced_accuracy_low", "balanced_accuracy_high",
    )  # fmt: skip
    assert list(table["encoder"]) == [BUNDLED, PIXELS]
    assert (table["images_per_second"] > 0).all()
    assert (table["accuracy_low"] <= table["accuracy"]).all()
    assert (table["accuracy"] <= table["accuracy_high"]).all()

    pairs = csv(at, app_env.media, "pairs.csv")
    assert tuple(pairs.columns) == PAIRS_COLUMNS == (
        "a", "b", "accuracy_a", "accuracy_b", "difference", "difference_low", "difference_high",
        "p_value", "only_a_correct", "only_b_correct",
    )  # fmt: skip
    assert pairs.iloc[0][["a", "b"]].tolist() == [BUNDLED, PIXELS]

    per_image = csv(at, app_env.media, "per_image.csv")
    assert list(per_image.columns) == ["path", "true", BUNDLED, PIXELS]
    assert len(per_image) == 144  # cross-validation: every demo image is scored
    right = per_image[BUNDLED] == per_image["true"]
    assert right.mean() == pytest.approx(table["accuracy"][0])


@pytest.mark.slow  # the demo, embedded by two encoders from an empty cache: ~45 s
def test_clicking_a_point_on_a_map_shows_each_encoders_prediction(demo_comparison):
    at = demo_comparison.at
    keys = map_keys(at)
    assert len(keys) == 2
    figure = chart(at, keys[1])  # the pixel baseline's map: PCA by default
    assert figure["layout"]["title"]["text"] == PIXELS
    assert sum(len(trace["customdata"]) for trace in figure["data"]) == 144

    outcome = at.session_state["comparison_run"].outcome
    paths = outcome.embeddings[PIXELS].paths
    index = 37
    point = {"customdata": [paths[index], index], "curve_number": 0, "point_index": 0}
    select(at, keys[1], [point])
    row = per_image_row(outcome, paths[index])
    lines = values(at.markdown)
    assert f"True class: **{row['true']}**" in lines
    for name in (BUNDLED, PIXELS):
        verdict = "right" if row[name] == row["true"] else "wrong"
        assert f"**{name}** predicted **{row[name]}** ({verdict})" in lines
    assert any(c == paths[index] for c in values(at.caption))

    # A later click on the other map shows that image instead.
    other = 100
    point = {"customdata": [paths[other], other], "curve_number": 0, "point_index": 0}
    select(at, keys[0], [point])
    assert f"True class: **{per_image_row(outcome, paths[other])['true']}**" in values(at.markdown)
    assert paths[other] in values(at.caption) and paths[index] not in values(at.caption)


def per_image_row(outcome, path: str) -> pd.Series:
    from probe_core.evaluation.comparison import per_image_table

    return per_image_table(outcome.comparison).set_index("path").loc[path]


@pytest.mark.slow  # the demo, embedded by two encoders from an empty cache: ~45 s
def test_reruns_redraw_the_comparison_without_recomputing_it(demo_comparison):
    at = demo_comparison.at
    run = at.session_state["comparison_run"]
    at.run()
    assert_ok(at)
    assert at.session_state["comparison_run"] is run
    assert not at.status or not any(s.label.startswith("Compared") for s in at.status)
    assert list(at.dataframe[0].value["encoder"]) == [BUNDLED, PIXELS]


def test_a_template_without_a_class_slot_is_refused():
    at = open_page(new_app(), COMPARE)
    at.text_area(key="compare_templates").set_value("a photo of {}.\na photo")
    compare(at)
    assert values(at.error) == ["Template “a photo” has no {} for the class name."]
    assert "comparison_run" not in at.session_state


def test_one_encoder_is_not_a_comparison():
    at = open_page(new_app(), COMPARE)
    at.multiselect[0].set_value([PIXELS])
    compare(at)
    assert values(at.error) == [
        "The comparison failed: a comparison needs at least two different encoders"
    ]
    assert not at.dataframe


FAILING = "open_clip:ViT-B-32@/nonexistent/weights.pt"  # fails to load, offline or not
FAILURE = "checkpoint file not found: /nonexistent/weights.pt"


def test_an_encoder_that_failed_on_the_data_page_is_not_preselected_here():
    at = new_app()
    at.text_input(key="custom_encoder").set_value(FAILING)
    button(at, "Run probe").click().run()
    assert_ok(at)
    assert values(at.error) == [f"**{FAILING}** could not be loaded: {FAILURE}"]
    assert study(at).settings.encoder == BUNDLED  # the settings keep the encoder that works
    open_page(at, COMPARE)
    assert at.multiselect(key="compare_encoders").value == [BUNDLED, PIXELS]


def test_an_encoder_that_fails_in_a_comparison_is_named_in_plain_sight_and_deselected():
    at = open_page(new_app(), COMPARE)
    at.multiselect(key="compare_encoders").set_value([PIXELS, FAILING])
    compare(at)
    message = f"**{FAILING}** could not be loaded, so it was taken out of the selection: {FAILURE}"
    assert values(at.error) == [message]
    hidden = [e.value for box in [*at.status, *at.expander] for e in box.error]
    assert hidden == []  # not inside a collapsed status box or an expander
    assert at.multiselect(key="compare_encoders").value == [PIXELS]
    assert "comparison_run" not in at.session_state

    at.run()  # the reason stays until the next comparison
    assert values(at.error) == [message]
    open_page(at, "app_pages/data.py")
    open_page(at, COMPARE)
    assert FAILING not in at.multiselect(key="compare_encoders").value


def test_without_images_the_page_offers_the_demo():
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT)
    at.switch_page(COMPARE).run()
    assert_ok(at)
    assert values(at.info) == ["No images yet: choose images on the **Data** page."]
    button(at, "Use the bundled demo").click().run()
    assert_ok(at)
    assert values(at.title) == ["Compare encoders"]
    assert study(at).dataset.class_names == test_app.DEMO_CLASSES


def test_few_shot_curve_on_a_small_folder_draws_and_downloads(app_env):
    at = new_app()
    uploader(at, "browse_").set_value(folder_upload(["red", "green", "blue"], per_class=4)).run()
    assert_ok(at)
    open_page(at, COMPARE)
    at.checkbox[0].check()
    compare(at)
    outcome = at.session_state["comparison_run"].outcome
    assert list(at.dataframe[0].value["encoder"]) == [BUNDLED, PIXELS]
    assert [m for m in values(at.markdown) if " points (95% CI " in m] == [
        outcome.comparison.pairs[0].sentence()
    ]
    assert [curve.encoder for curve in outcome.fewshot] == [BUNDLED, PIXELS]
    assert "Few-shot" in values(at.subheader)
    titles = [c.proto.spec for c in at.get("plotly_chart")]
    assert any("Few-shot curve" in spec for spec in titles)
    fewshot = csv(at, app_env.media, "fewshot.csv", "upload_efficientnet-lite0-vs-baseline-pixels")
    assert tuple(fewshot.columns) == FEWSHOT_COLUMNS
    assert set(fewshot["encoder"]) == {BUNDLED, PIXELS}
    assert list(fewshot[fewshot["encoder"] == PIXELS]["k"]) == outcome.fewshot[1].shots
