"""The one extraction core: the forward pass and the cache-aware assembly of ``Embeddings``.

Both engines go through here (``embed.extract_embeddings`` in this process, and
``distributed.ray_extract_embeddings`` on a Ray cluster, whose actors only call
``forward_batch``), so a fix lands once:

* ``forward_batch(encoder, batch)``: the forward pass. Every call runs the model on batches
  of exactly ``encoder.forward_rows`` rows, the last one padded with copies of its last row
  and the padding's rows dropped, and L2-normalises each row. The model never sees another
  batch shape, and no path computes anything across rows (int8 scales are per row), so a
  row's vector depends on its own pixels only: not on how the images were batched (batch
  size, workers, Ray actors, a cache that already held some of them).
* ``cached_embeddings(dataset, ...)``: the sha256 of every file, the cache looked up before
  anything is embedded, each distinct file embedded once, new vectors stored every
  ``CACHE_FLUSH_EVERY`` images (an interrupted run keeps its progress), and the
  ``Embeddings`` assembled in dataset order with every skipped file and its reason.
* ``reason_for(error)``: the one mapping from an exception to the reason a file is skipped.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from .cache import EmbeddingCache, content_digest
from .dataset import ImageDataset, ImageItem, SkippedItem
from .embeddings import Embeddings
from .encoders import Encoder
from .images import ImageLoadError

CACHE_FLUSH_EVERY = 1024  # images; partial progress survives an interrupted run
QUICK_READ_SECONDS = 1e-3  # per file, while hashing: a local disk or the page cache
DIGEST_THREADS = 4

OnBatch = Callable[[list[int], np.ndarray], None]
"""Called as ``on_batch(indices, rows)`` with vectors as soon as they are computed."""
EmbedFunction = Callable[[list[ImageItem], OnBatch], tuple[dict[int, np.ndarray], dict[int, str]]]
"""An engine: embeds items, calling ``on_batch`` as vectors come; returns (vectors by item
index, failure reason by item index)."""


def reason_for(error: BaseException) -> str:
    """Why a file is skipped, from the error that reading, decoding or preprocessing it
    raised: the same words on every engine."""
    if isinstance(error, ImageLoadError):
        return str(error)
    if isinstance(error, OSError):
        return f"cannot be read: {error.strerror or error}"
    return f"could not be processed: {type(error).__name__}: {error}"


def _layout(batch: torch.Tensor, channels_last: bool) -> torch.Tensor:
    if batch.dim() != 4:
        return batch
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return batch.contiguous(memory_format=fmt)


def forward_batch(encoder: Encoder, batch: torch.Tensor, *, fixed_shape: bool = True) -> np.ndarray:
    """Unit-norm float32 embeddings of a preprocessed batch of any length, one row per image.

    The model runs on chunks of exactly ``encoder.forward_rows`` rows in one memory layout;
    a short last chunk is padded with copies of its last row, whose results are dropped. So
    the same image gives the same bits in any batch, on any engine.

    ``fixed_shape=False`` skips the padding: a short batch runs at its own length. Only for
    answers that are shown and never stored or scored (a live camera frame): one frame of the
    bundled encoder then takes 16 ms instead of the 206 ms of 16 padded rows on two CPU cores,
    and its vector may differ from the fixed-shape one in the last float32 bits.
    """
    rows = encoder.forward_rows
    parts: list[np.ndarray] = []
    with torch.inference_mode():
        for start in range(0, len(batch), rows):
            chunk = batch[start : start + rows]
            real = len(chunk)
            if real < rows and fixed_shape:
                padding = chunk[-1:].expand(rows - real, *chunk.shape[1:])
                chunk = torch.cat([chunk, padding])
            chunk = _layout(chunk, encoder.path.channels_last)
            features = encoder.encode(chunk)
            features = features / features.norm(dim=-1, keepdim=True)
            parts.append(features[:real].cpu().numpy().astype(np.float32, copy=False))
    if not parts:
        return np.zeros((0, encoder.dim), dtype=np.float32)
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def local_folder(root: str) -> str:
    """``root`` as an absolute folder when it is a local folder (not a zip, upload or URI)."""
    if not root or "://" in root or not os.path.isdir(root):
        return ""
    return os.path.abspath(root)


def file_digest(item: ImageItem) -> bytes | str:
    """sha256 of the item's bytes, or the reason it cannot be read."""
    try:
        return content_digest(item.read_bytes())
    except OSError as error:
        return reason_for(error)


def file_digests(
    items: Sequence[ImageItem], *, clock: Callable[[], float] = time.perf_counter
) -> list[bytes | str]:
    """sha256 of each item's bytes, or the reason it cannot be read, in order.

    Files are hashed in this thread while reading is quick (on average at most
    ``QUICK_READ_SECONDS`` per file by ``clock``: a local disk, the page cache, where a
    thread pool only adds its hand-offs); once reading turns slow (a network folder, a cold
    disk), the rest are read by ``DIGEST_THREADS`` threads at once.
    """
    digests: list[bytes | str] = []
    started = clock()
    for item in items:
        digests.append(file_digest(item))
        if clock() - started > QUICK_READ_SECONDS * len(digests):
            break
    rest = items[len(digests) :]
    if rest:
        with ThreadPoolExecutor(max_workers=DIGEST_THREADS) as pool:
            digests.extend(pool.map(file_digest, rest))
    return digests


class _CacheWriter:
    """New vectors by digest, stored in the cache every ``CACHE_FLUSH_EVERY`` of them."""

    def __init__(self, cache: EmbeddingCache | None, key: str):
        self.cache, self.key = cache, key
        self.pending: list[tuple[bytes, np.ndarray]] = []

    def add(self, digests: list[bytes], rows: np.ndarray) -> None:
        if self.cache is None:
            return
        self.pending.extend(zip(digests, rows, strict=True))
        if len(self.pending) >= CACHE_FLUSH_EVERY:
            self.flush()

    def flush(self) -> None:
        if self.cache is not None and self.pending:
            digests = [digest for digest, _ in self.pending]
            self.cache.store(self.key, digests, np.stack([row for _, row in self.pending]))
            self.pending.clear()


def cached_embeddings(
    dataset: ImageDataset,
    *,
    encoder_id: str,
    cache_key: str,
    dim: int,
    embed: EmbedFunction,
    digests: Callable[[Sequence[ImageItem]], list[bytes | str]] = file_digests,
    cache: EmbeddingCache | None = None,
) -> Embeddings:
    """Every image of the dataset embedded (from the cache where possible), in dataset order.

    ``embed`` is the engine: it gets the items to embed, each distinct file once, and an
    ``on_batch`` to call with vectors as they come (they reach the cache as the run goes).
    ``digests`` hashes the files (default: ``file_digests`` in this process).
    """
    started = time.perf_counter()
    items = dataset.items
    hashed = digests(items) if items else []
    failures: dict[int, str] = {i: d for i, d in enumerate(hashed) if isinstance(d, str)}
    readable = [i for i in range(len(items)) if i not in failures]

    wanted = [hashed[i] for i in readable]
    cached = cache.lookup(cache_key, wanted) if cache is not None and wanted else {}
    by_digest: dict[bytes, np.ndarray] = dict(cached)
    todo: dict[bytes, int] = {}  # identical files are embedded once
    for i in readable:
        if hashed[i] not in by_digest:
            todo.setdefault(hashed[i], i)
    todo_digests = list(todo)
    writer = _CacheWriter(cache, cache_key)

    def on_batch(indices: list[int], rows: np.ndarray) -> None:
        writer.add([todo_digests[i] for i in indices], rows)

    new_vectors: dict[int, np.ndarray] = {}
    new_failures: dict[int, str] = {}
    if todo:
        try:
            new_vectors, new_failures = embed([items[i] for i in todo.values()], on_batch)
        finally:
            writer.flush()  # what was embedded before an interruption is kept
    for position, vector in new_vectors.items():
        by_digest[todo_digests[position]] = vector
    failed = {todo_digests[position]: reason for position, reason in new_failures.items()}
    failures.update({i: failed[hashed[i]] for i in readable if hashed[i] in failed})

    kept = [i for i in range(len(items)) if i not in failures]
    vectors = (
        np.stack([by_digest[hashed[i]] for i in kept]).astype(np.float32, copy=False)
        if kept
        else np.zeros((0, dim), dtype=np.float32)
    )
    return Embeddings(
        vectors=vectors,
        labels=np.array([items[i].label for i in kept], dtype=np.int64),
        paths=[items[i].path for i in kept],
        class_names=list(dataset.class_names),
        encoder_id=encoder_id,
        skipped=[
            *dataset.skipped,
            *(SkippedItem(items[i].path, failures[i]) for i in sorted(failures)),
        ],
        n_computed=len(new_vectors),
        n_from_cache=sum(1 for i in kept if hashed[i] in cached),
        seconds=time.perf_counter() - started,
        sha256=[hashed[i].hex() for i in kept],
        splits=[items[i].split for i in kept],
        image_root=local_folder(dataset.root),
    )
