"""Batched, no-grad feature extraction: files -> L2-normalised float32 numpy rows.

The protocol: encoder in eval mode under ``torch.inference_mode()``, images through
the encoder's own preprocessing, decoded in DataLoader worker processes so that
decoding overlaps compute, each batch normalised with ``f / f.norm(dim=-1, keepdim=True)``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .cache import EmbeddingCache, content_digest
from .dataset import ImageDataset, ImageItem, SkippedItem
from .encoders import Encoder
from .images import ImageLoadError, load_image

ProgressCallback = Callable[[int, int, float], None]
"""Called as ``progress(done, total, images_per_second)`` after each batch."""

CACHE_FLUSH_EVERY = 1024  # images; partial progress survives an interrupted run


@dataclass
class Embeddings:
    """Unit-norm embeddings in dataset order, with labels and what could not be used."""

    vectors: np.ndarray
    labels: np.ndarray
    paths: list[str]
    class_names: list[str]
    encoder_id: str
    skipped: list[SkippedItem] = field(default_factory=list)
    n_computed: int = 0
    n_from_cache: int = 0
    seconds: float = 0.0
    sha256: list[str] = field(default_factory=list)  # hex digest of each file's bytes
    splits: list[str] = field(default_factory=list)  # "train"/"val"/"test" in a split layout

    def __post_init__(self) -> None:
        # Rows built without files (tests, other tools) get no digests and no split layout.
        if not self.sha256:
            self.sha256 = [""] * len(self.paths)
        if not self.splits:
            self.splits = [""] * len(self.paths)

    @property
    def has_splits(self) -> bool:
        """Whether the images came in a dataset's own train/test folders."""
        return any(self.splits)

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])


# On CPUs, big batches are slower: glibc hands large activation buffers back to the
# kernel after every batch and page faults dominate (bench/extract.py: EfficientNet-Lite0
# on 2 cores, about 25 images/s at batch 64 against 40-45 at batch 16).
DEFAULT_BATCH_SIZES = {"cuda": 128, "mps": 32, "cpu": 16}


def default_batch_size(device: torch.device) -> int:
    return DEFAULT_BATCH_SIZES.get(device.type, 16)


def default_num_workers() -> int:
    return max(1, min(8, (os.cpu_count() or 2) - 1))


class _DecodingDataset(Dataset):
    """Reads, decodes and preprocesses one image; failures come back as reasons."""

    def __init__(self, items: Sequence[ImageItem], preprocess: Callable):
        self.items = items
        self.preprocess = preprocess

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor | None, str | None]:
        try:
            image = load_image(self.items[index].read_bytes())
            return index, self.preprocess(image), None
        except ImageLoadError as error:
            return index, None, str(error)
        except OSError as error:
            return index, None, f"cannot be read: {error.strerror or error}"
        except Exception as error:
            return index, None, f"could not be processed: {type(error).__name__}: {error}"


def _collate(batch: list[tuple[int, torch.Tensor | None, str | None]]):
    ok = [(index, tensor) for index, tensor, _ in batch if tensor is not None]
    failed = [(index, reason) for index, tensor, reason in batch if tensor is None]
    indices = [index for index, _ in ok]
    tensors = torch.stack([tensor for _, tensor in ok]) if ok else None
    return indices, tensors, failed


def _digests(items: Sequence[ImageItem]) -> list[bytes | str]:
    """sha256 of each item's bytes, or the reason it cannot be read."""

    def one(item: ImageItem) -> bytes | str:
        try:
            return content_digest(item.read_bytes())
        except OSError as error:
            return f"cannot be read: {error.strerror or error}"

    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(one, items))


def encode_items(
    items: Sequence[ImageItem],
    encoder: Encoder,
    *,
    batch_size: int | None = None,
    num_workers: int | None = None,
    progress: ProgressCallback | None = None,
    on_batch: Callable[[list[int], np.ndarray], None] | None = None,
) -> tuple[dict[int, np.ndarray], dict[int, str]]:
    """Embed items; returns (vectors by item index, failure reason by item index)."""
    if batch_size is None:
        batch_size = default_batch_size(encoder.device)
    if num_workers is None:
        num_workers = default_num_workers()
    if len(items) <= batch_size:
        num_workers = 0  # starting worker processes costs more than it saves here
    loader = DataLoader(
        _DecodingDataset(items, encoder.preprocess),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=_collate,
        pin_memory=encoder.device.type == "cuda",
    )
    vectors: dict[int, np.ndarray] = {}
    failures: dict[int, str] = {}
    done, started = 0, time.perf_counter()
    encoder.model.eval()
    with torch.inference_mode():
        for indices, batch, failed in loader:
            failures.update(failed)
            if batch is not None:
                features = encoder.encode(batch)
                features = features / features.norm(dim=-1, keepdim=True)
                rows = features.cpu().numpy().astype(np.float32, copy=False)
                vectors.update(zip(indices, rows, strict=True))
                if on_batch:
                    on_batch(indices, rows)
            done += len(indices) + len(failed)
            if progress:
                elapsed = time.perf_counter() - started
                progress(done, len(items), done / elapsed if elapsed > 0 else 0.0)
    return vectors, failures


def extract_embeddings(
    dataset: ImageDataset,
    encoder: Encoder,
    *,
    batch_size: int | None = None,
    num_workers: int | None = None,
    cache: EmbeddingCache | None = None,
    progress: ProgressCallback | None = None,
) -> Embeddings:
    """Embed every image of the dataset (from the cache where possible), in dataset order."""
    started = time.perf_counter()
    items = dataset.items
    digests = _digests(items)
    failures: dict[int, str] = {i: d for i, d in enumerate(digests) if isinstance(d, str)}
    readable = [i for i in range(len(items)) if i not in failures]

    cached = cache.lookup(encoder.cache_key, [digests[i] for i in readable]) if cache else {}
    by_digest: dict[bytes, np.ndarray] = dict(cached)
    # Identical files are embedded once.
    todo: dict[bytes, int] = {}
    for i in readable:
        if digests[i] not in by_digest:
            todo.setdefault(digests[i], i)
    todo_items = [items[i] for i in todo.values()]
    todo_digests = list(todo)

    pending: list[tuple[bytes, np.ndarray]] = []

    def remember(indices: list[int], rows: np.ndarray) -> None:
        if cache is None:
            return
        pending.extend((todo_digests[i], row) for i, row in zip(indices, rows, strict=True))
        if len(pending) >= CACHE_FLUSH_EVERY:
            flush()

    def flush() -> None:
        if cache is not None and pending:
            cache.store(
                encoder.cache_key, [d for d, _ in pending], np.stack([r for _, r in pending])
            )
            pending.clear()

    new_vectors, new_failures = encode_items(
        todo_items,
        encoder,
        batch_size=batch_size,
        num_workers=num_workers,
        progress=progress,
        on_batch=remember,
    )
    flush()
    for position, vector in new_vectors.items():
        by_digest[todo_digests[position]] = vector
    failed_digests = {todo_digests[position]: reason for position, reason in new_failures.items()}
    for i in readable:
        if digests[i] in failed_digests:
            failures[i] = failed_digests[digests[i]]

    kept = [i for i in range(len(items)) if i not in failures]
    dim = encoder.dim
    vectors = (
        np.stack([by_digest[digests[i]] for i in kept]).astype(np.float32, copy=False)
        if kept
        else np.zeros((0, dim), dtype=np.float32)
    )
    skipped = list(dataset.skipped) + [
        SkippedItem(items[i].path, failures[i]) for i in sorted(failures)
    ]
    return Embeddings(
        vectors=vectors,
        labels=np.array([items[i].label for i in kept], dtype=np.int64),
        paths=[items[i].path for i in kept],
        class_names=list(dataset.class_names),
        encoder_id=encoder.encoder_id,
        skipped=skipped,
        n_computed=len(new_vectors),
        n_from_cache=sum(1 for i in kept if digests[i] in cached),
        seconds=time.perf_counter() - started,
        sha256=[digests[i].hex() for i in kept],
        splits=[items[i].split for i in kept],
    )
