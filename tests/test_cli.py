"""The bundled demo through the command line, end to end."""

from __future__ import annotations

import json
import re
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from probe_core.cli import _print_summary, main
from probe_core.embeddings import Embeddings
from probe_core.evaluation.label_issues import LowConfidenceLabel
from probe_core.evaluation.protocols import run_probe
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
    assert metrics["protocol"]["name"] == "cv" and metrics["protocol"]["folds"] == 5
    assert "up to 5,000" in metrics["protocol"]["reason"]
    assert metrics["n_evaluated"] == 144
    accuracy = metrics["metrics"]["accuracy"]
    assert accuracy["value"] > 3 * metrics["metrics"]["chance_accuracy"]  # chance is 1/6
    assert accuracy["low"] <= accuracy["value"] <= accuracy["high"]
    assert metrics["encoder_id"].startswith("bundled:efficientnet-lite0@")
    assert metrics["chosen_c"] in metrics["sweep"]["c_values"]
    assert metrics["c_rule"] == metrics["sweep"]["c_rule"] == "one-standard-error"
    sweep = metrics["sweep"]
    assert (
        len(sweep["validation_log_loss"])
        == len(sweep["validation_log_loss_se"])
        == len(sweep["c_values"])
    )

    predictions = pd.read_csv(out / "predictions.csv")
    assert len(predictions) == 144  # every image, each scored out of fold
    assert {"path", "true", "predicted", "fold"} <= set(predictions.columns)
    assert sorted(predictions["fold"].unique()) == [1, 2, 3, 4, 5]
    assert list(pd.read_csv(out / "duplicates.csv").columns) == ["group", "path", "label"]
    issues = pd.read_csv(out / "label_issues.csv")
    assert list(issues.columns) == ["path", "given", "suggested", "score"]
    assert len(issues) and not (issues["given"] == issues["suggested"]).any()
    unsure = pd.read_csv(out / "low_confidence_labels.csv")
    assert list(unsure.columns) == ["path", "given", "runner_up", "score"]
    # On the demo every flagged image is most like another class at the chosen C (the
    # low-confidence group itself: tests/test_label_issues.py); the file is still written.
    assert not (unsure["given"] == unsure["runner_up"]).any()
    assert metrics["label_issues"] == len(issues)
    assert metrics["low_confidence_labels"] == len(unsure)
    assert {f"p({name})" for name in metrics["classes"]} <= set(predictions.columns)
    embeddings = pd.read_parquet(out / "embeddings.parquet")
    assert len(embeddings) == 144 and len(embeddings["vector"][0]) == 1280
    assert "Plotly" in (out / "umap.html").read_text()[:100_000]

    printed = capsys.readouterr().out
    assert "accuracy" in printed and "95% CI" in printed and "chosen C" in printed
    assert "5-fold cross-validation" in printed and "never saw it" in printed
    assert "duplicates" in printed and "label issues" in printed
    assert "like another class (label_issues.csv)" in printed
    # whether the demo has a low-confidence group depends on the chosen C (the printing of one:
    # test_the_summary_lists_a_low_confidence_group_apart_with_its_runner_up)
    assert ("low confidence in their own label" in printed) == bool(len(unsure))
    assert not re.search(r"labelled (\S+), looks like \1\b", printed)
    assert "Clopper-Pearson" in printed

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


def run_cli(tmp_path, folder, *extra: str) -> tuple[int, dict, pd.DataFrame]:
    out = tmp_path / "out"
    code = main(
        ["run", str(folder), "--out", str(out), "--cache-dir", str(tmp_path / "cache"), *extra]
    )
    metrics = json.loads((out / "metrics.json").read_text()) if code == 0 else {}
    predictions = pd.read_csv(out / "predictions.csv") if code == 0 else pd.DataFrame()
    return code, metrics, predictions


def test_holdout_protocol_scores_the_test_split_and_says_so(tmp_path, image_folder, capsys):
    code, metrics, predictions = run_cli(
        tmp_path, image_folder, "--protocol", "holdout", "--projection", "none"
    )
    assert code == 0
    assert metrics["protocol"]["name"] == "holdout" and metrics["protocol"]["reason"] == "asked for"
    assert len(predictions) == metrics["n_evaluated"] < 24
    assert set(predictions["fold"]) == {"test"}
    assert not (tmp_path / "out" / "umap.html").exists()  # --projection none skips the map
    assert "held-out test split" in capsys.readouterr().out


def test_a_folder_with_train_and_test_runs_the_given_protocol(tmp_path, capsys):
    from tests.conftest import write_image_folder

    write_image_folder(tmp_path / "data" / "Train", {"red": 6, "green": 6})
    write_image_folder(tmp_path / "data" / "test", {"red": 3, "green": 3})
    code, metrics, predictions = run_cli(tmp_path, tmp_path / "data", "--projection", "pca")
    assert code == 0
    assert metrics["protocol"]["name"] == "given"
    assert len(predictions) == 6 and predictions["path"].str.startswith("test/").all()
    assert "own train/ and test/" in capsys.readouterr().out


def test_cv_repeats_print_the_spread(tmp_path, image_folder, capsys):
    code, metrics, _ = run_cli(
        tmp_path, image_folder, "--folds", "3", "--repeats", "3", "--projection", "none"
    )
    assert code == 0
    assert metrics["protocol"]["folds"] == 3 and len(metrics["protocol"]["repeat_accuracies"]) == 3
    assert "across repeats" in capsys.readouterr().out


def test_the_summary_is_printed_before_the_map_is_computed(
    tmp_path, image_folder, capsys, monkeypatch
):
    import probe_core.study

    seen_before_map = []

    def fake_project(vectors, **options):
        seen_before_map.append(capsys.readouterr().out)
        from probe_core.projection import project

        return project(vectors, method="pca", n_components=options.get("n_components", 2))

    monkeypatch.setattr(probe_core.study, "project", fake_project)
    code, _, _ = run_cli(tmp_path, image_folder)
    assert code == 0
    assert seen_before_map and "accuracy" in seen_before_map[0]


def test_given_protocol_on_a_plain_folder_is_a_clear_error(tmp_path, image_folder, capsys):
    code, _, _ = run_cli(tmp_path, image_folder, "--protocol", "given", "--projection", "none")
    assert code == 2
    assert "train/ and test/" in capsys.readouterr().err


def test_the_summary_lists_a_low_confidence_group_apart_with_its_runner_up(capsys):
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 16))
    labels = np.repeat(np.arange(3), 20)
    vectors = centres[labels] + rng.normal(scale=0.8, size=(60, 16))
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    embeddings = Embeddings(
        vectors=vectors,
        labels=labels,
        paths=[f"c{label}/{i}.png" for i, label in enumerate(labels)],
        class_names=["c0", "c1", "c2"],
        encoder_id="test:gaussians",
    )
    result = run_probe(embeddings, folds=3)
    own_first = np.flatnonzero(result.predictions == result.labels)[:2]
    flagged = tuple(
        LowConfidenceLabel(
            index=int(result.evaluated[row]),
            given=int(result.labels[row]),
            runner_up=int(np.argsort(-result.probabilities[row])[1]),
            score=0.1,
            probability_given=0.40,
            probability_runner_up=0.35,
        )
        for row in own_first
    )
    _print_summary(embeddings, replace(result, low_confidence_labels=flagged))
    printed = capsys.readouterr().out
    assert "2 more flagged images have low confidence in their own label" in printed
    assert "(low_confidence_labels.csv)" in printed
    for item in flagged:
        given = embeddings.class_names[item.given]
        runner_up = embeddings.class_names[item.runner_up]
        line = f"{embeddings.paths[item.index]}: labelled {given}, low confidence"
        assert line in printed
        assert f"runner-up {runner_up} (p({runner_up}) = 0.35)" in printed
    assert not re.search(r"labelled (\S+), looks like \1\b", printed)
