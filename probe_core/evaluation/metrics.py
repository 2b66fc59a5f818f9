"""Test-set metrics with percentile-bootstrap 95% confidence intervals."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)

N_BOOTSTRAP = 1000
CONFIDENCE = 0.95
TOP_K = 5


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its bootstrap confidence interval."""

    value: float
    low: float
    high: float

    def __str__(self) -> str:
        return f"{self.value:.3f} (95% CI {self.low:.3f}-{self.high:.3f})"


@dataclass(frozen=True)
class ClassMetrics:
    name: str
    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True)
class Metrics:
    """Held-out performance of a probe."""

    accuracy: Estimate
    balanced_accuracy: Estimate
    macro_f1: Estimate
    top5_accuracy: Estimate | None  # only with more than 5 classes
    per_class: list[ClassMetrics]
    confusion: np.ndarray  # rows: true class, columns: predicted class
    class_names: list[str]
    n_test: int
    chance_accuracy: float  # the majority-class rate on the test set

    def to_dict(self) -> dict:
        data = asdict(self)
        data["confusion"] = self.confusion.tolist()
        return data


def _bootstrap_scores(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    in_top_k: np.ndarray | None,
    n_classes: int,
    n_resamples: int,
    seed: int,
) -> dict[str, np.ndarray]:
    """Each metric on ``n_resamples`` resamples of the test set, vectorised."""
    rng = np.random.default_rng(seed)
    resample = rng.integers(0, len(y_true), size=(n_resamples, len(y_true)))
    true, pred = y_true[resample], y_pred[resample]
    correct = true == pred
    recalls, f1s = [], []
    for k in range(n_classes):
        is_true, is_pred = true == k, pred == k
        tp = (correct & is_true).sum(axis=1)
        support = is_true.sum(axis=1)
        fp = (is_pred & ~correct).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            recalls.append(np.where(support > 0, tp / support, np.nan))
            denominator = 2 * tp + fp + (support - tp)
            # sklearn's macro F1 averages over classes present in y_true or y_pred
            f1s.append(np.where(denominator > 0, 2 * tp / denominator, np.nan))
    scores = {
        "accuracy": correct.mean(axis=1),
        "balanced_accuracy": np.nanmean(np.stack(recalls), axis=0),
        "macro_f1": np.nanmean(np.stack(f1s), axis=0),
    }
    if in_top_k is not None:
        scores["top5_accuracy"] = in_top_k[resample].mean(axis=1)
    return scores


def _estimate(value: float, samples: np.ndarray) -> Estimate:
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(samples, [tail, 100 - tail])
    return Estimate(float(value), float(low), float(high))


def compute_metrics(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    probabilities: np.ndarray,
    class_names: list[str],
    *,
    n_resamples: int = N_BOOTSTRAP,
    seed: int = 0,
) -> Metrics:
    """Accuracy, balanced accuracy, macro F1 (and top-5 beyond 5 classes) with 95% CIs."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    n_classes = len(class_names)
    labels = np.arange(n_classes)
    in_top_k = None
    if n_classes > TOP_K:
        top = np.argsort(-probabilities, axis=1, kind="stable")[:, :TOP_K]
        in_top_k = (top == y_true[:, None]).any(axis=1)
    boot = _bootstrap_scores(y_true, y_pred, in_top_k, n_classes, n_resamples, seed)
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    return Metrics(
        accuracy=_estimate(accuracy_score(y_true, y_pred), boot["accuracy"]),
        balanced_accuracy=_estimate(
            balanced_accuracy_score(y_true, y_pred), boot["balanced_accuracy"]
        ),
        macro_f1=_estimate(
            f1_score(y_true, y_pred, average="macro", zero_division=0), boot["macro_f1"]
        ),
        top5_accuracy=(
            _estimate(float(in_top_k.mean()), boot["top5_accuracy"])
            if in_top_k is not None
            else None
        ),
        per_class=[
            ClassMetrics(name, float(p), float(r), float(f), int(s))
            for name, p, r, f, s in zip(class_names, precision, recall, f1, support, strict=True)
        ],
        confusion=confusion_matrix(y_true, y_pred, labels=labels),
        class_names=list(class_names),
        n_test=len(y_true),
        chance_accuracy=float(np.bincount(y_true, minlength=n_classes).max() / max(len(y_true), 1)),
    )
