"""The Map page, driven headless: the first map is made in the background after Run probe,
every map shows how far to trust it, and the points whose neighbourhood the map changes can
be ringed."""

from __future__ import annotations

import base64
from concurrent.futures import wait

import numpy as np
import pytest

from probe_core.evaluation.map_quality import map_quality
from studio import shared
from tests.test_app import (  # app_env: a private embedding cache for this module
    MAP,
    TIMEOUT,
    app_env,  # noqa: F401
    assert_ok,
    chart,
    new_app,
    open_page,
    run_probe,
    study,
    values,
)

HIGHLIGHT_PREFIX = "neighbourhood differs on the map"


@pytest.fixture(scope="module")
def demo():
    """A session that pressed "Run probe" on the bundled demo (the Data page's default)."""
    at = new_app()
    run_probe(at)
    return at


def wait_for_background_maps() -> None:
    with shared._map_jobs_lock:
        jobs = list(shared._map_jobs.values())
    wait(jobs, timeout=TIMEOUT)


def shown_projection(at, method: str, dims: int):
    """The map the page drew (the other controls at their defaults)."""
    current = study(at)
    return current.projections[shared.projection_key(current, shared.MapSettings(method, dims))]


def quality_metrics(at) -> dict[str, str]:
    return {metric.label: metric.value for metric in at.metric}


def expected_metrics(quality) -> dict[str, str]:
    return {
        f"Trustworthiness (k = {quality.k})": f"{quality.trustworthiness:.2f}",
        "k-NN label agreement, full embedding": f"{quality.knn_agreement_full:.0%}",
        f"k-NN label agreement, {quality.n_components}-D map": f"{quality.knn_agreement_map:.0%}",
    }


def highlighted_indices(at) -> list[int] | None:
    traces = [t for t in chart(at, "map")["data"] if t["name"].startswith(HIGHLIGHT_PREFIX)]
    if not traces:
        return None
    [trace] = traces
    return [int(row[1]) for row in trace["customdata"]]


def test_after_run_probe_the_first_map_is_ready_without_computing_it_again(demo, monkeypatch):
    current = study(demo)
    wait_for_background_maps()
    first_map = shared.projection_key(current, shared.MapSettings())
    assert first_map in current.projections  # made in the background before the page opened
    made = current.projections[first_map]

    def computing_again(*args, **kwargs):
        raise AssertionError("the Map page computed the map again")

    monkeypatch.setattr(shared.Study, "project", computing_again)
    open_page(demo, MAP)
    assert [status.label for status in demo.status] == [f"UMAP done in {made.seconds:.1f} s"]
    figure = chart(demo, "map")
    assert figure["layout"]["title"]["text"].startswith("UMAP of normalised embeddings")
    shown = {}
    for trace in figure["data"]:
        points = zip(trace["customdata"], numbers(trace["x"]), numbers(trace["y"]), strict=True)
        shown |= {int(row[1]): (x, y) for row, x, y in points}
    assert len(shown) == 144
    np.testing.assert_allclose([shown[i] for i in range(144)], made.coords, rtol=1e-6)


def numbers(values) -> np.ndarray:
    """A coordinate array of a Plotly figure's JSON: a list, or Plotly's typed-array form."""
    if isinstance(values, dict):
        return np.frombuffer(base64.b64decode(values["bdata"]), dtype=values["dtype"])
    return np.asarray(values, dtype=float)


@pytest.mark.parametrize(("method", "dims"), [("umap", 2), ("pca", 3)])
def test_every_map_shows_its_trustworthiness_and_label_agreement(demo, method, dims):
    demo.session_state["map_method"] = method
    demo.session_state["map_dims"] = dims
    open_page(demo, MAP)
    current = study(demo)
    coords = shown_projection(demo, method, dims).coords
    assert coords.shape == (144, dims)
    quality = map_quality(current.embeddings.vectors, coords, current.embeddings.labels, k=15)
    assert quality_metrics(demo) == expected_metrics(quality)
    reading = quality.reading()
    assert any(c.startswith(reading[:1].upper() + reading[1:] + ".") for c in values(demo.caption))


def test_the_highlight_toggle_rings_the_points_whose_neighbourhood_the_map_changes(demo):
    demo.session_state["map_method"] = "umap"
    demo.session_state["map_dims"] = 2
    open_page(demo, MAP)
    assert highlighted_indices(demo) is None  # off by default
    current = study(demo)
    coords = shown_projection(demo, "umap", 2).coords
    quality = map_quality(current.embeddings.vectors, coords, current.embeddings.labels, k=15)
    disagreeing = np.flatnonzero(quality.disagrees).tolist()
    assert disagreeing  # the demo has some, so the check below means something

    demo.toggle(key="map_highlight").set_value(True).run()
    assert_ok(demo)
    assert highlighted_indices(demo) == disagreeing
    figure = chart(demo, "map")
    assert figure["data"][-1]["marker"]["symbol"] == "circle-open"
    assert f"Highlight the {len(disagreeing)} points" in demo.toggle(key="map_highlight").label

    demo.toggle(key="map_highlight").set_value(False).run()
    assert highlighted_indices(demo) is None


def test_a_3d_map_says_how_to_select_in_3d_and_shows_its_whole_cube(demo):
    demo.session_state["map_method"] = "pca"
    demo.session_state["map_dims"] = 3
    open_page(demo, MAP)
    hints = [c for c in values(demo.caption) if c.startswith("Hover a point")]
    assert hints == [
        "Hover a point for its thumbnail; drag to turn the view, scroll to zoom. To select"
        " images, switch to 2-D."
    ]
    eye = chart(demo, "map")["layout"]["scene"]["camera"]["eye"]
    plotly_default = np.linalg.norm([1.25, 1.25, 1.25])  # cuts off the lower tick labels
    assert np.linalg.norm([eye["x"], eye["y"], eye["z"]]) > 1.1 * plotly_default

    demo.session_state["map_dims"] = 2
    open_page(demo, MAP)
    hints = [c for c in values(demo.caption) if c.startswith("Hover a point")]
    assert hints == ["Hover a point for its thumbnail; drag a box or lasso to select images."]


@pytest.mark.parametrize(
    ("color_by", "title", "legend"),
    [
        ("true", "coloured by true class", "true class"),
        ("predicted", "coloured by predicted class", "predicted class"),
        ("correct", "coloured by whether the probe was right", "prediction"),
    ],
)
def test_the_map_title_says_what_the_colours_mean(demo, color_by, title, legend):
    demo.session_state["map_method"] = "pca"
    demo.session_state["map_dims"] = 2
    demo.session_state["map_color"] = color_by
    open_page(demo, MAP)
    layout = chart(demo, "map")["layout"]
    assert layout["title"]["text"] == f"PCA of normalised embeddings, {title}"
    assert layout["legend"]["title"]["text"] == legend
    demo.session_state["map_color"] = "true"
