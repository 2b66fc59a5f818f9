"""``probe-studio``: run a linear probe on an image folder from the terminal."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .allocator import keep_freed_memory_for_reuse
from .cache import EmbeddingCache
from .dataset import ArchiveError, scan
from .embed import extract_embeddings
from .encoders import DEFAULT_ENCODER, EncoderError, list_encoders, load_encoder
from .evaluation.protocols import run_probe
from .export import RunSettings, write_run
from .probe import ProbeError
from .projection import project


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
        "--test-size", type=float, default=0.25, help="held-out fraction (default 0.25)"
    )
    run.add_argument("--seed", type=int, default=0)
    run.add_argument(
        "--batch-size", type=int, default=None, help="default: 128 on CUDA, 32 on MPS, 16 on CPU"
    )
    run.add_argument("--workers", type=int, default=None, help="image-decoding worker processes")
    run.add_argument("--projection", choices=("umap", "pca"), default="umap")
    run.add_argument("--cache-dir", default=None, help="embedding cache folder")
    run.add_argument("--no-cache", action="store_true", help="do not read or write the cache")
    commands.add_parser("encoders", help="list encoders and whether they need a download")
    return parser


def _progress_bar(total_hint: int):
    from tqdm import tqdm

    bar = tqdm(total=total_hint, unit="img", desc="embedding", file=sys.stderr, leave=True)

    def update(done: int, total: int, rate: float) -> None:
        bar.total = total
        bar.n = done
        bar.set_postfix_str(f"{rate:.1f} img/s")
        bar.refresh()

    return bar, update


def _run(args: argparse.Namespace) -> int:
    dataset = scan(args.folder)
    print(
        f"{len(dataset)} image files in {len(dataset.class_names)} classes; "
        f"{len(dataset.skipped)} other files skipped while scanning"
    )
    if not dataset.items:
        print("error: no images found (expected one subfolder per class)", file=sys.stderr)
        return 2
    encoder = load_encoder(args.encoder, device=args.device)
    print(f"encoder {encoder.encoder_id} ({encoder.dim}-d) on {encoder.device}")
    cache = None if args.no_cache else EmbeddingCache(args.cache_dir)
    bar, update = _progress_bar(len(dataset))
    with bar:
        embeddings = extract_embeddings(
            dataset,
            encoder,
            batch_size=args.batch_size,
            num_workers=args.workers,
            cache=cache,
            progress=update,
        )
    print(
        f"embedded {embeddings.n_computed} images, {embeddings.n_from_cache} from cache,"
        f" in {embeddings.seconds:.1f} s"
    )
    result = run_probe(embeddings, test_size=args.test_size, seed=args.seed)
    projection = project(embeddings.vectors, method=args.projection, seed=args.seed)
    settings = RunSettings(
        source=str(args.folder),
        encoder=args.encoder,
        device=str(encoder.device),
        test_size=args.test_size,
        seed=args.seed,
    )
    write_run(args.out, embeddings, result, projection, settings)
    _print_summary(embeddings, result)
    print(f"results written to {Path(args.out).resolve()}")
    return 0


def _print_summary(embeddings, result) -> None:
    metrics = result.metrics
    print()
    print(
        f"images used      {len(result.used)} ({len(result.split.train)} train,"
        f" {len(result.split.test)} test); {len(embeddings.skipped)} skipped"
    )
    print(f"classes          {len(result.class_names)}: {', '.join(result.class_names)}")
    for message in result.messages:
        print(f"note             {message}")
    print(f"chosen C         {result.chosen_c:.3g} ({result.sweep.method})")
    print(f"accuracy         {metrics.accuracy}   chance {metrics.chance_accuracy:.3f}")
    print(f"balanced acc.    {metrics.balanced_accuracy}")
    print(f"macro F1         {metrics.macro_f1}")
    if metrics.top5_accuracy is not None:
        print(f"top-5 accuracy   {metrics.top5_accuracy}")
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
