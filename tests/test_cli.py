"""The bundled demo through the command line, end to end."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from probe_core.cli import main
from probe_core.export import RUN_OUTPUTS
from tests.conftest import DEMO_DIR


@pytest.mark.slow
def test_demo_folder_end_to_end(tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["run", str(DEMO_DIR), "--out", str(out), "--cache-dir", str(tmp_path / "cache")])
    assert code == 0
    for name in RUN_OUTPUTS:
        assert (out / name).stat().st_size > 0, name

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_images"] == 144 and len(metrics["classes"]) == 6
    accuracy = metrics["metrics"]["accuracy"]
    assert accuracy["value"] > 3 * metrics["metrics"]["chance_accuracy"]  # chance is 1/6
    assert accuracy["low"] <= accuracy["value"] <= accuracy["high"]
    assert metrics["encoder_id"].startswith("bundled:efficientnet-lite0@")
    assert metrics["chosen_c"] in metrics["sweep"]["c_values"]

    predictions = pd.read_csv(out / "predictions.csv")
    assert len(predictions) == metrics["n_test"]
    assert {"path", "true", "predicted"} <= set(predictions.columns)
    assert {f"p({name})" for name in metrics["classes"]} <= set(predictions.columns)
    embeddings = pd.read_parquet(out / "embeddings.parquet")
    assert len(embeddings) == 144 and len(embeddings["vector"][0]) == 1280
    assert "Plotly" in (out / "umap.html").read_text()[:100_000]

    printed = capsys.readouterr().out
    assert "accuracy" in printed and "95% CI" in printed and "chosen C" in printed

    again = main(
        [
            "run",
            str(DEMO_DIR),
            "--out",
            str(out),
            "--cache-dir",
            str(tmp_path / "cache"),
            "--projection",
            "pca",
        ]
    )
    assert again == 0
    assert "embedded 0 images, 144 from cache" in capsys.readouterr().out


def test_encoders_command_lists_the_bundled_encoder(capsys):
    assert main(["encoders"]) == 0
    printed = capsys.readouterr().out
    assert "bundled:efficientnet-lite0" in printed and "available offline" in printed


def test_errors_are_messages_not_tracebacks(tmp_path, capsys):
    assert main(["run", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["run", str(tmp_path / "empty")]) == 2
    assert "no images found" in capsys.readouterr().err
    single = tmp_path / "single" / "only_class"
    single.mkdir(parents=True)
    from tests.conftest import pattern_image

    for i in range(4):
        pattern_image(0, i).save(single / f"{i}.png")
    code = main(
        [
            "run",
            str(tmp_path / "single"),
            "--out",
            str(tmp_path / "o"),
            "--cache-dir",
            str(tmp_path / "c"),
            "--projection",
            "pca",
        ]
    )
    assert code == 2
    assert "at least two classes" in capsys.readouterr().err
