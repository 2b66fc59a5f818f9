"""Classes recorded from the webcam: frames become PNG files in class folders of the
session's workspace, mixed with uploaded images, deletable, downloadable as a zip that
opens again as the same dataset."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
from PIL import Image

from probe_core.capture import CaptureError, CaptureSet, clean_class_name
from probe_core.dataset import scan_zip
from probe_core.images import ImageLoadError, load_image
from probe_core.workspace import SessionWorkspace
from tests.conftest import pattern_image


def encoded(class_index: int, variant: int, fmt: str = "JPEG") -> bytes:
    buffer = io.BytesIO()
    pattern_image(class_index, variant, size=64).save(buffer, fmt)
    return buffer.getvalue()


@pytest.fixture
def workspace(tmp_path):
    space = SessionWorkspace(parent=tmp_path)
    yield space
    space.close()


def test_a_frame_is_written_as_png_in_its_class_folder_of_the_workspace(workspace):
    captures = workspace.captures
    captures.add_class("thumbs up")
    jpeg = encoded(0, 1)
    frame = captures.add_frame("thumbs up", jpeg)

    assert frame.path == workspace.path / "captures" / "thumbs up" / "frame-0001.png"
    assert frame.path.read_bytes().startswith(b"\x89PNG")
    with Image.open(frame.path) as written:
        assert written.format == "PNG" and written.mode == "RGB"
        pixels = np.asarray(written)
    np.testing.assert_array_equal(pixels, np.asarray(load_image(jpeg)))  # the decoded pixels
    second = captures.add_frame("thumbs up", encoded(0, 2, "PNG"))
    assert second.name == "frame-0002.png"
    assert [image.name for image in captures.images("thumbs up")] == [
        "frame-0001.png",
        "frame-0002.png",
    ]


def test_a_resent_frame_is_written_once_and_bad_bytes_write_nothing(workspace):
    captures = workspace.captures
    captures.add_class("a")
    assert captures.add_frame("a", encoded(0, 1), frame_id="tab1-7") is not None
    assert captures.add_frame("a", encoded(0, 1), frame_id="tab1-7") is None
    with pytest.raises(ImageLoadError, match="not an image"):
        captures.add_frame("a", b"<html>hello</html>")
    assert captures.counts() == {"a": 1}
    with pytest.raises(CaptureError, match="no class named “b”"):
        captures.add_frame("b", encoded(0, 1))


def test_deleting_a_frame_removes_only_that_file_and_numbers_are_not_reused(workspace):
    captures = workspace.captures
    captures.add_class("a")
    for variant in range(3):
        captures.add_frame("a", encoded(0, variant))
    assert captures.delete("a", "frame-0003.png")
    assert captures.delete("a", "frame-0001.png")
    assert not captures.delete("a", "frame-0001.png")  # already gone
    assert not captures.delete("a", "../../escape.png")
    assert [image.name for image in captures.images("a")] == ["frame-0002.png"]
    assert captures.add_frame("a", encoded(0, 9)).name == "frame-0004.png"


def test_uploaded_images_and_frames_mix_in_one_class_with_their_bytes_kept(workspace):
    captures = workspace.captures
    captures.add_class("cup")
    captures.add_frame("cup", encoded(1, 0))
    mine = encoded(1, 5)
    added, skipped = captures.add_images(
        "cup",
        [
            ("photos/mine.jpg", mine),
            ("again/mine.jpg", encoded(1, 6)),
            ("notes.txt", b"hello"),
            ("broken.png", b"\x89PNG\r\n\x1a\nbroken"),
        ],
    )
    assert [image.name for image in added] == ["mine.jpg", "mine-2.jpg"]
    assert (captures.root / "cup" / "mine.jpg").read_bytes() == mine  # as uploaded
    assert {item.path: item.reason for item in skipped} == {
        "notes.txt": "not an image file type (.txt)",
        "broken.png": "corrupt PNG image (its data cannot be decoded)",
    }
    assert [image.name for image in captures.images("cup")] == [
        "frame-0001.png",
        "mine-2.jpg",
        "mine.jpg",
    ]
    dataset = workspace.add_captures()
    assert dataset.class_counts() == {"cup": 3}


def test_class_names_are_folder_names_refused_with_the_reason_when_unusable(workspace):
    captures = workspace.captures
    assert clean_class_name("  my   cup/mug ") == "my cup_mug"
    assert captures.add_class("Cat") == "Cat"
    for bad, reason in [
        ("", "needs a name"),
        ("   ", "needs a name"),
        (".hidden", "starting with '.'"),
        ("__MACOSX", "system folders"),
        ("cat", "already a class named “Cat”"),  # the class that has the name
        ("x" * 81, "at most 80 characters"),
    ]:
        with pytest.raises(CaptureError, match=reason):
            captures.add_class(bad)
    captures.add_class("train")
    with pytest.raises(CaptureError, match="train and test split"):
        captures.rename_class("Cat", "Test")
    captures.add_frame("Cat", encoded(0, 0))
    assert captures.rename_class("Cat", "kitten") == "kitten"
    assert captures.class_names == ["kitten", "train"]
    assert [image.name for image in captures.images("kitten")] == ["frame-0001.png"]
    assert captures.add_frame("kitten", encoded(0, 1)).name == "frame-0002.png"
    captures.remove_class("train")
    assert captures.class_names == ["kitten"]
    assert not (captures.root / "train").exists()


def test_the_set_downloads_as_a_zip_that_opens_as_the_same_dataset(workspace, tmp_path):
    captures = workspace.captures
    for class_index, name in enumerate(["left", "right"]):
        captures.add_class(name)
        for variant in range(3):
            captures.add_frame(name, encoded(class_index, variant))
    captures.add_images("right", [("extra.jpg", encoded(1, 9))])

    data = captures.to_zip()
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        names = sorted(archive.namelist())
        assert names[0] == "webcam-classes/left/frame-0001.png"
        assert archive.read("webcam-classes/right/extra.jpg") == encoded(1, 9)
    (tmp_path / "set.zip").write_bytes(data)
    reopened = scan_zip(tmp_path / "set.zip")
    assert reopened.class_counts() == {"left": 3, "right": 4}
    assert not reopened.skipped

    other = SessionWorkspace(parent=tmp_path)  # another session opens the download
    dataset = other.add_zip("set.zip", data)
    assert dataset.class_counts() == {"left": 3, "right": 4}
    originals = {
        f"{image.class_name}/{image.name}": image.path.read_bytes()
        for name in captures.class_names
        for image in captures.images(name)
    }
    assert {item.path: item.read_bytes() for item in dataset.items} == originals
    other.close()


def test_the_dataset_is_a_copy_and_other_uploads_leave_the_recording_in_place(workspace):
    captures = workspace.captures
    for class_index, name in enumerate(["a", "b"]):
        captures.add_class(name)
        for variant in range(2):
            captures.add_frame(name, encoded(class_index, variant))
    dataset = workspace.add_captures()
    assert dataset.class_counts() == {"a": 2, "b": 2}
    captures.delete("a", "frame-0001.png")  # recording on does not change the study
    assert all(item.read_bytes() for item in dataset.items)

    workspace.add_files([("x/1.png", encoded(0, 0, "PNG")), ("y/1.png", encoded(1, 0, "PNG"))])
    assert captures.counts() == {"a": 1, "b": 2}  # still there after another upload
    assert workspace.add_captures().class_counts() == {"a": 1, "b": 2}


def test_a_capture_set_reopens_from_its_folder(tmp_path):
    first = CaptureSet(tmp_path / "captures")
    first.add_class("b")
    first.add_frame("b", encoded(0, 0))
    again = CaptureSet(tmp_path / "captures")
    assert again.class_names == ["b"]
    assert again.add_frame("b", encoded(0, 1)).name == "frame-0002.png"


def test_a_downloaded_set_continues_with_its_classes_and_frame_numbers(workspace, tmp_path):
    captures = workspace.captures
    captures.add_class("left")
    for variant in range(3):
        captures.add_frame("left", encoded(0, variant))
    captures.add_images("left", [("mine.jpg", encoded(0, 7))])
    data = captures.to_zip()

    later = CaptureSet(tmp_path / "later")  # another session, another day
    later.add_class("right")
    added, skipped = later.add_zip(data)
    assert not skipped
    assert later.class_names == ["right", "left"]
    assert [image.name for image in later.images("left")] == [
        "frame-0001.png",
        "frame-0002.png",
        "frame-0003.png",
        "mine.jpg",
    ]
    assert sorted(image.name for image in added) == sorted(
        image.name for image in captures.images("left")
    )
    assert (later.root / "left" / "mine.jpg").read_bytes() == encoded(0, 7)
    assert later.add_frame("left", encoded(0, 9)).name == "frame-0004.png"  # numbering goes on
    again, _ = later.add_zip(data)  # opened twice: the second copies get free names
    assert len(later.images("left")) == 9 and len(again) == 4


def test_a_zip_that_is_not_a_set_is_refused_with_its_reason(tmp_path):
    from probe_core.dataset import ArchiveError

    captures = CaptureSet(tmp_path / "captures")
    with pytest.raises(ArchiveError, match="not a readable zip archive"):
        captures.add_zip(b"this is not a zip")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("cups/a.png", encoded(0, 0, "PNG"))
        archive.writestr("cups/notes.txt", b"hello")
    added, skipped = captures.add_zip(buffer.getvalue())
    assert [image.name for image in added] == ["a.png"]
    assert captures.class_names == ["cups"]
    assert [item.path for item in skipped] == ["cups/notes.txt"]
