"""The embedding cache survives a writer killed mid-write and two writers at once."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from probe_core.cache import EmbeddingCache
from probe_core.dataset import scan_folder
from probe_core.embed import extract_embeddings
from tests.conftest import REPO, write_image_folder

DIM = 1280
ROWS = 2000  # ~10 MB per shard, so that a kill lands inside a write


def digest(i: int) -> bytes:
    return hashlib.sha256(str(i).encode()).digest()


def expected_vector(d: bytes) -> np.ndarray:
    return np.random.default_rng(int.from_bytes(d[:8], "little")).random(DIM, dtype=np.float32)


WRITER = textwrap.dedent(
    f"""
    import hashlib, sys
    import numpy as np
    from probe_core.cache import EmbeddingCache
    from tests.test_cache_integrity import digest, expected_vector
    cache = EmbeddingCache(sys.argv[1])
    print("ready", flush=True)
    for shard in range(10_000):
        digests = [digest(shard * {ROWS} + row) for row in range({ROWS})]
        cache.store("key", digests, np.stack([expected_vector(d) for d in digests]))
    """
)


@pytest.mark.slow
def test_a_writer_killed_mid_write_never_leaves_a_trusted_bad_entry(tmp_path):
    for attempt in range(3):
        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(tmp_path)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        assert writer.stdout.readline().strip() == b"ready"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(list(tmp_path.rglob("*.npz"))) < attempt + 2:
            time.sleep(0.02)
        time.sleep(0.013 * (attempt + 1))  # a different moment inside the next write
        writer.send_signal(signal.SIGKILL)
        writer.wait()

    cache = EmbeddingCache(tmp_path)
    wanted = [digest(i) for i in range(ROWS * 12)]
    found = cache.lookup("key", wanted)
    assert len(found) >= ROWS  # completed shards are kept
    assert len(found) % ROWS == 0  # whole shards or nothing
    for d in list(found)[:: ROWS // 10]:
        np.testing.assert_array_equal(found[d], expected_vector(d))
    # Leftover temporary files are never read as cache shards.
    assert all(p.suffix == ".npz" for p in tmp_path.rglob("[!.]*") if p.is_file())
    cache.store("key", [digest(-1)], expected_vector(digest(-1))[None])
    assert digest(-1) in cache.lookup("key", [digest(-1)])


EMBEDDER = textwrap.dedent(
    """
    import sys
    from probe_core.cache import EmbeddingCache
    from probe_core.dataset import scan_folder
    from probe_core.embed import extract_embeddings
    from probe_core.encoders import load_encoder
    result = extract_embeddings(scan_folder(sys.argv[1]), load_encoder(device="cpu"),
                                cache=EmbeddingCache(sys.argv[2]), num_workers=0, batch_size=4)
    print(result.n_computed, result.n_from_cache)
    """
)


@pytest.mark.slow
def test_two_processes_embedding_the_same_folder_end_with_one_valid_cache(tmp_path, encoder):
    folder = write_image_folder(tmp_path / "images", {"a": 6, "b": 6})
    cache_dir = tmp_path / "cache"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", EMBEDDER, str(folder), str(cache_dir)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            env=env,
        )
        for _ in range(2)
    ]
    outputs = [run.communicate(timeout=300)[0].decode().split() for run in runs]
    assert all(run.returncode == 0 for run in runs)
    assert all(int(computed) + int(cached) == 12 for computed, cached in outputs)

    fresh = extract_embeddings(scan_folder(folder), encoder, num_workers=0, batch_size=4)
    cached = extract_embeddings(
        scan_folder(folder), encoder, cache=EmbeddingCache(cache_dir), num_workers=0
    )
    assert (cached.n_computed, cached.n_from_cache) == (0, 12)
    np.testing.assert_allclose(cached.vectors, fresh.vectors, atol=1e-5)
