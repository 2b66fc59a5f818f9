"""Evaluation protocols: how a probe is fitted and which images score it."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..embed import Embeddings
from ..probe import LinearProbe, ProbeError, SweepResult
from .metrics import Metrics, compute_metrics
from .splits import Split, stratified_split, usable_classes


@dataclass
class ProbeResult:
    """Everything a probe run produced: split, sweep, test predictions and metrics."""

    probe: LinearProbe
    class_names: list[str]  # classes the probe was fitted on
    split: Split
    sweep: SweepResult
    test_predictions: np.ndarray  # class index (into class_names) per test image
    test_probabilities: np.ndarray  # (n_test, n_classes)
    metrics: Metrics
    used: np.ndarray  # indices into the embeddings that took part (tiny classes excluded)
    excluded_classes: list[str] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)

    @property
    def chosen_c(self) -> float:
        return self.sweep.chosen_c


def run_probe(
    embeddings: Embeddings,
    *,
    test_size: float = 0.25,
    seed: int = 0,
    probe: LinearProbe | None = None,
    split: Split | None = None,
) -> ProbeResult:
    """Split, fit the probe on train (C chosen inside train), and score on the held-out test part.

    ``split`` indexes into ``embeddings`` and may be given to reuse a fixed split.
    """
    used, kept_names, messages = usable_classes(embeddings)
    if len(kept_names) < 2:
        found = ", ".join(kept_names) or "none"
        raise ProbeError(
            "a linear probe needs at least two classes with two or more usable images each"
            f" (classes with enough images: {found})"
            + ("; " + "; ".join(messages) if messages else "")
        )
    excluded = [n for n in embeddings.class_names if n not in kept_names]
    remap = {embeddings.class_names.index(name): i for i, name in enumerate(kept_names)}
    y_all = np.array([remap.get(int(label), -1) for label in embeddings.labels])
    if split is None:
        inner = stratified_split(y_all[used], test_size=test_size, seed=seed)
        split = Split(train=used[inner.train], test=used[inner.test])
    probe = probe if probe is not None else LinearProbe(seed=seed)
    X = embeddings.vectors
    probe.fit(X[split.train], y_all[split.train])
    probabilities = probe.predict_proba(X[split.test])
    predictions = probe.classes_[np.argmax(probabilities, axis=1)]
    # Classes absent from training cannot be predicted; keep columns aligned to kept_names.
    full = np.zeros((len(split.test), len(kept_names)))
    full[:, probe.classes_] = probabilities
    metrics = compute_metrics(y_all[split.test], predictions, full, kept_names, seed=seed)
    return ProbeResult(
        probe=probe,
        class_names=kept_names,
        split=split,
        sweep=probe.sweep_,
        test_predictions=predictions,
        test_probabilities=full,
        metrics=metrics,
        used=used,
        excluded_classes=excluded,
        messages=messages,
    )
