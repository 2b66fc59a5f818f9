"""Test-set metrics with 95% confidence intervals (see ``intervals`` for the methods)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from .intervals import (
    N_POSTERIOR_SAMPLES,
    Estimate,
    balanced_accuracy_interval,
    macro_f1_interval,
    proportion_interval,
)

__all__ = ["ClassMetrics", "Estimate", "Metrics", "compute_metrics"]

TOP_K = 5


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


def compute_metrics(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    probabilities: np.ndarray,
    class_names: list[str],
    *,
    n_resamples: int = N_POSTERIOR_SAMPLES,
    seed: int = 0,
) -> Metrics:
    """Accuracy, balanced accuracy, macro F1 (and top-5 beyond 5 classes) with 95% CIs.

    ``n_resamples`` posterior draws (seeded by ``seed``) give the macro-F1 interval; the
    other intervals are computed exactly.
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    n_classes = len(class_names)
    labels = np.arange(n_classes)
    confusion = confusion_matrix(y_true, y_pred, labels=labels)
    top5_accuracy = None
    if n_classes > TOP_K:
        top = np.argsort(-probabilities, axis=1, kind="stable")[:, :TOP_K]
        in_top_k = (top == y_true[:, None]).any(axis=1)
        top5_accuracy = proportion_interval(int(in_top_k.sum()), len(y_true))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    return Metrics(
        accuracy=proportion_interval(int(np.trace(confusion)), len(y_true)),
        balanced_accuracy=balanced_accuracy_interval(np.diag(confusion), confusion.sum(axis=1)),
        macro_f1=macro_f1_interval(confusion, n_samples=n_resamples, seed=seed),
        top5_accuracy=top5_accuracy,
        per_class=[
            ClassMetrics(name, float(p), float(r), float(f), int(s))
            for name, p, r, f, s in zip(class_names, precision, recall, f1, support, strict=True)
        ],
        confusion=confusion,
        class_names=list(class_names),
        n_test=len(y_true),
        chance_accuracy=float(np.bincount(y_true, minlength=n_classes).max() / max(len(y_true), 1)),
    )
