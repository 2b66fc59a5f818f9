"""The preview's decode check: unreadable files leave the images for the skipped files before
anything is embedded, with the reason the embedding would give, and the counts add up."""

from __future__ import annotations

import pytest

from probe_core.dataset import SkippedItem, scan_blobs, scan_folder, top_folders
from probe_core.decode_check import check_decoding
from probe_core.images import ImageLoadError, check_image, load_image
from tests import badfiles
from tests.conftest import write_image_folder


@pytest.fixture
def folder_with_bad_files(tmp_path):
    """Ten files: cats 4 good + a corrupt JPEG + a text file; dogs 4 good."""
    root = write_image_folder(tmp_path / "pets", {"cats": 4, "dogs": 4}, fmt="JPEG")
    (root / "cats" / "broken.jpg").write_bytes(badfiles.corrupt_jpeg_bytes())
    (root / "cats" / "notes.txt").write_bytes(badfiles.text_bytes())
    return root


def test_a_corrupt_jpeg_is_skipped_before_embedding_and_the_counts_add_up(folder_with_bad_files):
    scanned = scan_folder(folder_with_bad_files)
    assert (len(scanned), len(scanned.skipped)) == (9, 1)  # the scan reads no pixels

    check = check_decoding(scanned)
    dataset = check.dataset
    assert check.decoded
    assert [s.path for s in check.unreadable] == ["cats/broken.jpg"]
    assert (len(dataset), len(dataset.skipped)) == (8, 2)  # ten files, each counted once
    assert dataset.class_counts() == {"cats": 4, "dogs": 4}
    assert dataset.class_names == scanned.class_names
    reasons = {s.path: s.reason for s in dataset.skipped}
    with pytest.raises(ImageLoadError) as raised:
        load_image((folder_with_bad_files / "cats" / "broken.jpg").read_bytes())
    assert reasons["cats/broken.jpg"] == str(raised.value)  # what the embedding would say
    assert reasons["cats/notes.txt"].startswith("unsupported file type")


def test_the_result_does_not_depend_on_the_number_of_threads(folder_with_bad_files):
    scanned = scan_folder(folder_with_bad_files)
    one, four = check_decoding(scanned, workers=1), check_decoding(scanned, workers=4)
    assert one == four


def test_above_the_limit_only_headers_are_read(folder_with_bad_files):
    """A text file named .jpg fails on its header; damaged JPEG data needs a decode."""
    (folder_with_bad_files / "dogs" / "letter.jpg").write_bytes(badfiles.text_bytes())
    check = check_decoding(scan_folder(folder_with_bad_files), full_decode_limit=5)
    assert not check.decoded
    assert [s.path for s in check.unreadable] == ["dogs/letter.jpg"]
    assert len(check.dataset) + len(check.dataset.skipped) == 11


def test_progress_reports_every_file_once_finished(folder_with_bad_files):
    seen = []
    check_decoding(scan_folder(folder_with_bad_files), progress=lambda d, t: seen.append((d, t)))
    assert seen[-1] == (9, 9)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty file (0 bytes)"),
        (badfiles.text_bytes(), "not an image: the content looks like a text file"),
        (badfiles.truncated_png_bytes(), "truncated image"),
    ],
)
def test_header_checks_give_the_decoders_reasons(data, reason):
    with pytest.raises(ImageLoadError, match=reason.split(" (")[0]):
        check_image(data, decode=False)
    with pytest.raises(ImageLoadError, match=reason.split(" (")[0]):
        load_image(data)


def test_a_dataset_without_files_found_unreadable_keeps_its_classes_and_labels():
    dataset = scan_blobs(
        [("a/1.png", b"x"), ("a/2.png", b"y"), ("b/1.png", b"z"), ("b/notes.txt", b"t")]
    )
    reduced = dataset.without([SkippedItem("a/2.png", "corrupt image"), SkippedItem("zz", "?")])
    assert reduced.paths == ["a/1.png", "b/1.png"]
    assert reduced.labels == [0, 1]
    assert reduced.class_names == ["a", "b"]
    assert [(s.path, s.reason) for s in reduced.skipped] == [
        ("a/2.png", "corrupt image"),
        ("b/notes.txt", dataset.skipped[0].reason),
    ]
    assert dataset.without([]) is dataset


def test_the_top_folders_of_an_upload_name_it():
    assert top_folders(["pets/cats/1.jpg", "pets/dogs/2.jpg"]) == ["pets"]
    assert top_folders(["b/x/1.jpg", "a/y/2.jpg", "loose.jpg"]) == ["a", "b"]
    assert top_folders(["loose.jpg"]) == []
