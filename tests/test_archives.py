"""Hostile zip archives: limits are checked on the central directory, before anything is read."""

from __future__ import annotations

import io
import struct
import zipfile

import pytest

from probe_core import dataset as dataset_module
from probe_core.dataset import ArchiveError, scan_zip
from probe_core.embed import extract_embeddings
from tests.conftest import pattern_image


def png(class_index: int = 0, variant: int = 0) -> bytes:
    buffer = io.BytesIO()
    pattern_image(class_index, variant).save(buffer, "PNG")
    return buffer.getvalue()


def write_zip(path, members: dict[str, bytes], compression=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def good_members() -> dict[str, bytes]:
    return {f"{c}/{i}.png": png(k, i) for k, c in enumerate(["a", "b"]) for i in range(3)}


def test_too_many_entries_are_refused_before_reading(tmp_path, monkeypatch):
    monkeypatch.setattr(dataset_module, "MAX_ARCHIVE_MEMBERS", 5)
    archive = write_zip(tmp_path / "many.zip", good_members())
    with pytest.raises(ArchiveError, match="6 entries exceeds the limit of 5"):
        scan_zip(archive)


def test_total_uncompressed_size_is_limited_before_reading(tmp_path, monkeypatch):
    monkeypatch.setattr(dataset_module, "MAX_ARCHIVE_TOTAL_BYTES", 1024)
    archive = write_zip(tmp_path / "big.zip", good_members())
    with pytest.raises(ArchiveError, match=r"uncompressed size .* exceeds the limit"):
        scan_zip(archive)


def test_a_highly_compressed_member_is_skipped_as_a_possible_bomb(tmp_path):
    members = good_members() | {"a/bomb.png": b"\x00" * 5_000_000}
    archive = write_zip(tmp_path / "bomb.zip", members, compression=zipfile.ZIP_DEFLATED)
    dataset = scan_zip(archive)
    reasons = {s.path: s.reason for s in dataset.skipped}
    assert "zip bomb" in reasons["a/bomb.png"]
    assert len(dataset) == 6


def test_an_oversized_member_is_skipped(tmp_path, monkeypatch):
    monkeypatch.setattr(dataset_module, "MAX_MEMBER_BYTES", 100)
    dataset = scan_zip(write_zip(tmp_path / "x.zip", good_members()))
    reasons = {s.path: s.reason for s in dataset.skipped}
    assert all("member too large" in reasons[name] for name in good_members())
    assert len(dataset) == 0


def test_a_member_whose_header_understates_its_size_is_never_inflated(tmp_path, encoder):
    """Reading stops at the declared size, so a lying header yields an error, not a bomb."""
    path = write_zip(
        tmp_path / "liar.zip",
        good_members() | {"a/liar.png": png(0, 9) * 50},
        compression=zipfile.ZIP_DEFLATED,
    )
    raw = bytearray(path.read_bytes())
    name = b"a/liar.png"
    for signature, size_offset in ((b"PK\x01\x02", 24), (b"PK\x03\x04", 22)):
        start = raw.find(signature + b"")
        while start != -1:
            name_length = struct.unpack_from(
                "<H", raw, start + (28 if signature == b"PK\x01\x02" else 26)
            )[0]
            name_start = start + (46 if signature == b"PK\x01\x02" else 30)
            if raw[name_start : name_start + name_length] == name:
                struct.pack_into("<I", raw, start + size_offset, 10)  # claim 10 bytes
            start = raw.find(signature, start + 4)
    path.write_bytes(bytes(raw))
    dataset = scan_zip(path)
    embedded = extract_embeddings(dataset, encoder, num_workers=0)
    reasons = {s.path: s.reason for s in embedded.skipped}
    assert "damaged archive member" in reasons["a/liar.png"]
    assert len(embedded) == 6


def test_encrypted_members_are_skipped(tmp_path):
    path = write_zip(tmp_path / "enc.zip", good_members())
    raw = bytearray(path.read_bytes())
    first_central = raw.find(b"PK\x01\x02")
    struct.pack_into("<H", raw, first_central + 8, 0x1)  # general purpose flag: encrypted
    path.write_bytes(bytes(raw))
    dataset = scan_zip(path)
    assert any(s.reason == "encrypted archive member" for s in dataset.skipped)


def test_scanning_a_zip_writes_nothing(tmp_path):
    archive = write_zip(tmp_path / "set.zip", good_members() | {"../../escape.png": png()})
    before = sorted(p.name for p in tmp_path.rglob("*"))
    dataset = scan_zip(archive)
    for item in dataset.items:
        item.read_bytes()
    assert sorted(p.name for p in tmp_path.rglob("*")) == before
    assert not (tmp_path.parent / "escape.png").exists()
