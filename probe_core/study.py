"""One study end to end: scan -> embed (cache-aware) -> evaluate -> project.

The CLI, the app and ``bench/`` all drive this object, so the chain lives in one place::

    study = Study(StudySettings(protocol="cv"), cache=EmbeddingCache(), progress=print)
    outcome = study.run("assets/demo")
    print(outcome.result.metrics.accuracy)

Each stage is also callable on its own (the app embeds, evaluates and maps on demand).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from .cache import EmbeddingCache
from .dataset import ImageDataset, scan
from .embed import EncodeItems, encode_items, extract_embeddings
from .embeddings import Embeddings
from .encoders import DEFAULT_ENCODER, DownloadProgress, Encoder, is_weight_free, load_encoder
from .evaluation.comparison import (
    Comparison,
    align_by_path,
    baseline_warnings,
    compare_encoders,
)
from .evaluation.duplicates import DEFAULT_DUPLICATE_COSINE
from .evaluation.fewshot import FewShotCurve, fewshot_curve
from .evaluation.protocols import DEFAULT_FOLDS, ProbeResult, probe_on_all_images, run_probe
from .evaluation.zeroshot import ZeroShotResult, zero_shot
from .path_decisions import PathDecisions
from .probe import LinearProbe, ProbeError
from .projection import Projection, project
from .result_cache import ResultCache, map_key, result_key

STAGES = ("scan", "load encoder", "download", "embed", "evaluate", "few-shot", "project")
THROUGHPUT_SAMPLE = 32  # images timed per encoder when the cache held the embeddings


@dataclass(frozen=True)
class StudySettings:
    """Every setting that changes a study's numbers."""

    encoder: str = DEFAULT_ENCODER
    device: str = "auto"
    protocol: str = "auto"
    folds: int = DEFAULT_FOLDS
    repeats: int = 1
    test_size: float = 0.25
    seed: int = 0
    fixed_c: float | None = None
    duplicate_threshold: float | None = DEFAULT_DUPLICATE_COSINE
    projection: str = "umap"  # "umap" | "pca" | "none"
    batch_size: int | None = None
    workers: int | None = None
    precision: str = "auto"  # "auto" (fastest faithful path) | "fp32" (exact); see encoders


@dataclass(frozen=True)
class StudyProgress:
    """One progress report: the stage, and for embedding how far along it is.

    ``from_cache``: an "evaluate" or "project" stage served from the result cache (the same
    embeddings with the same settings), so nothing is fitted or computed."""

    stage: str
    done: int = 0
    total: int = 0
    rate: float = 0.0  # images per second while embedding (bytes per second: "download")
    message: str = ""
    from_cache: bool = False


ProgressListener = Callable[[StudyProgress], None]


@dataclass
class ComparisonOutcome:
    """Several encoders scored on the same images and folds, with what helps decide."""

    dataset: ImageDataset | None  # None when compared from precomputed embeddings
    embeddings: dict[str, Embeddings]  # aligned: the same images in the same order
    comparison: Comparison
    fewshot: list[FewShotCurve]
    zero_shot: dict[str, ZeroShotResult]
    warnings: list[str]  # e.g. "a trivial baseline does about as well"

    def zero_shot_accuracies(self) -> dict[str, float]:
        return {
            name: result.accuracy.value
            for name, result in self.zero_shot.items()
            if result.available and result.accuracy is not None
        }


@dataclass
class StudyOutcome:
    """What a whole study produced."""

    dataset: ImageDataset | None  # None when the study started from precomputed embeddings
    embeddings: Embeddings
    result: ProbeResult
    projection: Projection | None
    encoder_device: str


class Study:
    """Runs a study with the given settings; the encoder is loaded once, on first need.

    ``encoder`` may be given (the app shares one per server process); ``cache`` is the
    embedding cache (``None``: embed everything); ``result_cache`` keeps probe results, so
    the same embeddings with the same settings are not refitted (``None``: always fit);
    ``progress`` receives ``StudyProgress``; ``encode`` embeds what the cache lacks (default
    ``embed.encode_items``; the app passes its cross-session queue's).
    """

    def __init__(
        self,
        settings: StudySettings | None = None,
        *,
        cache: EmbeddingCache | None = None,
        result_cache: ResultCache | None = None,
        encoder: Encoder | None = None,
        progress: ProgressListener | None = None,
        encode: EncodeItems | None = None,
        decisions: PathDecisions | None = None,
    ):
        self.settings = settings or StudySettings()
        self.encode = encode
        self.decisions = decisions  # where execution paths are decided and kept (None: default)
        self.cache = cache
        self.result_cache = result_cache
        self._encoder = encoder
        self.progress = progress or (lambda event: None)

    @property
    def encoder(self) -> Encoder:
        if self._encoder is None:
            self.progress(StudyProgress("load encoder", message=self.settings.encoder))
            self._encoder = load_encoder(
                self.settings.encoder,
                device=self.settings.device,
                precision=self.settings.precision,
                download_progress=self._report_download,
                decisions=self.decisions,
            )
        return self._encoder

    def _report_download(self, report: DownloadProgress) -> None:
        """Weights downloading while an encoder loads: a "download" event in bytes."""
        self.progress(
            StudyProgress(
                "download",
                report.done_bytes,
                report.total_bytes or 0,
                report.bytes_per_second,
                report.describe(),
            )
        )

    def scan(self, source: str | os.PathLike[str]) -> ImageDataset:
        self.progress(StudyProgress("scan", message=str(source)))
        return scan(source)

    def embed(self, dataset: ImageDataset, encoder: Encoder | None = None) -> Embeddings:
        """The dataset's embeddings by the settings' encoder (or ``encoder``), cache-aware."""
        encoder = self.encoder if encoder is None else encoder

        def report(done: int, total: int, rate: float) -> None:
            self.progress(StudyProgress("embed", done, total, rate))

        report(0, len(dataset), 0.0)
        return extract_embeddings(
            dataset,
            encoder,
            batch_size=self.settings.batch_size,
            num_workers=self.settings.workers,
            cache=self.cache,
            progress=report,
            encode=self.encode,
        )

    def _probe_options(self) -> dict:
        """``run_probe``'s arguments for these settings."""
        settings = self.settings
        return {
            "protocol": settings.protocol,
            "folds": settings.folds,
            "repeats": settings.repeats,
            "test_size": settings.test_size,
            "seed": settings.seed,
            "probe": LinearProbe(seed=settings.seed, C=settings.fixed_c),
            "duplicate_threshold": settings.duplicate_threshold,
        }

    def evaluate(self, embeddings: Embeddings) -> ProbeResult:
        """Fit and score the probe, or take the result of the same embeddings and settings
        from the result cache (reported as an "evaluate" event with ``from_cache``)."""
        settings = self.settings
        options = self._probe_options()
        cache = self.result_cache
        key = result_key(embeddings, **options) if cache is not None else ""
        cached = cache.lookup(key) if cache is not None else None
        if cached is not None:
            self.progress(StudyProgress("evaluate", message=settings.protocol, from_cache=True))
            return cached
        self.progress(StudyProgress("evaluate", message=settings.protocol))
        result = run_probe(embeddings, **options)
        if cache is not None:
            cache.store(key, result)
        return result

    def final_probe(self, embeddings: Embeddings, result: ProbeResult) -> LinearProbe:
        """The probe to ship (``probe_on_all_images``: every image, the protocol's C); a
        refit under holdout/given is kept in the result cache beside ``result``."""
        cache = self.result_cache
        if cache is None or np.array_equal(np.sort(result.train), np.sort(result.used)):
            return probe_on_all_images(embeddings, result)
        evaluated = result_key(embeddings, **self._probe_options())
        key = hashlib.sha256(f"probe on all images|{evaluated}".encode()).hexdigest()
        cached = cache.lookup(key)
        if cached is not None:
            return cached.probe
        probe = probe_on_all_images(embeddings, result)
        cache.store(key, replace(result, probe=probe))
        return probe

    def project(self, embeddings: Embeddings, **options) -> Projection:
        """The map of the embeddings (``settings.projection`` unless ``method=`` is given),
        scored against the embeddings' labels (``Projection.score``)."""
        options.setdefault("method", self.settings.projection)
        options.setdefault("seed", self.settings.seed)
        options.setdefault("labels", embeddings.labels)
        cache = self.result_cache
        key = map_key(embeddings, **options) if cache is not None else ""
        cached = cache.lookup_map(key) if cache is not None else None
        if cached is not None:
            self.progress(StudyProgress("project", message=options["method"], from_cache=True))
            return cached
        self.progress(StudyProgress("project", message=options["method"]))
        projection = project(embeddings.vectors, **options)
        if cache is not None:
            cache.store(key, projection)
        return projection

    def compare(
        self,
        source: str | os.PathLike[str] | ImageDataset,
        encoder_names: Sequence[str],
        *,
        encoders: Mapping[str, Encoder] | None = None,
        fewshot: bool = False,
        zero_shot_templates: Sequence[str] | None = None,
    ) -> ComparisonOutcome:
        """Embed with every encoder (from the cache where possible), then score them all on
        the same folds, test every pair, and add few-shot curves and zero-shot if asked.
        ``study.encoder`` stays the one ``settings.encoder`` names."""
        names = list(dict.fromkeys(encoder_names))
        if len(names) < 2:
            raise ProbeError("a comparison needs at least two different encoders")
        dataset = source if isinstance(source, ImageDataset) else self.scan(source)
        loaded = dict(encoders or {})
        if self._encoder is not None:
            loaded.setdefault(self.settings.encoder, self._encoder)
        embeddings: dict[str, Embeddings] = {}
        rates: dict[str, float] = {}
        for name in names:
            encoder = loaded.get(name) or load_encoder(
                name,
                device=self.settings.device,
                precision=self.settings.precision,
                download_progress=self._report_download,
                decisions=self.decisions,
            )
            loaded[name] = encoder
            if name == self.settings.encoder and self._encoder is None:
                self._encoder = encoder  # the settings' own encoder: kept for later stages
            self.progress(StudyProgress("load encoder", message=name))
            embeddings[name] = self.embed(dataset, encoder)
            rates[name] = self._images_per_second(dataset, encoder, embeddings[name])
        return self._compare_embedded(
            dataset, embeddings, loaded, rates, fewshot, zero_shot_templates
        )

    def compare_embeddings(
        self, embeddings: Mapping[str, Embeddings], *, fewshot: bool = False
    ) -> ComparisonOutcome:
        """``compare`` from precomputed embeddings (e.g. several ``embeddings.parquet``), one
        set per name, matched by path; zero-shot needs an encoder, so it is reported as not
        available."""
        if len(embeddings) < 2:
            raise ProbeError("a comparison needs at least two sets of embeddings")
        return self._compare_embedded(None, dict(embeddings), {}, {}, fewshot, None)

    def _compare_embedded(
        self,
        dataset: ImageDataset | None,
        embeddings: dict[str, Embeddings],
        encoders: Mapping[str, Encoder],
        rates: dict[str, float],
        fewshot: bool,
        zero_shot_templates: Sequence[str] | None,
    ) -> ComparisonOutcome:
        names = list(embeddings)
        settings = self.settings
        self.progress(StudyProgress("evaluate", message="comparison"))
        comparison = compare_encoders(
            embeddings,
            protocol=settings.protocol,
            folds=settings.folds,
            repeats=settings.repeats,
            test_size=settings.test_size,
            seed=settings.seed,
            duplicate_threshold=settings.duplicate_threshold,
            images_per_second=rates or None,
            probe=LinearProbe(seed=settings.seed, C=settings.fixed_c),
            near_duplicate_encoders=[n for n in names if not is_weight_free(n)] or names,
        )
        aligned, _ = align_by_path(embeddings)
        zero_shots = {
            name: zero_shot(
                aligned[name],
                encoders[name],
                comparison.results[name],
                templates=zero_shot_templates,
            )
            if name in encoders
            else ZeroShotResult(
                name,
                available=False,
                reason=f"{name}: precomputed embeddings carry no text tower, so zero-shot is"
                " not available",
            )
            for name in names
        }
        curves = []
        if fewshot:
            for name in names:
                self.progress(StudyProgress("few-shot", message=name))
                curves.append(
                    fewshot_curve(
                        aligned[name],
                        comparison.results[name],
                        seed=settings.seed,
                        encoder_name=name,
                        groups=comparison.groups,
                    )
                )
        return ComparisonOutcome(
            dataset=dataset,
            embeddings=aligned,
            comparison=comparison,
            fewshot=curves,
            zero_shot=zero_shots,
            warnings=baseline_warnings(comparison, is_weight_free),
        )

    def _images_per_second(
        self, dataset: ImageDataset, encoder: Encoder, embeddings: Embeddings
    ) -> float:
        """The encoder's throughput, files to vectors: measured while embedding, or, when
        the cache supplied (nearly) everything, on a small sample of the images."""
        if embeddings.n_computed >= THROUGHPUT_SAMPLE and embeddings.seconds > 0:
            return embeddings.n_computed / embeddings.seconds
        sample = dataset.items[:THROUGHPUT_SAMPLE]
        if not sample:
            return float("nan")
        started = time.perf_counter()
        encode_items(sample, encoder, batch_size=self.settings.batch_size, num_workers=0)
        return len(sample) / (time.perf_counter() - started)

    def run(
        self,
        source: str | os.PathLike[str] | ImageDataset,
        on_result: Callable[[StudyOutcome], None] | None = None,
    ) -> StudyOutcome:
        """All stages; ``on_result`` sees the outcome before the (slower) map is made."""
        dataset = source if isinstance(source, ImageDataset) else self.scan(source)
        embeddings = self.embed(dataset)
        return self._evaluate_and_project(dataset, embeddings, str(self.encoder.device), on_result)

    def run_embeddings(
        self,
        embeddings: Embeddings,
        on_result: Callable[[StudyOutcome], None] | None = None,
    ) -> StudyOutcome:
        """``run`` from precomputed embeddings (``embeddings_io.read_embeddings``): no scan and
        no encoder; the outcome has no dataset and ``encoder_device`` "precomputed"."""
        return self._evaluate_and_project(None, embeddings, "precomputed", on_result)

    def _evaluate_and_project(
        self,
        dataset: ImageDataset | None,
        embeddings: Embeddings,
        encoder_device: str,
        on_result: Callable[[StudyOutcome], None] | None,
    ) -> StudyOutcome:
        result = self.evaluate(embeddings)
        outcome = StudyOutcome(dataset, embeddings, result, None, encoder_device)
        if on_result is not None:
            on_result(outcome)
        if self.settings.projection != "none":
            outcome.projection = self.project(embeddings)
        return outcome
