"""Scanning a folder, a zip archive or uploaded blobs into labelled images.

Scanning only looks at names and file types; decoding happens later. So most files
here hold a few distinct bytes rather than real images.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import pytest

from probe_core.dataset import (
    ArchiveError,
    ImageDataset,
    ZipMember,
    scan,
    scan_blobs,
    scan_folder,
    scan_zip,
)
from tests.badfiles import tree_fingerprint


def touch(path: Path, data: bytes | None = None) -> Path:
    """A file at ``path`` (folders created) whose content is its own name, unless given."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(path.name.encode() if data is None else data)
    return path


def make_tree(root: Path, names: list[str]) -> Path:
    """Files (or, for names ending in '/', empty folders) under ``root``, in the given order."""
    root.mkdir(parents=True, exist_ok=True)
    for name in names:
        if name.endswith("/"):
            (root / name).mkdir(parents=True, exist_ok=True)
        else:
            touch(root / name)
    return root


def skipped_reasons(dataset: ImageDataset) -> dict[str, str]:
    return {item.path: item.reason for item in dataset.skipped}


def labelled(dataset: ImageDataset) -> list[tuple[str, str]]:
    """(path, class name) for every image, in dataset order."""
    return [(item.path, dataset.class_names[item.label]) for item in dataset.items]


def zip_folder(source: Path, archive: Path, prefix: str = "") -> Path:
    """Zip every file and folder under ``source``, named ``prefix`` + their relative path."""
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(source.rglob("*")):
            name = prefix + path.relative_to(source).as_posix()
            if path.is_dir():
                zf.writestr(name + "/", b"")
            else:
                zf.write(path, name)
    return archive


# --- classes and order -------------------------------------------------------------------------


def test_each_first_level_folder_is_a_class_and_class_names_are_sorted(tmp_path):
    root = make_tree(tmp_path / "d", ["zebra/1.png", "apple/1.png", "apple/2.png", "mango/1.png"])

    dataset = scan_folder(root)

    assert dataset.class_names == ["apple", "mango", "zebra"]
    assert labelled(dataset) == [
        ("apple/1.png", "apple"),
        ("apple/2.png", "apple"),
        ("mango/1.png", "mango"),
        ("zebra/1.png", "zebra"),
    ]
    assert dataset.labels == [0, 0, 1, 2]
    assert dataset.class_counts() == {"apple": 2, "mango": 1, "zebra": 1}
    assert dataset.skipped == []


def test_files_nested_deeper_belong_to_their_top_level_class(tmp_path):
    root = make_tree(
        tmp_path / "d",
        ["cats/indoor/1.png", "cats/indoor/sofa/2.png", "cats/3.png", "dogs/park/1.png"],
    )

    dataset = scan_folder(root)

    assert dataset.class_names == ["cats", "dogs"]
    assert labelled(dataset) == [
        ("cats/3.png", "cats"),
        ("cats/indoor/1.png", "cats"),
        ("cats/indoor/sofa/2.png", "cats"),
        ("dogs/park/1.png", "dogs"),
    ]


def test_order_is_deterministic_and_independent_of_file_creation_order(tmp_path):
    names = [
        f"{cls}/{sub}{i}.png" for cls in ("b", "a", "c") for sub in ("", "x/") for i in (3, 1, 2)
    ]
    forwards = make_tree(tmp_path / "forwards", names)
    backwards = make_tree(tmp_path / "backwards", names[::-1])

    first = scan_folder(forwards)

    assert labelled(first) == labelled(scan_folder(forwards))
    assert labelled(first) == labelled(scan_folder(backwards))
    assert first.paths == sorted(first.paths)
    assert len(first) == len(names)


# --- which files are used ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["a.jpg", "A.JPG", "b.Png", "c.jpeg", "d.JpEg", "e.webp", "f.bmp", "g.gif", "h.tif", "i.TIFF"],
)
def test_image_extensions_are_accepted_whatever_their_case(tmp_path, name):
    root = make_tree(tmp_path / "d", [f"cats/{name}", "dogs/1.png"])

    dataset = scan_folder(root)

    assert f"cats/{name}" in dataset.paths
    assert dataset.skipped == []


def test_other_file_types_are_skipped_with_a_reason_naming_the_type(tmp_path):
    root = make_tree(
        tmp_path / "d", ["cats/1.png", "cats/notes.txt", "cats/LICENSE", "dogs/1.png", "dogs/a.svg"]
    )

    dataset = scan_folder(root)
    reasons = skipped_reasons(dataset)

    assert dataset.paths == ["cats/1.png", "dogs/1.png"]
    assert set(reasons) == {"cats/notes.txt", "cats/LICENSE", "dogs/a.svg"}
    assert "unsupported file type" in reasons["cats/notes.txt"]
    assert ".txt" in reasons["cats/notes.txt"]
    assert ".svg" in reasons["dogs/a.svg"]
    assert "no extension" in reasons["cats/LICENSE"]


def test_files_at_the_root_are_skipped_as_not_inside_a_class_folder(tmp_path):
    root = make_tree(tmp_path / "d", ["loose.png", "cats/1.png", "dogs/1.png"])

    dataset = scan_folder(root)

    assert "loose.png" not in dataset.paths
    assert "not inside a class folder" in skipped_reasons(dataset)["loose.png"]


def test_hidden_files_hidden_folders_and_macos_junk_are_not_used_and_are_reported(tmp_path):
    root = make_tree(
        tmp_path / "d",
        [
            "cats/1.png",
            "cats/.DS_Store",
            "cats/.hidden.png",
            "dogs/1.png",
            ".DS_Store",
            ".git/objects/ab.png",
            "__MACOSX/cats/._1.png",
            ".thumbnails/",
        ],
    )

    dataset = scan_folder(root)
    reasons = skipped_reasons(dataset)

    assert dataset.class_names == ["cats", "dogs"]
    assert dataset.paths == ["cats/1.png", "dogs/1.png"]
    for path in ("cats/.DS_Store", "cats/.hidden.png", ".DS_Store", ".git/", "__MACOSX/"):
        assert "hidden or system" in reasons[path], path
    assert not any(path.startswith((".git/o", "__MACOSX/c")) for path in reasons)
    assert not any("class folder has no images" in r for r in reasons.values())


def test_a_class_folder_without_images_is_reported(tmp_path):
    root = make_tree(
        tmp_path / "d", ["cats/1.png", "dogs/1.png", "birds/", "fish/notes.txt", "frogs/deep/"]
    )

    dataset = scan_folder(root)
    reasons = skipped_reasons(dataset)

    assert dataset.class_names == ["cats", "dogs"]
    for folder in ("birds/", "fish/", "frogs/"):
        assert reasons[folder] == "class folder has no images"
    assert "unsupported file type" in reasons["fish/notes.txt"]


def test_a_common_wrapper_folder_on_disk_is_not_a_class(tmp_path):
    root = make_tree(tmp_path / "d", ["data/cats/1.png", "data/dogs/1.png", "data/birds/"])

    dataset = scan_folder(root)
    reasons = skipped_reasons(dataset)

    assert dataset.class_names == ["cats", "dogs"]
    assert dataset.paths == ["cats/1.png", "dogs/1.png"]
    assert reasons == {"data/birds/": "class folder has no images"}


def test_scanning_never_modifies_the_folder(tmp_path):
    root = make_tree(
        tmp_path / "d",
        [
            "cats/1.png",
            "cats/deep/2.JPG",
            "cats/notes.txt",
            "dogs/1.png",
            "empty/",
            ".git/HEAD",
            "__MACOSX/x",
            "loose.png",
        ],
    )
    os.symlink("1.png", root / "dogs" / "inside.png")
    os.symlink("nowhere.png", root / "dogs" / "broken.png")
    before = tree_fingerprint(root)

    dataset = scan_folder(root)
    for item in dataset.items:
        item.read_bytes()

    assert len(dataset) == 4
    assert tree_fingerprint(root) == before


# --- symlinks on disk --------------------------------------------------------------------------


def test_symlinks_are_used_only_when_they_resolve_to_a_file_inside_the_folder(tmp_path):
    outside = touch(tmp_path / "secret.png", b"outside")
    root = make_tree(tmp_path / "d", ["cats/1.png", "dogs/1.png"])
    os.symlink(outside, root / "cats" / "outside.png")
    os.symlink("../dogs/1.png", root / "cats" / "inside.png")
    os.symlink("b.png", root / "cats" / "a.png")
    os.symlink("a.png", root / "cats" / "b.png")
    os.symlink("missing.png", root / "cats" / "broken.png")
    os.symlink(tmp_path, root / "linked_folder")

    dataset = scan_folder(root)
    reasons = skipped_reasons(dataset)

    assert dataset.paths == ["cats/1.png", "cats/inside.png", "dogs/1.png"]
    assert dataset.items[1].read_bytes() == b"1.png"  # the target's content
    assert reasons["cats/outside.png"] == "symlink points outside the folder"
    assert reasons["cats/a.png"] == "symlink loop"
    assert reasons["cats/b.png"] == "symlink loop"
    assert reasons["cats/broken.png"] == "broken symlink"
    assert "not followed" in reasons["linked_folder/"]
    assert "linked_folder" not in dataset.class_names


# --- uploaded blobs ----------------------------------------------------------------------------


def test_blobs_lose_their_common_wrapper_folder(tmp_path):
    blobs = [
        ("data/dogs/1.png", b"dog 1"),
        ("data/cats/2.png", b"cat 2"),
        ("data/cats/1.png", b"cat 1"),
        ("data/cats/kittens/3.png", b"cat 3"),
    ]

    dataset = scan_blobs(blobs)

    assert dataset.class_names == ["cats", "dogs"]
    assert labelled(dataset) == [
        ("cats/1.png", "cats"),
        ("cats/2.png", "cats"),
        ("cats/kittens/3.png", "cats"),
        ("dogs/1.png", "dogs"),
    ]
    assert [item.read_bytes() for item in dataset.items] == [b"cat 1", b"cat 2", b"cat 3", b"dog 1"]
    assert labelled(scan_blobs(blobs[::-1])) == labelled(dataset)


def test_blobs_without_a_wrapper_use_their_first_folder_as_class():
    dataset = scan_blobs([("cats/1.png", b"c"), ("dogs/1.png", b"d"), ("dogs/x/2.png", b"e")])

    assert dataset.class_names == ["cats", "dogs"]
    assert dataset.paths == ["cats/1.png", "dogs/1.png", "dogs/x/2.png"]


@pytest.mark.parametrize(
    "name",
    [
        "../x/1.png",
        "data/../../x/1.png",
        "/abs/1.png",
        "C:/x/1.png",
        "C:\\x\\1.png",
        "\\\\host\\1.png",
    ],
)
def test_unsafe_blob_names_are_skipped_with_a_reason(name):
    dataset = scan_blobs([(name, b"evil"), ("cats/1.png", b"c"), ("dogs/1.png", b"d")])

    assert dataset.paths == ["cats/1.png", "dogs/1.png"]
    assert "unsafe path" in skipped_reasons(dataset)[name]


def test_duplicate_blob_paths_are_reported_and_the_first_is_kept():
    dataset = scan_blobs(
        [("cats/1.png", b"first"), ("dogs/1.png", b"d"), ("cats/1.png", b"second")]
    )

    assert dataset.paths == ["cats/1.png", "dogs/1.png"]
    assert dataset.items[0].read_bytes() == b"first"
    assert "duplicate" in skipped_reasons(dataset)["cats/1.png"]


def test_blob_checks_match_the_folder_scan():
    dataset = scan_blobs(
        [
            ("data/cats/1.png", b"c"),
            ("data/cats/notes.txt", b"t"),
            ("data/cats/.hidden.png", b"h"),
            ("data/__MACOSX/cats/._1.png", b"m"),
            ("data/dogs/1.JPG", b"d"),
        ]
    )
    reasons = skipped_reasons(dataset)

    assert dataset.paths == ["cats/1.png", "dogs/1.JPG"]
    assert "unsupported file type" in reasons["data/cats/notes.txt"]
    assert "hidden or system" in reasons["data/cats/.hidden.png"]
    assert "hidden or system" in reasons["data/__MACOSX/cats/._1.png"]


# --- zip archives ------------------------------------------------------------------------------

LAYOUT = [
    "data/cats/1.png",
    "data/cats/2.JPG",
    "data/cats/indoor/3.png",
    "data/dogs/1.png",
    "data/dogs/notes.txt",
    "data/birds/",
]


def test_zip_with_a_wrapper_folder_scans_like_the_folder(tmp_path):
    source = make_tree(tmp_path / "src", LAYOUT)
    archive = zip_folder(source, tmp_path / "upload.zip")

    from_folder = scan_folder(source)
    from_zip = scan_zip(archive)

    assert from_zip.class_names == from_folder.class_names == ["cats", "dogs"]
    assert labelled(from_zip) == labelled(from_folder)
    assert from_zip.skipped == from_folder.skipped
    assert skipped_reasons(from_zip)["data/birds/"] == "class folder has no images"
    for zip_item, file_item in zip(from_zip.items, from_folder.items, strict=True):
        assert isinstance(zip_item.source, ZipMember)
        assert zip_item.read_bytes() == file_item.read_bytes()


def test_zip_members_are_read_only_when_asked_for(tmp_path, monkeypatch):
    archive = zip_folder(make_tree(tmp_path / "src", LAYOUT), tmp_path / "upload.zip")

    def no_reading(*args, **kwargs):
        raise AssertionError("scan_zip read a member's data")

    with monkeypatch.context() as patch:
        patch.setattr(zipfile.ZipFile, "open", no_reading)
        dataset = scan_zip(archive)

    member = dataset.items[0].source
    assert member == ZipMember(archive, "data/cats/1.png")
    assert member.read_bytes() == b"1.png"


def test_dangerous_zip_members_are_each_skipped_with_a_reason(tmp_path):
    archive = tmp_path / "upload.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("data/cats/1.png", b"c")
        zf.writestr("data/dogs/1.png", b"d")
        zf.writestr("data/../escape.png", b"evil")
        zf.writestr("../../outside/cats/2.png", b"evil")
        zf.writestr("/etc/cats/3.png", b"evil")
        zf.writestr("C:/cats/4.png", b"evil")
        link = zipfile.ZipInfo("data/cats/link.png")
        link.external_attr = 0o120777 << 16
        zf.writestr(link, "../../../etc/passwd")
        zf.writestr("data/cats/more.zip", b"PK\x05\x06" + bytes(18))
        zf.writestr("__MACOSX/data/cats/._1.png", b"junk")
    assert [info.filename for info in zipfile.ZipFile(archive).infolist()][2:5] == [
        "data/../escape.png",
        "../../outside/cats/2.png",
        "/etc/cats/3.png",
    ]  # names are stored as written

    dataset = scan_zip(archive)
    reasons = skipped_reasons(dataset)

    assert dataset.class_names == ["cats", "dogs"]
    assert dataset.paths == ["cats/1.png", "dogs/1.png"]
    for name in (
        "data/../escape.png",
        "../../outside/cats/2.png",
        "/etc/cats/3.png",
        "C:/cats/4.png",
    ):
        assert "unsafe path" in reasons[name], name
    assert "symlink" in reasons["data/cats/link.png"]
    assert "nested archive" in reasons["data/cats/more.zip"]
    assert "hidden or system" in reasons["__MACOSX/data/cats/._1.png"]


def test_a_file_that_is_not_a_zip_raises_a_clear_archive_error(tmp_path):
    fake = tmp_path / "photos.zip"
    fake.write_text("this is not a zip file")

    with pytest.raises(ArchiveError, match=r"photos\.zip: not a readable zip archive"):
        scan_zip(fake)
    with pytest.raises(ArchiveError, match="not a readable zip archive"):
        scan(fake)


def test_scan_picks_folder_or_zip_and_refuses_missing_paths(tmp_path):
    source = make_tree(tmp_path / "src", LAYOUT)
    archive = zip_folder(source, tmp_path / "UPLOAD.ZIP")

    assert labelled(scan(source)) == labelled(scan_folder(source))
    from_zip = scan(archive)
    assert all(isinstance(item.source, ZipMember) for item in from_zip.items)
    assert labelled(from_zip) == labelled(scan_folder(source))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        scan(tmp_path / "missing")
    with pytest.raises(NotADirectoryError):
        scan_folder(tmp_path / "UPLOAD.ZIP")
