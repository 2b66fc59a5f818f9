"""``probe-studio embed --engine ray``: a local Ray cluster gives what the local pipeline gives.

One two-CPU Ray cluster serves the module. On the demo folder (read through a ``file://`` URI)
and on the bad-input corpus (through the command line, next to ``--engine local``), the Ray
engine must report the same paths, labels, digests and skipped reasons, with bit-identical
embeddings (one extraction core, one forward batch shape, one path decision); a second run
embeds nothing (its vectors come from the cache or from the previous output); and without Ray
the message names the extra to install.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from probe_core import distributed
from probe_core.acceleration import readable_time
from probe_core.cache import EmbeddingCache, content_digest
from probe_core.cli import main
from probe_core.dataset import scan_folder
from probe_core.distributed import (
    RAY_INSTALL_HINT,
    RayEngineError,
    RayUnavailableError,
    plan_actors,
    ray_extract_embeddings,
    require_ray,
    scan_uri,
)
from probe_core.embed import extract_embeddings
from probe_core.embeddings_io import read_embeddings
from probe_core.encoders import load_encoder
from tests.conftest import DEMO_DIR, write_image_folder
from tests.corpus.build_corpus import Manifest, build_corpus

pytestmark = [
    pytest.mark.slow,  # a Ray cluster starts, and the demo and the corpus are embedded twice
    pytest.mark.filterwarnings("ignore:Corrupt EXIF data:UserWarning"),
]


def cli(argv: list[str]) -> SimpleNamespace:
    """Run ``probe-studio`` in this process: exit code, stdout and stderr."""
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(argv)
    return SimpleNamespace(code=code, stdout=stdout.getvalue(), stderr=stderr.getvalue())


def read_output(out: Path) -> SimpleNamespace:
    """What ``embed`` wrote: embeddings.parquet by path, and skipped.csv as path -> reason."""
    table = pd.read_parquet(out / "embeddings.parquet")
    skipped = pd.read_csv(out / "skipped.csv", dtype=str, keep_default_na=False)
    return SimpleNamespace(
        table=table,
        labels=dict(zip(table["path"], table["label"], strict=True)),
        sha256=dict(zip(table["path"], table["sha256"], strict=True)),
        vectors={p: np.asarray(v) for p, v in zip(table["path"], table["vector"], strict=True)},
        reasons=dict(zip(skipped["path"], skipped["reason"], strict=True)),
    )


class EmbeddingSpy:
    """Wraps ``_embed_on_actors``: counts the items sent to the actors and the vectors made."""

    def __init__(self, function):
        self.function = function
        self.items = 0
        self.vectors = 0

    def __call__(self, ray, items, *args, **kwargs):
        self.items += len(items)
        vectors, failures = self.function(ray, items, *args, **kwargs)
        self.vectors += len(vectors)
        return vectors, failures


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_cluster():
    ray = require_ray()
    ray.init(num_cpus=2, include_dashboard=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Manifest:
    return build_corpus(tmp_path_factory.mktemp("corpus") / "input")


@pytest.fixture(scope="module")
def corpus_runs(corpus, ray_cluster, tmp_path_factory):
    """``embed`` on the corpus with each engine, each with its own empty cache."""
    work = tmp_path_factory.mktemp("corpus-runs")
    runs = {}
    for engine in ("local", "ray"):
        ran = cli(
            [
                "embed",
                str(corpus.root),
                "--engine",
                engine,
                "--out",
                str(work / engine),
                "--cache-dir",
                str(work / f"cache-{engine}"),
            ]
        )
        assert ran.code == 0, ran.stderr
        runs[engine] = read_output(work / engine)
    return SimpleNamespace(work=work, root=corpus.root, **runs)


@pytest.fixture(scope="module")
def demo_runs(ray_cluster, encoder, tmp_path_factory):
    """The demo folder through the local pipeline, and through Ray from a file:// URI."""
    cache = EmbeddingCache(tmp_path_factory.mktemp("demo-cache"))
    local = extract_embeddings(scan_folder(DEMO_DIR), encoder, num_workers=1)
    on_ray = ray_extract_embeddings(scan_uri(DEMO_DIR.as_uri()), encoder.name, cache=cache)
    return SimpleNamespace(local=local, ray=on_ray, cache=cache)


# --- the demo folder --------------------------------------------------------------------------


def test_demo_on_ray_has_the_local_paths_labels_and_digests(demo_runs):
    local, on_ray = demo_runs.local, demo_runs.ray
    assert len(on_ray) == len(local) == 144
    assert on_ray.paths == local.paths
    assert on_ray.class_names == local.class_names
    assert on_ray.labels.tolist() == local.labels.tolist()
    assert on_ray.sha256 == local.sha256
    assert on_ray.skipped == local.skipped == []
    assert on_ray.encoder_id == local.encoder_id


def test_demo_embeddings_on_ray_are_the_local_ones_bit_for_bit(demo_runs):
    np.testing.assert_array_equal(demo_runs.ray.vectors, demo_runs.local.vectors)
    assert np.allclose(np.linalg.norm(demo_runs.ray.vectors, axis=1), 1.0, atol=1e-5)
    assert demo_runs.ray.n_computed == 144 and demo_runs.ray.n_from_cache == 0


def test_second_run_on_ray_embeds_nothing(demo_runs, encoder, monkeypatch):
    embedded = EmbeddingSpy(distributed._embed_on_actors)
    monkeypatch.setattr(distributed, "_embed_on_actors", embedded)
    again = ray_extract_embeddings(
        scan_uri(DEMO_DIR.as_uri()), encoder.name, cache=EmbeddingCache(demo_runs.cache.directory)
    )
    assert embedded.items == 0
    assert again.n_computed == 0 and again.n_from_cache == 144
    assert again.paths == demo_runs.ray.paths
    np.testing.assert_array_equal(again.vectors, demo_runs.ray.vectors)


def test_a_uri_scan_follows_the_folder_layout_rules(tmp_path):
    root = write_image_folder(tmp_path / "data", {"cats": 2, "dogs": 2})
    for split in ("train", "test"):
        write_image_folder(tmp_path / "split" / split, {"cats": 1, "dogs": 1})
    (tmp_path / "data" / ".thumbs").mkdir()
    (tmp_path / "data" / ".thumbs" / "x.png").write_bytes(b"")
    (tmp_path / "data" / "cats" / "notes.txt").write_text("not an image")
    (tmp_path / "data" / "loose.png").write_bytes(b"")
    (tmp_path / "data" / "empty").mkdir()
    for folder in (root, tmp_path / "split"):
        on_disk, by_uri = scan_folder(folder), scan_uri(folder.as_uri())
        assert [(i.path, i.label, i.split) for i in by_uri.items] == [
            (i.path, i.label, i.split) for i in on_disk.items
        ]
        assert by_uri.class_names == on_disk.class_names
        assert by_uri.skipped == on_disk.skipped
        assert [i.read_bytes() for i in by_uri.items] == [i.read_bytes() for i in on_disk.items]
    assert {s.path for s in scan_uri(root.as_uri()).skipped} == {
        ".thumbs/",
        "cats/notes.txt",
        "loose.png",
        "empty/",
    }


# --- the bad-input corpus, through the command line -------------------------------------------


def test_corpus_on_ray_embeds_the_same_paths_with_the_same_labels(corpus, corpus_runs):
    assert list(corpus_runs.ray.table["path"]) == list(corpus_runs.local.table["path"])
    assert corpus_runs.ray.labels == corpus_runs.local.labels
    assert corpus_runs.ray.sha256 == corpus_runs.local.sha256
    for path, label in corpus.used().items():
        assert corpus_runs.ray.labels.get(path) == label, path


def test_corpus_on_ray_skips_the_same_files_for_the_same_reasons(corpus, corpus_runs):
    assert corpus_runs.ray.reasons == corpus_runs.local.reasons
    for path, words in corpus.skipped().items():
        assert words in corpus_runs.ray.reasons.get(path, ""), (path, words)


def test_corpus_embeddings_on_ray_are_the_local_ones_bit_for_bit(corpus_runs):
    assert corpus_runs.ray.vectors.keys() == corpus_runs.local.vectors.keys()
    for path, vector in corpus_runs.local.vectors.items():
        np.testing.assert_array_equal(corpus_runs.ray.vectors[path], vector, err_msg=path)


def test_ray_output_opens_as_precomputed_embeddings(corpus_runs):
    opened = read_embeddings(corpus_runs.work / "ray" / "embeddings.parquet")
    assert opened.encoder_id.startswith("bundled:efficientnet-lite0@")
    assert opened.paths == list(corpus_runs.ray.table["path"])
    # A class whose only image cannot be decoded stays a class, as in the image run.
    assert "broken_class" in opened.class_names


def test_ray_embed_reuses_its_previous_output(corpus_runs, monkeypatch):
    """With a new, empty cache, the vectors of the earlier output in --out are reused; only the
    files that could not be decoded are tried again, each distinct file once (failures are not
    cached, as locally)."""
    embedded = EmbeddingSpy(distributed._embed_on_actors)
    monkeypatch.setattr(distributed, "_embed_on_actors", embedded)
    out = corpus_runs.work / "ray"
    before = out.joinpath("embeddings.parquet").read_bytes()
    ran = cli(
        [
            "embed",
            str(corpus_runs.root),
            "--engine",
            "ray",
            "--out",
            str(out),
            "--cache-dir",
            str(corpus_runs.work / "cache-new"),
        ]
    )
    assert ran.code == 0, ran.stderr
    failed_to_decode = set(corpus_runs.ray.reasons) - {
        skipped.path for skipped in scan_folder(corpus_runs.root).skipped
    }
    distinct = {content_digest((corpus_runs.root / path).read_bytes()) for path in failed_to_decode}
    assert embedded.vectors == 0 and embedded.items == len(distinct) > 0
    assert "embedded 0 images" in ran.stdout
    again = read_output(out)
    assert again.labels == corpus_runs.ray.labels and again.reasons == corpus_runs.ray.reasons
    assert out.joinpath("embeddings.parquet").read_bytes() == before


# --- resources and a missing Ray --------------------------------------------------------------


def test_actors_go_one_per_gpu_or_on_cpus_leaving_one_for_decoding():
    on_gpus = plan_actors({"CPU": 16, "GPU": 4})
    assert (on_gpus.actors, on_gpus.device, on_gpus.num_gpus) == (4, "cuda", 1)
    assert plan_actors({"CPU": 16, "GPU": 4}, actors=2).actors == 2
    on_cpus = plan_actors({"CPU": 8})
    assert (on_cpus.actors, on_cpus.device, on_cpus.num_gpus) == (7, "cpu", 0)
    assert plan_actors({"CPU": 8}, actors=3).actors == 3
    with pytest.raises(RayEngineError, match="--actors 1"):
        plan_actors({"CPU": 2}, actors=2)


def test_without_ray_the_message_names_the_extra(monkeypatch, image_folder, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(RayUnavailableError, match=r"probe-studio\[ray\]"):
        require_ray()
    ran = cli(["embed", str(image_folder), "--engine", "ray", "--out", str(tmp_path / "out")])
    assert ran.code == 2
    assert RAY_INSTALL_HINT in ran.stderr
    assert not (tmp_path / "out").exists()


def test_run_on_the_ray_output_reproduces_the_image_run(ray_cluster, tmp_path):
    """``embed --engine ray`` on the demo, then ``run --embeddings`` on its output: the same
    protocol, scored images and accuracy as ``run`` on the folder itself."""
    out = tmp_path / "ray"
    embedded = cli(["embed", str(DEMO_DIR), "--engine", "ray", "--out", str(out), "--no-cache"])
    assert embedded.code == 0, embedded.stderr
    common = ["--projection", "none", "--seed", "0", "--no-cache"]
    from_images = cli(["run", str(DEMO_DIR), "--out", str(tmp_path / "img"), *common])
    assert from_images.code == 0, from_images.stderr
    parquet = out / "embeddings.parquet"
    from_vectors = cli(
        ["run", "--embeddings", str(parquet), "--out", str(tmp_path / "vec"), *common]
    )
    assert from_vectors.code == 0, from_vectors.stderr

    images, vectors = (
        json.loads((tmp_path / name / "metrics.json").read_text()) for name in ("img", "vec")
    )
    assert vectors["protocol"]["name"] == images["protocol"]["name"] == "cv"
    assert vectors["n_evaluated"] == images["n_evaluated"] == 144
    assert vectors["metrics"]["accuracy"] == images["metrics"]["accuracy"]
    predicted = {
        name: pd.read_csv(tmp_path / name / "predictions.csv").set_index("path")["predicted"]
        for name in ("img", "vec")
    }
    assert len(predicted["vec"]) == len(predicted["img"]) == 144
    assert (predicted["vec"] == predicted["img"].reindex(predicted["vec"].index)).all()


@pytest.mark.parametrize(
    ("name", "pixel_dtype"),
    [("bundled:efficientnet-lite0", np.uint8), ("baseline:color-histogram", np.float32)],
)
def test_decoding_tasks_hand_the_actors_pixels_where_the_preprocessing_splits(
    name, pixel_dtype, encoder, tmp_path
):
    """Decoding tasks send uint8 pixels (a quarter of float32's bytes) when the transform
    splits, and the actor scales and normalises them: the local pipeline's embeddings."""
    model = encoder if name.startswith("bundled") else load_encoder(name, device="cpu")
    folder = write_image_folder(tmp_path / "images", {"a": 3, "b": 3})
    dataset = scan_folder(folder)
    identity = distributed.ReplicaIdentity.of(model)
    rows = {
        "position": np.arange(len(dataset)),
        "bytes": np.array([item.read_bytes() for item in dataset.items], dtype=object),
        "error": np.array([""] * len(dataset), dtype=object),
    }
    shape = distributed._input_shape(identity.preprocess)
    decoded = distributed._decode_batch(rows, identity, shape)
    assert decoded["pixels"].dtype == pixel_dtype
    actor = distributed.EmbedActor(
        name, "cpu", identity.precision, identity.cache_key, fast_decoding=identity.fast_decoding
    )
    vectors = actor(decoded)["vector"]
    local = extract_embeddings(dataset, model, batch_size=len(dataset), num_workers=0)
    np.testing.assert_array_equal(vectors, local.vectors)


# --- one folder, every way of embedding it: the same bits, the same numbers --------------------


def numbers(metrics: dict) -> dict:
    """metrics.json without its settings (source, engine, the path's decision time)."""
    return {key: value for key, value in metrics.items() if key != "settings"}


def test_run_embed_local_at_three_batch_sizes_and_ray_give_the_same_bits_and_numbers(
    ray_cluster, encoder, tmp_path
):
    """Issue 19's promise: ``run``, ``embed --engine local`` at batch sizes 1, 7 (with a
    worker) and 64, and ``embed --engine ray`` at two batch sizes give bit-identical vectors;
    ``run --embeddings`` on each output writes the numbers of ``run`` on the folder. Every
    command takes the path decided once (the session's), and says so."""
    common = ["--projection", "none", "--seed", "0", "--no-cache"]
    ran = cli(["run", str(DEMO_DIR), "--out", str(tmp_path / "run"), *common])
    assert ran.code == 0, ran.stderr
    decided = readable_time(encoder.path_choice.decided_at)
    assert (
        f"execution path {encoder.precision}, decided {decided} (stored decision, no calibration)"
    ) in ran.stdout
    reference = pd.read_parquet(tmp_path / "run" / "embeddings.parquet").set_index("path")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    recorded = metrics["settings"]["execution_path"]
    assert recorded["name"] == encoder.precision
    assert recorded["decided_at"] == encoder.path_choice.decided_at
    assert recorded["calibrated_in_this_process"] is False

    ways = {
        "local-1": ["--engine", "local", "--batch-size", "1", "--workers", "0"],
        "local-7": ["--engine", "local", "--batch-size", "7", "--workers", "1"],
        "local-64": ["--engine", "local", "--batch-size", "64", "--workers", "0"],
        "ray-5": ["--engine", "ray", "--batch-size", "5", "--actors", "1"],
        "ray-16": ["--engine", "ray"],
    }
    for name, options in ways.items():
        out = tmp_path / name
        embedded = cli(["embed", str(DEMO_DIR), "--out", str(out), "--no-cache", *options])
        assert embedded.code == 0, (name, embedded.stderr)
        assert "stored decision, no calibration" in embedded.stdout, name
        table = pd.read_parquet(out / "embeddings.parquet").set_index("path")
        assert list(table.index) == list(reference.index), name
        np.testing.assert_array_equal(
            np.stack(table["vector"].to_numpy()),
            np.stack(reference["vector"].to_numpy()),
            err_msg=name,
        )
        again = cli(
            [
                "run",
                "--embeddings",
                str(out / "embeddings.parquet"),
                "--out",
                str(tmp_path / f"{name}-run"),
                *common,
            ]
        )
        assert again.code == 0, (name, again.stderr)
        probed = json.loads((tmp_path / f"{name}-run" / "metrics.json").read_text())
        assert numbers(probed) == numbers(metrics), name
