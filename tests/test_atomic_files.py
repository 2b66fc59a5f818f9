"""A file is written whole or not at all (probe_core/atomic_files.py): the embedding cache's
shards, the result cache's entries and the stored path decisions all go through it."""

from __future__ import annotations

import pytest

from probe_core.atomic_files import TEMP_PREFIX, TEMP_SUFFIX, write_atomically


def test_the_content_replaces_the_target_and_no_temporary_file_is_left(tmp_path):
    target = tmp_path / "decision.json"
    target.write_text("old")
    assert write_atomically(target, lambda handle: handle.write("new"), text=True) == target
    assert target.read_text(encoding="utf-8") == "new"
    write_atomically(target, lambda handle: handle.write(b"\x00\x01"))
    assert target.read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["decision.json"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary_file(tmp_path):
    target = tmp_path / "shard.npz"
    target.write_bytes(b"complete")

    def half_then_fail(handle):
        handle.write(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        write_atomically(target, half_then_fail)
    assert target.read_bytes() == b"complete"
    assert list(tmp_path.glob(f"{TEMP_PREFIX}*{TEMP_SUFFIX}")) == []


def test_a_failed_rename_leaves_no_temporary_file(tmp_path):
    occupied = tmp_path / "entry"
    occupied.mkdir()
    (occupied / "inside").write_text("x")  # a non-empty folder cannot be replaced by a file
    with pytest.raises(OSError):
        write_atomically(occupied, lambda handle: handle.write(b"data"))
    assert list(tmp_path.glob(f"{TEMP_PREFIX}*{TEMP_SUFFIX}")) == []
