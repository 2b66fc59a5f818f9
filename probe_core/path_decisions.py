"""The execution path as a decision made once per machine and kept: the path-decision store.

Which execution path an encoder runs on the CPU (plain fp32, channels_last, folded batch
norms, int8, bf16; see ``acceleration``) is measured once, on a calibration batch, and the
decision is kept on disk with its measurements. Every later process, the app and every Ray
actor read it back and time nothing, so the path (and with it the vectors and the cache key)
never changes between processes because of timing noise.

A decision holds for one ``DecisionKey``: the encoder id and its preprocessing, the device,
the forward pass's batch shape, the torch version, the CPU model and feature flags, and the
number of intra-op threads. Any of them changing (another torch build, another CPU) makes a
new decision; the old one stays for the settings it was made for.

The store is one small JSON file per key in ``execution-paths/`` inside the embedding cache
folder (``$PROBE_STUDIO_CACHE_DIR`` moves it; ``$PROBE_STUDIO_PATHS_DIR`` moves the store
alone), written atomically (a temporary file renamed
into place); a file that cannot be read, or was written for another key, is deleted and the
decision made again. ``decide`` holds a lock file while it measures, so that two processes
starting at once make one decision, not two.

The API, for whoever adds a candidate path (e.g. an ONNX Runtime path):

* ``DecisionKey.current(encoder_id, preprocess_id, device, forward_rows)``: the key here;
* ``PathDecisions(directory)``: the store (``None``: kept in this process's memory only);
  ``get(key)``, ``put(decision)``, ``decide(key, measure)``;
* ``PathDecision``: ``path`` (the path's name, free text to the store), ``reason``,
  ``measurements`` (``CandidateMeasurement`` per candidate, any path name), the fp32 speed,
  ``calibration_seconds`` and ``decided_at``; ``from_store`` tells a decision read back.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import platform
import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

from .atomic_files import write_atomically

log = logging.getLogger(__name__)

DECISIONS_FOLDER = "execution-paths"
DECISIONS_DIR_ENV = "PROBE_STUDIO_PATHS_DIR"  # moves the store alone (tests, read-only caches)
DECISION_FORMAT = 1  # bump when candidates or their arithmetic change: every key decides again


@dataclass(frozen=True)
class CandidateMeasurement:
    """One candidate path on the calibration batch, compared with plain fp32."""

    path: str
    min_cosine: float  # over the calibration images, of unit-norm embeddings
    max_abs_diff: float  # largest |difference| of one unit-norm embedding coordinate
    faithful: bool
    speedup: float | None = None  # fp32 seconds / this path's seconds; None: not timed
    note: str = ""  # why it was rejected or skipped


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), else what ``platform`` says."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown"


def cpu_flags() -> str:
    """A digest of the CPU's feature flags (Linux: ``/proc/cpuinfo``), plus the machine type;
    two CPUs of one model name with other instruction sets get other digests."""
    flags = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.lower().startswith(("flags", "features")):
                flags = " ".join(sorted(line.split(":", 1)[1].split()))
                break
    return hashlib.sha256(f"{platform.machine()}|{flags}".encode()).hexdigest()[:16]


@dataclass(frozen=True)
class DecisionKey:
    """Everything a path decision holds for; any change makes a new decision."""

    encoder_id: str
    preprocess_id: str
    device: str  # "cpu", "cuda:0", ...
    forward_rows: int  # the forward pass's fixed batch shape
    torch_version: str
    cpu_model: str
    cpu_flags: str
    threads: int  # torch's intra-op threads

    @classmethod
    def current(
        cls, encoder_id: str, preprocess_id: str, device: str, forward_rows: int
    ) -> DecisionKey:
        """The key of these settings in this process (torch, CPU and thread count here)."""
        import torch

        return cls(
            encoder_id,
            preprocess_id,
            str(device),
            int(forward_rows),
            torch.__version__,
            cpu_model(),
            cpu_flags(),
            torch.get_num_threads(),
        )

    @property
    def digest(self) -> str:
        text = json.dumps([DECISION_FORMAT, *asdict(self).values()])
        return hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class PathDecision:
    """The execution path decided for a key, and what deciding measured."""

    key: DecisionKey
    path: str  # ExecutionPath name, e.g. "fp32+folded-bn+channels_last"
    reason: str
    measurements: tuple[CandidateMeasurement, ...] = ()
    fp32_images_per_second: float | None = None
    calibration_seconds: float = 0.0  # what measuring cost when it was decided
    decided_at: str = field(default_factory=lambda: now_utc())  # ISO 8601, UTC
    from_store: bool = False  # read back from the store (nothing was timed in this process)
    location: str = ""  # the file it is kept in ("": memory only)

    def to_json(self) -> dict:
        record = asdict(self)
        for transient in ("from_store", "location"):
            record.pop(transient)
        return {"format": DECISION_FORMAT, **record}

    @classmethod
    def from_json(cls, record: dict) -> PathDecision:
        if record.get("format") != DECISION_FORMAT:
            raise ValueError(f"unknown format {record.get('format')!r}")
        speed = record["fp32_images_per_second"]
        return cls(
            key=DecisionKey(**record["key"]),
            path=str(record["path"]),
            reason=str(record["reason"]),
            measurements=tuple(CandidateMeasurement(**m) for m in record["measurements"]),
            fp32_images_per_second=None if speed is None else float(speed),
            calibration_seconds=float(record["calibration_seconds"]),
            decided_at=str(record["decided_at"]),
        )


def now_utc() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def default_decisions_dir() -> Path:
    """``$PROBE_STUDIO_PATHS_DIR``, else ``execution-paths/`` in the embedding cache folder
    (``$PROBE_STUDIO_CACHE_DIR``, else the user's cache folder)."""
    override = os.environ.get(DECISIONS_DIR_ENV)
    if override:
        return Path(override).expanduser()
    from .cache import default_cache_dir

    return default_cache_dir() / DECISIONS_FOLDER


class PathDecisions:
    """Path decisions by key: one JSON file each in ``directory``, or (``None``) in memory."""

    def __init__(self, directory: str | os.PathLike[str] | None):
        self.directory = Path(directory) if directory is not None else None
        self._memory: dict[str, PathDecision] = {}
        self._lock = threading.Lock()

    @classmethod
    def default(cls) -> PathDecisions:
        """The store beside the default embedding cache."""
        return cls(default_decisions_dir())

    @classmethod
    def beside(cls, cache_dir: str | os.PathLike[str] | None) -> PathDecisions:
        """The store beside an embedding cache folder (``--cache-dir``); ``None``: the default
        one. ``$PROBE_STUDIO_PATHS_DIR``, when set, wins over both."""
        if cache_dir is None or os.environ.get(DECISIONS_DIR_ENV):
            return cls.default()
        return cls(Path(cache_dir) / DECISIONS_FOLDER)

    def file_for(self, key: DecisionKey) -> Path | None:
        return None if self.directory is None else self.directory / f"{key.digest}.json"

    def get(self, key: DecisionKey) -> PathDecision | None:
        """The decision kept for ``key``, or None; a damaged file is deleted (and so decided
        again), with a warning."""
        if self.directory is None:
            return self._memory.get(key.digest)
        path = self.file_for(key)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as error:
            log.warning("cannot read the execution-path decision %s: %s", path, error)
            return None
        try:
            decision = PathDecision.from_json(json.loads(text))
            if decision.key != key:
                raise ValueError("written for another key")
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            log.warning("discarding damaged execution-path decision %s: %s", path, error)
            path.unlink(missing_ok=True)
            return None
        return replace(decision, from_store=True, location=str(path))

    def put(self, decision: PathDecision) -> PathDecision:
        """Keep ``decision`` (atomically: a reader sees the whole file or none); returns it with
        its location."""
        if self.directory is None:
            self._memory[decision.key.digest] = decision
            return decision
        path = self.file_for(decision.key)
        self.directory.mkdir(parents=True, exist_ok=True)
        text = json.dumps(decision.to_json(), indent=1, sort_keys=True)
        write_atomically(path, lambda handle: handle.write(text), text=True)
        return replace(decision, location=str(path))

    def decide(self, key: DecisionKey, measure: Callable[[], PathDecision]) -> PathDecision:
        """The kept decision for ``key``; else ``measure()``'s, kept. While one process
        measures, another one deciding the same key waits for it and reads its decision."""
        found = self.get(key)
        if found is not None:
            return found
        with self._locked(key):
            found = self.get(key)  # decided by another process while this one waited
            if found is not None:
                return found
            decision = measure()
            if decision.key != key:
                raise ValueError("the measured decision is for another key")
            try:
                return self.put(decision)
            except OSError as error:  # a read-only cache folder: decide, but keep nothing
                log.warning("cannot keep the execution-path decision: %s", error)
                return decision

    @contextlib.contextmanager
    def _locked(self, key: DecisionKey) -> Iterator[None]:
        with self._lock:
            if self.directory is None:
                yield
                return
            try:
                self.directory.mkdir(parents=True, exist_ok=True)
                handle = open(self.directory / f".{key.digest}.lock", "a")  # noqa: SIM115
            except OSError:
                yield
                return
            with handle:
                try:
                    import fcntl
                except ImportError:  # Windows: no lock across processes
                    yield
                    return
                fcntl.flock(handle, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(handle, fcntl.LOCK_UN)
