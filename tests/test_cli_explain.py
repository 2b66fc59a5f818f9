"""`probe-studio explain RUN_DIR IMAGE...`: the files it writes mean what they say."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from probe_core.cli import main
from probe_core.embeddings_io import read_embeddings
from probe_core.explain.overlay import MIN_SIDE
from tests import badfiles
from tests import shortcut_images as shapes


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A cross-validated `run` of the marked/plain shortcut folder (eight images a class)."""
    root = tmp_path_factory.mktemp("explain")
    folder = root / "images"
    for path, data in shapes.shortcut_files("marked", 8):
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_bytes(data)
    out = root / "run"
    options = ["--projection", "none", "--device", "cpu", "--no-cache", "--folds", "4"]
    assert main(["run", str(folder), "--out", str(out), *options]) == 0
    return out


@pytest.fixture(scope="module")
def explained(run_dir, tmp_path_factory):
    """explain on a run image, a new image of another size and a broken file."""
    root = tmp_path_factory.mktemp("explained")
    new = root / "new marked.png"
    shapes.marked(700).resize((300, 240)).save(new)
    broken = badfiles.write_text(root / "broken.png")
    strip = root / "strip.png"  # 20 times wider than high: padded before the encoder
    shapes.marked(701).resize((400, 20)).save(strip)
    run_image = run_dir.parent / "images" / "plain" / "003.png"
    out = root / "out"
    images = [str(run_image), str(new), str(broken), str(strip)]
    code = main(
        ["explain", str(run_dir), *images, "--k", "5", "--out", str(out), "--per-class", "3"]
    )
    return code, out, images


def test_neighbours_csv_lists_the_exact_top_k_by_cosine(explained, run_dir):
    code, out, (run_image, new, *_) = explained
    assert code == 0
    table = pd.read_csv(out / "neighbours.csv", keep_default_na=False)
    assert list(table.columns) == ["image", "rank", "neighbour", "label", "cosine", "same_fold"]
    embeddings = read_embeddings(run_dir / "embeddings.parquet")
    own = embeddings.paths.index("plain/003.png")
    for image in (run_image, new):
        rows = table[table["image"] == image]
        assert list(rows["rank"]) == [1, 2, 3, 4, 5]
        assert list(rows["cosine"]) == sorted(rows["cosine"], reverse=True)
    rows = table[table["image"] == run_image]
    similarity = embeddings.vectors @ embeddings.vectors[own]
    similarity[own] = -np.inf  # never its own neighbour
    expected = [embeddings.paths[i] for i in np.argsort(-similarity, kind="stable")[:5]]
    assert list(rows["neighbour"]) == expected
    np.testing.assert_allclose(rows["cosine"], np.sort(similarity)[::-1][:5], atol=1e-6)
    assert set(rows["same_fold"]) <= {"True", "False"}  # a run image knows its fold
    assert set(table[table["image"] == new]["same_fold"]) == {""}  # a new image has none


def test_saliency_npz_holds_one_map_per_image_at_its_size_summing_to_one(explained):
    _, out, (run_image, new, _, strip) = explained
    with np.load(out / "saliency.npz") as maps:
        assert sorted(maps.files) == sorted([run_image, new, strip])  # keyed by the path given
        for key, size in ((run_image, (256, 256)), (new, (240, 300)), (strip, (20, 400))):
            values = maps[key]
            assert values.dtype == np.float32 and values.shape == size
            assert values.min() >= 0 and values.sum() == pytest.approx(1.0, abs=1e-4)
    for name in ("003", "new_marked"):  # the overlays, named after the files
        assert Image.open(out / "saliency" / f"{name}.png").width == MIN_SIDE


def test_deletion_csv_compares_every_fraction_with_random(explained):
    _, out, (run_image, new, _, strip) = explained
    table = pd.read_csv(out / "deletion.csv")
    assert list(table.columns)[:5] == ["image", "class", "fraction", "salient_drop", "random_drop"]
    assert sorted(set(table["image"])) == sorted([run_image, new, strip])
    assert list(table[table["image"] == new]["fraction"]) == [0.1, 0.2, 0.5]
    marked = table[(table["image"] == new) & (table["fraction"] == 0.1)].iloc[0]
    assert marked["class"] == "marked" and marked["salient_drop"] > marked["random_drop"]


def test_bad_files_are_skipped_with_their_reason_and_classes_are_checked(explained, capsys):
    _, out, (_, _, broken, _) = explained
    skipped = pd.read_csv(out / "skipped.csv")
    assert list(skipped["path"]) == [broken] and "not an image" in skipped["reason"][0]
    classes = pd.read_csv(out / "classes.csv")
    assert list(classes.columns) == ["class", "images", "border_share", "possible_shortcut"]
    assert set(classes["class"]) == {"marked", "plain"}
    assert (out / "saliency" / "class_marked.png").is_file()


def test_an_unknown_class_is_refused_naming_the_classes(run_dir, tmp_path, capsys):
    image = run_dir.parent / "images" / "marked" / "000.png"
    code = main(["explain", str(run_dir), str(image), "--class", "dog", "--out", str(tmp_path)])
    assert code == 2
    assert "unknown class 'dog'" in capsys.readouterr().err


def test_a_folder_that_is_not_a_run_is_refused(tmp_path, capsys):
    image = tmp_path / "a.png"
    shapes.plain(1).save(image)
    assert main(["explain", str(tmp_path), str(image), "--out", str(tmp_path / "o")]) == 2
    assert "probe.safetensors" in capsys.readouterr().err
