"""Probe export/import (safetensors and JSON, never pickle), prediction of new images, report."""

from __future__ import annotations

import io
import json
import pickle
import re

import numpy as np
import pytest

from probe_core.dataset import scan_blobs, scan_folder
from probe_core.embed import extract_embeddings
from probe_core.evaluation.protocols import probe_on_all_images, run_probe
from probe_core.export import (
    PROBE_OUTPUTS,
    ProbeFileError,
    ProbeWeights,
    probe_to_json,
    probe_to_safetensors,
    probe_weights,
    read_probe,
    read_probe_file,
    write_probe_files,
)
from probe_core.predict import ProbeMismatchError, predict_images
from probe_core.probe import LinearProbe
from probe_core.projection import project
from probe_core.report import html_report
from probe_core.result_cache import ResultCache
from probe_core.study import Study, StudySettings
from tests.conftest import pattern_image
from tests.test_probe import clustered_embeddings


@pytest.mark.parametrize("counts", [[20, 20, 20], [20, 20]])
def test_exported_probe_reproduces_the_fitted_probabilities(counts):
    embeddings = clustered_embeddings(counts)
    result = run_probe(embeddings, seed=0)
    weights = ProbeWeights.from_estimator(
        result.probe, result.class_names, "enc-id", encoder_name="enc"
    )
    expected = result.probe.predict_proba(embeddings.vectors)
    for data in (probe_to_safetensors(weights), probe_to_json(weights).encode()):
        loaded = read_probe_file(data)
        assert loaded.class_names == result.class_names and loaded.encoder_id == "enc-id"
        assert loaded.chosen_c == result.chosen_c and loaded.encoder_name == "enc"
        np.testing.assert_allclose(loaded.predict_proba(embeddings.vectors), expected, atol=1e-4)


@pytest.mark.parametrize("protocol", ["cv", "holdout"])
def test_the_probe_file_holds_everything_needed_to_use_and_trust_it(tmp_path, protocol):
    embeddings = clustered_embeddings([12, 9, 15])
    result = run_probe(embeddings, protocol=protocol, seed=0)
    probe = probe_on_all_images(embeddings, result)
    weights = probe_weights(
        embeddings,
        result,
        probe,
        encoder_name="enc",
        execution_path="fp32+channels_last",
        preprocess_id="abc123",
    )
    assert weights.images_per_class == {"class_0": 12, "class_1": 9, "class_2": 15}
    assert weights.protocol["name"] == protocol and weights.chosen_c == result.chosen_c
    written = write_probe_files(tmp_path, weights)
    assert [path.name for path in written] == list(PROBE_OUTPUTS)
    for loaded in (read_probe(tmp_path), *(read_probe(path) for path in written)):
        np.testing.assert_array_equal(loaded.coef, weights.coef)
        np.testing.assert_array_equal(loaded.intercept, weights.intercept)
        assert loaded.class_names == weights.class_names
        assert (loaded.encoder_id, loaded.encoder_name) == ("test", "enc")
        assert loaded.execution_path == "fp32+channels_last"
        assert loaded.preprocess_id == "abc123" and loaded.chosen_c == result.chosen_c
        assert loaded.images_per_class == weights.images_per_class
        assert loaded.protocol == json.loads(json.dumps(weights.protocol))
        accuracy = loaded.metrics["accuracy"]
        assert accuracy["value"] == result.metrics.accuracy.value
        assert (accuracy["low"], accuracy["high"]) == (
            result.metrics.accuracy.low,
            result.metrics.accuracy.high,
        )
        assert loaded.metrics["macro_f1"]["method"] == result.metrics.macro_f1.method
        assert loaded.created == weights.created and loaded.created.startswith("20")


def test_read_probe_names_the_folder_or_file_it_could_not_use(tmp_path):
    with pytest.raises(ProbeFileError, match=r"holds no probe\.safetensors or probe\.json"):
        read_probe(tmp_path)
    (tmp_path / "probe.json").write_text("{broken")
    with pytest.raises(ProbeFileError, match=r"probe\.json: not a probe JSON export"):
        read_probe(tmp_path)
    with pytest.raises(FileNotFoundError):
        read_probe(tmp_path / "missing.safetensors")


def test_the_shipped_probe_is_fitted_on_every_image_at_the_protocols_c():
    embeddings = clustered_embeddings([20, 20, 20], spread=1.2)
    cv = run_probe(embeddings, protocol="cv", seed=0)
    assert probe_on_all_images(embeddings, cv) is cv.probe  # cv's probe saw every image

    holdout = run_probe(embeddings, protocol="holdout", seed=0)
    assert len(holdout.train) < len(holdout.used)
    shipped = probe_on_all_images(embeddings, holdout)
    assert shipped.chosen_c_ == holdout.chosen_c
    expected = LinearProbe(C=holdout.chosen_c, seed=0).fit(embeddings.vectors, embeddings.labels)
    np.testing.assert_allclose(shipped.coef_, expected.coef_, rtol=1e-6)
    assert not np.allclose(shipped.coef_, holdout.probe.coef_)


def test_a_studys_refitted_probe_comes_from_the_result_cache_the_second_time(tmp_path, monkeypatch):
    embeddings = clustered_embeddings([20, 20, 20], spread=1.2)
    study = Study(StudySettings(protocol="holdout"), result_cache=ResultCache(tmp_path))
    result = study.evaluate(embeddings)
    first = study.final_probe(embeddings, result)

    def no_refit(*args):
        raise AssertionError("refitted although the result cache holds the probe")

    monkeypatch.setattr("probe_core.study.probe_on_all_images", no_refit)
    again = Study(StudySettings(protocol="holdout"), result_cache=ResultCache(tmp_path))
    np.testing.assert_array_equal(again.final_probe(embeddings, result).coef_, first.coef_)


def test_json_export_is_plain_data():
    result = run_probe(clustered_embeddings([10, 10, 10]), seed=0)
    document = json.loads(
        probe_to_json(ProbeWeights.from_estimator(result.probe, result.class_names, "enc"))
    )
    assert set(document) >= {"coef", "intercept", "class_names", "encoder_id", "chosen_c"}
    assert len(document["coef"]) == 3 and len(document["coef"][0]) == 16


def test_pickles_and_garbage_are_refused():
    class Payload:
        def __reduce__(self):
            return (print, ("pwned",))

    for data in (pickle.dumps(Payload()), b"\x00" * 64, b"{not json", b""):
        with pytest.raises(ProbeFileError):
            read_probe_file(data)


def test_new_images_are_embedded_like_training_images_and_predicted(encoder, image_folder):
    dataset = scan_folder(image_folder)
    embeddings = extract_embeddings(dataset, encoder, num_workers=0)
    result = run_probe(embeddings, seed=0)
    new = io.BytesIO()
    pattern_image(0, 500).save(new, "PNG")  # class 0 of write_image_folder is "red"
    weights = ProbeWeights.from_estimator(
        result.probe, result.class_names, encoder.encoder_id, encoder_name=encoder.name
    )
    predictions, skipped = predict_images(
        [("new.png", new.getvalue()), ("broken.png", b"not an image")], encoder, weights
    )
    assert [p.name for p in predictions] == ["new.png"]
    assert predictions[0].predicted == "red"
    np.testing.assert_allclose(predictions[0].probabilities.sum(), 1.0)
    assert skipped[0].path == "broken.png" and "not an image" in skipped[0].reason
    np.testing.assert_allclose(
        predictions[0].probabilities,
        result.probe.predict_proba(
            extract_embeddings(
                scan_blobs([("x/new.png", new.getvalue())]), encoder, num_workers=0
            ).vectors
        )[0],
        atol=1e-4,
    )
    foreign = ProbeWeights.from_estimator(
        result.probe, result.class_names, "open_clip:ViT-B-32/openai"
    )
    with pytest.raises(ProbeMismatchError, match="fitted on embeddings of open_clip"):
        predict_images([("new.png", new.getvalue())], encoder, foreign)


def test_html_report_is_standalone():
    embeddings = clustered_embeddings([10, 10, 10])
    result = run_probe(embeddings, seed=0)
    page = html_report(embeddings, result, project(embeddings.vectors, method="pca"), "My run")
    assert page.startswith("<!DOCTYPE html>") and "<title>My run</title>" in page
    assert page.count("plotly.js v") >= 1  # plotly.js inlined once, no CDN
    assert not re.search(r"<script[^>]*src=[\"']?https?:", page)  # nothing from the network
    assert "Confusion matrix" in page and "Choosing C" in page
    accuracy = result.metrics.accuracy
    assert f"{accuracy.value:.1%}" in page and f"95% CI {accuracy.low:.1%} to" in page


def test_html_report_says_which_protocol_ran_and_what_the_intervals_mean():
    embeddings = clustered_embeddings([10, 10, 10])
    embeddings.sha256 = [f"file {i}" for i in range(30)]
    embeddings.sha256[12] = embeddings.sha256[3]  # the same file filed in two classes
    result = run_probe(embeddings, protocol="cv", seed=0)
    page = html_report(embeddings, result, project(embeddings.vectors, method="pca"))
    assert "5-fold cross-validation" in page
    assert "Every image was scored by a probe that never saw it" in page
    assert "Clopper-Pearson" in page and "Brodersen" in page and "Dirichlet" in page
    assert "approximate" in page  # the cross-validation caveat
    assert "<h2>Duplicates</h2>" in page and embeddings.paths[12] in page
