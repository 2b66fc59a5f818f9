"""2-D / 3-D maps of the normalised embeddings: UMAP (cosine) or PCA, and how far to trust them.

Why the first UMAP map used to stall (measured, numba 0.68, umap-learn 0.5.12): umap marks one
of its numba functions ``cache=True``, so every process compiled the rest anew (about 10-20 s
even for 100 points), and above 4,095 points pynndescent's approximate neighbour search
compiled for another 15-40 s. Two changes remove that at the source:

- ``load_umap`` points numba's on-disk cache at the user cache folder and turns caching on
  for umap's own jitted functions (those a map runs are plain array code: no functions as
  arguments, no dynamic globals), so only the first process on a machine compiles them;
  later ones load the machine code (about 0.1 s).
- Up to ``EXACT_NEIGHBOURS_LIMIT`` points UMAP gets exact neighbours from scikit-learn
  (``precomputed_knn``), so pynndescent never runs. Its search cannot be cached: it takes
  the distance function as an argument (the cache key holds its address) and uses dynamic
  globals, so it would compile in every process.

Above ``PCA_BEFORE_UMAP_ABOVE`` points UMAP runs on a seeded 50-D PCA of the unit vectors
(euclidean there ranks neighbours as cosine does on the sphere) and starts from a PCA
layout rather than a spectral one (bounded memory). Every map is seeded.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import numpy as np
from sklearn.decomposition import PCA
from sklearn.neighbors import VALID_METRICS, NearestNeighbors

from .evaluation.map_quality import DEFAULT_NEIGHBOURS, MapQuality, map_quality

METHODS = ("umap", "pca")
NUMBA_CACHE_ENV = "NUMBA_CACHE_DIR"
EXACT_NEIGHBOURS_LIMIT = 50_000  # up to here UMAP's neighbours are exact (scikit-learn, brute)
PCA_BEFORE_UMAP_ABOVE = 20_000  # above this many points UMAP runs on a PCA of the vectors
PCA_BEFORE_UMAP_DIMENSIONS = 50
MAP_QUALITY_MAX_POINTS = 3_000  # trustworthiness needs n x n memory: larger maps are sampled
WARM_UP_POINTS = 40

_umap_lock = threading.Lock()
_umap_functions_cached = False


@dataclass(frozen=True)
class MapScore:
    """How far to trust a map: its quality on every point, or on a seeded sample of them."""

    quality: MapQuality
    scored: np.ndarray  # indices of the map's points that were scored (per-point arrays follow)
    n_points: int  # points on the map

    @property
    def sampled(self) -> bool:
        return len(self.scored) < self.n_points

    @property
    def disagreeing(self) -> np.ndarray:
        """Indices of map points whose map neighbourhood's majority label differs from their
        full-dimension neighbourhood's."""
        return self.scored[self.quality.disagrees]

    def reading(self) -> str:
        sample = f" (on a random {len(self.scored):,} of {self.n_points:,} points)"
        return self.quality.reading() + (sample if self.sampled else "")

    def to_json_dict(self) -> dict[str, float | int]:
        """``map_quality.json``: the quality's numbers and how many points they rest on."""
        return self.quality.to_json_dict() | {
            "n_scored": len(self.scored),
            "n_points": self.n_points,
        }


@dataclass(frozen=True)
class Projection:
    coords: np.ndarray  # (n, n_components)
    method: str
    n_components: int
    params: dict = field(default_factory=dict)
    seconds: float = 0.0
    neighbour_search: str = ""  # UMAP: "exact" (scikit-learn) or "approximate" (pynndescent)
    score: MapScore | None = None  # set when ``project`` was given the labels


@dataclass(frozen=True)
class Neighbours:
    """Each point's k nearest points, itself first (distance 0), as UMAP expects them."""

    indices: np.ndarray  # (n, k) int32
    distances: np.ndarray  # (n, k) float32


def numba_cache_dir() -> Path:
    """``$NUMBA_CACHE_DIR`` when set, else the user's cache folder (e.g. ~/.cache/probe-studio)."""
    override = os.environ.get(NUMBA_CACHE_ENV)
    if override:
        return Path(override).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("probe-studio")) / "numba"


def use_numba_cache() -> Path:
    """Send numba's on-disk cache to ``numba_cache_dir()`` (also if numba is already imported:
    a function's cache folder is fixed when its cache is made, not when numba is)."""
    directory = numba_cache_dir()
    os.environ.setdefault(NUMBA_CACHE_ENV, str(directory))
    from numba.core import config

    if not config.CACHE_DIR:
        config.CACHE_DIR = str(directory)
    return Path(config.CACHE_DIR)


def load_umap() -> ModuleType:
    """``umap``, with numba's on-disk cache on for its jitted functions (once per process)."""
    global _umap_functions_cached
    with _umap_lock:
        use_numba_cache()
        import umap

        if not _umap_functions_cached:
            cache_numba_functions("umap")
            _umap_functions_cached = True
    return umap


def cache_numba_functions(package: str) -> int:
    """Turn numba's on-disk cache on for the loaded jitted functions of ``package`` that were
    made without it, before they compile; returns how many. Numba keys each cached function
    on its source file's timestamp, the signature and the CPU, so an upgrade recompiles."""
    from numba.core.caching import NullCache
    from numba.core.dispatcher import Dispatcher

    enabled = 0
    for name, module in list(sys.modules.items()):
        if module is None or name.split(".")[0] != package:
            continue
        for value in list(vars(module).values()):
            if isinstance(value, Dispatcher) and isinstance(value._cache, NullCache):
                try:
                    value.enable_caching()
                except RuntimeError:  # no writable cache folder: compile in memory as before
                    return enabled
                enabled += 1
    return enabled


def exact_neighbours(vectors: np.ndarray, k: int, metric: str = "cosine") -> Neighbours:
    """The exact ``k`` nearest points of each row (the row itself first), by brute force."""
    n = len(vectors)
    if not 2 <= k <= n:
        raise ValueError(f"k must be between 2 and {n}, got {k}")
    search = NearestNeighbors(n_neighbors=k - 1, metric=metric, algorithm="brute").fit(vectors)
    # kneighbors() without a query leaves each point out; it goes first, as in UMAP's own search.
    distances, indices = search.kneighbors()
    return Neighbours(
        indices=np.hstack([np.arange(n)[:, None], indices]).astype(np.int32),
        distances=np.hstack([np.zeros((n, 1)), np.maximum(distances, 0)]).astype(np.float32),
    )


def score_map(
    vectors: np.ndarray,
    coords: np.ndarray,
    labels: np.ndarray,
    *,
    k: int = DEFAULT_NEIGHBOURS,
    max_points: int = MAP_QUALITY_MAX_POINTS,
    seed: int = 0,
) -> MapScore | None:
    """``map_quality`` of a map, on a seeded sample of ``max_points`` when it has more;
    ``None`` below 3 points (no neighbourhood to compare)."""
    n = len(coords)
    if n < 3:
        return None
    scored = np.arange(n)
    if n > max_points:
        scored = np.sort(np.random.default_rng(seed).choice(n, max_points, replace=False))
    quality = map_quality(vectors[scored], coords[scored], np.asarray(labels)[scored], k=k)
    return MapScore(quality=quality, scored=scored, n_points=n)


def project(
    vectors: np.ndarray,
    method: str = "umap",
    n_components: int = 2,
    *,
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    metric: str = "cosine",
    seed: int = 0,
    labels: np.ndarray | None = None,
) -> Projection:
    """Project rows of ``vectors`` to ``n_components`` dimensions, seeded; with ``labels``
    the projection also carries its ``score`` (k = the UMAP neighbours, 15 for PCA)."""
    if method not in METHODS:
        raise ValueError(f"unknown projection {method!r}; choose one of {', '.join(METHODS)}")
    if n_components not in (2, 3):
        raise ValueError("n_components must be 2 or 3")
    vectors = np.asarray(vectors, dtype=np.float32)
    n = len(vectors)
    started = time.perf_counter()
    if n <= n_components:
        coords = np.zeros((n, n_components), dtype=np.float32)
        coords[:, : min(n, n_components)] = np.eye(n, n_components)[:, : min(n, n_components)]
        return Projection(coords, method, n_components, {"note": "too few points"})
    search = ""
    if method == "pca":
        coords = PCA(n_components=n_components, random_state=seed).fit_transform(vectors)
        params = {}
    else:
        coords, params, search = _umap(vectors, n_components, n_neighbors, min_dist, metric, seed)
    coords = np.asarray(coords, dtype=np.float32)
    seconds = time.perf_counter() - started
    score = None
    if labels is not None:
        k = params.get("n_neighbors", DEFAULT_NEIGHBOURS)
        score = score_map(vectors, coords, labels, k=k, seed=seed)
    return Projection(coords, method, n_components, params, seconds, search, score)


def _umap(
    vectors: np.ndarray,
    n_components: int,
    n_neighbors: int,
    min_dist: float,
    metric: str,
    seed: int,
) -> tuple[np.ndarray, dict, str]:
    """UMAP coordinates, the parameters used and how the neighbours were found."""
    umap = load_umap()
    n = len(vectors)
    neighbours = max(2, min(n_neighbors, n - 1))
    params: dict = {"n_neighbors": neighbours, "min_dist": min_dist, "metric": metric, "seed": seed}
    data = vectors
    if n > PCA_BEFORE_UMAP_ABOVE and vectors.shape[1] > PCA_BEFORE_UMAP_DIMENSIONS:
        if metric == "cosine":  # on unit vectors euclidean distance ranks as cosine does
            data = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
            metric = "euclidean"
        data = PCA(PCA_BEFORE_UMAP_DIMENSIONS, random_state=seed).fit_transform(data)
        data = data.astype(np.float32)
        params |= {"metric": metric, "pca_dimensions": PCA_BEFORE_UMAP_DIMENSIONS}
    options: dict = {}
    search = "approximate"
    if n <= EXACT_NEIGHBOURS_LIMIT and metric in VALID_METRICS["brute"]:
        found = exact_neighbours(data, neighbours, metric)
        options["precomputed_knn"] = (found.indices, found.distances, None)
        search = "exact"
    reducer = umap.UMAP(
        n_components=n_components,
        n_neighbors=neighbours,
        min_dist=min_dist,
        metric=metric,
        random_state=seed,
        init=_umap_init(n, n_components),
        **options,
    )
    with warnings.catch_warnings():
        # n_jobs overridden by random_state; small-n notes; no search index for transform()
        warnings.simplefilter("ignore")
        coords = reducer.fit_transform(data)
    return coords, params, search


def _umap_init(n: int, n_components: int) -> str:
    """UMAP's starting layout: spectral (its default) up to ``PCA_BEFORE_UMAP_ABOVE`` points;
    above, PCA of the data, because a spectral layout of a large graph in many components
    (e.g. well-separated classes) took 4 GB and 15 s for 100,000 points, and PCA's is
    bounded; random for a handful of points."""
    if n <= n_components + 1:
        return "random"
    return "pca" if n > PCA_BEFORE_UMAP_ABOVE else "spectral"


def warm_up() -> float:
    """Load (or, the first time on a machine, compile and cache) what a UMAP map runs: a tiny
    seeded fit, for a server to do in the background at start. Returns the seconds it took."""
    started = time.perf_counter()
    points = np.random.default_rng(0).normal(size=(WARM_UP_POINTS, 8)).astype(np.float32)
    project(points, method="umap", n_neighbors=15)
    return time.perf_counter() - started
