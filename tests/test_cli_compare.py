"""``probe-studio compare``: several encoders on the same images and folds, every pair tested."""

from __future__ import annotations

import pandas as pd
import pytest
from scipy.stats import binomtest

from probe_core.cli import main
from tests.conftest import write_image_folder

ENCODERS = "bundled:efficientnet-lite0,baseline:pixels"


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    folder = write_image_folder(root / "colours", {"red": 8, "green": 8, "blue": 8})
    out = root / "out"
    code = main(
        [
            "compare",
            str(folder),
            "--encoders",
            ENCODERS,
            "--out",
            str(out),
            "--cache-dir",
            str(root / "cache"),
            "--fewshot",
        ]
    )
    return code, out


def test_compare_writes_the_tables_with_their_exact_columns(compared):
    code, out = compared
    assert code == 0
    comparison = pd.read_csv(out / "comparison.csv")
    assert list(comparison.columns) == [
        "encoder",
        "dim",
        "images_per_second",
        "accuracy",
        "accuracy_low",
        "accuracy_high",
        "balanced_accuracy",
        "balanced_accuracy_low",
        "balanced_accuracy_high",
    ]
    assert list(comparison["encoder"]) == ENCODERS.split(",")
    assert list(comparison["dim"]) == [1280, 768]
    assert (comparison["images_per_second"] > 0).all()
    pairs = pd.read_csv(out / "pairs.csv")
    assert list(pairs.columns) == [
        "a",
        "b",
        "accuracy_a",
        "accuracy_b",
        "difference",
        "difference_low",
        "difference_high",
        "p_value",
        "only_a_correct",
        "only_b_correct",
    ]
    assert len(pairs) == 1
    per_image = pd.read_csv(out / "per_image.csv")
    assert list(per_image.columns) == ["path", "true", *ENCODERS.split(",")]
    assert len(per_image) == 24  # every image, scored out of fold by each encoder
    fewshot = pd.read_csv(out / "fewshot.csv")
    assert list(fewshot.columns) == ["encoder", "k", "accuracy", "low", "high", "draws"]
    assert set(fewshot["encoder"]) == set(ENCODERS.split(","))
    assert (out / "fewshot.html").stat().st_size > 0


def test_the_pair_counts_and_p_value_match_the_per_image_predictions(compared):
    _, out = compared
    per_image = pd.read_csv(out / "per_image.csv")
    pair = pd.read_csv(out / "pairs.csv").iloc[0]
    a, b = pair["a"], pair["b"]
    right_a, right_b = per_image[a] == per_image["true"], per_image[b] == per_image["true"]
    only_a, only_b = int((right_a & ~right_b).sum()), int((right_b & ~right_a).sum())
    assert (pair["only_a_correct"], pair["only_b_correct"]) == (only_a, only_b)
    assert pair["accuracy_a"] == pytest.approx(right_a.mean())
    expected = 1.0 if only_a + only_b == 0 else binomtest(only_b, only_a + only_b).pvalue
    assert pair["p_value"] == pytest.approx(expected)


def test_compare_prints_the_table_sentences_and_zero_shot(compared, capsys):
    # The fixture already ran; run again from the cache to read what it prints.
    _, out = compared
    folder = out.parent / "colours"
    assert main(
        ["compare", str(folder), "--encoders", ENCODERS, "--out", str(out), "--cache-dir",
         str(out.parent / "cache")]
    ) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "the same folds for every encoder" in printed
    assert "points" in printed and "p " in printed  # the pair sentence
    assert "has no text tower, so zero-shot is not available" in printed


def test_compare_needs_two_encoders(tmp_path, image_folder, capsys):
    code = main(
        ["compare", str(image_folder), "--encoders", "baseline:pixels", "--out",
         str(tmp_path / "o"), "--cache-dir", str(tmp_path / "c")]
    )  # fmt: skip
    assert code == 2
    assert "at least two different encoders" in capsys.readouterr().err
