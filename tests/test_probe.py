"""The probe: stratified split, C chosen without the test set, reproducible, honest when tiny."""

from __future__ import annotations

import numpy as np
import pytest

from probe_core.embeddings import Embeddings
from probe_core.evaluation.protocols import run_probe
from probe_core.evaluation.splits import Split, stratified_split
from probe_core.probe import (
    DEFAULT_C_GRID,
    DEFAULT_REFIT_TOL,
    SKLEARN_SOLVER,
    LinearProbe,
    ProbeError,
)


def clustered_embeddings(counts: list[int], dim: int = 16, spread: float = 0.6, seed: int = 0):
    """Unit-norm points around one random centre per class."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(len(counts), dim))
    vectors, labels = [], []
    for label, count in enumerate(counts):
        vectors.append(centres[label] + spread * rng.normal(size=(count, dim)))
        labels += [label] * count
    vectors = np.concatenate(vectors)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    names = [f"class_{i}" for i in range(len(counts))]
    return Embeddings(
        vectors=vectors.astype(np.float32),
        labels=np.array(labels),
        paths=[f"{names[y]}/{i}.png" for i, y in enumerate(labels)],
        class_names=names,
        encoder_id="test",
    )


def test_c_grid_spans_at_least_1e_minus_3_to_1e3():
    assert min(DEFAULT_C_GRID) <= 1e-3 and max(DEFAULT_C_GRID) >= 1e3
    ratios = np.diff(np.log10(DEFAULT_C_GRID))
    assert np.allclose(ratios, ratios[0])  # a log grid


def test_split_is_stratified_and_seeded():
    labels = np.array([0] * 40 + [1] * 20 + [2] * 12)
    split = stratified_split(labels, test_size=0.25, seed=3)
    assert set(split.train).isdisjoint(split.test)
    assert len(split.train) + len(split.test) == len(labels)
    test_counts = np.bincount(labels[split.test])
    assert test_counts.tolist() == [10, 5, 3]
    again = stratified_split(labels, test_size=0.25, seed=3)
    np.testing.assert_array_equal(split.test, again.test)
    other = stratified_split(labels, test_size=0.25, seed=4)
    assert not np.array_equal(split.test, other.test)


def test_probe_separates_clean_clusters():
    result = run_probe(clustered_embeddings([30, 30, 30]), protocol="holdout", seed=0)
    assert result.metrics.accuracy.value > 0.9
    assert result.chosen_c in result.sweep.c_values
    assert set(DEFAULT_C_GRID) <= set(result.sweep.c_values)
    assert result.sweep.method == "validation split"
    assert len(result.sweep.scores) == len(result.sweep.c_values)


def test_choosing_c_never_looks_at_the_test_set():
    """Sabotage the test rows; the sweep and the chosen C must not move, only the test score."""
    embeddings = clustered_embeddings([40, 40, 40], spread=1.2, seed=1)
    split = stratified_split(embeddings.labels, test_size=0.3, seed=0)
    honest = run_probe(embeddings, split=split, seed=0)

    sabotaged = clustered_embeddings([40, 40, 40], spread=1.2, seed=1)
    rng = np.random.default_rng(7)
    noise = rng.normal(size=(len(split.test), sabotaged.vectors.shape[1]))
    sabotaged.vectors[split.test] = noise / np.linalg.norm(noise, axis=1, keepdims=True)
    sabotaged.labels[split.test] = rng.permutation(sabotaged.labels[split.test])
    attacked = run_probe(sabotaged, split=split, seed=0)

    assert attacked.sweep == honest.sweep
    assert attacked.chosen_c == honest.chosen_c
    assert attacked.metrics.accuracy.value < honest.metrics.accuracy.value - 0.3


def test_the_probe_is_fitted_on_train_rows_only(monkeypatch):
    from sklearn.linear_model import LogisticRegression

    embeddings = clustered_embeddings([20, 20, 20])
    split = stratified_split(embeddings.labels, seed=0)
    test_rows = {embeddings.vectors[i].tobytes() for i in split.test}
    seen = []
    original_fit = LogisticRegression.fit

    def spying_fit(self, X, y, *args, **kwargs):
        seen.extend(row.astype(np.float32).tobytes() for row in X)
        return original_fit(self, X, y, *args, **kwargs)

    monkeypatch.setattr(LogisticRegression, "fit", spying_fit)
    run_probe(embeddings, split=split, seed=0)
    assert seen and test_rows.isdisjoint(seen)


def test_results_are_reproducible_with_a_fixed_seed():
    embeddings = clustered_embeddings([25, 25, 25], spread=1.0)
    first, second = run_probe(embeddings, seed=5), run_probe(embeddings, seed=5)
    np.testing.assert_array_equal(first.evaluated, second.evaluated)
    assert first.chosen_c == second.chosen_c
    np.testing.assert_array_equal(first.probabilities, second.probabilities)
    assert first.metrics.accuracy == second.metrics.accuracy


def test_after_choosing_c_the_probe_is_refit_on_all_training_data():
    embeddings = clustered_embeddings([20, 20])
    result = run_probe(embeddings, seed=0)
    fitted = result.probe.model_
    assert result.chosen_c == fitted.C
    assert fitted.n_features_in_ == 16
    from sklearn.linear_model import LogisticRegression

    direct = LogisticRegression(
        C=result.chosen_c, solver=SKLEARN_SOLVER, tol=DEFAULT_REFIT_TOL, max_iter=1000
    )
    train = result.train
    direct.fit(embeddings.vectors[train].astype(np.float64), embeddings.labels[train])
    np.testing.assert_allclose(fitted.coef_, direct.coef_, atol=1e-6)


def test_small_folders_choose_c_by_stratified_k_fold():
    result = run_probe(clustered_embeddings([5, 5, 5]), seed=0)
    assert "fold" in result.sweep.method
    assert len(result.evaluated) >= 3


def test_a_fixed_c_skips_the_sweep():
    result = run_probe(clustered_embeddings([10, 10]), probe=LinearProbe(C=2.0), seed=0)
    assert result.chosen_c == 2.0 and result.sweep.method == "fixed"


def test_a_class_with_fewer_than_two_images_is_reported_and_excluded():
    embeddings = clustered_embeddings([12, 12, 1])
    result = run_probe(embeddings, seed=0)
    assert result.class_names == ["class_0", "class_1"]
    assert result.excluded_classes == ["class_2"]
    assert any("class_2" in m and "only 1 usable image" in m for m in result.messages)
    lonely = embeddings.paths.index("class_2/24.png")
    assert lonely not in result.train and lonely not in result.evaluated
    assert result.probabilities.shape[1] == 2


def test_a_single_class_is_a_clear_error():
    with pytest.raises(ProbeError, match="at least two classes"):
        run_probe(clustered_embeddings([10]))
    with pytest.raises(ProbeError, match="at least two classes"):
        run_probe(clustered_embeddings([10, 1]))


def test_predict_proba_rows_sum_to_one_and_follow_sklearn_api():
    embeddings = clustered_embeddings([15, 15, 15])
    probe = LinearProbe(seed=0).fit(embeddings.vectors, embeddings.labels)
    probabilities = probe.predict_proba(embeddings.vectors)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0)
    assert probe.score(embeddings.vectors, embeddings.labels) > 0.9
    assert probe.coef_.shape == (3, 16) and probe.intercept_.shape == (3,)


def test_given_split_indices_are_respected():
    embeddings = clustered_embeddings([10, 10])
    split = Split(train=np.arange(0, 20, 2), test=np.arange(1, 20, 2))
    result = run_probe(embeddings, split=split)
    np.testing.assert_array_equal(result.evaluated, split.test)
