"""Extraction benchmark, run on demand (not a test): how fast is files -> embeddings -> probe?

For one image folder and one encoder, in one process, it prints:

1. images/s of the full pipeline (``extract_embeddings``, ``cache=None``) with the encoder
   loaded at ``--precision`` (default ``auto``: the fastest faithful path) and with the
   plain fp32 encoder (``precision="fp32"``), and the speed-up;
2. images/s of the encoder forward alone on pre-decoded, pre-preprocessed tensors
   (same batches, ``torch.inference_mode()``, ``encoder.encode`` + normalisation),
   and the ratio pipeline / forward;
3. the usual loop of benchmark code (CLIP_benchmark style): torchvision ``ImageFolder`` +
   ``DataLoader`` (batch 64, 2 workers) + the plain fp32 model, on the same images;
4. ``extract_embeddings`` with an empty ``EmbeddingCache`` (cold), then again (warm);
5. probe fit time with the C sweep (``run_probe``'s default ``LinearProbe``) and with a
   fixed ``LinearProbe(C=1.0)``;
6. UMAP time for the first fit (numba JIT) and the second fit in this process, and PCA.

``--quick`` stops after 1-3; ``--trials N`` repeats 1-2 N times, interleaved.

On the CPU, with the ``[onnx]`` extra, 1-2 also time the ONNX Runtime paths (``onnx``: the
encoder's exported graph with every onnxruntime optimisation; ``onnx-int8``: its dynamic int8
quantisation, where the graph has MatMul/Gemm weights), interleaved with the torch paths, and
a summary line sets each against the best torch path of the same run (``--no-onnx`` skips
them). The graph is exported once into the embedding cache folder; the load row says what
the export cost.

Usage::

    python bench/extract.py                       # assets/demo, bundled encoder
    python bench/extract.py --quick --encoder open_clip:ViT-B-32   # random weights, offline
    python bench/extract.py --repeat 4 --workers-sweep
    python bench/extract.py --folder ~/photos --encoder open_clip:ViT-B-32/openai --device cuda

``--repeat N`` keeps N copies of the folder's images in memory. Every copy after the
first is made unique, so that neither the cache nor the dedup in ``extract_embeddings``
collapses them: a PNG gets one pixel changed and a text chunk naming the copy (its
embedding differs slightly, like a real near-duplicate); other formats get a few trailing
bytes after the image data (decoders ignore them; the embedding is identical).
"""

from __future__ import annotations

from probe_core.openmp import let_idle_threads_sleep

let_idle_threads_sleep()  # as the CLI and the app do; GOMP_SPINCOUNT=300000 for the default

import argparse
import io
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import PIL
import torch
from PIL import Image, PngImagePlugin

from probe_core.allocator import keep_freed_memory_for_reuse
from probe_core.cache import EmbeddingCache, content_digest
from probe_core.dataset import ImageDataset, ImageItem, scan
from probe_core.embed import (
    Embeddings,
    default_batch_size,
    default_num_workers,
    extract_embeddings,
    usable_cores,
)
from probe_core.encoders import DEFAULT_ENCODER, Encoder, load_encoder
from probe_core.evaluation.protocols import run_probe
from probe_core.images import load_image
from probe_core.probe import LinearProbe
from probe_core.projection import project

try:
    import resource
except ImportError:  # Windows
    resource = None

SWEEP_WORKERS = (0, 1, 2, 4)
USUAL_LOOP_BATCH = 64
USUAL_LOOP_WORKERS = 2
REPO = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------------------- data


def unique_copy(data: bytes, copy: int) -> bytes:
    """The same image as ``data``, with bytes (and for PNG one pixel) that depend on ``copy``."""
    try:
        image = Image.open(io.BytesIO(data))
        is_png = image.format == "PNG"
    except Exception:
        is_png = False
    if not is_png:
        return data + f"\nprobe-studio-bench-copy={copy}\n".encode()
    image.load()
    if image.mode not in ("RGB", "RGBA", "L", "LA"):
        image = image.convert("RGBA")
    pixels = np.array(image)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    colour = pixels.shape[2] - (1 if image.mode.endswith("A") else 0)
    # The most opaque pixel, so that compositing on white cannot hide the change.
    alpha = pixels[:, :, -1] if image.mode.endswith("A") else np.zeros(pixels.shape[:2])
    row, col = np.unravel_index(int(np.argmax(alpha)), alpha.shape)
    pixels[row, col, :colour] = (pixels[row, col, :colour].astype(int) + copy) % 256
    tweaked = Image.fromarray(pixels.squeeze(2) if pixels.shape[2] == 1 else pixels, image.mode)
    info = PngImagePlugin.PngInfo()
    info.add_text("probe-studio-bench-copy", str(copy))
    out = io.BytesIO()
    tweaked.save(out, format="PNG", pnginfo=info)
    return out.getvalue()


def build_dataset(folder: str, repeat: int) -> ImageDataset:
    """The scanned folder as is (repeat 1), or ``repeat`` unique in-memory copies of it."""
    dataset = scan(folder)
    if repeat <= 1:
        return dataset
    items: list[ImageItem] = []
    for copy in range(repeat):
        for item in dataset.items:
            data = item.read_bytes()
            source = data if copy == 0 else unique_copy(data, copy)
            items.append(ImageItem(f"copy{copy}/{item.path}", source, item.label))
    digests = {content_digest(item.read_bytes()) for item in items}
    if len(digests) != len(items):
        print(f"note: {len(items) - len(digests)} repeated items share bytes (dedup applies)")
    return ImageDataset(items, list(dataset.class_names), list(dataset.skipped), dataset.root)


# ---------------------------------------------------------------------------- timing


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


@dataclass
class PipelineRun:
    seconds: float
    n_images: int
    embeddings: Embeddings
    batch_times: list[float] = field(default_factory=list)  # seconds since start, per batch
    batch_done: list[int] = field(default_factory=list)  # images done after each batch

    @property
    def rate(self) -> float:
        return self.n_images / self.seconds

    @property
    def first_batch(self) -> float:
        return self.batch_times[0] if self.batch_times else float("nan")

    @property
    def steady_rate(self) -> float:
        """images/s from the end of the first batch to the end of the last."""
        if len(self.batch_times) < 2:
            return float("nan")
        span = self.batch_times[-1] - self.batch_times[0]
        return (self.batch_done[-1] - self.batch_done[0]) / span


def time_pipeline(
    dataset: ImageDataset,
    encoder: Encoder,
    batch_size: int,
    workers: int,
    cache: EmbeddingCache | None = None,
) -> PipelineRun:
    times: list[float] = []
    done: list[int] = []
    started = time.perf_counter()

    def progress(n_done: int, _total: int, _rate: float) -> None:
        times.append(time.perf_counter() - started)
        done.append(n_done)

    embeddings = extract_embeddings(
        dataset,
        encoder,
        batch_size=batch_size,
        num_workers=workers,
        cache=cache,
        progress=progress,
    )
    seconds = time.perf_counter() - started
    return PipelineRun(seconds, len(dataset), embeddings, times, done)


def median_run(runs: list[PipelineRun]) -> PipelineRun:
    return sorted(runs, key=lambda run: run.seconds)[len(runs) // 2]


def timed(function: Callable[[], object]) -> tuple[float, object]:
    started = time.perf_counter()
    result = function()
    return time.perf_counter() - started, result


@dataclass
class Predecoded:
    batches: list[torch.Tensor]
    read_digest_s: float
    decode_s: float
    preprocess_s: float


def predecode(dataset: ImageDataset, encoder: Encoder, batch_size: int) -> Predecoded:
    """Decode (as the pipeline does for this encoder) and preprocess every image in this
    process, timing each step."""
    read_digest = decode = preprocess = 0.0
    split = encoder.split_preprocess
    per_image = encoder.preprocess if split is None else split.pixels
    tensors = []
    for item in dataset.items:
        t0 = time.perf_counter()
        data = item.read_bytes()
        content_digest(data)
        t1 = time.perf_counter()
        image = load_image(data, draft_min_side=encoder.draft_side)
        t2 = time.perf_counter()
        tensors.append(per_image(image))
        t3 = time.perf_counter()
        read_digest += t1 - t0
        decode += t2 - t1
        preprocess += t3 - t2
    t0 = time.perf_counter()
    batches = [
        torch.stack(tensors[start : start + batch_size])
        if split is None
        else split.batch(
            tensors[start : start + batch_size], channels_last=encoder.path.channels_last
        )
        for start in range(0, len(tensors), batch_size)
    ]
    preprocess += time.perf_counter() - t0
    return Predecoded(batches, read_digest, decode, preprocess)


def forward(encoder: Encoder, batch: torch.Tensor) -> torch.Tensor:
    features = encoder.encode(batch)
    return features / features.norm(dim=-1, keepdim=True)


@dataclass
class ForwardRun:
    seconds: float
    batch_seconds: list[float]
    vectors: np.ndarray
    user_s: float = float("nan")  # CPU time of this process during the run
    system_s: float = float("nan")  # kernel time: page faults of fresh allocations show here


def own_times() -> tuple[float, float]:
    if resource is None:
        return float("nan"), float("nan")
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


def time_forward(encoder: Encoder, batches: list[torch.Tensor]) -> ForwardRun:
    outputs, batch_seconds = [], []
    user, system = own_times()
    with torch.inference_mode():
        sync(encoder.device)
        started = last = time.perf_counter()
        for batch in batches:
            outputs.append(forward(encoder, batch))
            sync(encoder.device)
            now = time.perf_counter()
            batch_seconds.append(now - last)
            last = now
        seconds = time.perf_counter() - started
    user_after, system_after = own_times()
    vectors = torch.cat(outputs).cpu().numpy()
    return ForwardRun(seconds, batch_seconds, vectors, user_after - user, system_after - system)


def materialise(dataset: ImageDataset, folder: Path) -> Path:
    """The dataset's images as files in ``folder/<class>/`` (for ImageFolder)."""
    for number, item in enumerate(dataset.items):
        target = folder / dataset.class_names[item.label] / f"{number:06d}{Path(item.path).suffix}"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(item.read_bytes())
    return folder


@dataclass
class UsualLoopRun:
    seconds: float
    n_images: int

    @property
    def rate(self) -> float:
        return self.n_images / self.seconds


def time_usual_loop(folder: Path, encoder: Encoder) -> UsualLoopRun:
    """CLIP_benchmark's loop: ImageFolder, DataLoader(batch 64, 2 workers), the fp32 model."""
    from torch.utils.data import DataLoader
    from torchvision.datasets import ImageFolder

    loader = DataLoader(
        ImageFolder(str(folder), transform=encoder.preprocess),
        batch_size=USUAL_LOOP_BATCH,
        shuffle=False,
        num_workers=USUAL_LOOP_WORKERS,
        pin_memory=encoder.device.type == "cuda",
    )
    model, n = encoder.model.eval(), 0
    started = time.perf_counter()
    with torch.inference_mode():
        for images, _targets in loader:
            features = model(images.to(encoder.device, encoder.dtype)).float()
            features = features / features.norm(dim=-1, keepdim=True)
            features.cpu()
            n += len(images)
    sync(encoder.device)
    return UsualLoopRun(time.perf_counter() - started, n)


# ---------------------------------------------------------------------------- report


def row(label: str, seconds: float | None = None, rate: float | None = None, note: str = "") -> str:
    secs = "" if seconds is None else f"{seconds:9.3f}"
    per_s = "" if rate is None else f"{rate:10.1f}"
    return f"{label:<44}{secs:>9}{per_s:>11}  {note}".rstrip()


def spread(runs: list[float]) -> str:
    if len(runs) < 2:
        return ""
    return f" [median of {len(runs)}: {min(runs):.2f}-{max(runs):.2f} s]"


def machine_line(encoder: Encoder) -> str:
    cpus = os.cpu_count()
    usable = usable_cores()
    settings = " ".join(
        f"{name}={value}"
        for name, value in sorted(os.environ.items())
        if name.startswith(("MALLOC_", "GOMP_", "OMP_")) or name == "LD_PRELOAD"
    )
    gpu = ""
    if encoder.device.type == "cuda":
        gpu = f" ({torch.cuda.get_device_name(encoder.device)})"
    load = " ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    return (
        f"machine: {platform.system()} {platform.machine()}, {cpus} CPUs ({usable} usable),"
        f" load average {load},"
        f" python {platform.python_version()}, torch {torch.__version__},"
        f" device {encoder.device}{gpu}, torch threads {torch.get_num_threads()},"
        f" numpy {np.__version__}, Pillow {PIL.__version__}" + (f", {settings}" if settings else "")
    )


def cpu_seconds() -> tuple[float, float] | None:
    """(busy core-seconds of the whole machine, of this process and its reaped children)."""
    if resource is None:
        return None
    try:
        with open("/proc/stat") as handle:  # Linux
            fields = [int(value) for value in handle.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    # user nice system idle iowait irq softirq steal
    machine = (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")
    own = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        own += usage.ru_utime + usage.ru_stime
    return machine, own


def other_processes_cpu_seconds(at_start: tuple[float, float] | None) -> float | None:
    now = cpu_seconds()
    if at_start is None or now is None:
        return None
    return max(0.0, (now[0] - at_start[0]) - (now[1] - at_start[1]))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--folder", default=str(REPO / "assets" / "demo"))
    parser.add_argument("--encoder", default=DEFAULT_ENCODER)
    parser.add_argument(
        "--precision",
        default="auto",
        help="auto (fastest faithful path, the default), fp32, or a path name such as"
        " int8-dynamic; the plain fp32 encoder is always timed alongside",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="throughput only (fast path, fp32, usual loop; one trial): no cache/probe/map",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    parser.add_argument(
        "--batch-size", type=int, default=None, help="default: the library's per-device default"
    )
    parser.add_argument(
        "--default-allocator",
        action="store_true",
        help="leave glibc's malloc thresholds alone (the CLI and the app raise them)",
    )
    parser.add_argument("--workers", type=int, default=default_num_workers())
    parser.add_argument("--repeat", type=int, default=1, help="copies of the images, in memory")
    parser.add_argument(
        "--workers-sweep",
        action="store_true",
        help=f"also time the pipeline with workers in {', '.join(map(str, SWEEP_WORKERS))}",
    )
    parser.add_argument(
        "--no-onnx",
        action="store_true",
        help="leave out the ONNX Runtime paths (timed by default on the CPU with the [onnx] extra)",
    )
    parser.add_argument(
        "--trials",
        type=int,
        default=1,
        help="time pipeline and forward pass N times, report the median (use odd N)",
    )
    return parser.parse_args(argv)


@dataclass
class Throughput:
    """One encoder's forward-alone and pipeline runs on the same images."""

    encoder: Encoder
    load_s: float
    pre: Predecoded
    pipeline_runs: list[PipelineRun]
    forward_runs: list[ForwardRun]

    @property
    def pipeline(self) -> PipelineRun:
        return median_run(self.pipeline_runs)

    @property
    def forward_s(self) -> float:
        return statistics.median(run.seconds for run in self.forward_runs)

    @property
    def forward_rate(self) -> float:
        return self.pipeline.n_images / self.forward_s

    @property
    def paired_ratios(self) -> list[float]:
        """pipeline/forward within each trial: slow drift of the machine cancels out."""
        return [
            forward.seconds / pipeline.seconds
            for pipeline, forward in zip(self.pipeline_runs, self.forward_runs, strict=True)
        ]


def measure(
    loaded: list[tuple[Encoder, float]],
    dataset: ImageDataset,
    args: argparse.Namespace,
    trials: int,
) -> list[Throughput]:
    """Forward alone and pipeline for each (encoder, load seconds), trials interleaved."""
    results = []
    for encoder, load_s in loaded:
        pre = predecode(dataset, encoder, args.batch_size)
        with torch.inference_mode():  # warm-up: one batch, before anything is timed
            forward(encoder, pre.batches[0])
            sync(encoder.device)
        results.append(Throughput(encoder, load_s, pre, [], []))
    # Interleaved, so that a busy spell on the machine hits every encoder and stage alike.
    for _ in range(trials):
        for result in results:
            result.pipeline_runs.append(
                time_pipeline(dataset, result.encoder, args.batch_size, args.workers)
            )
            result.forward_runs.append(time_forward(result.encoder, result.pre.batches))
    return results


def print_throughput(label: str, run: Throughput, n: int) -> None:
    pipeline, forward_runs = run.pipeline, run.forward_runs
    first_forward = statistics.median(r.batch_seconds[0] for r in forward_runs)
    choice = run.encoder.path_choice
    cost = f", of which choosing the path {choice.seconds:.1f} s" if choice else ""
    print(f"-- {label}: {run.encoder.precision}")
    print(row("  load encoder", run.load_s, None, cost.lstrip(", ")))
    print(row("  1 process: read + sha256", run.pre.read_digest_s, n / run.pre.read_digest_s))
    print(row("  1 process: decode (load_image)", run.pre.decode_s, n / run.pre.decode_s))
    print(row("  1 process: preprocess", run.pre.preprocess_s, n / run.pre.preprocess_s))
    print(
        row(
            "  forward alone (encode + normalise)",
            run.forward_s,
            run.forward_rate,
            f"{len(run.pre.batches)} batches, CPU user {forward_runs[-1].user_s:.1f} s"
            f" + system {forward_runs[-1].system_s:.1f} s"
            f"{spread([r.seconds for r in forward_runs])}",
        )
    )
    print(
        row(
            "  pipeline, cache=None",
            pipeline.seconds,
            pipeline.rate,
            f"pipeline/forward = {pipeline.rate / run.forward_rate:.2f}"
            f"{spread([r.seconds for r in run.pipeline_runs])}",
        )
    )
    if len(run.forward_runs) > 1:
        paired = run.paired_ratios
        print(
            f"    pipeline/forward per trial (each pipeline run over the forward run after it):"
            f" median {statistics.median(paired):.2f}, {min(paired):.2f}-{max(paired):.2f}"
            f" ({' '.join(f'{ratio:.2f}' for ratio in paired)})"
        )
    print(
        row(
            "    first batch done after",
            pipeline.first_batch,
            None,
            f"its forward alone takes {first_forward:.3f} s",
        )
    )
    print(
        row(
            "    steady state (after the first batch)",
            None,
            pipeline.steady_rate,
            f"steady/forward = {pipeline.steady_rate / run.forward_rate:.2f}",
        )
    )


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    trials = max(1, args.trials)
    total_started = time.perf_counter()
    cpu_at_start = cpu_seconds()

    tuned = False if args.default_allocator else keep_freed_memory_for_reuse()
    load_s, encoder = timed(
        lambda: load_encoder(args.encoder, device=args.device, precision=args.precision)
    )
    assert isinstance(encoder, Encoder)
    exact_load_s, exact = timed(
        lambda: load_encoder(args.encoder, device=args.device, precision="fp32")
    )
    assert isinstance(exact, Encoder)
    if args.batch_size is None:
        args.batch_size = default_batch_size(encoder.device)
    dataset = build_dataset(args.folder, args.repeat)
    n = len(dataset)
    if n == 0:
        print(f"no images in {args.folder}", file=sys.stderr)
        return 1
    where = "in memory" if args.repeat > 1 else "files"
    print(machine_line(encoder))
    print(
        f"data: {args.folder} x{args.repeat} = {n} images ({where}), {len(dataset.class_names)}"
        f" classes; encoder {encoder.encoder_id} ({encoder.dim}-d);"
        f" batch {args.batch_size}; workers {args.workers}"
        f" (default_num_workers() = {default_num_workers()});"
        f" glibc malloc thresholds raised: {tuned}"
    )
    if encoder.path_choice is not None:
        print(f"path: {encoder.precision} ({encoder.path_choice.reason})")
    if n <= args.batch_size:
        print("note: n <= batch size, so extract_embeddings runs without worker processes")

    ort_loaded = onnx_runtime_encoders(args, encoder)
    fast, reference, *ort_runs = measure(
        [(encoder, load_s), (exact, exact_load_s), *ort_loaded], dataset, args, trials
    )
    with tempfile.TemporaryDirectory(prefix="probe-bench-folder-") as folder:
        image_folder = Path(args.folder)
        if args.repeat > 1 or not image_folder.is_dir():  # copies in memory, or a .zip
            image_folder = materialise(dataset, Path(folder))
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="This DataLoader will create")
            usual = time_usual_loop(image_folder, exact)

    print()
    print(f"{'stage':<44}{'seconds':>9}{'images/s':>11}  note")
    print_throughput(f"--precision {args.precision}", fast, n)
    if args.precision != "fp32":
        print_throughput("reference, --precision fp32", reference, n)
    print(
        row(
            f"usual loop: ImageFolder + DataLoader({USUAL_LOOP_BATCH}, "
            f"{USUAL_LOOP_WORKERS} workers)",
            usual.seconds,
            usual.rate,
            "plain fp32 model",
        )
    )
    agreement = cosines(fast.pipeline.embeddings.vectors, reference.pipeline.embeddings.vectors)
    max_diff = float(np.abs(fast.pipeline.embeddings.vectors - fast.forward_runs[0].vectors).max())
    print()
    print(
        f"summary: {encoder.precision} pipeline {fast.pipeline.rate:.1f} images/s ="
        f" {fast.pipeline.rate / reference.pipeline.rate:.2f}x the fp32 pipeline"
        f" ({reference.pipeline.rate:.1f}), {fast.pipeline.rate / usual.rate:.2f}x the usual"
        f" loop ({usual.rate:.1f}); forward alone {fast.forward_rate / reference.forward_rate:.2f}x"
        f" fp32; pipeline/forward {fast.pipeline.rate / fast.forward_rate:.2f}"
    )
    print(
        f"checks: {encoder.precision} vs fp32 pipeline embeddings: min cosine"
        f" {agreement.min():.5f}, mean {agreement.mean():.5f};"
        f" pipeline vs forward max |diff| {max_diff:.2e}"
    )
    for run in ort_runs:
        print_onnx_runtime(run, fast, reference, n)
    if not args.quick:
        run_stages(dataset, encoder, fast.pipeline.embeddings, args, trials)
    wall = time.perf_counter() - total_started
    print(f"\ntotal benchmark time {wall:.1f} s")
    others = other_processes_cpu_seconds(cpu_at_start)
    if others is not None:
        share = others / (wall * (os.cpu_count() or 1))
        print(
            f"CPU used by other processes meanwhile: {others:.1f} core-s"
            f" ({share:.0%} of the machine)"
            + (" - figures are pessimistic, run again on a quiet machine" if share > 0.1 else "")
        )
    return 0


def onnx_runtime_encoders(
    args: argparse.Namespace, encoder: Encoder
) -> list[tuple[Encoder, float]]:
    """The ONNX Runtime paths of the encoder, with their load seconds (the first load exports
    the graph), where they apply: the CPU, the [onnx] extra, a model that exports."""
    from probe_core.onnx_runtime_path import ONNX_PATHS, ort_available, quantized_operators

    if args.no_onnx or encoder.device.type != "cpu" or encoder.precision.startswith("onnx"):
        return []
    if not ort_available():
        print('onnx: not timed, the [onnx] extra is missing (pip install "probe-studio[onnx]")')
        return []
    loaded = []
    for path in ONNX_PATHS:
        try:
            seconds, ort = timed(lambda path=path: load_encoder(args.encoder, "cpu", path))
        except Exception as error:
            print(f"{path}: not timed ({error})")
            continue
        assert isinstance(ort, Encoder)
        print(f"path: {path} ({ort.path_choice.reason})")
        if path == "onnx-int8" and not quantized_operators(ort.model.graph):
            print("onnx-int8: not timed, it quantised nothing (the graph of onnx)")
            continue
        loaded.append((ort, seconds))
    return loaded


def print_onnx_runtime(
    run: Throughput, torch_best: Throughput, reference: Throughput, n: int
) -> None:
    """One ONNX Runtime path against the best torch path (the auto choice) of the same run."""
    print_throughput(f"--precision {run.encoder.precision}", run, n)
    agreement = cosines(run.pipeline.embeddings.vectors, reference.pipeline.embeddings.vectors)
    best = torch_best.encoder.precision
    forward = run.forward_rate / torch_best.forward_rate
    pipeline = run.pipeline.rate / torch_best.pipeline.rate
    verdict = "faster" if min(forward, pipeline) > 1 else "not faster"
    print(
        f"summary: {run.encoder.precision} forward alone {run.forward_rate:.1f} images/s ="
        f" {forward:.2f}x the best torch path ({best}, {torch_best.forward_rate:.1f});"
        f" pipeline {run.pipeline.rate:.1f} images/s = {pipeline:.2f}x ({best},"
        f" {torch_best.pipeline.rate:.1f}): {verdict}; vs fp32 pipeline embeddings min cosine"
        f" {agreement.min():.5f}"
    )


def run_stages(
    dataset: ImageDataset,
    encoder: Encoder,
    embeddings: Embeddings,
    args: argparse.Namespace,
    trials: int,
) -> None:
    """Cache cold/warm, probe fits, maps and the optional workers sweep."""
    n = len(dataset)
    with tempfile.TemporaryDirectory(prefix="probe-bench-cache-") as folder:
        cache = EmbeddingCache(folder)
        cold = time_pipeline(dataset, encoder, args.batch_size, args.workers, cache)
        warm = time_pipeline(dataset, encoder, args.batch_size, args.workers, cache)
    cache_same = np.array_equal(cold.embeddings.vectors, warm.embeddings.vectors)

    sweep_s, sweep_result = timed(lambda: run_probe(embeddings, protocol="holdout"))
    train = sweep_result.train
    X, y = embeddings.vectors[train], embeddings.labels[train]
    sweep_fit_s, _ = timed(lambda: LinearProbe(seed=0).fit(X, y))
    fixed_s, fixed_result = timed(
        lambda: run_probe(embeddings, protocol="holdout", probe=LinearProbe(C=1.0))
    )
    fixed_fit_s, _ = timed(lambda: LinearProbe(C=1.0).fit(X, y))

    import_s, _ = timed(lambda: __import__("umap"))
    umap_first_s, _ = timed(lambda: project(embeddings.vectors, method="umap"))
    umap_second_s, _ = timed(lambda: project(embeddings.vectors, method="umap"))
    pca_s, _ = timed(lambda: project(embeddings.vectors, method="pca"))

    print()
    print(
        row(
            "cache cold (empty EmbeddingCache)",
            cold.seconds,
            cold.rate,
            f"computed {cold.embeddings.n_computed}, from cache {cold.embeddings.n_from_cache}",
        )
    )
    print(
        row(
            "cache warm",
            warm.seconds,
            warm.rate,
            f"computed {warm.embeddings.n_computed}, from cache {warm.embeddings.n_from_cache},"
            f" {cold.seconds / warm.seconds:.0f}x faster",
        )
    )
    n_grid = len(sweep_result.sweep.c_values)
    print(
        row(
            f"probe: run_probe, C sweep ({n_grid} C)",
            sweep_s,
            None,
            f"{sweep_result.sweep.method}, C={sweep_result.chosen_c:.3g},"
            f" acc {sweep_result.metrics.accuracy.value:.3f}",
        )
    )
    print(
        row(
            "  LinearProbe().fit alone, same split",
            sweep_fit_s,
            None,
            f"{len(train)} x {X.shape[1]}",
        )
    )
    print(
        row(
            "probe: run_probe, LinearProbe(C=1.0)",
            fixed_s,
            None,
            f"acc {fixed_result.metrics.accuracy.value:.3f}",
        )
    )
    print(row("  LinearProbe(C=1.0).fit alone, same split", fixed_fit_s))
    print(row("umap: import", import_s))
    print(row("umap: first fit (numba JIT / cache load)", umap_first_s, None, f"{n} points"))
    print(row("umap: second fit", umap_second_s))
    print(row("pca", pca_s))
    print(f"checks: warm cache == cold: {cache_same}")

    if not args.workers_sweep:
        return
    forward_rate = n / statistics.median(
        time_forward(encoder, predecode(dataset, encoder, args.batch_size).batches).seconds
        for _ in range(trials)
    )
    print()
    print(
        f"{'workers':<10}{'seconds':>9}{'images/s':>11}{'vs forward':>12}"
        f"{'first batch':>13}{'steady/s':>10}"
    )
    sweep: dict[int, list[PipelineRun]] = {workers: [] for workers in SWEEP_WORKERS}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="This DataLoader will create")
        for _ in range(trials):  # round-robin, so that a busy spell hits all alike
            for workers in SWEEP_WORKERS:
                sweep[workers].append(time_pipeline(dataset, encoder, args.batch_size, workers))
    for workers, runs in sweep.items():
        run = median_run(runs)
        mark = "*" if workers == default_num_workers() else ""
        print(
            f"{f'{workers}{mark}':<10}{run.seconds:9.3f}{run.rate:11.1f}"
            f"{run.rate / forward_rate:12.2f}{run.first_batch:13.3f}{run.steady_rate:10.1f}"
            f"{spread([r.seconds for r in runs])}"
        )
    print("* = default_num_workers()")


if __name__ == "__main__":
    sys.exit(main())
