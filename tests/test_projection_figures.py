"""Maps of the embeddings and the Plotly figures built from a probe run."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from probe_core.evaluation.protocols import run_probe
from probe_core.figures import (
    add_disagreement_layer,
    confusion_figure,
    embedding_figure,
    sweep_figure,
)
from probe_core.projection import project
from tests.test_probe import clustered_embeddings


@pytest.fixture(scope="module")
def run():
    embeddings = clustered_embeddings([20, 20, 20])
    return embeddings, run_probe(embeddings, seed=0)


@pytest.mark.parametrize("n_components", [2, 3])
def test_pca_projection_has_one_point_per_image(run, n_components):
    embeddings, _ = run
    projection = project(embeddings.vectors, method="pca", n_components=n_components)
    assert projection.coords.shape == (60, n_components)


@pytest.mark.slow
def test_umap_is_seeded_cosine_and_keeps_classes_apart(run):
    embeddings, _ = run
    first = project(embeddings.vectors, method="umap", n_neighbors=10, min_dist=0.2, seed=1)
    second = project(embeddings.vectors, method="umap", n_neighbors=10, min_dist=0.2, seed=1)
    np.testing.assert_array_equal(first.coords, second.coords)
    assert first.params == {"n_neighbors": 10, "min_dist": 0.2, "metric": "cosine", "seed": 1}
    centres = np.stack([first.coords[embeddings.labels == k].mean(0) for k in range(3)])
    spread = max(first.coords[embeddings.labels == k].std(0).max() for k in range(3))
    gaps = [np.linalg.norm(centres[a] - centres[b]) for a in range(3) for b in range(a + 1, 3)]
    assert min(gaps) > 2 * spread
    three_d = project(embeddings.vectors[:30], method="umap", n_components=3, n_neighbors=50)
    assert three_d.coords.shape == (30, 3) and three_d.params["n_neighbors"] == 29


def test_projection_rejects_unknown_methods(run):
    with pytest.raises(ValueError, match="unknown projection"):
        project(run[0].vectors, method="tsne")


def test_confusion_figure_counts_and_row_normalised(run):
    _, result = run
    counts = confusion_figure(result.metrics)
    heatmap = counts.data[0]
    assert list(heatmap.x) == result.class_names and list(heatmap.y) == result.class_names
    np.testing.assert_array_equal(np.array(heatmap.z), result.metrics.confusion)
    assert "true: %{y}" in heatmap.hovertemplate
    normalised = confusion_figure(result.metrics, normalize=True).data[0]
    np.testing.assert_allclose(np.array(normalised.z).sum(axis=1), 1.0)


@pytest.mark.parametrize("color_by", ["true", "predicted", "correct"])
def test_embedding_figure_points_carry_their_file_path(run, color_by):
    embeddings, result = run
    projection = project(embeddings.vectors, method="pca")
    figure = embedding_figure(projection, embeddings, result, color_by=color_by)
    points = [(trace.name, tuple(row)) for trace in figure.data for row in trace.customdata]
    assert len(points) == len(embeddings)
    assert {row[0] for _, row in points} == set(embeddings.paths)
    for trace in figure.data:
        for row in trace.customdata:
            assert embeddings.paths[int(row[1])] == row[0]


def test_correct_or_wrong_colouring_matches_the_predictions(run):
    embeddings, result = run
    figure = embedding_figure(
        project(embeddings.vectors, method="pca"), embeddings, result, "correct"
    )
    by_name = {trace.name: len(trace.x) for trace in figure.data}
    wrong = int((result.predictions != embeddings.labels[result.evaluated]).sum())
    assert by_name.get("wrong", 0) == wrong
    assert by_name["correct"] == len(result.evaluated) - wrong
    train_only = set(result.train.tolist()) - set(result.evaluated.tolist())
    assert by_name.get("train (not scored)", 0) == len(train_only)


def test_sweep_figure_marks_the_chosen_c(run):
    _, result = run
    figure = sweep_figure(result.sweep)
    assert list(figure.data[0].x) == list(result.sweep.c_values)
    assert figure.layout.xaxis.type == "log"
    assert result.chosen_c in figure.data[1].x


def test_the_sweep_figure_shows_what_the_one_standard_error_rule_chose_from(run):
    _, result = run
    sweep = result.sweep
    assert sweep.rule == "one-standard-error"
    figure = sweep_figure(sweep)
    loss, chosen, bar, accuracy = figure.data
    assert figure.layout.yaxis.title.text.startswith("validation log loss")
    assert list(loss.y) == list(sweep.log_losses)
    assert list(loss.error_y.array) == list(sweep.log_loss_se)
    lowest = int(np.argmin(sweep.log_losses))
    assert bar.y[0] == bar.y[1] == sweep.log_losses[lowest] + sweep.log_loss_se[lowest]
    # the chosen C is the smallest whose loss is under the bar, as the legend says
    position = sweep.c_values.index(sweep.chosen_c)
    assert sweep.log_losses[position] <= bar.y[0] < min(sweep.log_losses[:position] or [np.inf])
    assert chosen.x[0] == sweep.chosen_c and chosen.y[1] == sweep.log_losses[position]
    assert accuracy.yaxis == "y2" and list(accuracy.y) == list(sweep.scores)
    assert "one-standard-error rule" in figure.layout.title.text


def test_a_sweep_chosen_by_accuracy_plots_accuracy(run):
    _, result = run
    sweep = replace(result.sweep, c_rule="best-accuracy")
    figure = sweep_figure(sweep)
    assert figure.layout.yaxis.title.text == "validation accuracy"
    assert list(figure.data[0].y) == list(sweep.scores) and len(figure.data) == 2


@pytest.mark.parametrize("n_components", [2, 3])
def test_the_disagreement_layer_rings_exactly_the_given_points(run, n_components):
    embeddings, result = run
    projection = project(embeddings.vectors, method="pca", n_components=n_components)
    figure = embedding_figure(projection, embeddings, result)
    before = len(figure.data)
    add_disagreement_layer(figure, projection, embeddings, [3, 7])
    assert len(figure.data) == before + 1
    ring = figure.data[-1]
    assert ring.type == ("scatter3d" if n_components == 3 else "scatter")
    assert ring.name == "neighbourhood differs on the map (2)"
    assert ring.marker.symbol == "circle-open"
    assert [tuple(row) for row in ring.customdata] == [
        (embeddings.paths[3], 3),
        (embeddings.paths[7], 7),
    ]
    np.testing.assert_allclose(ring.x, projection.coords[[3, 7], 0])
