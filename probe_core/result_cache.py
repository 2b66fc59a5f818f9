"""On-disk cache of probe results: an unchanged folder with unchanged settings is not refitted.

The key is a sha256 over the embeddings' content (vectors, labels, paths, class names,
splits, file digests, encoder id), every argument of ``run_probe`` (defaults filled in; the
probe by its ``get_params()``), ``FORMAT_VERSION`` (bump it to drop every entry) and a
fingerprint of the code behind a result (the source of every package module ``run_probe``
imports, read from the package's own import graph, and the versions of numpy, scipy,
scikit-learn, statsmodels and cleanlab), so that a stored result is always the one a fresh
run would give. The probe is keyed with its settings resolved: the solver and device that
actually run (``"sklearn"`` on ``"cpu"``), not ``"auto"``.

Maps are kept the same way, keyed by ``map_key`` (the embeddings, every argument of
``project`` and a fingerprint of the map code and UMAP's libraries).

The value is the whole ``ProbeResult`` (or ``Projection``), stored without pickle: one
``.npz`` per key (read with ``allow_pickle=False``) holding the numpy arrays and a JSON
document for the rest.
The document names only classes from a fixed list (the result's dataclasses, the fitted
``LinearProbe`` and its ``LogisticRegression``); they are rebuilt field by field, so a
planted file can at worst describe a wrong result, never run code. Like the embedding
cache, each entry is written to a temporary file and renamed into place, carries a checksum,
and is deleted (then recomputed by the caller) when any check fails. Least recently used
entries are removed once the folder grows past ``max_bytes``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import importlib.metadata
import inspect
import json
import logging
import os
import secrets
import struct
import time
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.linear_model import LogisticRegression

from .atomic_files import TEMP_PREFIX, TEMP_SUFFIX, write_atomically
from .cache import STALE_TEMP_SECONDS, default_cache_dir
from .embeddings import Embeddings
from .evaluation.duplicates import DuplicateGroup, Duplicates
from .evaluation.intervals import Estimate
from .evaluation.label_issues import LabelIssue, LowConfidenceLabel
from .evaluation.map_quality import MapQuality
from .evaluation.metrics import ClassMetrics, Metrics
from .evaluation.protocols import ProbeResult, ProtocolChoice, run_probe
from .module_graph import dependencies, module_files
from .probe import LinearProbe, SweepResult
from .projection import MapScore, Projection, project

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
RESULTS_FOLDER = "results"  # inside the embedding cache folder
DEFAULT_MAX_BYTES = 512 * 2**20
RESULT_LIBRARIES = ("numpy", "scipy", "scikit-learn", "statsmodels", "cleanlab")
MAP_LIBRARIES = ("numpy", "scikit-learn", "umap-learn", "pynndescent", "numba")

# The only classes a stored document may name.
_DATACLASSES = {
    cls.__qualname__: cls
    for cls in (
        ProbeResult,
        ProtocolChoice,
        Metrics,
        ClassMetrics,
        Estimate,
        SweepResult,
        Duplicates,
        DuplicateGroup,
        LabelIssue,
        LowConfidenceLabel,
        Projection,
        MapScore,
        MapQuality,
    )
}
_ESTIMATORS = {cls.__qualname__: cls for cls in (LinearProbe, LogisticRegression)}


def default_result_cache_dir() -> Path:
    """``results/`` inside the embedding cache folder (which ``PROBE_STUDIO_CACHE_DIR`` moves)."""
    return default_cache_dir() / RESULTS_FOLDER


class CorruptEntryError(ValueError):
    pass


# --------------------------------------------------------------------------- key


def _feed(hasher, value) -> None:
    """Feed ``value`` to ``hasher`` unambiguously (type tag, lengths); unknown types raise."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None:
        hasher.update(b"N")
    elif isinstance(value, bool):
        hasher.update(b"B1" if value else b"B0")
    elif isinstance(value, int):
        hasher.update(f"I{value};".encode())
    elif isinstance(value, float):
        hasher.update(f"F{value.hex()};".encode())
    elif isinstance(value, str):
        encoded = value.encode(errors="surrogatepass")  # undecodable file names stay distinct
        hasher.update(b"S" + struct.pack("<Q", len(encoded)) + encoded)
    elif isinstance(value, np.ndarray):
        if value.dtype.hasobject:
            raise TypeError("object arrays cannot be keyed")
        hasher.update(f"A{value.dtype.str}{value.shape};".encode())
        hasher.update(np.ascontiguousarray(value).data)
    elif isinstance(value, list | tuple):
        hasher.update(f"{'L' if isinstance(value, list) else 'T'}{len(value)};".encode())
        for item in value:
            _feed(hasher, item)
    elif isinstance(value, dict):
        hasher.update(f"D{len(value)};".encode())
        for name in sorted(value, key=str):
            _feed(hasher, name)
            _feed(hasher, value[name])
    elif isinstance(value, BaseEstimator):
        _feed(hasher, ("estimator", type(value).__qualname__, value.get_params(deep=False)))
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        _feed(hasher, ("dataclass", type(value).__qualname__, fields))
    else:
        raise TypeError(f"cannot key a {type(value).__name__}")


def embeddings_digest(embeddings: Embeddings) -> str:
    """sha256 over everything of the embeddings that a probe result depends on."""
    hasher = hashlib.sha256()
    vectors = np.ascontiguousarray(embeddings.vectors)
    for part in (
        vectors,
        np.asarray(embeddings.labels),
        list(embeddings.paths),
        list(embeddings.class_names),
        list(embeddings.splits),
        list(embeddings.sha256),
        embeddings.encoder_id,
    ):
        _feed(hasher, part)
    return hasher.hexdigest()


@functools.cache
def code_fingerprint() -> str:
    """sha256 over the source of the code that computes a probe result and the versions of
    the libraries it calls: after an edit or an upgrade every stored result misses once.
    The code is every package module ``run_probe`` and this module import, directly or not
    (``module_graph.dependencies``: the probe, its torch solver, the evaluation modules ...).
    (Edits to comments count too: a needless miss is cheap, a stale result is not.)"""
    return _fingerprint(dependencies([run_probe.__module__, __name__]), RESULT_LIBRARIES)


@functools.cache
def map_code_fingerprint() -> str:
    """``code_fingerprint`` for maps: the projection and map-quality code, UMAP and friends."""
    roots = [project.__module__, MapQuality.__module__, __name__]
    return _fingerprint(dependencies(roots), MAP_LIBRARIES)


def _fingerprint(modules: list[str], libraries: tuple[str, ...]) -> str:
    """sha256 over the modules' source and the libraries' versions. When a module's source
    cannot be read (an install without source files), nothing stored can be shown to come
    from this code: the fingerprint is then unique to this process, so every stored entry
    misses (and a warning says why) rather than a stale result being served."""
    hasher = hashlib.sha256()
    files = module_files()
    for module in modules:
        try:
            source = files[module].read_bytes()
        except OSError as error:
            log.warning("result cache off for this process: cannot read %s (%s)", module, error)
            _feed(hasher, (module, f"unreadable {secrets.token_hex(16)}"))
            continue
        _feed(hasher, (module, source.decode(errors="replace")))
    _feed(hasher, [(name, _version(name)) for name in libraries])
    return hasher.hexdigest()


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


# Taken at import, so that they describe the code this process runs, not later edits.
code_fingerprint()
map_code_fingerprint()


def result_key(embeddings: Embeddings, **options) -> str:
    """The cache key of ``run_probe(embeddings, **options)``.

    ``options`` are bound to ``run_probe``'s signature with its defaults filled in, so
    leaving an argument out and passing its default give the same key, and a new
    ``run_probe`` argument is part of the key without any change here.
    """
    bound = inspect.signature(run_probe).bind(embeddings, **options)
    bound.apply_defaults()
    arguments = dict(bound.arguments)
    del arguments["embeddings"]
    if arguments.get("probe") is None:  # run_probe's own default
        arguments["probe"] = LinearProbe(seed=arguments["seed"])
    arguments["probe"] = arguments["probe"].resolved()  # the solver and device that run
    hasher = hashlib.sha256()
    _feed(
        hasher,
        (FORMAT_VERSION, code_fingerprint(), embeddings_digest(embeddings), arguments),
    )
    return hasher.hexdigest()


def map_key(embeddings: Embeddings, **options) -> str:
    """The cache key of ``project(embeddings.vectors, **options)`` (``labels`` included, so
    the stored map carries the same score)."""
    bound = inspect.signature(project).bind(embeddings.vectors, **options)
    bound.apply_defaults()
    arguments = dict(bound.arguments)
    del arguments["vectors"]
    hasher = hashlib.sha256()
    _feed(
        hasher,
        ("map", FORMAT_VERSION, map_code_fingerprint(), embeddings_digest(embeddings), arguments),
    )
    return hasher.hexdigest()


# --------------------------------------------------------------------------- value


class _JsonWriter:
    """Serialises a result as a JSON-able tree plus named arrays (no pickle anywhere)."""

    def __init__(self):
        self.arrays: dict[str, np.ndarray] = {}

    def encode(self, value):
        if isinstance(value, np.ndarray):
            if value.dtype.hasobject:
                raise TypeError("object arrays are not stored")
            name = f"a{len(self.arrays)}"
            self.arrays[name] = value
            return {"$": "array", "name": name}
        if isinstance(value, np.generic):
            return {"$": "scalar", "dtype": value.dtype.str, "value": value.item()}
        if value is None or isinstance(value, bool | int | float | str):
            return value
        if isinstance(value, list):
            return [self.encode(item) for item in value]
        if isinstance(value, tuple):
            return {"$": "tuple", "items": [self.encode(item) for item in value]}
        if isinstance(value, dict):
            pairs = [[self.encode(k), self.encode(v)] for k, v in value.items()]
            return {"$": "dict", "items": pairs}
        name = type(value).__qualname__
        if _ESTIMATORS.get(name) is type(value):
            state = {key: self.encode(item) for key, item in vars(value).items()}
            return {"$": "estimator", "class": name, "state": state}
        if _DATACLASSES.get(name) is type(value):
            fields = {
                f.name: self.encode(getattr(value, f.name)) for f in dataclasses.fields(value)
            }
            return {"$": "dataclass", "class": name, "fields": fields}
        raise TypeError(f"a {type(value).__name__} cannot be stored in the result cache")


def _decode(node, arrays: dict[str, np.ndarray]):
    if node is None or isinstance(node, bool | int | float | str):
        return node
    if isinstance(node, list):
        return [_decode(item, arrays) for item in node]
    if not isinstance(node, dict):
        raise CorruptEntryError(f"unexpected {type(node).__name__} in the document")
    kind = node["$"]
    if kind == "array":
        return arrays[node["name"]]
    if kind == "scalar":
        return np.dtype(node["dtype"]).type(node["value"])
    if kind == "tuple":
        return tuple(_decode(item, arrays) for item in node["items"])
    if kind == "dict":
        return {_decode(k, arrays): _decode(v, arrays) for k, v in node["items"]}
    if kind == "dataclass":
        cls = _DATACLASSES[node["class"]]
        return cls(**{name: _decode(item, arrays) for name, item in node["fields"].items()})
    if kind == "estimator":
        cls = _ESTIMATORS[node["class"]]
        estimator = cls.__new__(cls)
        estimator.__dict__.update(
            {name: _decode(item, arrays) for name, item in node["state"].items()}
        )
        return estimator
    raise CorruptEntryError(f"unknown node kind {kind!r}")


def _checksum(key: str, document: bytes, arrays: dict[str, np.ndarray]) -> np.ndarray:
    digest = hashlib.sha256()
    digest.update(f"v{FORMAT_VERSION}|{key}|".encode())
    _feed(digest, document.decode())
    for name in sorted(arrays):
        _feed(digest, (name, arrays[name]))
    return np.frombuffer(digest.digest(), dtype=np.uint8)


# --------------------------------------------------------------------------- cache


class ResultCache:
    """Probe results by ``result_key``, one ``.npz`` file per key in ``directory``."""

    def __init__(
        self,
        directory: str | os.PathLike[str] | None = None,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ):
        self.directory = Path(directory) if directory is not None else default_result_cache_dir()
        self.max_bytes = max_bytes

    def path_for(self, key: str) -> Path:
        if len(key) != 64 or not all(c in "0123456789abcdef" for c in key):
            raise ValueError("a result key is a sha256 hex digest (see result_key)")
        return self.directory / f"{key}.npz"

    def lookup(self, key: str) -> ProbeResult | None:
        """The stored result, or None (a damaged entry is deleted and reported as a miss)."""
        return self._lookup(key, ProbeResult)

    def lookup_map(self, key: str) -> Projection | None:
        """The stored map (``map_key``), or None, like ``lookup``."""
        return self._lookup(key, Projection)

    def _lookup(self, key: str, expected: type):
        path = self.path_for(key)
        try:
            result = self._read(path, key, expected)
        except FileNotFoundError:
            return None
        except Exception as error:  # whatever is wrong with an entry, never break a study
            log.warning("discarding damaged result cache file %s: %s", path, error)
            path.unlink(missing_ok=True)
            return None
        with contextlib.suppress(OSError):
            os.utime(path)  # recently used: pruned last
        return result

    def store(self, key: str, result: ProbeResult | Projection) -> Path | None:
        """Write ``result`` (a probe result or a map) under ``key`` (best effort: a failure is
        logged, not raised)."""
        path = self.path_for(key)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._write(path, key, result)
        except (OSError, TypeError, ValueError) as error:
            log.warning("could not store a probe result in %s: %s", self.directory, error)
            return None
        self._prune(keep=path)
        return path

    def entries(self) -> list[Path]:
        return sorted(self.directory.glob("*.npz")) if self.directory.is_dir() else []

    def clear(self) -> None:
        for path in [*self.entries(), *self.directory.glob(f"{TEMP_PREFIX}*{TEMP_SUFFIX}")]:
            path.unlink(missing_ok=True)

    @staticmethod
    def _write(path: Path, key: str, result: ProbeResult | Projection) -> None:
        writer = _JsonWriter()
        document = json.dumps(writer.encode(result), allow_nan=True).encode()
        arrays = writer.arrays
        write_atomically(
            path,
            lambda handle: np.savez(
                handle,
                format_version=np.array(FORMAT_VERSION),
                key=np.frombuffer(key.encode(), dtype=np.uint8),
                document=np.frombuffer(document, dtype=np.uint8),
                checksum=_checksum(key, document, arrays),
                **arrays,
            ),
        )

    @staticmethod
    def _read(path: Path, key: str, expected: type = ProbeResult):
        with np.load(path, allow_pickle=False) as data:
            if int(data["format_version"]) != FORMAT_VERSION:
                raise CorruptEntryError("unknown format version")
            if data["key"].tobytes().decode() != key:
                raise CorruptEntryError("key mismatch")
            document = data["document"].tobytes()
            checksum = data["checksum"]
            arrays = {
                name: data[name]
                for name in data.files
                if name not in ("format_version", "key", "document", "checksum")
            }
        if not np.array_equal(checksum, _checksum(key, document, arrays)):
            raise CorruptEntryError("checksum mismatch")
        result = _decode(json.loads(document), arrays)
        if not isinstance(result, expected):
            raise CorruptEntryError(f"the entry does not hold a {expected.__name__}")
        return result

    def _prune(self, keep: Path) -> None:
        """Remove stale temporary files, then least recently used entries past max_bytes."""
        now = time.time()
        for temp in self.directory.glob(f"{TEMP_PREFIX}*{TEMP_SUFFIX}"):
            try:
                if temp.stat().st_mtime < now - STALE_TEMP_SECONDS:
                    temp.unlink()
            except OSError:
                pass
        sized = []
        for path in self.entries():
            try:
                stat = path.stat()
            except OSError:
                continue
            sized.append((stat.st_mtime, stat.st_size, path))
        total = sum(size for _, size, _ in sized)
        for _, size, path in sorted(sized):
            if total <= self.max_bytes:
                break
            if path != keep:
                path.unlink(missing_ok=True)
                total -= size
