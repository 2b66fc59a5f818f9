"""Load test: 100,000 precomputed embeddings (512-d, 50 classes) in the app, headless.

Not a timing test (``bench/app_scale.py`` prints the times and the peak memory): it checks that
the file opens, the probe runs, the Results and Map pages render with every point on a WebGL
map, a selection returns its rows, and thumbnails are fetched for one hovered point at a time
rather than sent up front.
"""

from __future__ import annotations

import json

import pytest
from streamlit.elements.plotly_chart import PlotlySelectionState, PlotlyState
from streamlit.testing.v1 import AppTest

from bench.app_scale import trace_length
from bench.folders import synthetic_embeddings_file
from probe_core.roots import ROOTS_ENV
from studio import shared
from tests.test_app import REPO, assert_ok, button, metrics, study, values

ROWS, DIM, CLASSES = 100_000, 512, 50
TIMEOUT = 3600

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def large_file(tmp_path_factory):
    base = tmp_path_factory.mktemp("large")
    return synthetic_embeddings_file(
        base / "embeddings.parquet", ROWS, DIM, CLASSES, image_root=base / "images"
    )


@pytest.fixture(scope="module")
def large_session(large_file, tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(ROOTS_ENV, str(large_file.parent))
        patch.setenv("PROBE_STUDIO_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        shared.embedding_cache.clear()
        shared.result_cache.clear()
        at = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT)
        at.run()
        at.text_input(key="embeddings_path").set_value(str(large_file))
        button(at, "Open embeddings").click().run()
        assert_ok(at)
        opened = metrics(at)
        button(at, "Run probe").click().run()
        assert_ok(at)
        yield at, opened
        shared.embedding_cache.clear()
        shared.result_cache.clear()


def test_the_file_opens_and_the_probe_scores_the_held_out_part(large_session):
    at, opened = large_session
    assert opened == {"Embeddings": "100,000", "Classes": "50", "Dimensions": "512"}
    result = study(at).result
    assert result.protocol.name == "holdout"  # above the cross-validation limit
    assert len(result.evaluated) == 25_000
    assert result.metrics.confusion.shape == (CLASSES, CLASSES)
    assert 0.5 < result.metrics.accuracy.value < 1.0
    assert any("25,000" in info for info in values(at.info) + values(at.markdown))


def test_the_map_draws_every_point_with_webgl_and_sends_no_thumbnails(large_session):
    at, _ = large_session
    at.switch_page("app_pages/map.py").run()
    assert_ok(at)
    (chart,) = [c for c in at.get("plotly_chart") if c.key == "map"]
    spec = chart.proto.spec
    traces = json.loads(spec)["data"]
    assert sum(trace_length(trace["x"]) for trace in traces) == ROWS
    assert {trace["type"] for trace in traces} == {"scattergl"}
    assert "data:image" not in spec
    projection = next(iter(study(at).projections.values()))
    assert projection.params.get("pca_dimensions") == 50
    # Only the Results page's thumbnails (mistakes, label issues) were made, not one per point.
    assert len(study(at).thumbnails) < 1_000


def test_a_selection_returns_its_rows_and_a_hovered_point_gets_its_thumbnail(large_session):
    at, _ = large_session
    at.switch_page("app_pages/map.py").run()
    paths = study(at).embeddings.paths
    points = [
        {"point_index": i, "curve_number": 0, "customdata": [paths[i], i]}
        for i in range(0, 2000, 20)
    ]
    at.session_state["map"] = PlotlyState(
        {
            "selection": PlotlySelectionState(
                {"points": points, "point_indices": list(range(100)), "box": [], "lasso": []}
            )
        }
    )
    at.run()
    assert_ok(at)
    assert "100 selected images" in values(at.subheader)

    current = study(at)
    current.thumbnails.clear()
    thumbnail = shared.thumbnails_for(current, [100])  # every 100th row has an image file
    assert thumbnail[100].startswith("data:image")
    assert shared.thumbnails_for(current, [101]) == {}  # no file: no thumbnail, no error
    assert set(current.thumbnails) == {100, 101}  # fetched one point at a time
