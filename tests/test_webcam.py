"""The server side of the webcam components (studio/webcam.py): frames arrive as image data
URLs in batches with ids and are written into their classes, every id acknowledged so the
browser stops resending it; a live frame is answered with the probe's probabilities."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest

from probe_core.capture import CaptureSet
from probe_core.predict import predict_images
from probe_core.probe import ProbeWeights
from studio.webcam import FrameError, classify_frame, decode_data_url, store_frames
from tests.conftest import pattern_image


def jpeg(class_index: int, variant: int, size: int = 64) -> bytes:
    buffer = io.BytesIO()
    pattern_image(class_index, variant, size=size).save(buffer, "JPEG", quality=92)
    return buffer.getvalue()


def data_url(data: bytes, kind: str = "jpeg") -> str:
    return f"data:image/{kind};base64," + base64.b64encode(data).decode()


def test_a_data_url_gives_back_its_bytes_and_anything_else_is_refused_with_the_reason():
    assert decode_data_url(data_url(jpeg(0, 1))) == jpeg(0, 1)
    assert decode_data_url(data_url(b"\x89PNG...", "png")) == b"\x89PNG..."
    for bad, reason in [
        (None, "must be an image data URL"),
        ("https://example.com/cat.jpg", "must be an image data URL"),
        ("data:text/html;base64,PGI+", "must be an image data URL"),
        ("data:image/jpeg;base64,@@@", "must be an image data URL"),
        ("data:image/jpeg;base64,abc", "damaged"),
        ("data:image/jpeg;base64," + "A" * (9 * 1024 * 1024), "limited to 8 MB"),
    ]:
        with pytest.raises(FrameError, match=reason):
            decode_data_url(bad)


def test_a_batch_of_frames_is_written_into_the_classes_they_were_recorded_for(tmp_path):
    captures = CaptureSet(tmp_path / "captures")
    captures.add_class("cup")
    captures.add_class("spoon")
    batch = [
        {"id": "t1-1", "class_name": "cup", "image": data_url(jpeg(0, 1))},
        {"id": "t1-2", "class_name": "cup", "image": data_url(jpeg(0, 2))},
        {"id": "t1-3", "class_name": "spoon", "image": data_url(jpeg(1, 1))},
    ]
    stored = store_frames(captures, batch)
    assert stored.acknowledged == ["t1-1", "t1-2", "t1-3"]
    assert stored.written == 3 and stored.problems == []
    assert captures.counts() == {"cup": 2, "spoon": 1}

    # The browser resends a batch whose answer it missed, with a new frame: written once.
    again = store_frames(captures, [*batch[1:], {"id": "t1-4", "class_name": "spoon",
                                                 "image": data_url(jpeg(1, 2))}])  # fmt: skip
    assert again.acknowledged == ["t1-2", "t1-3", "t1-4"]
    assert again.written == 1
    assert captures.counts() == {"cup": 2, "spoon": 2}


def test_frames_that_cannot_be_kept_are_acknowledged_and_the_reason_given(tmp_path):
    captures = CaptureSet(tmp_path / "captures")
    captures.add_class("cup")
    stored = store_frames(
        captures,
        [
            {"id": "a", "class_name": "fork", "image": data_url(jpeg(0, 1))},
            {"id": "b", "class_name": "cup", "image": data_url(b"<html></html>")},
            {"id": "c", "class_name": "cup", "image": "not a url"},
            {"class_name": "cup", "image": data_url(jpeg(0, 1))},
            "junk",
        ],
    )
    assert stored.acknowledged == ["a", "b", "c"]  # never sent again
    assert stored.written == 0
    assert captures.counts() == {"cup": 0}
    assert stored.problems == [
        "a frame for “fork” was dropped: there is no class of that name now",
        "a frame for “cup” was not saved: not an image: the content looks like an HTML page",
        "a frame for “cup” was not saved: a frame must be an image data URL"
        " (data:image/...;base64,...)",
        "a frame without an id was ignored",
        "a frame without an id was ignored",
    ]
    assert store_frames(captures, None).acknowledged == []


@pytest.fixture(scope="module")
def weights(encoder) -> ProbeWeights:
    rng = np.random.default_rng(3)
    return ProbeWeights(
        coef=rng.normal(0, 4, (3, encoder.dim)).astype(np.float32),
        intercept=np.zeros(3, dtype=np.float32),
        class_names=["cup", "spoon", "fork"],
        encoder_id=encoder.encoder_id,
        chosen_c=1.0,
        encoder_name="bundled:efficientnet-lite0",
    )


def test_a_live_frame_gets_what_predict_gives_the_same_bytes(encoder, weights):
    frame = jpeg(2, 5, size=256)
    answer = classify_frame({"id": "live-7", "image": data_url(frame)}, encoder, weights)
    (expected,), _ = predict_images([("frame.jpg", frame)], encoder, weights)
    assert answer["id"] == "live-7" and answer["name"] == ""
    np.testing.assert_allclose(answer["probabilities"], expected.probabilities, atol=1e-5)
    assert answer["predicted"] == expected.predicted
    assert answer["size"] == [256, 256]
    assert set(answer["ms"]) == {"decode", "preprocess", "forward", "probe"}
    assert all(value >= 0 for value in answer["ms"].values())


def test_a_live_frame_runs_through_the_encoder_alone(encoder, weights, rows_per_forward):
    classify_frame({"id": "live-8", "image": data_url(jpeg(1, 2, size=256))}, encoder, weights)
    assert rows_per_forward == [1]  # not padded to the encoder's fixed batch shape (forward_batch)


def test_a_dropped_file_is_named_and_a_bad_frame_answered_with_its_reason(encoder, weights):
    dropped = classify_frame(
        {"id": "d-1", "image": data_url(jpeg(0, 1)), "name": "mug.jpg"}, encoder, weights
    )
    assert dropped["name"] == "mug.jpg" and len(dropped["probabilities"]) == 3
    bad = classify_frame({"id": "d-2", "image": data_url(b"GIF89a broken")}, encoder, weights)
    assert bad["id"] == "d-2" and "probabilities" not in bad
    assert bad["error"] == "corrupt GIF image (its data cannot be decoded)"
    assert classify_frame(None, encoder, weights) is None
    assert classify_frame({"image": data_url(jpeg(0, 1))}, encoder, weights) is None
