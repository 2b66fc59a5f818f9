"""2-D / 3-D maps of the normalised embeddings: UMAP (cosine) or PCA."""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field

import numpy as np
from sklearn.decomposition import PCA

METHODS = ("umap", "pca")


@dataclass(frozen=True)
class Projection:
    coords: np.ndarray  # (n, n_components)
    method: str
    n_components: int
    params: dict = field(default_factory=dict)
    seconds: float = 0.0


def project(
    vectors: np.ndarray,
    method: str = "umap",
    n_components: int = 2,
    *,
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    metric: str = "cosine",
    seed: int = 0,
) -> Projection:
    """Project rows of ``vectors`` to ``n_components`` dimensions, seeded."""
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
    if method == "pca":
        coords = PCA(n_components=n_components, random_state=seed).fit_transform(vectors)
        params = {}
    else:
        import umap

        neighbours = max(2, min(n_neighbors, n - 1))
        reducer = umap.UMAP(
            n_components=n_components,
            n_neighbors=neighbours,
            min_dist=min_dist,
            metric=metric,
            random_state=seed,
            init="spectral" if n > n_components + 1 else "random",
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # n_jobs overridden by random_state; small-n notes
            coords = reducer.fit_transform(vectors)
        params = {"n_neighbors": neighbours, "min_dist": min_dist, "metric": metric, "seed": seed}
    return Projection(
        np.asarray(coords, dtype=np.float32),
        method,
        n_components,
        params,
        seconds=time.perf_counter() - started,
    )
