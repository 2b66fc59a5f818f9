"""Map quality: trustworthiness and k-NN label agreement in the full embedding and on the map."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
from sklearn.decomposition import PCA
from sklearn.manifold import trustworthiness

from probe_core.evaluation.map_quality import map_quality, projection_table
from tests.test_probe import clustered_embeddings


def brute_force_majorities(distances: np.ndarray, labels: np.ndarray, k: int) -> list:
    """Each point's majority label among its k nearest others, None on a tie."""
    distances = distances.copy()
    np.fill_diagonal(distances, np.inf)
    majorities = []
    for row in distances:
        votes = Counter(labels[np.argsort(row)[:k]].tolist()).most_common()
        tied = len(votes) > 1 and votes[0][1] == votes[1][1]
        majorities.append(None if tied else votes[0][0])
    return majorities


def noisy_map(seed: int = 0):
    """Overlapping clusters and a 2-D PCA map of them, which loses some structure."""
    embeddings = clustered_embeddings([25, 25, 25], dim=16, spread=1.2, seed=seed)
    coords = PCA(n_components=2, random_state=0).fit_transform(embeddings.vectors)
    return embeddings.vectors, coords, embeddings.labels


def test_trustworthiness_is_scikit_learns_with_cosine_in_the_full_embedding():
    vectors, coords, labels = noisy_map()
    quality = map_quality(vectors, coords, labels, k=10)
    expected = trustworthiness(vectors, coords, n_neighbors=10, metric="cosine")
    assert quality.trustworthiness == pytest.approx(expected)
    assert quality.k == 10


@pytest.mark.parametrize("k", [4, 7])  # an even k can tie, an odd one only with 3+ classes
def test_knn_agreement_matches_a_brute_force_count(k):
    vectors, coords, labels = noisy_map(seed=1)
    quality = map_quality(vectors, coords, labels, k=k)

    cosine = 1 - vectors @ vectors.T
    euclidean = np.linalg.norm(coords[:, None] - coords[None], axis=-1)
    full = brute_force_majorities(cosine, labels, k)
    on_map = brute_force_majorities(euclidean, labels, k)
    agrees_full = np.array([m == y for m, y in zip(full, labels, strict=True)])
    agrees_map = np.array([m == y for m, y in zip(on_map, labels, strict=True)])

    assert quality.knn_agreement_full == pytest.approx(agrees_full.mean())
    assert quality.knn_agreement_map == pytest.approx(agrees_map.mean())
    np.testing.assert_array_equal(quality.agrees_full, agrees_full)
    np.testing.assert_array_equal(quality.agrees_map, agrees_map)
    np.testing.assert_array_equal(
        quality.disagrees, [f != m for f, m in zip(full, on_map, strict=True)]
    )
    assert quality.mixed_only_in_map == pytest.approx(np.mean(agrees_full & ~agrees_map))
    # Not a vacuous check: the two neighbourhoods differ for some points.
    assert quality.disagrees.any() and not quality.agrees_full.all()
    if k == 4:
        assert None in full and None in on_map  # ties occur and are handled alike


def test_a_tied_neighbourhood_counts_as_disagreeing():
    # On a line: point 1's two nearest others are 0 (class 0) and 2 (class 1).
    coords = np.array([[0.0, 0], [1, 0], [2, 0], [3, 0], [10, 0], [11, 0]])
    vectors = np.c_[coords, np.ones(6)]
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    labels = np.array([0, 0, 1, 1, 0, 1])
    quality = map_quality(vectors, coords, labels, k=2)
    assert not quality.agrees_map[1]


def test_a_faithful_map_of_separated_clusters_scores_high():
    embeddings = clustered_embeddings([30, 30, 30], dim=3, spread=0.1, seed=0)
    # The vectors themselves as 3-D coordinates: euclidean order is cosine order on the sphere.
    exact = map_quality(embeddings.vectors, embeddings.vectors, embeddings.labels)
    assert exact.trustworthiness == pytest.approx(1.0)
    assert exact.knn_agreement_map == exact.knn_agreement_full == 1.0
    assert not exact.disagrees.any()

    separated = clustered_embeddings([30, 30, 30], dim=16, spread=0.15, seed=3)
    coords = PCA(n_components=2, random_state=0).fit_transform(separated.vectors)
    quality = map_quality(separated.vectors, coords, separated.labels)
    assert quality.trustworthiness > 0.9
    assert quality.knn_agreement_map == quality.knn_agreement_full == 1.0
    assert quality.reading() == (
        f"the map keeps {quality.trustworthiness:.0%} of neighbourhoods;"
        " 0% of points look mixed in 2-D but are separable in full dimension"
    )


def test_a_random_map_scores_low_and_says_so():
    embeddings = clustered_embeddings([30, 30, 30], dim=16, spread=0.15, seed=3)
    coords = np.random.default_rng(0).normal(size=(90, 2))
    quality = map_quality(embeddings.vectors, coords, embeddings.labels)
    assert quality.trustworthiness < 0.7
    assert quality.knn_agreement_map < 0.6 and quality.knn_agreement_full == 1.0
    assert quality.mixed_only_in_map > 0.4
    assert f"{quality.mixed_only_in_map:.0%} of points look mixed in 2-D" in quality.reading()


def test_k_is_capped_below_half_the_points():
    vectors, coords, labels = noisy_map()
    quality = map_quality(vectors[:11], coords[:11], labels[:11], k=15)
    assert quality.k == 5
    expected = trustworthiness(vectors[:11], coords[:11], n_neighbors=5, metric="cosine")
    assert quality.trustworthiness == pytest.approx(expected)
    with pytest.raises(ValueError, match="at least 3 points"):
        map_quality(vectors[:2], coords[:2], labels[:2])


def test_json_summary_has_exactly_the_documented_keys():
    vectors, coords, labels = noisy_map()
    summary = map_quality(vectors, coords, labels).to_json_dict()
    assert list(summary) == ["trustworthiness", "knn_agreement_full", "knn_agreement_map", "k"]
    assert json.loads(json.dumps(summary)) == summary


def test_projection_table_columns_for_2d_and_3d_maps():
    paths, names = ["a/1.png", "b/2.png"], ["a", "b"]
    flat = projection_table(paths, names, np.array([[0.0, 1.0], [2.0, 3.0]]))
    assert list(flat.columns) == ["path", "label", "x", "y"]
    assert flat["y"].tolist() == [1.0, 3.0]
    deep = projection_table(paths, names, np.array([[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]))
    assert list(deep.columns) == ["path", "label", "x", "y", "z"]
    assert deep["z"].tolist() == [2.0, 5.0]
    with pytest.raises(ValueError):
        projection_table(paths, names, np.zeros((3, 2)))
