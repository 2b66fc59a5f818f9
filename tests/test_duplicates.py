"""Duplicate and near-duplicate grouping: what links images, and what the groups report."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.model_selection import StratifiedGroupKFold

from probe_core.evaluation import duplicates as duplicates_module
from probe_core.evaluation.duplicates import (
    DEFAULT_DUPLICATE_COSINE,
    duplicates_table,
    find_duplicates,
    summary,
)

DIM = 32


def orthonormal(n: int, seed: int = 0) -> np.ndarray:
    """n mutually orthogonal unit vectors (cosine 0 between any two), dense in every axis."""
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((DIM, DIM)))
    return q[:, :n].T.astype(np.float32)


def at_cosine(base: np.ndarray, other: np.ndarray, cosine: float) -> np.ndarray:
    """A unit vector with the given cosine to `base`, turned towards the orthogonal `other`."""
    return (cosine * base + np.sqrt(1 - cosine**2) * other).astype(np.float32)


def distinct_digests(n: int) -> list[str]:
    return [f"{i:064x}" for i in range(n)]


def test_identical_digests_group_even_when_vectors_differ():
    vectors = orthonormal(3)
    digests = [b"same-bytes", b"other", b"same-bytes"]  # embed.py hands over raw sha256 bytes

    result = find_duplicates(vectors, digests, np.array([0, 0, 0]))

    assert [group.members for group in result.groups] == [(0, 2)]
    assert result.groups[0].identical_bytes
    assert result.group_of[0] == result.group_of[2] != result.group_of[1]


@pytest.mark.parametrize(
    ("cosine", "grouped"),
    [(DEFAULT_DUPLICATE_COSINE + 5e-4, True), (DEFAULT_DUPLICATE_COSINE - 5e-4, False)],
)
def test_cosine_at_or_above_threshold_groups_and_just_below_does_not(cosine, grouped):
    a, b, c = orthonormal(3)
    vectors = np.stack([a, at_cosine(a, b, cosine), c])

    result = find_duplicates(vectors, distinct_digests(3), np.array([0, 0, 1]))

    assert result.has_groups is grouped
    if grouped:
        assert result.groups[0].members == (0, 1)
        assert not result.groups[0].identical_bytes


def test_links_are_transitive():
    a, b, c = orthonormal(3)
    step = np.arccos(0.996)
    chain = np.stack(
        [a, np.cos(step) * a + np.sin(step) * b, np.cos(2 * step) * a + np.sin(2 * step) * b]
    ).astype(np.float32)
    vectors = np.vstack([chain, c])
    assert chain[0] @ chain[2] < DEFAULT_DUPLICATE_COSINE  # the ends are not similar enough

    result = find_duplicates(vectors, distinct_digests(4), np.zeros(4, dtype=int))

    assert [group.members for group in result.groups] == [(0, 1, 2)]


def test_digest_and_cosine_links_join_into_one_group():
    a, b = orthonormal(2)
    vectors = np.stack([a, at_cosine(a, b, 0.999), b])
    digests = ["x", "y", "x"]  # 0~1 by cosine, 0~2 by bytes

    result = find_duplicates(vectors, digests, np.zeros(3, dtype=int))

    assert [group.members for group in result.groups] == [(0, 1, 2)]
    assert not result.groups[0].identical_bytes


def test_threshold_is_settable():
    a, b = orthonormal(2)
    vectors = np.stack([a, at_cosine(a, b, 0.98)])
    labels = np.zeros(2, dtype=int)

    strict = find_duplicates(vectors, distinct_digests(2), labels)
    loose = find_duplicates(vectors, distinct_digests(2), labels, threshold=0.97)

    assert not strict.has_groups
    assert loose.has_groups and loose.threshold == 0.97
    assert strict.threshold == DEFAULT_DUPLICATE_COSINE


def test_every_image_gets_a_group_id_and_groups_come_largest_first():
    vectors = orthonormal(7)
    digests = ["p", "q", "r", "q", "s", "r", "r"]

    result = find_duplicates(vectors, digests, np.zeros(7, dtype=int))

    assert [group.members for group in result.groups] == [(2, 5, 6), (1, 3)]
    assert [group.id for group in result.groups] == [0, 1]
    assert result.group_of.shape == (7,)
    assert len(np.unique(result.group_of)) == 4  # two groups and the singletons 0 and 4
    assert result.group_of[0] != result.group_of[4]
    assert result.n_duplicate_images == 5


def test_groups_with_different_labels_are_label_conflicts():
    vectors = orthonormal(4)
    digests = ["a", "a", "b", "b"]
    labels = np.array([0, 1, 2, 2])

    result = find_duplicates(vectors, digests, labels)

    assert [group.members for group in result.conflicts] == [(0, 1)]
    assert result.groups[0].labels == (0, 1)
    assert not result.groups[1].label_conflict


def test_copies_across_the_datasets_train_and_test_are_leaks():
    vectors = orthonormal(8)
    digests = ["a", "a", "b", "b", "c", "c", "d", "d"]
    splits = ["train", "test", "train", "train", "val", "test", "test", ""]

    result = find_duplicates(vectors, digests, np.zeros(8, dtype=int), splits=splits)

    leaking = {group.members for group in result.leaks}
    assert leaking == {(0, 1), (4, 5)}  # a val copy of a test image leaks too
    assert {group.members for group in result.groups} - leaking == {(2, 3), (6, 7)}


def test_without_splits_nothing_leaks():
    result = find_duplicates(orthonormal(2), ["a", "a"], np.zeros(2, dtype=int))

    assert result.has_groups and not result.leaks


def test_group_of_keeps_every_group_inside_one_fold_of_stratified_group_kfold():
    n_per_class, n_classes = 30, 2
    n = n_per_class * n_classes
    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((n, DIM)).astype(np.float32)
    labels = np.repeat(np.arange(n_classes), n_per_class)
    # Near-copies of the first ten images in each class, placed among the others.
    for source in [*range(10), *range(n_per_class, n_per_class + 10)]:
        vectors[source + 15] = vectors[source] + 0.001 * rng.standard_normal(DIM)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)

    result = find_duplicates(vectors, distinct_digests(n), labels)
    assert len(result.groups) == 20

    folds = StratifiedGroupKFold(n_splits=4, shuffle=True, random_state=0)
    for train, test in folds.split(vectors, labels, groups=result.group_of):
        assert not set(result.group_of[train]) & set(result.group_of[test])


def test_blockwise_search_finds_the_same_groups_as_one_block(monkeypatch):
    rng = np.random.default_rng(2)
    vectors = rng.standard_normal((50, DIM)).astype(np.float32)
    vectors[25:35] = vectors[:10] + 0.001 * rng.standard_normal((10, DIM))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    labels = np.zeros(50, dtype=int)

    whole = find_duplicates(vectors, distinct_digests(50), labels)
    monkeypatch.setattr(duplicates_module, "BLOCK_BYTES", 4 * 50 * 3)  # three rows per block
    blockwise = find_duplicates(vectors, distinct_digests(50), labels)

    assert len(whole.groups) == 10
    assert blockwise.groups == whole.groups
    np.testing.assert_array_equal(blockwise.group_of, whole.group_of)


@pytest.mark.slow  # pynndescent compiles its numba kernels on first use (about a minute)
def test_approximate_search_finds_the_same_groups_as_exact_search():
    rng = np.random.default_rng(3)
    n = 600
    vectors = rng.standard_normal((n, 64)).astype(np.float32)
    vectors[300:340] = vectors[:40] + 0.005 * rng.standard_normal((40, 64))
    vectors[340:350] = vectors[:10] + 0.005 * rng.standard_normal((10, 64))  # triples
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    labels = rng.integers(0, 3, n)

    exact = find_duplicates(vectors, distinct_digests(n), labels)
    approximate = find_duplicates(vectors, distinct_digests(n), labels, exact_limit=100)

    assert exact.exact_search and not approximate.exact_search
    assert len(exact.groups) == 40
    assert approximate.groups == exact.groups
    np.testing.assert_array_equal(approximate.group_of, exact.group_of)


def test_duplicates_table_lists_each_member_with_its_class_name():
    result = find_duplicates(orthonormal(4), ["a", "b", "a", "c"], np.array([0, 1, 1, 0]))

    table = duplicates_table(result, ["x/0.png", "y/1.png", "y/2.png", "x/3.png"], ["x", "y"])

    assert list(table.columns) == ["group", "path", "label"]
    assert table.to_dict("records") == [
        {"group": 0, "path": "x/0.png", "label": "x"},
        {"group": 0, "path": "y/2.png", "label": "y"},
    ]


def test_duplicates_table_is_empty_with_its_columns_when_there_are_no_duplicates():
    result = find_duplicates(orthonormal(2), ["a", "b"], np.array([0, 1]))

    table = duplicates_table(result, ["a.png", "b.png"], ["x", "y"])

    assert table.empty and list(table.columns) == ["group", "path", "label"]


def test_summary_counts_groups_images_conflicts_and_leaks():
    digests = ["a", "a", "b", "b", "b", "c"]
    labels = np.array([0, 1, 0, 0, 0, 0])
    splits = ["train", "test", "train", "train", "train", "test"]

    result = find_duplicates(orthonormal(6), digests, labels, splits=splits)
    unique = find_duplicates(orthonormal(2), ["a", "b"], np.zeros(2, dtype=int))

    assert summary(result) == (
        "2 duplicate groups (5 images); 1 label conflict; 1 group leaks across train/test"
    )
    assert summary(unique) == "no duplicates"


@pytest.mark.parametrize("n", [0, 1])
def test_zero_or_one_image_has_no_duplicates(n):
    result = find_duplicates(orthonormal(n), distinct_digests(n), np.zeros(n, dtype=int))

    assert not result.has_groups
    assert result.group_of.shape == (n,)
    assert summary(result) == "no duplicates"


@pytest.mark.parametrize(
    ("n_digests", "n_labels", "splits", "message"),
    [
        (2, 3, None, "2 digests"),
        (3, 2, None, "2 labels"),
        (3, 3, ["train", "test"], "2 splits"),
        (3, 3, ["train", "test", "holdout"], "unknown split"),
    ],
)
def test_mismatched_or_unknown_inputs_raise_value_error(n_digests, n_labels, splits, message):
    with pytest.raises(ValueError, match=message):
        find_duplicates(
            orthonormal(3),
            distinct_digests(n_digests),
            np.zeros(n_labels, dtype=int),
            splits=splits,
        )


def test_vectors_that_are_not_unit_norm_or_not_a_matrix_raise_value_error():
    with pytest.raises(ValueError, match="L2-normalised"):
        find_duplicates(2 * orthonormal(2), distinct_digests(2), np.zeros(2, dtype=int))
    with pytest.raises(ValueError, match="2-D"):
        find_duplicates(orthonormal(1)[0], distinct_digests(DIM), np.zeros(DIM, dtype=int))


def test_paths_must_match_the_images():
    result = find_duplicates(orthonormal(2), ["a", "a"], np.zeros(2, dtype=int))

    with pytest.raises(ValueError, match="1 paths for 2 images"):
        duplicates_table(result, ["only.png"], ["x"])
