"""Server-side folders are confined to the configured roots."""

from __future__ import annotations

import os

import pytest

from probe_core.roots import (
    DEMO_ROOT,
    ROOTS_ENV,
    FolderNotAllowedError,
    configured_roots,
    resolve_server_folder,
    resolve_server_path,
)


@pytest.fixture
def root(tmp_path):
    allowed = tmp_path / "allowed"
    (allowed / "cats_and_dogs").mkdir(parents=True)
    (tmp_path / "secret").mkdir()
    return allowed


def test_default_root_is_only_the_bundled_demo(monkeypatch):
    monkeypatch.delenv(ROOTS_ENV, raising=False)
    assert configured_roots() == [DEMO_ROOT]
    assert resolve_server_folder(str(DEMO_ROOT)) == DEMO_ROOT.resolve()


def test_roots_come_from_the_environment(monkeypatch, root, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    monkeypatch.setenv(ROOTS_ENV, f"{root}{os.pathsep}{other}")
    assert configured_roots() == [root.resolve(), other.resolve()]


def test_folders_under_a_root_are_allowed_absolute_or_relative(root):
    inside = root / "cats_and_dogs"
    assert resolve_server_folder(str(inside), [root]) == inside.resolve()
    assert resolve_server_folder("cats_and_dogs", [root]) == inside.resolve()
    assert resolve_server_folder(str(root), [root]) == root.resolve()


@pytest.mark.parametrize(
    ("requested", "reason"),
    [
        ("../secret", "'..' is not allowed"),
        ("cats_and_dogs/../../secret", "'..' is not allowed"),
        ("~", "home-folder paths"),
        ("~/anything", "home-folder paths"),
        ("/etc", "outside the allowed server folders"),
        ("", "no folder given"),
        ("does_not_exist", "no such folder"),
    ],
)
def test_paths_that_leave_the_roots_are_refused(root, requested, reason):
    with pytest.raises(FolderNotAllowedError, match=reason):
        resolve_server_folder(requested, [root])


def test_a_symlink_escaping_the_root_is_refused(root, tmp_path):
    (root / "escape").symlink_to(tmp_path / "secret")
    with pytest.raises(FolderNotAllowedError, match="outside the allowed"):
        resolve_server_folder("escape", [root])
    with pytest.raises(FolderNotAllowedError, match="outside the allowed"):
        resolve_server_folder(str(root / "escape"), [root])


def test_a_file_is_not_a_folder(root):
    (root / "file.txt").write_text("x")
    with pytest.raises(FolderNotAllowedError, match="not a folder"):
        resolve_server_folder("file.txt", [root])


def test_the_refusal_names_the_allowed_folders_and_the_setting(root):
    with pytest.raises(FolderNotAllowedError) as refused:
        resolve_server_folder("/etc", [root])
    assert str(root.resolve()) in str(refused.value) and ROOTS_ENV in str(refused.value)


def test_a_file_under_a_root_resolves_but_is_not_a_folder(tmp_path):
    target = tmp_path / "embeddings.parquet"
    target.write_bytes(b"x")
    assert resolve_server_path(str(target), [tmp_path]) == target.resolve()
    assert resolve_server_path("embeddings.parquet", [tmp_path]) == target.resolve()
    with pytest.raises(FolderNotAllowedError, match="is not a folder"):
        resolve_server_folder(str(target), [tmp_path])
    with pytest.raises(FolderNotAllowedError, match="no such file or folder"):
        resolve_server_path(str(tmp_path / "missing.parquet"), [tmp_path])
