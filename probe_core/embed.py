"""Batched, no-grad feature extraction: files -> L2-normalised float32 numpy rows.

The protocol: encoder in eval mode under ``torch.inference_mode()``, images through
the encoder's own preprocessing, decoded in DataLoader worker processes, each batch
normalised with ``f / f.norm(dim=-1, keepdim=True)``.

Keeping the model busy: the first batch is decoded in this process while the workers start;
the workers run at a lower priority, so that on few cores they fill the gaps rather than
stall the forward pass's threads; large JPEGs decode at a reduced size when the encoder allows
it (``Encoder.draft_side``); on CUDA, JPEG files decode on the GPU in batches.

On two cores or fewer there are no workers. A CPU encoder then takes turns with decoding:
its forward pass keeps every core busy, so threads decode each batch on all cores while the
model waits (``decoding_threads``). A GPU encoder instead overlaps: a thread decodes the
next batch during the forward pass.

The forward pass and everything around it that both engines share (hashing, the cache,
de-duplication, skip reasons, assembling ``Embeddings``) live in ``probe_core.extraction``:
decoded batches of any size are cut into the model's fixed batch shape there
(``forward_batch``), so ``batch_size`` and ``num_workers`` change the speed, never a bit of
the vectors.
"""

from __future__ import annotations

import contextlib
import io
import os
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Subset

from .cache import EmbeddingCache
from .dataset import ImageDataset, ImageItem
from .embeddings import Embeddings
from .encoders import Encoder
from .extraction import (
    CACHE_FLUSH_EVERY,
    OnBatch,
    cached_embeddings,
    forward_batch,
    local_folder,
    reason_for,
)
from .images import MAX_ASPECT_RATIO, load_image

__all__ = [
    "CACHE_FLUSH_EVERY",
    "encode_items",
    "extract_embeddings",
    "forward_batch",
    "local_folder",
    "model_input",
    "unit_embeddings",
]

ORIENTATION_TAG = 0x0112  # EXIF

ProgressCallback = Callable[[int, int, float], None]
"""Called as ``progress(done, total, images_per_second)`` after each batch."""
EncodeItems = Callable[..., tuple[dict[int, np.ndarray], dict[int, str]]]
"""``encode_items`` or a stand-in with its signature (see ``extract_embeddings``)."""

# On CPUs, big batches are slower: glibc hands large activation buffers back to the
# kernel after every batch and page faults dominate (bench/extract.py: EfficientNet-Lite0
# on 2 cores, about 25 images/s at batch 64 against 40-45 at batch 16).
DEFAULT_BATCH_SIZES = {"cuda": 256, "mps": 32, "cpu": 16}
# Decoding workers yield the CPU to the forward pass's threads: on few cores, an equal share
# would stall every parallel region behind a preempted thread.
WORKER_NICENESS = 5


def default_batch_size(device: torch.device) -> int:
    return DEFAULT_BATCH_SIZES.get(device.type, 16)


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def default_num_workers() -> int:
    """Decoding processes: none on two usable cores or fewer, where the forward pass already
    keeps both busy and a worker process only competes with it (threads decode instead: see
    ``decoding_threads``; one worker process measured pipeline/forward 0.56 on the demo,
    bench/extract.py); else one fewer than the cores, up to 8."""
    cores = usable_cores()
    return 0 if cores <= 2 else min(8, cores - 1)


def decoding_threads(device: torch.device, split_preprocessing: bool) -> int:
    """Without worker processes: how many threads decode each batch in turn with the model,
    which waits meanwhile; 0 when one thread decodes the next batch during the forward pass.

    In turn on a CPU encoder whose preprocessing splits (decoding then never calls into
    torch): the forward pass keeps every core busy, so a thread decoding alongside only slows
    it. Up to 4 threads, since the GIL limits the gain (two threads decode 1.4x faster than
    one). Overlapped on a GPU, whose forward pass leaves the cores free.
    """
    if device.type != "cpu" or not split_preprocessing:
        return 0
    return min(4, usable_cores())


class _Decoded(NamedTuple):
    """One item after the worker: a preprocessed tensor or uint8 pixels (``SplitPreprocess``),
    a reason, or (GPU decoding) raw JPEG."""

    index: int
    tensor: torch.Tensor | np.ndarray | None = None
    reason: str | None = None
    jpeg: torch.Tensor | None = None  # the file's bytes as uint8, to be decoded on the device


class _Batch(NamedTuple):
    indices: list[int]
    tensors: torch.Tensor | None  # preprocessed, or stacked uint8 pixels for SplitPreprocess
    failed: list[tuple[int, str]]
    jpeg_indices: list[int]
    jpegs: list[torch.Tensor]


class _DecodingDataset(Dataset):
    """Reads, decodes and preprocesses one image; failures come back as reasons.

    ``preprocess``: the whole transform, or ``SplitPreprocess.pixels`` (its per-image half).
    ``draft_side``: JPEGs may decode at a reduced size whose shorter side stays at least this.
    ``jpeg_on_device``: plain JPEGs come back undecoded, for ``_DeviceJpegDecoder``.
    """

    def __init__(
        self,
        items: Sequence[ImageItem],
        preprocess: Callable[[Image.Image], torch.Tensor | np.ndarray],
        draft_side: int | None = None,
        jpeg_on_device: bool = False,
    ):
        self.items = items
        self.preprocess = preprocess
        self.draft_side = draft_side
        self.jpeg_on_device = jpeg_on_device

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> _Decoded:
        try:
            data = self.items[index].read_bytes()
            if self.jpeg_on_device and device_decodable_jpeg(data):
                return _Decoded(index, jpeg=torch.frombuffer(bytearray(data), dtype=torch.uint8))
            image = load_image(data, draft_min_side=self.draft_side)
            return _Decoded(index, tensor=self.preprocess(image))
        except Exception as error:
            return _Decoded(index, reason=reason_for(error))


def _stack(parts: list[torch.Tensor | np.ndarray]) -> torch.Tensor:
    if isinstance(parts[0], np.ndarray):  # numpy, not torch: no torch thread pool in a thread
        return torch.from_numpy(np.stack(parts))
    return torch.stack(parts)


def _collate(batch: list[_Decoded]) -> _Batch:
    ok = [item for item in batch if item.tensor is not None]
    jpegs = [item for item in batch if item.jpeg is not None]
    return _Batch(
        indices=[item.index for item in ok],
        tensors=_stack([item.tensor for item in ok]) if ok else None,
        failed=[(item.index, item.reason) for item in batch if item.reason is not None],
        jpeg_indices=[item.index for item in jpegs],
        jpegs=[item.jpeg for item in jpegs],
    )


def device_decodable_jpeg(data: bytes) -> bool:
    """Whether the file can be decoded on the GPU as is: a whole RGB or greyscale JPEG without
    EXIF rotation, within Pillow's pixel limit and the aspect-ratio padding limit (the CPU
    path handles every other file, with the same results and reasons as before)."""
    # A truncated file lacks the end-of-image marker; some decoders would fill it in silently.
    if not data.startswith(b"\xff\xd8\xff") or data.rfind(b"\xff\xd9", -1024) < 0:
        return False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
                orientation = image.getexif().get(ORIENTATION_TAG, 1)
                mode = image.mode
    except Exception:
        return False
    limit = Image.MAX_IMAGE_PIXELS
    return (
        mode in ("RGB", "L")
        and orientation == 1
        and (limit is None or width * height <= limit)
        and max(width, height) <= MAX_ASPECT_RATIO * min(width, height)
    )


class _DeviceJpegDecoder:
    """Decodes a batch of JPEG files on the encoder's device (nvJPEG on CUDA) and replays the
    preprocessing there; a file it cannot decode goes through the CPU path, whose reason is
    kept if that fails too."""

    def __init__(self, encoder: Encoder, device: torch.device):
        self.device = device
        self.preprocess = encoder.tensor_preprocess
        self.cpu_preprocess = encoder.preprocess
        self.draft_side = encoder.draft_side

    def __call__(self, jpegs: list[torch.Tensor]) -> list[torch.Tensor | str]:
        from torchvision.io import ImageReadMode, decode_jpeg

        with warnings.catch_warnings():
            # torchvision 0.29 deprecates its decoders in favour of TorchCodec.
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", UserWarning)
            try:
                images = decode_jpeg(jpegs, mode=ImageReadMode.RGB, device=self.device)
            except Exception:  # one bad file fails the whole call: decode one by one
                images = [self._decode_one(jpeg) for jpeg in jpegs]
        return [self._finish(image, jpeg) for image, jpeg in zip(images, jpegs, strict=True)]

    def _finish(self, image: torch.Tensor | None, jpeg: torch.Tensor) -> torch.Tensor | str:
        if image is not None:
            try:
                return self.preprocess(image)
            except Exception:
                pass  # the CPU path gives the reason, if it fails too
        return self._on_cpu(jpeg)

    def _decode_one(self, jpeg: torch.Tensor) -> torch.Tensor | None:
        from torchvision.io import ImageReadMode, decode_jpeg

        try:
            return decode_jpeg(jpeg, mode=ImageReadMode.RGB, device=self.device)
        except Exception:
            return None

    def _on_cpu(self, jpeg: torch.Tensor) -> torch.Tensor | str:
        try:
            image = load_image(jpeg.numpy().tobytes(), draft_min_side=self.draft_side)
            return self.cpu_preprocess(image).to(self.device)
        except Exception as error:
            return reason_for(error)


def _jpeg_decode_device(encoder: Encoder) -> torch.device | None:
    """Where JPEG files are decoded in batches: the GPU on CUDA (when the encoder allows it);
    None: in the decoding workers, like every other file."""
    return encoder.device if encoder.decodes_jpeg_on_device else None


def _lower_priority(_worker_id: int) -> None:
    if hasattr(os, "nice"):
        with contextlib.suppress(OSError):
            os.nice(WORKER_NICENESS)


def _prefetched(dataset: _DecodingDataset, batch_size: int) -> Iterator[_Batch]:
    """Collated batches in order, the next one decoded in a thread while the caller encodes
    this one (Pillow and numpy release the GIL), without starting any process. With split
    preprocessing the thread never calls into torch, whose thread pool the forward pass uses."""
    starts = range(0, len(dataset), batch_size)

    def decode(start: int) -> _Batch:
        stop = min(start + batch_size, len(dataset))
        return _collate([dataset[i] for i in range(start, stop)])

    if not starts:
        return
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(decode, starts[0])
        for following in [*starts[1:], None]:
            batch = pending.result()
            pending = pool.submit(decode, following) if following is not None else None
            yield batch


def _decoded_in_turn(dataset: _DecodingDataset, batch_size: int, threads: int) -> Iterator[_Batch]:
    """Collated batches in order, each decoded when asked for: this thread and ``threads - 1``
    others each decode a contiguous share of it, while the caller's model waits."""

    def decode(indices: range) -> list[_Decoded]:
        return [dataset[i] for i in indices]

    with ThreadPoolExecutor(max_workers=max(1, threads - 1)) as pool:
        for start in range(0, len(dataset), batch_size):
            stop = min(start + batch_size, len(dataset))
            share = -(-(stop - start) // threads)
            first, *others = [range(i, min(i + share, stop)) for i in range(start, stop, share)]
            pending = [pool.submit(decode, indices) for indices in others]
            decoded = decode(first)
            for part in pending:
                decoded.extend(part.result())
            yield _collate(decoded)


def _batches(
    dataset: _DecodingDataset,
    batch_size: int,
    num_workers: int,
    pin_memory: bool,
    threads_in_turn: int = 0,
) -> Iterator[_Batch]:
    """Collated batches in order. With workers, the first batch is decoded here while the
    workers start on the rest, so that the model does not wait for the workers to start.
    Without, ``threads_in_turn`` threads decode each batch when it is asked for, or (0) a
    thread decodes the next batch while the caller works on this one."""
    if num_workers == 0 or len(dataset) <= batch_size:
        if threads_in_turn:
            yield from _decoded_in_turn(dataset, batch_size, threads_in_turn)
        else:
            yield from _prefetched(dataset, batch_size)
        return
    rest = DataLoader(
        Subset(dataset, range(batch_size, len(dataset))),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=_collate,
        pin_memory=pin_memory,
        worker_init_fn=_lower_priority,
    )
    workers = iter(rest)  # starts the worker processes and their first batches
    yield _collate([dataset[i] for i in range(batch_size)])
    yield from workers


def _merge(batch: _Batch, decoded: list[torch.Tensor | str], device: torch.device):
    """The batch's indices and images (CPU-decoded, then device-decoded) on the device, and
    its failures."""
    indices, parts = list(batch.indices), [] if batch.tensors is None else [batch.tensors]
    failed = list(batch.failed)
    on_device = []
    for index, result in zip(batch.jpeg_indices, decoded, strict=True):
        if isinstance(result, str):
            failed.append((index, result))
        else:
            indices.append(index)
            on_device.append(result)
    if on_device:
        parts = [part.to(device, non_blocking=True) for part in parts]
        parts.append(torch.stack(on_device))
    tensors = torch.cat(parts) if len(parts) > 1 else (parts[0] if parts else None)
    return indices, tensors, failed


def model_input(images: Sequence[Image.Image], encoder: Encoder) -> torch.Tensor:
    """Decoded images through the encoder's own preprocessing, as ``encode_items`` prepares
    a batch of them (uint8 pixels per image, then scaled and normalised on the device)."""
    split = encoder.split_preprocess
    if split is None:
        return torch.stack([encoder.preprocess(image) for image in images])
    pixels = _stack([split.pixels(image) for image in images])
    return split.batch(pixels, encoder.device, encoder.path.channels_last)


unit_embeddings = forward_batch
"""The forward pass on a preprocessed batch, each row L2-normalised, as float32 numpy, in
the model's fixed batch shape (``extraction.forward_batch``; kept under its old name)."""


class _Rows:
    """Decoded rows waiting for the model: handed on in whole forward batches, the rest at
    the end, so that a row's batch-mates follow from the item order alone."""

    def __init__(self, encoder: Encoder, on_rows: OnBatch):
        self.encoder, self.on_rows = encoder, on_rows
        self.indices: list[int] = []
        self.tensors: list[torch.Tensor] = []

    def add(self, indices: list[int], tensors: torch.Tensor) -> None:
        self.indices.extend(indices)
        self.tensors.append(tensors)
        whole = len(self.indices) - len(self.indices) % self.encoder.forward_rows
        if whole:
            self._embed(whole)

    def finish(self) -> None:
        if self.indices:
            self._embed(len(self.indices))

    def _embed(self, count: int) -> None:
        waiting = self.tensors[0] if len(self.tensors) == 1 else torch.cat(self.tensors)
        indices, self.indices = self.indices[:count], self.indices[count:]
        rest = waiting[count:]
        self.tensors = [rest] if len(rest) else []
        self.on_rows(indices, forward_batch(self.encoder, waiting[:count]))


def encode_items(
    items: Sequence[ImageItem],
    encoder: Encoder,
    *,
    batch_size: int | None = None,
    num_workers: int | None = None,
    progress: ProgressCallback | None = None,
    on_batch: Callable[[list[int], np.ndarray], None] | None = None,
) -> tuple[dict[int, np.ndarray], dict[int, str]]:
    """Embed items; returns (vectors by item index, failure reason by item index).

    On CUDA, JPEG files decode on the GPU (``torchvision.io.decode_jpeg``) when the encoder
    allows fast decoding and its preprocessing can run on tensors; other files, and JPEGs the
    GPU cannot decode, take the usual path.
    """
    if batch_size is None:
        batch_size = default_batch_size(encoder.device)
    if num_workers is None:
        num_workers = default_num_workers()
    jpeg_device = _jpeg_decode_device(encoder)
    split = encoder.split_preprocess
    dataset = _DecodingDataset(
        items,
        encoder.preprocess if split is None else split.pixels,
        draft_side=encoder.draft_side,
        jpeg_on_device=jpeg_device is not None,
    )
    device_decoder = None if jpeg_device is None else _DeviceJpegDecoder(encoder, jpeg_device)
    pin_memory = encoder.device.type == "cuda"
    threads_in_turn = decoding_threads(encoder.device, split is not None)
    vectors: dict[int, np.ndarray] = {}
    failures: dict[int, str] = {}

    def embedded(indices: list[int], rows: np.ndarray) -> None:
        vectors.update(zip(indices, rows, strict=True))
        if on_batch:
            on_batch(indices, rows)

    waiting = _Rows(encoder, embedded)
    done, started = 0, time.perf_counter()
    encoder.model.eval()
    with torch.inference_mode():
        batches = _batches(dataset, batch_size, num_workers, pin_memory, threads_in_turn)
        for batch in batches:
            if split is not None and batch.tensors is not None:  # uint8 pixels
                prepared = split.batch(batch.tensors, encoder.device, encoder.path.channels_last)
                batch = batch._replace(tensors=prepared)
            indices, tensors, failed = batch.indices, batch.tensors, batch.failed
            if device_decoder is not None and batch.jpegs:
                decoded = device_decoder(batch.jpegs)
                indices, tensors, failed = _merge(batch, decoded, jpeg_device)
            failures.update(failed)
            if tensors is not None:
                waiting.add(indices, tensors)
            done += len(indices) + len(failed)
            if done == len(items):
                waiting.finish()
            if progress:
                elapsed = time.perf_counter() - started
                progress(done, len(items), done / elapsed if elapsed > 0 else 0.0)
        waiting.finish()
    return vectors, failures


def extract_embeddings(
    dataset: ImageDataset,
    encoder: Encoder,
    *,
    batch_size: int | None = None,
    num_workers: int | None = None,
    cache: EmbeddingCache | None = None,
    progress: ProgressCallback | None = None,
    encode: EncodeItems | None = None,
) -> Embeddings:
    """Embed every image of the dataset (from the cache where possible), in dataset order,
    in this process (``extraction.cached_embeddings`` with ``encode_items`` as the engine).

    ``encode`` embeds what the cache lacks (default ``encode_items``; the app passes its
    cross-session queue's, ``EmbeddingQueue.encode_function``).
    """

    def embed(items: list[ImageItem], on_batch: OnBatch):
        return (encode or encode_items)(
            items,
            encoder,
            batch_size=batch_size,
            num_workers=num_workers,
            progress=progress,
            on_batch=on_batch,
        )

    return cached_embeddings(
        dataset,
        encoder_id=encoder.encoder_id,
        cache_key=encoder.cache_key,
        dim=encoder.dim,
        embed=embed,
        cache=cache,
    )
