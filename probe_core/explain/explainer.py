"""Why did the probe decide this? One object that answers it for a run, image by image.

``Explainer`` holds a run's embeddings, its shipped probe (``ProbeWeights``: the probe fitted
on all images, as ``run`` writes it and the app exports it), the out-of-sample scores of the
run (``RunScores``: which rows were scored, in which fold, with which probabilities, and the
C of the probe that scored each fold) and, for saliency, the encoder. For one image it gives:

- its nearest images (``probe_core.explain.neighbours``), with whether each was in its fold;
- the saliency of the probe's decision (``probe_core.explain.saliency``) with its deletion
  check (``probe_core.explain.deletion``);
- its class's most and least typical images (``probe_core.explain.typicality``);

and for a class, its mean saliency and the possible-shortcut flag
(``probe_core.explain.shortcuts``).

**Which probe is explained.** An image the run scored was scored by a probe that never saw it
(under cross-validation, the probe of its fold); the shipped probe was fitted on every image,
this one included, and may decide otherwise. So "Why?" on a scored image explains the probe
that scored it: refitted at its fold's C on its fold's training images, and used only when it
reproduces the run's recorded probabilities for that fold (within ``SCORING_TOLERANCE``),
otherwise the shipped probe is explained and ``ImageExplanation.probe_fold`` is None. New
images, and images the run did not score, are explained with the shipped probe. The class
explained is, unless one is asked for, the explained probe's prediction.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..embeddings import Embeddings
from ..evaluation.protocols import TEST_FOLD, ProbeResult, probe_on_all_images
from ..images import ImageLoadError, load_image
from ..probe import LinearProbe, ProbeWeights
from .deletion import DeletionCheck, deletion_check
from .neighbours import DEFAULT_K, EXACT_LIMIT, NearestImages, NeighbourIndex, row_folds
from .saliency import SaliencyMap, SaliencyModel, SaliencyUnavailable
from .shortcuts import ClassSaliency, class_saliency
from .typicality import DEFAULT_COUNT, Typicality, class_typicality

DEFAULT_PER_CLASS = 8  # correctly predicted images averaged into a class's mean saliency
KEPT_EXPLANATIONS = 32  # explanations an Explainer keeps, latest used first out last
SCORING_TOLERANCE = 1e-4  # a refitted scoring probe must give the run's probabilities
PROBES = ("scoring", "shipped")


class ExplainError(ValueError):
    """An image or class that cannot be explained with this run (named in the message)."""


@dataclass(frozen=True)
class RunScores:
    """What the run measured out of sample: the scored rows (``evaluated``), the probe's
    probabilities for them (columns: the probe's classes), every row's fold (``row_folds``)
    and, to refit the probe that scored a fold, its C (``fold_c``, by fold name) and the
    probe's other parameters (``probe_params``, ``LinearProbe``'s)."""

    evaluated: np.ndarray
    probabilities: np.ndarray
    folds: np.ndarray
    fold_c: dict[str, float] = field(default_factory=dict)
    probe_params: dict = field(default_factory=dict)

    @classmethod
    def from_result(cls, result: ProbeResult, n_rows: int) -> RunScores:
        if result.protocol.name == "cv":
            fold_c = {str(n): s.chosen_c for n, s in enumerate(result.fold_sweeps, start=1)}
        else:
            fold_c = {TEST_FOLD: float(result.chosen_c)}
        return cls(
            np.asarray(result.evaluated, dtype=int),
            np.asarray(result.probabilities, dtype=np.float64),
            row_folds(result, n_rows),
            fold_c,
            dict(result.probe.get_params()),
        )

    def position(self, row: int) -> int | None:
        """Where ``row`` sits among the scored rows, or None when it was not scored."""
        found = np.flatnonzero(self.evaluated == row)
        return int(found[0]) if len(found) else None


@dataclass(frozen=True)
class ImageExplanation:
    """Everything "Why?" shows for one image."""

    name: str
    row: int | None  # the image's row in the run's embeddings, when it is one of them
    label: str | None  # its given class, when it is one of the run's images
    scored_prediction: str | None  # the run's out-of-sample prediction, when it was scored
    class_names: tuple[str, ...]  # the probe's classes
    probabilities: np.ndarray  # the explained probe's, for this image
    probe_fold: str | None  # the fold whose scoring probe is explained; None: the shipped one
    shipped_prediction: str  # what the shipped probe (fitted on every image) predicts
    explained_class: str
    neighbours: NearestImages
    saliency: SaliencyMap | None = None
    deletion: DeletionCheck | None = None
    no_saliency_reason: str | None = None  # why there is no map

    @property
    def predicted(self) -> str:
        """The explained probe's prediction."""
        return self.class_names[int(np.argmax(self.probabilities))]

    @property
    def explained_probability(self) -> float:
        """The explained probe's probability of the explained class."""
        return float(self.probabilities[list(self.class_names).index(self.explained_class)])

    @property
    def is_mistake(self) -> bool:
        """Whether the run's out-of-sample prediction disagreed with the given label."""
        return self.scored_prediction is not None and self.scored_prediction != self.label

    def probe_sentence(self) -> str:
        """Which probe is explained, in plain words."""
        if self.probe_fold is None:
            return "the shipped probe (fitted on every image of the run)"
        if self.probe_fold == TEST_FOLD:
            return "the probe that scored it (fitted on the training images, not on it)"
        return f"the probe that scored it in fold {self.probe_fold} (it never saw this image)"


@dataclass
class Explainer:
    """Explanations for one run: neighbours, typical images, saliency and its checks.

    ``read_image`` returns a run image's bytes by its path (None when it cannot be read);
    ``encoder`` (an ``Encoder``) is needed for saliency and for images outside the run, and
    ``saliency_model`` may be given to share one fp32 copy between explainers.
    """

    embeddings: Embeddings
    weights: ProbeWeights
    scores: RunScores | None = None
    encoder: object | None = None
    read_image: Callable[[str], bytes | None] | None = None
    saliency_model: SaliencyModel | None = None
    exact_limit: int = EXACT_LIMIT
    seed: int = 0
    _index: NeighbourIndex | None = field(default=None, init=False, repr=False)
    _typicality: dict = field(default_factory=dict, init=False, repr=False)
    _class_saliency: dict = field(default_factory=dict, init=False, repr=False)
    _rows_by_digest: dict | None = field(default=None, init=False, repr=False)
    _scoring: dict = field(default_factory=dict, init=False, repr=False)
    _explained: OrderedDict = field(default_factory=OrderedDict, init=False, repr=False)

    @classmethod
    def from_result(
        cls,
        embeddings: Embeddings,
        result: ProbeResult,
        encoder=None,
        *,
        encoder_name: str = "",
        read_image: Callable[[str], bytes | None] | None = None,
        saliency_model: SaliencyModel | None = None,
        weights: ProbeWeights | None = None,
    ) -> Explainer:
        """An explainer for a study's result (the app's and a notebook's way in).

        ``weights``: the probe to explain, by default the one a run ships (fitted on every
        image at the protocol's C, ``probe_on_all_images``; pass the app's or ``Study``'s to
        reuse its fit)."""
        if weights is None:
            name = encoder_name or (getattr(encoder, "name", "") if encoder is not None else "")
            weights = ProbeWeights.from_estimator(
                probe_on_all_images(embeddings, result),
                result.class_names,
                embeddings.encoder_id,
                encoder_name=name,
            )
        return cls(
            embeddings,
            weights,
            RunScores.from_result(result, len(embeddings)),
            encoder=encoder,
            read_image=read_image,
            saliency_model=saliency_model,
        )

    # ----------------------------------------------------------------------- neighbours

    @property
    def index(self) -> NeighbourIndex:
        if self._index is None:
            names = self.embeddings.class_names
            folds = self.scores.folds if self.scores is not None else None
            self._index = NeighbourIndex(
                self.embeddings.vectors,
                self.embeddings.paths,
                [names[int(label)] for label in self.embeddings.labels],
                folds,
                exact_limit=self.exact_limit,
                seed=self.seed,
            )
        return self._index

    def nearest_to_row(self, row: int, k: int = DEFAULT_K) -> NearestImages:
        return self.index.nearest_to_row(row, k)

    def row_of_path(self, path: str) -> int | None:
        try:
            return self.embeddings.paths.index(path)
        except ValueError:
            return None

    def row_of_bytes(self, data: bytes) -> int | None:
        """The run image with these exact bytes (by sha256), when there is one."""
        if self._rows_by_digest is None:
            self._rows_by_digest = {}
            for row, digest in enumerate(self.embeddings.sha256):
                if digest:
                    self._rows_by_digest.setdefault(digest, row)
        return self._rows_by_digest.get(hashlib.sha256(data).hexdigest())

    # ----------------------------------------------------------------------- typicality

    def typicality(self, by: str = "auto", count: int = DEFAULT_COUNT) -> dict[str, Typicality]:
        """Each class's most and least typical images (``class_typicality``)."""
        key = (by, count)
        if key not in self._typicality:
            scores = self.scores
            self._typicality[key] = class_typicality(
                self.embeddings.vectors,
                self.embeddings.labels,
                self.embeddings.class_names,
                self.embeddings.paths,
                evaluated=scores.evaluated if scores is not None else None,
                probabilities=scores.probabilities if scores is not None else None,
                probe_classes=self.weights.class_names,
                by=by,
                count=count,
            )
        return self._typicality[key]

    # ------------------------------------------------------------------------- saliency

    @property
    def saliency(self) -> SaliencyModel | None:
        """The fp32 model for saliency (made on first use), or None without an encoder."""
        if self.saliency_model is None and self.encoder is not None:
            self.saliency_model = SaliencyModel.from_encoder(self.encoder)
        return self.saliency_model

    @property
    def no_saliency_reason(self) -> str | None:
        if self.saliency is None:
            return "no encoder was given, so there is no saliency"
        return self.saliency.unavailable_reason

    def explain_row(
        self,
        row: int,
        class_name: str | None = None,
        *,
        k: int = DEFAULT_K,
        deletion: bool = True,
        data: bytes | None = None,
        name: str | None = None,
        probe: str = "scoring",
    ) -> ImageExplanation:
        """Explain one of the run's images (its bytes are read with ``read_image`` unless
        given as ``data``). ``probe``: ``"scoring"`` (the probe that scored it, when the run
        scored it and the refit reproduces the run) or ``"shipped"``."""
        if probe not in PROBES:
            raise ValueError(f"probe must be one of {', '.join(PROBES)}, got {probe!r}")
        key = ("row", row, class_name, k, deletion, name, probe)
        given = data is not None  # bytes given are kept under their own digest (explain_image)
        if not given and key in self._explained:
            return self._kept(key)
        if not 0 <= row < len(self.embeddings):
            raise ExplainError(f"row {row} is not one of the run's {len(self.embeddings)} images")
        path = self.embeddings.paths[row]
        if data is None and self.read_image is not None:
            data = self.read_image(path)
        label = self.embeddings.class_names[int(self.embeddings.labels[row])]
        scored = None
        position = self.scores.position(row) if self.scores is not None else None
        if position is not None:
            column = int(np.argmax(self.scores.probabilities[position]))
            scored = self.weights.class_names[column]
        explanation = self._explain(
            name or path,
            self.embeddings.vectors[row],
            data,
            class_name,
            k=k,
            deletion=deletion,
            row=row,
            label=label,
            scored=scored,
            scoring=probe == "scoring",
        )
        return explanation if given else self._keep(key, explanation)

    def scoring_weights(self, row: int) -> tuple[ProbeWeights, str] | None:
        """The probe that scored ``row`` and its fold, refitted at the fold's C on the fold's
        training images; None when the row was not scored or the refit does not reproduce
        the run's probabilities for the fold."""
        scores = self.scores
        if scores is None or scores.position(row) is None:
            return None
        fold = str(scores.folds[row])
        if fold not in self._scoring:
            self._scoring[fold] = self._refit(fold)
        weights = self._scoring[fold]
        return (weights, fold) if weights is not None else None

    def _refit(self, fold: str) -> ProbeWeights | None:
        scores = self.scores
        if fold not in scores.fold_c:
            return None
        names = list(self.weights.class_names)
        row_class = [names.index(n) if n in names else -1 for n in self.embeddings.class_names]
        y = np.array([row_class[int(label)] for label in self.embeddings.labels])
        folds = np.asarray(scores.folds, dtype=object)
        train = np.flatnonzero((folds != "") & (folds != fold) & (y >= 0))
        scored = np.flatnonzero(folds[scores.evaluated] == fold)
        params = {**scores.probe_params, "C": scores.fold_c[fold]}
        try:
            probe = LinearProbe(**params).fit(self.embeddings.vectors[train], y[train])
            weights = ProbeWeights.from_estimator(
                probe, names, self.weights.encoder_id, encoder_name=self.weights.encoder_name
            )
        except (ValueError, TypeError):  # e.g. a class missing from the fold's training part
            return None
        recorded = scores.probabilities[scored]
        refitted = weights.predict_proba(self.embeddings.vectors[scores.evaluated[scored]])
        if not np.allclose(refitted, recorded, atol=SCORING_TOLERANCE, rtol=0):
            return None
        return weights

    def explain_image(
        self,
        data: bytes,
        name: str,
        class_name: str | None = None,
        *,
        k: int = DEFAULT_K,
        deletion: bool = True,
        probe: str = "scoring",
    ) -> ImageExplanation:
        """Explain an image given as file bytes: one of the run's images when its bytes are
        (then its stored embedding is used), otherwise a new image, embedded here. ``probe`` as
        for ``explain_row``; a new image always gets the shipped probe."""
        key = ("bytes", hashlib.sha256(data).hexdigest(), name, class_name, k, deletion, probe)
        if key in self._explained:
            return self._kept(key)
        row = self.row_of_bytes(data)
        if row is not None:
            explanation = self.explain_row(
                row, class_name, k=k, deletion=deletion, data=data, name=name, probe=probe
            )
        else:
            explanation = self._explain(
                name, self._embed(data, name), data, class_name, k=k, deletion=deletion
            )
        return self._keep(key, explanation)

    def class_saliency(self, class_name: str, limit: int = DEFAULT_PER_CLASS) -> ClassSaliency:
        """The mean saliency of up to ``limit`` of the class's correctly predicted images
        (out of sample; a seeded sample when there are more), and its shortcut flag."""
        key = (class_name, limit)
        if key in self._class_saliency:
            return self._class_saliency[key]
        if class_name not in self.weights.class_names:
            raise ExplainError(
                f"unknown class {class_name!r}; the probe's classes are"
                f" {', '.join(self.weights.class_names)}"
            )
        model = self._saliency_model()
        maps = []
        for row in self.correct_rows(class_name, limit):
            data = self.read_image(self.embeddings.paths[row]) if self.read_image else None
            if data is None:
                continue
            try:
                image = load_image(data)
            except ImageLoadError:  # an unreadable image is left out of the mean
                continue
            maps.append(
                model.explain(image, self.weights, class_name, name=self.embeddings.paths[row])
            )
        self._class_saliency[key] = class_saliency(class_name, maps)
        return self._class_saliency[key]

    def correct_rows(self, class_name: str, limit: int = DEFAULT_PER_CLASS) -> list[int]:
        """Up to ``limit`` rows of ``class_name`` that the run predicted correctly out of
        sample (a seeded sample, in row order)."""
        if self.scores is None:
            return []
        column = list(self.weights.class_names).index(class_name)
        evaluated = self.scores.evaluated
        names = self.embeddings.class_names
        truth = np.array([names[int(label)] for label in self.embeddings.labels[evaluated]])
        predicted = np.argmax(self.scores.probabilities, axis=1)
        rows = evaluated[(truth == class_name) & (predicted == column)]
        if len(rows) > limit:
            rows = np.random.default_rng(self.seed).choice(rows, size=limit, replace=False)
        return sorted(int(row) for row in rows)

    # --------------------------------------------------------------------------- inside

    def _kept(self, key: tuple) -> ImageExplanation:
        self._explained.move_to_end(key)
        return self._explained[key]

    def _keep(self, key: tuple, explanation: ImageExplanation) -> ImageExplanation:
        """Explanations are kept (``KEPT_EXPLANATIONS``): saliency and its deletion check cost
        a forward and backward pass and some thirty forward passes, on a CPU seconds."""
        self._explained[key] = explanation
        while len(self._explained) > KEPT_EXPLANATIONS:
            self._explained.popitem(last=False)
        return explanation

    def _saliency_model(self) -> SaliencyModel:
        reason = self.no_saliency_reason
        if reason is not None:
            raise SaliencyUnavailable(reason)
        return self.saliency

    def _embed(self, data: bytes, name: str) -> np.ndarray:
        if self.encoder is None:
            raise ExplainError(f"{name}: not one of the run's images, and no encoder to embed it")
        if self.encoder.encoder_id != self.weights.encoder_id:
            raise ExplainError(
                f"the probe was fitted on embeddings of {self.weights.encoder_id}, not"
                f" {self.encoder.encoder_id}"
            )
        from ..dataset import ImageItem
        from ..embed import encode_items

        vectors, failures = encode_items([ImageItem(name, data, -1)], self.encoder, num_workers=0)
        if 0 not in vectors:
            raise ExplainError(f"{name}: {failures.get(0, 'could not be embedded')}")
        return vectors[0]

    def _explain(
        self,
        name: str,
        vector: np.ndarray,
        data: bytes | None,
        class_name: str | None,
        *,
        k: int,
        deletion: bool,
        row: int | None = None,
        label: str | None = None,
        scored: str | None = None,
        scoring: bool = True,
    ) -> ImageExplanation:
        if class_name is not None and class_name not in self.weights.class_names:
            raise ExplainError(
                f"unknown class {class_name!r}; the probe's classes are"
                f" {', '.join(self.weights.class_names)}"
            )
        neighbours = self.index.nearest(vector, k, query=name, query_index=row)
        vector = np.asarray(vector, np.float32)[None, :]
        shipped = self.weights.predict_proba(vector)[0]
        scoring = self.scoring_weights(row) if row is not None and scoring else None
        weights, fold = scoring if scoring is not None else (self.weights, None)
        probabilities = weights.predict_proba(vector)[0]
        explained = class_name or weights.class_names[int(np.argmax(probabilities))]
        saliency_map = check = None
        reason = self.no_saliency_reason
        if reason is None and data is None:
            reason = f"{name}: the image file cannot be read, so there is no saliency"
        if reason is None:
            try:
                image = load_image(data)
            except ImageLoadError as error:
                image, reason = None, f"{name}: {error}"
            if image is not None:
                model = self.saliency
                saliency_map = model.explain(image, weights, explained, name=name)
                if deletion:
                    check = deletion_check(model, image, saliency_map, weights, seed=self.seed)
        return ImageExplanation(
            name=name,
            row=row,
            label=label,
            scored_prediction=scored,
            class_names=tuple(weights.class_names),
            probabilities=probabilities,
            probe_fold=fold,
            shipped_prediction=weights.class_names[int(np.argmax(shipped))],
            explained_class=explained,
            neighbours=neighbours,
            saliency=saliency_map,
            deletion=check,
            no_saliency_reason=reason,
        )
