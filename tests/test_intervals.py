"""Confidence intervals that stay honest at every test-set size, checked by simulation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import beta, binomtest
from sklearn.metrics import balanced_accuracy_score, f1_score
from statsmodels.stats.proportion import proportion_confint

from probe_core.evaluation.intervals import (
    CLOPPER_PEARSON,
    CROSS_VALIDATION_CAVEAT,
    Estimate,
    balanced_accuracy_bounds,
    balanced_accuracy_interval,
    interval_help,
    macro_f1_interval,
    proportion_interval,
)
from probe_core.evaluation.metrics import Metrics

TEST_SET_SIZES = (10, 30, 100, 1000)
TRUE_RATES = (0.5, 0.8, 0.95, 0.99)
N_SIMULATED_TEST_SETS = 2000
MINIMUM_COVERAGE = 0.93  # nominal 95%, less the Monte Carlo noise of 2,000 simulated sets
CLASS_SHARES = np.array([0.5, 0.3, 0.2])
GRID = [(n, p) for n in TEST_SET_SIZES for p in TRUE_RATES]


def class_sizes(n: int) -> np.ndarray:
    sizes = np.round(n * CLASS_SHARES).astype(int)
    assert sizes.sum() == n and sizes.min() >= 1
    return sizes


def simulation_rng(n: int, p: float) -> np.random.Generator:
    return np.random.default_rng([n, round(p * 100)])


# Accuracy: Clopper-Pearson


def test_nine_out_of_nine_is_not_certainty():
    estimate = proportion_interval(9, 9)
    assert estimate.value == 1.0
    assert estimate.low == pytest.approx(0.025 ** (1 / 9))  # about 0.66
    assert 0.66 < estimate.low < 0.67
    assert estimate.high == 1.0
    assert str(estimate) == "1.000 (95% CI 0.664-1.000)"


def test_nothing_right_out_of_nine_is_not_certain_failure():
    estimate = proportion_interval(0, 9)
    assert (estimate.value, estimate.low) == (0.0, 0.0)
    assert estimate.high == pytest.approx(1 - 0.025 ** (1 / 9))  # about 0.34


@pytest.mark.parametrize(("k", "n"), [(0, 1), (1, 1), (3, 7), (12, 13), (37, 50), (912, 1000)])
def test_proportion_interval_is_scipys_and_statsmodels_clopper_pearson(k, n):
    estimate = proportion_interval(k, n)
    scipy_interval = binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
    statsmodels_low, statsmodels_high = proportion_confint(k, n, alpha=0.05, method="beta")
    assert (estimate.low, estimate.high) == (scipy_interval.low, scipy_interval.high)
    assert estimate.low == pytest.approx(statsmodels_low, abs=1e-12)
    assert estimate.high == pytest.approx(statsmodels_high, abs=1e-12)
    assert estimate.value == k / n
    assert estimate.method == CLOPPER_PEARSON


@pytest.mark.parametrize(("n", "p"), GRID)
def test_accuracy_interval_covers_the_true_accuracy_at_least_nominally(n, p):
    n_correct = simulation_rng(n, p).binomial(n, p, N_SIMULATED_TEST_SETS)
    outcomes, times_seen = np.unique(n_correct, return_counts=True)
    covers = [(interval := proportion_interval(k, n)).low <= p <= interval.high for k in outcomes]
    assert np.sum(times_seen * covers) / N_SIMULATED_TEST_SETS >= MINIMUM_COVERAGE


@pytest.mark.parametrize("n", TEST_SET_SIZES)
def test_perfect_accuracy_interval_reaches_one_but_not_certainty(n):
    estimate = proportion_interval(n, n)
    assert estimate.high == 1.0
    assert estimate.low < 1.0


# Balanced accuracy: bracketed Beta posterior


def test_balanced_accuracy_for_one_class_is_clopper_pearson():
    for k, n in [(0, 4), (3, 3), (7, 10), (95, 100)]:
        low, high = balanced_accuracy_bounds(np.array([k]), np.array([n]))
        exact = proportion_interval(k, n)
        assert low == pytest.approx(exact.low, abs=1e-3)
        assert high == pytest.approx(exact.high, abs=1e-3)


@pytest.mark.parametrize(
    ("n_correct", "support"),
    [
        ([1, 3, 0], [5, 3, 2]),
        ([3, 3], [3, 3]),
        ([1, 5, 18], [1, 5, 20]),
        ([40, 25, 17], [50, 30, 20]),
    ],
)
def test_balanced_accuracy_bounds_are_the_quantiles_of_the_mean_of_beta_posteriors(
    n_correct, support
):
    """The numerical convolution agrees with Monte Carlo draws from scipy.stats.beta."""
    n_correct, support = np.array(n_correct), np.array(support)
    n_wrong = support - n_correct
    rng = np.random.default_rng(0)

    def mean_of_betas(a, b):
        # Beta(0, b) is a point mass at 0, Beta(a, 0) one at 1.
        draws = [
            np.full(400_000, float(bi == 0))
            if ai == 0 or bi == 0
            else beta.rvs(ai, bi, size=400_000, random_state=rng)
            for ai, bi in zip(a, b, strict=True)
        ]
        return np.mean(draws, axis=0)

    low, high = balanced_accuracy_bounds(n_correct, support)
    monte_carlo_low = np.quantile(mean_of_betas(n_correct, n_wrong + 1), 0.025)
    monte_carlo_high = np.quantile(mean_of_betas(n_correct + 1, n_wrong), 0.975)
    assert low == pytest.approx(monte_carlo_low, abs=3e-3)
    assert high == pytest.approx(monte_carlo_high, abs=3e-3)


def test_balanced_accuracy_value_is_scikit_learns_and_ignores_classes_without_images():
    y_true = np.array([0, 0, 0, 0, 1, 1, 3, 3, 3])
    y_pred = np.array([0, 0, 1, 0, 1, 2, 3, 3, 0])
    confusion = np.zeros((4, 4), int)
    np.add.at(confusion, (y_true, y_pred), 1)
    estimate = balanced_accuracy_interval(np.diag(confusion), confusion.sum(axis=1))
    with pytest.warns(UserWarning, match="not in y_true"):
        expected = balanced_accuracy_score(y_true, y_pred)
    assert estimate.value == expected
    without_empty_class = balanced_accuracy_interval(np.array([3, 1, 2]), np.array([4, 2, 3]))
    assert (estimate.low, estimate.high) == (without_empty_class.low, without_empty_class.high)
    assert estimate.low < estimate.value < estimate.high


def test_balanced_accuracy_bounds_vectorise_over_test_sets():
    n_correct = np.array([[5, 3, 2], [4, 1, 2], [0, 0, 0]])
    support = np.array([5, 3, 2])
    low, high = balanced_accuracy_bounds(n_correct, support)
    for row, counts in enumerate(n_correct):
        single = balanced_accuracy_interval(counts, support)
        assert (low[row], high[row]) == pytest.approx((single.low, single.high), abs=1e-3)


def test_balanced_accuracy_with_every_image_right_or_wrong():
    perfect = balanced_accuracy_interval(np.array([5, 3, 2]), np.array([5, 3, 2]))
    assert (perfect.value, perfect.high) == (1.0, 1.0)
    assert 0.5 < perfect.low < 1.0
    hopeless = balanced_accuracy_interval(np.array([0, 0, 0]), np.array([5, 3, 2]))
    assert (hopeless.value, hopeless.low) == (0.0, 0.0)
    assert 0.0 < hopeless.high < 0.5


def test_balanced_accuracy_interval_is_wider_than_accuracys_when_a_class_is_small():
    """Two of 200 images in one class: its recall, half the score, is barely known."""
    balanced = balanced_accuracy_interval(np.array([180, 2]), np.array([198, 2]))
    accuracy = proportion_interval(182, 200)
    assert balanced.high - balanced.low > 3 * (accuracy.high - accuracy.low)


@pytest.mark.parametrize(("n", "p"), GRID)
def test_balanced_accuracy_interval_covers_the_truth_with_unequal_classes(n, p):
    """Classes of 50%, 30% and 20% of the images, each recalled at rate p."""
    sizes = class_sizes(n)
    n_correct = simulation_rng(n, p).binomial(sizes, p, (N_SIMULATED_TEST_SETS, len(sizes)))
    outcomes, times_seen = np.unique(n_correct, axis=0, return_counts=True)
    low, high = balanced_accuracy_bounds(outcomes, sizes)
    covers = (low <= p) & (p <= high)
    assert np.sum(times_seen * covers) / N_SIMULATED_TEST_SETS >= MINIMUM_COVERAGE


@pytest.mark.parametrize("n", TEST_SET_SIZES)
def test_perfect_balanced_accuracy_interval_reaches_one_but_not_certainty(n):
    sizes = class_sizes(n)
    low, high = balanced_accuracy_bounds(sizes, sizes)
    assert high == 1.0
    assert low < 1.0


# Macro F1: bracketed Dirichlet posterior


def random_confusion(rng: np.random.Generator, n_classes: int, n: int, accuracy: float):
    y_true = rng.integers(0, n_classes, n)
    y_pred = np.where(rng.random(n) < accuracy, y_true, rng.integers(0, n_classes, n))
    confusion = np.zeros((n_classes, n_classes), int)
    np.add.at(confusion, (y_true, y_pred), 1)
    return y_true, y_pred, confusion


def test_macro_f1_interval_contains_the_observed_value_and_is_never_zero_width():
    rng = np.random.default_rng(7)
    for trial in range(60):
        n_classes = int(rng.integers(2, 8))
        n = int(rng.integers(2, 300))
        y_true, y_pred, confusion = random_confusion(rng, n_classes, n, rng.uniform(0, 1))
        estimate = macro_f1_interval(confusion, n_samples=1000, seed=trial)
        assert estimate.value == f1_score(y_true, y_pred, average="macro")
        assert estimate.low <= estimate.value <= estimate.high
        assert estimate.low < estimate.high


@pytest.mark.parametrize("n_per_class", [1, 3, 30, 1000])
def test_perfect_confusion_matrix_gives_macro_f1_up_to_one_but_not_certainty(n_per_class):
    estimate = macro_f1_interval(n_per_class * np.eye(3))
    assert (estimate.value, estimate.high) == (1.0, 1.0)
    assert estimate.low < 1.0


def test_macro_f1_of_a_single_class_test_set_is_not_certain():
    estimate = macro_f1_interval(np.array([[0, 0], [0, 9]]))
    assert (estimate.value, estimate.high) == (1.0, 1.0)
    assert estimate.low < 1.0


@pytest.mark.slow
@pytest.mark.parametrize(("n", "p"), GRID)
def test_macro_f1_interval_covers_the_truth_with_unequal_classes(n, p):
    """Each class recalled at rate p, its errors split evenly over the other two classes."""
    sizes = class_sizes(n)
    row_rates = np.full((3, 3), (1 - p) / 2)
    np.fill_diagonal(row_rates, p)
    expected = row_rates * sizes[:, None]
    true_macro_f1 = np.mean(2 * np.diag(expected) / (sizes + expected.sum(axis=0)))
    n_sets = 500  # one Monte Carlo interval per set: fewer sets than above
    confusions = simulation_rng(n, p).multinomial(sizes, row_rates, size=(n_sets, 3))
    covered = 0
    for trial, confusion in enumerate(confusions):
        estimate = macro_f1_interval(confusion, n_samples=1000, seed=trial)
        covered += estimate.low <= true_macro_f1 <= estimate.high
    assert covered / n_sets >= MINIMUM_COVERAGE


def test_macro_f1_interval_narrows_with_more_data_and_is_reproducible():
    rng = np.random.default_rng(3)
    small = macro_f1_interval(random_confusion(rng, 4, 60, 0.7)[2], seed=1)
    large_confusion = random_confusion(rng, 4, 3000, 0.7)[2]
    large = macro_f1_interval(large_confusion, seed=1)
    assert large.high - large.low < (small.high - small.low) / 4
    assert macro_f1_interval(large_confusion, seed=1) == large


# Plain-language help


def test_every_metric_with_an_interval_has_help_text_and_a_cross_validation_caveat():
    metric_fields = [name for name, kind in Metrics.__annotations__.items() if "Estimate" in kind]
    assert metric_fields == ["accuracy", "balanced_accuracy", "macro_f1", "top5_accuracy"]
    for name in metric_fields:
        assert "95%" in interval_help(name)
        assert CROSS_VALIDATION_CAVEAT not in interval_help(name)
        assert interval_help(name, cross_validated=True).endswith(CROSS_VALIDATION_CAVEAT)
    assert "approximate" in CROSS_VALIDATION_CAVEAT


def test_estimate_names_its_method_and_prints_as_before():
    estimate = Estimate(0.923, 0.7, 1.0, CLOPPER_PEARSON)
    assert str(estimate) == "0.923 (95% CI 0.700-1.000)"
    assert estimate.method == "Clopper-Pearson exact binomial"
