"""Evaluation protocols: nested cross-validation, holdout, a dataset's own split, and auto."""

from __future__ import annotations

import numpy as np
import pytest

from probe_core.embeddings import Embeddings
from probe_core.evaluation.protocols import AUTO_CV_LIMIT, run_probe
from probe_core.evaluation.splits import cross_validation_folds
from probe_core.probe import LinearProbe, ProbeError
from tests.test_probe import clustered_embeddings


def with_splits(embeddings: Embeddings, splits: list[str]) -> Embeddings:
    embeddings.splits = list(splits)
    embeddings.paths = [f"{s}/{p}" for s, p in zip(splits, embeddings.paths, strict=True)]
    return embeddings


def test_cv_scores_every_image_exactly_once_with_its_fold():
    embeddings = clustered_embeddings([12, 9, 15], spread=1.0)
    result = run_probe(embeddings, protocol="cv", seed=0)
    assert result.protocol.name == "cv" and result.protocol.n_folds == 5
    assert sorted(result.evaluated.tolist()) == list(range(len(embeddings)))
    assert len(result.folds) == len(result.evaluated)
    assert sorted(set(result.folds)) == ["1", "2", "3", "4", "5"]
    assert result.metrics.n_test == len(embeddings)
    assert result.metrics.confusion.sum() == len(embeddings)
    np.testing.assert_array_equal(result.labels, embeddings.labels[result.evaluated])


def test_cv_uses_fewer_folds_when_the_smallest_class_is_smaller():
    result = run_probe(clustered_embeddings([3, 10, 10]), protocol="cv", folds=5, seed=0)
    assert result.protocol.n_folds == 3
    result = run_probe(clustered_embeddings([2, 10]), protocol="cv", folds=5, seed=0)
    assert result.protocol.n_folds == 2


def test_cv_chooses_c_inside_each_training_fold_and_never_on_its_test_fold():
    """Nested CV leak test: sabotaging fold 1's test images must not move fold 1's C.

    Had C been chosen on all images (or on the outer test fold), the sabotage, which
    makes fold 1's test images pure noise with shuffled labels, would change the sweep
    of fold 1. It only changes the sweeps of the other folds, which train on those images.
    """
    embeddings = clustered_embeddings([30, 30, 30], spread=1.3, seed=2)
    honest = run_probe(embeddings, protocol="cv", seed=0, duplicate_threshold=None)
    first_fold = honest.evaluated[np.array(honest.folds) == "1"]

    sabotaged = clustered_embeddings([30, 30, 30], spread=1.3, seed=2)
    rng = np.random.default_rng(5)
    noise = rng.normal(size=(len(first_fold), sabotaged.dim))
    sabotaged.vectors[first_fold] = noise / np.linalg.norm(noise, axis=1, keepdims=True)
    attacked = run_probe(sabotaged, protocol="cv", seed=0, duplicate_threshold=None)

    assert attacked.fold_sweeps[0] == honest.fold_sweeps[0]
    assert any(
        a != h for a, h in zip(attacked.fold_sweeps[1:], honest.fold_sweeps[1:], strict=True)
    )


def test_cv_never_fits_on_the_images_it_scores(monkeypatch):
    """Every probe fit (C sweep included, which happens inside ``fit``) for outer fold k
    sees only fold k's training images; the last fit, for export, sees them all."""
    embeddings = clustered_embeddings([15, 15, 15])
    folds = cross_validation_folds(embeddings.labels, 5, seed=0)
    fitted_rows: list[set[bytes]] = []
    original_fit = LinearProbe.fit

    def spying_fit(self, X, y, *args, **kwargs):
        fitted_rows.append({row.astype(np.float32).tobytes() for row in X})
        return original_fit(self, X, y, *args, **kwargs)

    monkeypatch.setattr(LinearProbe, "fit", spying_fit)
    result = run_probe(embeddings, protocol="cv", seed=0, duplicate_threshold=None)
    assert len(fitted_rows) == len(folds) + 1
    for number, (fold, rows) in enumerate(zip(folds, fitted_rows, strict=False), start=1):
        scored = {embeddings.vectors[i].tobytes() for i in fold.test}
        assert rows.isdisjoint(scored)
        assert len(rows) == len(fold.train)
        np.testing.assert_array_equal(
            np.sort(result.evaluated[np.array(result.folds) == str(number)]), fold.test
        )
    assert len(fitted_rows[-1]) == len(embeddings)


def test_the_exported_cv_probe_is_fitted_on_all_images_with_c_from_cross_validation():
    embeddings = clustered_embeddings([20, 20, 20], spread=1.0)
    result = run_probe(embeddings, protocol="cv", seed=0)
    assert result.train.tolist() == list(range(len(embeddings)))
    assert result.probe.model_.n_features_in_ == embeddings.dim
    assert "fold" in result.sweep.method
    assert len(result.fold_sweeps) == 5


def test_cv_repeats_report_the_spread_between_fold_seeds():
    embeddings = clustered_embeddings([15, 15, 15], spread=1.6, seed=3)
    result = run_probe(embeddings, protocol="cv", repeats=3, seed=0)
    assert result.protocol.n_repeats == 3
    assert len(result.repeat_accuracies) == 3
    assert result.repeat_accuracies[0] == pytest.approx(result.metrics.accuracy.value)
    single = run_probe(embeddings, protocol="cv", seed=0)
    assert single.repeat_accuracies == []
    np.testing.assert_array_equal(single.predictions, result.predictions)


def test_holdout_scores_only_the_held_out_split():
    embeddings = clustered_embeddings([20, 20, 20])
    result = run_probe(embeddings, protocol="holdout", test_size=0.25, seed=0)
    assert result.protocol.name == "holdout"
    assert len(result.evaluated) == 15 and set(result.folds) == {"test"}
    assert set(result.train).isdisjoint(result.evaluated)
    assert result.sweep.method == "validation split"


def test_given_layout_chooses_c_on_val_refits_on_train_and_val_and_scores_test():
    embeddings = clustered_embeddings([18, 18])
    splits = (["train"] * 10 + ["val"] * 4 + ["test"] * 4) * 2
    result = run_probe(with_splits(embeddings, splits), seed=0)
    assert result.protocol.name == "given"
    assert "train/ and test/" in result.protocol.reason
    test = np.flatnonzero(np.array(splits) == "test")
    np.testing.assert_array_equal(result.evaluated, test)
    train_and_val = np.flatnonzero(np.array(splits) != "test")
    np.testing.assert_array_equal(np.sort(result.train), train_and_val)
    assert result.sweep.method == "given validation set"
    assert result.probe.model_.n_features_in_ == embeddings.dim


def test_given_layout_without_val_chooses_c_on_part_of_train():
    embeddings = clustered_embeddings([16, 16])
    splits = (["train"] * 12 + ["test"] * 4) * 2
    result = run_probe(with_splits(embeddings, splits), protocol="given", seed=0)
    assert result.sweep.method in ("validation split", "stratified 5-fold")
    assert len(result.evaluated) == 8


def test_given_layout_with_different_classes_names_the_missing_ones():
    embeddings = clustered_embeddings([10, 10, 10])
    splits = ["train"] * 7 + ["test"] * 3 + ["train"] * 7 + ["test"] * 3 + ["train"] * 10
    with pytest.raises(ProbeError, match=r"test/ has no images of class_2"):
        run_probe(with_splits(embeddings, splits), seed=0)


def test_given_protocol_without_the_layout_is_a_clear_error():
    with pytest.raises(ProbeError, match="train/ and test/"):
        run_probe(clustered_embeddings([10, 10]), protocol="given")


def test_auto_picks_cv_for_small_folders_and_holdout_for_large_ones(monkeypatch):
    small = run_probe(clustered_embeddings([10, 10]), seed=0)
    assert small.protocol.name == "cv" and "up to" in small.protocol.reason
    monkeypatch.setattr("probe_core.evaluation.protocols.AUTO_CV_LIMIT", 15)
    large = run_probe(clustered_embeddings([10, 10]), seed=0)
    assert large.protocol.name == "holdout" and "more than" in large.protocol.reason
    assert AUTO_CV_LIMIT == 5000


def test_unknown_protocol_is_a_clear_error():
    with pytest.raises(ProbeError, match="unknown protocol"):
        run_probe(clustered_embeddings([10, 10]), protocol="bootstrap")


def test_duplicates_never_straddle_two_folds_or_train_and_test():
    embeddings = clustered_embeddings([20, 20, 20], spread=1.0)
    copies = [(0, 1), (2, 3), (20, 21), (40, 41), (42, 43), (44, 45)]
    for original, copy in copies:
        embeddings.vectors[copy] = embeddings.vectors[original]
    cv = run_probe(embeddings, protocol="cv", seed=0)
    fold_of = dict(zip(cv.evaluated.tolist(), cv.folds, strict=True))
    for original, copy in copies:
        assert fold_of[original] == fold_of[copy]
    assert len(cv.duplicates.groups) == len(copies)
    assert any("duplicate" in message for message in cv.messages)
    for seed in range(4):
        holdout = run_probe(embeddings, protocol="holdout", seed=seed)
        test = set(holdout.evaluated.tolist())
        for original, copy in copies:
            assert (original in test) == (copy in test)


def test_identical_files_group_by_their_bytes():
    embeddings = clustered_embeddings([10, 10])
    embeddings.sha256 = [f"digest {i}" for i in range(20)]
    embeddings.sha256[15] = embeddings.sha256[2]  # same bytes, different label
    result = run_probe(embeddings, protocol="cv", seed=0)
    assert len(result.duplicates.conflicts) == 1
    assert any("(1 label conflict)" in message for message in result.messages)


def test_duplicates_across_given_train_and_test_are_reported_as_leakage():
    embeddings = clustered_embeddings([12, 12])
    splits = (["train"] * 9 + ["test"] * 3) * 2
    embeddings.vectors[10] = embeddings.vectors[0]  # a test image copied from train
    result = run_probe(with_splits(embeddings, splits), seed=0)
    assert len(result.duplicates.leaks) == 1
    assert 10 in result.evaluated  # reported, not moved
    assert any(
        message.startswith(
            "leakage: 1 duplicate group (2 images) appears in both train/ and test/;"
            " it was not moved"
        )
        for message in result.messages
    )


def test_one_duplicate_group_reads_in_the_singular():
    embeddings = clustered_embeddings([10, 10])
    embeddings.vectors[1] = embeddings.vectors[0]
    embeddings.sha256 = [f"digest {i}" for i in range(20)]
    embeddings.sha256[15] = embeddings.sha256[2]  # same bytes, different label
    result = run_probe(embeddings, protocol="auto", seed=0)
    assert "2 groups of duplicate images (4 images) were each kept in one fold" in result.messages
    assert (
        "1 duplicate group carries different labels (1 label conflict): see duplicates.csv"
        in result.messages
    )
    assert result.protocol.reason == "20 images (up to 5,000): every image can be scored"
    holdout = run_probe(clustered_embeddings([2, 2]), protocol="holdout", seed=0)
    assert holdout.protocol.scored_sentence(1) == (
        "1 image of the held-out test split was scored by a probe that never saw it."
    )


def test_an_edge_c_extends_the_grid_towards_the_clip_range():
    # Labels that are pure noise: the most regularised C wins, at the bottom edge.
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(80, 8))
    embeddings = Embeddings(
        vectors=(vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32),
        labels=np.repeat([0, 1], 40),
        paths=[f"{i}.png" for i in range(80)],
        class_names=["a", "b"],
        encoder_id="test",
    )
    probe = LinearProbe(c_grid=(1.0, 10.0, 100.0), seed=0)
    result = run_probe(embeddings, protocol="holdout", probe=probe, seed=0)
    sweep = result.sweep
    assert sweep.extended
    assert min(sweep.c_values) < 1.0
    assert sweep.chosen_c != min(sweep.c_values) or min(sweep.c_values) == pytest.approx(1e-6)
    # Separable classes: larger C keeps lowering the validation loss, up to the 1e6 limit.
    separable = clustered_embeddings([20, 20], spread=0.2)
    probe = LinearProbe(c_grid=(1e-3, 1e-2, 1e-1), seed=0)
    sweep = run_probe(separable, protocol="holdout", probe=probe, seed=0).sweep
    assert sweep.extended and max(sweep.c_values) > 1e-1
    assert max(sweep.c_values) <= 1e6 * (1 + 1e-9)


def test_a_fixed_c_is_used_in_every_fold():
    result = run_probe(clustered_embeddings([10, 10]), probe=LinearProbe(C=3.0), protocol="cv")
    assert {sweep.chosen_c for sweep in result.fold_sweeps} == {3.0}
    assert result.chosen_c == 3.0


def test_results_are_reproducible_under_every_protocol():
    embeddings = clustered_embeddings([14, 14, 14], spread=1.2)
    for protocol in ("cv", "holdout"):
        first = run_probe(embeddings, protocol=protocol, seed=7)
        second = run_probe(embeddings, protocol=protocol, seed=7)
        np.testing.assert_array_equal(first.evaluated, second.evaluated)
        np.testing.assert_array_equal(first.probabilities, second.probabilities)
        assert first.metrics.accuracy == second.metrics.accuracy
