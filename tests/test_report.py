"""The standalone HTML report: the app's class colours and named axes, metrics with their
intervals, label issues that do not contradict themselves, and nothing fetched."""

from __future__ import annotations

import dataclasses
import json
import re

import plotly.io as pio
import pytest
import streamlit  # noqa: F401  (registers the template the app's figures are built with)

from probe_core.evaluation.label_issues import LabelIssue, LowConfidenceLabel
from probe_core.evaluation.protocols import run_probe
from probe_core.figures import CLASS_COLOURS, class_colours
from probe_core.probe import LinearProbe
from probe_core.projection import project
from probe_core.report import html_report
from tests.test_probe import clustered_embeddings

CLASSES = ["animals_nature", "flags", "food_drink", "objects", "smileys_emotion", "travel_places"]
PLACEHOLDER_COLOUR = re.compile(r"#0000[0-9a-f]{2}\b", re.IGNORECASE)  # Streamlit's template


def report_figures(page: str) -> list[dict]:
    """Every ``Plotly.newPlot(id, data, layout, config)`` of the page: {"data", "layout"}."""
    decoder = json.JSONDecoder()
    figures = []
    for call in re.finditer(r'Plotly\.newPlot\(\s*"[^"]+",\s*', page):
        data, end = decoder.raw_decode(page, call.end())
        separator = re.match(r"\s*,\s*", page[end:])
        layout, _ = decoder.raw_decode(page, end + separator.end())
        figures.append({"data": data, "layout": layout})
    return figures


@pytest.fixture(scope="module")
def study():
    embeddings = clustered_embeddings([10] * 6, dim=24, spread=1.2, seed=3)
    embeddings.class_names = list(CLASSES)
    embeddings.paths = [f"{CLASSES[y]}/{i}.png" for i, y in enumerate(embeddings.labels)]
    result = run_probe(embeddings, protocol="cv", seed=0, probe=LinearProbe(C=1.0))
    return embeddings, result, project(embeddings.vectors, method="pca")


@pytest.fixture
def page(study, monkeypatch):
    """The report as the app builds it: in a process where Streamlit's template is default."""
    monkeypatch.setattr(pio.templates, "default", "streamlit")
    return html_report(*study, title="Probe report: demo")


def test_the_map_draws_every_class_in_its_own_colour_as_the_app_does(study, page):
    figures = report_figures(page)
    assert len(figures) == 3  # confusion matrix, map, C sweep
    assert not PLACEHOLDER_COLOUR.search(json.dumps(figures))
    traces = {trace["name"]: trace for trace in figures[1]["data"]}
    assert set(traces) == set(CLASSES)
    colours = {name: trace["marker"]["color"] for name, trace in traces.items()}
    assert colours == class_colours(CLASSES)
    assert len(set(colours.values())) == len(CLASSES)
    assert set(colours.values()) <= set(CLASS_COLOURS)


def test_the_confusion_matrix_names_every_class_on_both_axes(page):
    layout = report_figures(page)[0]["layout"]
    for axis in ("xaxis", "yaxis"):
        assert layout[axis]["tickvals"] == CLASSES
        assert layout[axis]["ticktext"] == CLASSES
        assert layout[axis]["automargin"] is True  # the margin grows to fit the names


def test_every_metric_shows_its_value_and_interval(study, page):
    metrics = study[1].metrics
    for name, estimate in [
        ("Accuracy", metrics.accuracy),
        ("Balanced accuracy", metrics.balanced_accuracy),
        ("Macro F1", metrics.macro_f1),
        ("Top-5 accuracy", metrics.top5_accuracy),
    ]:
        assert name in page
        assert f"{estimate.value:.1%}" in page
        assert f"95% CI {estimate.low:.1%} to {estimate.high:.1%}" in page
        assert estimate.method in page


def test_label_issues_and_low_confidence_labels_are_two_honest_groups(study, monkeypatch):
    embeddings, result, projection = study
    monkeypatch.setattr(pio.templates, "default", "streamlit")
    flagged = dataclasses.replace(
        result,
        label_issues=(LabelIssue(0, 0, 4, 0.05, 0.05, 0.81),),
        low_confidence_labels=(LowConfidenceLabel(11, 1, 3, 0.2, 0.34, 0.33),),
    )
    page = html_report(embeddings, flagged, projection)
    assert (
        f"{embeddings.paths[0]}: labelled animals_nature, looks like smileys_emotion"
        " (p(smileys_emotion) = 0.81, p(animals_nature) = 0.05)" in page
    )
    assert "<h3>Low confidence in its own label</h3>" in page
    assert (
        f"{embeddings.paths[11]}: labelled flags, low confidence (p(flags) = 0.34);"
        " runner-up objects (p(objects) = 0.33)" in page
    )
    assert not re.search(r"labelled (\w+), looks like \1\b", page)


def test_the_report_fetches_nothing(page):
    assert page.count("plotly.js v") == 1  # inlined once
    assert not re.search(r"<script[^>]*\bsrc=", page)
    outside_scripts = re.sub(r"<script[^>]*>.*?</script>", "", page, flags=re.DOTALL)
    assert not re.search(r"https?://", outside_scripts)


@pytest.mark.browser
def test_every_class_name_is_drawn_whole_on_both_axes_in_chromium(page, chromium_browser, tmp_path):
    path = tmp_path / "report.html"
    path.write_text(page, encoding="utf-8")
    view = chromium_browser.new_page(viewport={"width": 1200, "height": 900})
    requests = []
    view.on("request", lambda request: requests.append(request.url))
    try:
        view.goto(path.as_uri())
        view.locator(".js-plotly-plot .xtick text").first.wait_for(timeout=30_000)
        plot = view.locator(".js-plotly-plot").first
        frame = plot.locator("svg.main-svg").first.bounding_box()
        for axis in ("xtick", "ytick"):
            labels = plot.locator(f".{axis} text")
            assert sorted(labels.all_text_contents()) == sorted(CLASSES)
            for index in range(labels.count()):
                box = labels.nth(index).bounding_box()
                assert box["x"] >= frame["x"] and box["y"] >= frame["y"]
                assert box["x"] + box["width"] <= frame["x"] + frame["width"]
                assert box["y"] + box["height"] <= frame["y"] + frame["height"]
    finally:
        view.close()
    assert all(url.startswith("file://") for url in requests), requests
