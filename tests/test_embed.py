"""Extraction follows the protocol; the on-disk cache hits, partially hits and distrusts damage."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from probe_core import embed, extraction
from probe_core.cache import EmbeddingCache, content_digest
from probe_core.dataset import ImageItem, scan_folder
from probe_core.embed import extract_embeddings
from tests import badfiles
from tests.conftest import pattern_image, write_image_folder


def test_embeddings_are_unit_norm_float32_in_dataset_order(encoder, image_folder):
    dataset = scan_folder(image_folder)
    embedded = extract_embeddings(dataset, encoder, batch_size=5, num_workers=0)
    assert embedded.vectors.dtype == np.float32
    assert embedded.vectors.shape == (len(dataset), 1280)
    np.testing.assert_allclose(np.linalg.norm(embedded.vectors, axis=1), 1.0, atol=1e-5)
    assert embedded.paths == dataset.paths
    assert embedded.labels.tolist() == dataset.labels
    assert embedded.class_names == ["blue", "green", "red"]


def test_each_row_is_the_normalised_feature_of_its_own_image(encoder, image_folder):
    dataset = scan_folder(image_folder)
    embedded = extract_embeddings(dataset, encoder, batch_size=4, num_workers=0)
    from PIL import Image

    for row in (0, 9, len(dataset) - 1):
        image = Image.open(dataset.items[row].source).convert("RGB")
        with torch.inference_mode():
            feature = encoder.encode(encoder.preprocess(image)[None])
        expected = (feature / feature.norm(dim=-1, keepdim=True)).numpy()[0]
        np.testing.assert_allclose(embedded.vectors[row], expected, atol=1e-5)


def test_a_prefetching_thread_or_loader_workers_give_identical_embeddings(encoder, image_folder):
    dataset = scan_folder(image_folder)
    thread = extract_embeddings(dataset, encoder, batch_size=4, num_workers=0)
    one = extract_embeddings(dataset, encoder, batch_size=4, num_workers=1)
    two = extract_embeddings(dataset, encoder, batch_size=4, num_workers=2)
    np.testing.assert_array_equal(one.vectors, two.vectors)
    np.testing.assert_array_equal(thread.vectors, one.vectors)
    assert thread.paths == one.paths == two.paths


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_decoding_in_turn_on_any_number_of_threads_keeps_order_failures_and_values(
    encoder, image_folder, threads, monkeypatch
):
    badfiles.write_corrupt_jpeg(image_folder / "red" / "broken.jpg")
    badfiles.write_truncated_png(image_folder / "blue" / "cut.png")
    dataset = scan_folder(image_folder)
    monkeypatch.setattr(embed, "decoding_threads", lambda device, split: 0)
    overlapped = extract_embeddings(dataset, encoder, batch_size=5, num_workers=0)
    monkeypatch.setattr(embed, "decoding_threads", lambda device, split: threads)
    in_turn = extract_embeddings(dataset, encoder, batch_size=5, num_workers=0)
    assert len(in_turn.skipped) == 2
    assert in_turn.skipped == overlapped.skipped
    assert in_turn.paths == overlapped.paths
    np.testing.assert_array_equal(in_turn.vectors, overlapped.vectors)


def test_a_cpu_encoder_decodes_in_turn_and_a_gpu_encoder_overlaps():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert 1 <= embed.decoding_threads(cpu, split_preprocessing=True) <= 4
    assert embed.decoding_threads(cuda, split_preprocessing=True) == 0
    assert embed.decoding_threads(torch.device("mps"), split_preprocessing=True) == 0
    # A transform that does not split would call into torch from the decoding threads.
    assert embed.decoding_threads(cpu, split_preprocessing=False) == 0


@pytest.mark.parametrize("usable, workers", [(1, 0), (2, 0), (3, 2), (8, 7), (64, 8)])
def test_worker_processes_follow_the_cores_this_process_may_use(monkeypatch, usable, workers):
    monkeypatch.setattr(embed.os, "cpu_count", lambda: 64)
    affinity = set(range(usable))
    monkeypatch.setattr(embed.os, "sched_getaffinity", lambda pid: affinity, raising=False)
    assert embed.default_num_workers() == workers
    assert embed.decoding_threads(torch.device("cpu"), split_preprocessing=True) == min(4, usable)


class _SlowFile:
    """A file whose every read takes a while, and which records the threads reading it."""

    def __init__(self, content: bytes, seconds: float, readers: set[int]):
        self.content, self.seconds, self.readers = content, seconds, readers

    def read_bytes(self) -> bytes:
        self.readers.add(threading.get_ident())
        time.sleep(self.seconds)
        return self.content


class _Clock:
    """A clock that moves only as the files read say: ``seconds_per_read`` per call."""

    def __init__(self, seconds_per_read: float):
        self.now, self.step = 0.0, seconds_per_read

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def test_quick_files_are_hashed_in_the_calling_thread():
    readers: set[int] = set()
    items = [ImageItem(f"{i}.png", _SlowFile(bytes([i]), 0.0, readers), label=0) for i in range(50)]
    # Each read takes a tenth of the quick limit: never slow, whatever the machine's load.
    clock = _Clock(extraction.QUICK_READ_SECONDS / 10)
    assert extraction.file_digests(items, clock=clock) == [
        content_digest(bytes([i])) for i in range(50)
    ]
    assert readers == {threading.get_ident()}


def test_slow_files_are_read_by_several_threads_in_order_with_their_failures(tmp_path):
    readers: set[int] = set()
    items = [
        ImageItem(f"{i}.png", _SlowFile(bytes([i]), 0.005, readers), label=0) for i in range(12)
    ]
    items.insert(5, ImageItem("gone.png", tmp_path / "gone.png", label=0))
    clock = _Clock(extraction.QUICK_READ_SECONDS * 5)  # the first read is already slow
    digests = extraction.file_digests(items, clock=clock)
    assert digests[5].startswith("cannot be read: ")
    del digests[5]
    assert digests == [content_digest(bytes([i])) for i in range(12)]
    assert len(readers) > 1


def test_progress_reports_done_total_and_rate(encoder, image_folder):
    calls = []
    extract_embeddings(
        scan_folder(image_folder),
        encoder,
        batch_size=10,
        num_workers=0,
        progress=lambda done, total, rate: calls.append((done, total, rate)),
    )
    assert [done for done, _, _ in calls] == [10, 20, 24]
    assert all(total == 24 and rate > 0 for _, total, rate in calls)


def test_cache_hits_on_an_unchanged_folder_and_embeds_only_new_images(encoder, tmp_path):
    folder = write_image_folder(tmp_path / "images", {"a": 6, "b": 6})
    cache = EmbeddingCache(tmp_path / "cache")
    first = extract_embeddings(scan_folder(folder), encoder, cache=cache, num_workers=0)
    assert (first.n_computed, first.n_from_cache) == (12, 0)

    again = extract_embeddings(scan_folder(folder), encoder, cache=cache, num_workers=0)
    assert (again.n_computed, again.n_from_cache) == (0, 12)
    np.testing.assert_array_equal(first.vectors, again.vectors)

    for variant in range(100, 105):
        pattern_image(0, variant).save(folder / "a" / f"new_{variant}.png")
    grown = extract_embeddings(scan_folder(folder), encoder, cache=cache, num_workers=0)
    assert (grown.n_computed, grown.n_from_cache) == (5, 12)
    assert len(grown) == 17


def test_cache_is_keyed_by_content_not_by_path(encoder, tmp_path):
    folder = write_image_folder(tmp_path / "images", {"a": 3, "b": 3})
    cache = EmbeddingCache(tmp_path / "cache")
    extract_embeddings(scan_folder(folder), encoder, cache=cache, num_workers=0)
    (folder / "a" / "a_000.png").rename(folder / "a" / "renamed.png")
    pattern_image(1, 99).save(folder / "b" / "b_000.png")  # same name, new content
    rerun = extract_embeddings(scan_folder(folder), encoder, cache=cache, num_workers=0)
    assert (rerun.n_computed, rerun.n_from_cache) == (1, 5)


@pytest.mark.parametrize("damage", ["truncate", "flip_bytes", "garbage", "empty"])
def test_a_damaged_cache_file_is_discarded_and_rebuilt(encoder, tmp_path, damage):
    folder = write_image_folder(tmp_path / "images", {"a": 3, "b": 3})
    cache = EmbeddingCache(tmp_path / "cache")
    clean = extract_embeddings(scan_folder(folder), encoder, cache=cache, num_workers=0)
    (shard,) = (tmp_path / "cache").rglob("*.npz")
    raw = shard.read_bytes()
    if damage == "truncate":
        shard.write_bytes(raw[: len(raw) // 2])
    elif damage == "flip_bytes":  # inside the stored vectors: only the checksum can tell
        middle = len(raw) // 2
        shard.write_bytes(
            raw[:middle] + bytes(b ^ 0xFF for b in raw[middle : middle + 8]) + raw[middle + 8 :]
        )
    elif damage == "garbage":
        shard.write_bytes(b"not a cache file at all")
    else:
        shard.write_bytes(b"")

    rebuilt = extract_embeddings(scan_folder(folder), encoder, cache=cache, num_workers=0)
    assert rebuilt.n_computed == 6 and rebuilt.n_from_cache == 0
    np.testing.assert_allclose(rebuilt.vectors, clean.vectors, atol=1e-6)
    assert not shard.exists()
    after = extract_embeddings(scan_folder(folder), encoder, cache=cache, num_workers=0)
    assert after.n_from_cache == 6


def test_cache_with_a_different_encoder_key_does_not_hit(tmp_path):
    cache = EmbeddingCache(tmp_path)
    digest = bytes(range(32))
    cache.store("encoder-a", [digest], np.ones((1, 4), dtype=np.float32))
    assert cache.lookup("encoder-b", [digest]) == {}
    assert digest in cache.lookup("encoder-a", [digest])


def test_many_small_writes_are_merged_without_losing_entries(tmp_path):
    cache = EmbeddingCache(tmp_path)
    digests = [bytes([i]) * 32 for i in range(40)]
    for i, digest in enumerate(digests):
        cache.store("key", [digest], np.full((1, 3), i, dtype=np.float32))
    assert len(list(tmp_path.rglob("*.npz"))) <= 17
    found = cache.lookup("key", digests)
    assert sorted(int(v[0]) for v in found.values()) == list(range(40))


def test_identical_files_are_embedded_once_but_both_listed(encoder, tmp_path):
    folder = write_image_folder(tmp_path / "images", {"a": 3, "b": 3})
    (folder / "b" / "copy_of_a.png").write_bytes((folder / "a" / "a_000.png").read_bytes())
    embedded = extract_embeddings(scan_folder(folder), encoder, num_workers=0)
    assert embedded.n_computed == 6 and len(embedded) == 7
    rows = [embedded.paths.index("a/a_000.png"), embedded.paths.index("b/copy_of_a.png")]
    np.testing.assert_array_equal(embedded.vectors[rows[0]], embedded.vectors[rows[1]])
