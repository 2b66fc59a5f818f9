"""Nearest images and typical images: exact where promised, honest about folds and measures."""

from __future__ import annotations

import numpy as np
import pytest

from probe_core.evaluation.protocols import run_probe
from probe_core.explain.neighbours import NeighbourIndex, row_folds, same_fold
from probe_core.explain.typicality import class_typicality
from tests.test_probe import clustered_embeddings


def unit_rows(n: int, dim: int, seed: int = 0) -> np.ndarray:
    vectors = np.random.default_rng(seed).normal(size=(n, dim))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def brute_force(vectors: np.ndarray, query: np.ndarray, k: int, exclude: int | None = None):
    similarity = vectors.astype(np.float64) @ query.astype(np.float64)
    rows = [r for r in np.argsort(-similarity, kind="stable") if r != exclude]
    return rows[:k], similarity


def test_neighbours_are_the_exact_top_k_by_cosine_most_similar_first():
    vectors = unit_rows(500, 24)
    index = NeighbourIndex(vectors, [f"{i}.png" for i in range(500)], ["a"] * 500)
    for row in (0, 17, 499):
        found = index.nearest_to_row(row, k=8)
        expected, similarity = brute_force(vectors, vectors[row], 8, exclude=row)
        assert [n.index for n in found.neighbours] == expected
        assert found.exact and found.query_index == row
        assert row not in [n.index for n in found.neighbours]  # never its own neighbour
        np.testing.assert_allclose(
            [n.cosine for n in found.neighbours], similarity[expected], rtol=0, atol=1e-6
        )
        cosines = [n.cosine for n in found.neighbours]
        assert cosines == sorted(cosines, reverse=True)


def test_a_new_image_keeps_every_row_and_ties_go_to_the_lower_row():
    vectors = unit_rows(50, 8)
    vectors[[30, 10, 20]] = vectors[5]  # three exact copies of row 5
    index = NeighbourIndex(vectors, [str(i) for i in range(50)], ["a"] * 50)
    found = index.nearest(vectors[5], k=3, query="new.png")
    assert [n.index for n in found.neighbours] == [5, 10, 20]
    assert found.query == "new.png" and found.query_index is None
    assert all(n.same_fold is None for n in found.neighbours)  # not an image of the run


def test_k_larger_than_the_set_gives_every_other_image():
    vectors = unit_rows(5, 4)
    index = NeighbourIndex(vectors, list("abcde"), list("xxyyy"))
    assert len(index.nearest_to_row(2, k=50)) == 4
    with pytest.raises(ValueError, match="k must be"):
        index.nearest_to_row(2, k=0)


@pytest.mark.slow  # pynndescent compiles its numba kernels on first use (a minute or more)
def test_above_the_exact_limit_the_approximate_index_finds_the_same_neighbours():
    embeddings = clustered_embeddings([150, 150, 150], dim=16, spread=0.5)
    vectors = embeddings.vectors
    paths, labels = embeddings.paths, ["x"] * len(vectors)
    exact = NeighbourIndex(vectors, paths, labels)
    approximate = NeighbourIndex(vectors, paths, labels, exact_limit=100)
    assert exact.exact and not approximate.exact
    recall = []
    for row in range(0, 450, 45):
        truth = {n.index for n in exact.nearest_to_row(row, 8).neighbours}
        found = approximate.nearest_to_row(row, 8)
        assert not found.exact and row not in {n.index for n in found.neighbours}
        cosines = [n.cosine for n in found.neighbours]
        assert cosines == sorted(cosines, reverse=True)  # recomputed exactly and ranked
        recall.append(len(truth & {n.index for n in found.neighbours}) / 8)
    assert np.mean(recall) >= 0.9
    new = approximate.nearest(vectors[3] + 0.01, k=8)  # a new image: a search of the index
    assert new.query_index is None and len(new) == 8 and 3 in {n.index for n in new.neighbours}


def test_folds_say_whether_a_neighbour_was_held_out_with_the_image_under_cv():
    embeddings = clustered_embeddings([12, 12, 12], spread=0.9)
    result = run_probe(embeddings, protocol="cv", folds=3, seed=0)
    folds = row_folds(result, len(embeddings))
    assert set(folds) == {"1", "2", "3"}  # every image is scored under cv
    labels = [embeddings.class_names[i] for i in embeddings.labels]
    index = NeighbourIndex(embeddings.vectors, embeddings.paths, labels, folds)
    found = index.nearest_to_row(0, k=35)
    for neighbour in found.neighbours:
        assert neighbour.fold == folds[neighbour.index]
        assert neighbour.same_fold == (folds[neighbour.index] == folds[0])
    assert {n.same_fold for n in found.neighbours} == {True, False}


def test_holdout_rows_are_test_or_train():
    embeddings = clustered_embeddings([20, 20])
    result = run_probe(embeddings, protocol="holdout", seed=0)
    folds = row_folds(result, len(embeddings))
    assert set(folds[result.evaluated]) == {"test"}
    assert set(folds[result.train]) == {"train"}
    assert same_fold("test", "train") is False and same_fold("test", "test") is True
    assert same_fold("", "test") is None and same_fold(None, "train") is None


def test_typical_images_by_margin_are_ranked_by_the_out_of_sample_margin():
    embeddings = clustered_embeddings([15, 15, 15], spread=1.2)
    result = run_probe(embeddings, protocol="cv", folds=3, seed=0)
    typicality = class_typicality(
        embeddings.vectors,
        embeddings.labels,
        embeddings.class_names,
        embeddings.paths,
        evaluated=result.evaluated,
        probabilities=result.probabilities,
        count=4,
    )
    for label, name in enumerate(embeddings.class_names):
        entry = typicality[name]
        assert entry.measure == "margin" and "margin" in entry.describe()
        positions = np.flatnonzero(result.labels == label)
        probabilities = result.probabilities[positions]
        others = np.delete(probabilities, label, axis=1).max(axis=1)
        margins = probabilities[:, label] - others
        expected_best = result.evaluated[positions[np.argsort(-margins, kind="stable")[:4]]]
        assert [image.index for image in entry.typical] == list(expected_best)
        np.testing.assert_allclose(
            [image.score for image in entry.typical], np.sort(margins)[::-1][:4]
        )
        assert entry.atypical[0].score == pytest.approx(margins.min())
        assert not {i.index for i in entry.typical} & {i.index for i in entry.atypical}


def test_typical_images_by_centre_are_ranked_by_cosine_to_the_class_mean():
    embeddings = clustered_embeddings([10, 10])
    typicality = class_typicality(
        embeddings.vectors, embeddings.labels, embeddings.class_names, embeddings.paths, count=3
    )
    rows = np.flatnonzero(embeddings.labels == 1)
    centre = embeddings.vectors[rows].mean(axis=0)
    cosines = embeddings.vectors[rows] @ (centre / np.linalg.norm(centre))
    entry = typicality["class_1"]
    assert entry.measure == "centre" and "centre" in entry.describe()
    assert [image.index for image in entry.typical] == list(rows[np.argsort(-cosines)[:3]])
    assert [image.index for image in entry.atypical] == list(rows[np.argsort(cosines)[:3]])
    with pytest.raises(ValueError, match="margin needs"):
        class_typicality(
            embeddings.vectors,
            embeddings.labels,
            embeddings.class_names,
            embeddings.paths,
            by="margin",
        )
