"""On-disk embedding cache keyed by encoder + preprocessing + the sha256 of each file's bytes.

Each write is a new immutable shard (``.npz``) written to a temporary file and
renamed into place, so a reader sees a whole shard or none. Every shard carries
a checksum over its key, digests and vectors; a shard that fails any check is
deleted and its images are embedded again, never trusted.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import time
import uuid
import zipfile
from pathlib import Path

import numpy as np

from .atomic_files import TEMP_PREFIX, TEMP_SUFFIX, write_atomically

log = logging.getLogger(__name__)

CACHE_DIR_ENV = "PROBE_STUDIO_CACHE_DIR"
FORMAT_VERSION = 1
MAX_SHARDS = 16  # more than this in one namespace are merged into one
STALE_TEMP_SECONDS = 3600
NAMESPACE_CHARS = 32  # hex digits of a namespace folder's name


def _is_hex(name: str) -> bool:
    return all(c in "0123456789abcdef" for c in name)


def default_cache_dir() -> Path:
    """``$PROBE_STUDIO_CACHE_DIR``, else the user's cache folder (e.g. ~/.cache/probe-studio)."""
    override = os.environ.get(CACHE_DIR_ENV)
    if override:
        return Path(override).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("probe-studio")) / "embeddings"


def content_digest(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _checksum(key: str, digests: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    digest = hashlib.sha256()
    digest.update(f"v{FORMAT_VERSION}|{key}|{vectors.shape}".encode())
    digest.update(np.ascontiguousarray(digests).tobytes())
    digest.update(np.ascontiguousarray(vectors).tobytes())
    return np.frombuffer(digest.digest(), dtype=np.uint8)


class CorruptShardError(ValueError):
    pass


class EmbeddingCache:
    """Embeddings by content digest, one folder (namespace) per encoder cache key."""

    def __init__(self, directory: str | os.PathLike[str] | None = None):
        self.directory = Path(directory) if directory is not None else default_cache_dir()

    def _namespace(self, key: str) -> Path:
        return self.directory / hashlib.sha256(key.encode()).hexdigest()[:NAMESPACE_CHARS]

    def _namespaces(self) -> list[Path]:
        return [
            path
            for path in self.directory.glob("*")
            if path.is_dir() and len(path.name) == NAMESPACE_CHARS and _is_hex(path.name)
        ]

    def _shards(self, key: str) -> list[Path]:
        folder = self._namespace(key)
        return sorted(folder.glob("*.npz")) if folder.is_dir() else []

    def lookup(self, key: str, digests: list[bytes]) -> dict[bytes, np.ndarray]:
        """The cached vectors among ``digests`` (missing ones are simply absent)."""
        wanted = set(digests)
        found: dict[bytes, np.ndarray] = {}
        for shard in self._shards(key):
            loaded = self._read_shard(shard, key)
            if loaded is None:
                continue
            shard_digests, vectors = loaded
            for row, digest in enumerate(shard_digests):
                digest_bytes = digest.tobytes()
                if digest_bytes in wanted:
                    found[digest_bytes] = vectors[row]
        return found

    def store(self, key: str, digests: list[bytes], vectors: np.ndarray) -> None:
        """Add vectors (one row per digest) as a new shard; merge shards when there are many."""
        if not digests:
            return
        digest_array = np.frombuffer(b"".join(digests), dtype=np.uint8).reshape(len(digests), 32)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.shape[0] != len(digests):
            raise ValueError("one vector per digest is required")
        folder = self._namespace(key)
        folder.mkdir(parents=True, exist_ok=True)
        self._write_shard(folder, key, digest_array, vectors)
        shards = self._shards(key)
        if len(shards) > MAX_SHARDS:
            self._compact(key, shards)
        self._remove_stale_temp_files(folder)

    def _write_shard(
        self, folder: Path, key: str, digests: np.ndarray, vectors: np.ndarray
    ) -> Path:
        final = folder / f"{time.time_ns():020d}-{uuid.uuid4().hex[:12]}.npz"
        return write_atomically(
            final,
            lambda handle: np.savez(
                handle,
                format_version=np.array(FORMAT_VERSION),
                key=np.frombuffer(key.encode(), dtype=np.uint8),
                digests=digests,
                vectors=vectors,
                checksum=_checksum(key, digests, vectors),
            ),
        )

    def _read_shard(self, shard: Path, key: str) -> tuple[np.ndarray, np.ndarray] | None:
        try:
            return self._validated(shard, key)
        except FileNotFoundError:
            return None  # merged away by another process meanwhile
        except (
            CorruptShardError,
            OSError,
            ValueError,
            KeyError,
            zipfile.BadZipFile,
            EOFError,
        ) as error:
            log.warning("discarding damaged embedding cache file %s: %s", shard, error)
            shard.unlink(missing_ok=True)
            return None

    @staticmethod
    def _validated(shard: Path, key: str) -> tuple[np.ndarray, np.ndarray]:
        with np.load(shard, allow_pickle=False) as data:
            if int(data["format_version"]) != FORMAT_VERSION:
                raise CorruptShardError("unknown format version")
            if data["key"].tobytes().decode() != key:
                raise CorruptShardError("key mismatch")
            digests, vectors, checksum = data["digests"], data["vectors"], data["checksum"]
        if digests.ndim != 2 or digests.shape[1] != 32 or digests.dtype != np.uint8:
            raise CorruptShardError("bad digest array")
        if vectors.ndim != 2 or vectors.shape[0] != digests.shape[0] or vectors.dtype != np.float32:
            raise CorruptShardError("bad vector array")
        if not np.array_equal(checksum, _checksum(key, digests, vectors)):
            raise CorruptShardError("checksum mismatch")
        if not np.isfinite(vectors).all():
            raise CorruptShardError("non-finite values")
        return digests, vectors

    def _compact(self, key: str, shards: list[Path]) -> None:
        merged: dict[bytes, np.ndarray] = {}
        readable = []
        for shard in shards:
            loaded = self._read_shard(shard, key)
            if loaded is None:
                continue
            readable.append(shard)
            for digest, vector in zip(*loaded, strict=True):
                merged[digest.tobytes()] = vector
        if not merged:
            return
        digests = np.frombuffer(b"".join(merged), dtype=np.uint8).reshape(len(merged), 32)
        self._write_shard(self._namespace(key), key, digests, np.stack(list(merged.values())))
        for shard in readable:
            shard.unlink(missing_ok=True)

    @staticmethod
    def _remove_stale_temp_files(folder: Path) -> None:
        cutoff = time.time() - STALE_TEMP_SECONDS
        for temp in folder.glob(f"{TEMP_PREFIX}*{TEMP_SUFFIX}"):
            try:
                if temp.stat().st_mtime < cutoff:
                    temp.unlink()
            except OSError:
                pass

    def clear(self, key: str | None = None) -> None:
        """Remove one namespace's shards, or every namespace's (other folders beside them,
        such as the execution-path decisions, stay)."""
        folders = [self._namespace(key)] if key else self._namespaces()
        for folder in folders:
            for path in folder.glob("*"):
                path.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                folder.rmdir()
