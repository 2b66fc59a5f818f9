"""Choosing C cheaply (coarse-to-fine search, solver tolerance) and the torch solver."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

from probe_core import probe as probe_module
from probe_core.dataset import scan_folder
from probe_core.embed import extract_embeddings
from probe_core.evaluation.protocols import run_probe
from probe_core.probe import (
    COARSE_TO_FINE_MIN_IMAGES,
    DEFAULT_C_GRID,
    DEFAULT_TOL,
    CLattice,
    LinearProbe,
    ProbeWeights,
)
from probe_core.torch_probe import TorchLogisticRegression
from tests.conftest import DEMO_DIR
from tests.test_probe import clustered_embeddings


def clustered(counts: list[int], dim: int, spread: float, seed: int):
    embeddings = clustered_embeddings(counts, dim=dim, spread=spread, seed=seed)
    return embeddings.vectors, embeddings.labels


def realistic(n: int, dim: int = 128, n_classes: int = 5, seed: int = 0):
    """Unit vectors like image embeddings: a large shared direction, classes overlapping in
    a low-rank subspace with a decaying spectrum (accuracy about 0.9, best C inside)."""
    rng = np.random.default_rng(seed)
    rank = 24
    mean = rng.normal(size=dim)
    basis = np.linalg.qr(rng.normal(size=(dim, rank)))[0]
    scale = 0.3 / np.sqrt(np.arange(1, rank + 1))
    labels = np.arange(n) % n_classes
    latent = rng.normal(size=(n_classes, rank))[labels] + 1.6 * rng.normal(size=(n, rank))
    vectors = 1.5 * mean / np.linalg.norm(mean) + (latent * scale) @ basis.T
    vectors += 0.3 * rng.normal(size=(n, dim)) / np.sqrt(dim)
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32), labels


def sklearn_objective(coef, intercept, X, y, C: float) -> float:
    """scikit-learn's L2 logistic objective divided by C * n: mean cross-entropy + the
    penalty ||coef||^2 / (2 C n), the intercept unpenalised; one row = binomial."""
    logits = np.asarray(X, dtype=np.float64) @ np.asarray(coef, dtype=np.float64).T + intercept
    if logits.shape[1] == 1:
        logits = np.hstack([np.zeros_like(logits), logits])
    logits -= logits.max(axis=1, keepdims=True)
    log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    columns = np.searchsorted(np.unique(y), y)
    cross_entropy = -np.mean(log_p[np.arange(len(y)), columns])
    return float(cross_entropy + np.sum(np.square(coef)) / (2 * C * len(y)))


@pytest.fixture(scope="module")
def demo(encoder):
    """The bundled demo folder (144 real images, 6 classes) through the bundled encoder."""
    embeddings = extract_embeddings(scan_folder(DEMO_DIR), encoder)
    return embeddings.vectors, embeddings.labels


@pytest.fixture(scope="module")
def demo_split(demo):
    X, y = demo
    train, test = train_test_split(np.arange(len(y)), test_size=0.25, stratify=y, random_state=0)
    return X[train], y[train], X[test], y[test]


# ------------------------------------------------------------------- coarse-to-fine search

SEARCH_CASES = {
    # name: (data, grid); the grid's curves were checked to have one best C
    "separable, best past the top of the grid": (clustered([40] * 3, 16, 0.2, 0), None),
    "overlapping, best inside (3.16)": (clustered([100] * 3, 32, 2.5, 4), None),
    "overlapping, best inside (1)": (clustered([100] * 3, 32, 2.5, 6), None),
    "best just past the bottom of the grid": (clustered([120] * 3, 32, 2.5, 7), None),
    "best far above a low grid": (
        clustered([100] * 3, 32, 2.5, 4),
        tuple(np.logspace(-6, -3, 7)),
    ),
    "best far below a high grid": (clustered([100] * 3, 32, 2.5, 4), tuple(np.logspace(2, 5, 7))),
}


@pytest.mark.parametrize("case", list(SEARCH_CASES))
def test_coarse_to_fine_chooses_the_same_c_as_the_full_grid(case):
    (X, y), grid = SEARCH_CASES[case]
    options = {"c_grid": grid} if grid is not None else {}
    full = LinearProbe(search="grid", **options).fit(X, y).sweep_
    fast = LinearProbe(search="coarse-to-fine", **options).fit(X, y).sweep_

    assert fast.chosen_c == pytest.approx(full.chosen_c)
    assert fast.extended == full.extended
    assert len(fast.c_values) < len(full.c_values)
    # Every C it measured is reported, ascending, each with its score and log loss, and
    # lies on the grid or on its extension by the grid's own step.
    assert list(fast.c_values) == sorted(fast.c_values)
    assert len(fast.scores) == len(fast.log_losses) == len(fast.c_values)
    lattice = CLattice.around(sorted(grid or DEFAULT_C_GRID), (1e-6, 1e6))
    on_lattice = [lattice.c(p) for p in range(lattice.low, lattice.high + 1)]
    assert all(np.isclose(on_lattice, c).any() for c in fast.c_values)
    # It found the lowest validation log loss too (the one-standard-error bar is measured
    # from it), up to where the warm-started fits stopped (another path over C, another stop).
    assert min(fast.log_losses) == pytest.approx(min(full.log_losses), rel=1e-2, abs=1e-3)


def test_an_edge_best_extends_the_search_up_to_the_clip_limits():
    X, y = clustered([40] * 3, 16, 0.2, 0)
    low_grid = tuple(np.logspace(-6, -2, 9))  # separable data wants the largest C
    sweep = LinearProbe(c_grid=low_grid, search="coarse-to-fine").fit(X, y).sweep_
    assert sweep.extended and sweep.chosen_c > 1e-2
    assert np.diff(np.log10(sweep.c_values)).max() == pytest.approx(1.0)  # decade steps
    assert max(sweep.c_values) <= 1e6 * (1 + 1e-9)


def test_coarse_to_fine_runs_fewer_fits_than_the_grid(monkeypatch):
    X, y = clustered([100] * 3, 32, 2.5, 4)
    fits: list[float] = []
    original_fit = LogisticRegression.fit

    def counting_fit(self, *args, **kwargs):
        fits.append(self.C)
        return original_fit(self, *args, **kwargs)

    monkeypatch.setattr(LogisticRegression, "fit", counting_fit)
    LinearProbe(search="grid").fit(X, y)
    grid_fits = len(fits)
    fits.clear()
    LinearProbe(search="coarse-to-fine").fit(X, y)
    assert grid_fits == len(DEFAULT_C_GRID) + 1  # every grid C, then the refit
    # 8 decades; one refinement step on each side of the chosen C and of the lowest log loss
    # (the one-standard-error rule measures from it); the refit
    assert len(fits) <= 13 < grid_fits


def test_auto_search_measures_the_whole_grid_only_on_few_images():
    probe = LinearProbe()
    assert probe.search_for(np.zeros((100, 16))) == "grid"
    assert probe.search_for(np.zeros((COARSE_TO_FINE_MIN_IMAGES, 16))) == "coarse-to-fine"
    assert LinearProbe(search="grid").search_for(np.zeros((10**4, 1280))) == "grid"


def test_the_default_tolerance_does_not_move_c_on_a_realistic_problem():
    """The default tolerance (scikit-learn's) against a much tighter one, on data with a
    smooth validation curve (2,250 training images): the same C, so the same final probe."""
    X, y = realistic(3000)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=0)
    default = LinearProbe(search="coarse-to-fine").fit(X_train, y_train)
    tight = LinearProbe(search="coarse-to-fine", selection_tol=1e-7).fit(X_train, y_train)
    assert default.tol == DEFAULT_TOL and default.selection_tol is None
    assert 0.8 < default.score(X_test, y_test) < 0.97
    assert min(DEFAULT_C_GRID) < default.chosen_c_ < max(DEFAULT_C_GRID)
    assert default.chosen_c_ == tight.chosen_c_
    assert default.score(X_test, y_test) == tight.score(X_test, y_test)


def test_on_real_embeddings_the_tolerance_only_moves_c_among_equally_good_values(demo_split):
    """On the demo's 22 validation images many C values tie on accuracy and a log loss that
    differs in the third decimal decides: the tolerance may move the choice between such
    equally accurate C values, but the best validation accuracy and the test accuracy stay."""
    X_train, y_train, X_test, y_test = demo_split
    default = LinearProbe().fit(X_train, y_train)
    tight = LinearProbe(selection_tol=1e-7).fit(X_train, y_train)
    assert max(default.sweep_.scores) == max(tight.sweep_.scores)
    correct = [int(np.sum(probe.predict(X_test) == y_test)) for probe in (default, tight)]
    assert abs(correct[0] - correct[1]) <= 1  # of 36 test images


# ------------------------------------------------------------------------ the torch solver


def test_torch_solver_minimises_sklearns_objective_at_a_fixed_c(demo):
    X, y = demo
    for labels in (y, (y >= 3).astype(int)):  # six classes, and two (one coef row)
        reference = LogisticRegression(C=1.0, max_iter=1000).fit(X.astype(np.float64), labels)
        torch_model = TorchLogisticRegression(C=1.0, device="cpu").fit(X, labels)
        assert torch_model.coef_.shape == reference.coef_.shape
        assert torch_model.intercept_.shape == reference.intercept_.shape
        np.testing.assert_array_equal(torch_model.classes_, reference.classes_)
        expected = sklearn_objective(reference.coef_, reference.intercept_, X, labels, 1.0)
        found = sklearn_objective(torch_model.coef_, torch_model.intercept_, X, labels, 1.0)
        assert found == pytest.approx(expected, rel=1e-3)
        assert np.mean(torch_model.predict(X) == reference.predict(X)) >= 0.99
        np.testing.assert_allclose(
            torch_model.predict_proba(X), reference.predict_proba(X), atol=2e-3
        )


def test_torch_and_sklearn_probes_agree_through_the_c_search(demo, demo_split):
    X_train, y_train, X_test, y_test = demo_split
    options = {"tol": 1e-6}  # a tight final fit, so that both reach the same optimum
    sklearn_probe = LinearProbe(solver="sklearn", **options).fit(X_train, y_train)
    torch_probe = LinearProbe(solver="torch", device="cpu", **options).fit(X_train, y_train)

    assert torch_probe.solver_ == "torch" and sklearn_probe.solver_ == "sklearn"
    assert torch_probe.chosen_c_ == sklearn_probe.chosen_c_
    assert torch_probe.sweep_.c_values == sklearn_probe.sweep_.c_values
    assert abs(torch_probe.score(X_test, y_test) - sklearn_probe.score(X_test, y_test)) <= 0.005
    X_all, _ = demo
    assert np.mean(torch_probe.predict(X_all) == sklearn_probe.predict(X_all)) >= 0.99
    c = sklearn_probe.chosen_c_
    expected = sklearn_objective(sklearn_probe.coef_, sklearn_probe.intercept_, X_train, y_train, c)
    found = sklearn_objective(torch_probe.coef_, torch_probe.intercept_, X_train, y_train, c)
    assert found == pytest.approx(expected, rel=1e-3)


def test_minibatch_mode_reaches_nearly_the_full_batch_accuracy(demo, demo_split):
    X_train, y_train, X_test, y_test = demo_split
    full = LinearProbe(solver="torch", device="cpu", C=1.0).fit(X_train, y_train)
    minibatch = LinearProbe(solver="torch", device="cpu", C=1.0, minibatch=True, batch_size=32)
    minibatch.fit(X_train, y_train)
    assert minibatch.model_.minibatch_ and not full.model_.minibatch_
    correct = [int(np.sum(probe.predict(X_test) == y_test)) for probe in (minibatch, full)]
    assert abs(correct[0] - correct[1]) <= 1  # of 36 test images
    X_all, _ = demo
    assert np.mean(minibatch.predict(X_all) == full.predict(X_all)) >= 0.95


def test_auto_solver_is_sklearn_on_the_cpu():
    X, y = clustered([10, 10], 8, 0.5, 0)
    probe = LinearProbe(solver="auto", device="cpu").fit(X, y)
    assert probe.solver_ == "sklearn" and isinstance(probe.model_, LogisticRegression)
    with pytest.raises(ValueError, match="solver must be one of"):
        LinearProbe(solver="gpu").fit(X, y)


def test_a_torch_probe_exports_and_predicts_like_a_sklearn_one():
    embeddings = clustered_embeddings([20, 20], dim=16, spread=0.8, seed=2)
    result = run_probe(
        embeddings, protocol="holdout", probe=LinearProbe(solver="torch", device="cpu"), seed=0
    )
    assert result.probe.model_.n_features_in_ == 16 and result.chosen_c == result.probe.model_.C
    assert result.probe.coef_.shape == (1, 16)  # two classes: scikit-learn's single row
    weights = ProbeWeights.from_estimator(result.probe, result.class_names, encoder_id="test")
    assert weights.coef.shape == (2, 16)
    np.testing.assert_allclose(
        weights.predict_proba(embeddings.vectors),
        result.probe.predict_proba(embeddings.vectors),
        atol=1e-5,
    )


def test_every_scikit_learn_fit_runs_on_one_blas_thread(monkeypatch):
    from threadpoolctl import threadpool_info

    seen = []
    original = probe_module.LogisticRegression.fit

    def recording_fit(model, *args, **kwargs):
        seen.extend(pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas")
        return original(model, *args, **kwargs)

    monkeypatch.setattr(probe_module.LogisticRegression, "fit", recording_fit)
    X, y = clustered([40] * 3, 16, 2.5, 4)
    LinearProbe().fit(X, y)
    assert seen and set(seen) == {1}
