"""Zero-shot classification: prompts from folder names, CLIP's prompt ensemble, known accuracy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES
from torch import nn

from probe_core.dataset import scan_folder
from probe_core.embed import extract_embeddings
from probe_core.embeddings import Embeddings
from probe_core.encoders import Encoder, load_encoder
from probe_core.evaluation.protocols import run_probe
from probe_core.evaluation.zeroshot import (
    TemplateError,
    class_prompts,
    class_text_embeddings,
    default_templates,
    parse_templates,
    zero_shot,
    zero_shot_predict,
)
from probe_core.probe import LinearProbe
from tests.conftest import write_image_folder
from tests.test_probe import clustered_embeddings

DIM = 16


class KeywordTextTower(nn.Module):
    """A text tower that embeds a prompt as the vector of the class name it contains,
    scaled and nudged per prompt, so that only normalised averages recover the class."""

    def __init__(self, vectors_by_prompt: dict[str, np.ndarray]):
        super().__init__()
        self.vectors_by_prompt = vectors_by_prompt
        self.texts: list[str] = []
        self.inference_mode: list[bool] = []

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        self.texts += texts
        self.inference_mode.append(torch.is_inference_mode_enabled())
        rows = []
        for text in texts:
            (prompt,) = [p for p in self.vectors_by_prompt if p in text]
            nudge = np.random.default_rng(len(text)).normal(scale=0.05, size=DIM)
            rows.append((1 + len(text)) * (self.vectors_by_prompt[prompt] + nudge))
        return torch.tensor(np.array(rows), dtype=torch.float32)


def stub_encoder(vectors_by_prompt: dict[str, np.ndarray]) -> Encoder:
    return Encoder(
        name="stub:keywords",
        encoder_id="stub",
        model=KeywordTextTower(vectors_by_prompt),
        preprocess=lambda image: image,
        dim=DIM,
        device=torch.device("cpu"),
        dtype=torch.float32,
    )


def unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=-1, keepdims=True)


def images_near(directions: np.ndarray, per_class: int, spread: float = 0.1, seed: int = 0):
    """Unit-norm image embeddings scattered tightly around each class's text direction."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(directions)), per_class)
    vectors = unit(directions[labels] + spread * rng.normal(size=(len(labels), DIM)))
    names = ["smileys_emotion", "traffic-light", "cat"]
    return Embeddings(
        vectors=vectors.astype(np.float32),
        labels=labels,
        paths=[f"{names[y]}/{i}.png" for i, y in enumerate(labels)],
        class_names=names,
        encoder_id="stub",
    )


@pytest.fixture
def directions() -> np.ndarray:
    return unit(np.random.default_rng(1).normal(size=(3, DIM)))


def test_folder_names_become_words():
    assert class_prompts(["smileys_emotion", "traffic-light", "a__b--c", "cat"]) == [
        "smileys emotion",
        "traffic light",
        "a b c",
        "cat",
    ]


def test_the_default_templates_are_open_clips_imagenet_templates():
    templates = default_templates()
    assert len(templates) == len(OPENAI_IMAGENET_TEMPLATES) == 80
    assert [t("cat") for t in templates] == [t("cat") for t in OPENAI_IMAGENET_TEMPLATES]


def test_class_embeddings_average_normalised_prompts_and_renormalise(directions):
    prompts = {"smileys emotion": directions[0], "traffic light": directions[1]}
    encoder = stub_encoder(prompts)
    templates = ["a photo of a {}.", lambda name: f"a drawing of the {name}, in pencil"]
    text = class_text_embeddings(encoder, ["smileys_emotion", "traffic-light"], templates)

    tower = encoder.model
    assert tower.texts == [
        "a photo of a smileys emotion.",
        "a drawing of the smileys emotion, in pencil",
        "a photo of a traffic light.",
        "a drawing of the traffic light, in pencil",
    ]
    assert all(tower.inference_mode)
    raw = tower.encode_text(tower.texts[:4]).numpy().reshape(2, 2, DIM)
    np.testing.assert_allclose(text, unit(unit(raw).mean(axis=1)), atol=1e-6)
    assert text.shape == (2, DIM) and text.dtype == np.float32


def test_zero_shot_predict_is_a_softmax_of_scaled_cosines():
    text = np.eye(3, DIM)
    images = unit(np.array([[1.0, 0.2, 0.0] + [0.0] * (DIM - 3)]))
    probabilities = zero_shot_predict(images, text, logit_scale=10.0)
    cosines = images @ text.T
    expected = np.exp(10 * cosines) / np.exp(10 * cosines).sum()
    np.testing.assert_allclose(probabilities, expected)
    sharper = zero_shot_predict(images, text, logit_scale=100.0)
    assert sharper[0, 0] > probabilities[0, 0]


def test_images_near_their_class_text_are_all_classified_right(directions):
    embeddings = images_near(directions, per_class=10)
    prompts = dict(zip(["smileys emotion", "traffic light", "cat"], directions, strict=True))
    result = zero_shot(embeddings, stub_encoder(prompts), templates=["a photo of a {}."])
    assert result.available
    assert result.accuracy.value == 1.0
    assert result.accuracy.low < 1.0 == result.accuracy.high  # Clopper-Pearson at 30 of 30
    np.testing.assert_array_equal(result.predictions, embeddings.labels)
    np.testing.assert_array_equal(result.evaluated, np.arange(30))
    np.testing.assert_allclose(result.probabilities.sum(axis=1), 1.0)
    assert result.templates == ("a photo of a {}.",)
    assert result.class_names == ("smileys_emotion", "traffic-light", "cat")


def test_swapped_class_texts_get_exactly_the_untouched_class_right(directions):
    embeddings = images_near(directions, per_class=10)
    swapped = {
        "smileys emotion": directions[1],
        "traffic light": directions[0],
        "cat": directions[2],
    }
    result = zero_shot(embeddings, stub_encoder(swapped), templates=["a photo of a {}."])
    assert result.accuracy.value == pytest.approx(1 / 3)
    assert result.predictions.tolist() == [1] * 10 + [0] * 10 + [2] * 10


def test_default_templates_are_used_when_none_are_given(directions):
    embeddings = images_near(directions, per_class=2)
    prompts = dict(zip(["smileys emotion", "traffic light", "cat"], directions, strict=True))
    encoder = stub_encoder(prompts)
    result = zero_shot(embeddings, encoder)
    assert result.templates == tuple(t("{}") for t in OPENAI_IMAGENET_TEMPLATES)
    assert len(encoder.model.texts) == 3 * 80


def test_zero_shot_scores_the_probes_evaluation_images_over_the_probes_classes():
    embeddings = clustered_embeddings([12, 12, 1], dim=DIM)  # class_2 is too small to probe
    centres = np.stack([unit(embeddings.vectors[embeddings.labels == k].mean(0)) for k in (0, 1)])
    probe = run_probe(embeddings, protocol="holdout", seed=0, probe=LinearProbe(C=1.0))
    embeddings.encoder_id = "stub"
    prompts = {"class 0": centres[0], "class 1": centres[1], "class 2": -centres[0]}
    result = zero_shot(embeddings, stub_encoder(prompts), probe, templates=["{}"])
    np.testing.assert_array_equal(result.evaluated, probe.evaluated)
    np.testing.assert_array_equal(result.labels, probe.labels)
    assert result.class_names == ("class_0", "class_1")
    assert result.probabilities.shape == (len(probe.evaluated), 2)
    correct = np.sum(result.predictions == probe.labels)
    assert result.accuracy.value == correct / len(probe.evaluated) > 0.9


def test_embeddings_of_another_encoder_are_refused(directions):
    embeddings = images_near(directions, per_class=2)
    embeddings.encoder_id = "bundled:efficientnet-lite0@abc"
    prompts = dict(zip(["smileys emotion", "traffic light", "cat"], directions, strict=True))
    with pytest.raises(ValueError, match="same model"):
        zero_shot(embeddings, stub_encoder(prompts), templates=["{}"])


def test_the_bundled_encoder_has_no_zero_shot(encoder):
    embeddings = clustered_embeddings([4, 4])
    result = zero_shot(embeddings, encoder)
    assert not result.available
    assert result.reason == (
        "bundled:efficientnet-lite0 has no text tower, so zero-shot is not available"
    )
    assert result.accuracy is None


@pytest.fixture(scope="module")
def clip_encoder():
    """open_clip ViT-B-32 with random weights: offline, for shapes and plumbing only."""
    return load_encoder("open_clip:ViT-B-32", device="cpu")


def test_open_clip_zero_shot_end_to_end_offline(clip_encoder, tmp_path: Path):
    folder = write_image_folder(tmp_path / "images", {"smileys_emotion": 2, "traffic-light": 2})
    embeddings = extract_embeddings(scan_folder(folder), clip_encoder, num_workers=0)
    templates = ["a photo of a {}.", lambda name: f"a sketch of a {name}."]

    text = class_text_embeddings(clip_encoder, embeddings.class_names, templates)
    assert text.shape == (2, 512)
    np.testing.assert_allclose(np.linalg.norm(text, axis=1), 1.0, atol=1e-5)

    result = zero_shot(embeddings, clip_encoder, templates=templates)
    assert result.available and result.encoder == "open_clip:ViT-B-32"
    assert result.probabilities.shape == (4, 2)
    np.testing.assert_allclose(result.probabilities.sum(axis=1), 1.0)
    np.testing.assert_array_equal(result.predictions, result.probabilities.argmax(axis=1))
    assert result.templates == ("a photo of a {}.", "a sketch of a {}.")
    assert 0.0 <= result.accuracy.low <= result.accuracy.value <= result.accuracy.high <= 1.0


def test_templates_are_lines_each_with_one_slot_for_the_class_name():
    """One rule for the CLI's --templates file and the app's box."""
    assert parse_templates("a photo of {}.\n\n  a {} thing  \n") == ["a photo of {}.", "a {} thing"]
    assert parse_templates("a {0} with {{braces}}") == ["a {0} with {{braces}}"]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "Write at least one zero-shot template."),
        ("  \n ", "Write at least one zero-shot template."),
        ("a photo of {}.\na photo", "Template “a photo” has no {} for the class name."),
        ("a {} and a {}", "Template “a {} and a {}” has braces other than one {}."),
        ("a {name}", "Template “a {name}” has braces other than one {}."),
        ("a {", "Template “a {” has braces other than one {}."),
    ],
)
def test_unusable_templates_are_refused_naming_the_line(text, problem):
    with pytest.raises(TemplateError) as refused:
        parse_templates(text)
    assert str(refused.value) == problem


def test_the_cli_refuses_a_templates_file_by_the_same_rule(tmp_path, capsys):
    from probe_core.cli import main

    templates = tmp_path / "templates.txt"
    templates.write_text("a photo of {}.\na photo\n", encoding="utf-8")
    folder = write_image_folder(tmp_path / "images", {"red": 2, "blue": 2})
    arguments = ["compare", str(folder), "--encoders", "baseline:pixels,baseline:color-histogram"]
    assert main([*arguments, "--templates", str(templates), "--no-cache"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: {templates}: Template “a photo” has no {{}} for the class name."
    )
