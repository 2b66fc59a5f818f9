"""One study end to end: scan -> embed (cache-aware) -> evaluate -> project.

The CLI, the app and ``bench/`` all drive this object, so the chain lives in one place::

    study = Study(StudySettings(protocol="cv"), cache=EmbeddingCache(), progress=print)
    outcome = study.run("assets/demo")
    print(outcome.result.metrics.accuracy)

Each stage is also callable on its own (the app embeds, evaluates and maps on demand).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from .cache import EmbeddingCache
from .dataset import ImageDataset, scan
from .embed import Embeddings, extract_embeddings
from .encoders import DEFAULT_ENCODER, Encoder, load_encoder
from .evaluation.duplicates import DEFAULT_DUPLICATE_COSINE
from .evaluation.protocols import DEFAULT_FOLDS, ProbeResult, run_probe
from .probe import LinearProbe
from .projection import Projection, project

STAGES = ("scan", "load encoder", "embed", "evaluate", "project")


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


@dataclass(frozen=True)
class StudyProgress:
    """One progress report: the stage, and for embedding how far along it is."""

    stage: str
    done: int = 0
    total: int = 0
    rate: float = 0.0  # images per second while embedding
    message: str = ""


ProgressListener = Callable[[StudyProgress], None]


@dataclass
class StudyOutcome:
    """What a whole study produced."""

    dataset: ImageDataset
    embeddings: Embeddings
    result: ProbeResult
    projection: Projection | None
    encoder_device: str


class Study:
    """Runs a study with the given settings; the encoder is loaded once, on first need.

    ``encoder`` may be given (the app shares one per server process); ``cache`` is the
    embedding cache (``None``: embed everything); ``progress`` receives ``StudyProgress``.
    """

    def __init__(
        self,
        settings: StudySettings | None = None,
        *,
        cache: EmbeddingCache | None = None,
        encoder: Encoder | None = None,
        progress: ProgressListener | None = None,
    ):
        self.settings = settings or StudySettings()
        self.cache = cache
        self._encoder = encoder
        self.progress = progress or (lambda event: None)

    @property
    def encoder(self) -> Encoder:
        if self._encoder is None:
            self.progress(StudyProgress("load encoder", message=self.settings.encoder))
            self._encoder = load_encoder(self.settings.encoder, device=self.settings.device)
        return self._encoder

    def scan(self, source: str | os.PathLike[str]) -> ImageDataset:
        self.progress(StudyProgress("scan", message=str(source)))
        return scan(source)

    def embed(self, dataset: ImageDataset) -> Embeddings:
        encoder = self.encoder

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
        )

    def evaluate(self, embeddings: Embeddings) -> ProbeResult:
        settings = self.settings
        self.progress(StudyProgress("evaluate", message=settings.protocol))
        return run_probe(
            embeddings,
            protocol=settings.protocol,
            folds=settings.folds,
            repeats=settings.repeats,
            test_size=settings.test_size,
            seed=settings.seed,
            probe=LinearProbe(seed=settings.seed, C=settings.fixed_c),
            duplicate_threshold=settings.duplicate_threshold,
        )

    def project(self, embeddings: Embeddings, **options) -> Projection:
        """The map of the embeddings (``settings.projection`` unless ``method=`` is given)."""
        options.setdefault("method", self.settings.projection)
        options.setdefault("seed", self.settings.seed)
        self.progress(StudyProgress("project", message=options["method"]))
        return project(embeddings.vectors, **options)

    def run(
        self,
        source: str | os.PathLike[str] | ImageDataset,
        on_result: Callable[[StudyOutcome], None] | None = None,
    ) -> StudyOutcome:
        """All stages; ``on_result`` sees the outcome before the (slower) map is made."""
        dataset = source if isinstance(source, ImageDataset) else self.scan(source)
        embeddings = self.embed(dataset)
        result = self.evaluate(embeddings)
        outcome = StudyOutcome(dataset, embeddings, result, None, str(self.encoder.device))
        if on_result is not None:
            on_result(outcome)
        if self.settings.projection != "none":
            outcome.projection = self.project(embeddings)
        return outcome
