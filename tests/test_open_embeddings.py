"""Precomputed embeddings: ``read_embeddings`` and ``probe-studio run --embeddings PATH``.

The embeddings of ``probe-studio embed`` give the image run's numbers exactly (same protocol,
same seed); a folder of shards reads like one file; vectors that are not unit-norm are
normalised with a message; and every malformed file is refused with an error that names the
file and the reason.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from probe_core.cli import main
from probe_core.embeddings_io import EmbeddingsFileError, read_embeddings
from tests.conftest import write_image_folder

ENCODER = "baseline:pixels"  # weight-free and fast: the numbers, not the encoder, are checked
OUTPUT_FILES = ("predictions.csv", "duplicates.csv", "label_issues.csv")


def cli(argv: list[str]) -> SimpleNamespace:
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(argv)
    return SimpleNamespace(code=code, stdout=stdout.getvalue(), stderr=stderr.getvalue())


def write_table(path: Path, columns: dict[str, list], vector_type=None) -> Path:
    """A Parquet file with exactly these columns (``vector`` as a list column)."""
    arrays = {
        name: pa.array(values, type=vector_type if name == "vector" else None)
        for name, values in columns.items()
    }
    pq.write_table(pa.table(arrays), path)
    return path


def unit_rows(count: int, dim: int = 4, seed: int = 0) -> list[list[float]]:
    rows = np.random.default_rng(seed).normal(size=(count, dim))
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).tolist()


def good_columns(count: int = 4) -> dict[str, list]:
    return {
        "path": [f"{'ab'[i % 2]}/{i}.png" for i in range(count)],
        "label": ["ab"[i % 2] for i in range(count)],
        "vector": unit_rows(count),
    }


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """``embed`` a small folder, then ``run`` on the folder and ``run --embeddings`` on the
    output, each with the same protocol and seed."""
    work = tmp_path_factory.mktemp("runs")
    folder = write_image_folder(work / "images", {"red": 8, "green": 8, "blue": 8})
    cache = ["--cache-dir", str(work / "cache")]
    embedded = cli(["embed", str(folder), "--encoder", ENCODER, "--out", str(work / "emb"), *cache])
    assert embedded.code == 0, embedded.stderr
    # Pixels of the generated images are near-duplicates: only identical files count here.
    common = ["--projection", "none", "--seed", "3", "--folds", "4", "--duplicate-threshold", "1"]
    images = cli(
        ["run", str(folder), "--encoder", ENCODER, "--out", str(work / "img"), *cache, *common]
    )
    assert images.code == 0, images.stderr
    parquet = work / "emb" / "embeddings.parquet"
    vectors = cli(
        ["run", "--embeddings", str(parquet), "--out", str(work / "vec"), "--no-cache", *common]
    )
    assert vectors.code == 0, vectors.stderr
    return SimpleNamespace(
        work=work,
        parquet=parquet,
        printed=vectors.stdout,
        images=json.loads((work / "img" / "metrics.json").read_text()),
        vectors=json.loads((work / "vec" / "metrics.json").read_text()),
    )


# --- run --embeddings reproduces the image run ------------------------------------------------


def test_run_on_embeddings_reproduces_the_image_run_metrics(runs):
    for key in ("metrics", "chosen_c", "sweep", "classes", "n_images", "n_evaluated"):
        assert runs.vectors[key] == runs.images[key], key
    assert runs.vectors["protocol"] == runs.images["protocol"]
    assert runs.vectors["encoder_id"] == runs.images["encoder_id"] == "baseline:pixels-16@v1"
    for name in OUTPUT_FILES:
        pd.testing.assert_frame_equal(
            pd.read_csv(runs.work / "vec" / name), pd.read_csv(runs.work / "img" / name)
        )


def test_run_on_embeddings_records_its_source(runs):
    assert runs.vectors["settings"]["source"] == str(runs.parquet)
    assert "24 embeddings (768-d) in 3 classes" in runs.printed


def test_embed_output_has_the_run_schema_and_the_same_rows(runs):
    embedded = pd.read_parquet(runs.parquet)
    written_by_run = pd.read_parquet(runs.work / "img" / "embeddings.parquet")
    assert list(embedded.columns) == ["path", "label", "vector", "sha256"]
    assert (
        pq.read_schema(runs.parquet)
        .remove_metadata()
        .equals(pq.read_schema(runs.work / "img" / "embeddings.parquet").remove_metadata())
    )
    pd.testing.assert_frame_equal(embedded, written_by_run)
    skipped = pd.read_csv(runs.work / "emb" / "skipped.csv")
    assert list(skipped.columns) == ["path", "reason"] and skipped.empty


def test_a_folder_of_shards_reads_like_the_single_file(runs, tmp_path):
    table = pq.read_table(runs.parquet)
    shards = tmp_path / "shards"
    shards.mkdir()
    for number, start in enumerate(range(0, table.num_rows, 10)):
        pq.write_table(table.slice(start, 10), shards / f"part-{number:03d}.parquet")
    whole, sharded = read_embeddings(runs.parquet), read_embeddings(shards)
    assert sharded.paths == whole.paths
    assert sharded.labels.tolist() == whole.labels.tolist()
    assert sharded.class_names == whole.class_names == ["blue", "green", "red"]
    assert sharded.sha256 == whole.sha256
    assert sharded.encoder_id == whole.encoder_id == "baseline:pixels-16@v1"
    np.testing.assert_array_equal(sharded.vectors, whole.vectors)


# --- other tools' files -----------------------------------------------------------------------


def test_vectors_that_are_not_unit_norm_are_normalised_with_a_message(tmp_path):
    columns = good_columns(6)
    unit = np.array(columns["vector"])
    columns["vector"] = (unit * np.arange(1, 7)[:, None] * 2.5).tolist()
    opened = read_embeddings(write_table(tmp_path / "scaled.parquet", columns))
    np.testing.assert_allclose(opened.vectors, unit, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(opened.vectors, axis=1), 1.0, atol=1e-6)
    assert len(opened.messages) == 1 and "L2-normalised" in opened.messages[0]


def test_unit_vectors_are_kept_as_they_are_and_without_metadata_the_file_names_the_encoder(
    tmp_path,
):
    columns = good_columns(4)
    opened = read_embeddings(write_table(tmp_path / "clip-b32.parquet", columns))
    assert opened.messages == []
    np.testing.assert_array_equal(opened.vectors, np.array(columns["vector"], dtype=np.float32))
    assert opened.encoder_id == "precomputed:clip-b32.parquet"
    assert opened.class_names == ["a", "b"] and opened.labels.tolist() == [0, 1, 0, 1]
    assert opened.sha256 == [""] * 4 and not opened.has_splits


def test_float64_and_fixed_size_vectors_and_a_split_column_are_accepted(tmp_path):
    columns = good_columns(4) | {"split": ["train", "test", "train", "test"]}
    path = write_table(tmp_path / "fixed.parquet", columns, vector_type=pa.list_(pa.float64(), 4))
    opened = read_embeddings(path)
    assert opened.vectors.dtype == np.float32 and opened.dim == 4
    assert opened.splits == ["train", "test", "train", "test"]


# --- malformed files --------------------------------------------------------------------------


def malformed(case: str, path: Path) -> Path:
    """Write the malformed file of ``case`` at ``path``."""
    columns = good_columns(4)
    if case == "not parquet":
        path.write_text("path,label,vector\na/1.png,a,0.5\n")
        return path
    if case == "missing column":
        del columns["vector"]
    elif case == "empty file":
        columns = {"path": [], "label": [], "vector": []}
        return write_table(path, columns, vector_type=pa.list_(pa.float32()))
    elif case == "ragged vectors":
        columns["vector"][2] = columns["vector"][2][:3]
    elif case == "non-finite values":
        columns["vector"][1][0] = float("nan")
    elif case == "zero vector":
        columns["vector"][3] = [0.0] * 4
    elif case == "single class":
        columns["label"] = ["a"] * 4
    elif case == "vector of text":
        columns["vector"] = [["x"]] * 4
    return write_table(path, columns)


MALFORMED = {
    "not parquet": "not a Parquet file",
    "missing column": "missing column(s) vector",
    "empty file": "no rows",
    "ragged vectors": "ragged vectors: row 0 has 4 values, row 2 (a/2.png) has 3",
    "non-finite values": "row 1 (b/1.png) has non-finite values",
    "zero vector": "row 3 (b/3.png) is a zero vector",
    "single class": "only one class ('a')",
    "vector of text": "not numbers",
}


@pytest.mark.parametrize("case", MALFORMED)
def test_a_malformed_file_is_refused_naming_the_file_and_the_reason(case, tmp_path):
    path = malformed(case, tmp_path / f"{case.replace(' ', '_')}.parquet")
    with pytest.raises(EmbeddingsFileError) as raised:
        read_embeddings(path)
    assert isinstance(raised.value, ValueError)
    assert raised.value.path == str(path)
    assert MALFORMED[case] in raised.value.reason
    assert str(raised.value).startswith(f"{path}: ")


def test_a_bad_shard_is_named_in_the_error(tmp_path):
    write_table(tmp_path / "part-0.parquet", good_columns(4))
    bad = malformed("zero vector", tmp_path / "part-1.parquet")
    with pytest.raises(EmbeddingsFileError, match="zero vector") as raised:
        read_embeddings(tmp_path)
    assert raised.value.path == str(bad)


def test_shards_of_different_lengths_are_refused(tmp_path):
    write_table(tmp_path / "part-0.parquet", good_columns(4))
    columns = good_columns(4) | {"vector": unit_rows(4, dim=5)}
    write_table(tmp_path / "part-1.parquet", columns)
    with pytest.raises(EmbeddingsFileError, match=r"different lengths: \[4, 5\]"):
        read_embeddings(tmp_path)


def test_a_missing_path_and_a_folder_without_parquet_are_refused(tmp_path):
    with pytest.raises(EmbeddingsFileError, match="does not exist"):
        read_embeddings(tmp_path / "nowhere.parquet")
    (tmp_path / "notes.txt").write_text("no shards here")
    with pytest.raises(EmbeddingsFileError, match=r"no \.parquet files"):
        read_embeddings(tmp_path)


def test_the_command_line_reports_a_malformed_file_and_fails(tmp_path):
    path = malformed("ragged vectors", tmp_path / "ragged.parquet")
    ran = cli(["run", "--embeddings", str(path), "--out", str(tmp_path / "out"), "--no-cache"])
    assert ran.code == 2
    assert f"error: {path}: ragged vectors" in ran.stderr
    assert not (tmp_path / "out").exists()


def test_run_needs_a_folder_or_embeddings_but_not_both(tmp_path):
    path = write_table(tmp_path / "ok.parquet", good_columns(4))
    assert cli(["run", "--no-cache"]).code == 2
    both = cli(["run", str(tmp_path), "--embeddings", str(path), "--no-cache"])
    assert both.code == 2 and "not both" in both.stderr


# --- compare --embeddings ---------------------------------------------------------------------


def test_compare_on_two_embedding_files_reproduces_the_folder_comparison(runs):
    """Two encoders embedded with ``embed``, compared from their files and from the folder
    itself: the same accuracies, pairs and per-image predictions; zero-shot says why not."""
    work, cache = runs.work, ["--cache-dir", str(runs.work / "cache")]
    other = "baseline:color-histogram"
    embedded = cli(["embed", str(work / "images"), "--encoder", other, "--out", str(work / "emb2"),
                    *cache])  # fmt: skip
    assert embedded.code == 0, embedded.stderr
    common = ["--seed", "3", "--folds", "4", "--duplicate-threshold", "1", "--fewshot"]
    files = f"{runs.parquet},{work / 'emb2' / 'embeddings.parquet'}"
    from_files = cli(["compare", "--embeddings", files, "--out", str(work / "cmp-files"), *common])
    assert from_files.code == 0, from_files.stderr
    from_folder = cli(["compare", str(work / "images"), "--encoders", f"{ENCODER},{other}",
                       "--out", str(work / "cmp-folder"), *cache, *common])  # fmt: skip
    assert from_folder.code == 0, from_folder.stderr

    def table(folder: str, name: str) -> pd.DataFrame:
        frame = pd.read_csv(work / folder / name)
        return frame.drop(columns=["images_per_second"], errors="ignore")

    encoders = list(pd.read_csv(work / "cmp-files" / "comparison.csv").encoder)
    assert encoders[0] == "baseline:pixels-16@v1" and encoders[1].startswith(other)
    for name in ("comparison.csv", "pairs.csv", "fewshot.csv"):
        files_table, folder_table = table("cmp-files", name), table("cmp-folder", name)
        numbers = files_table.select_dtypes("number").columns  # same encoder order in both
        pd.testing.assert_frame_equal(files_table[numbers], folder_table[numbers])
    assert "precomputed embeddings carry no text tower" in from_files.stdout


def test_compare_needs_a_folder_with_encoders_or_embeddings_but_not_both(tmp_path):
    assert cli(["compare", "--out", str(tmp_path)]).code == 2
    both = cli(["compare", "x", "--embeddings", "a,b", "--out", str(tmp_path)])
    assert both.code == 2 and "not both" in both.stderr


# --- the app's download is the CLI's file -----------------------------------------------------


def test_the_app_download_is_the_run_file_and_reopens_with_its_encoder(tmp_path):
    """``export.embeddings_parquet`` (the app's download) holds the bytes ``run`` writes to
    embeddings.parquet, metadata included: the file reopens with its encoder id, every class
    name (one without images too) and the image root."""
    from probe_core.embeddings import Embeddings
    from probe_core.embeddings_io import embeddings_metadata, write_parquet
    from probe_core.export import embeddings_parquet, embeddings_table

    embeddings = Embeddings(
        vectors=np.asarray(unit_rows(4), dtype=np.float32),
        labels=np.array([0, 0, 2, 2]),
        paths=["a/1.png", "a/2.png", "c/1.png", "c/2.png"],
        class_names=["a", "b (no images left)", "c"],
        encoder_id="bundled:efficientnet-lite0@abc",
        sha256=["1" * 64, "2" * 64, "3" * 64, "4" * 64],
        image_root=str(tmp_path / "images"),
    )
    run_file = write_parquet(
        embeddings_table(embeddings),
        tmp_path / "embeddings.parquet",
        embeddings_metadata(embeddings),
    )
    download = embeddings_parquet(embeddings)
    assert download == run_file.read_bytes()

    (tmp_path / "download.parquet").write_bytes(download)
    reopened = read_embeddings(tmp_path / "download.parquet")
    assert reopened.encoder_id == embeddings.encoder_id
    assert reopened.class_names == embeddings.class_names
    assert reopened.image_root == embeddings.image_root
    assert reopened.paths == embeddings.paths and reopened.sha256 == embeddings.sha256
    np.testing.assert_array_equal(reopened.labels, embeddings.labels)
    np.testing.assert_array_equal(reopened.vectors, embeddings.vectors)
