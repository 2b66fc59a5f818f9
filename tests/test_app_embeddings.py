"""The Data page's "Open embeddings" source, driven headless with AppTest: a Parquet file of
``path, label, vector`` (uploaded, or a file on the server under the allowed roots) is probed
and mapped like images; thumbnails appear when the paths resolve under the roots, else the
page says why; a malformed file or a path outside the roots is refused with a clear error."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from probe_core.dataset import scan_folder
from probe_core.embed import extract_embeddings
from probe_core.embeddings_io import embeddings_metadata, read_embeddings, write_parquet
from probe_core.export import embeddings_table
from probe_core.roots import ROOTS_ENV
from probe_core.study import Study
from studio import shared
from tests.conftest import write_image_folder
from tests.test_app import (
    app_env,  # noqa: F401  (the module fixture: private caches, no operator roots)
    assert_ok,
    button,
    chart,
    metrics,
    new_app,
    open_page,
    run_probe,
    study,
    uploader,
    values,
)


def parquet_bytes(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def synthetic_frame(paths: list[str], n_classes: int = 3, dim: int = 8) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    labels = np.arange(len(paths)) % n_classes
    vectors = rng.normal(size=(len(paths), dim)) + 2 * np.eye(n_classes, dim)[labels]
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return pd.DataFrame(
        {"path": paths, "label": [f"class {i}" for i in labels], "vector": list(vectors)}
    )


def open_server_path(at, path: Path | str):
    at.text_input(key="embeddings_path").set_value(str(path))
    button(at, "Open embeddings").click().run()
    assert_ok(at)
    return at


@pytest.fixture
def embedded_folder(tmp_path, monkeypatch, encoder):
    """A folder under an operator root, embedded, its ``embeddings.parquet`` beside it."""
    root = tmp_path / "shared"
    folder = write_image_folder(root / "images", {"red": 6, "green": 6, "blue": 6})
    embeddings = extract_embeddings(scan_folder(folder), encoder, num_workers=0)
    parquet = write_parquet(
        embeddings_table(embeddings), root / "embeddings.parquet", embeddings_metadata(embeddings)
    )
    monkeypatch.setenv(ROOTS_ENV, str(root))
    return parquet


def test_a_server_embeddings_file_is_probed_and_mapped_with_thumbnails(embedded_folder):
    at = open_server_path(new_app(), embedded_folder)
    assert not at.error
    current = study(at)
    assert current.precomputed and values(at.subheader)[0].startswith("Embeddings: ")
    assert metrics(at) == {"Embeddings": "18", "Classes": "3", "Dimensions": "1280"}
    assert not [i for i in values(at.info) if i.startswith("No thumbnails")]

    run_probe(at)
    result = study(at).result
    expected = Study(study(at).settings).evaluate(read_embeddings(embedded_folder))
    assert result.metrics.accuracy.value == expected.metrics.accuracy.value
    assert len(result.evaluated) == len(expected.evaluated) == 18  # cv: every row scored

    thumbs = shared.thumbnails_for(study(at), [0, 17])
    assert set(thumbs) == {0, 17} and all(uri.startswith("data:image") for uri in thumbs.values())

    open_page(at, "app_pages/map.py")
    assert len(chart(at, "map")["data"]) >= 3  # one trace per class
    assert any("Hover a point for its thumbnail" in c for c in values(at.caption))


def test_uploaded_embeddings_whose_images_are_elsewhere_say_why_there_are_no_thumbnails():
    at = new_app()
    frame = synthetic_frame([f"/data/elsewhere/{i}.jpg" for i in range(30)])
    uploader(at, "embeddings_upload").set_value(
        [("other-tool.parquet", parquet_bytes(frame), "application/octet-stream")]
    ).run()
    assert_ok(at)
    assert metrics(at) == {"Embeddings": "30", "Classes": "3", "Dimensions": "8"}
    (reason,) = [i for i in values(at.info) if i.startswith("No thumbnails")]
    assert "not on this server" in reason and "/data/elsewhere/0.jpg" in reason

    run_probe(at)
    assert study(at).result.metrics.accuracy.value > 0.5
    open_page(at, "app_pages/map.py")
    assert any(c.startswith("No thumbnails:") for c in values(at.caption))
    open_page(at, "app_pages/predict_export.py")
    assert not at.error


def test_a_malformed_embeddings_file_is_refused_naming_the_file_and_the_reason():
    at = new_app()
    frame = synthetic_frame([f"x/{i}.png" for i in range(6)]).drop(columns="vector")
    uploader(at, "embeddings_upload").set_value(
        [("broken.parquet", parquet_bytes(frame), "application/octet-stream")]
    ).run()
    assert_ok(at)
    (error,) = values(at.error)
    assert "broken.parquet" in error and "missing column(s) vector" in error
    assert study(at).label == shared.DEMO_LABEL  # the demo is still loaded


def test_an_embeddings_file_with_one_class_is_refused():
    at = new_app()
    frame = synthetic_frame([f"x/{i}.png" for i in range(6)], n_classes=1)
    uploader(at, "embeddings_upload").set_value(
        [("one.parquet", parquet_bytes(frame), "application/octet-stream")]
    ).run()
    assert_ok(at)
    (error,) = values(at.error)
    assert "one.parquet" in error and "only one class" in error


def test_an_embeddings_path_outside_the_allowed_roots_is_refused(tmp_path):
    target = tmp_path / "e.parquet"
    target.write_bytes(parquet_bytes(synthetic_frame([f"{i}.png" for i in range(6)])))
    at = open_server_path(new_app(), target)
    (error,) = values(at.error)
    assert "outside the allowed server folders" in error
    assert study(at).label == shared.DEMO_LABEL


def test_the_compare_page_compares_the_opened_embeddings_with_another_file(tmp_path, monkeypatch):
    monkeypatch.setenv(ROOTS_ENV, str(tmp_path))
    paths = [f"images/{i}.png" for i in range(60)]
    first, second = tmp_path / "a.parquet", tmp_path / "b.parquet"
    first.write_bytes(parquet_bytes(synthetic_frame(paths)))
    noisy = synthetic_frame(paths)
    noisy["vector"] = list(np.random.default_rng(1).normal(size=(60, 8)))  # no signal at all
    second.write_bytes(parquet_bytes(noisy))

    at = open_server_path(new_app(), first)
    open_page(at, "app_pages/compare.py")
    at.text_area[0].set_value(str(second))
    button(at, "Compare").click().run()
    assert_ok(at)
    assert not at.error
    run = at.session_state["comparison_run"]
    assert list(run.outcome.comparison.names) == ["precomputed:a.parquet", "precomputed:b.parquet"]
    scored = [result.metrics.accuracy.value for result in run.outcome.comparison.results.values()]
    assert scored[0] > scored[1]
    assert any("is better" in m or "better by" in m for m in values(at.markdown))
    assert any("carry no text tower" in c for c in values(at.caption))


def test_the_compare_page_refuses_a_malformed_extra_file(tmp_path, monkeypatch):
    monkeypatch.setenv(ROOTS_ENV, str(tmp_path))
    good = tmp_path / "a.parquet"
    good.write_bytes(parquet_bytes(synthetic_frame([f"{i}.png" for i in range(30)])))
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet")
    at = open_server_path(new_app(), good)
    open_page(at, "app_pages/compare.py")
    at.text_area[0].set_value(str(bad))
    button(at, "Compare").click().run()
    assert_ok(at)
    (error,) = values(at.error)
    assert "bad.parquet" in error and "not a Parquet file" in error


def test_images_loaded_after_embeddings_run_with_an_image_encoder_again(tmp_path, monkeypatch):
    monkeypatch.setenv(ROOTS_ENV, str(tmp_path))
    target = tmp_path / "a.parquet"
    target.write_bytes(parquet_bytes(synthetic_frame([f"{i}.png" for i in range(30)])))
    at = open_server_path(new_app(), target)
    assert study(at).settings.encoder == "precomputed:a.parquet"
    button(at, "Use the demo").click().run()
    assert_ok(at)
    assert study(at).settings.encoder == shared.StudySettings().encoder
    run_probe(at)
    assert not at.error and study(at).result is not None


def test_the_compare_page_takes_several_uploaded_files_at_once(tmp_path, monkeypatch):
    """Each upload is read before the next replaces it in the session's folder."""
    monkeypatch.setenv(ROOTS_ENV, str(tmp_path))
    paths = [f"images/{i}.png" for i in range(60)]
    first = tmp_path / "a.parquet"
    first.write_bytes(parquet_bytes(synthetic_frame(paths)))
    others = []
    for seed in (1, 2):
        frame = synthetic_frame(paths)
        frame["vector"] = list(np.random.default_rng(seed).normal(size=(60, 8)))
        others.append((f"other{seed}.parquet", parquet_bytes(frame), "application/octet-stream"))

    at = open_server_path(new_app(), first)
    open_page(at, "app_pages/compare.py")
    at.file_uploader[0].set_value(others)
    button(at, "Compare").click().run()
    assert_ok(at)
    assert not at.error
    names = list(at.session_state["comparison_run"].outcome.comparison.names)
    assert names == [
        "precomputed:a.parquet",
        "precomputed:other1.parquet",
        "precomputed:other2.parquet",
    ]
