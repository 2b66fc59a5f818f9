"""A real-world messy folder through the command line: bad files are skipped with their reason,
awkward but valid images are used, hidden files are ignored, and the input is left untouched."""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import pandas as pd
import pytest

from probe_core.cli import main
from probe_core.export import RUN_OUTPUTS
from tests import badfiles
from tests.conftest import write_image_folder

GOOD_PER_CLASS = 8

# Files that cannot be decoded: path -> words its reason must contain (lower-case).
BAD = {
    "red/corrupt.jpg": (badfiles.write_corrupt_jpeg, ("corrupt",)),
    "red/truncated.png": (badfiles.write_truncated_png, ("truncated",)),
    "green/zero_bytes.jpg": (badfiles.write_zero_byte, ("empty",)),
    "green/notes.jpg": (badfiles.write_text, ("not an image", "text")),
    "blue/saved_page.png": (badfiles.write_html, ("not an image", "html")),
}

# Unusual but valid images: each must be used.
AWKWARD = {
    "red/cmyk.jpg": badfiles.write_cmyk_jpeg,
    "red/gray16.png": badfiles.write_gray16_png,
    "green/palette_transparent.png": badfiles.write_palette_png_with_transparency,
    "green/exif_rotated.jpg": badfiles.write_exif_rotated_jpeg,
    "blue/really_a_png.jpg": lambda path: badfiles.write_png(path, seed=1),
    "blue/ünïcødé_猫.png": lambda path: badfiles.write_png(path, seed=2),
    "blue/🐱 emoji 🐶.png": lambda path: badfiles.write_png(path, seed=3),
    "red/my photo #1 (copy).png": lambda path: badfiles.write_png(path, seed=4),
}

# Hidden and system files: never used, reported as such.
HIDDEN = {
    "red/.hidden.png": lambda path: badfiles.write_png(path, seed=5),
    "green/.DS_Store": lambda path: path.write_bytes(b"\x00\x00\x00\x01Bud1"),
    ".git/": lambda path: badfiles.write_png(path / "objects" / "x.png", seed=6),
    "__MACOSX/": lambda path: badfiles.write_png(path / "red" / "._red_000.png", seed=7),
}


def nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


@pytest.fixture
def messy_folder(tmp_path: Path) -> Path:
    root = write_image_folder(
        tmp_path / "messy", {"red": GOOD_PER_CLASS, "green": GOOD_PER_CLASS, "blue": GOOD_PER_CLASS}
    )
    for name, (write, _) in BAD.items():
        write(root / name)
    for name, write in {**AWKWARD, **HIDDEN}.items():
        write(root / name)
    return root


@pytest.mark.slow
def test_messy_folder_end_to_end(messy_folder, tmp_path):
    before = badfiles.tree_fingerprint(messy_folder)
    out = tmp_path / "out"

    code = main(
        [
            "run",
            str(messy_folder),
            "--out",
            str(out),
            "--cache-dir",
            str(tmp_path / "cache"),
            "--projection",
            "pca",
            "--workers",
            "1",
        ]
    )

    assert code == 0
    for name in RUN_OUTPUTS:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name

    # Exactly the good and the awkward-but-valid images were embedded.
    embedded = pd.read_parquet(out / "embeddings.parquet")
    used = {nfc(path) for path in embedded["path"]}
    generated = {
        f"{cls}/{cls}_{i:03d}.png"
        for cls in ("red", "green", "blue")
        for i in range(GOOD_PER_CLASS)
    }
    assert used == generated | {nfc(name) for name in AWKWARD}
    labels = dict(zip(map(nfc, embedded["path"]), embedded["label"], strict=True))
    for name in AWKWARD:
        assert labels[nfc(name)] == name.split("/")[0], name

    # Every bad file is listed with its own reason; hidden files as hidden.
    skipped = pd.read_csv(out / "skipped.csv")
    reasons = dict(zip(map(nfc, skipped["path"]), skipped["reason"].str.lower(), strict=True))
    for name, (_, words) in BAD.items():
        assert name in reasons, name
        for word in words:
            assert word in reasons[name], (name, reasons[name])
    for name in HIDDEN:
        assert "hidden or system" in reasons[name], (name, reasons.get(name))
    assert set(reasons) == set(BAD) | set(HIDDEN)

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_images"] == len(used)
    assert metrics["n_skipped"] == len(skipped)
    assert sorted(metrics["classes"]) == ["blue", "green", "red"]

    # The input folder is exactly as it was.
    assert badfiles.tree_fingerprint(messy_folder) == before
