"""Datasets that ship their own split: top-level train/ and test/ (maybe val/) of class folders."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from probe_core.dataset import (
    ImageDataset,
    ImageItem,
    missing_classes_by_split,
    scan_blobs,
    scan_folder,
    scan_zip,
)
from tests.conftest import pattern_image, write_image_folder


def write_split_folder(root: Path, splits: dict[str, dict[str, int]]) -> Path:
    """``splits[split folder][class]`` pattern images under ``root/<split>/<class>/``."""
    for split, counts in splits.items():
        write_image_folder(root / split, counts)
    return root


def skipped_reasons(dataset: ImageDataset) -> dict[str, str]:
    return {item.path: item.reason for item in dataset.skipped}


def described(dataset: ImageDataset) -> list[tuple[str, str, str]]:
    """(path, split, class name) for every image, in dataset order."""
    return [(i.path, i.split, dataset.class_names[i.label]) for i in dataset.items]


def zip_tree(source: Path, archive: Path) -> Path:
    """Zip every file and folder under ``source`` with its relative path as the name."""
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(source.rglob("*")):
            name = path.relative_to(source).as_posix()
            if path.is_dir():
                zf.writestr(name + "/", b"")
            else:
                zf.write(path, name)
    return archive


def tree_blobs(source: Path) -> list[tuple[str, bytes]]:
    """Every file under ``source`` as an upload: (relative path, bytes)."""
    return [
        (path.relative_to(source).as_posix(), path.read_bytes())
        for path in sorted(source.rglob("*"))
        if path.is_file()
    ]


# --- detection ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("train", "test"), [("train", "test"), ("Train", "Test"), ("TRAIN", "test"), ("tRaIn", "TEST")]
)
def test_split_folders_of_any_case_are_splits_not_classes_train_first(tmp_path, train, test):
    root = write_split_folder(
        tmp_path / "d", {train: {"cat": 2, "dog": 1}, test: {"cat": 1, "dog": 1}}
    )

    dataset = scan_folder(root)

    assert dataset.has_splits
    assert dataset.class_names == ["cat", "dog"]
    assert described(dataset) == [
        (f"{train}/cat/cat_000.png", "train", "cat"),
        (f"{train}/cat/cat_001.png", "train", "cat"),
        (f"{test}/cat/cat_000.png", "test", "cat"),
        (f"{train}/dog/dog_000.png", "train", "dog"),
        (f"{test}/dog/dog_000.png", "test", "dog"),
    ]
    assert dataset.splits == [item.split for item in dataset.items]
    assert dataset.class_counts() == {"cat": 3, "dog": 2}
    assert dataset.skipped == []


@pytest.mark.parametrize("val", ["val", "validation", "Validation", "VAL"])
def test_a_validation_folder_is_normalised_to_val(tmp_path, val):
    root = write_split_folder(
        tmp_path / "d", {"train": {"cat": 2, "dog": 2}, val: {"cat": 1}, "test": {"dog": 1}}
    )

    dataset = scan_folder(root)

    assert set(dataset.splits) == {"train", "val", "test"}
    val_paths = [item.path for item in dataset.items if item.split == "val"]
    assert val_paths == [f"{val}/cat/cat_000.png"]
    assert dataset.split_counts() == {
        "train": {"cat": 2, "dog": 2},
        "val": {"cat": 1, "dog": 0},
        "test": {"cat": 0, "dog": 1},
    }


def test_val_and_validation_folders_together_are_both_val(tmp_path):
    root = write_split_folder(
        tmp_path / "d",
        {"train": {"cat": 1}, "val": {"cat": 1}, "validation": {"cat": 2}, "test": {"cat": 1}},
    )

    dataset = scan_folder(root)

    assert dataset.split_counts() == {"train": {"cat": 1}, "val": {"cat": 3}, "test": {"cat": 1}}


def test_classes_are_the_sorted_union_across_splits(tmp_path):
    root = write_split_folder(
        tmp_path / "d", {"train": {"zebra": 1, "ant": 1}, "test": {"mole": 1, "ant": 1}}
    )

    dataset = scan_folder(root)

    assert dataset.class_names == ["ant", "mole", "zebra"]
    assert dataset.class_counts() == {"ant": 2, "mole": 1, "zebra": 1}


def test_paths_keep_the_split_folder_so_the_same_file_name_in_two_splits_stays_unique(tmp_path):
    root = write_split_folder(tmp_path / "d", {"train": {"cat": 2}, "test": {"cat": 2}})

    dataset = scan_folder(root)

    assert len(set(dataset.paths)) == len(dataset) == 4
    assert all(path.startswith(("train/cat/", "test/cat/")) for path in dataset.paths)


def test_a_wrapper_folder_above_the_splits_is_stripped(tmp_path):
    source = write_split_folder(
        tmp_path / "d" / "data", {"train": {"cat": 1, "dog": 1}, "test": {"cat": 1, "dog": 1}}
    )

    dataset = scan_folder(source.parent)

    assert dataset.class_names == ["cat", "dog"]
    assert described(dataset) == [
        ("train/cat/cat_000.png", "train", "cat"),
        ("test/cat/cat_000.png", "test", "cat"),
        ("train/dog/dog_000.png", "train", "dog"),
        ("test/dog/dog_000.png", "test", "dog"),
    ]


def test_files_nested_below_a_class_folder_belong_to_that_class(tmp_path):
    root = tmp_path / "d"
    write_image_folder(root / "train" / "cat" / "indoor", {"sofa": 1})
    write_image_folder(root / "test", {"cat": 1})

    dataset = scan_folder(root)

    assert described(dataset) == [
        ("train/cat/indoor/sofa/sofa_000.png", "train", "cat"),
        ("test/cat/cat_000.png", "test", "cat"),
    ]


# --- what is not a split layout ----------------------------------------------------------------


def test_a_dataset_without_split_folders_has_no_splits(tmp_path):
    dataset = scan_folder(write_image_folder(tmp_path / "d", {"cat": 1, "dog": 1}))

    assert not dataset.has_splits
    assert dataset.splits == ["", ""]
    assert dataset.split_counts() == {}
    assert missing_classes_by_split(dataset) == {}


def test_class_folders_merely_named_like_splits_are_classes(tmp_path):
    root = write_image_folder(tmp_path / "d", {"training": 1, "testing": 1, "validation_set": 1})

    dataset = scan_folder(root)

    assert not dataset.has_splits
    assert dataset.class_names == ["testing", "training", "validation_set"]


def test_split_names_mixed_with_other_top_level_folders_are_all_classes(tmp_path):
    root = write_split_folder(
        tmp_path / "d", {"train": {"cat": 1}, "test": {"cat": 1}, "extra": {"cat": 1}}
    )

    dataset = scan_folder(root)

    assert not dataset.has_splits
    assert dataset.class_names == ["extra", "test", "train"]


def test_only_a_train_folder_is_a_wrapper_as_before(tmp_path):
    root = write_split_folder(tmp_path / "d", {"train": {"cat": 1, "dog": 1}})

    dataset = scan_folder(root)

    assert not dataset.has_splits
    assert dataset.class_names == ["cat", "dog"]
    assert dataset.paths == ["cat/cat_000.png", "dog/dog_000.png"]


def test_train_and_val_without_test_are_not_a_split_layout(tmp_path):
    root = write_split_folder(tmp_path / "d", {"train": {"cat": 1}, "val": {"cat": 1}})

    dataset = scan_folder(root)

    assert not dataset.has_splits
    assert dataset.class_names == ["train", "val"]


# --- what is skipped ---------------------------------------------------------------------------


def test_images_directly_inside_a_split_folder_are_skipped_with_a_reason(tmp_path):
    root = write_split_folder(tmp_path / "d", {"train": {"cat": 1}, "test": {"cat": 1}})
    pattern_image(0, 5).save(root / "train" / "loose.png")

    dataset = scan_folder(root)
    reasons = skipped_reasons(dataset)

    assert dataset.paths == ["train/cat/cat_000.png", "test/cat/cat_000.png"]
    assert "train/loose.png" not in dataset.paths
    assert "not inside a class folder under train/" in reasons["train/loose.png"]


def test_loose_images_in_a_wrapped_split_folder_are_reported_with_their_full_path(tmp_path):
    root = tmp_path / "d"
    write_split_folder(root / "data", {"train": {"cat": 1}, "test": {"cat": 1}})
    pattern_image(0, 5).save(root / "data" / "test" / "loose.png")

    reasons = skipped_reasons(scan_folder(root))

    assert "not inside a class folder under test/" in reasons["data/test/loose.png"]


def test_an_empty_class_folder_inside_a_split_is_reported(tmp_path):
    root = write_split_folder(tmp_path / "d", {"train": {"cat": 1, "dog": 1}, "test": {"cat": 1}})
    (root / "test" / "dog").mkdir()
    (root / "test" / "bird").mkdir()

    dataset = scan_folder(root)

    assert dataset.class_names == ["cat", "dog"]
    assert skipped_reasons(dataset) == {
        "test/bird/": "class folder has no images",
        "test/dog/": "class folder has no images",
    }


def test_an_empty_val_folder_is_reported_as_an_empty_split(tmp_path):
    root = write_split_folder(tmp_path / "d", {"train": {"cat": 1}, "test": {"cat": 1}})
    (root / "val").mkdir()

    dataset = scan_folder(root)

    assert set(dataset.splits) == {"train", "test"}
    assert skipped_reasons(dataset) == {"val/": "split folder has no images"}


# --- zips and uploads --------------------------------------------------------------------------


def test_zip_and_upload_scan_like_the_folder(tmp_path):
    source = tmp_path / "src"
    write_split_folder(
        source / "data",
        {"Train": {"cat": 2, "dog": 1}, "validation": {"cat": 1}, "TEST": {"cat": 1, "dog": 1}},
    )
    pattern_image(0, 9).save(source / "data" / "Train" / "loose.png")
    (source / "data" / "TEST" / "bird").mkdir()

    from_folder = scan_folder(source)
    from_zip = scan_zip(zip_tree(source, tmp_path / "upload.zip"))
    from_upload = scan_blobs(tree_blobs(source))

    assert from_folder.has_splits
    assert described(from_zip) == described(from_upload) == described(from_folder)
    assert from_zip.class_names == from_upload.class_names == from_folder.class_names
    assert from_zip.skipped == from_folder.skipped
    assert skipped_reasons(from_folder).keys() == {"data/Train/loose.png", "data/TEST/bird/"}
    # Uploads carry no folder entries, so only the loose file is reported there.
    assert skipped_reasons(from_upload).keys() == {"data/Train/loose.png"}
    for zipped, on_disk in zip(from_zip.items, from_folder.items, strict=True):
        assert zipped.read_bytes() == on_disk.read_bytes()


# --- missing classes ---------------------------------------------------------------------------


def test_missing_classes_by_split_names_the_classes_absent_from_each_present_split(tmp_path):
    root = write_split_folder(
        tmp_path / "d",
        {
            "train": {"cat": 2, "dog": 2, "eel": 1},
            "val": {"cat": 1},
            "test": {"cat": 1, "eel": 1},
        },
    )

    missing = missing_classes_by_split(scan_folder(root))

    assert missing == {"train": [], "val": ["dog", "eel"], "test": ["dog"]}


def test_missing_classes_lists_only_splits_that_are_present(tmp_path):
    root = write_split_folder(tmp_path / "d", {"train": {"cat": 1}, "test": {"cat": 1, "dog": 1}})

    assert missing_classes_by_split(scan_folder(root)) == {"train": ["dog"], "test": []}


def test_items_built_without_a_split_have_an_empty_split():
    item = ImageItem("cat/1.png", b"bytes", 0)

    assert item.split == ""
    assert not ImageDataset([item], ["cat"]).has_splits
