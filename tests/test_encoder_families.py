"""Every encoder family offline: timm (random weights, local weights files, a cached hub
name), transformers (a DINOv2-style and a CLIP-style model saved with save_pretrained, from a
folder and from the cache), open_clip ``hf-hub:`` from a pre-filled cache. For each, the
studio's embeddings equal a forward pass written here with the family's own API."""

from __future__ import annotations

import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from probe_core.dataset import scan_folder
from probe_core.embed import extract_embeddings
from probe_core.encoders import (
    DEFAULT_ENCODER,
    EncoderError,
    EncoderUnavailableError,
    is_weight_free,
    load_encoder,
)
from probe_core.evaluation.zeroshot import class_text_embeddings, zero_shot
from tests import tiny_models
from tests.tiny_models import COMMIT, fill_hub_cache, folder_files

MIN_COSINE = 0.9999


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache, offline (HF_HUB_OFFLINE=1 as huggingface_hub reads it)."""
    from huggingface_hub import constants

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


@pytest.fixture(scope="module")
def dinov2_folder(tmp_path_factory):
    return tiny_models.save_tiny_dinov2(tmp_path_factory.mktemp("hf") / "tiny-dinov2")


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory):
    return tiny_models.save_tiny_clip(tmp_path_factory.mktemp("hf") / "tiny-clip")


def images_of(folder) -> list[Image.Image]:
    return [Image.open(item.source).convert("RGB") for item in scan_folder(folder).items]


def unit(features: torch.Tensor) -> np.ndarray:
    features = features.double()
    return (features / features.norm(dim=-1, keepdim=True)).numpy()


def assert_same_embeddings(studio: np.ndarray, expected: np.ndarray) -> None:
    cosines = (studio.astype(np.float64) * expected).sum(axis=1)
    assert cosines.min() >= MIN_COSINE, f"min cosine {cosines.min():.6f}"


def studio_embeddings(name: str, folder):
    encoder = load_encoder(name, device="cpu", precision="fp32")
    return encoder, extract_embeddings(scan_folder(folder), encoder, num_workers=0).vectors


# --------------------------------------------------------------------------- timm


def timm_reference(model, images) -> np.ndarray:
    """timm's own API: its eval transform for these weights, pooled pre-logits features."""
    import timm

    model.eval()
    transform = timm.data.create_transform(**timm.data.resolve_model_data_config(model))
    with torch.inference_mode():
        batch = torch.stack([transform(image) for image in images])
        return unit(model.forward_head(model.forward_features(batch), pre_logits=True))


def test_timm_random_weights_are_seeded_offline_and_weight_free(image_folder):
    import timm

    encoder, vectors = studio_embeddings("timm:test_resnet@random", image_folder)
    assert encoder.encoder_id == "timm:test_resnet@random-init-seed0"
    assert is_weight_free("timm:test_resnet@random")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = timm.create_model("test_resnet", pretrained=False, num_classes=0)
    assert encoder.dim == model.num_features == vectors.shape[1]
    assert_same_embeddings(vectors, timm_reference(model, images_of(image_folder)))


@pytest.fixture(scope="module")
def trained_resnet():
    """A timm test_resnet with weights of its own (standing in for a lab's checkpoint)."""
    import timm

    torch.manual_seed(123)
    model = timm.create_model("test_resnet.r160_in1k", pretrained=False)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
    return model.eval()


@pytest.mark.parametrize("with_head", [True, False], ids=["with-head", "without-head"])
@pytest.mark.parametrize("fmt", ["safetensors", "state-dict", "wrapped-state-dict"])
def test_timm_local_weights_file_gives_the_models_own_features(
    tmp_path, image_folder, trained_resnet, fmt, with_head
):
    state = {k: v for k, v in trained_resnet.state_dict().items() if with_head or "fc." not in k}
    path = tmp_path / ("weights.safetensors" if fmt == "safetensors" else "weights.pth")
    if fmt == "safetensors":
        save_file(state, path)
    else:
        torch.save({"state_dict": state} if fmt == "wrapped-state-dict" else state, path)

    encoder, vectors = studio_embeddings(f"timm:test_resnet.r160_in1k@{path}", image_folder)
    assert encoder.encoder_id.startswith("timm:test_resnet.r160_in1k@sha256:")
    assert not is_weight_free(f"timm:test_resnet.r160_in1k@{path}")
    assert_same_embeddings(vectors, timm_reference(trained_resnet, images_of(image_folder)))


def test_timm_weights_with_a_fine_tuned_head_of_any_size_load(tmp_path, trained_resnet):
    import timm

    torch.manual_seed(5)
    fine_tuned = timm.create_model("test_resnet.r160_in1k", pretrained=False, num_classes=7)
    path = tmp_path / "fine_tuned.safetensors"
    save_file(fine_tuned.state_dict(), path)
    encoder = load_encoder(f"timm:test_resnet.r160_in1k@{path}", device="cpu", precision="fp32")
    assert encoder.dim == fine_tuned.num_features


def test_timm_weights_of_another_architecture_are_refused_with_the_file(tmp_path):
    import timm

    path = tmp_path / "vit.safetensors"
    save_file(timm.create_model("test_vit", pretrained=False).state_dict(), path)
    with pytest.raises(EncoderError, match=r"vit\.safetensors does not hold weights of the timm"):
        load_encoder(f"timm:test_resnet@{path}", device="cpu")


def test_timm_pickled_code_is_refused(tmp_path, capsys):
    class Payload:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pth"
    torch.save({"state_dict": Payload()}, path)
    with pytest.raises(EncoderError, match=r"refusing weights file .*evil\.pth.*weights_only"):
        load_encoder(f"timm:test_resnet@{path}", device="cpu")
    assert "pwned" not in capsys.readouterr().out


def test_timm_names_are_checked_and_explained():
    with pytest.raises(EncoderError, match="unknown timm model 'no_such_net'"):
        load_encoder("timm:no_such_net")
    with pytest.raises(EncoderError, match=r"unknown pretrained tag 'nope' for timm model"):
        load_encoder("timm:resnet50.nope")
    with pytest.raises(EncoderError, match="weights file not found"):
        load_encoder("timm:resnet50@/no/such/weights.safetensors")


def test_timm_hub_name_loads_from_the_cache_and_names_repo_and_revision(
    hub_cache, tmp_path, image_folder, trained_resnet
):
    weights = tmp_path / "model.safetensors"
    save_file(trained_resnet.state_dict(), weights)
    fill_hub_cache(hub_cache, "timm/test_resnet.r160_in1k", {"model.safetensors": weights})

    encoder, vectors = studio_embeddings("timm:test_resnet.r160_in1k", image_folder)
    assert encoder.encoder_id == (
        f"timm:test_resnet.r160_in1k@timm/test_resnet.r160_in1k@rev:{COMMIT[:12]}"
    )
    assert_same_embeddings(vectors, timm_reference(trained_resnet, images_of(image_folder)))


def test_uncached_timm_hub_name_fails_offline_naming_the_model_and_options(hub_cache):
    with pytest.raises(EncoderUnavailableError) as raised:
        load_encoder("timm:test_resnet.r160_in1k", device="cpu")
    message = str(raised.value)
    assert "timm:test_resnet.r160_in1k" in message and "HF_HUB_OFFLINE" in message
    assert DEFAULT_ENCODER in message and "timm:test_resnet@random" in message
    assert "timm:test_resnet.r160_in1k@/path/to/weights.safetensors" in message


# --------------------------------------------------------------------------- transformers


def hf_reference(folder, images, feature: str) -> np.ndarray:
    """transformers' own API: AutoModel, AutoImageProcessor, then the named feature."""
    from transformers import AutoImageProcessor, AutoModel

    model = AutoModel.from_pretrained(folder).eval()
    processor = AutoImageProcessor.from_pretrained(folder)
    with torch.inference_mode():
        inputs = processor(images=images, return_tensors="pt")
        if feature == "get_image_features":
            return unit(model.get_image_features(**inputs).pooler_output)
        return unit(model(**inputs).pooler_output)


def test_hf_folder_without_text_tower_gives_the_pooler_output(image_folder, dinov2_folder):
    encoder, vectors = studio_embeddings(f"hf:{dinov2_folder}", image_folder)
    assert encoder.encoder_id.startswith("hf:tiny-dinov2@sha256:")
    assert encoder.encoder_id.endswith("#pooler_output")
    assert encoder.dim == 32 and not encoder.has_text_tower
    expected = hf_reference(dinov2_folder, images_of(image_folder), "pooler_output")
    assert_same_embeddings(vectors, expected)


def test_hf_clip_folder_gives_image_features_and_zero_shot_runs(image_folder, clip_folder):
    encoder, vectors = studio_embeddings(f"hf:{clip_folder}", image_folder)
    assert encoder.encoder_id.endswith("#get_image_features")
    assert encoder.dim == 16 and encoder.has_text_tower
    expected = hf_reference(clip_folder, images_of(image_folder), "get_image_features")
    assert_same_embeddings(vectors, expected)

    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(clip_folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(clip_folder)
    prompts = ["a photo of the red class", "blue"]
    with torch.inference_mode():
        text = model.get_text_features(**tokenizer(prompts, padding=True, return_tensors="pt"))
        studio_text = encoder.encode_text(prompts)
    assert_same_embeddings(unit(studio_text), unit(text.pooler_output))

    embeddings = extract_embeddings(scan_folder(image_folder), encoder, num_workers=0)
    result = zero_shot(embeddings, encoder, templates=["a photo of the {} class"])
    assert result.available and 0.0 <= result.accuracy.value <= 1.0
    assert result.probabilities.shape == (len(embeddings), 3)
    per_class = class_text_embeddings(encoder, ["red", "green", "blue"], ["a {} picture"])
    assert per_class.shape == (3, 16)


def test_hf_folder_id_changes_with_the_weights(tmp_path, dinov2_folder):
    import shutil

    copy = tmp_path / "tiny-dinov2"
    shutil.copytree(dinov2_folder, copy)
    first = load_encoder(f"hf:{copy}", device="cpu", precision="fp32").encoder_id
    from transformers import Dinov2Model

    model = Dinov2Model.from_pretrained(copy)
    with torch.no_grad():
        model.layernorm.bias.add_(0.1)
    model.save_pretrained(copy)
    assert load_encoder(f"hf:{copy}", device="cpu", precision="fp32").encoder_id != first


def test_hf_hub_name_loads_from_the_cache_and_names_repo_and_revision(
    hub_cache, image_folder, dinov2_folder
):
    fill_hub_cache(hub_cache, "facebook/dinov2-tiny", folder_files(dinov2_folder))
    encoder, vectors = studio_embeddings("hf:facebook/dinov2-tiny", image_folder)
    assert encoder.encoder_id == f"hf:facebook/dinov2-tiny@rev:{COMMIT[:12]}#pooler_output"
    expected = hf_reference(dinov2_folder, images_of(image_folder), "pooler_output")
    assert_same_embeddings(vectors, expected)


def test_uncached_hf_hub_name_fails_offline_naming_the_model_and_options(hub_cache):
    with pytest.raises(EncoderUnavailableError) as raised:
        load_encoder("hf:facebook/dinov2-small", device="cpu")
    message = str(raised.value)
    assert "hf:facebook/dinov2-small" in message and "HF_HUB_OFFLINE" in message
    assert DEFAULT_ENCODER in message and "save_pretrained" in message


def test_hf_names_that_are_neither_folder_nor_repo_are_explained(tmp_path):
    with pytest.raises(EncoderError, match="no such folder, and not a hub name"):
        load_encoder(f"hf:{tmp_path}/missing/folder")
    (tmp_path / "empty").mkdir()
    with pytest.raises(EncoderError, match="not a saved transformers vision model"):
        load_encoder(f"hf:{tmp_path / 'empty'}")


def test_hf_without_transformers_says_which_extra_to_install(monkeypatch, dinov2_folder):
    monkeypatch.setitem(sys.modules, "transformers", None)  # as if not installed
    with pytest.raises(EncoderError, match=r'pip install "probe-studio\[hf\]"'):
        load_encoder(f"hf:{dinov2_folder}", device="cpu")


# --------------------------------------------------------------------------- open_clip hf-hub


def test_open_clip_hf_hub_name_resolves_from_a_prefilled_cache(hub_cache, tmp_path, image_folder):
    import open_clip

    model = tiny_models.tiny_open_clip(tmp_path / "repo")
    fill_hub_cache(hub_cache, "lab/tiny-clip", folder_files(tmp_path / "repo"))

    encoder, vectors = studio_embeddings("open_clip:hf-hub:lab/tiny-clip", image_folder)
    assert encoder.encoder_id == f"open_clip:hf-hub:lab/tiny-clip@rev:{COMMIT[:12]}"
    assert encoder.has_text_tower and encoder.dim == 16
    transform = open_clip.image_transform(32, is_train=False, mean=(0.5,) * 3, std=(0.5,) * 3)
    with torch.inference_mode():
        batch = torch.stack([transform(image) for image in images_of(image_folder)])
        expected = unit(model.encode_image(batch))
        tokens = open_clip.get_tokenizer("ViT-B-32", context_length=16)(["a photo of a red"])
        text = unit(model.encode_text(tokens))
        studio_text = unit(encoder.encode_text(["a photo of a red"]))
    assert_same_embeddings(vectors, expected)
    assert_same_embeddings(studio_text, text)


def test_uncached_open_clip_hf_hub_name_fails_offline(hub_cache):
    with pytest.raises(EncoderUnavailableError, match=r"open_clip:hf-hub:timm/ViT-B-16-SigLIP2"):
        load_encoder("open_clip:hf-hub:timm/ViT-B-16-SigLIP2", device="cpu")
    with pytest.raises(EncoderUnavailableError) as raised:
        load_encoder("open_clip:hf-hub:timm/ViT-B-16-SigLIP2", device="cpu")
    options = str(raised.value).partition("Offline options: ")[2]
    assert f"'{DEFAULT_ENCODER}'" in options and "<arch>" not in options  # nothing to fill in


# --------------------------------------------------------------------------- failing fast


@pytest.mark.parametrize("name", ["timm:resnet50.a1_in1k", "hf:facebook/dinov2-small"])
def test_an_unreachable_hub_fails_fast_from_the_cli(tmp_path, image_folder, name):
    """No HF_HUB_OFFLINE, but the hub's address refuses connections: the run stops with the
    message at once rather than waiting on downloads (the timeout only guards a hang)."""
    with socket_closed_port() as port:
        env = {
            **_clean_env(),
            "HF_HUB_CACHE": str(tmp_path / "hf-cache"),
            "HF_ENDPOINT": f"http://127.0.0.1:{port}",
        }
        done = subprocess.run(
            [sys.executable, "-m", "probe_core.cli", "run", str(image_folder), "--encoder", name,
             "--no-cache", "--projection", "none"],
            capture_output=True, text=True, env=env, timeout=120,
        )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert f"Could not download the weights of {name}" in done.stderr
    assert "cannot be reached" in done.stderr and "Offline options" in done.stderr


def _clean_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HTTP", "HTTPS"))}


class socket_closed_port:
    """A local port nothing listens on (bound, then released)."""

    def __enter__(self) -> int:
        import socket

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            return probe.getsockname()[1]

    def __exit__(self, *exc) -> None:
        return None


# --------------------------------------------------------------------------- fast paths


def demo_batch(encoder, count: int = 12) -> torch.Tensor:
    from tests.conftest import DEMO_DIR

    paths = sorted(DEMO_DIR.glob("*/*.png"))[:: 144 // count][:count]
    return torch.stack([encoder.preprocess(Image.open(p).convert("RGB")) for p in paths])


@pytest.mark.parametrize(
    "name, kind",
    [
        ("timm:test_resnet@random", "conv"),
        ("timm:test_vit@random", "linear"),
        ("hf-dinov2", "linear"),
        ("hf-clip", "conv+linear"),  # a convolutional patch embedding, then attention
        ("open_clip:hf-hub:lab/tiny-clip", "conv+linear"),
    ],
    ids=["timm-cnn", "timm-vit", "hf-dinov2", "hf-clip", "open_clip-hf-hub"],
)
def test_new_families_take_the_fast_paths_only_where_faithful(
    monkeypatch, hub_cache, tmp_path, dinov2_folder, clip_folder, name, kind
):
    """The families go through select_path like the others: candidates suited to the model
    are measured, and the path chosen, like every candidate judged faithful, keeps the fp32
    embeddings of the demo images (cosine >= 0.999; fp32 layouts within 1e-5)."""
    import copy

    from probe_core import acceleration
    from probe_core.acceleration import EXACT_TOLERANCE, select_path
    from probe_core.path_decisions import PathDecisions

    name = {"hf-dinov2": f"hf:{dinov2_folder}", "hf-clip": f"hf:{clip_folder}"}.get(name, name)
    if name.startswith("open_clip:hf-hub:"):
        tiny_models.tiny_open_clip(tmp_path / "repo")
        fill_hub_cache(hub_cache, "lab/tiny-clip", folder_files(tmp_path / "repo"))
    auto = load_encoder(name, device="cpu", decisions=PathDecisions(None))  # measure afresh
    exact = load_encoder(name, device="cpu", precision="fp32")
    measured = [m.path for m in auto.path_choice.measurements]
    if "conv" in kind:
        assert "fp32+channels_last" in measured
    if "linear" in kind and acceleration._quantization_available():
        assert any(path.startswith("int8-dynamic") for path in measured)
    batch = demo_batch(exact)
    with torch.inference_mode():
        reference = unit(exact.encode(batch))
    faithful = [m.path for m in auto.path_choice.measurements if m.faithful]
    for path_name in dict.fromkeys([auto.precision, *faithful]):
        model, choice = select_path(
            copy.deepcopy(exact.model), exact.preprocess, exact.device, path_name
        )
        with torch.inference_mode():
            fast = unit(choice.path.run(model, batch).float())
        assert (fast * reference).sum(axis=1).min() >= acceleration.MIN_COSINE, path_name
        if choice.path.is_fp32_arithmetic:
            np.testing.assert_allclose(fast, reference, atol=EXACT_TOLERANCE)


def test_the_hf_preprocessing_survives_pickling_for_dataloader_workers(dinov2_folder):
    encoder = load_encoder(f"hf:{dinov2_folder}", device="cpu", precision="fp32")
    restored = pickle.loads(pickle.dumps(encoder.preprocess))
    image = Image.new("RGB", (50, 40), "teal")
    assert torch.equal(restored(image), encoder.preprocess(image))
    assert repr(restored) == repr(encoder.preprocess)  # so the cache key survives too


def test_a_text_tower_without_its_tokenizer_says_why_zero_shot_is_unavailable(
    tmp_path, clip_folder
):
    import shutil

    from probe_core.evaluation.zeroshot import unavailable_reason

    folder = tmp_path / "clip-without-tokenizer"
    shutil.copytree(clip_folder, folder)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (folder / name).unlink()
    encoder = load_encoder(f"hf:{folder}", device="cpu", precision="fp32")
    assert encoder.encoder_id.endswith("#get_image_features") and not encoder.has_text_tower
    assert unavailable_reason(encoder) == (
        f"hf:{folder} has a text tower but its folder holds no tokenizer, so zero-shot is not"
        " available"
    )
