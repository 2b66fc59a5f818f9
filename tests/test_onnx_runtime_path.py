"""ONNX Runtime as a CPU execution path (``--precision onnx`` / ``onnx-int8``): the encoder's
own graph, exported once beside the embedding cache, checked against fp32 at every load, with
its own cache key; and the run records it so that ``predict`` takes the same path."""

from __future__ import annotations

import json
import pickle

import numpy as np
import onnx
import pandas as pd
import pytest
import torch

from probe_core.acceleration import (
    MIN_COSINE,
    ExecutionPath,
    PrecisionError,
    calibration_batch,
    select_path,
)
from probe_core.cli import main
from probe_core.encoders import EncoderError, load_encoder
from probe_core.export import read_probe
from probe_core.onnx_runtime_path import (
    GRAPH_FOLDER,
    OrtModel,
    build,
    graph_files,
    measure,
    quantized_operators,
)
from tests.conftest import write_image_folder

CNN = "timm:test_resnet@random"  # small, offline; convolutions and batch norms
VIT = "timm:test_vit@random"  # small, offline; attention and MatMuls


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("PROBE_STUDIO_CACHE_DIR", str(folder))
    return folder


def unit(features: torch.Tensor) -> np.ndarray:
    features = features.double()
    return (features / features.norm(dim=-1, keepdim=True)).numpy()


def test_the_onnx_paths_are_named_paths_with_their_own_cache_key():
    for name in ("onnx", "onnx-int8"):
        assert ExecutionPath.parse(name).name == name
        assert not ExecutionPath.parse(name).is_fp32_arithmetic
    with pytest.raises(PrecisionError, match="ONNX Runtime paths onnx, onnx-int8"):
        ExecutionPath.parse("onnx+channels_last")


@pytest.mark.slow
def test_onnx_embeds_like_fp32_exports_once_and_keeps_its_own_cache_key(cache_dir):
    fp32 = load_encoder(CNN, device="cpu", precision="fp32")
    encoder = load_encoder(CNN, device="cpu", precision="onnx")
    assert encoder.precision == "onnx" and isinstance(encoder.model, OrtModel)
    assert encoder.cache_key == f"{fp32.encoder_id}|pre={encoder.preprocess_id}|rows=16|onnx"
    assert "graph exported in" in encoder.path_choice.reason
    [graph] = (cache_dir / GRAPH_FOLDER).glob("*.onnx")

    batch = calibration_batch(fp32.preprocess)
    with torch.inference_mode():
        expected, actual = unit(fp32.encode(batch)), unit(encoder.encode(batch))
    assert (expected * actual).sum(axis=1).min() >= 0.999
    assert actual.dtype == expected.dtype and actual.shape == expected.shape

    again = load_encoder(CNN, device="cpu", precision="onnx")  # another process, say
    assert "graph from the cache" in again.path_choice.reason
    assert sorted((cache_dir / GRAPH_FOLDER).glob("*.onnx")) == [graph]
    # Ray actors receive the encoder pickled: the graph's path travels, not the session.
    copied = pickle.loads(pickle.dumps(again.model))
    with torch.inference_mode():
        np.testing.assert_array_equal(copied(batch[:3]).numpy(), again.model(batch[:3]).numpy())


@pytest.mark.slow
def test_a_damaged_graph_is_exported_again_and_an_altered_one_refused(cache_dir):
    encoder = load_encoder(CNN, device="cpu", precision="onnx")
    graph = encoder.model.graph
    graph.write_bytes(b"not a graph")
    rebuilt = load_encoder(CNN, device="cpu", precision="onnx")
    assert "graph exported in" in rebuilt.path_choice.reason
    assert onnx.load(graph) is not None

    model = onnx.load(graph)  # every weight of the first convolution scaled: another model
    first = next(node for node in model.graph.node if node.op_type == "Conv")
    initializer = next(i for i in model.graph.initializer if i.name == first.input[1])
    weights = onnx.numpy_helper.to_array(initializer)
    rng = np.random.default_rng(0)
    changed = rng.normal(size=weights.shape).astype(weights.dtype)
    initializer.CopyFrom(onnx.numpy_helper.from_array(changed, initializer.name))
    onnx.save(model, graph)
    with pytest.raises(EncoderError, match=r"onnx is not faithful to fp32: min cosine 0\.\d+"):
        load_encoder(CNN, device="cpu", precision="onnx")


@pytest.mark.slow
def test_int8_quantises_a_vits_matmuls_and_is_judged_by_min_cosine(cache_dir):
    encoder = load_encoder(VIT, device="cpu", precision="fp32")
    batch = calibration_batch(encoder.preprocess)
    onnx_fp32, int8 = measure(
        encoder.model, encoder.encoder_id, encoder.preprocess, batch, MIN_COSINE
    )
    assert (onnx_fp32.path, int8.path) == ("onnx", "onnx-int8")
    assert onnx_fp32.faithful and onnx_fp32.min_cosine >= 0.999
    assert onnx_fp32.images_per_second > 0 and int8.images_per_second > 0
    int8_graph, seconds = graph_files(
        encoder.model, encoder.encoder_id, encoder.preprocess, tuple(batch.shape[1:]), int8=True
    )
    assert seconds == 0  # measured above: on disk
    assert quantized_operators(int8_graph) > 0
    assert int8.faithful == (int8.min_cosine >= 0.999)
    assert int8.note == ("" if int8.faithful else f"min cosine {int8.min_cosine:.5f} < 0.999")


@pytest.mark.slow
def test_int8_of_a_graph_without_matmuls_says_it_changes_nothing(cache_dir):
    encoder = load_encoder("bundled:efficientnet-lite0", device="cpu", precision="fp32")
    batch = calibration_batch(encoder.preprocess, count=2)
    model, name, preprocess = encoder.model, encoder.encoder_id, encoder.preprocess
    [int8] = measure(model, name, preprocess, batch, MIN_COSINE, paths=("onnx-int8",))
    assert int8.note == "no MatMul or Gemm weights to quantise: the arithmetic of onnx"


def test_onnx_paths_run_on_the_cpu_only():
    model = torch.nn.Linear(4, 2)
    for name in ("onnx", "onnx-int8"):
        with pytest.raises(PrecisionError, match=f"{name} runs on the CPU only"):
            select_path(model, lambda image: image, torch.device("cuda"), name)


@pytest.mark.slow
def test_run_on_the_onnx_path_records_it_and_predict_takes_it(cache_dir, tmp_path, capsys):
    folder = write_image_folder(tmp_path / "images", {"red": 6, "blue": 6})
    run = tmp_path / "run"
    options = ["--projection", "none", "--device", "cpu"]  # the bundled encoder
    assert main(["run", str(folder), "--out", str(run), "--precision", "onnx", *options]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["settings"]["precision"] == "onnx"
    assert json.loads((run / "probe.json").read_text())["execution_path"] == "onnx"
    predictions = tmp_path / "predictions.csv"
    assert main(["predict", str(run), str(folder), "--out", str(predictions)]) == 0
    assert "precision onnx" in capsys.readouterr().out
    # The run's images through predict: the probe on the run's own onnx vectors.
    embeddings = pd.read_parquet(run / "embeddings.parquet")
    table = pd.read_csv(predictions)
    table = table.set_index(table["path"].str.removeprefix(f"{folder}/")).loc[embeddings["path"]]
    weights = read_probe(run)
    expected = weights.predict_proba(np.stack(embeddings["vector"]))
    columns = [f"p({name})" for name in weights.class_names]
    np.testing.assert_allclose(table[columns].to_numpy(), expected, atol=1e-5)


class _TinyTower(torch.nn.Module):
    """A convolution and a mean: a model small enough to export in a second."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 4, 3)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.conv(images).mean(dim=(2, 3))


class _TinyClip(_TinyTower):
    def encode_text(self, texts: list[str]) -> torch.Tensor:
        return torch.arange(len(texts) * 4, dtype=torch.float32).reshape(len(texts), 4)


def test_a_text_tower_stays_reachable_and_a_model_without_one_has_none(tmp_path):
    """Zero-shot on the onnx path: text goes through the torch model's own text tower."""
    batch = torch.rand(3, 3, 8, 8)
    with_text, _ = build(_TinyClip(), "test:clip", "pre", (3, 8, 8), "onnx", tmp_path)
    torch.testing.assert_close(with_text.encode_text(["a", "b"]), _TinyClip().encode_text("ab"))
    without, _ = build(_TinyTower(), "test:tower", "pre", (3, 8, 8), "onnx", tmp_path)
    assert not callable(getattr(without, "encode_text", None))
    with torch.inference_mode():
        torch.testing.assert_close(without(batch), _TinyTower()(batch), rtol=1e-5, atol=1e-6)
