"""Evaluation protocols: which images fit the probe, which score it, and where C is chosen.

- ``cv``: stratified k-fold cross-validation. C is chosen inside each outer training fold
  (nested), so every used image gets one out-of-fold prediction from a probe that never
  saw it. The probe kept for export is fitted on all images, C chosen by k-fold on them.
- ``holdout``: a stratified train/test split; C chosen on validation data carved from
  train (the CLIP paper's protocol).
- ``given``: the dataset's own ``train/``, ``val/`` and ``test/`` folders. C is chosen on
  ``val/`` (or on a split of ``train/``), the probe refitted on train + val, scored on test.
- ``auto``: ``given`` when the layout has splits, ``cv`` up to 5,000 images, else ``holdout``.

Duplicate images (identical bytes or near-identical embeddings) form groups that never
straddle train and test or two folds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from sklearn.base import clone

from ..embeddings import Embeddings
from ..probe import LinearProbe, ProbeError, SweepResult
from ..wording import plural
from .duplicates import DEFAULT_DUPLICATE_COSINE, Duplicates, find_duplicates
from .label_issues import LabelIssue, LowConfidenceLabel, review_labels
from .metrics import Metrics, compute_metrics
from .splits import (
    Split,
    classes_in_one_group,
    cross_validation_folds,
    fold_count,
    stratified_split,
    usable_classes,
)

PROTOCOLS = ("auto", "cv", "holdout", "given")
AUTO_CV_LIMIT = 5000
DEFAULT_FOLDS = 5
TEST_FOLD = "test"


@dataclass(frozen=True)
class ProtocolChoice:
    """The protocol that ran, with its folds and repeats, and why it was chosen."""

    name: str  # "cv" | "holdout" | "given"
    reason: str
    n_folds: int = 0
    n_repeats: int = 1
    test_size: float = 0.0

    def describe(self) -> str:
        if self.name == "cv":
            repeats = f", {self.n_repeats} repeats" if self.n_repeats > 1 else ""
            return (
                f"{self.n_folds}-fold cross-validation{repeats}"
                " (C chosen inside each training fold)"
            )
        if self.name == "holdout":
            return f"held-out test split ({self.test_size:.0%}), C chosen on part of train"
        return "the dataset's own train/test folders, C chosen on validation data"

    def scored_sentence(self, n_evaluated: int) -> str:
        """What the numbers are computed over, in plain words."""
        if self.name == "cv":
            return (
                f"Every image was scored by a probe that never saw it: all {n_evaluated:,},"
                f" by {self.n_folds}-fold cross-validation."
            )
        where = "test/ folder" if self.name == "given" else "held-out test split"
        scored = (
            "was scored by a probe that never saw it"
            if n_evaluated == 1
            else ("were scored by a probe that never saw them")
        )
        return f"{plural(n_evaluated, 'image')} of the {where} {scored}."


@dataclass
class ProbeResult:
    """Everything a probe run produced: protocol, out-of-sample predictions, metrics.

    ``evaluated`` indexes the embeddings scored (every used image under ``cv``), with the
    fold each was scored in (``"1"`` … ``"K"`` under ``cv``, ``"test"`` otherwise).
    ``probe`` is the probe to export and predict with; ``train`` is what it was fitted on.
    """

    protocol: ProtocolChoice
    probe: LinearProbe
    class_names: list[str]  # classes the probe was fitted on
    evaluated: np.ndarray
    folds: list[str]
    labels: np.ndarray  # true class index (into class_names) per evaluated image
    predictions: np.ndarray  # predicted class index per evaluated image
    probabilities: np.ndarray  # (n_evaluated, n_classes)
    metrics: Metrics
    train: np.ndarray
    sweep: SweepResult  # how the exported probe's C was chosen
    used: np.ndarray  # indices into the embeddings that took part (tiny classes excluded)
    fold_sweeps: list[SweepResult] = field(default_factory=list)
    repeat_accuracies: list[float] = field(default_factory=list)
    duplicates: Duplicates | None = None
    label_issues: tuple[LabelIssue, ...] = ()  # flagged, and most like another class
    low_confidence_labels: tuple[LowConfidenceLabel, ...] = ()  # flagged, own class still first
    excluded_classes: list[str] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def chosen_c(self) -> float:
        return self.sweep.chosen_c


def choose_protocol(
    embeddings: Embeddings,
    used_labels: np.ndarray,
    protocol: str = "auto",
    n_folds: int = DEFAULT_FOLDS,
    n_repeats: int = 1,
    test_size: float = 0.25,
    groups: np.ndarray | None = None,
) -> ProtocolChoice:
    """Resolve ``auto`` and check that the asked-for protocol fits the data."""
    n_used = len(used_labels)
    if protocol not in PROTOCOLS:
        raise ProbeError(f"unknown protocol '{protocol}'; choose one of {', '.join(PROTOCOLS)}")
    if protocol == "given" and not embeddings.has_splits:
        raise ProbeError(
            "the 'given' protocol needs a folder whose top level is train/ and test/"
            " (optionally val/), each holding the class subfolders"
        )
    if protocol == "auto":
        if embeddings.has_splits:
            protocol, reason = "given", "the folder ships its own train/ and test/ folders"
        elif n_used <= AUTO_CV_LIMIT:
            protocol = "cv"
            reason = (
                f"{plural(n_used, 'image')} (up to {AUTO_CV_LIMIT:,}): every image can be scored"
            )
        else:
            protocol = "holdout"
            reason = f"{plural(n_used, 'image')} (more than {AUTO_CV_LIMIT:,}): one held-out split"
    else:
        reason = "asked for"
    if protocol == "cv":
        n_folds = fold_count(used_labels, n_folds, groups)
        return ProtocolChoice("cv", reason, n_folds=n_folds, n_repeats=max(1, n_repeats))
    return ProtocolChoice(protocol, reason, test_size=test_size if protocol == "holdout" else 0)


def run_probe(
    embeddings: Embeddings,
    *,
    protocol: str = "auto",
    folds: int = DEFAULT_FOLDS,
    repeats: int = 1,
    test_size: float = 0.25,
    seed: int = 0,
    probe: LinearProbe | None = None,
    split: Split | None = None,
    duplicate_threshold: float | None = DEFAULT_DUPLICATE_COSINE,
    groups: np.ndarray | None = None,
) -> ProbeResult:
    """Fit and score a linear probe under an evaluation protocol.

    ``probe`` sets the probe's parameters (a fixed C, the grid); it is cloned for every
    fit. ``split`` (indices into ``embeddings``) fixes the holdout split. Duplicates at
    cosine >= ``duplicate_threshold`` (or identical bytes) are kept together; ``None``
    turns grouping off. ``groups`` (one id per image) overrides the groups used for
    splitting, so that several encoders can be scored on exactly the same folds.
    """
    started = time.perf_counter()
    used, kept_names, messages = usable_classes(embeddings)
    if len(kept_names) < 2:
        found = ", ".join(kept_names) or "none"
        raise ProbeError(
            "a linear probe needs at least two classes with two or more usable images each"
            f" (classes with enough images: {found})"
            + ("; " + "; ".join(messages) if messages else "")
        )
    excluded = [n for n in embeddings.class_names if n not in kept_names]
    y = _class_indices(embeddings, kept_names)
    base = probe if probe is not None else LinearProbe(seed=seed)
    if split is not None and protocol == "auto":
        protocol = "holdout"
    duplicates = None
    split_groups = np.arange(len(embeddings))
    if duplicate_threshold is not None:
        digests = [d or f"row {i}" for i, d in enumerate(embeddings.sha256)]
        duplicates = find_duplicates(
            embeddings.vectors,
            digests,
            embeddings.labels,
            threshold=duplicate_threshold,
            splits=embeddings.splits if embeddings.has_splits else None,
        )
        split_groups = duplicates.group_of
    if groups is not None:
        split_groups = np.asarray(groups)
        if len(split_groups) != len(embeddings):
            raise ValueError(f"{len(split_groups)} groups for {len(embeddings)} images")

    choice = choose_protocol(
        embeddings, y[used], protocol, folds, repeats, test_size, split_groups[used]
    )
    lonely = classes_in_one_group(y[used], split_groups[used])
    if lonely and choice.name != "given" and split is None:
        names = ", ".join(kept_names[label] for label in lonely)
        raise ProbeError(
            f"every image of {names} is a duplicate of the others (identical files, or"
            " embeddings above the duplicate threshold), so none can be held out without its"
            " copies in training: raise the duplicate threshold or add distinct images"
        )

    X = embeddings.vectors
    if choice.name == "cv":
        scoring = _cross_validate(X, y, used, split_groups, base, choice, seed)
    elif choice.name == "holdout":
        scoring = _holdout(X, y, used, split_groups, base, split, test_size, seed)
    else:
        scoring = _given(embeddings, X, y, used, split_groups, base, kept_names)
    evaluated, probabilities = scoring.evaluated, scoring.probabilities
    predictions = np.argmax(probabilities, axis=1)
    metrics = compute_metrics(y[evaluated], predictions, probabilities, kept_names, seed=seed)
    review = review_labels(y[evaluated], probabilities, indices=evaluated)
    if duplicates is not None:
        messages += _duplicate_messages(duplicates, choice)
    return ProbeResult(
        protocol=choice,
        probe=scoring.final,
        class_names=kept_names,
        evaluated=evaluated,
        folds=scoring.folds,
        labels=y[evaluated],
        predictions=predictions,
        probabilities=probabilities,
        metrics=metrics,
        train=scoring.train,
        sweep=scoring.final.sweep_,
        used=used,
        fold_sweeps=scoring.fold_sweeps,
        repeat_accuracies=scoring.repeat_accuracies,
        duplicates=duplicates,
        label_issues=review.issues,
        low_confidence_labels=review.low_confidence,
        excluded_classes=excluded,
        messages=messages,
        seconds=time.perf_counter() - started,
    )


def probe_on_all_images(embeddings: Embeddings, result: ProbeResult) -> LinearProbe:
    """The probe to ship: fitted on every image that took part (``result.used``), at the C
    the protocol chose (by k-fold on all of them under ``cv``, on validation data carved
    from train under ``holdout``, on ``val/`` under ``given``).

    Under ``cv`` that is ``result.probe`` itself; otherwise ``result.probe`` was fitted on
    the training part only, and this refits it at its C on all images (the scored ones
    too: the metrics measured the recipe on images it never saw; the shipped probe gets
    every image to learn from).
    """
    if np.array_equal(np.sort(result.train), np.sort(result.used)):
        return result.probe
    y = _class_indices(embeddings, result.class_names)
    used = result.used
    refit = clone(result.probe).set_params(C=result.chosen_c)
    return refit.fit(embeddings.vectors[used], y[used])


def _class_indices(embeddings: Embeddings, class_names: list[str]) -> np.ndarray:
    """Each image's index into ``class_names`` (-1 for a class left out)."""
    remap = {embeddings.class_names.index(name): i for i, name in enumerate(class_names)}
    return np.array([remap.get(int(label), -1) for label in embeddings.labels], dtype=int)


@dataclass
class _Scoring:
    """What a protocol hands back: the scored images and the probe kept for export."""

    evaluated: np.ndarray
    folds: list[str]
    probabilities: np.ndarray
    final: LinearProbe
    train: np.ndarray
    fold_sweeps: list[SweepResult] = field(default_factory=list)
    repeat_accuracies: list[float] = field(default_factory=list)


def _probabilities(probe: LinearProbe, X: np.ndarray, n_classes: int) -> np.ndarray:
    """Probabilities with one column per kept class, zero for classes absent from training."""
    full = np.zeros((len(X), n_classes))
    full[:, probe.classes_] = probe.predict_proba(X)
    return full


def _cross_validate(X, y, used, groups, base, choice: ProtocolChoice, seed: int):
    n_classes = int(y[used].max()) + 1
    n_folds = choice.n_folds
    first_probabilities = np.zeros((len(used), n_classes))
    first_folds = [""] * len(used)
    fold_sweeps: list[SweepResult] = []
    repeat_accuracies: list[float] = []
    for repeat in range(choice.n_repeats):
        probabilities = np.zeros((len(used), n_classes))
        splits = cross_validation_folds(y[used], n_folds, seed=seed + repeat, groups=groups[used])
        for number, fold in enumerate(splits, start=1):
            train, test = used[fold.train], used[fold.test]
            model = clone(base).fit(X[train], y[train], groups=groups[train])
            probabilities[fold.test] = _probabilities(model, X[test], n_classes)
            if repeat == 0:
                fold_sweeps.append(model.sweep_)
                for position in fold.test:
                    first_folds[position] = str(number)
        repeat_accuracies.append(float(np.mean(np.argmax(probabilities, 1) == y[used])))
        if repeat == 0:
            first_probabilities = probabilities
    final = clone(base).set_params(selection="kfold").fit(X[used], y[used], groups=groups[used])
    return _Scoring(
        used,
        first_folds,
        first_probabilities,
        final,
        used,
        fold_sweeps,
        repeat_accuracies if choice.n_repeats > 1 else [],
    )


def _holdout(X, y, used, groups, base, split, test_size: float, seed: int):
    n_classes = int(y[used].max()) + 1
    if split is None:
        inner = stratified_split(y[used], test_size=test_size, seed=seed, groups=groups[used])
        split = Split(train=used[inner.train], test=used[inner.test])
    final = clone(base).fit(X[split.train], y[split.train], groups=groups[split.train])
    probabilities = _probabilities(final, X[split.test], n_classes)
    return _Scoring(split.test, [TEST_FOLD] * len(split.test), probabilities, final, split.train)


def _given(embeddings: Embeddings, X, y, used, groups, base, kept_names: list[str]):
    splits = np.array(embeddings.splits)
    train = used[np.isin(splits[used], ["train", "val"])]
    test = used[splits[used] == "test"]
    missing = []
    for part, rows in (("train", used[splits[used] == "train"]), ("test", test)):
        absent = [kept_names[k] for k in range(len(kept_names)) if k not in set(y[rows])]
        if absent:
            missing.append(f"{part}/ has no images of {', '.join(absent)}")
    if missing:
        raise ProbeError(
            "the train/ and test/ folders must hold the same classes: " + "; ".join(missing)
        )
    has_val = bool(np.any(splits[used] == "val"))
    if has_val:
        final = clone(base).fit(X[train], y[train], validation_mask=splits[train] == "val")
    else:
        final = clone(base).fit(X[train], y[train], groups=groups[train])
    probabilities = _probabilities(final, X[test], len(kept_names))
    return _Scoring(test, [TEST_FOLD] * len(test), probabilities, final, train)


def _duplicate_messages(duplicates: Duplicates, choice: ProtocolChoice) -> list[str]:
    messages = []
    if duplicates.groups:
        kept = "one fold" if choice.name == "cv" else "one side of the split"
        if choice.name != "given":
            n_groups = len(duplicates.groups)
            messages.append(
                f"{plural(n_groups, 'group')} of duplicate images"
                f" ({plural(duplicates.n_duplicate_images, 'image')})"
                f" {'was kept' if n_groups == 1 else 'were each kept'} in {kept}"
            )
    if duplicates.conflicts:
        n_conflicts = len(duplicates.conflicts)
        messages.append(
            f"{plural(n_conflicts, 'duplicate group')}"
            f" {'carries' if n_conflicts == 1 else 'carry'} different labels"
            f" ({plural(n_conflicts, 'label conflict')}): see duplicates.csv"
        )
    if choice.name == "given" and duplicates.leaks:
        leaked = sum(len(g.members) for g in duplicates.leaks)
        n_leaks = len(duplicates.leaks)
        messages.append(
            f"leakage: {plural(n_leaks, 'duplicate group')} ({plural(leaked, 'image')})"
            f" {'appears' if n_leaks == 1 else 'appear'} in both train/ and test/;"
            f" {'it was' if n_leaks == 1 else 'they were'} not moved (see duplicates.csv)"
        )
    return messages
