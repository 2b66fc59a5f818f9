"""Fast paths: chosen only when faithful to fp32, recorded in the cache key, CPU-safe."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from skimage import data
from torch import nn
from torchvision import transforms

from probe_core import acceleration, embed
from probe_core.acceleration import (
    MIN_COSINE,
    MIN_SPEEDUP,
    ExecutionPath,
    PrecisionError,
    calibrate,
    calibration_images,
    draft_min_side,
    select_path,
)
from probe_core.dataset import scan_folder
from probe_core.embed import default_batch_size, extract_embeddings
from probe_core.encoders import DEFAULT_ENCODER, Encoder, EncoderError, ToRGB, load_encoder
from probe_core.images import load_image
from probe_core.path_decisions import PathDecisions
from tests import badfiles
from tests.conftest import DEMO_DIR, pattern_image, write_image_folder

VIT = "open_clip:ViT-B-32"  # random weights, offline


def demo_batch(encoder: Encoder, count: int = 12) -> torch.Tensor:
    paths = sorted(DEMO_DIR.glob("*/*.png"))[:: 144 // count][:count]
    return torch.stack([encoder.preprocess(load_image(p.read_bytes())) for p in paths])


def unit_embeddings(encoder: Encoder, batch: torch.Tensor) -> np.ndarray:
    with torch.inference_mode():
        features = encoder.encode(batch).double()
    return (features / features.norm(dim=-1, keepdim=True)).numpy()


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float((a * b).sum(axis=1).min())


@pytest.fixture(scope="module")
def exact():
    """The bundled encoder as the reference: plain fp32 model, full-size decoding."""
    return load_encoder(DEFAULT_ENCODER, device="cpu", precision="fp32")


@pytest.fixture
def fresh_choices() -> PathDecisions:
    """A store without decisions (in memory): the next load measures afresh."""
    return PathDecisions(None)


# --------------------------------------------------------------------------- fidelity


def test_auto_path_of_the_bundled_encoder_is_faithful_on_demo_images(encoder, exact):
    assert encoder.precision in (
        "fp32",
        "fp32+channels_last",
        "fp32+folded-bn+channels_last",
        "int8-dynamic",
        "bf16",
    )
    batch = demo_batch(exact)
    fast, reference = unit_embeddings(encoder, batch), unit_embeddings(exact, batch)
    assert min_cosine(fast, reference) >= MIN_COSINE
    if encoder.path.is_fp32_arithmetic:
        np.testing.assert_allclose(fast, reference, atol=1e-5)
    choice = encoder.path_choice
    assert choice is not None and choice.precision == encoder.precision and choice.reason


def test_channels_last_gives_the_bundled_encoder_fp32_embeddings_within_1e_6(exact):
    layout = load_encoder(DEFAULT_ENCODER, device="cpu", precision="fp32+channels_last")
    assert layout.precision == "fp32+channels_last"
    stem = layout.model.classifier.conv_stem.weight
    assert stem.is_contiguous(memory_format=torch.channels_last)
    batch = demo_batch(exact)
    np.testing.assert_allclose(
        unit_embeddings(layout, batch), unit_embeddings(exact, batch), rtol=0, atol=1e-6
    )


def test_folded_batch_norms_give_the_bundled_encoder_fp32_embeddings_within_1e_6(exact):
    folded = load_encoder(DEFAULT_ENCODER, device="cpu", precision="fp32+folded-bn+channels_last")
    assert folded.precision == "fp32+folded-bn+channels_last"
    norms = [m for m in folded.model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(norms) < len([m for m in exact.model.modules() if isinstance(m, nn.BatchNorm2d)])
    assert not norms  # timm's EfficientNet: every batch norm follows its convolution
    batch = demo_batch(exact)
    np.testing.assert_allclose(
        unit_embeddings(folded, batch), unit_embeddings(exact, batch), rtol=0, atol=1e-6
    )
    layout = load_encoder(DEFAULT_ENCODER, device="cpu", precision="fp32+channels_last")
    # fp32 arithmetic, but not fp32's last bits: each path has cache entries of its own.
    assert len({folded.cache_key, layout.cache_key, exact.cache_key}) == 3


class ConvNormNet(nn.Module):
    """conv -> bn -> relu, and a second conv whose output feeds a batch norm and a residual."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.norm = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.norm2 = nn.BatchNorm2d(8)
        self.spare = nn.BatchNorm2d(8)  # never fed by a convolution
        for norm in (self.norm, self.norm2, self.spare):
            norm.running_mean.uniform_(-1, 1)
            norm.running_var.uniform_(0.5, 2)
            norm.weight.data.uniform_(0.5, 2)
            norm.bias.data.uniform_(-1, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.norm(self.conv(images)))
        y = self.conv2(x)
        return (self.norm2(y) + y + self.spare(x)).mean(dim=(2, 3))


def test_batch_norms_fed_by_a_convolution_are_found_and_folded_exactly():
    model = ConvNormNet().eval()
    batch = torch.rand(2, 3, 16, 16)
    pairs = acceleration.foldable_batch_norms(model, batch)
    assert pairs == [("conv", "norm"), ("conv2", "norm2")]
    folded = acceleration.fold_batch_norms(model, pairs[:1])
    assert isinstance(folded.norm, nn.Identity) and isinstance(model.norm, nn.BatchNorm2d)
    with torch.inference_mode():
        torch.testing.assert_close(folded(batch), model(batch), rtol=1e-5, atol=1e-6)


def test_a_fold_that_changes_another_use_of_the_convolution_is_rejected_at_load():
    """conv2's output also feeds the residual: folding norm2 into it changes that sum, and
    the fidelity check at load refuses the path."""
    model = ConvNormNet().eval()
    preprocess = transforms.Compose(
        [transforms.Resize(16), transforms.CenterCrop(16), transforms.ToTensor()]
    )
    _, choice = calibrate(model, preprocess, torch.device("cpu"))
    folded = [m for m in choice.measurements if "folded-bn" in m.path]
    assert folded and not folded[0].faithful
    assert "folded-bn" not in choice.precision


def test_fp32_arithmetic_paths_compete_on_speed_but_lossy_ones_must_win_clearly(monkeypatch):
    def trial(path: ExecutionPath, speedup: float):
        measurement = acceleration.CandidateMeasurement(path.name, 1.0, 0.0, True, speedup)
        return acceleration._Trial(path, nn.Identity(), measurement)

    folded = ExecutionPath("fp32", channels_last=True, folded_bn=True)
    bf16 = ExecutionPath("bf16", channels_last=True)
    chosen = acceleration._pick([trial(LAYOUT, 1.26), trial(folded, 1.30)])
    assert chosen.path == folded  # faster, and the same embeddings within 1e-5
    chosen = acceleration._pick([trial(LAYOUT, 1.26), trial(bf16, 1.30)])
    assert chosen.path == LAYOUT  # bf16 is less exact: it must be 1.1x faster
    assert acceleration._pick([trial(folded, 1.05)]) is None  # not clearly over fp32


def test_precision_names_round_trip():
    for name in ("fp32", "fp32+channels_last", "fp32+folded-bn+channels_last", "int8-dynamic"):
        assert ExecutionPath.parse(name).name == name
    with pytest.raises(PrecisionError, match="folded-bn"):
        ExecutionPath.parse("fp32+sideways")


def int8_layers(module: nn.Module) -> int:
    return sum(1 for m in module.modules() if m._get_name() == "DynamicQuantizedLinear")


@pytest.mark.slow
def test_vit_b_32_auto_path_and_int8_are_faithful_on_demo_images():
    auto = load_encoder(VIT, device="cpu")
    exact = load_encoder(VIT, device="cpu", precision="fp32")
    batch = demo_batch(exact)
    reference = unit_embeddings(exact, batch)
    assert min_cosine(unit_embeddings(auto, batch), reference) >= MIN_COSINE

    # int8 is what a quiet machine picks for ViT-B-32; check it whatever the timing said.
    quantised, choice = select_path(
        copy.deepcopy(exact.model), exact.preprocess, exact.device, "int8-dynamic"
    )
    int8 = dataclasses.replace(exact, model=quantised, path=choice.path)
    assert min_cosine(unit_embeddings(int8, batch), reference) >= MIN_COSINE
    assert int8_layers(quantised.clip_model.visual) == 24  # the image tower's MLPs
    assert int8_layers(quantised.clip_model.transformer) == 0  # the text tower stays fp32
    assert int8_layers(exact.model) == 0


# --------------------------------------------------------------------------- the choice


class TinyConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Linear(8, 4)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        pooled = torch.relu(self.conv(images)).mean(dim=(2, 3))
        return self.head(pooled)


TINY_PREPROCESS = transforms.Compose(
    [transforms.Resize(32), transforms.CenterCrop(32), transforms.ToTensor()]
)
LAYOUT = ExecutionPath("fp32", channels_last=True)


def calibrate_tiny(monkeypatch, delays: dict[ExecutionPath, float], noise: bool = False):
    """Calibrate TinyConvNet with only the channels_last candidate; each path takes the time
    given on a fake clock (1 ms otherwise), so the choice never depends on the machine's load
    (and the candidate's output is noisy with ``noise``)."""
    run = ExecutionPath.run
    clock = {"now": 0.0}

    def patched(self, model, batch):
        clock["now"] += delays.get(self, 0.001)
        out = run(self, model, batch)
        return out + torch.randn_like(out) if noise and self == LAYOUT else out

    monkeypatch.setattr(ExecutionPath, "run", patched)
    monkeypatch.setattr(acceleration.time, "perf_counter", lambda: clock["now"])
    monkeypatch.setattr(acceleration, "candidate_paths", lambda profile, device: [LAYOUT])
    return calibrate(TinyConvNet().eval(), TINY_PREPROCESS, torch.device("cpu"))


def test_a_faithful_path_that_is_clearly_faster_is_chosen(monkeypatch):
    model, choice = calibrate_tiny(monkeypatch, {ExecutionPath(): 0.05})
    assert choice.precision == "fp32+channels_last"
    (measured,) = choice.measurements
    assert measured.faithful and measured.speedup > MIN_SPEEDUP
    assert model.conv.weight.is_contiguous(memory_format=torch.channels_last)


def test_a_path_that_is_not_clearly_faster_loses_to_exact_fp32(monkeypatch):
    _, choice = calibrate_tiny(monkeypatch, {ExecutionPath(): 0.1, LAYOUT: 0.1})
    assert choice.precision == "fp32"
    assert choice.measurements[0].faithful
    assert "no candidate was both faithful and" in choice.reason


def test_an_unfaithful_path_is_rejected_however_fast(monkeypatch):
    model, choice = calibrate_tiny(monkeypatch, {ExecutionPath(): 0.05}, noise=True)
    assert choice.precision == "fp32"
    (measured,) = choice.measurements
    assert not measured.faithful and measured.min_cosine < MIN_COSINE
    assert "min cosine" in measured.note and "min cosine" in choice.reason
    assert model.conv.weight.is_contiguous()  # the model is left in its plain layout


def test_load_encoder_falls_back_to_fp32_when_every_candidate_is_unfaithful(
    monkeypatch, fresh_choices
):
    run = ExecutionPath.run

    def noisy(self, model, batch):
        out = run(self, model, batch)
        return out if self == ExecutionPath() else out + out.std() * torch.randn_like(out)

    monkeypatch.setattr(ExecutionPath, "run", noisy)
    encoder = load_encoder(DEFAULT_ENCODER, device="cpu", decisions=fresh_choices)
    assert encoder.precision == "fp32"
    measurements = encoder.path_choice.measurements
    assert measurements and not any(m.faithful for m in measurements)
    assert "fp32+channels_last" in {m.path for m in measurements}
    assert "min cosine" in encoder.path_choice.reason


def test_calibration_images_are_fixed_and_varied():
    first, again = calibration_images(), calibration_images()
    assert len(first) == 16
    for image, same in zip(first, again, strict=True):
        assert np.array_equal(np.asarray(image), np.asarray(same))
    assert len({image.size for image in first}) == 4
    assert len({np.asarray(image).tobytes() for image in first}) == 16


def test_fp32_forces_the_plain_model_and_full_size_decoding(exact):
    assert exact.precision == "fp32" and exact.path == ExecutionPath()
    assert "requested" in exact.path_choice.reason
    assert exact.model.classifier.conv_stem.weight.is_contiguous()
    assert exact.draft_side is None and not exact.fast_decoding


def test_unknown_or_impossible_precisions_are_refused():
    with pytest.raises(EncoderError, match="unknown precision"):
        load_encoder("baseline:pixels", device="cpu", precision="int4")
    model = TinyConvNet()
    with pytest.raises(PrecisionError, match="CPU only"):
        select_path(model, TINY_PREPROCESS, torch.device("cuda"), "int8-dynamic")
    with pytest.raises(PrecisionError, match="CUDA or MPS only"):
        select_path(model, TINY_PREPROCESS, torch.device("cpu"), "fp16")


def test_weight_free_baselines_always_run_in_fp32():
    pixels = load_encoder("baseline:pixels", device="cpu", precision="auto")
    assert pixels.precision == "fp32" and "weight-free" in pixels.path_choice.reason


# --------------------------------------------------------------------------- cache key


def test_cache_key_names_the_whole_path_and_the_forward_shape(encoder, exact):
    def key(path: ExecutionPath) -> str:
        return dataclasses.replace(exact, path=path).cache_key

    paths = [ExecutionPath(n) for n in ("fp32", "int8-dynamic", "bf16")]
    paths += [LAYOUT, ExecutionPath("fp32", channels_last=True, folded_bn=True)]
    keys = {path.name: key(path) for path in paths}
    assert len(set(keys.values())) == len(paths)
    assert all(k.endswith(f"|rows=16|{name}") for name, k in keys.items())
    assert dataclasses.replace(exact, dtype=torch.float16).cache_key.endswith("|fp16")
    assert dataclasses.replace(exact, forward_rows=8).cache_key != exact.cache_key
    # Reduced-size JPEG decoding changes the pixels, so it changes the key too.
    assert dataclasses.replace(exact, fast_decoding=True).cache_key != exact.cache_key
    again = load_encoder(DEFAULT_ENCODER, device="cpu")
    assert again.precision == encoder.precision and again.cache_key == encoder.cache_key


# --------------------------------------------------------------------------- JPEG draft mode


def large_photo_jpeg(seed: int) -> bytes:
    """A 2000x1500 JPEG tiled from crops of real photos (enlarged at most 1.7x)."""
    photos = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket(), data.retina()]
    rng = np.random.default_rng(seed)
    canvas = np.zeros((1500, 2000, 3), dtype=np.uint8)
    for top in range(0, 1500, 500):
        for left in range(0, 2000, 500):
            photo = photos[rng.integers(len(photos))]
            side = min(500, *photo.shape[:2])
            y = rng.integers(0, photo.shape[0] - side + 1)
            x = rng.integers(0, photo.shape[1] - side + 1)
            tile = Image.fromarray(photo[y : y + side, x : x + side]).resize((500, 500))
            canvas[top : top + 500, left : left + 500] = np.asarray(tile)
    return badfiles.encode(Image.fromarray(canvas), "JPEG", quality=92)


def test_draft_decoding_of_large_jpegs_stays_faithful(encoder, exact):
    side = encoder.draft_side
    assert side == 2 * 256  # twice EfficientNet's resize target
    jpegs = [large_photo_jpeg(seed) for seed in range(3)]
    drafted = [load_image(jpeg, draft_min_side=side) for jpeg in jpegs]
    assert all(image.size == (1000, 750) for image in drafted)  # 1/2 scale, short side >= 512
    full = torch.stack([exact.preprocess(load_image(jpeg)) for jpeg in jpegs])
    reduced = torch.stack([exact.preprocess(image) for image in drafted])
    assert min_cosine(unit_embeddings(exact, reduced), unit_embeddings(exact, full)) >= 0.999


def test_draft_decoding_is_used_only_where_the_short_side_keeps_its_margin():
    big_png = badfiles.encode(Image.new("RGB", (2000, 1500), (9, 99, 199)), "PNG")
    small_jpeg = badfiles.encode(Image.new("RGB", (900, 600), (9, 99, 199)), "JPEG")
    big_jpeg = badfiles.encode(Image.new("RGB", (4000, 3000), (9, 99, 199)), "JPEG")
    assert load_image(big_png, draft_min_side=512).size == (2000, 1500)
    assert load_image(small_jpeg, draft_min_side=512).size == (900, 600)
    assert load_image(big_jpeg, draft_min_side=512).size == (1000, 750)
    assert load_image(big_jpeg, draft_min_side=800).size == (2000, 1500)


def test_draft_side_comes_from_a_leading_resize_only():
    resize_first = transforms.Compose([ToRGB(), transforms.Resize((16, 16)), transforms.ToTensor()])
    crop_first = transforms.Compose([transforms.CenterCrop(224), transforms.Resize(224)])
    assert draft_min_side(resize_first) == 32
    assert draft_min_side(crop_first) is None
    assert load_encoder("baseline:color-histogram", device="cpu").draft_side is None


# --------------------------------------------------------------------------- CUDA code paths


def test_cpu_extraction_never_touches_cuda(monkeypatch, encoder, tmp_path):
    def forbidden(*args, **kwargs):
        raise AssertionError("a CUDA-only call ran on the CPU")

    monkeypatch.setattr(torch.cuda, "synchronize", forbidden)
    monkeypatch.setattr(torch.Tensor, "pin_memory", forbidden)
    monkeypatch.setattr(torchvision.io, "decode_jpeg", forbidden)
    folder = write_image_folder(tmp_path / "images", {"a": 6, "b": 6}, fmt="JPEG")
    embedded = extract_embeddings(scan_folder(folder), encoder, batch_size=4, num_workers=1)
    assert len(embedded) == 12 and not embedded.skipped
    assert not encoder.decodes_jpeg_on_device and embed._jpeg_decode_device(encoder) is None
    assert default_batch_size(torch.device("cuda")) == 256
    assert default_batch_size(torch.device("cpu")) == 16


def test_the_device_jpeg_path_matches_the_cpu_path_and_keeps_bad_file_reasons(
    monkeypatch, encoder, tmp_path
):
    folder = write_image_folder(tmp_path / "images", {"a": 4, "b": 3}, fmt="JPEG")
    pattern_image(0, 50).save(folder / "a" / "plain.png")
    badfiles.write_corrupt_jpeg(folder / "a" / "corrupt.jpg")
    jpeg = (folder / "b" / "b_000.jpg").read_bytes()
    (folder / "b" / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (folder / "b" / "rotated.jpg").write_bytes(badfiles.exif_rotated_jpeg_bytes())
    (folder / "b" / "cmyk.jpg").write_bytes(badfiles.cmyk_jpeg_bytes())
    dataset = scan_folder(folder)
    on_cpu = extract_embeddings(dataset, encoder, batch_size=4, num_workers=0)

    decoded_on_device: list[int] = []
    decode_jpeg = torchvision.io.decode_jpeg
    failing = (folder / "a" / "a_001.jpg").read_bytes()  # as if the GPU could not decode it

    def flaky_decode(jpegs, **options):
        batch = jpegs if isinstance(jpegs, list) else [jpegs]
        if any(jpeg.numpy().tobytes() == failing for jpeg in batch):
            raise RuntimeError("nvjpeg could not decode the batch")
        decoded_on_device.append(len(batch))
        return decode_jpeg(jpegs, **options)

    monkeypatch.setattr(torchvision.io, "decode_jpeg", flaky_decode)
    monkeypatch.setattr(embed, "_jpeg_decode_device", lambda _encoder: torch.device("cpu"))
    on_device = extract_embeddings(dataset, encoder, batch_size=4, num_workers=0)

    assert sum(decoded_on_device) == 6  # the plain JPEGs but the failing one
    assert on_device.paths == on_cpu.paths
    assert [s.path for s in on_device.skipped] == [s.path for s in on_cpu.skipped]
    assert {s.path for s in on_device.skipped} == {"a/corrupt.jpg", "b/truncated.jpg"}
    assert [s.reason for s in on_device.skipped] == [s.reason for s in on_cpu.skipped]
    assert min_cosine(on_device.vectors, on_cpu.vectors) >= MIN_COSINE


def test_device_jpeg_decoding_is_only_offered_on_cuda(encoder):
    assert encoder.tensor_preprocess is not None  # the transform could run on the GPU
    on_cuda = dataclasses.replace(encoder, device=torch.device("cuda"))
    assert on_cuda.decodes_jpeg_on_device  # a CUDA device object alone touches no GPU
    assert not dataclasses.replace(on_cuda, fast_decoding=False).decodes_jpeg_on_device
    assert not encoder.decodes_jpeg_on_device
