"""Weight-free baselines: loaded by name like real encoders, cached under their own ids,
and able to expose classes that differ only in colour or layout."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from probe_core import encoders
from probe_core.dataset import scan_folder
from probe_core.embed import extract_embeddings
from probe_core.encoders import (
    DEFAULT_ENCODER,
    EncoderError,
    EncoderInfo,
    is_weight_free,
    list_encoders,
    load_encoder,
)
from probe_core.evaluation.protocols import run_probe
from probe_core.probe import LinearProbe
from tests.conftest import write_image_folder

BASELINE_DIMS = {"baseline:pixels": 768, "baseline:color-histogram": 512}


@pytest.fixture(scope="module")
def baselines():
    return {name: load_encoder(name, device="cpu") for name in BASELINE_DIMS}


@pytest.fixture(scope="module")
def colour_folder(tmp_path_factory):
    """Three classes that differ in colour (and stripe width) only."""
    root = tmp_path_factory.mktemp("baselines") / "x"
    return write_image_folder(root, {"red": 6, "green": 6, "blue": 6})


def features(encoder, image: Image.Image) -> np.ndarray:
    with torch.inference_mode():
        return encoder.encode(encoder.preprocess(image)[None])[0].numpy()


def red_left_blue_right() -> Image.Image:
    pixels = np.zeros((32, 32, 3), dtype=np.uint8)
    pixels[:, :16] = (255, 0, 0)
    pixels[:, 16:] = (0, 0, 255)
    return Image.fromarray(pixels)


@pytest.mark.parametrize("name", list(BASELINE_DIMS))
def test_baseline_loads_by_name_with_its_dimension_and_float32_features(baselines, name):
    encoder = baselines[name]
    assert encoder.name == name
    assert encoder.dim == BASELINE_DIMS[name]
    assert encoder.dtype == torch.float32
    assert not any(True for _ in encoder.model.parameters())  # nothing was trained
    out = encoder.encode(torch.stack([encoder.preprocess(Image.new("RGB", (40, 30), "teal"))] * 3))
    assert out.shape == (3, encoder.dim) and out.dtype == torch.float32


@pytest.mark.parametrize("name", list(BASELINE_DIMS))
def test_preprocess_survives_pickling_for_dataloader_workers(baselines, name):
    preprocess = baselines[name].preprocess
    restored = pickle.loads(pickle.dumps(preprocess))
    image = red_left_blue_right()
    assert torch.equal(restored(image), preprocess(image))
    assert repr(restored) == repr(preprocess)  # so the cache key survives too


@pytest.mark.parametrize("name", list(BASELINE_DIMS))
def test_embedding_a_folder_gives_finite_unit_norm_rows(baselines, colour_folder, name):
    embedded = extract_embeddings(scan_folder(colour_folder), baselines[name], num_workers=0)
    assert embedded.vectors.shape == (18, BASELINE_DIMS[name])
    assert np.isfinite(embedded.vectors).all()
    np.testing.assert_allclose(np.linalg.norm(embedded.vectors, axis=1), 1.0, atol=1e-5)
    assert embedded.encoder_id == baselines[name].encoder_id


@pytest.mark.parametrize("name", list(BASELINE_DIMS))
def test_a_probe_separates_classes_that_differ_only_in_colour(baselines, colour_folder, name):
    embedded = extract_embeddings(scan_folder(colour_folder), baselines[name], num_workers=0)
    # Within a class these generated images are nearly identical to a trivial feature, so
    # duplicate grouping would merge each class into one group: turn it off here. A fixed C
    # keeps the test fast (choosing C is the probe's own tests' business).
    result = run_probe(embedded, protocol="cv", duplicate_threshold=None, probe=LinearProbe(C=1.0))
    assert result.protocol.name == "cv"
    assert result.metrics.accuracy.value > 0.9


def test_histogram_of_a_pure_colour_image_is_a_single_bin(baselines):
    histogram = baselines["baseline:color-histogram"].preprocess(Image.new("RGB", (50, 20), "red"))
    assert histogram.shape == (512,)
    assert histogram.sum().item() == pytest.approx(1.0)
    assert torch.count_nonzero(histogram).item() == 1
    assert histogram.argmax().item() == 7 * 64  # red in the top bin, green and blue in bin 0


def test_histogram_counts_every_pixel_exactly():
    quarter_white = np.zeros((20, 20, 3), dtype=np.uint8)
    quarter_white[:10, :10] = 255
    histogram = encoders.ColorHistogram(8)(Image.fromarray(quarter_white))
    assert histogram[0].item() == pytest.approx(0.75)
    assert histogram[511].item() == pytest.approx(0.25)


def test_pixels_see_layout_while_histograms_only_see_colour(baselines):
    image = red_left_blue_right()
    mirrored = ImageOps.mirror(image)
    pixels = baselines["baseline:pixels"]
    histogram = baselines["baseline:color-histogram"]
    assert not np.allclose(features(pixels, image), features(pixels, mirrored), atol=0.1)
    np.testing.assert_array_equal(features(histogram, image), features(histogram, mirrored))


def test_pixel_features_keep_brightness_and_are_never_zero(baselines):
    pixels = baselines["baseline:pixels"]
    dark, light = Image.new("RGB", (16, 16), (60,) * 3), Image.new("RGB", (16, 16), (200,) * 3)
    dark_features, light_features = features(pixels, dark), features(pixels, light)
    assert np.all(dark_features < 0) and np.all(light_features > 0)
    for grey in (0, 127, 128, 255):
        assert np.linalg.norm(features(pixels, Image.new("RGB", (8, 8), (grey,) * 3))) > 0


def test_baselines_stay_float32_where_real_encoders_would_use_fp16(monkeypatch):
    cuda = torch.device("cuda")
    monkeypatch.setattr(encoders.loading, "pick_device", lambda requested=None: cuda)
    for name in BASELINE_DIMS:
        encoder = load_encoder(name)
        assert encoder.dtype == torch.float32
        assert encoder.cache_key.endswith("|fp32")


def test_ids_name_the_recipe_differ_from_real_encoders_and_keys_are_stable(baselines, encoder):
    ids = {name: baselines[name].encoder_id for name in BASELINE_DIMS}
    assert ids["baseline:pixels"] == "baseline:pixels-16@v1"
    assert ids["baseline:color-histogram"] == "baseline:color-histogram-8x8x8@v1"
    assert len({*ids.values(), encoder.encoder_id}) == 3
    keys = {baselines[name].cache_key for name in BASELINE_DIMS} | {encoder.cache_key}
    assert len(keys) == 3
    for name in BASELINE_DIMS:
        assert load_encoder(name, device="cpu").cache_key == baselines[name].cache_key


def test_encoder_list_offers_weight_free_options_offline(monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))  # an empty hub cache
    infos = {info.name: info for info in list_encoders()}
    for name in (*BASELINE_DIMS, "open_clip:ViT-B-32"):
        assert infos[name].needs_download is False
        assert infos[name].weight_free is True
        assert is_weight_free(name)
    assert "random weights" in infos["open_clip:ViT-B-32"].description
    assert infos[DEFAULT_ENCODER].weight_free is False
    assert infos["open_clip:ViT-B-32/laion2b_s34b_b79k"].weight_free is False


def test_weight_free_means_no_trained_weights():
    assert not is_weight_free(DEFAULT_ENCODER)
    assert not is_weight_free("open_clip:ViT-B-32/laion2b_s34b_b79k")
    assert not is_weight_free("open_clip:ViT-B-32@/models/vit.pt")
    assert is_weight_free("open_clip:ViT-L-14")
    assert not is_weight_free("open_clip:hf-hub:timm/ViT-B-16-SigLIP2")
    assert is_weight_free("timm:resnet50@random")
    assert not is_weight_free("timm:resnet50.tv2_in1k")
    assert not is_weight_free("timm:resnet50@/models/resnet50.safetensors")
    assert not is_weight_free("hf:facebook/dinov2-small")
    assert not is_weight_free("baseline:foo")  # not an encoder at all


def test_encoder_info_keeps_its_positional_fields():
    info = EncoderInfo("x:y", "a description", True)
    assert (info.name, info.description, info.needs_download, info.weight_free) == (
        "x:y",
        "a description",
        True,
        False,
    )


def test_unknown_baseline_names_the_available_ones():
    with pytest.raises(EncoderError, match="unknown baseline encoder 'foo'") as raised:
        load_encoder("baseline:foo", device="cpu")
    assert "baseline:pixels" in str(raised.value)
    assert "baseline:color-histogram" in str(raised.value)
