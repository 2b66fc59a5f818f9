"""Thumbnails for precomputed embeddings: paths resolve to files only under the allowed roots,
one at a time; when none can, the lookup says why."""

from __future__ import annotations

from pathlib import Path

from probe_core.dataset import scan_folder
from probe_core.image_lookup import ImageLookup
from tests.conftest import write_image_folder


def test_relative_paths_resolve_against_the_image_folder_under_a_root(tmp_path):
    folder = write_image_folder(tmp_path / "images", {"cats": 2, "dogs": 2})
    paths = [item.path for item in scan_folder(folder).items]
    lookup = ImageLookup.from_paths(paths, folder, roots=[tmp_path])
    assert lookup.reason is None
    assert lookup.resolve(paths[0]) == (folder / paths[0]).resolve()
    assert lookup.read(paths[0]) == (folder / paths[0]).read_bytes()
    assert lookup.thumbnail_uri(paths[0]).startswith("data:image/jpeg;base64,")


def test_absolute_paths_resolve_without_an_image_folder(tmp_path):
    folder = write_image_folder(tmp_path / "images", {"cats": 2, "dogs": 2})
    paths = [str(p) for p in sorted(folder.rglob("*.png"))]
    lookup = ImageLookup.from_paths(paths, roots=[tmp_path])
    assert lookup.reason is None
    assert lookup.read(paths[-1]) == Path(paths[-1]).read_bytes()


def test_relative_paths_without_an_image_folder_say_the_folder_is_unknown(tmp_path):
    lookup = ImageLookup.from_paths(["cats/0.png", "dogs/1.png"], roots=[tmp_path])
    assert "relative (e.g. 'cats/0.png')" in lookup.reason
    assert "give it to see thumbnails" in lookup.reason
    assert lookup.read("cats/0.png") is None and lookup.thumbnail_uri("cats/0.png") is None


def test_images_outside_the_allowed_roots_are_never_read_and_the_reason_names_the_roots(
    tmp_path,
):
    folder = write_image_folder(tmp_path / "private", {"cats": 2, "dogs": 2})
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    paths = [str(p) for p in sorted(folder.rglob("*.png"))]
    lookup = ImageLookup.from_paths(paths, roots=[allowed])
    assert "outside the allowed server folders" in lookup.reason
    assert str(allowed.resolve()) in lookup.reason
    assert "PROBE_STUDIO_SERVER_ROOTS" in lookup.reason
    assert all(lookup.read(path) is None for path in paths)


def test_a_symlink_out_of_the_root_and_dot_dot_paths_are_refused(tmp_path):
    outside = write_image_folder(tmp_path / "outside", {"cats": 1, "dogs": 1})
    root = tmp_path / "root"
    root.mkdir()
    (root / "link.png").symlink_to(next(outside.rglob("*.png")))
    lookup = ImageLookup.from_paths(["link.png"], root, roots=[root])
    assert lookup.resolve("link.png") is None
    assert lookup.resolve("../outside/cats/0.png") is None


def test_missing_files_say_they_are_not_on_this_server(tmp_path):
    lookup = ImageLookup.from_paths(["/no/such/dir/a.png"], roots=[tmp_path])
    assert "not on this server" in lookup.reason and "/no/such/dir/a.png" in lookup.reason


def test_a_dataset_lookup_reads_its_own_items(tmp_path):
    dataset = scan_folder(write_image_folder(tmp_path / "images", {"cats": 2, "dogs": 2}))
    lookup = ImageLookup.from_dataset(dataset)
    assert lookup.reason is None
    assert lookup.read(dataset.items[0].path) == dataset.items[0].read_bytes()
    assert lookup.read("not/there.png") is None
