"""Each session's uploads live in a private temporary folder that is removed afterwards."""

from __future__ import annotations

import gc
import io
import zipfile

from probe_core.workspace import SessionWorkspace
from tests.conftest import pattern_image


def png(class_index: int, variant: int) -> bytes:
    buffer = io.BytesIO()
    pattern_image(class_index, variant).save(buffer, "PNG")
    return buffer.getvalue()


def test_uploaded_files_keep_their_class_folders_and_wrapper_is_dropped():
    workspace = SessionWorkspace()
    files = [
        (f"picked/{c}/{i}.png", png(k, i)) for k, c in enumerate(["cats", "dogs"]) for i in range(3)
    ]
    dataset = workspace.add_files(files)
    assert dataset.class_names == ["cats", "dogs"]
    assert len(dataset) == 6
    assert all(str(item.source).startswith(str(workspace.path)) for item in dataset.items)
    workspace.close()


def test_unsafe_and_duplicate_upload_names_are_skipped_not_written(tmp_path):
    workspace = SessionWorkspace(parent=tmp_path)
    files = [
        ("a/1.png", png(0, 0)),
        ("b/1.png", png(1, 0)),
        ("../evil.png", b"x"),
        ("/abs/evil.png", b"x"),
        ("a/1.png", png(0, 1)),
    ]
    dataset = workspace.add_files(files)
    reasons = {s.path: s.reason for s in dataset.skipped}
    assert "unsafe path" in reasons["../evil.png"] and "unsafe path" in reasons["/abs/evil.png"]
    assert reasons["a/1.png"] == "duplicate path in upload"
    written = sorted(
        p.relative_to(workspace.path).as_posix() for p in workspace.path.rglob("*.png")
    )
    assert written == ["upload-1/a/1.png", "upload-1/b/1.png"]
    assert not (tmp_path / "evil.png").exists()


def test_typed_classes_become_class_folders():
    workspace = SessionWorkspace()
    dataset = workspace.add_classes(
        {"thumbs up": [("x.png", png(0, 0)), ("y.png", png(0, 1))], "a/b": [("z.png", png(1, 0))]}
    )
    assert dataset.class_names == ["a_b", "thumbs up"]
    assert dataset.class_counts() == {"a_b": 1, "thumbs up": 2}


def test_zip_uploads_are_kept_in_the_workspace_and_scanned():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for k, name in enumerate(["x", "y"]):
            archive.writestr(f"set/{name}/0.png", png(k, 0))
            archive.writestr(f"set/{name}/1.png", png(k, 1))
    workspace = SessionWorkspace()
    dataset = workspace.add_zip("set.zip", buffer.getvalue())
    assert dataset.class_names == ["x", "y"] and len(dataset) == 4
    assert (workspace.path / "zip-1" / "set.zip").is_file()


def test_two_workspaces_are_separate_and_removed_on_close_or_collection(tmp_path):
    first, second = SessionWorkspace(parent=tmp_path), SessionWorkspace(parent=tmp_path)
    first.add_files([("a/1.png", png(0, 0))])
    second.add_files([("b/1.png", png(1, 0))])
    assert first.path != second.path
    assert not list(second.path.rglob("a"))
    first_path, second_path = first.path, second.path
    first.close()
    assert not first_path.exists() and first.closed
    del second
    gc.collect()
    assert not second_path.exists()


def test_a_new_upload_replaces_the_previous_one_on_disk():
    workspace = SessionWorkspace()
    first = workspace.add_files([("a/1.png", png(0, 0)), ("b/1.png", png(1, 0))])
    second = workspace.add_files([("c/1.png", png(0, 1)), ("d/1.png", png(1, 1))])
    assert second.class_names == ["c", "d"]
    assert not first.items[0].source.exists()
    assert [p.name for p in workspace.path.iterdir()] == ["upload-2"]
    workspace.close()
