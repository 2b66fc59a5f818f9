"""Download names say what they hold: the dataset and the encoder, safe on any file system."""

from __future__ import annotations

import re

import pytest

from probe_core.file_names import MAX_STEM_LENGTH, download_stem

SAFE = re.compile(r"[A-Za-z0-9.-]+_[A-Za-z0-9.-]+")


@pytest.mark.parametrize(
    ("dataset", "encoders", "stem"),
    [
        ("demo", "bundled:efficientnet-lite0", "demo_efficientnet-lite0"),
        ("demo", "baseline:pixels", "demo_baseline-pixels"),
        ("cats", "open_clip:ViT-B-32/laion2b_s34b_b79k", "cats_ViT-B-32-laion2b-s34b-b79k"),
        ("cats", "open_clip:ViT-B-32@/home/me/weights/finetuned.pt", "cats_ViT-B-32-finetuned"),
        (
            "cats",
            "bundled:efficientnet-lite0@579344248a93e230",
            "cats_efficientnet-lite0-579344248a93e230",
        ),
        (
            "Fotos von Kätzchen",
            "bundled:efficientnet-lite0",
            "Fotos-von-Katzchen_efficientnet-lite0",
        ),
        ("../../etc/passwd", "baseline:pixels", "etc-passwd_baseline-pixels"),
        (
            "demo",
            ["bundled:efficientnet-lite0", "baseline:pixels"],
            "demo_efficientnet-lite0-vs-baseline-pixels",
        ),
    ],
)
def test_the_stem_names_the_dataset_and_the_encoder(dataset, encoders, stem):
    assert download_stem(dataset, encoders) == stem


@pytest.mark.parametrize(
    "dataset",
    ["猫の写真", "", "   ", 'a/b\\c:d*e?f"g<h>i|j', "CON", ".hidden", "x" * 500, "tab\there\nnew"],
)
def test_every_stem_is_safe_short_and_stable(dataset):
    encoders = ["open_clip:" + "ViT-H-14-quickgelu/dfn5b" * 3, "baseline:color-histogram"]
    stem = download_stem(dataset, encoders)
    assert SAFE.fullmatch(stem), stem
    assert len(stem) <= MAX_STEM_LENGTH
    assert not stem.startswith((".", "-"))
    assert download_stem(dataset, encoders) == stem


def test_names_cut_to_fit_or_emptied_by_cleaning_stay_apart():
    long_a, long_b = "photos " * 20 + "2023", "photos " * 20 + "2024"
    assert download_stem(long_a, "baseline:pixels") != download_stem(long_b, "baseline:pixels")
    assert download_stem("猫", "baseline:pixels") != download_stem("犬", "baseline:pixels")
    assert download_stem("猫", "baseline:pixels").startswith("dataset-")
