"""Predict & export: the ONNX classifier download (the files of `probe-studio export RUN_DIR
--format onnx`, as one zip named after the dataset and encoder), and the reason where a probe
cannot become one. Each test uploads a small generated folder in its own session."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import onnxruntime
import pytest
from PIL import Image

from probe_core.onnx_export import ONNX_OUTPUTS, card_pixels
from tests.test_app import (
    PREDICT,
    app_env,  # noqa: F401  (the module's private cache, media record and session folders)
    assert_ok,
    button,
    download,
    folder_upload,
    new_app,
    open_page,
    run_probe,
    study,
    uploader,
    values,
)

CLASSES = ["blue", "green", "red"]


def noisy_upload(per_class: int = 6) -> list[tuple[str, bytes, str]]:
    """``data/<class>/<image>.png``: seeded noise tinted by class, distinct under any encoder
    (the pattern images look alike to the pixel baseline's 16x16 squash)."""
    rng = np.random.default_rng(0)
    files = []
    for index, name in enumerate(CLASSES):
        for variant in range(per_class):
            pixels = rng.integers(0, 160, (40, 48, 3), dtype=np.uint8)
            pixels[..., index] += 95
            buffer = io.BytesIO()
            Image.fromarray(pixels).save(buffer, "PNG")
            files.append((f"data/{name}/{name}_{variant}.png", buffer.getvalue(), "image/png"))
    return files


def uploaded_run(encoder: str | None = None):
    """A session that uploaded 3 classes of 6 generated images and ran the probe."""
    at = new_app()
    files = folder_upload(CLASSES) if encoder is None else noisy_upload()
    uploader(at, "browse_").set_value(files).run()
    assert_ok(at)
    if encoder is not None:
        at.text_input(key="custom_encoder").set_value(encoder)  # any name, typed
    return run_probe(at)


@pytest.mark.slow
def test_the_onnx_classifier_is_built_on_request_checked_and_downloaded(app_env, monkeypatch):  # noqa: F811
    monkeypatch.setattr("probe_core.onnx_export.DEFAULT_CHECK_IMAGES", 12)
    at = open_page(uploaded_run(), PREDICT)
    assert "Classifier (ONNX, zip)" not in [d.label for d in at.get("download_button")]
    assert any("building it takes a minute or more" in c for c in values(at.caption))

    button(at, "Build the ONNX classifier").click().run()
    assert_ok(at)
    assert [s.label for s in at.status] == ["The ONNX classifier is ready"]
    assert "Build the ONNX classifier" not in [b.label for b in at.button]  # built: gone
    name, data = download(at, app_env.media, "Classifier (ONNX, zip)")
    assert name == "upload_efficientnet-lite0_onnx.zip"  # download_stem: dataset and encoder
    archive = zipfile.ZipFile(io.BytesIO(data))
    assert sorted(archive.namelist()) == sorted(ONNX_OUTPUTS)
    card = json.loads(archive.read("classifier.json"))
    assert card["classes"] == CLASSES
    assert card["encoder_id"] == study(at).embeddings.encoder_id
    assert card["self_check"]["passed"] and card["self_check"]["n_images"] == 12
    shown = [c for c in values(at.caption) if c.startswith("Holds classifier.onnx")]
    assert len(shown) == 1 and "Self-check passed: on 12 of the run's images" in shown[0]
    assert "onnxruntime-web" in archive.read("README.md").decode()

    # The zip's graph classifies the uploaded images as the session's probe does.
    session = onnxruntime.InferenceSession(archive.read("classifier.onnx"))
    current = study(at)
    items = current.dataset.items
    pixels = np.stack([card_pixels(item.read_bytes(), card["input"]) for item in items])
    probabilities, _ = session.run(None, {"pixels": pixels})
    vectors = dict(zip(current.embeddings.paths, current.embeddings.vectors, strict=True))
    from probe_core.export import read_probe_file

    _, probe_file = download(at, app_env.media, "Probe (safetensors)")
    expected = read_probe_file(probe_file).predict_proba(np.stack([vectors[i.path] for i in items]))
    assert np.mean(probabilities.argmax(axis=1) == expected.argmax(axis=1)) >= 0.99

    open_page(at, "app_pages/results.py")
    open_page(at, PREDICT)  # built once per session: no second build on the way back
    assert "Build the ONNX classifier" not in [b.label for b in at.button]
    assert download(at, app_env.media, "Classifier (ONNX, zip)")[1] == data


def test_a_weight_free_baseline_says_why_it_has_no_onnx_classifier():
    at = open_page(uploaded_run("baseline:pixels"), PREDICT)
    assert "Build the ONNX classifier" not in [b.label for b in at.button]
    [reason] = [i for i in values(at.info) if i.startswith("ONNX export is not available")]
    assert "baseline:pixels is a weight-free baseline" in reason and "16x16" in reason
