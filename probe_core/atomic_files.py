"""Files written whole or not at all.

A reader, another process or a crash never sees half a file: the content goes into a
temporary file beside the target (``.tmp-*.part``, which the caches sweep once stale), is
flushed to disk, then renamed over the target in one step (``os.replace``). A failure leaves
no temporary file behind.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

TEMP_PREFIX = ".tmp-"
TEMP_SUFFIX = ".part"


def write_atomically(path: Path, write: Callable[[IO[Any]], object], *, text: bool = False) -> Path:
    """``write(handle)`` into a temporary file in ``path``'s folder, then rename it to
    ``path``. ``text=True`` gives a UTF-8 text handle, else a binary one."""
    with tempfile.NamedTemporaryFile(
        "w" if text else "wb",
        dir=path.parent,
        prefix=TEMP_PREFIX,
        suffix=TEMP_SUFFIX,
        delete=False,
        encoding="utf-8" if text else None,
    ) as handle:
        try:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        except BaseException:
            handle.close()
            Path(handle.name).unlink(missing_ok=True)
            raise
    try:
        os.replace(handle.name, path)
    except OSError:
        Path(handle.name).unlink(missing_ok=True)
        raise
    return path
