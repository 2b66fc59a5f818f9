"""``probe-studio``: run a linear probe on an image folder from the terminal."""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np

from .allocator import keep_freed_memory_for_reuse
from .cache import EmbeddingCache
from .dataset import ArchiveError
from .embed import Embeddings
from .encoders import DEFAULT_ENCODER, EncoderError, list_encoders
from .evaluation.duplicates import DEFAULT_DUPLICATE_COSINE
from .evaluation.duplicates import summary as duplicates_summary
from .evaluation.intervals import CROSS_VALIDATION_CAVEAT
from .evaluation.protocols import AUTO_CV_LIMIT, DEFAULT_FOLDS, PROTOCOLS, ProbeResult
from .export import write_map, write_run
from .probe import ProbeError
from .study import Study, StudyOutcome, StudyProgress, StudySettings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="probe-studio",
        description="How well does a frozen image encoder separate the classes in an image folder?",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser(
        "run", help="embed a folder (or .zip), fit a linear probe, write results"
    )
    run.add_argument("folder", help="folder with one subfolder per class, or a .zip of one")
    run.add_argument("--encoder", default=DEFAULT_ENCODER, help=f"default: {DEFAULT_ENCODER}")
    run.add_argument(
        "--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, mps"
    )
    run.add_argument(
        "--out", default="probe-results", help="output folder (default: probe-results)"
    )
    run.add_argument(
        "--protocol",
        choices=PROTOCOLS,
        default="auto",
        help="auto (default): given when the folder has train/ and test/, cv up to"
        f" {AUTO_CV_LIMIT:,} images, holdout above; cv: nested stratified k-fold, every"
        " image scored; holdout: one held-out split; given: the folder's own train/test",
    )
    run.add_argument(
        "--folds",
        type=int,
        default=DEFAULT_FOLDS,
        help=f"cross-validation folds (default {DEFAULT_FOLDS}; fewer when a class is smaller)",
    )
    run.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="cv: re-run with other fold seeds and report the spread (default 1)",
    )
    run.add_argument(
        "--test-size", type=float, default=0.25, help="holdout: test fraction (default 0.25)"
    )
    run.add_argument("--seed", type=int, default=0)
    run.add_argument(
        "--duplicate-threshold",
        type=float,
        default=DEFAULT_DUPLICATE_COSINE,
        help="cosine similarity at which two images count as duplicates"
        f" (default {DEFAULT_DUPLICATE_COSINE}); identical files always do",
    )
    run.add_argument(
        "--batch-size", type=int, default=None, help="default: 128 on CUDA, 32 on MPS, 16 on CPU"
    )
    run.add_argument("--workers", type=int, default=None, help="image-decoding worker processes")
    run.add_argument("--projection", choices=("umap", "pca", "none"), default="umap")
    run.add_argument("--cache-dir", default=None, help="embedding cache folder")
    run.add_argument("--no-cache", action="store_true", help="do not read or write the cache")
    commands.add_parser("encoders", help="list encoders and whether they need a download")
    return parser


class _ProgressPrinter:
    """Study progress on the terminal: a tqdm bar while embedding, a line per other stage."""

    def __init__(self):
        self.bar = None

    def __call__(self, event: StudyProgress) -> None:
        if event.stage == "embed":
            if self.bar is None:
                from tqdm import tqdm

                self.bar = tqdm(total=event.total, unit="img", desc="embedding", file=sys.stderr)
            self.bar.total = event.total
            self.bar.n = event.done
            self.bar.set_postfix_str(f"{event.rate:.1f} img/s")
            self.bar.refresh()
            return
        self.close()
        if event.stage == "evaluate":
            print("fitting and scoring the probe…", file=sys.stderr)
        elif event.stage == "project":
            print(f"computing the {event.message.upper()} map…", file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _run(args: argparse.Namespace) -> int:
    settings = StudySettings(
        encoder=args.encoder,
        device=args.device,
        protocol=args.protocol,
        folds=args.folds,
        repeats=args.repeats,
        test_size=args.test_size,
        seed=args.seed,
        duplicate_threshold=args.duplicate_threshold,
        projection=args.projection,
        batch_size=args.batch_size,
        workers=args.workers,
    )
    progress = _ProgressPrinter()
    cache = None if args.no_cache else EmbeddingCache(args.cache_dir)
    study = Study(settings, cache=cache, progress=progress)
    dataset = study.scan(args.folder)
    print(
        f"{len(dataset)} image files in {len(dataset.class_names)} classes; "
        f"{len(dataset.skipped)} other files skipped while scanning"
    )
    if not dataset.items:
        print("error: no images found (expected one subfolder per class)", file=sys.stderr)
        return 2
    encoder = study.encoder
    print(f"encoder {encoder.encoder_id} ({encoder.dim}-d) on {encoder.device}")
    recorded = {"source": str(args.folder), "device": str(encoder.device)} | asdict(settings)

    def on_result(outcome: StudyOutcome) -> None:
        progress.close()
        embeddings = outcome.embeddings
        print(
            f"embedded {embeddings.n_computed} images, {embeddings.n_from_cache} from cache,"
            f" in {embeddings.seconds:.1f} s"
        )
        write_run(args.out, embeddings, outcome.result, recorded)
        _print_summary(embeddings, outcome.result)

    outcome = study.run(dataset, on_result=on_result)
    progress.close()
    if outcome.projection is not None:
        write_map(args.out, outcome.embeddings, outcome.result, outcome.projection)
    print(f"results written to {Path(args.out).resolve()}")
    return 0


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
    chosen = f"{result.chosen_c:.3g} ({result.sweep.method})"
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
    print(f"label issues     {len(result.label_issues)} images look mislabelled (label_issues.csv)")
    for issue in result.label_issues[:5]:
        print(
            f"                 {embeddings.paths[issue.index]}: labelled"
            f" {result.class_names[issue.given]}, looks like {result.class_names[issue.suggested]}"
        )
    for skipped in embeddings.skipped[:10]:
        print(f"skipped          {skipped.path}: {skipped.reason}")
    if len(embeddings.skipped) > 10:
        print(f"skipped          ... and {len(embeddings.skipped) - 10} more (see skipped.csv)")


def _encoders() -> int:
    for info in list_encoders():
        flag = "needs download" if info.needs_download else "available offline"
        print(f"{info.name:45s} {flag:18s} {info.description}")
    print("\nAny open_clip model works as open_clip:<arch>/<tag> or open_clip:<arch>@<checkpoint>.")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    keep_freed_memory_for_reuse()
    try:
        if args.command == "encoders":
            return _encoders()
        return _run(args)
    except (EncoderError, ProbeError, ArchiveError, FileNotFoundError, NotADirectoryError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
