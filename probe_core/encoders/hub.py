"""Weights from the Hugging Face hub, told honestly: how big and where before a download,
progress while it runs, and a fast, clear failure offline.

``Downloads.fetch(repo, choose)`` is the one way a family gets hub files: ``choose`` picks
the files it needs from the repo's listing (the hub's, or the cached snapshot's when
offline); what is not cached yet is announced (``DownloadProgress`` with ``done_bytes=0``:
the size and the destination), downloaded into the Hugging Face cache with progress reports,
and everything comes back pinned to one commit (``HubFiles.revision``), which the encoder id
names. Offline (``HF_HUB_OFFLINE=1``, or the hub does not answer within seconds) the cached
snapshot is used, or ``EncoderUnavailableError`` names the model and the offline options.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from urllib.parse import urlparse

from tqdm.std import tqdm

from .base import EncoderError, EncoderUnavailableError

REPORT_INTERVAL = 0.2  # seconds between progress reports while downloading


def file_sha256(path: str) -> str:
    """The sha256 of a file's bytes; remembered while the file is unchanged (same size,
    modification time and inode), so that a weights file rewritten in place is hashed again."""
    info = os.stat(path)
    return _sha256(os.path.realpath(path), info.st_size, info.st_mtime_ns, info.st_ino)


@cache
def _sha256(path: str, size: int, mtime_ns: int, inode: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def hub_reachable(timeout: float = 3.0) -> bool:
    """A quick check that the Hugging Face hub answers, so that offline use fails fast."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    if any(os.environ.get(name) for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY")):
        return True  # a proxy decides; let the download itself try
    endpoint = urlparse(constants.ENDPOINT)
    host = endpoint.hostname or "huggingface.co"
    port = endpoint.port or (80 if endpoint.scheme == "http" else 443)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def megabytes(count: int) -> str:
    return f"{count / 1e6:,.1f} MB"


def hub_cache_dir() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def repo_cache_folder(repo: str) -> Path:
    """Where the Hugging Face cache keeps a model repo (``models--org--name``)."""
    from huggingface_hub.file_download import repo_folder_name

    return hub_cache_dir() / repo_folder_name(repo_id=repo, repo_type="model")


@dataclass(frozen=True)
class DownloadProgress:
    """One report about an encoder's download: the first has ``done_bytes == 0`` (what will
    come and where it goes), the last ``finished``. ``total_bytes`` is None when the hub did
    not tell the sizes."""

    encoder: str
    repo: str
    destination: str
    done_bytes: int
    total_bytes: int | None
    bytes_per_second: float = 0.0
    finished: bool = False

    @property
    def fraction(self) -> float | None:
        if not self.total_bytes:
            return None
        return min(1.0, self.done_bytes / self.total_bytes)

    def describe(self) -> str:
        """E.g. ``timm:resnet50.tv2_in1k: 12.0 of 102.5 MB · 4.1 MB/s``."""
        size = megabytes(self.done_bytes)
        if self.total_bytes:
            size = f"{self.done_bytes / 1e6:,.1f} of {megabytes(self.total_bytes)}"
        if self.finished:
            return f"{self.encoder}: downloaded {size} into {self.destination}"
        if self.done_bytes == 0:
            total = megabytes(self.total_bytes) if self.total_bytes else "size unknown"
            return f"{self.encoder}: downloading {total} from {self.repo} into {self.destination}"
        return f"{self.encoder}: {size} · {self.bytes_per_second / 1e6:,.1f} MB/s"


DownloadListener = Callable[[DownloadProgress], None]


@dataclass(frozen=True)
class HubFiles:
    """Files of one hub repo at one commit, on disk in the Hugging Face cache."""

    repo: str
    revision: str  # the commit hash
    paths: dict[str, str]  # file name in the repo -> local path
    downloaded_bytes: int = 0

    @property
    def folder(self) -> Path:
        """The snapshot folder holding the files (as ``save_pretrained`` would lay them out)."""
        return Path(next(iter(self.paths.values()))).parent

    @property
    def identity(self) -> str:
        """The repo and the commit, e.g. ``facebook/dinov2-small@rev:ed25f3a31f01``."""
        return f"{self.repo}@rev:{self.revision[:12]}"


Chooser = Callable[[Sequence[str]], list[str]]


@dataclass(frozen=True)
class HubWeights:
    """Where an encoder's weights come from on the hub: the repo, which of its files
    (``choose`` picks them from a listing), what works offline instead (named when the hub
    cannot be reached), and a check to run before anything is downloaded (e.g. that the
    library that will load the files is installed)."""

    repo: str
    choose: Chooser
    offline: str
    requires: Callable[[], object] | None = None


@dataclass
class Downloads:
    """Hub downloads for one encoder: ``encoder`` names it in every report and message;
    ``listener`` receives ``DownloadProgress`` (None: downloads are silent); ``offline``
    lists what works without the hub, for the message when it cannot be reached."""

    encoder: str
    listener: DownloadListener | None = None
    offline: str = ""
    _reachable: bool | None = field(default=None, repr=False)

    def online(self) -> bool:
        if self._reachable is None:
            self._reachable = hub_reachable()
        return self._reachable

    def fetch_weights(self, weights: HubWeights) -> HubFiles:
        """An encoder's hub weights (``HubWeights``), downloaded if not cached."""
        if weights.requires is not None:
            weights.requires()
        self.offline = weights.offline
        return self.fetch(weights.repo, weights.choose)

    def fetch(self, repo: str, choose: Chooser) -> HubFiles:
        """The files ``choose`` picks from the repo's files, downloaded if not cached."""
        if not self.online():
            return self._from_cache(repo, choose)
        return self._from_hub(repo, choose)

    def download_size(self, weights: HubWeights) -> int | None:
        """The bytes that fetching ``weights`` would download: the hub's sizes of the files
        missing from the cache (0: none missing). None when the hub cannot be reached or
        does not tell the sizes."""
        from huggingface_hub import HfApi, constants
        from huggingface_hub.errors import HfHubHTTPError

        if is_cached(weights.repo, weights.choose):
            return 0
        if not self.online():
            return None
        try:
            info = HfApi(endpoint=constants.ENDPOINT).model_info(weights.repo, files_metadata=True)
            sizes = {sibling.rfilename: sibling.size for sibling in info.siblings or ()}
            names = weights.choose(sorted(sizes))
        except (HfHubHTTPError, OSError, EncoderError):
            return None
        known = [sizes.get(name) for name in _not_cached(weights.repo, names, info.sha)]
        return None if None in known else sum(known)

    def unavailable(self, reason: str) -> EncoderUnavailableError:
        return EncoderUnavailableError(
            f"Could not download the weights of {self.encoder} from the Hugging Face hub"
            f" ({reason}), and they are not in the local cache ({hub_cache_dir()})."
            f" Offline options: {self.offline}"
        )

    # ----------------------------------------------------------------------- offline

    def _from_cache(self, repo: str, choose: Chooser) -> HubFiles:
        from huggingface_hub import constants

        reason = (
            "HF_HUB_OFFLINE is set: working offline"
            if constants.HF_HUB_OFFLINE
            else f"{urlparse(constants.ENDPOINT).hostname} cannot be reached: are you offline?"
        )
        snapshot = cached_snapshot(repo)
        if snapshot is None:
            raise self.unavailable(reason)
        try:
            names = choose(cached_names(repo))
        except EncoderError as error:
            raise self.unavailable(f"{reason}; the cached copy is incomplete: {error}") from error
        return HubFiles(repo, snapshot.name, {name: str(snapshot / name) for name in names})

    # ----------------------------------------------------------------------- online

    def _from_hub(self, repo: str, choose: Chooser) -> HubFiles:
        from huggingface_hub import HfApi, constants, hf_hub_download
        from huggingface_hub.errors import (
            GatedRepoError,
            HfHubHTTPError,
            RepositoryNotFoundError,
        )

        try:
            info = HfApi(endpoint=constants.ENDPOINT).model_info(repo, files_metadata=True)
        except GatedRepoError as error:
            raise EncoderError(self._gated(repo)) from error
        except RepositoryNotFoundError as error:
            raise EncoderError(
                f"{self.encoder}: there is no model {repo!r} on the Hugging Face hub (or it is"
                " private: log in with `hf auth login`)"
            ) from error
        except (HfHubHTTPError, OSError) as error:
            if is_cached(repo, choose):  # the hub misbehaves, but the cache has the files
                return self._from_cache(repo, choose)
            raise self.unavailable(f"the hub did not answer: {error}") from error
        sizes = {sibling.rfilename: sibling.size for sibling in info.siblings or ()}
        names = choose(sorted(sizes))
        revision = info.sha
        missing = _not_cached(repo, names, revision)
        known = [sizes.get(name) for name in missing]
        total = sum(known) if known and None not in known else None
        report = _Reporter(self, repo, total)
        if missing:
            report.start()
        try:
            paths = {}
            for name in names:
                paths[name] = hf_hub_download(
                    repo,
                    name,
                    revision=revision,
                    endpoint=constants.ENDPOINT,
                    tqdm_class=report.bar_class() if name in missing else None,
                )
        except GatedRepoError as error:
            raise EncoderError(self._gated(repo)) from error
        except (HfHubHTTPError, OSError) as error:
            raise self.unavailable(f"the download failed: {error}") from error
        if missing:
            report.finish()
        return HubFiles(repo, revision, paths, downloaded_bytes=report.done)

    def _gated(self, repo: str) -> str:
        return (
            f"{self.encoder}: {repo} is a gated model: accept its terms on"
            f" https://huggingface.co/{repo} and log in with `hf auth login`"
        )


def _not_cached(repo: str, names: Sequence[str], revision: str) -> list[str]:
    """Which of a repo's files at ``revision`` the Hugging Face cache lacks."""
    from huggingface_hub import try_to_load_from_cache

    return [
        name
        for name in names
        if not isinstance(try_to_load_from_cache(repo, name, revision=revision), str)
    ]


def cached_names(repo: str) -> list[str]:
    """The files of a repo's cached snapshot (paths inside the repo), none when not cached."""
    snapshot = cached_snapshot(repo)
    if snapshot is None:
        return []
    return sorted(str(path.relative_to(snapshot)) for path in snapshot.rglob("*") if path.is_file())


def is_cached(repo: str, choose: Chooser) -> bool:
    """Whether the cached snapshot of ``repo`` holds everything ``choose`` needs."""
    names = cached_names(repo)
    if not names:
        return False
    try:
        choose(names)
    except EncoderError:
        return False
    return True


def cached_snapshot(repo: str) -> Path | None:
    """The cached snapshot of a repo: the one ``refs/main`` names, else the newest."""
    folder = repo_cache_folder(repo)
    ref = folder / "refs" / "main"
    if ref.is_file():
        snapshot = folder / "snapshots" / ref.read_text().strip()
        if snapshot.is_dir():
            return snapshot
    snapshots = sorted(
        (path for path in (folder / "snapshots").glob("*") if path.is_dir()),
        key=lambda path: path.stat().st_mtime,
    )
    return snapshots[-1] if snapshots else None


class _Reporter:
    """Adds up the bytes huggingface_hub's progress bars count, and reports them (at most
    every ``REPORT_INTERVAL`` seconds) as ``DownloadProgress``."""

    def __init__(self, downloads: Downloads, repo: str, total: int | None):
        self.downloads = downloads
        self.repo = repo
        self.total = total
        self.done = 0
        self.started = time.perf_counter()
        self.reported = 0.0
        self.lock = threading.Lock()

    def _emit(self, finished: bool = False) -> None:
        listener = self.downloads.listener
        if listener is None:
            return
        seconds = time.perf_counter() - self.started
        listener(
            DownloadProgress(
                encoder=self.downloads.encoder,
                repo=self.repo,
                destination=str(repo_cache_folder(self.repo)),
                done_bytes=self.done,
                total_bytes=self.total,
                bytes_per_second=self.done / seconds if seconds > 0 else 0.0,
                finished=finished,
            )
        )

    def start(self) -> None:
        self.started = time.perf_counter()
        self._emit()

    def finish(self) -> None:
        self._emit(finished=True)

    def add(self, count: int) -> None:
        with self.lock:
            self.done += count
            now = time.perf_counter()
            if now - self.reported < REPORT_INTERVAL:
                return
            self.reported = now
        self._emit()

    def bar_class(self) -> type[tqdm]:
        """A tqdm class for ``hf_hub_download(tqdm_class=...)`` that draws nothing and
        counts bytes written (``update_transfer`` makes Xet downloads use one bar too)."""
        reporter = self

        class CountingBar(tqdm):
            def __init__(self, *args, **kwargs):
                kwargs["disable"] = True
                super().__init__(*args, **kwargs)

            def update(self, n: float | None = 1) -> bool | None:
                if n:
                    reporter.add(int(n))
                return None

            def update_transfer(self, n: float | None = 1) -> None:
                return None

        return CountingBar
