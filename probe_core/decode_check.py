"""Which files of a dataset decode as images, checked before anything is embedded, so that a
preview counts only usable images and lists every unusable file with its reason.

Up to ``FULL_DECODE_LIMIT`` images every file is decoded (JPEGs at 1/8 of their size, which
still reads all of their data); above it only headers and checksums are read, and files whose
pixels turn out damaged are found while embedding (``decoded`` says which happened).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from .dataset import ImageDataset, ImageItem, SkippedItem
from .images import ImageLoadError, check_image

FULL_DECODE_LIMIT = 2_000


@dataclass(frozen=True)
class DecodeCheck:
    """The dataset with its unreadable files moved to ``skipped``, and how far it was checked."""

    dataset: ImageDataset
    unreadable: list[SkippedItem]
    decoded: bool  # every image's pixels were decoded (else headers and checksums only)


def _problem(item: ImageItem, decode: bool) -> SkippedItem | None:
    try:
        check_image(item.read_bytes(), decode=decode)
    except ImageLoadError as error:
        return SkippedItem(item.path, str(error))
    except OSError as error:
        return SkippedItem(item.path, f"cannot be read: {error.strerror or error}")
    return None


def check_decoding(
    dataset: ImageDataset,
    *,
    full_decode_limit: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    workers: int | None = None,
) -> DecodeCheck:
    """Check every image of ``dataset`` (decoding in a few threads: Pillow releases the GIL);
    ``progress(done, total)`` is called as files are checked. The result does not depend on
    the number of threads or the order in which they finish. ``full_decode_limit`` defaults to
    ``FULL_DECODE_LIMIT``."""
    limit = FULL_DECODE_LIMIT if full_decode_limit is None else full_decode_limit
    decode = len(dataset) <= limit
    workers = workers or min(4, os.cpu_count() or 1)
    problems: list[SkippedItem] = []
    total = len(dataset)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode-check") as pool:
        for done, problem in enumerate(
            pool.map(lambda item: _problem(item, decode), dataset.items), start=1
        ):
            if problem is not None:
                problems.append(problem)
            if progress is not None and (done % 16 == 0 or done == total):
                progress(done, total)
    return DecodeCheck(dataset.without(problems), problems, decoded=decode)
