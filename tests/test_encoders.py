"""Encoders: real bundled weights, open_clip builds and round-trips, offline is explained."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

from probe_core.dataset import scan_folder
from probe_core.devices import DeviceUnavailableError, pick_device
from probe_core.embed import extract_embeddings
from probe_core.encoders import (
    DEFAULT_ENCODER,
    EncoderError,
    EncoderUnavailableError,
    build_efficientnet_lite0_classifier,
    list_encoders,
    load_encoder,
)

IMAGENET_CATS = set(range(281, 286))  # tabby, tiger cat, Persian, Siamese, Egyptian cat


def test_bundled_classifier_loads_strictly_and_sees_a_cat_in_chelsea():
    model, preprocess = build_efficientnet_lite0_classifier()
    image = Image.fromarray(data.chelsea())
    with torch.inference_mode():
        logits = model(preprocess(image)[None])
    top5 = set(logits.topk(5).indices[0].tolist())
    assert top5 & IMAGENET_CATS, f"no cat class in the top 5: {sorted(top5)}"
    assert logits.argmax().item() in IMAGENET_CATS


def test_bundled_encoder_is_frozen_in_eval_mode_with_timm_preprocessing(encoder):
    assert encoder.name == DEFAULT_ENCODER
    assert encoder.dim == 1280
    assert not encoder.model.training
    assert not any(p.requires_grad for p in encoder.model.parameters())
    description = repr(encoder.preprocess)
    assert "224" in description and "0.5000" in description
    assert encoder.preprocess(Image.new("RGB", (300, 200))).shape == (3, 224, 224)


def test_encoder_id_names_the_weights_and_cache_key_adds_preprocessing(encoder):
    assert encoder.encoder_id.startswith("bundled:efficientnet-lite0@")
    assert len(encoder.encoder_id.split("@")[1]) == 16  # sha256 prefix of the weights file
    assert encoder.encoder_id in encoder.cache_key and encoder.preprocess_id in encoder.cache_key


def test_device_is_chosen_automatically_and_cpu_means_float32():
    expected = (
        "cuda"
        if torch.cuda.is_available()
        else "mps"
        if torch.backends.mps.is_available()
        else "cpu"
    )
    assert pick_device().type == expected
    assert pick_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(DeviceUnavailableError, match="CUDA is not available"):
            pick_device("cuda")
        with pytest.raises(EncoderError, match="CUDA is not available"):
            load_encoder("baseline:pixels", device="cuda")


def test_open_clip_vit_b_32_builds_without_pretrained_weights():
    clip = load_encoder("open_clip:ViT-B-32", device="cpu")
    assert clip.dim == 512
    assert clip.encoder_id == "open_clip:ViT-B-32/random-init-seed0"
    features = clip.encode(clip.preprocess(Image.new("RGB", (64, 64), "red"))[None])
    assert features.shape == (1, 512) and features.dtype == torch.float32


def test_open_clip_local_checkpoint_round_trips_to_identical_embeddings(tmp_path, image_folder):
    import open_clip

    torch.manual_seed(123)
    model = open_clip.create_model("ViT-B-32", pretrained=None)
    checkpoint = tmp_path / "vit_b_32.pt"
    torch.save({"state_dict": model.state_dict()}, checkpoint)

    # fp32: the exact path; the fast paths are checked for fidelity in test_acceleration.py
    from_file = load_encoder(f"open_clip:ViT-B-32@{checkpoint}", device="cpu", precision="fp32")
    assert from_file.encoder_id.startswith("open_clip:ViT-B-32@sha256:")
    dataset = scan_folder(image_folder)
    embedded = extract_embeddings(dataset, from_file, num_workers=0)

    model.eval()
    expected = []
    with torch.inference_mode():
        for item in dataset.items:
            image = Image.open(item.source).convert("RGB")
            f = model.encode_image(from_file.preprocess(image)[None])
            expected.append((f / f.norm(dim=-1, keepdim=True)).numpy()[0])
    np.testing.assert_allclose(embedded.vectors, np.stack(expected), atol=1e-5)


def test_pickle_checkpoint_with_code_is_refused(tmp_path, capsys):
    class Payload:
        def __reduce__(self):
            return (print, ("pwned",))

    checkpoint = tmp_path / "evil.pt"
    torch.save({"state_dict": Payload()}, checkpoint)
    with pytest.raises(EncoderError, match=r"refusing checkpoint .*evil\.pt.*weights_only=True"):
        load_encoder(f"open_clip:ViT-B-32@{checkpoint}", device="cpu")
    assert "pwned" not in capsys.readouterr().out  # the payload never ran


def test_offline_download_gives_a_clear_message_naming_the_bundled_encoder(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(EncoderUnavailableError) as raised:
        load_encoder("open_clip:ViT-B-32/laion2b_s34b_b79k", device="cpu")
    message = str(raised.value)
    assert "Could not download" in message and "offline" in message
    assert DEFAULT_ENCODER in message


def test_unknown_names_are_explained():
    with pytest.raises(EncoderError, match="unknown encoder"):
        load_encoder("resnet50")
    with pytest.raises(EncoderError, match="unknown open_clip architecture"):
        load_encoder("open_clip:NoSuchNet/foo")
    with pytest.raises(EncoderError, match="unknown pretrained tag"):
        load_encoder("open_clip:ViT-B-32/no-such-tag")
    with pytest.raises(EncoderError, match="checkpoint file not found"):
        load_encoder("open_clip:ViT-B-32@/no/such/file.pt")


def test_encoder_list_marks_downloads(monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))  # an empty hub cache
    infos = {info.name: info for info in list_encoders()}
    assert infos[DEFAULT_ENCODER].needs_download is False
    assert infos["open_clip:ViT-B-32/laion2b_s34b_b79k"].needs_download is True


def test_embeddings_probe_and_devices_load_without_the_encoders_module():
    import subprocess
    import sys

    script = (
        "import sys, probe_core.embeddings, probe_core.probe, probe_core.devices;"
        "print('probe_core.encoders' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False"]
