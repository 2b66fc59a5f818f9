"""One ONNX file that classifies anywhere: what the card says is exactly what the studio
computes, the export checks itself, and a process with only onnxruntime, Pillow and numpy
classifies the demo like `predict` does."""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import onnx
import onnxruntime
import pandas as pd
import pytest
from PIL import Image
from torchvision import transforms

from probe_core.cli import main
from probe_core.dataset import scan
from probe_core.encoders import load_encoder
from probe_core.export import read_probe
from probe_core.images import load_image
from probe_core.onnx_export import (
    EXAMPLE,
    ONNX_OUTPUTS,
    InputSpec,
    OnnxExportError,
    SelfCheckError,
    agreeing_classes,
    card_pixels,
    check_classifier,
    export_onnx,
    fp32_encoder,
    refuse_unexportable,
    sample_items,
)
from probe_core.probe import ProbeWeights
from probe_core.study import Study, StudySettings
from tests import badfiles
from tests.conftest import DEMO_DIR


def awkward_images() -> dict[str, bytes]:
    """Sizes on both sides of the resize and crop, every orientation, the modes people have."""
    rng = np.random.default_rng(0)

    def noise(width: int, height: int, mode: str = "RGB") -> Image.Image:
        image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
        return image.convert(mode)

    images = {
        f"{w}x{h}.png": badfiles.encode(noise(w, h), "PNG")
        for w, h in [(640, 480), (480, 640), (300, 300), (257, 513), (224, 224), (256, 999),
                     (17, 9), (100, 224), (1001, 255)]
    }  # fmt: skip
    images["photo.jpg"] = badfiles.encode(noise(500, 375), "JPEG", quality=90)
    images["grey.png"] = badfiles.encode(noise(333, 250, "L"), "PNG")
    images["one-bit.png"] = badfiles.one_bit_png_bytes()
    images["rgba.png"] = badfiles.transparent_rgba_png_bytes()
    images["palette.png"] = badfiles.palette_png_with_transparency_bytes()
    images["la.png"] = badfiles.la_png_bytes()
    images["cmyk.jpg"] = badfiles.cmyk_jpeg_bytes((260, 300))
    images["rotated.jpg"] = badfiles.exif_rotated_jpeg_bytes((300, 200))
    images["animated.gif"] = badfiles.animated_gif_bytes()
    images["emoji.png"] = next(iter(sorted((DEMO_DIR / "flags").iterdir()))).read_bytes()
    return images


@pytest.mark.parametrize(
    ("name", "size", "interpolation"),
    [
        ("bundled:efficientnet-lite0", 224, "bicubic"),
        ("open_clip:ViT-B-32", 224, "bicubic"),
        ("timm:test_vit@random", 160, "bicubic"),
        ("timm:test_resnet@random", 160, "bilinear"),
    ],
)
def test_the_cards_pixels_are_the_studios_pixels(name, size, interpolation):
    """classifier.json describes the bundled, open_clip and timm preprocessing exactly: Pillow
    code that follows the card gives the very pixels the studio feeds its encoder."""
    encoder = load_encoder(name, device="cpu", precision="fp32")
    spec = InputSpec.from_preprocess(encoder.preprocess)
    card = spec.card()
    assert {"size", "resize_shorter_to", "crop", "interpolation", "layout", "dtype"} <= set(card)
    assert (card["crop"], card["layout"], card["dtype"]) == ("center", "NHWC", "uint8")
    assert card["interpolation"] == interpolation and card["size"] == [size, size]
    split = encoder.split_preprocess
    for file, data in awkward_images().items():
        studio = split.pixels(load_image(data))
        assert studio.shape == (size, size, 3), file
        np.testing.assert_array_equal(card_pixels(data, card), studio, err_msg=file)


def test_the_card_refuses_preprocessing_it_cannot_describe():
    squash = transforms.Compose([transforms.Resize((16, 16)), transforms.ToTensor()])
    with pytest.raises(OnnxExportError, match="not a Resize then a CenterCrop"):
        InputSpec.from_preprocess(squash)
    squash_and_crop = transforms.Compose(
        [transforms.Resize((16, 16)), transforms.CenterCrop(16), transforms.ToTensor()]
    )
    with pytest.raises(OnnxExportError, match="does not resize the shorter side"):
        InputSpec.from_preprocess(squash_and_crop)
    nearest = transforms.Compose(
        [
            transforms.Resize(256, interpolation=transforms.InterpolationMode.NEAREST),
            transforms.CenterCrop(224),
            transforms.ToTensor(),
        ]
    )
    with pytest.raises(OnnxExportError, match="only bilinear and bicubic"):
        InputSpec.from_preprocess(nearest)
    padding = transforms.Compose(
        [transforms.Resize(200), transforms.CenterCrop(224), transforms.ToTensor()]
    )
    with pytest.raises(OnnxExportError, match="the crop would pad"):
        InputSpec.from_preprocess(padding)
    with pytest.raises(OnnxExportError, match="not Resize"):
        InputSpec.from_preprocess(lambda image: image)


def test_a_transformers_image_processor_is_refused_with_the_reason(tmp_path):
    from tests import tiny_models

    folder = tiny_models.save_tiny_dinov2(tmp_path / "tiny-dinov2")
    encoder = load_encoder(f"hf:{folder}", device="cpu", precision="fp32")
    with pytest.raises(OnnxExportError, match=r"transformers image processor .*BitImageProcessor"):
        InputSpec.from_preprocess(encoder.preprocess)


def test_baselines_and_precomputed_probes_are_refused_with_the_reason():
    weights = ProbeWeights(
        np.zeros((2, 4), np.float32), np.zeros(2, np.float32), ["a", "b"], "x", 1.0
    )
    with pytest.raises(OnnxExportError, match="precomputed embeddings of x"):
        refuse_unexportable(weights)
    for baseline in ("baseline:pixels", "baseline:color-histogram"):
        named = ProbeWeights(**{**weights.__dict__, "encoder_name": baseline})
        with pytest.raises(OnnxExportError, match=r"weight-free baseline.*16x16.*every pixel"):
            refuse_unexportable(named)
    # A real encoder passes; a name no family knows is left to loading, which names the error.
    for other in ("bundled:efficientnet-lite0", "timm:resnet18@random", "nonsense:x"):
        refuse_unexportable(ProbeWeights(**{**weights.__dict__, "encoder_name": other}))


def test_the_self_check_samples_every_class_in_turn():
    items = scan(DEMO_DIR).items
    chosen = sample_items(items, 12)
    assert sorted(item.label for item in chosen) == sorted(list(range(6)) * 2)
    assert sample_items(items, 12) == chosen  # seeded
    assert len(sample_items(items, 1000)) == len(items)


# --------------------------------------------------------------------------- the demo, exported


@pytest.fixture(scope="module")
def demo_export(tmp_path_factory):
    """`run` on the demo, then `export --format onnx`: the CNN (bundled encoder) case."""
    root = tmp_path_factory.mktemp("onnx")
    run = root / "run"
    options = ["--projection", "none", "--device", "cpu", "--cache-dir", str(root / "cache")]
    assert main(["run", str(DEMO_DIR), "--out", str(run), *options]) == 0
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["export", str(run), "--format", "onnx"]) == 0
    (root / "export-output.txt").write_text(printed.getvalue())
    return run


@pytest.mark.slow
def test_the_export_writes_a_dynamic_batch_classifier_and_its_card(demo_export, capsys):
    out = demo_export / "onnx"
    assert sorted(path.name for path in out.iterdir()) == sorted(ONNX_OUTPUTS)
    model = onnx.load(out / "classifier.onnx")
    onnx.checker.check_model(model)
    (pixels,) = model.graph.input
    assert pixels.name == "pixels"
    assert pixels.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    dims = pixels.type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [224, 224, 3]
    assert [output.name for output in model.graph.output] == ["probabilities", "embedding"]
    for output in model.graph.output:
        assert output.type.tensor_type.elem_type == onnx.TensorProto.FLOAT

    card = json.loads((out / "classifier.json").read_text())
    metrics = json.loads((demo_export / "metrics.json").read_text())
    assert card["classes"] == metrics["classes"]
    assert card["input"]["resize_shorter_to"] == 256 and card["input"]["size"] == [224, 224]
    assert card["encoder_id"] == metrics["encoder_id"]
    assert card["protocol"]["name"] == "cv"
    assert card["metrics"]["accuracy"] == metrics["metrics"]["accuracy"]
    assert card["images_per_class"] == dict.fromkeys(metrics["classes"], 24)
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", card["date"])
    check = card["self_check"]
    assert check["passed"] and check["n_images"] == 128 and check["class_agreement"] >= 0.99
    assert check["max_probability_difference"] <= 1e-3
    printed = (demo_export.parent / "export-output.txt").read_text()  # the agreement, said
    assert (
        f"self-check passed: on 128 of the run's images, onnxruntime and `predict` agree on the"
        f" class of {check['n_agree']} ({check['class_agreement']:.1%}; at least 99% required)"
    ) in printed
    assert f"wrote {demo_export / 'onnx' / 'classifier.onnx'}" in printed

    readme = (out / "README.md").read_text()
    accuracy = metrics["metrics"]["accuracy"]
    assert f"accuracy: {accuracy['value']:.1%} (95% CI {accuracy['low']:.1%}" in readme
    assert "onnxruntime-web" in readme and EXAMPLE.strip() in readme
    assert len(EXAMPLE.strip().splitlines()) == 10

    session = onnxruntime.InferenceSession(str(out / "classifier.onnx"))
    batch = np.random.default_rng(0).integers(0, 256, (3, 224, 224, 3), dtype=np.uint8)
    probabilities, embedding = session.run(None, {"pixels": batch})
    assert probabilities.shape == (3, 6) and embedding.shape == (3, 1280)
    np.testing.assert_allclose(np.linalg.norm(embedding, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


CONSUMER = """
import json, pathlib, sys
sys.modules["torch"] = None  # any attempt to import torch fails
import onnxruntime
sessions = {}
real_session = onnxruntime.InferenceSession
onnxruntime.InferenceSession = lambda path, **kw: sessions.get(path) or sessions.setdefault(
    path, real_session(path, **kw))
example = pathlib.Path("README.md").read_text().split("```python\\n")[1].split("```")[0]
rows = []
for image in json.loads(sys.argv[1]):
    namespace = {}
    exec(example.replace('"photo.jpg"', repr(image)), namespace)
    rows.append([image, namespace["card"]["classes"][int(namespace["p"].argmax())],
                 namespace["p"].tolist()])
loaded = sorted(name for name in sys.modules if name.split(".")[0] in ("torch", "torchvision"))
assert not [name for name in loaded if sys.modules[name] is not None], loaded
print(json.dumps(rows))
"""


@pytest.mark.slow
def test_a_process_without_torch_classifies_the_demo_like_predict(demo_export, tmp_path):
    out = demo_export / "onnx"
    images = sorted(str(path) for path in DEMO_DIR.glob("*/*.png"))
    finished = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(CONSUMER), json.dumps(images)],
        cwd=out,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert finished.returncode == 0, finished.stderr
    *printed, last = finished.stdout.splitlines()
    rows = json.loads(last)
    assert len(rows) == len(images) == 144
    assert [line.split()[0] for line in printed] == [row[1] for row in rows]  # what it prints

    predictions = tmp_path / "predictions.csv"
    assert main(["predict", str(demo_export), str(DEMO_DIR), "--out", str(predictions)]) == 0
    table = pd.read_csv(predictions).set_index("path")
    classes = json.loads((out / "classifier.json").read_text())["classes"]
    studio = table.loc[[row[0] for row in rows]]
    agree = np.mean(
        [row[1] == predicted for row, predicted in zip(rows, studio["predicted"], strict=True)]
    )
    assert agree >= 0.99
    expected = studio[[f"p({name})" for name in classes]].to_numpy()
    np.testing.assert_allclose(np.array([row[2] for row in rows]), expected, atol=1e-3)


def _altered_copy(source, target, shift: float = 8.0) -> None:
    """The exported graph with one class's intercept raised: it now mostly says that class."""
    model = onnx.load(source)
    (intercept,) = [i for i in model.graph.initializer if i.name == "intercept"]
    values = onnx.numpy_helper.to_array(intercept).copy()
    values[0] += shift
    intercept.CopyFrom(onnx.numpy_helper.from_array(values, "intercept"))
    onnx.save(model, target)


@pytest.mark.slow
def test_the_export_fails_loudly_when_the_graph_disagrees(
    demo_export, tmp_path, monkeypatch, capsys
):
    exported = demo_export / "onnx" / "classifier.onnx"
    altered = tmp_path / "altered.onnx"
    _altered_copy(exported, altered)
    weights = read_probe(demo_export)
    encoder = fp32_encoder(weights)
    card = json.loads((demo_export / "onnx" / "classifier.json").read_text())
    items = sample_items(scan(DEMO_DIR).items, 48)
    check = check_classifier(altered, card, items, encoder, weights)
    assert not check.passed and check.class_agreement < 0.9
    assert check.max_probability_difference > 0.1
    assert check_classifier(exported, card, items, encoder, weights).passed

    def altered_graph(graph, spec, path, weights):
        shutil.copy(altered, path)
        return [path.name]

    monkeypatch.setattr("probe_core.onnx_export.write_graph", altered_graph)
    out = tmp_path / "refused"
    with pytest.raises(SelfCheckError, match="self-check FAILED") as raised:
        export_onnx(weights, out, items, encoder=encoder)
    assert raised.value.check.n_images == 48
    assert list(out.iterdir()) == []  # nothing that looks like a finished export

    command = ["export", str(demo_export), "--format", "onnx", "--out", str(out)]
    assert main([*command, "--check-count", "24"]) == 2
    assert "the ONNX export was not written: self-check FAILED" in capsys.readouterr().err
    assert list(out.iterdir()) == []


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "size", "dim"), [("open_clip:ViT-B-32", 224, 512), ("timm:test_vit@random", 160, 64)]
)
def test_a_vit_exports_and_checks_itself(tmp_path, name, size, dim):
    """ViTs with random weights (offline): attention exports, with a dynamic batch."""
    study = Study(StudySettings(encoder=name, projection="none", device="cpu"))
    dataset = scan(DEMO_DIR)
    dataset.items = [item for item in dataset.items if dataset.items.index(item) % 24 < 6]
    outcome = study.run(dataset)
    from probe_core.export import probe_weights

    weights = probe_weights(
        outcome.embeddings,
        outcome.result,
        study.final_probe(outcome.embeddings, outcome.result),
        encoder_name=name,
        execution_path=study.encoder.precision,
    )
    exported = export_onnx(weights, tmp_path, sample_items(dataset.items, 24))
    assert exported.check.passed and exported.check.n_images == 24
    assert exported.card["input"]["size"] == [size, size]
    session = onnxruntime.InferenceSession(str(tmp_path / "classifier.onnx"))
    for n in (1, 5):
        batch = np.random.default_rng(n).integers(0, 256, (n, size, size, 3), dtype=np.uint8)
        probabilities, embedding = session.run(None, {"pixels": batch})
        assert probabilities.shape == (n, 6) and embedding.shape == (n, dim)


def test_the_readme_shows_the_example_the_export_writes():
    """The project README's "Use your classifier" carries the very ten lines of EXAMPLE."""
    readme = (DEMO_DIR.parent.parent / "README.md").read_text()
    section = readme.split("## Use your classifier", 1)[1].split("\n## ", 1)[0]
    assert f"```python\n{EXAMPLE}```" in section
    assert "onnxruntime-web" in section


def test_a_tie_in_predict_agrees_with_either_class_and_nothing_else_does():
    """A probe near the uniform distribution (tiny C, random weights): two classes within
    1e-6 are a tie, and the graph naming either agrees; a real difference never does."""
    expected = np.array(
        [[0.5, 0.3, 0.2], [1 / 3 + 2e-8, 1 / 3, 1 / 3 - 2e-8], [0.4, 0.4 - 1e-3, 0.2 + 1e-3]]
    )
    graph = np.array(
        [[0.5, 0.3, 0.2], [1 / 3, 1 / 3 + 2e-8, 1 / 3 - 2e-8], [0.4 - 1e-3, 0.4, 0.2 + 1e-3]]
    )
    assert agreeing_classes(graph, expected) == (2, 1)  # row 2: a 1e-3 gap is no tie
