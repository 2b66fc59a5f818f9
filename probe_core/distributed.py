"""Embed past one machine: image folders on object storage, and extraction on a Ray cluster.

``embed_dataset`` turns a scanned folder, .zip or file-system URI (``scan_source``: ``s3://``,
``gs://``, ``file://`` in the class-subfolder layout) into ``Embeddings`` with one of two engines:

* ``local``: ``extract_embeddings`` in this process (DataLoader workers decode);
* ``ray``: Ray Data reads the files (``read_binary_files``), hashes, decodes and preprocesses
  them in ``map_batches`` tasks (to uint8 pixels where the preprocessing splits, as locally:
  ``SplitPreprocess``), and an actor pool of encoder replicas scales, normalises and embeds
  them (one actor per GPU when the cluster has GPUs, CPU actors otherwise).

Both engines go through the one extraction core (``probe_core.extraction``): the sha256 of
every file comes first, cached vectors (keys: ``encoder.cache_key`` + digest) are looked up
before anything is embedded, only new images are embedded, each distinct file once, and the
actors run ``forward_batch``, the local engine's forward pass: the same fixed batch shape,
so the same bits, whatever the batch size or the number of actors. A bad file is skipped
with the same reason as locally (``extraction.reason_for``): the decode step catches errors
per row and carries the reason in the batch, so one bad file never fails a block.

The execution path is the one decided for this machine (``probe_core.path_decisions``): on
a cluster that is this machine the driver reads (or, the first time, makes) the decision
itself, as ``run`` and ``embed --engine local`` do; on another cluster one task on it
decides. Every actor then loads that path by name and times nothing.
Ray is optional: ``pip install "probe-studio[ray]"``.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import ModuleType
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image
from pyarrow import fs as pafs

from .acceleration import PathChoice
from .cache import EmbeddingCache, content_digest
from .dataset import (
    ImageDataset,
    ImageItem,
    ImageSource,
    SkippedItem,
    dataset_from_entries,
    is_hidden,
    scan,
)
from .embed import ProgressCallback, default_batch_size
from .embed import extract_embeddings as local_extract_embeddings
from .embeddings import Embeddings
from .embeddings_io import CACHE_KEY_KEY, embeddings_metadata, parquet_metadata, write_parquet
from .encoders import DEFAULT_ENCODER, Encoder, load_encoder
from .extraction import OnBatch, cached_embeddings, forward_batch, reason_for
from .images import load_image
from .path_decisions import PathDecisions
from .preprocessing import SplitPreprocess

ENGINES = ("local", "ray")
RAY_INSTALL_HINT = 'pip install "probe-studio[ray]"'
LOCAL_FILESYSTEM = "local"
DIGEST_BATCH_SIZE = 64
# Reading, hashing and decoding tasks ask for less than the actors' whole CPU; the different
# request also keeps Ray Data from fusing decoding into the encoder actors.
TASK_CPUS = 0.5
GONE_REASON = f"cannot be read: {os.strerror(errno.ENOENT)}"  # listed by the scan, gone since


class RayEngineError(RuntimeError):
    """The Ray engine cannot run: Ray is missing, or the cluster cannot hold the actors."""


class RayUnavailableError(RayEngineError):
    """The Ray engine was asked for, but Ray Data is not installed."""


def require_ray() -> ModuleType:
    """The ``ray`` module with Ray Data, or a RayUnavailableError naming the extra to install."""
    try:
        import ray
        import ray.data
    except ImportError as error:
        raise RayUnavailableError(
            f"the Ray engine needs Ray Data, which is not installed ({error});"
            f" install it with: {RAY_INSTALL_HINT}"
        ) from error
    return ray


# --- sources: local folders and zips, or pyarrow file-system URIs -----------------------------


@functools.cache
def _filesystem(uri: str) -> pafs.FileSystem:
    """The file system of a URI, made once per process (credentials are resolved here)."""
    return pafs.FileSystem.from_uri(uri)[0]


@dataclass(frozen=True)
class FileSystemFile:
    """A file on a pyarrow file system, read lazily: ``root_uri`` is the scanned URI (it names
    the file system), ``path`` the file's path in that file system."""

    root_uri: str
    path: str

    def read_bytes(self) -> bytes:
        with _filesystem(self.root_uri).open_input_stream(self.path) as stream:
            return stream.read()


def is_uri(source: str | os.PathLike[str]) -> bool:
    return "://" in str(source)


def scan_uri(uri: str) -> ImageDataset:
    """Scan a folder on a pyarrow file system (``s3://bucket/prefix``, ``gs://…``, ``file://…``)
    with the layout rules of ``probe_core.dataset``; no file is read."""
    filesystem, base = pafs.FileSystem.from_uri(uri)
    base = base.rstrip("/") or "/"
    kind = filesystem.get_file_info(base).type
    if kind == pafs.FileType.NotFound:
        raise FileNotFoundError(f"{uri} does not exist")
    if kind != pafs.FileType.Directory:
        raise NotADirectoryError(f"{uri} is not a folder (a URI must name a folder)")
    entries: list[tuple[tuple[str, ...], ImageSource]] = []
    skipped: list[SkippedItem] = []
    folders: list[tuple[str, ...]] = []
    listing = filesystem.get_file_info(pafs.FileSelector(base, recursive=True))
    for info in sorted(listing, key=lambda entry: entry.path):
        parts = PurePosixPath(info.path).relative_to(base).parts
        if any(map(is_hidden, parts[:-1])):
            continue  # inside a hidden folder, which is reported once
        relative = "/".join(parts)
        if info.type == pafs.FileType.Directory:
            if is_hidden(parts[-1]):
                reason = "hidden or system folder is not scanned"
                skipped.append(SkippedItem(relative + "/", reason))
            else:
                folders.append(parts)
        elif info.type == pafs.FileType.File:
            entries.append((parts, FileSystemFile(uri, info.path)))
        else:
            skipped.append(SkippedItem(relative, "not a regular file"))
    return dataset_from_entries(entries, skipped, folders, root=uri)


def scan_source(source: str | os.PathLike[str]) -> ImageDataset:
    """A folder or .zip on this machine, or a folder behind a pyarrow file-system URI."""
    return scan_uri(str(source)) if is_uri(source) else scan(source)


# --- the Ray pipeline -------------------------------------------------------------------------


@dataclass(frozen=True)
class ActorPlan:
    """Where the encoder replicas run: how many, on which device, with what resources each."""

    actors: int
    device: str  # "cuda" or "cpu"
    num_gpus: float
    num_cpus: float

    def describe(self) -> str:
        kind = "GPU" if self.num_gpus else "CPU"
        return f"Ray: {self.actors} {kind} encoder actor{'s' * (self.actors != 1)}"


def plan_actors(resources: Mapping[str, float], actors: int | None = None) -> ActorPlan:
    """One actor per GPU when the cluster has GPUs; else CPU actors (default: all CPUs but the
    one left for reading and decoding), ``actors`` of them when given."""
    if actors is not None and actors < 1:
        raise RayEngineError(f"--actors must be at least 1, got {actors}")
    gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 0))
    if gpus:
        return ActorPlan(actors or gpus, "cuda", num_gpus=1, num_cpus=1)
    count = actors or max(1, cpus - 1)
    if count + 1 > cpus:
        raise RayEngineError(
            f"{count} CPU encoder actor(s) hold {count} CPU(s) and reading and decoding need one"
            f" more, but the Ray cluster has {cpus} CPU(s): use --actors {max(1, cpus - 1)}"
            " or a bigger cluster"
        )
    return ActorPlan(count, "cpu", num_gpus=0, num_cpus=1)


@dataclass(frozen=True)
class ReplicaIdentity:
    """What the driver needs of an encoder as the replicas load it: its cache key (the device
    and the execution path decided for it are part of it) and how images are decoded for it."""

    name: str
    encoder_id: str
    cache_key: str
    dim: int
    preprocess: Callable[[Image.Image], torch.Tensor]
    draft_side: int | None  # JPEG draft decoding, as the local pipeline does for this encoder
    precision: str  # the execution path every replica loads by name (decided once)
    fast_decoding: bool = True  # the encoder's JPEG decoding, as loaded with the request
    path_choice: PathChoice | None = None  # the decision, for the CLI and metrics

    @classmethod
    def of(cls, encoder: Encoder) -> ReplicaIdentity:
        # The replicas take the path decided here by name, so that no replica measures or
        # decides anything itself.
        return cls(
            encoder.name,
            encoder.encoder_id,
            encoder.cache_key,
            encoder.dim,
            encoder.preprocess,
            encoder.draft_side,
            precision=encoder.path.name,
            fast_decoding=encoder.fast_decoding,
            path_choice=encoder.path_choice,
        )


def _load_identity(
    encoder_name: str, device: str, precision: str, decisions: PathDecisions | None = None
) -> ReplicaIdentity:
    encoder = load_encoder(encoder_name, device=device, precision=precision, decisions=decisions)
    return ReplicaIdentity.of(encoder)


def _cluster_is_this_machine(ray: ModuleType) -> bool:
    """Whether every live node of the cluster is this machine (a local cluster)."""
    try:
        here = ray.util.get_node_ip_address()
        nodes = [node for node in ray.nodes() if node.get("Alive")]
    except Exception:
        return False
    return bool(nodes) and all(node.get("NodeManagerAddress") == here for node in nodes)


def replica_identity(
    ray: ModuleType,
    encoder_name: str,
    plan: ActorPlan,
    precision: str = "auto",
    decisions: PathDecisions | None = None,
) -> ReplicaIdentity:
    """Load the encoder once and describe it. CPU actors on this machine: here, with the
    path decided for this machine in ``decisions`` (the one ``run`` uses); otherwise on the
    cluster, with an actor's resources (and its node's store), so that this process needs
    neither the model nor the device."""
    if plan.device == "cpu" and _cluster_is_this_machine(ray):
        return _load_identity(encoder_name, "cpu", precision, decisions)
    task = ray.remote(_load_identity).options(num_cpus=plan.num_cpus, num_gpus=plan.num_gpus)
    return ray.get(task.remote(encoder_name, plan.device, precision))


@contextlib.contextmanager
def ray_session(address: str | None = None) -> Iterator[ModuleType]:
    """Ray connected to ``address`` (``auto``, ``ray://host:port``) or to a new local cluster,
    shut down afterwards; a Ray that is already initialised is used as it is and left running.
    A remote cluster gets this package shipped (``py_modules``); it needs the dependencies."""
    ray = require_ray()
    if ray.is_initialized():
        yield ray
        return
    runtime_env = {"py_modules": [str(Path(__file__).parent)]} if address else None
    try:
        ray.init(address=address, runtime_env=runtime_env)
    except ConnectionError as error:
        raise RayEngineError(f"cannot connect to the Ray cluster at {address}: {error}") from error
    try:
        yield ray
    finally:
        ray.shutdown()


def _file_location(source: ImageSource) -> tuple[str, str] | None:
    """(file-system key, path) for a source that Ray Data's file readers can open, else None
    (a zip member, bytes in memory, or a local name that is not UTF-8)."""
    if isinstance(source, FileSystemFile):
        return source.root_uri, source.path
    if isinstance(source, Path):
        path = os.path.abspath(source)
        try:
            path.encode("utf-8")
        except UnicodeEncodeError:
            return None
        return LOCAL_FILESYSTEM, path
    return None


def _filesystem_for(key: str) -> pafs.FileSystem:
    return pafs.LocalFileSystem() if key == LOCAL_FILESYSTEM else _filesystem(key)


def _label_positions(batch: dict[str, np.ndarray], positions: dict[str, int]) -> dict:
    """Rows of ``read_binary_files``: their position in the item list instead of their path."""
    count = len(batch["path"])
    return {
        "position": np.array([positions[path] for path in batch["path"]], dtype=np.int64),
        "bytes": batch["bytes"],
        "error": np.full(count, "", dtype=object),
    }


def _read_in_task(batch: dict[str, np.ndarray], items: dict[int, ImageItem]) -> dict:
    """Bytes of items that no file reader can open, read through the item itself."""
    data, errors = [], []
    for position in batch["position"]:
        try:
            data.append(items[int(position)].read_bytes())
            errors.append("")
        except OSError as error:
            data.append(b"")
            errors.append(reason_for(error))
    return {
        "position": batch["position"],
        "bytes": np.array(data, dtype=object),
        "error": np.array(errors, dtype=object),
    }


def _read_items(ray: ModuleType, items: Sequence[ImageItem]) -> Any:
    """A Ray dataset of ``position`` (index into ``items``), ``bytes`` and ``error`` (why the
    file cannot be read, or ""). Files on a file system go through ``read_binary_files``; a
    file that vanished since the scan just does not come back."""
    by_filesystem: dict[str, dict[str, int]] = {}
    elsewhere: list[int] = []
    for position, item in enumerate(items):
        location = _file_location(item.source)
        if location is None:
            elsewhere.append(position)
        else:
            by_filesystem.setdefault(location[0], {})[location[1]] = position
    parts = [
        ray.data.read_binary_files(
            list(positions),
            include_paths=True,
            filesystem=_filesystem_for(key),
            ignore_missing_paths=True,
            num_cpus=TASK_CPUS,
        ).map_batches(
            _label_positions,
            fn_kwargs={"positions": positions},
            batch_format="numpy",
            num_cpus=TASK_CPUS,
        )
        for key, positions in by_filesystem.items()
    ]
    if elsewhere:
        parts.append(
            ray.data.from_items([{"position": p} for p in elsewhere]).map_batches(
                _read_in_task,
                fn_kwargs={"items": {p: items[p] for p in elsewhere}},
                batch_format="numpy",
                num_cpus=TASK_CPUS,
            )
        )
    return parts[0].union(*parts[1:]) if len(parts) > 1 else parts[0]


def _digest_batch(batch: dict[str, np.ndarray]) -> dict:
    digests = [
        "" if error else content_digest(bytes(data)).hex()
        for data, error in zip(batch["bytes"], batch["error"], strict=True)
    ]
    return {
        "position": batch["position"],
        "sha256": np.array(digests, dtype=object),
        "error": batch["error"],
    }


def _ray_digests(ray: ModuleType, items: Sequence[ImageItem]) -> list[bytes | str]:
    """sha256 of each item's bytes, or the reason it cannot be read (as ``embed._digests``)."""
    digests: list[bytes | str] = [GONE_REASON] * len(items)
    hashed = _read_items(ray, items).map_batches(
        _digest_batch, batch_size=DIGEST_BATCH_SIZE, batch_format="numpy", num_cpus=TASK_CPUS
    )
    for batch in hashed.iter_batches(batch_format="numpy", batch_size=None):
        for position, digest, error in zip(
            batch["position"], batch["sha256"], batch["error"], strict=True
        ):
            digests[int(position)] = str(error) or bytes.fromhex(str(digest))
    return digests


def decode_and_preprocess(
    data: bytes,
    identity: ReplicaIdentity,
    shape: tuple[int, ...],
    split: SplitPreprocess | None = None,
) -> tuple[np.ndarray | None, str]:
    """The image as the model's input before batching: with ``split`` (the encoder's
    ``SplitPreprocess``) its uint8 pixels, which the actor scales and normalises a batch at a
    time; otherwise the preprocessed image as float32. Or None and the reason (the reasons of
    the local pipeline's decoding workers)."""
    try:
        image = load_image(data, draft_min_side=identity.draft_side)
        if split is not None:
            array = split.pixels(image)
        else:
            array = np.asarray(identity.preprocess(image), dtype=np.float32)
    except Exception as error:
        return None, reason_for(error)
    if array.shape != shape:
        return None, f"could not be processed: preprocessing gave {array.shape}, not {shape}"
    return array, ""


def _decode_batch(
    batch: dict[str, np.ndarray], identity: ReplicaIdentity, shape: tuple[int, ...]
) -> dict:
    """Decode + preprocess every row (to uint8 pixels where the preprocessing splits); a row
    that fails keeps zeros and carries its reason."""
    split = SplitPreprocess.from_pil(identity.preprocess)
    dtype = np.uint8 if split is not None else np.float32
    pixels = np.zeros((len(batch["position"]), *shape), dtype=dtype)
    reasons = []
    for row, (data, error) in enumerate(zip(batch["bytes"], batch["error"], strict=True)):
        reason = str(error)
        if not reason:
            array, reason = decode_and_preprocess(bytes(data), identity, shape, split)
            if array is not None:
                pixels[row] = array
        reasons.append(reason)
    return {
        "position": batch["position"],
        "pixels": pixels,
        "reason": np.array(reasons, dtype=object),
    }


class EmbedActor:
    """One encoder replica: loaded once per actor with the path decided for the run, then
    embeds batch after batch with the local engine's forward pass (``forward_batch``)."""

    def __init__(
        self,
        encoder_name: str,
        device: str,
        precision: str,
        cache_key: str,
        threads: int = 0,
        fast_decoding: bool = True,
    ):
        if threads:
            torch.set_num_threads(threads)
        self.encoder = load_encoder(encoder_name, device=device, precision=precision)
        self.encoder.fast_decoding = fast_decoding
        self.encoder.model.eval()
        self.split = self.encoder.split_preprocess
        if self.encoder.cache_key != cache_key:  # e.g. a node with another device
            raise RuntimeError(
                f"this encoder replica has cache key {self.encoder.cache_key!r},"
                f" the driver's is {cache_key!r}: the nodes differ"
            )

    def __call__(self, batch: dict[str, np.ndarray]) -> dict:
        usable = np.array([not reason for reason in batch["reason"]], dtype=bool)
        vectors = np.zeros((len(usable), self.encoder.dim), dtype=np.float32)
        if usable.any():
            inputs = batch["pixels"][usable]
            with torch.inference_mode():
                if inputs.dtype == np.uint8:  # pixels: scaled and normalised here, at once
                    encoder = self.encoder
                    tensors = self.split.batch(inputs, encoder.device, encoder.path.channels_last)
                else:
                    tensors = torch.from_numpy(inputs)
                vectors[usable] = forward_batch(self.encoder, tensors)
        return {"position": batch["position"], "vector": vectors, "reason": batch["reason"]}


def _input_shape(preprocess: Callable[[Image.Image], torch.Tensor]) -> tuple[int, ...]:
    """The shape of one image as ``_decode_batch`` hands it on: pixels or preprocessed."""
    split = SplitPreprocess.from_pil(preprocess)
    image = Image.new("RGB", (64, 64))
    return tuple(np.asarray(split.pixels(image) if split else preprocess(image)).shape)


def _embed_on_actors(
    ray: ModuleType,
    items: Sequence[ImageItem],
    identity: ReplicaIdentity,
    plan: ActorPlan,
    batch_size: int,
    on_batch: OnBatch,
) -> tuple[dict[int, np.ndarray], dict[int, str]]:
    """Embed items on the actor pool: (vectors by item index, failure reason by item index)."""
    embedded = (
        _read_items(ray, items)
        .map_batches(
            _decode_batch,
            fn_kwargs={"identity": identity, "shape": _input_shape(identity.preprocess)},
            batch_size=batch_size,
            batch_format="numpy",
            num_cpus=TASK_CPUS,
        )
        .map_batches(
            EmbedActor,
            fn_constructor_kwargs={
                "encoder_name": identity.name,
                "device": plan.device,
                "precision": identity.precision,
                "cache_key": identity.cache_key,
                "threads": 0 if plan.num_gpus else int(plan.num_cpus),
                "fast_decoding": identity.fast_decoding,
            },
            compute=ray.data.ActorPoolStrategy(size=plan.actors),
            num_cpus=plan.num_cpus,
            num_gpus=plan.num_gpus,
            batch_size=batch_size,
            batch_format="numpy",
        )
    )
    vectors: dict[int, np.ndarray] = {}
    failures: dict[int, str] = {}
    for batch in embedded.iter_batches(batch_format="numpy", batch_size=None):
        usable = np.array([not reason for reason in batch["reason"]], dtype=bool)
        failed = zip(batch["position"][~usable], batch["reason"][~usable], strict=True)
        failures.update((int(position), str(reason)) for position, reason in failed)
        indices = [int(p) for p in batch["position"][usable]]
        rows = np.asarray(batch["vector"][usable], dtype=np.float32)
        vectors.update(zip(indices, rows, strict=True))
        if indices:
            on_batch(indices, rows)
    return vectors, failures


def ray_extract_embeddings(
    dataset: ImageDataset,
    encoder_name: str = DEFAULT_ENCODER,
    *,
    plan: ActorPlan | None = None,
    identity: ReplicaIdentity | None = None,
    batch_size: int | None = None,
    cache: EmbeddingCache | None = None,
) -> Embeddings:
    """``extract_embeddings`` on the Ray cluster that this process is connected to.

    Each actor loads its own replica by name; ``identity`` (default: ``replica_identity``)
    gives their cache key and preprocessing. ``plan`` defaults to ``plan_actors``.
    """
    ray = require_ray()
    plan = plan or plan_actors(ray.cluster_resources())
    identity = identity or replica_identity(ray, encoder_name, plan)
    if batch_size is None:
        batch_size = default_batch_size(torch.device(plan.device))

    def embed(items: list[ImageItem], on_batch: OnBatch):
        return _embed_on_actors(ray, items, identity, plan, batch_size, on_batch)

    return cached_embeddings(
        dataset,
        encoder_id=identity.encoder_id,
        cache_key=identity.cache_key,
        dim=identity.dim,
        embed=embed,
        digests=lambda items: _ray_digests(ray, items),
        cache=cache,
    )


# --- one call for the command line: engine, cache, previous output -----------------------------


@dataclass(frozen=True)
class EmbedSettings:
    """How to embed: the engine and its options."""

    engine: str = "local"  # "local" | "ray"
    encoder: str = DEFAULT_ENCODER
    device: str = "auto"  # local engine; Ray actors use the cluster's GPUs when it has them
    precision: str = "auto"  # "auto" (fastest faithful path) | "fp32"; see load_encoder
    address: str | None = None  # ray: "auto", "ray://host:port"; None starts a local cluster
    actors: int | None = None  # ray: encoder replicas (default: see plan_actors)
    batch_size: int | None = None
    workers: int | None = None  # local engine: decoding worker processes


@dataclass(frozen=True)
class EmbedOutcome:
    """What ``embed_dataset`` made, with the cache key its vectors belong to."""

    embeddings: Embeddings
    cache_key: str
    ran_on: str  # "cpu", "cuda", or "Ray: 2 CPU encoder actors"
    path_choice: PathChoice | None = None  # the execution path that ran, and its decision


class PreviousOutputCache(EmbeddingCache):
    """The embedding cache with the vectors of an earlier output (same cache key) in front."""

    def __init__(
        self,
        directory: str | os.PathLike[str] | None,
        key: str,
        vectors: Mapping[bytes, np.ndarray],
    ):
        super().__init__(directory)
        self.key = key
        self.vectors = dict(vectors)

    def lookup(self, key: str, digests: list[bytes]) -> dict[bytes, np.ndarray]:
        if key != self.key:
            return super().lookup(key, digests)
        found = {d: self.vectors[d] for d in digests if d in self.vectors}
        rest = [d for d in digests if d not in found]
        return found | (super().lookup(key, rest) if rest else {})


def previous_output_vectors(
    path: str | os.PathLike[str], cache_key: str
) -> dict[bytes, np.ndarray]:
    """Vectors by sha256 digest from an earlier ``embed`` output made with the same cache key;
    empty when there is none, or it was made otherwise or cannot be read."""
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        if parquet_metadata(path).get(CACHE_KEY_KEY) != cache_key:
            return {}
        table = pq.read_table(path, columns=["sha256", "vector"])
        digests = table.column("sha256").to_pylist()
        values = table.column("vector").combine_chunks().flatten().to_numpy(zero_copy_only=False)
        vectors = values.astype(np.float32).reshape(len(digests), -1)
    except (pa.ArrowInvalid, OSError, KeyError, ValueError):
        return {}
    return {bytes.fromhex(d): v for d, v in zip(digests, vectors, strict=True) if d}


def embed_dataset(
    dataset: ImageDataset,
    settings: EmbedSettings | None = None,
    *,
    cache: EmbeddingCache | None = None,
    previous_output: str | os.PathLike[str] | None = None,
    progress: ProgressCallback | None = None,
    decisions: PathDecisions | None = None,
) -> EmbedOutcome:
    """Embed with the settings' engine. With a cache, the vectors of ``previous_output`` (an
    earlier ``embeddings.parquet`` of the same encoder) are reused as well. ``decisions``:
    where the execution path is decided and kept (default: ``PathDecisions.default()``)."""
    settings = settings or EmbedSettings()
    if settings.engine not in ENGINES:
        raise ValueError(f"unknown engine {settings.engine!r}; expected one of {ENGINES}")

    def with_previous(key: str) -> EmbeddingCache | None:
        if cache is None or previous_output is None:
            return cache
        previous = previous_output_vectors(previous_output, key)
        return PreviousOutputCache(cache.directory, key, previous) if previous else cache

    if settings.engine == "local":
        encoder = load_encoder(
            settings.encoder,
            device=settings.device,
            precision=settings.precision,
            decisions=decisions,
        )
        embeddings = local_extract_embeddings(
            dataset,
            encoder,
            batch_size=settings.batch_size,
            num_workers=settings.workers,
            cache=with_previous(encoder.cache_key),
            progress=progress,
        )
        return EmbedOutcome(embeddings, encoder.cache_key, str(encoder.device), encoder.path_choice)
    with ray_session(settings.address) as ray:
        plan = plan_actors(ray.cluster_resources(), settings.actors)
        identity = replica_identity(ray, settings.encoder, plan, settings.precision, decisions)
        embeddings = ray_extract_embeddings(
            dataset,
            settings.encoder,
            plan=plan,
            identity=identity,
            batch_size=settings.batch_size,
            cache=with_previous(identity.cache_key),
        )
    return EmbedOutcome(embeddings, identity.cache_key, plan.describe(), identity.path_choice)


def write_embed_outputs(out_dir: str | os.PathLike[str], outcome: EmbedOutcome) -> list[Path]:
    """``embeddings.parquet`` (the schema of a run's, with the encoder id, class names and
    cache key in its metadata) and ``skipped.csv``, as ``write_run`` writes them."""
    # Imported here: Ray workers import this module, and need not load the plotting stack.
    from .export import embeddings_table, skipped_table

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    embeddings = outcome.embeddings
    metadata = embeddings_metadata(embeddings) | {CACHE_KEY_KEY: outcome.cache_key}
    parquet = write_parquet(embeddings_table(embeddings), out / "embeddings.parquet", metadata)
    skipped = out / "skipped.csv"
    skipped_table(embeddings.skipped).to_csv(skipped, index=False)
    return [parquet, skipped]
