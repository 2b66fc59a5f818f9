"""95% confidence intervals for test-set metrics that stay honest at small test sets.

- Accuracy and top-5 accuracy: Clopper-Pearson exact binomial interval.
- Balanced accuracy: the Beta posterior of each class recall (Brodersen et al., 2010,
  "The balanced accuracy and its posterior distribution"), bracketed Clopper-Pearson style.
- Macro F1: a Dirichlet posterior of each true-class row of the confusion matrix, bracketed
  the same way.

"Bracketed" means the lower bound comes from a posterior that counts one extra error per
class and the upper bound from one that counts one extra success. A plain uniform-prior
posterior would never reach 1.0 after a perfect score and under-covers near 1; the bracketed
pair reduces to Clopper-Pearson for a single class and never has zero width on a finite test
set. Coverage is checked by simulation in ``tests/test_intervals.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import fftconvolve
from scipy.special import betaln, xlog1py, xlogy
from scipy.stats import binomtest

CONFIDENCE = 0.95
N_POSTERIOR_SAMPLES = 4000

# Grid for the numerical convolution behind the balanced-accuracy interval.
_MIN_GRID_POINTS = 1024
_MAX_GRID_POINTS = 2**14
_POINTS_PER_SD = 8
_MAX_GRID_CELLS = 2**22  # grid values held at once (memory cap)

CLOPPER_PEARSON = "Clopper-Pearson exact binomial"
BETA_POSTERIOR = "Beta posterior of class recalls (Brodersen et al. 2010), bracketed"
DIRICHLET_POSTERIOR = "Dirichlet posterior of confusion-matrix rows, bracketed"

INTERVAL_HELP: dict[str, str] = {
    "accuracy": (
        "Clopper-Pearson exact 95% interval for a binomial proportion: if the probe were"
        " scored on many other test sets of this size drawn the same way, about 95% of such"
        " intervals would contain its true accuracy."
    ),
    "top5_accuracy": (
        "Clopper-Pearson exact 95% interval for a binomial proportion: if the probe were"
        " scored on many other test sets of this size drawn the same way, about 95% of such"
        " intervals would contain the true rate at which the right class is among its top 5."
    ),
    "balanced_accuracy": (
        "95% interval from the Beta posterior of each class's recall (Brodersen et al. 2010),"
        " widened like Clopper-Pearson: the range of average per-class recalls that this"
        " many test images per class cannot rule out, wide when some classes have few images."
    ),
    "macro_f1": (
        "95% interval from a Dirichlet posterior of each true class's row of the confusion"
        " matrix, widened like Clopper-Pearson: the range of macro F1 scores that this"
        " confusion matrix cannot rule out for the probe on images drawn the same way."
    ),
}

CROSS_VALIDATION_CAVEAT = (
    "Under cross-validation the out-of-fold predictions come from probes that share most of"
    " their training images, so they are not independent and the interval is approximate."
)


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its confidence interval and the method that produced it."""

    value: float
    low: float
    high: float
    method: str

    def __str__(self) -> str:
        return f"{self.value:.3f} (95% CI {self.low:.3f}-{self.high:.3f})"


def interval_help(metric: str, *, cross_validated: bool = False) -> str:
    """Plain-language meaning of ``metric``'s interval (a ``Metrics`` field name)."""
    text = INTERVAL_HELP[metric]
    return f"{text} {CROSS_VALIDATION_CAVEAT}" if cross_validated else text


def proportion_interval(n_successes: int, n_total: int, confidence: float = CONFIDENCE) -> Estimate:
    """Observed rate ``n_successes / n_total`` with its Clopper-Pearson exact interval."""
    interval = binomtest(int(n_successes), int(n_total)).proportion_ci(
        confidence_level=confidence, method="exact"
    )
    return Estimate(n_successes / n_total, interval.low, interval.high, CLOPPER_PEARSON)


def balanced_accuracy_bounds(
    n_correct: np.ndarray, support: np.ndarray, confidence: float = CONFIDENCE
) -> tuple[np.ndarray, np.ndarray]:
    """Interval bounds for balanced accuracy, vectorised over leading axes.

    ``n_correct`` and ``support`` have classes on the last axis; classes with no images
    are left out, as scikit-learn's ``balanced_accuracy_score`` does. The lower bound is the
    ``alpha/2`` quantile of mean_k Beta(TP_k, FN_k + 1), the upper bound the ``1 - alpha/2``
    quantile of mean_k Beta(TP_k + 1, FN_k).
    """
    n_correct, support = np.asarray(n_correct, float), np.asarray(support, float)
    present = support > 0
    n_wrong = support - n_correct
    tail = (1 - confidence) / 2
    low = _quantile_of_mean_of_betas(n_correct, n_wrong + 1, present, tail)
    high = _quantile_of_mean_of_betas(n_correct + 1, n_wrong, present, 1 - tail)
    return low, high


def balanced_accuracy_interval(
    n_correct: np.ndarray, support: np.ndarray, confidence: float = CONFIDENCE
) -> Estimate:
    """Mean recall over classes with images, with its bracketed Beta-posterior interval."""
    n_correct, support = np.asarray(n_correct), np.asarray(support)
    present = support > 0
    value = np.mean(n_correct[present] / support[present])
    low, high = balanced_accuracy_bounds(n_correct, support, confidence)
    return Estimate(float(value), float(low), float(high), BETA_POSTERIOR)


def _quantile_of_mean_of_betas(
    a: np.ndarray, b: np.ndarray, included: np.ndarray, quantile: float
) -> np.ndarray:
    """``quantile`` of the mean over ``included`` classes of independent Beta(a, b).

    Counts only: ``a`` and ``b`` are 0 or at least 1, Beta(0, b) is a point mass at 0 and
    Beta(a, 0) one at 1. Brodersen et al. convolve the Beta densities numerically; so does
    this, on a grid fine enough for the narrowest Beta, batched over leading axes with FFTs.
    """
    a, b, included = np.broadcast_arrays(a, b, included)
    batch_shape = a.shape[:-1]
    a, b, included = (x.reshape(-1, a.shape[-1]) for x in (a, b, included))
    n_points = _grid_points(a, b, included)
    rows_per_chunk = max(1, _MAX_GRID_CELLS // (a.shape[1] * (n_points + 1)))
    result = np.concatenate(
        [
            _lattice_quantile(
                a[start : start + rows_per_chunk],
                b[start : start + rows_per_chunk],
                included[start : start + rows_per_chunk],
                quantile,
                n_points,
            )
            for start in range(0, len(a), rows_per_chunk)
        ]
    )
    return result.reshape(batch_shape)


def _grid_points(a: np.ndarray, b: np.ndarray, included: np.ndarray) -> int:
    """Grid size that puts ``_POINTS_PER_SD`` points within a standard deviation."""
    continuous = included & (a > 0) & (b > 0)
    if not continuous.any():
        return _MIN_GRID_POINTS
    total = a[continuous] + b[continuous]
    smallest_sd = np.sqrt(a[continuous] * b[continuous] / (total**2 * (total + 1))).min()
    return int(np.clip(np.ceil(_POINTS_PER_SD / smallest_sd), _MIN_GRID_POINTS, _MAX_GRID_POINTS))


def _lattice_quantile(
    a: np.ndarray, b: np.ndarray, included: np.ndarray, quantile: float, n_points: int
) -> np.ndarray:
    """Quantile of the mean of Betas discretised onto the grid ``i / n_points``."""
    grid = np.linspace(0.0, 1.0, n_points + 1)
    a3, b3 = a[..., None], b[..., None]
    continuous = (included & (a > 0) & (b > 0))[..., None]
    with np.errstate(divide="ignore", invalid="ignore"):
        log_density = xlogy(a3 - 1, grid) + xlog1py(b3 - 1, -grid) - betaln(a3, b3)
    mass = np.where(continuous, np.exp(log_density), 0.0)
    mass[..., [0, -1]] /= 2  # trapezoid weights at the ends
    mass /= np.where(continuous, mass.sum(axis=-1, keepdims=True), 1.0)
    # point masses: Beta(a, 0) at 1; Beta(0, b) and excluded classes at 0 (they add nothing)
    at_one = included & (b == 0)
    mass[..., -1] += at_one
    mass[..., 0] += ~continuous[..., 0] & ~at_one
    # Convolve the classes' distributions pairwise, halving their number each round.
    while mass.shape[-2] > 1:
        if mass.shape[-2] % 2:
            nothing = np.zeros_like(mass[..., :1, :])
            nothing[..., 0] = 1
            mass = np.concatenate([mass, nothing], axis=-2)
        mass = fftconvolve(mass[..., 0::2, :], mass[..., 1::2, :], axes=-1)
    cumulative = np.cumsum(mass[..., 0, :], axis=-1)
    index = np.argmax(cumulative >= quantile, axis=-1)
    return index / (n_points * included.sum(axis=-1))


def macro_f1_interval(
    confusion: np.ndarray,
    *,
    confidence: float = CONFIDENCE,
    n_samples: int = N_POSTERIOR_SAMPLES,
    seed: int = 0,
) -> Estimate:
    """Macro F1 of a confusion matrix with its bracketed Dirichlet-posterior interval.

    Macro F1 averages over classes that occur in the true or the predicted labels, as
    scikit-learn's ``f1_score(average="macro")`` does. Each true-class row of counts gets a
    Dirichlet posterior; the expected confusion matrix of each posterior draw is scored.
    The lower bound's posterior adds one pseudo-error per row, spread over the other classes
    (macro F1 only rises when a row's mass moves onto the diagonal); the upper bound's adds
    one pseudo-success. Seeded Monte Carlo with ``n_samples`` draws per bound.
    """
    confusion = np.asarray(confusion, float)
    occurring = (confusion.sum(axis=0) + confusion.sum(axis=1)) > 0
    counts = confusion[np.ix_(occurring, occurring)]
    value = _macro_f1(counts)
    tail = (1 - confidence) / 2
    rng = np.random.default_rng(seed)
    pessimistic = _sample_macro_f1(counts, extra_success=False, n_samples=n_samples, rng=rng)
    optimistic = _sample_macro_f1(counts, extra_success=True, n_samples=n_samples, rng=rng)
    low = np.quantile(pessimistic, tail)
    high = np.quantile(optimistic, 1 - tail)
    return Estimate(float(value), float(low), float(high), DIRICHLET_POSTERIOR)


def _macro_f1(counts: np.ndarray) -> float:
    """Mean over classes of 2 TP / (true + predicted), scikit-learn's F1 formula."""
    true_positives = np.diagonal(counts)
    return float(np.mean(2 * true_positives / (counts.sum(axis=1) + counts.sum(axis=0))))


def _sample_macro_f1(
    counts: np.ndarray, *, extra_success: bool, n_samples: int, rng: np.random.Generator
) -> np.ndarray:
    """Macro F1 of ``n_samples`` expected confusion matrices drawn from the row posteriors.

    Row r is Dirichlet(counts[r] + one pseudo-success on the diagonal) or Dirichlet(counts[r],
    1 pseudo-error) whose mass is split evenly over the other classes' columns. Cells with
    no count are point masses at 0, so only the row's nonzero cells are sampled.
    """
    n_classes = len(counts)
    support = counts.sum(axis=1)
    true_positives = np.zeros((n_samples, n_classes))
    predicted = np.zeros((n_samples, n_classes))
    spread_errors = np.zeros((n_samples, n_classes))
    for row in np.flatnonzero(support):
        alpha = counts[row].copy()
        alpha[row] += extra_success
        cells = np.flatnonzero(alpha)
        alpha = np.append(alpha[cells], 0.0 if extra_success else 1.0)
        draws = support[row] * rng.dirichlet(alpha, size=n_samples)
        predicted[:, cells] += draws[:, :-1]
        if row in cells:
            true_positives[:, row] = draws[:, np.searchsorted(cells, row)]
        if n_classes > 1:  # with a single class the pseudo-error is a miss and nothing else
            spread_errors[:, row] = draws[:, -1] / (n_classes - 1)
    predicted += spread_errors.sum(axis=1, keepdims=True) - spread_errors
    return np.mean(2 * true_positives / (support + predicted), axis=-1)
