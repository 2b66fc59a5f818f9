"""What keeps the first UMAP map quick, and what a map is written with.

Numba's on-disk cache is checked through numba's own records (compile events and cache
hits in a fresh process), never with wall-clock thresholds.
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.manifold import trustworthiness

from probe_core import projection as projection_module
from probe_core.evaluation.map_quality import map_quality
from probe_core.evaluation.protocols import run_probe
from probe_core.export import MAP_OUTPUTS, RUN_OUTPUTS, write_map, write_run
from probe_core.projection import (
    cache_numba_functions,
    exact_neighbours,
    load_umap,
    numba_cache_dir,
    project,
    score_map,
    use_numba_cache,
)
from tests.test_probe import clustered_embeddings

REPO = Path(__file__).resolve().parent.parent

JITTED_MODULE = """
import numba

@numba.njit
def total(values):
    result = 0.0
    for value in values:
        result += value
    return result
"""

CACHE_A_JITTED_FUNCTION = """
import json, sys
import numpy as np
from probe_core.projection import cache_numba_functions, use_numba_cache
use_numba_cache()
import jitted_sum
enabled = cache_numba_functions("jitted_sum")
value = jitted_sum.total(np.arange(4.0))
stats = jitted_sum.total.stats
print(json.dumps({"enabled": enabled, "value": value,
    "hits": sum(stats.cache_hits.values()), "misses": sum(stats.cache_misses.values())}))
"""

FIT_UMAP_ON_200_POINTS = """
import json
import numpy as np
from numba.core import event
from probe_core.projection import load_umap, project
load_umap()  # the import compiles a few functions eagerly; only what the fit needs counts
compiled = []

class CompileRecorder(event.Listener):
    def on_start(self, record):
        function = record.data["dispatcher"].py_func
        compiled.append(f"{function.__module__}.{function.__qualname__}")

    def on_end(self, record):
        pass

event.register("numba:compile", CompileRecorder())
rng = np.random.default_rng(0)
vectors = rng.normal(size=(200, 16)).astype(np.float32)
coords = project(vectors, method="umap", seed=3).coords
print(json.dumps({"compiled": compiled, "coords": coords.tolist()}))
"""


def run_fresh_python(code: str, cache_dir: Path, *paths: Path) -> dict:
    """Run ``code`` in a new interpreter with ``cache_dir`` as numba's cache; its JSON line."""
    python_path = ":".join(str(path) for path in (REPO, *paths))
    environment = {"NUMBA_CACHE_DIR": str(cache_dir), "PYTHONPATH": python_path, "PATH": ""}
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=environment,
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def clusters():
    embeddings = clustered_embeddings([25, 25, 25], dim=24, spread=0.8)
    return embeddings, run_probe(embeddings, seed=0)


# --- numba's on-disk cache ------------------------------------------------------------------


def test_numba_cache_lives_in_the_user_cache_folder_unless_numba_cache_dir_is_set(
    monkeypatch, tmp_path
):
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.setattr("platformdirs.user_cache_dir", lambda app: str(tmp_path / app))
    assert numba_cache_dir() == tmp_path / "probe-studio" / "numba"
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "elsewhere"))
    assert numba_cache_dir() == tmp_path / "elsewhere"


def test_use_numba_cache_points_numba_at_the_folder(monkeypatch, tmp_path):
    from numba.core import config

    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(config, "CACHE_DIR", "")
    assert use_numba_cache() == tmp_path
    assert str(tmp_path) == config.CACHE_DIR


def test_a_function_made_without_cache_is_loaded_from_disk_by_the_next_process(
    tmp_path, monkeypatch
):
    from numba.core import config

    (tmp_path / "jitted_sum.py").write_text(JITTED_MODULE)
    cache_dir = tmp_path / "numba"
    monkeypatch.setattr(config, "CACHE_DIR", str(cache_dir))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "jitted_sum", raising=False)
    import jitted_sum

    assert cache_numba_functions("jitted_sum") == 1
    assert jitted_sum.total(np.arange(4.0)) == 6.0
    stats = jitted_sum.total.stats
    assert (sum(stats.cache_hits.values()), sum(stats.cache_misses.values())) == (0, 1)
    assert list(cache_dir.rglob("*.nbi")) and list(cache_dir.rglob("*.nbc"))  # saved
    monkeypatch.delitem(sys.modules, "jitted_sum")

    fresh = run_fresh_python(CACHE_A_JITTED_FUNCTION, cache_dir, tmp_path)
    assert fresh["enabled"] == 1 and fresh["value"] == 6.0
    assert (fresh["hits"], fresh["misses"]) == (1, 0)  # loaded, not compiled


@pytest.mark.slow  # the first process compiles UMAP's numba code into an empty cache
def test_a_second_process_fits_umap_without_compiling_and_gets_the_same_map(tmp_path):
    first = run_fresh_python(FIT_UMAP_ON_200_POINTS, tmp_path)
    second = run_fresh_python(FIT_UMAP_ON_200_POINTS, tmp_path)
    umap_compiled = [name for name in first["compiled"] if name.startswith("umap.")]
    assert umap_compiled  # the recorder sees compiling when there is any
    assert not [name for name in second["compiled"] if name.startswith("umap.")]
    assert not any(name.startswith("pynndescent.") for name in first["compiled"])
    assert list(tmp_path.rglob("umap_*/*.nbi"))
    np.testing.assert_array_equal(first["coords"], second["coords"])


# --- exact neighbours, PCA above the threshold, seeds --------------------------------------


def test_exact_neighbours_start_with_the_point_itself_and_match_cosine_brute_force(clusters):
    vectors = clusters[0].vectors
    found = exact_neighbours(vectors, 6)
    assert found.indices.shape == found.distances.shape == (75, 6)
    assert found.indices.dtype == np.int32 and found.distances.dtype == np.float32
    np.testing.assert_array_equal(found.indices[:, 0], np.arange(75))
    np.testing.assert_array_equal(found.distances[:, 0], 0)
    cosine = 1 - vectors @ vectors.T
    np.fill_diagonal(cosine, np.inf)
    expected = np.sort(cosine, axis=1)[:, :5]
    np.testing.assert_allclose(found.distances[:, 1:], np.maximum(expected, 0), atol=1e-5)


class SearchNotAllowed:
    def __init__(self, *args, **kwargs):
        raise AssertionError("UMAP ran its own neighbour search")


def test_umap_below_the_limit_uses_exact_neighbours_never_its_own_search(clusters, monkeypatch):
    umap = load_umap()
    monkeypatch.setattr(umap.umap_, "NNDescent", SearchNotAllowed)  # pynndescent
    monkeypatch.setattr(umap.umap_, "nearest_neighbors", SearchNotAllowed)  # any search
    embeddings, _ = clusters
    projection = project(embeddings.vectors, method="umap", n_neighbors=10, seed=1)
    assert projection.neighbour_search == "exact"
    assert projection.params == {"n_neighbors": 10, "min_dist": 0.1, "metric": "cosine", "seed": 1}


def test_exact_neighbours_keep_the_map_as_trustworthy_as_umaps_own_search(clusters):
    umap = load_umap()
    vectors = clusters[0].vectors
    ours = project(vectors, method="umap", n_neighbors=10, seed=0).coords
    own_search = umap.UMAP(n_neighbors=10, metric="cosine", random_state=0, init="spectral")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # n_jobs overridden by random_state
        theirs = own_search.fit_transform(vectors)
    ours_t = trustworthiness(vectors, ours, n_neighbors=10, metric="cosine")
    theirs_t = trustworthiness(vectors, theirs, n_neighbors=10, metric="cosine")
    assert abs(ours_t - theirs_t) < 0.02, (ours_t, theirs_t)


def test_above_the_threshold_umap_runs_on_a_pca_of_the_unit_vectors(clusters, monkeypatch):
    umap = load_umap()
    seen_shapes = []
    original = umap.UMAP.fit_transform

    def recording(self, data, *args, **kwargs):
        seen_shapes.append((data.shape, self.metric, self.precomputed_knn[0] is not None))
        return original(self, data, *args, **kwargs)

    monkeypatch.setattr(umap.UMAP, "fit_transform", recording)
    monkeypatch.setattr(projection_module, "PCA_BEFORE_UMAP_ABOVE", 50)
    monkeypatch.setattr(projection_module, "PCA_BEFORE_UMAP_DIMENSIONS", 5)
    vectors = clusters[0].vectors
    reduced = project(vectors, method="umap", n_neighbors=10, seed=2)
    assert seen_shapes == [((75, 5), "euclidean", True)]
    assert reduced.params["pca_dimensions"] == 5 and reduced.params["metric"] == "euclidean"
    assert reduced.neighbour_search == "exact"
    small = project(vectors[:40], method="umap", n_neighbors=10, seed=2)
    assert seen_shapes[-1] == ((40, 24), "cosine", True)  # at or below it: the vectors
    assert "pca_dimensions" not in small.params


@pytest.mark.parametrize("method", ["umap", "pca"])
def test_maps_are_seeded_and_reproducible(clusters, method):
    vectors = clusters[0].vectors
    first = project(vectors, method=method, n_components=3, seed=4)
    again = project(vectors, method=method, n_components=3, seed=4)
    np.testing.assert_array_equal(first.coords, again.coords)
    if method == "umap":
        other = project(vectors, method=method, n_components=3, seed=5)
        assert not np.array_equal(first.coords, other.coords)


# --- scoring a map and writing it ----------------------------------------------------------


def test_a_projection_made_with_labels_carries_its_map_quality(clusters):
    embeddings, _ = clusters
    projection = project(
        embeddings.vectors, method="umap", n_neighbors=12, labels=embeddings.labels
    )
    expected = map_quality(embeddings.vectors, projection.coords, embeddings.labels, k=12)
    score = projection.score
    assert not score.sampled and score.n_points == 75
    assert score.quality.k == 12
    assert score.quality.trustworthiness == expected.trustworthiness
    assert score.quality.knn_agreement_map == expected.knn_agreement_map
    np.testing.assert_array_equal(score.disagreeing, np.flatnonzero(expected.disagrees))
    assert project(embeddings.vectors, method="pca").score is None  # no labels, no score


def test_large_maps_are_scored_on_a_seeded_sample(clusters):
    embeddings, _ = clusters
    coords = project(embeddings.vectors, method="pca").coords
    score = score_map(embeddings.vectors, coords, embeddings.labels, max_points=30, seed=1)
    again = score_map(embeddings.vectors, coords, embeddings.labels, max_points=30, seed=1)
    assert score.sampled and len(score.scored) == 30 and score.n_points == 75
    np.testing.assert_array_equal(score.scored, again.scored)
    assert np.all(np.diff(score.scored) > 0)
    on_sample = map_quality(
        embeddings.vectors[score.scored], coords[score.scored], embeddings.labels[score.scored]
    )
    assert score.quality.trustworthiness == on_sample.trustworthiness
    assert set(score.disagreeing) <= set(score.scored)
    assert "on a random 30 of 75 points" in score.reading()
    assert score.to_json_dict()["n_scored"] == 30


def test_a_map_is_written_with_its_coordinates_and_quality(clusters, tmp_path):
    embeddings, result = clusters
    projection = project(embeddings.vectors, method="pca", n_components=3)  # no labels given
    written = write_map(tmp_path, embeddings, result, projection)
    assert [path.name for path in written] == list(MAP_OUTPUTS)
    assert set(MAP_OUTPUTS) <= set(RUN_OUTPUTS)
    table = pd.read_csv(tmp_path / "projection.csv")
    assert list(table.columns) == ["path", "label", "x", "y", "z"]
    assert list(table["path"]) == embeddings.paths
    assert list(table["label"]) == [embeddings.class_names[i] for i in embeddings.labels]
    np.testing.assert_allclose(table[["x", "y", "z"]].to_numpy(), projection.coords, rtol=1e-6)
    document = json.loads((tmp_path / "map_quality.json").read_text())
    expected = map_quality(embeddings.vectors, projection.coords, embeddings.labels, k=15)
    assert document == as_json(expected.to_json_dict(), n_scored=75, n_points=75)


def test_a_run_without_a_map_writes_none_of_the_map_files(clusters, tmp_path):
    embeddings, result = clusters
    write_run(tmp_path, embeddings, result, {"projection": "none"})
    assert not [name for name in MAP_OUTPUTS if (tmp_path / name).exists()]


def as_json(document: dict, **extra) -> dict:
    """``document`` with ``extra`` keys, as JSON gives it back."""
    return json.loads(json.dumps(document | extra))
