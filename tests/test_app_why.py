""" "Why?" in the app, driven headless with AppTest: on the Results page (a mistake, a label
issue, a confusion-matrix image), the Map page (a clicked point) and Predict (an uploaded
image), the panel shows the saliency overlay with its method and deletion sentence, the
nearest images with label, cosine and fold, the class's typical and atypical images with the
measure named, and the class's shortcut check; a weight-free encoder says it has no saliency.
Every number shown is the library's (``probe_core.explain``) for the same image."""

from __future__ import annotations

import re

import numpy as np
import pytest

from probe_core.export import predictions_table, result_label_issues_table
from probe_core.wording import caption_text, file_name_caption
from studio import why
from tests.conftest import DEMO_DIR
from tests.test_app import (
    MAP,
    PREDICT,
    RESULTS,
    app_env,  # noqa: F401  (the module fixture: private caches, no operator roots)
    assert_ok,
    button,
    demo_run,  # noqa: F401  (the demo, embedded and probed once for this module)
    new_app,
    open_page,
    png_bytes,
    run_probe,
    select,
    study,
    uploader,
    values,
)
from tests.test_app_embeddings import parquet_bytes, synthetic_frame

pytestmark = pytest.mark.slow  # saliency and its deletion check on two CPU cores


def click_why(at, place: str, target) -> None:
    found = [b for b in at.button if b.key == f"why_{place}_{target}"]
    assert len(found) == 1, [b.key for b in at.button if (b.key or "").startswith("why_")]
    found[0].click().run()
    assert_ok(at)


def why_on_a_confident_correct_image(at, current, class_name: str) -> int:
    """Click the confusion cell ``class_name`` -> ``class_name``, then Why? on its most
    confident image; the image's row."""
    point = {"x": class_name, "y": class_name, "curve_number": 1, "point_index": 0}
    select(at, "confusion", [point])
    table = predictions_table(current.embeddings, current.result)
    cell = table[(table["true"] == class_name) & (table["predicted"] == class_name)]
    row = current.embeddings.paths.index(cell.sort_values("confidence").iloc[-1]["path"])
    click_why(at, "confusion", row)
    return row


def panel_texts(at) -> list[str]:
    """Everything written in text elements, in page order."""
    kinds = ("markdown", "caption", "success", "warning", "info", "subheader", "error")
    return [e.value for kind in kinds for e in at.get(kind)]


def explainer(at):
    """The session's explainer (the one the panel used, with the explanations it keeps)."""
    result, kept = at.session_state[why.EXPLAINER]
    assert result is study(at).result
    return kept


def image_captions(at) -> list[str]:
    """The captions of the images shown with ``st.image``."""
    return [img.caption for element in at.get("image") for img in element.proto.imgs]


def assert_explained(at, row: int) -> None:
    """The panel for embedding row ``row`` shows what the library computes for it."""
    current = study(at)
    path = current.embeddings.paths[row]
    texts = panel_texts(at)
    name = path.rsplit("/", 1)[-1]
    assert f"Why? {name}" in values(at.subheader)
    explanation = explainer(at).explain_row(row)  # kept: the panel's own explanation
    # The overlay: drawn (an image element with its caption) and its method named.
    assert any(
        c.startswith(f"Evidence for {explanation.explained_class}: ") for c in image_captions(at)
    )
    captions = values(at.caption)
    assert "**Method:** Grad-CAM (last convolutional stage)." in texts
    # The deletion check in one sentence, for the same numbers.
    check = explanation.deletion
    step = check.headline
    sentence = [t for t in texts if "hiding the highlighted 10%" in t.lower()]
    assert len(sentence) == 1
    if check.better_than_random:
        assert sentence[0].startswith("Hiding the highlighted 10%")
        assert f"by {step.salient_drop:.2f}" in sentence[0] or "barely" in sentence[0]
        assert [s.value for s in at.success] == sentence
    else:
        assert sentence[0].startswith("The map does no better than random here:")
    assert f"{step.random_drop:.2f}" in sentence[0] or "barely changes it" in sentence[0]
    # The nearest images: label, cosine and fold of each, most similar first.
    shown = [c for c in captions if " · cos " in c and c.split("  \n")[0] != ""]
    neighbours = explanation.neighbours.neighbours
    assert len(neighbours) == 8
    expected = [
        f"{file_name_caption(n.path)}  \n"
        f"{caption_text(n.label, breakable=True)} · cos {n.cosine:.2f}"
        f"  \n{'same fold' if n.same_fold else 'other fold'}"
        for n in neighbours
    ]
    assert shown[: len(expected)] == expected
    # The class's typical and atypical images, with the measure named.
    assert any(c.startswith("Ranked by the probe's margin, p(own class)") for c in captions)
    assert "**Most typical**" in texts and "**Least typical**" in texts
    margins = [c for c in captions if re.search(r"  \nmargin [+-]\d\.\d\d", c)]
    typicality = explainer(at).typicality()[explanation.explained_class]
    for image in typicality.typical:
        assert any(
            c.startswith(f"{file_name_caption(image.path)}  \nmargin {image.score:+.2f}")
            for c in margins
        ), image.path
    # Where the probe looks for the class: its border share, flagged or not.
    mean = explainer(at).class_saliency(explanation.explained_class)
    share = f"{mean.border_share:.0%} of"
    assert any(share in t and "border of the crop" in t for t in texts), share


def test_why_on_a_mistake_shows_the_checked_saliency_neighbours_and_typical_images(demo_run):  # noqa: F811
    at = open_page(demo_run.at, RESULTS)
    current = study(at)
    table = predictions_table(current.embeddings, current.result)
    worst = table[~table["correct"]].nlargest(12, "confidence").iloc[0]
    row = current.embeddings.paths.index(worst["path"])
    click_why(at, "mistakes", row)
    assert_explained(at, row)
    explanation = explainer(at).explain_row(row)
    assert explanation.is_mistake and explanation.probe_fold is not None
    decision = [m for m in values(at.markdown) if m.startswith("Labelled **")]
    assert decision == [
        f"Labelled **{caption_text(worst['true'])}** · scored out of sample as"
        f" **{caption_text(worst['predicted'])}** (a mistake)"
    ]
    # The mistake's own class is shown beside the class it was taken for.
    assert [t.label for t in at.tabs] == [f"Class {worst['predicted']}", f"Class {worst['true']}"]
    # Another class can be asked for; closing removes the panel.
    at.selectbox(key="why_class_mistakes").set_value(worst["true"]).run()
    assert_ok(at)
    assert any(c.startswith(f"Evidence for {worst['true']}: ") for c in image_captions(at))
    # Another image starts again with the class the probe predicts for it.
    second = table[~table["correct"]].nlargest(12, "confidence").iloc[1]
    click_why(at, "mistakes", current.embeddings.paths.index(second["path"]))
    assert at.selectbox(key="why_class_mistakes").value == "the predicted class"
    assert any(c.startswith(f"Evidence for {second['predicted']}: ") for c in image_captions(at))
    at.button(key="why_close_mistakes").click().run()
    assert not [s for s in values(at.subheader) if s.startswith("Why? ")]


def test_why_on_a_label_issue_and_on_a_confusion_matrix_image(demo_run):  # noqa: F811
    at = open_page(demo_run.at, RESULTS)
    current = study(at)
    issue = result_label_issues_table(current.embeddings, current.result).iloc[0]
    row = current.embeddings.paths.index(issue["path"])
    click_why(at, "label_issues", row)
    assert_explained(at, row)
    # A confusion-matrix cell's image: the panel opens under that grid instead.
    first = why_on_a_confident_correct_image(at, current, current.result.metrics.class_names[0])
    assert [s for s in values(at.subheader) if s.startswith("Why? ")] == [
        f"Why? {current.embeddings.paths[first].rsplit('/', 1)[-1]}"
    ]
    assert_explained(at, first)


def test_why_on_a_clicked_map_point(demo_run):  # noqa: F811
    at = open_page(demo_run.at, MAP)
    at.radio(key="map_method").set_value("pca").run()
    row = 7
    select(at, "map", [{"point_index": 0, "curve_number": 0, "customdata": ["x", row]}])
    click_why(at, "map", row)
    assert_explained(at, row)


def test_why_on_an_uploaded_image_on_predict(demo_run):  # noqa: F811
    at = open_page(demo_run.at, PREDICT)
    known = sorted((DEMO_DIR / "flags").iterdir())[0]
    new = ("new.png", png_bytes(0, 99), "image/png")
    at.file_uploader(key="predict_images").set_value(
        [(known.name, known.read_bytes(), "image/png"), new]
    ).run()
    assert_ok(at)
    click_why(at, "predict", "new.png")
    texts = panel_texts(at)
    assert "Why? new.png" in values(at.subheader)
    current = study(at)
    explanation = explainer(at).explain_image(new[1], "new.png", probe="shipped")
    assert explanation.row is None  # a new image: embedded, explained with the shipped probe
    shown = [c for c in values(at.caption) if c.startswith(f"{new[0]}: ")]
    assert shown == [f"new.png: **{explanation.predicted}**"]  # the prediction it explains
    assert f"Predicted **{caption_text(explanation.predicted)}**" in texts
    assert "**Method:** Grad-CAM (last convolutional stage)." in texts
    assert any("hiding the highlighted 10%" in t for t in texts)
    cosines = [n.cosine for n in explanation.neighbours.neighbours]
    exact = np.sort(current.embeddings.vectors @ explainer(at)._embed(new[1], "new.png"))[::-1]
    assert np.allclose(cosines, exact[:8], atol=1e-5)  # no fold: it took no part in the run
    assert not any("same fold" in c or "other fold" in c for c in values(at.caption))
    # A demo image uploaded again is one of the run's: explained as the studio predicts it.
    click_why(at, "predict", known.name)
    again = explainer(at).explain_image(known.read_bytes(), known.name, probe="shipped")
    assert again.row == current.embeddings.paths.index(f"flags/{known.name}")
    assert again.probe_fold is None
    assert f"Why? {known.name}" in values(at.subheader)


def test_a_weight_free_encoder_says_it_has_no_saliency_but_shows_neighbours():
    at = new_app()
    files = [
        (f"data/{name}/{image.name}", image.read_bytes(), "image/png")
        for name in ("flags", "food_drink")
        for image in sorted((DEMO_DIR / name).iterdir())[:10]
    ]
    uploader(at, "browse_").set_value(files).run()
    assert_ok(at)
    at.text_input(key="custom_encoder").set_value("baseline:pixels")  # the picker's name field
    run_probe(at)
    at = open_page(at, RESULTS)
    current = study(at)
    why_on_a_confident_correct_image(at, current, "flags")
    infos = values(at.info)
    assert any(i.startswith("No saliency map: ") and "weight-free" in i for i in infos), infos
    assert not any("hiding the highlighted" in t for t in panel_texts(at))
    assert len([c for c in values(at.caption) if " · cos " in c]) == 8
    assert button(at, "Close")


def test_opened_embeddings_have_neighbours_but_no_saliency():
    at = new_app()
    frame = synthetic_frame([f"/data/elsewhere/{i}.jpg" for i in range(30)])
    uploader(at, "embeddings_upload").set_value(
        [("other-tool.parquet", parquet_bytes(frame), "application/octet-stream")]
    ).run()
    run_probe(at)
    at = open_page(at, RESULTS)
    current = study(at)
    row = why_on_a_confident_correct_image(at, current, "class 1")
    assert "Why? " + current.embeddings.paths[row].rsplit("/", 1)[-1] in values(at.subheader)
    assert (
        "No saliency map: these embeddings were opened from a file, and the studio cannot load"
        " their encoder, so there is no saliency."
    ) in values(at.info)
    assert not any("hiding the highlighted" in t for t in panel_texts(at))
    nearest = explainer(at).explain_row(row).neighbours.neighbours
    shown = [c for c in values(at.caption) if " · cos " in c]
    assert shown[:8] == [
        f"{file_name_caption(n.path)}  \n{caption_text(n.label, breakable=True)}"
        f" · cos {n.cosine:.2f}  \n{'same fold' if n.same_fold else 'other fold'}"
        for n in nearest
    ]
