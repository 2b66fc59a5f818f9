"""One image held in memory (a webcam frame, a dropped file) classified by the run's probe:
the same probabilities as ``predict`` gives for a file of the same bytes, each stage timed."""

from __future__ import annotations

import io

import numpy as np
import pytest

from probe_core.dataset import ImageItem
from probe_core.images import ImageLoadError
from probe_core.predict import ProbeMismatchError, classify_image, predict_items
from probe_core.probe import ProbeWeights
from tests.conftest import pattern_image


@pytest.fixture(scope="module")
def weights(encoder) -> ProbeWeights:
    rng = np.random.default_rng(7)
    return ProbeWeights(
        coef=rng.normal(0, 4, (3, encoder.dim)).astype(np.float32),
        intercept=np.array([0.1, -0.2, 0.0], dtype=np.float32),
        class_names=["a", "b", "c"],
        encoder_id=encoder.encoder_id,
        chosen_c=1.0,
        encoder_name="bundled:efficientnet-lite0",
    )


@pytest.mark.parametrize("fmt,size", [("PNG", 48), ("JPEG", 341), ("JPEG", 1200)])
def test_one_image_in_memory_gets_what_predict_gives_the_same_file(
    encoder, weights, tmp_path, fmt, size
):
    image = pattern_image(1, size, size=size)
    path = tmp_path / f"frame.{fmt.lower()}"
    image.save(path, fmt)
    predictions, skipped = predict_items([ImageItem(str(path), path, -1)], encoder, weights)
    assert not skipped

    classified = classify_image(path.read_bytes(), encoder, weights, name="frame")

    np.testing.assert_array_equal(classified.prediction.embedding, predictions[0].embedding)
    np.testing.assert_array_equal(classified.prediction.probabilities, predictions[0].probabilities)
    assert classified.prediction.class_names == ["a", "b", "c"]
    assert classified.prediction.name == "frame"
    # a large JPEG decodes at a reduced size, as in predict (Encoder.draft_side)
    assert classified.size == ((600, 600) if size == 1200 else (size, size))


def test_each_stage_is_timed(encoder, weights):
    buffer = io.BytesIO()
    pattern_image(0, 1, size=256).save(buffer, "JPEG")
    seconds = classify_image(buffer.getvalue(), encoder, weights).seconds
    stages = [seconds.decode, seconds.preprocess, seconds.forward, seconds.probe]
    assert all(stage > 0 for stage in stages)
    assert seconds.total == pytest.approx(sum(stages))


def test_bytes_that_are_no_image_and_another_encoders_probe_are_refused(encoder, weights):
    with pytest.raises(ImageLoadError, match="not an image"):
        classify_image(b"hello", encoder, weights)
    foreign = ProbeWeights(
        weights.coef, weights.intercept, weights.class_names, "bundled:other@00", 1.0
    )
    with pytest.raises(ProbeMismatchError, match="bundled:other@00"):
        classify_image(b"hello", encoder, foreign)


def test_a_live_image_runs_alone_and_gives_predicts_probabilities_to_float_precision(
    encoder, weights, rows_per_forward
):
    image = pattern_image(2, 3, size=256)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG")
    exact = classify_image(buffer.getvalue(), encoder, weights)
    # predict's path: padded to the fixed batch shape, so the same bits as in any batch
    assert rows_per_forward == [encoder.forward_rows] and encoder.forward_rows > 1
    live = classify_image(buffer.getvalue(), encoder, weights, live=True)
    assert rows_per_forward[1:] == [1]  # the frame alone: no padding rows to compute
    np.testing.assert_allclose(live.prediction.embedding, exact.prediction.embedding, atol=1e-5)
    np.testing.assert_allclose(
        live.prediction.probabilities, exact.prediction.probabilities, atol=1e-5
    )
    assert live.prediction.predicted == exact.prediction.predicted
