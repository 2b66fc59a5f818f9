"""`run` writes the probe it fitted on every image; `predict` applies it to new images."""

from __future__ import annotations

import json
import shutil
import zipfile

import numpy as np
import pandas as pd
import pytest

from probe_core.cli import main
from probe_core.export import PROBE_OUTPUTS, read_probe
from tests import badfiles
from tests.conftest import pattern_image


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A `run` of three generated classes (eight images each), on the CPU."""
    from tests.conftest import write_image_folder

    root = tmp_path_factory.mktemp("predict")
    folder = write_image_folder(root / "images", {"red": 8, "green": 8, "blue": 8})
    out = root / "run"
    options = ["--projection", "none", "--device", "cpu", "--no-cache"]
    code = main(["run", str(folder), "--out", str(out), *options])
    assert code == 0
    return out


def test_run_writes_the_probe_fitted_on_every_image_with_its_provenance(run_dir):
    for name in PROBE_OUTPUTS:
        assert (run_dir / name).stat().st_size > 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    weights = read_probe(run_dir)
    assert weights.class_names == metrics["classes"] == ["blue", "green", "red"]
    assert weights.encoder_id == metrics["encoder_id"]
    assert weights.encoder_name == "bundled:efficientnet-lite0"
    assert weights.execution_path == metrics["settings"]["precision"]
    assert weights.chosen_c == metrics["chosen_c"]  # cv: C chosen by k-fold on every image
    assert weights.metrics["accuracy"] == metrics["metrics"]["accuracy"]
    assert weights.protocol == metrics["protocol"]
    assert weights.images_per_class == {"blue": 8, "green": 8, "red": 8}
    assert read_probe(run_dir / "probe.json").coef.tolist() == weights.coef.tolist()


def test_predict_classifies_files_folders_and_zips_and_skips_bad_files(run_dir, tmp_path, capsys):
    new = tmp_path / "new"
    (new / "deeper").mkdir(parents=True)
    pattern_image(2, 900).save(new / "reddish.png")  # class 2 of the folder is "blue"
    pattern_image(0, 901).save(new / "deeper" / "red.png")
    badfiles.write_text(new / "notes.png")
    (new / "readme.txt").write_text("not an image")
    lone = tmp_path / "lone.png"
    pattern_image(1, 902).save(lone)
    archive = tmp_path / "batch.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("a/green.png", badfiles.encode(pattern_image(1, 903), "PNG"))
        zf.writestr("a/broken.png", badfiles.corrupt_jpeg_bytes())
    out = tmp_path / "out" / "predictions.csv"

    code = main(["predict", str(run_dir), str(new), str(lone), str(archive), "--out", str(out)])
    assert code == 0
    table = pd.read_csv(out)
    assert list(table.columns) == [
        "path",
        "predicted",
        "confidence",
        "p(blue)",
        "p(green)",
        "p(red)",
    ]
    predicted = dict(zip(table["path"], table["predicted"], strict=True))
    assert predicted == {
        f"{new}/deeper/red.png": "red",
        f"{new}/reddish.png": "blue",
        str(lone): "green",
        f"{archive}/a/green.png": "green",
    }
    probabilities = table[["p(blue)", "p(green)", "p(red)"]].to_numpy()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(table["confidence"], probabilities.max(axis=1))

    skipped = pd.read_csv(out.with_name("predictions.skipped.csv"))
    reasons = dict(zip(skipped["path"], skipped["reason"], strict=True))
    assert set(reasons) == {f"{new}/notes.png", f"{new}/readme.txt", f"{archive}/a/broken.png"}
    assert "not an image" in reasons[f"{new}/notes.png"]
    assert "unsupported file type" in reasons[f"{new}/readme.txt"]
    assert "corrupt image" in reasons[f"{archive}/a/broken.png"]
    captured = capsys.readouterr()
    assert "4 images classified" in captured.out
    assert f"{new}/notes.png: not an image" in captured.err


def test_predict_embeds_like_the_run_did(run_dir, tmp_path):
    """The training images through `predict` get the probe applied to the run's own vectors."""
    embeddings = pd.read_parquet(run_dir / "embeddings.parquet")
    folder = json.loads((run_dir / "metrics.json").read_text())["settings"]["source"]
    out = tmp_path / "again.csv"
    assert main(["predict", str(run_dir), folder, "--out", str(out)]) == 0
    table = pd.read_csv(out)
    table["path"] = [path.removeprefix(f"{folder}/") for path in table["path"]]
    table = table.set_index("path").loc[embeddings["path"]]
    weights = read_probe(run_dir)
    expected = weights.predict_proba(np.stack(embeddings["vector"]))
    columns = [f"p({name})" for name in weights.class_names]
    np.testing.assert_allclose(table[columns].to_numpy(), expected, atol=1e-6)


def test_predict_refuses_a_probe_of_another_encoder_and_names_both(run_dir, tmp_path, capsys):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    document = json.loads((run_dir / "probe.json").read_text())
    real_id = document["encoder_id"]
    document["encoder_id"] = "bundled:efficientnet-lite0@0123456789abcdef"
    (foreign / "probe.json").write_text(json.dumps(document))
    image = tmp_path / "x.png"
    pattern_image(0, 1).save(image)

    assert main(["predict", str(foreign), str(image), "--out", str(tmp_path / "p.csv")]) == 2
    error = capsys.readouterr().err
    assert "bundled:efficientnet-lite0@0123456789abcdef" in error and real_id in error
    assert not (tmp_path / "p.csv").exists()

    document["encoder_id"], document["encoder_name"] = real_id, ""  # precomputed embeddings
    (foreign / "probe.json").write_text(json.dumps(document))
    assert main(["predict", str(foreign / "probe.json"), str(image)]) == 2
    assert "precomputed embeddings" in capsys.readouterr().err


def test_predict_without_images_or_probe_is_a_clear_error(run_dir, tmp_path, capsys):
    shutil.copy(run_dir / "probe.safetensors", tmp_path / "probe.safetensors")
    assert main(["predict", str(tmp_path / "probe.safetensors"), str(tmp_path / "none")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["predict", str(tmp_path / "nothing-here"), str(tmp_path)]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_predict_counts_read_in_the_singular(run_dir, tmp_path, capsys):
    """One image classified and one file skipped read as "1 image" and "1 file"."""
    image = tmp_path / "one.png"
    pattern_image(0, 7).save(image)
    text = tmp_path / "notes.txt"
    text.write_text("not an image")

    assert (
        main(["predict", str(run_dir), str(image), str(text), "--out", str(tmp_path / "p.csv")])
        == 0
    )
    out = capsys.readouterr().out
    assert "1 image classified" in out
    assert "1 file skipped" in out
