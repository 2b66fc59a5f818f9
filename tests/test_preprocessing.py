"""The encoder's preprocessing split into per-image pixels and per-batch normalisation gives
exactly the tensors of the per-image transform, and extraction gives exactly its embeddings."""

from __future__ import annotations

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image
from torchvision import transforms

from probe_core.dataset import scan_folder
from probe_core.embed import extract_embeddings
from probe_core.encoders import ToRGB, load_encoder
from probe_core.images import load_image
from probe_core.preprocessing import SplitPreprocess, TensorPreprocess
from tests.conftest import pattern_image


def varied_images() -> list[Image.Image]:
    """Square, wide, tall, tiny and odd-sized images, some smaller than the crop."""
    sizes = [(48, 48), (300, 200), (90, 410), (7, 5), (225, 224), (513, 257)]
    return [
        pattern_image(index % 5, index, size=max(size)).resize(size)
        for index, size in enumerate(sizes)
    ]


def reference(preprocess, images: list[Image.Image]) -> torch.Tensor:
    return torch.stack([preprocess(image) for image in images])


PIPELINES = {
    "timm (bundled encoder)": lambda encoder: encoder.preprocess,
    "open_clip": lambda _: open_clip.image_transform(224, is_train=False),
    "open_clip squash": lambda _: open_clip.image_transform(
        224, is_train=False, resize_mode="squash"
    ),
    "crop larger than the resize (pads)": lambda _: transforms.Compose(
        [transforms.Resize(100), transforms.CenterCrop(160), transforms.ToTensor()]
    ),
    "no crop, no normalisation": lambda _: transforms.Compose(
        [transforms.Resize((64, 80)), transforms.ToTensor()]
    ),
    "odd-sized crop, per-channel normalisation": lambda _: transforms.Compose(
        [
            transforms.Resize((9, 11)),
            transforms.CenterCrop((7, 5)),
            transforms.ToTensor(),
            transforms.Normalize(open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD),
        ]
    ),
}


@pytest.mark.parametrize("name", PIPELINES)
@pytest.mark.parametrize("channels_last", [False, True])
def test_batches_are_bit_identical_to_the_per_image_transform(encoder, name, channels_last):
    preprocess = PIPELINES[name](encoder)
    split = SplitPreprocess.from_pil(preprocess)
    assert split is not None
    same_size: dict[tuple, list[Image.Image]] = {}
    for image in varied_images():
        same_size.setdefault(split.pixels(image).shape, []).append(image)
    for images in same_size.values():
        batch = split.batch([split.pixels(image) for image in images], channels_last=channels_last)
        expected = reference(preprocess, images)
        assert batch.dtype == expected.dtype and batch.shape == expected.shape
        assert torch.equal(batch, expected)
        layout = torch.channels_last if channels_last else torch.contiguous_format
        assert batch.is_contiguous(memory_format=layout)


@pytest.mark.parametrize("n_images", [1, 2, 3, 16])
def test_any_batch_size_is_bit_identical_in_both_layouts(n_images):
    preprocess = PIPELINES["odd-sized crop, per-channel normalisation"](None)
    split = SplitPreprocess.from_pil(preprocess)
    images = [pattern_image(index % 5, index) for index in range(n_images)]
    expected = reference(preprocess, images)
    for channels_last in (False, True):
        batch = split.batch([split.pixels(image) for image in images], channels_last=channels_last)
        assert torch.equal(batch, expected)


def test_a_zero_std_is_not_split_so_the_transform_itself_refuses_it():
    zero = transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.0, 0.5))
    transform = transforms.Compose([transforms.ToTensor(), zero])
    assert SplitPreprocess.from_pil(transform) is None
    with pytest.raises(ValueError, match="std"):
        transform(pattern_image(0, 0))


def test_pixels_are_uint8_rgb_even_for_other_modes(encoder):
    split = encoder.split_preprocess
    grey = Image.new("L", (50, 40), 128)
    pixels = split.pixels(grey)
    assert pixels.dtype == np.uint8 and pixels.shape == (224, 224, 3)
    expected = encoder.preprocess(grey.convert("RGB"))
    assert torch.equal(split.batch([pixels])[0], expected)


def test_a_stacked_uint8_tensor_is_accepted_like_the_list(encoder):
    split = encoder.split_preprocess
    images = [pattern_image(1, v) for v in range(3)]
    pixels = [split.pixels(image) for image in images]
    stacked = torch.from_numpy(np.stack(pixels))
    assert torch.equal(split.batch(stacked), split.batch(pixels))


def test_a_weight_free_baseline_splits_when_it_can_and_stays_whole_when_not():
    pixels = load_encoder("baseline:pixels", device="cpu")
    image = pattern_image(2, 1)
    split = pixels.split_preprocess
    assert torch.equal(split.batch([split.pixels(image)])[0], pixels.preprocess(image))
    assert load_encoder("baseline:color-histogram", device="cpu").split_preprocess is None


def test_an_unknown_step_or_a_step_after_normalisation_is_not_split():
    normalize = transforms.Normalize((0.5,) * 3, (0.5,) * 3)
    assert (
        SplitPreprocess.from_pil(
            transforms.Compose(
                [transforms.Resize(32), transforms.Grayscale(3), transforms.ToTensor()]
            )
        )
        is None
    )
    assert (
        SplitPreprocess.from_pil(transforms.Compose([transforms.ToTensor(), normalize, normalize]))
        is None
    )
    assert SplitPreprocess.from_pil(transforms.Compose([transforms.Resize(32)])) is None
    assert SplitPreprocess.from_pil(lambda image: image) is None


def test_extraction_gives_exactly_the_per_image_transforms_embeddings(encoder, tmp_path):
    folder = tmp_path / "images"
    for index, image in enumerate(varied_images()):
        (folder / f"c{index % 2}").mkdir(parents=True, exist_ok=True)
        image.save(folder / f"c{index % 2}" / f"{index}.png")
    dataset = scan_folder(folder)
    embedded = extract_embeddings(dataset, encoder, batch_size=4, num_workers=0)
    images = [load_image(item.read_bytes()) for item in dataset.items]
    with torch.inference_mode():
        rows = []
        for start in range(0, len(images), 4):
            features = encoder.encode(reference(encoder.preprocess, images[start : start + 4]))
            rows.append(features / features.norm(dim=-1, keepdim=True))
    np.testing.assert_array_equal(embedded.vectors, torch.cat(rows).numpy())


@pytest.mark.parametrize(
    "steps",
    [
        [transforms.Resize(256, interpolation=transforms.InterpolationMode.BICUBIC)],
        [transforms.Resize((96, 128))],
        [transforms.Resize(64, interpolation=transforms.InterpolationMode.LANCZOS)],
    ],
    ids=["timm-style bicubic", "fixed size bilinear", "lanczos"],
)
def test_a_resize_fused_with_its_crop_gives_the_two_steps_pixels(steps):
    crop = transforms.CenterCrop(224 if steps[0].size == 256 else 56)
    split = SplitPreprocess.from_pil(transforms.Compose([*steps, crop, transforms.ToTensor()]))
    assert split.resize is not None  # the check at construction trusted this Pillow
    rng = np.random.default_rng(7)
    sizes = [(64, 64), (84, 777), (777, 84), (500, 375), (1000, 1000), (9, 9)]
    sizes += [tuple(int(v) for v in rng.integers(5, 700, 2)) for _ in range(40)]
    sizes += [(int(side), int(side)) for side in rng.integers(5, 1200, 20)]
    fused = 0
    for width, height in sizes:
        image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
        expected = np.asarray(crop(steps[0](image)))
        np.testing.assert_array_equal(split.pixels(image), expected, err_msg=f"{width}x{height}")
        fused += split._resized_crop(image) is not None
    assert fused >= 10  # square images, at least, take the fused path


def test_a_pillow_whose_fused_crop_differs_is_not_trusted(monkeypatch):
    import probe_core.preprocessing as preprocessing

    def shifted(size_in: int, size_out: int, crop: int):
        return (0.5, 0.5 + crop * size_in / size_out)

    monkeypatch.setattr(preprocessing, "crop_box", shifted)
    preprocess = transforms.Compose(
        [transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor()]
    )
    split = SplitPreprocess.from_pil(preprocess)
    assert split.resize is None
    image = pattern_image(3, 3)
    assert torch.equal(split.batch([split.pixels(image)])[0], preprocess(image))


def test_tensor_replay_and_split_read_the_same_steps_but_split_takes_one_normalize():
    normalize = transforms.Normalize((0.5,) * 3, (0.25,) * 3)
    steps = [transforms.Resize(40), transforms.CenterCrop(32), transforms.ToTensor(), normalize]
    one = transforms.Compose(steps)
    image = pattern_image(1, 2)
    replay = TensorPreprocess.from_pil(one)
    pixels = torch.from_numpy(np.array(image)).permute(2, 0, 1)
    # torch resizes uint8 tensors within one level of Pillow; normalising scales that by 1/std
    torch.testing.assert_close(replay(pixels), one(image), atol=1 / 255 / 0.25 + 1e-5, rtol=0)
    two = transforms.Compose([*steps, normalize])
    assert TensorPreprocess.from_pil(two) is not None
    assert SplitPreprocess.from_pil(two) is None
    after = transforms.Compose([*steps, ToRGB()])  # an RGB step after ToTensor cannot run
    assert TensorPreprocess.from_pil(after) is None and SplitPreprocess.from_pil(after) is None
