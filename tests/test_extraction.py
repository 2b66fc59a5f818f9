"""The one extraction core: a row's vector depends on its own pixels only, and both engines
share the hashing, the cache, de-duplication and the skip reasons."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from probe_core import extraction
from probe_core.acceleration import RowScaledInt8Linear
from probe_core.cache import EmbeddingCache, content_digest
from probe_core.dataset import ImageDataset, ImageItem, scan_folder
from probe_core.embed import extract_embeddings
from probe_core.encoders import Encoder
from probe_core.extraction import cached_embeddings, forward_batch, reason_for
from probe_core.images import ImageLoadError
from tests.conftest import write_image_folder


class ShapeSensitive(nn.Module):
    """A model whose arithmetic depends on the batch it runs in, as real kernels do in their
    last bits (another blocking for another batch size); it records every batch shape."""

    def __init__(self):
        super().__init__()
        self.shapes: list[tuple[int, ...]] = []

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        self.shapes.append(tuple(batch.shape))
        features = batch.flatten(1)[:, :6] + 1.0
        return features * (1.0 + 1e-4 * len(batch))


def shape_sensitive_encoder(rows: int = 4) -> Encoder:
    return Encoder(
        name="test:shape-sensitive",
        encoder_id="test:shape-sensitive",
        model=ShapeSensitive(),
        preprocess=lambda image: torch.zeros(3, 2, 2),
        dim=6,
        device=torch.device("cpu"),
        dtype=torch.float32,
        forward_rows=rows,
    )


def batch_of(count: int, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).normal(size=(count, 3, 2, 2))).float()


def test_a_row_gets_the_same_bits_in_any_batch_at_any_position():
    encoder = shape_sensitive_encoder(rows=4)
    images = batch_of(11)
    whole = forward_batch(encoder, images)
    assert whole.shape == (11, 6) and whole.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(whole, axis=1), 1.0, atol=1e-6)
    for count in range(1, 12):  # batches of every length, from every start
        for start in range(0, 11 - count + 1):
            part = forward_batch(encoder, images[start : start + count])
            np.testing.assert_array_equal(part, whole[start : start + count])
    neighbours = images.clone()
    neighbours[1:] = batch_of(10, seed=1)  # other images around row 0
    np.testing.assert_array_equal(forward_batch(encoder, neighbours)[0], whole[0])


def test_the_model_only_ever_sees_the_fixed_batch_shape():
    encoder = shape_sensitive_encoder(rows=4)
    forward_batch(encoder, batch_of(1))
    forward_batch(encoder, batch_of(9))
    assert {shape[0] for shape in encoder.model.shapes} == {4}
    assert len(encoder.model.shapes) == 1 + 3
    # Without the fixed shape this model gives other bits: the test above would see it.
    with torch.inference_mode():
        assert not torch.equal(encoder.model(batch_of(1))[0], encoder.model(batch_of(4))[0])


def test_int8_rows_are_quantised_on_their_own_scale():
    torch.manual_seed(0)
    linear = nn.Linear(64, 32).eval()
    int8 = RowScaledInt8Linear(linear).eval()
    rows = torch.randn(10, 7, 64)
    rows[3] *= 50  # an image with large activations must not coarsen the others
    with torch.inference_mode():
        together = int8(rows)
        for i in range(len(rows)):
            alone = int8(rows[i : i + 1])
            assert torch.equal(alone[0], together[i])
        shuffled = int8(rows.flip(0))
        assert torch.equal(shuffled.flip(0), together)
        reference = linear(rows)
    cosine = nn.functional.cosine_similarity(together.flatten(0, 1), reference.flatten(0, 1))
    assert float(cosine.min()) > 0.999
    zeros = torch.zeros(2, 64)
    with torch.inference_mode():
        torch.testing.assert_close(int8(zeros), linear(zeros))  # a zero row: just the bias


def test_every_error_maps_to_one_reason():
    assert reason_for(ImageLoadError("not an image (unknown format)")) == (
        "not an image (unknown format)"
    )
    assert reason_for(FileNotFoundError(2, "No such file or directory")) == (
        "cannot be read: No such file or directory"
    )
    assert reason_for(ValueError("odd")) == "could not be processed: ValueError: odd"


class FakeEngine:
    """An engine that embeds each file as a one-hot of its first byte, in batches of 2, and
    fails files that start with 0xFF; records what it was asked to embed."""

    def __init__(self, fail_after: int | None = None):
        self.asked: list[bytes] = []
        self.fail_after = fail_after

    def __call__(self, items, on_batch):
        vectors, failures = {}, {}
        for start in range(0, len(items), 2):
            if self.fail_after is not None and start >= self.fail_after:
                raise KeyboardInterrupt
            done = []
            for i in range(start, min(start + 2, len(items))):
                data = items[i].read_bytes()
                self.asked.append(data)
                if data[0] == 0xFF:
                    failures[i] = "could not be processed: broken"
                else:
                    vectors[i] = np.eye(8, dtype=np.float32)[data[0] % 8]
                    done.append(i)
            if done:
                on_batch(done, np.stack([vectors[i] for i in done]))
        return vectors, failures


def blob_dataset(contents: list[bytes]) -> ImageDataset:
    items = [ImageItem(f"c/{i}.png", data, label=0) for i, data in enumerate(contents)]
    return ImageDataset(root="", class_names=["c"], items=items, skipped=[])


def core(dataset, engine, cache=None):
    return cached_embeddings(
        dataset, encoder_id="test", cache_key="key", dim=8, embed=engine, cache=cache
    )


def test_the_core_embeds_each_new_file_once_and_keeps_dataset_order(tmp_path, monkeypatch):
    monkeypatch.setattr(extraction, "CACHE_FLUSH_EVERY", 3)
    cache = EmbeddingCache(tmp_path)
    contents = [b"\x01a", b"\x02b", b"\x01a", b"\xffbad", b"\x03c", b"\x04d", b"\x05e"]
    engine = FakeEngine()
    first = core(blob_dataset(contents), engine, cache)
    assert engine.asked == [b"\x01a", b"\x02b", b"\xffbad", b"\x03c", b"\x04d", b"\x05e"]
    assert first.paths == ["c/0.png", "c/1.png", "c/2.png", "c/4.png", "c/5.png", "c/6.png"]
    assert [(s.path, s.reason) for s in first.skipped] == [
        ("c/3.png", "could not be processed: broken")
    ]
    assert (first.n_computed, first.n_from_cache) == (5, 0)
    assert first.sha256[0] == first.sha256[2] == content_digest(b"\x01a").hex()
    np.testing.assert_array_equal(first.vectors[0], first.vectors[2])

    again_engine = FakeEngine()
    again = core(blob_dataset(contents), again_engine, cache)
    assert again_engine.asked == [b"\xffbad"]  # failures are not cached: tried again
    assert (again.n_computed, again.n_from_cache) == (0, 6)
    np.testing.assert_array_equal(again.vectors, first.vectors)


def test_an_interrupted_run_keeps_what_it_embedded(tmp_path):
    cache = EmbeddingCache(tmp_path)
    contents = [bytes([i]) + b"x" for i in range(1, 7)]
    with pytest.raises(KeyboardInterrupt):
        core(blob_dataset(contents), FakeEngine(fail_after=4), cache)
    resumed_engine = FakeEngine()
    resumed = core(blob_dataset(contents), resumed_engine, cache)
    assert resumed_engine.asked == contents[4:]
    assert (resumed.n_computed, resumed.n_from_cache) == (2, 4)


def test_batch_sizes_workers_and_a_warm_cache_give_the_same_bits(encoder, tmp_path):
    folder = write_image_folder(tmp_path / "images", {"a": 9, "b": 8})
    dataset = scan_folder(folder)
    cold = extract_embeddings(dataset, encoder, batch_size=16, num_workers=0)
    for batch_size, workers in ((1, 0), (5, 0), (7, 1), (64, 0)):
        again = extract_embeddings(dataset, encoder, batch_size=batch_size, num_workers=workers)
        np.testing.assert_array_equal(again.vectors, cold.vectors)
    # A cache that already holds every other image: the rest are batched otherwise.
    cache = EmbeddingCache(tmp_path / "cache")
    cache.store(
        encoder.cache_key,
        [bytes.fromhex(d) for d in cold.sha256[::2]],
        cold.vectors[::2],
    )
    warm = extract_embeddings(dataset, encoder, batch_size=3, num_workers=0, cache=cache)
    assert warm.n_from_cache == 9
    np.testing.assert_array_equal(warm.vectors, cold.vectors)
