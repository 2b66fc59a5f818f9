"""``probe-studio``: run a linear probe on an image folder from the terminal."""

from __future__ import annotations

from .openmp import let_idle_threads_sleep

let_idle_threads_sleep()  # before the imports below load torch and its OpenMP runtime

import argparse
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np

from .acceleration import ExecutionPath, PathChoice, PrecisionError
from .allocator import keep_freed_memory_for_reuse
from .cache import EmbeddingCache
from .dataset import ArchiveError, scan_unlabelled
from .devices import DeviceUnavailableError
from .distributed import (
    ENGINES,
    EmbedSettings,
    RayEngineError,
    embed_dataset,
    scan_source,
    write_embed_outputs,
)
from .embeddings import Embeddings
from .embeddings_io import EmbeddingsFileError, read_embeddings, read_for_comparison
from .encoders import (
    DEFAULT_ENCODER,
    FAMILIES,
    NAME_FORMS,
    DownloadProgress,
    EncoderError,
    fetch_weights,
    list_encoders,
    needs_download,
    ready_sets,
)
from .encoders.hub import hub_cache_dir
from .evaluation.comparison import comparison_table
from .evaluation.duplicates import DEFAULT_DUPLICATE_COSINE
from .evaluation.duplicates import summary as duplicates_summary
from .evaluation.fewshot import crossing_sentence
from .evaluation.intervals import CROSS_VALIDATION_CAVEAT
from .evaluation.protocols import AUTO_CV_LIMIT, DEFAULT_FOLDS, PROTOCOLS, ProbeResult
from .evaluation.zeroshot import TemplateError, parse_templates
from .explain.explainer import ExplainError
from .explain.run_dir import (
    RunFolderError,
    explain_images,
    open_run,
    summary_lines,
    write_explanations,
)
from .export import (
    LOW_CONFIDENCE_FILE,
    ProbeFileError,
    probe_weights,
    read_probe,
    skipped_table,
    write_comparison,
    write_map,
    write_probe_files,
    write_run,
)
from .onnx_export import DEFAULT_CHECK_IMAGES, OnnxExportError, export_run
from .path_decisions import PathDecisions
from .predict import ProbeMismatchError, encoder_for, predict_items, predictions_table
from .probe import ProbeError
from .result_cache import RESULTS_FOLDER, ResultCache
from .study import ComparisonOutcome, Study, StudyOutcome, StudyProgress, StudySettings
from .wording import plural

PRECISION_HELP = (
    "auto (default): on the CPU the fastest path faithful to fp32 (channels_last, folded batch"
    " norms, int8, bf16; cosine >= 0.999), measured once per machine, encoder and settings and"
    " kept beside the embedding cache (execution-paths/), so every later run takes the same"
    " path without timing anything; reduced-size JPEG decoding; fp16 on CUDA. fp32: the exact"
    " fp32 model and full-size decoding. A path name (e.g. fp32+channels_last, int8-dynamic)"
    " forces that path; onnx, onnx-int8: the encoder's exported graph in ONNX Runtime on the"
    " CPU (the [onnx] extra; exported once, checked at cosine >= 0.999)"
)


def _precision(value: str) -> str:
    """``auto`` or an execution path's name (``ExecutionPath.parse`` says what is wrong)."""
    if value != "auto":
        try:
            ExecutionPath.parse(value)
        except PrecisionError as error:
            raise argparse.ArgumentTypeError(str(error)) from error
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="probe-studio",
        description="How well does a frozen image encoder separate the classes in an image folder?",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser(
        "run", help="embed a folder (or .zip), fit a linear probe, write results"
    )
    run.add_argument(
        "folder", nargs="?", help="folder with one subfolder per class, or a .zip of one"
    )
    run.add_argument(
        "--embeddings",
        default=None,
        metavar="PATH",
        help="probe precomputed embeddings instead of images: a Parquet file or a folder of"
        " shards with columns path, label, vector (sha256 optional), e.g. from `embed`",
    )
    run.add_argument("--encoder", default=DEFAULT_ENCODER, help=f"default: {DEFAULT_ENCODER}")
    run.add_argument(
        "--out", default="probe-results", help="output folder (default: probe-results)"
    )
    run.add_argument("--projection", choices=("umap", "pca", "none"), default="umap")
    run.add_argument(
        "--precision",
        type=_precision,
        default="auto",
        metavar="{auto,fp32,onnx,onnx-int8,PATH}",
        help=PRECISION_HELP,
    )
    _add_study_options(run)
    compare = commands.add_parser(
        "compare",
        help="score several encoders on the same images and folds, and test every pair",
    )
    compare.add_argument(
        "folder", nargs="?", help="folder with one subfolder per class, or a .zip of one"
    )
    compare.add_argument(
        "--encoders",
        default=None,
        help="comma-separated encoder names, e.g."
        f" {DEFAULT_ENCODER},baseline:pixels,open_clip:ViT-B-32",
    )
    compare.add_argument(
        "--embeddings",
        default=None,
        help="instead of a folder and --encoders: comma-separated precomputed embeddings"
        " (Parquet files or folders of shards with path, label, vector), one per encoder,"
        " matched by path",
    )
    compare.add_argument(
        "--out", default="probe-comparison", help="output folder (default: probe-comparison)"
    )
    compare.add_argument(
        "--fewshot",
        action="store_true",
        help="also draw few-shot curves: accuracy with k = 1, 2, 4, ... images per class",
    )
    compare.add_argument(
        "--templates",
        default=None,
        help="zero-shot prompt templates, one per line with {} for the class name, in a"
        " text file (default: open_clip's ImageNet templates)",
    )
    _add_study_options(compare)
    _add_embed_command(commands)
    _add_predict_command(commands)
    _add_export_command(commands)
    _add_explain_command(commands)
    commands.add_parser(
        "encoders",
        help="list encoders: what is on disk, what each family offers, and ready sets to compare",
    )
    return parser


def _add_predict_command(commands: argparse._SubParsersAction) -> None:
    predict = commands.add_parser(
        "predict",
        help="classify new images with a run's probe (probe.safetensors or probe.json)",
    )
    predict.add_argument(
        "probe", metavar="RUN_DIR_OR_PROBE_FILE", help="a `run` output folder, or a probe file"
    )
    predict.add_argument(
        "images",
        nargs="+",
        metavar="IMAGES_OR_FOLDER_OR_ZIP",
        help="image files, folders (every image at any depth) or .zip archives of images",
    )
    predict.add_argument(
        "--out",
        default="predictions.csv",
        help="CSV of path,predicted,confidence and p(<class>) per class (default:"
        " predictions.csv); skipped files go beside it, to <name>.skipped.csv",
    )
    predict.add_argument(
        "--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, mps"
    )
    _add_pipeline_options(predict)


def _add_explain_command(commands: argparse._SubParsersAction) -> None:
    explain = commands.add_parser(
        "explain",
        help="why did the probe decide this? nearest images, saliency with its deletion check,"
        " and per-class shortcut flags, for images explained with a run's probe",
    )
    explain.add_argument("run_dir", metavar="RUN_DIR", help="a `probe-studio run` output folder")
    explain.add_argument(
        "images",
        nargs="+",
        metavar="IMAGE",
        help="images to explain (the run's own or new ones; folders and .zip archives too)",
    )
    explain.add_argument("--k", type=int, default=8, help="nearest images per image (default: 8)")
    explain.add_argument(
        "--class",
        dest="class_name",
        default=None,
        metavar="NAME",
        help="explain this class (default: the class the run predicted for a run image, the"
        " probe's prediction for a new one)",
    )
    explain.add_argument(
        "--out", default="probe-explanations", help="output folder (default: probe-explanations)"
    )
    explain.add_argument(
        "--per-class",
        type=int,
        default=8,
        metavar="N",
        help="correctly predicted images per class averaged into its mean saliency and"
        " shortcut check (default: 8; 0 skips it)",
    )
    explain.add_argument(
        "--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, mps"
    )


def _add_embed_command(commands: argparse._SubParsersAction) -> None:
    embed = commands.add_parser(
        "embed",
        help="embed a folder, .zip or s3:// / gs:// folder, here or on a Ray cluster, into"
        " embeddings.parquet and skipped.csv",
    )
    embed.add_argument(
        "source",
        help="folder with one subfolder per class, a .zip of one, or a pyarrow file-system URI"
        " of one (s3://bucket/prefix, gs://bucket/prefix, file:///path)",
    )
    embed.add_argument(
        "--engine",
        choices=ENGINES,
        default="local",
        help="local (default): this process; ray: Ray Data readers and decoding tasks, and an"
        ' actor pool of encoder replicas (needs pip install "probe-studio[ray]")',
    )
    embed.add_argument(
        "--address",
        default=None,
        help="ray: 'auto' (a running cluster) or ray://HOST:PORT; default: start a local one",
    )
    embed.add_argument("--encoder", default=DEFAULT_ENCODER, help=f"default: {DEFAULT_ENCODER}")
    embed.add_argument(
        "--out", default="probe-embeddings", help="output folder (default: probe-embeddings)"
    )
    embed.add_argument(
        "--actors",
        type=int,
        default=None,
        help="ray: encoder replicas (default: one per GPU; without GPUs, one per CPU but one)",
    )
    embed.add_argument(
        "--device", default="auto", help="local: auto (CUDA, then MPS, then CPU), cpu, cuda, mps"
    )
    embed.add_argument(
        "--precision",
        type=_precision,
        default="auto",
        metavar="{auto,fp32,onnx,onnx-int8,PATH}",
        help=PRECISION_HELP + " (on Ray every replica takes the path decided here)",
    )
    _add_pipeline_options(embed)
    embed.add_argument(
        "--cache-dir",
        default=None,
        help="embedding cache folder (a shared path for a cluster); the previous output in"
        " --out is reused as well",
    )
    embed.add_argument(
        "--no-cache", action="store_true", help="do not read or write the cache or reuse --out"
    )


def _add_export_command(commands: argparse._SubParsersAction) -> None:
    export = commands.add_parser(
        "export",
        help="a run's encoder and probe as one file that classifies anywhere"
        " (classifier.onnx, classifier.json, README.md), checked against predict",
    )
    export.add_argument("run_dir", metavar="RUN_DIR", help="a `run` output folder")
    export.add_argument("--format", choices=("onnx",), required=True)
    export.add_argument("--out", default=None, help="output folder (default: RUN_DIR/onnx)")
    export.add_argument(
        "--check-images",
        default=None,
        metavar="FOLDER_OR_ZIP",
        help="where the run's images are now, for the self-check (default: the source"
        " metrics.json records)",
    )
    export.add_argument(
        "--check-count",
        type=int,
        default=None,
        help="how many of the run's images the self-check classifies both ways"
        " (default: 128, the classes taking turns)",
    )


def _add_pipeline_options(command: argparse.ArgumentParser) -> None:
    """How the local pipeline batches and decodes (embed, run, compare)."""
    command.add_argument(
        "--batch-size", type=int, default=None, help="default: 256 on CUDA, 32 on MPS, 16 on CPU"
    )
    command.add_argument(
        "--workers",
        type=int,
        default=None,
        help="image-decoding worker processes (default: none on 2 cores or fewer, where a"
        " thread decodes; else one per core but one, up to 8)",
    )


def _add_study_options(command: argparse.ArgumentParser) -> None:
    """Options shared by run and compare: protocol, seed, device and cache."""
    command.add_argument(
        "--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, mps"
    )
    command.add_argument(
        "--protocol",
        choices=PROTOCOLS,
        default="auto",
        help="auto (default): given when the folder has train/ and test/, cv up to"
        f" {AUTO_CV_LIMIT:,} images, holdout above; cv: nested stratified k-fold, every"
        " image scored; holdout: one held-out split; given: the folder's own train/test."
        " In each, C is chosen on training images only, by the one-standard-error rule: the"
        " smallest C whose mean validation log loss is within one standard error of the"
        " lowest",
    )
    command.add_argument(
        "--folds",
        type=int,
        default=DEFAULT_FOLDS,
        help=f"cross-validation folds (default {DEFAULT_FOLDS}; fewer when a class is smaller)",
    )
    command.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="cv: re-run with other fold seeds and report the spread (default 1)",
    )
    command.add_argument(
        "--test-size", type=float, default=0.25, help="holdout: test fraction (default 0.25)"
    )
    command.add_argument("--seed", type=int, default=0)
    command.add_argument(
        "--duplicate-threshold",
        type=float,
        default=DEFAULT_DUPLICATE_COSINE,
        help="cosine similarity at which two images count as duplicates"
        f" (default {DEFAULT_DUPLICATE_COSINE}); identical files always do",
    )
    _add_pipeline_options(command)
    command.add_argument(
        "--cache-dir",
        default=None,
        help="cache folder: embeddings, and probe results in its results/ subfolder",
    )
    command.add_argument(
        "--no-cache", action="store_true", help="do not read or write either cache"
    )


def _study(args: argparse.Namespace, settings: StudySettings, progress: _ProgressPrinter) -> Study:
    """A study with both caches: embeddings in --cache-dir, probe results in its results/
    subfolder (the user's cache folder by default); neither with --no-cache."""
    decisions = PathDecisions.beside(args.cache_dir)
    if args.no_cache:
        return Study(settings, progress=progress, decisions=decisions)
    results = Path(args.cache_dir) / RESULTS_FOLDER if args.cache_dir else None
    return Study(
        settings,
        cache=EmbeddingCache(args.cache_dir),
        result_cache=ResultCache(results),
        progress=progress,
        decisions=decisions,
    )


def _settings(args: argparse.Namespace, **extra) -> StudySettings:
    return StudySettings(
        device=args.device,
        protocol=args.protocol,
        folds=args.folds,
        repeats=args.repeats,
        test_size=args.test_size,
        seed=args.seed,
        duplicate_threshold=args.duplicate_threshold,
        batch_size=args.batch_size,
        workers=args.workers,
        **extra,
    )


class _ProgressPrinter:
    """Study progress on the terminal: a tqdm bar while embedding, a line per other stage."""

    def __init__(self):
        self.bar = None

    def __call__(self, event: StudyProgress) -> None:
        if event.stage == "download":
            self._download(event)
            return
        if event.stage == "embed":
            if self.bar is not None and self.bar.unit != "img":
                self.close()
            if self.bar is None:
                from tqdm import tqdm

                self.bar = tqdm(total=event.total, unit="img", desc="embedding", file=sys.stderr)
            self.bar.total = event.total
            self.bar.n = event.done
            self.bar.set_postfix_str(f"{event.rate:.1f} img/s")
            self.bar.refresh()
            return
        self.close()
        if event.stage == "evaluate" and event.from_cache:
            print(
                "probe result from cache (same images, same settings): no refit",
                file=sys.stderr,
            )
        elif event.stage == "evaluate":
            print("fitting and scoring the probe…", file=sys.stderr)
        elif event.stage == "project" and event.from_cache:
            print(
                f"{event.message.upper()} map from cache (same embeddings, same settings)",
                file=sys.stderr,
            )
        elif event.stage == "project":
            print(f"computing the {event.message.upper()} map…", file=sys.stderr)

    def _download(self, event: StudyProgress) -> None:
        """Weights downloading: the size and destination first, then a tqdm bar in bytes."""
        from tqdm import tqdm

        if self.bar is None or self.bar.unit != "B":
            self.close()
            print(event.message, file=sys.stderr)
            self.bar = tqdm(
                total=event.total or None,
                unit="B",
                unit_scale=True,
                unit_divisor=1000,
                desc="downloading",
                file=sys.stderr,
            )
        self.bar.n = event.done
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _download_weights(name: str | None) -> None:
    """An encoder's weights that the Hugging Face cache lacks, fetched before a command loads
    the encoder: its size and destination first, then a tqdm bar in bytes (as run and compare
    show them); nothing when they are cached, or when the encoder has no hub weights."""
    if not name or not needs_download(name):
        return
    progress = _ProgressPrinter()

    def report(event: DownloadProgress) -> None:
        total = event.total_bytes or 0
        message = event.describe()
        progress(
            StudyProgress("download", event.done_bytes, total, event.bytes_per_second, message)
        )

    try:
        fetch_weights(name, report)
    finally:
        progress.close()


def _run(args: argparse.Namespace) -> int:
    if args.embeddings is not None:
        return _run_embeddings(args)
    if args.folder is None:
        print("error: give an image folder (or --embeddings PATH)", file=sys.stderr)
        return 2
    settings = _settings(
        args, encoder=args.encoder, projection=args.projection, precision=args.precision
    )
    progress = _ProgressPrinter()
    study = _study(args, settings, progress)
    dataset = study.scan(args.folder)
    print(
        f"{len(dataset)} image files in {len(dataset.class_names)} classes; "
        f"{len(dataset.skipped)} other files skipped while scanning"
    )
    if not dataset.items:
        print("error: no images found (expected one subfolder per class)", file=sys.stderr)
        return 2
    encoder = study.encoder
    print(
        f"encoder {encoder.encoder_id} ({encoder.dim}-d) on {encoder.device},"
        f" precision {encoder.precision}"
    )
    _print_path(encoder.path_choice)
    # asdict first: the device actually used replaces the requested "auto".
    recorded = asdict(settings) | {
        "source": str(args.folder),
        "device": str(encoder.device),
        "device_requested": settings.device,
        "precision": encoder.precision,
        "precision_requested": settings.precision,
        "execution_path": encoder.path_choice.record() if encoder.path_choice else None,
    }

    def on_result(outcome: StudyOutcome) -> None:
        progress.close()
        embeddings = outcome.embeddings
        print(
            f"embedded {plural(embeddings.n_computed, 'image')},"
            f" {embeddings.n_from_cache} from cache, in {embeddings.seconds:.1f} s"
        )
        write_run(args.out, embeddings, outcome.result, recorded)
        _write_probe(
            args.out,
            study,
            outcome,
            encoder_name=args.encoder,
            execution_path=encoder.precision,
            preprocess_id=encoder.preprocess_id,
        )
        _print_summary(embeddings, outcome.result)

    outcome = study.run(dataset, on_result=on_result)
    progress.close()
    if outcome.projection is not None:
        write_map(args.out, outcome.embeddings, outcome.result, outcome.projection)
    print(f"results written to {Path(args.out).resolve()}")
    return 0


def _print_path(choice: PathChoice | None) -> None:
    """Which execution path runs, and when it was decided (or why it was not measured)."""
    if choice is not None:
        print(f"execution path {choice.describe()}")


def _write_probe(out: str, study: Study, outcome: StudyOutcome, **details) -> None:
    """probe.safetensors and probe.json: the probe fitted on every image, at the C the
    protocol chose (``Study.final_probe``)."""
    result = outcome.result
    probe = study.final_probe(outcome.embeddings, result)
    write_probe_files(out, probe_weights(outcome.embeddings, result, probe, **details))


def _run_embeddings(args: argparse.Namespace) -> int:
    """``run --embeddings PATH``: the probe and the rest of ``run`` on precomputed vectors."""
    if args.folder is not None:
        print("error: give an image folder or --embeddings, not both", file=sys.stderr)
        return 2
    embeddings = read_embeddings(args.embeddings)
    print(
        f"{len(embeddings)} embeddings ({embeddings.dim}-d) in {len(embeddings.class_names)}"
        f" classes from {args.embeddings}; encoder {embeddings.encoder_id}"
    )
    for message in embeddings.messages:
        print(f"note: {message}")
    settings = _settings(args, encoder=embeddings.encoder_id, projection=args.projection)
    progress = _ProgressPrinter()
    study = _study(args, settings, progress)
    recorded = asdict(settings) | {"source": str(args.embeddings), "device": "precomputed"}

    def on_result(outcome: StudyOutcome) -> None:
        progress.close()
        write_run(args.out, outcome.embeddings, outcome.result, recorded)
        _write_probe(args.out, study, outcome)
        _print_summary(outcome.embeddings, outcome.result)

    outcome = study.run_embeddings(embeddings, on_result=on_result)
    progress.close()
    if outcome.projection is not None:
        write_map(args.out, outcome.embeddings, outcome.result, outcome.projection)
    print(f"results written to {Path(args.out).resolve()}")
    return 0


def _embed(args: argparse.Namespace) -> int:
    """``embed SOURCE``: embeddings.parquet and skipped.csv, locally or on a Ray cluster."""
    if args.engine == "local" and (args.address or args.actors):
        print("error: --address and --actors apply to --engine ray", file=sys.stderr)
        return 2
    dataset = scan_source(args.source)
    print(
        f"{len(dataset)} image files in {len(dataset.class_names)} classes; "
        f"{len(dataset.skipped)} other files skipped while scanning"
    )
    if not dataset.items:
        print("error: no images found (expected one subfolder per class)", file=sys.stderr)
        return 2
    if args.engine == "local":
        _download_weights(args.encoder)  # a cluster's workers fetch their own
    settings = EmbedSettings(
        engine=args.engine,
        encoder=args.encoder,
        device=args.device,
        precision=args.precision,
        address=args.address,
        actors=args.actors,
        batch_size=args.batch_size,
        workers=args.workers,
    )
    out = Path(args.out)
    progress = _ProgressPrinter()
    outcome = embed_dataset(
        dataset,
        settings,
        cache=None if args.no_cache else EmbeddingCache(args.cache_dir),
        previous_output=out / "embeddings.parquet",
        progress=lambda done, total, rate: progress(StudyProgress("embed", done, total, rate)),
        decisions=PathDecisions.beside(args.cache_dir),
    )
    progress.close()
    _print_path(outcome.path_choice)
    embeddings = outcome.embeddings
    print(
        f"embedded {plural(embeddings.n_computed, 'image')}, {embeddings.n_from_cache} from"
        f" cache, in {embeddings.seconds:.1f} s on {outcome.ran_on};"
        f" {len(embeddings.skipped)} skipped"
    )
    print(f"encoder {embeddings.encoder_id} ({embeddings.dim}-d)")
    write_embed_outputs(out, outcome)
    print(f"embeddings written to {out.resolve()}")
    print(f"probe them with: probe-studio run --embeddings {out / 'embeddings.parquet'}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    """``predict RUN_DIR_OR_PROBE_FILE IMAGES...``: predictions.csv (and the skipped files)."""
    weights = read_probe(args.probe)
    print(
        f"probe: {len(weights.class_names)} classes ({', '.join(weights.class_names)}),"
        f" encoder {weights.encoder_id}, path {weights.execution_path or 'not recorded'}"
    )
    images = scan_unlabelled(args.images)
    if not images.items:
        for item in images.skipped:
            print(f"skipped  {item.path}: {item.reason}", file=sys.stderr)
        print("error: no images to classify", file=sys.stderr)
        return 2
    _download_weights(weights.encoder_name)
    encoder, notes = encoder_for(weights, device=args.device)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    print(f"encoder {encoder.encoder_id} on {encoder.device}, precision {encoder.precision}")
    progress = _ProgressPrinter()
    predictions, failed = predict_items(
        images.items,
        encoder,
        weights,
        batch_size=args.batch_size,
        num_workers=args.workers,
        progress=lambda done, total, rate: progress(StudyProgress("embed", done, total, rate)),
    )
    progress.close()
    skipped = [*images.skipped, *failed]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    table = predictions_table(predictions, weights.class_names)
    table.to_csv(out, index=False)
    for item in skipped:
        print(f"skipped  {item.path}: {item.reason}", file=sys.stderr)
    if skipped:
        skipped_path = out.with_name(f"{out.stem}.skipped.csv")
        skipped_table(skipped).to_csv(skipped_path, index=False)
        print(f"{plural(len(skipped), 'file')} skipped, with their reasons in {skipped_path}")
    counts = table["predicted"].value_counts()
    summary = ", ".join(f"{name} {counts.get(name, 0)}" for name in weights.class_names)
    print(f"{plural(len(table), 'image')} classified: {summary}")
    print(f"predictions written to {out.resolve()}")
    return 0


def _export(args: argparse.Namespace) -> int:
    """``export RUN_DIR --format onnx``: classifier.onnx, classifier.json, README.md."""
    exported = export_run(
        args.run_dir,
        args.out,
        check_images=args.check_images,
        n_check=args.check_count or DEFAULT_CHECK_IMAGES,
        log=print,
    )
    for path in exported.files:
        print(f"wrote {path}")
    return 0


def _explain(args: argparse.Namespace) -> int:
    """``explain RUN_DIR IMAGE...``: neighbours.csv, saliency.npz, overlays, deletion.csv."""
    if args.k < 1 or args.per_class < 0:
        print("error: --k must be at least 1 and --per-class at least 0", file=sys.stderr)
        return 2
    run = open_run(args.run_dir, device=args.device)
    images = scan_unlabelled(args.images)
    if not images.items:
        for item in images.skipped:
            print(f"skipped  {item.path}: {item.reason}", file=sys.stderr)
        print("error: no images to explain", file=sys.stderr)
        return 2
    outcome = explain_images(
        run.explainer,
        images.items,
        k=args.k,
        class_name=args.class_name,
        per_class=args.per_class,
        progress=lambda what: print(f"explaining {what}…", file=sys.stderr),
    )
    outcome.skipped[:0] = images.skipped
    write_explanations(args.out, outcome)
    for line in summary_lines(run, outcome):
        print(line)
    print(f"explanations written to {Path(args.out).resolve()}")
    return 0 if outcome.explanations else 2


def _print_summary(embeddings: Embeddings, result: ProbeResult) -> None:
    metrics = result.metrics
    protocol = result.protocol
    print()
    print(f"protocol         {protocol.describe()}; {protocol.reason}")
    print(f"scored           {protocol.scored_sentence(len(result.evaluated))}")
    print(
        f"images used      {len(result.used)} ({len(result.evaluated)} evaluated);"
        f" {len(embeddings.skipped)} skipped"
    )
    print(f"classes          {len(result.class_names)}: {', '.join(result.class_names)}")
    for message in result.messages:
        print(f"note             {message}")
    chosen = f"{result.chosen_c:.3g} ({result.sweep.described})"
    if result.fold_sweeps:
        per_fold = ", ".join(f"{sweep.chosen_c:.3g}" for sweep in result.fold_sweeps)
        chosen += f"; inside each training fold: {per_fold}"
    print(f"chosen C         {chosen}")
    print(f"accuracy         {metrics.accuracy}   chance {metrics.chance_accuracy:.3f}")
    if result.repeat_accuracies:
        spread = result.repeat_accuracies
        print(
            f"across repeats   accuracy {min(spread):.3f}-{max(spread):.3f}"
            f" (sd {np.std(spread):.3f}) over {len(spread)} fold seeds"
        )
    print(f"balanced acc.    {metrics.balanced_accuracy}")
    print(f"macro F1         {metrics.macro_f1}")
    if metrics.top5_accuracy is not None:
        print(f"top-5 accuracy   {metrics.top5_accuracy}")
    print(f"intervals        {metrics.accuracy.method}; see the README for what they mean")
    if protocol.name == "cv":
        print(f"                 {CROSS_VALIDATION_CAVEAT}")
    if result.duplicates is not None:
        print(f"duplicates       {duplicates_summary(result.duplicates)} (duplicates.csv)")
    issues, unsure = result.label_issues, result.low_confidence_labels
    images = "image looks" if len(issues) == 1 else "images look"
    print(f"label issues     {len(issues)} {images} like another class (label_issues.csv)")
    indent = " " * 17
    for issue in issues[:5]:
        print(f"{indent}{embeddings.paths[issue.index]}: {issue.sentence(result.class_names)}")
    if unsure:
        images = "image has" if len(unsure) == 1 else "images have"
        print(
            f"low confidence   {len(unsure)} more flagged {images} low confidence in their own"
            f" label, which is still the most likely ({LOW_CONFIDENCE_FILE})"
        )
        for item in unsure[:3]:
            print(f"{indent}{embeddings.paths[item.index]}: {item.sentence(result.class_names)}")
    for skipped in embeddings.skipped[:10]:
        print(f"skipped          {skipped.path}: {skipped.reason}")
    if len(embeddings.skipped) > 10:
        print(f"skipped          ... and {len(embeddings.skipped) - 10} more (see skipped.csv)")


def _compare(args: argparse.Namespace) -> int:
    if args.embeddings is not None:
        return _compare_embeddings(args)
    if args.folder is None or args.encoders is None:
        print("error: give a folder and --encoders (or --embeddings A,B)", file=sys.stderr)
        return 2
    names = [name.strip() for name in args.encoders.split(",") if name.strip()]
    templates = None
    if args.templates:
        try:
            templates = parse_templates(Path(args.templates).read_text(encoding="utf-8"))
        except TemplateError as error:
            print(f"error: {args.templates}: {error}", file=sys.stderr)
            return 2
    progress = _ProgressPrinter()
    study = _study(args, _settings(args), progress)
    dataset = study.scan(args.folder)
    if not dataset.items:
        print("error: no images found (expected one subfolder per class)", file=sys.stderr)
        return 2
    outcome = study.compare(dataset, names, fewshot=args.fewshot, zero_shot_templates=templates)
    return _finish_comparison(args, progress, outcome)


def _compare_embeddings(args: argparse.Namespace) -> int:
    """``compare --embeddings A,B``: the comparison of precomputed embeddings, one file (or
    folder of shards) per encoder, named by the encoder id each records."""
    if args.folder is not None or args.encoders is not None:
        print("error: give --embeddings, or a folder and --encoders, not both", file=sys.stderr)
        return 2
    sources = [part.strip() for part in args.embeddings.split(",") if part.strip()]
    embeddings = read_for_comparison(sources)
    for name, opened in embeddings.items():
        print(f"{len(opened)} embeddings ({opened.dim}-d) from {opened.source}: {name}")
        for message in opened.messages:
            print(f"note       {opened.source}: {message}")
    if len(embeddings) < 2:
        print("error: --embeddings needs at least two files", file=sys.stderr)
        return 2
    progress = _ProgressPrinter()
    study = _study(args, _settings(args), progress)
    return _finish_comparison(
        args, progress, study.compare_embeddings(embeddings, fewshot=args.fewshot)
    )


def _finish_comparison(
    args: argparse.Namespace, progress: _ProgressPrinter, outcome: ComparisonOutcome
) -> int:
    """Write and print a comparison (compare, from images or from embeddings)."""
    progress.close()
    write_comparison(args.out, outcome)
    _print_comparison(outcome)
    print(f"results written to {Path(args.out).resolve()}")
    return 0


def _print_comparison(outcome: ComparisonOutcome) -> None:
    comparison = outcome.comparison
    protocol = comparison.protocol
    print()
    print(f"protocol   {protocol.describe()}; the same folds for every encoder")
    print(f"scored     {protocol.scored_sentence(len(comparison.paths))}")
    print()
    print(comparison_table(comparison).round(3).to_string(index=False))
    print()
    for pair in comparison.pairs:
        print(
            f"{pair.sentence()} (only {pair.a} right: {pair.only_a_correct},"
            f" only {pair.b} right: {pair.only_b_correct})"
        )
    for name, result in outcome.zero_shot.items():
        if result.available:
            print(f"zero-shot  {name}: accuracy {result.accuracy}")
        else:
            print(f"zero-shot  {result.reason}")
    accuracies = outcome.zero_shot_accuracies()
    for curve in outcome.fewshot:
        points = ", ".join(f"k={p.k}: {p.accuracy:.3f}" for p in curve.points)
        print(f"few-shot   {curve.encoder}: {points or 'no curve'}")
        if curve.encoder in accuracies:
            print(f"           {crossing_sentence(curve, accuracies[curve.encoder])}")
        for message in curve.messages:
            print(f"           {message}")
    for warning in outcome.warnings:
        print(f"warning    {warning}")
    for message in comparison.messages:
        print(f"note       {message}")


def _encoders() -> int:
    """Every model in the Hugging Face cache first, then each family's short list, the name
    forms, and ready-made sets for ``compare``."""
    infos = list_encoders()
    on_disk = [info for info in infos if info.on_disk]
    width = max(len(info.status) for info in infos)  # one column, whatever the statuses
    print(f"on disk (the Hugging Face cache, {hub_cache_dir()})")
    for info in on_disk:
        _print_encoder(info, width)
    if not on_disk:
        print("  nothing yet: hub models are kept there once downloaded")
    for family in FAMILIES:
        listed = [info for info in infos if info.family == family and not info.on_disk]
        if listed:
            print(f"\n{family}")
            for info in listed:
                _print_encoder(info, width)
    print("\nany name works, in these forms:")
    for form in NAME_FORMS:
        print(f"  {form}")
    print("\nready sets for `probe-studio compare FOLDER --encoders ...`:")
    for ready in ready_sets(infos):
        print(f"  {ready.label}: {','.join(ready.names)}")
    return 0


def _print_encoder(info, status_width: int) -> None:
    print(f"  {info.name:45s} {info.status:{status_width}s} {info.description}")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    keep_freed_memory_for_reuse()
    try:
        if args.command == "encoders":
            return _encoders()
        if args.command == "compare":
            return _compare(args)
        if args.command == "embed":
            return _embed(args)
        if args.command == "predict":
            return _predict(args)
        if args.command == "export":
            return _export(args)
        if args.command == "explain":
            return _explain(args)
        return _run(args)
    except (
        EncoderError,
        DeviceUnavailableError,
        ProbeError,
        ArchiveError,
        EmbeddingsFileError,
        RayEngineError,
        ProbeFileError,
        ProbeMismatchError,
        OnnxExportError,
        RunFolderError,
        ExplainError,
        FileNotFoundError,
        NotADirectoryError,
    ) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
