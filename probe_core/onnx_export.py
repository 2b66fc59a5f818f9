"""One ONNX file that classifies anywhere: the encoder, its scaling and normalisation, the L2
normalisation and the probe in one float32 graph, described by a model card, and checked
against the studio before the export reports success.

``export_run(run_dir)`` (the CLI's ``export RUN_DIR --format onnx``) and ``export_onnx`` (the
app, a notebook) write into one folder:

- ``classifier.onnx``: input ``pixels``, uint8 ``[N, H, W, 3]`` RGB, already resized and
  cropped to the encoder's input size; outputs ``probabilities`` ``[N, classes]`` and
  ``embedding`` ``[N, dim]`` (L2-normalised); the batch dimension is dynamic.
- ``classifier.json``: the model card (classes, how to make ``pixels``, encoder, protocol,
  metrics with their intervals, images per class, the self-check, the date).
- ``README.md``: what it is, how well it was measured, and ``EXAMPLE``: ten lines of Python
  with onnxruntime and Pillow that classify one image.

The self-check: a sample of the run's images, made into ``pixels`` exactly as the card says
(``card_pixels``, the same statements as ``EXAMPLE``), through onnxruntime, against
``predict`` on the fp32 path (the arithmetic the graph holds, JPEGs decoded at full size):
classes must agree on at least ``MIN_CLASS_AGREEMENT`` of the images and probabilities within
``MAX_PROBABILITY_DIFFERENCE``, or the export fails with ``SelfCheckError`` and leaves no file.

The card's description is exact for encoders whose preprocessing is a torchvision
``Resize(shorter side)`` (bilinear or bicubic) then ``CenterCrop``, then ``ToTensor`` and
``Normalize`` (the bundled encoder, open_clip and timm models; ``InputSpec.from_preprocess``
refuses anything else with the reason, e.g. a transformers image processor): Pillow computes
those same pixels (torchvision's resize of a Pillow image is Pillow's ``resize``), tested
image by image against the studio's own.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import nn
from torchvision import transforms

from .dataset import ImageItem, scan
from .encoders import Encoder, EncoderError, baselines, load_encoder, parse_name
from .export import read_probe
from .predict import check_encoder, predict_items
from .preprocessing import compose_steps
from .probe import ProbeWeights

ONNX_OUTPUTS = ("classifier.onnx", "classifier.json", "README.md")
CARD_FORMAT = "probe-studio-onnx-classifier/1"
OPSET = 18  # the torch.export-based exporter's lowest; onnxruntime and onnxruntime-web run it
DEFAULT_CHECK_IMAGES = 128
MIN_CLASS_AGREEMENT = 0.99
MAX_PROBABILITY_DIFFERENCE = 1e-3
# Two classes whose probabilities in ``predict`` lie within this are a tie: either is its
# argmax, so the graph naming the other still agrees (float32 probabilities resolve ~1e-7).
TIE_TOLERANCE = 1e-6
CHECK_BATCH = 16
EXTERNAL_DATA_BYTES = 1_800_000_000  # protobuf's 2 GB limit: larger weights go beside the file
INTERPOLATIONS = {
    transforms.InterpolationMode.BILINEAR: "bilinear",
    transforms.InterpolationMode.BICUBIC: "bicubic",
}
ONNX_EXTRA = 'pip install "probe-studio[onnx]" (onnx, onnxruntime, onnxscript)'

# The README's example, statement for statement what ``card_pixels`` does (a test runs it).
EXAMPLE = """\
import json, numpy as np, onnxruntime as ort; from PIL import Image, ImageOps
card = json.load(open("classifier.json")); spec = card["input"]; H, W = spec["size"]
image = ImageOps.exif_transpose(Image.open("photo.jpg")).convert("RGBA"); w, h = image.size
rgb = Image.new("RGB", (w, h), "white"); rgb.paste(image, mask=image.getchannel("A"))
r, f = spec["resize_shorter_to"], Image.Resampling[spec["interpolation"].upper()]
rgb = rgb.resize((r, int(r * h / w)) if w <= h else (int(r * w / h), r), f)
left, top = round((rgb.width - W) / 2), round((rgb.height - H) / 2)
pixels = np.asarray(rgb.crop((left, top, left + W, top + H)))[None]  # uint8 [1, H, W, 3]
p = ort.InferenceSession("classifier.onnx").run(None, {"pixels": pixels})[0][0]
print(card["classes"][p.argmax()], p.max())
"""


class OnnxExportError(ValueError):
    """An export that cannot be made: a missing extra, an encoder or preprocessing the card
    cannot describe, a probe without an encoder to load, no images to check it on."""


@dataclass(frozen=True)
class SelfCheck:
    """onnxruntime on the card's pixels against ``predict`` on the fp32 path."""

    n_images: int
    n_agree: int
    max_probability_difference: float
    max_embedding_difference: float
    reference: str
    n_unreadable: int = 0  # sampled files that could not be decoded (skipped by both)
    n_ties: int = 0  # of n_agree: another class of a tie (within TIE_TOLERANCE) in predict
    # Against the run's own vectors (its execution path, e.g. int8-dynamic): for information.
    run_path: str = ""
    run_path_n_images: int = 0
    run_path_n_agree: int = 0
    run_path_max_probability_difference: float | None = None

    @property
    def class_agreement(self) -> float:
        return self.n_agree / self.n_images if self.n_images else 0.0

    @property
    def passed(self) -> bool:
        return (
            self.n_images > 0
            and self.class_agreement >= MIN_CLASS_AGREEMENT
            and self.max_probability_difference <= MAX_PROBABILITY_DIFFERENCE
        )

    def sentence(self) -> str:
        verdict = "passed" if self.passed else "FAILED"
        sentence = (
            f"self-check {verdict}: on {self.n_images} of the run's images, onnxruntime and"
            f" `predict` agree on the class of {self.n_agree} ({self.class_agreement:.1%};"
            f" at least {MIN_CLASS_AGREEMENT:.0%} required), probabilities within"
            f" {self.max_probability_difference:.1e} (at most {MAX_PROBABILITY_DIFFERENCE:.0e})"
        )
        if self.n_ties:
            sentence += (
                f"; {self.n_ties} of them a tie in `predict` (two classes within"
                f" {TIE_TOLERANCE:.0e}), where the graph named the other class"
            )
        if self.run_path_n_images:
            sentence += (
                f"; against the run's own {self.run_path} vectors: the same class on"
                f" {self.run_path_n_agree} of {self.run_path_n_images}, probabilities within"
                f" {self.run_path_max_probability_difference:.1e}"
            )
        return sentence

    def to_dict(self) -> dict:
        return asdict(self) | {
            "class_agreement": self.class_agreement,
            "passed": self.passed,
            "required": {
                "class_agreement": MIN_CLASS_AGREEMENT,
                "max_probability_difference": MAX_PROBABILITY_DIFFERENCE,
            },
        }


class SelfCheckError(OnnxExportError):
    """The exported graph disagrees with the studio: nothing was written."""

    def __init__(self, check: SelfCheck):
        super().__init__(f"the ONNX export was not written: {check.sentence()}")
        self.check = check


@dataclass(frozen=True)
class InputSpec:
    """How an image becomes the graph's ``pixels``: resize the shorter side, crop the centre;
    and the scaling inside the graph (``/ 255``, then ``- mean``, ``/ std``)."""

    size: tuple[int, int]  # (height, width) of the crop
    resize_shorter_to: int
    interpolation: str  # "bilinear" | "bicubic"
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)

    @classmethod
    def from_preprocess(cls, preprocess: Callable) -> InputSpec:
        """The spec of a torchvision ``Resize(int)`` + ``CenterCrop`` + ``ToTensor`` (+ one
        ``Normalize``) pipeline, RGB conversions allowed; ``OnnxExportError`` otherwise."""
        steps = compose_steps(preprocess)
        shape = "Resize(shorter side), CenterCrop, ToTensor and Normalize"
        processor = getattr(preprocess, "processor", None)
        if steps is None and processor is not None:
            raise OnnxExportError(
                f"the encoder's preprocessing is a transformers image processor"
                f" ({type(processor).__name__}), which resizes with its own code (torchvision"
                " on tensors) rather than Pillow's, so classifier.json could not describe its"
                " pixels exactly; ONNX export covers encoders with torchvision preprocessing"
                " (the bundled encoder, open_clip and timm models)"
            )
        if steps is None or len(steps[1]) > 1:
            raise OnnxExportError(
                f"the encoder's preprocessing is not {shape}, so classifier.json could not"
                f" describe it exactly: {preprocess!r}"
            )
        geometry, normalizes = steps
        if not (
            len(geometry) == 2
            and isinstance(geometry[0], transforms.Resize)
            and isinstance(geometry[1], transforms.CenterCrop)
        ):
            raise OnnxExportError(
                f"the encoder's geometry is {geometry!r}, not a Resize then a CenterCrop"
            )
        resize, crop = geometry
        size = [resize.size] if isinstance(resize.size, int) else list(resize.size)
        if len(size) != 1 or resize.max_size is not None:
            raise OnnxExportError(
                f"{resize!r} does not resize the shorter side to one length (a fixed"
                " height and width squashes the image; classifier.json cannot describe it)"
            )
        if resize.interpolation not in INTERPOLATIONS:
            raise OnnxExportError(f"{resize!r}: only bilinear and bicubic are described")
        height, width = crop.size
        if size[0] < max(height, width):
            raise OnnxExportError(f"{crop!r} is larger than {resize!r}: the crop would pad")
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
        if normalizes:
            mean = tuple(float(v) for v in torch.as_tensor(normalizes[0].mean).reshape(-1))
            std = tuple(float(v) for v in torch.as_tensor(normalizes[0].std).reshape(-1))
            mean, std = (mean * 3 if len(mean) == 1 else mean), (std * 3 if len(std) == 1 else std)
        return cls(
            (int(height), int(width)), int(size[0]), INTERPOLATIONS[resize.interpolation], mean, std
        )

    def card(self) -> dict:
        """The card's ``input``: what a caller must do, and what the graph does itself."""
        return {
            "name": "pixels",
            "size": list(self.size),
            "resize_shorter_to": self.resize_shorter_to,
            "crop": "center",
            "interpolation": self.interpolation,
            "layout": "NHWC",
            "dtype": "uint8",
            "channels": "RGB",
            "steps": [
                "decode the file, apply its EXIF orientation, take the first frame",
                "composite transparency on white; 8-bit RGB",
                f"resize with Pillow's {self.interpolation} filter (antialiased) so that the"
                f" shorter side is {self.resize_shorter_to}: (r, int(r * h / w)) when w <= h,"
                " else (int(r * w / h), r)",
                f"crop {self.size[0]}x{self.size[1]} (height x width) at left ="
                " round((width - W) / 2), top = round((height - H) / 2)",
                "stack as uint8 [N, H, W, 3]; the graph divides by 255, subtracts mean and"
                " divides by std itself",
            ],
            "mean": list(self.mean),
            "std": list(self.std),
            "note": "two rare cases the steps leave out, which the studio handles first: an"
            " image more than 16 times longer than wide (or wider than long) is padded on white"
            " to 16:1, and a 16-bit image is scaled to 8 bits",
        }


def card_pixels(data: bytes, card_input: dict) -> np.ndarray:
    """``pixels`` for one image file, exactly as the card says (``EXAMPLE``'s statements):
    uint8 ``[H, W, 3]``."""
    H, W = card_input["size"]
    image = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGBA")
    w, h = image.size
    rgb = Image.new("RGB", (w, h), "white")
    rgb.paste(image, mask=image.getchannel("A"))
    r, f = card_input["resize_shorter_to"], Image.Resampling[card_input["interpolation"].upper()]
    rgb = rgb.resize((r, int(r * h / w)) if w <= h else (int(r * w / h), r), f)
    left, top = round((rgb.width - W) / 2), round((rgb.height - H) / 2)
    return np.asarray(rgb.crop((left, top, left + W, top + H)))


class ClassifierGraph(nn.Module):
    """uint8 NHWC RGB pixels -> (probabilities, L2-normalised embedding): the studio's own
    arithmetic (``SplitPreprocess.batch``, ``embed``, ``ProbeWeights.predict_proba``) in one
    module."""

    def __init__(self, model: nn.Module, spec: InputSpec, weights: ProbeWeights):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(spec.mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(spec.std, dtype=torch.float32))
        self.register_buffer("coef", torch.from_numpy(np.ascontiguousarray(weights.coef.T)))
        self.register_buffer("intercept", torch.from_numpy(weights.intercept.copy()))

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scaled = (pixels.to(torch.float32) / 255 - self.mean) / self.std
        features = self.model(scaled.permute(0, 3, 1, 2)).float()
        embedding = features / features.norm(dim=-1, keepdim=True)
        probabilities = torch.softmax(embedding @ self.coef + self.intercept, dim=-1)
        return probabilities, embedding


@dataclass(frozen=True)
class OnnxExport:
    """What an export wrote, and its self-check."""

    directory: Path
    files: list[Path]
    card: dict
    check: SelfCheck


def require_onnx() -> None:
    """Refuse clearly when the ``[onnx]`` extra is missing."""
    missing = []
    for module in ("onnx", "onnxruntime", "onnxscript"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise OnnxExportError(f"{', '.join(missing)} not installed: {ONNX_EXTRA}")


def refuse_unexportable(weights: ProbeWeights) -> None:
    """Probes whose encoder cannot become a graph, with the reason."""
    if not weights.encoder_name:
        raise OnnxExportError(
            f"this probe was fitted on precomputed embeddings of {weights.encoder_id}; the"
            " studio cannot load that encoder to put it into the graph"
        )
    try:
        family, _ = parse_name(weights.encoder_name)
    except EncoderError:
        return  # loading the encoder says what is wrong with the name
    if family is baselines.FAMILY:
        raise OnnxExportError(
            f"{weights.encoder_name} is a weight-free baseline, a yardstick rather than a"
            " classifier to ship, and its features cannot take the card's input: baseline:pixels"
            " squashes the whole image to 16x16 (no resize-and-crop classifier.json could"
            " describe), baseline:color-histogram counts colours over every pixel of the image"
            " at its own size (no fixed-size input holds them). Export a run of a real encoder"
        )


def fp32_encoder(weights: ProbeWeights, encoder: Encoder | None = None) -> Encoder:
    """The probe's encoder on the CPU, plain fp32 and full-size decoding: what the graph holds,
    and the reference of the self-check (``encoder`` is reused when it is that already)."""
    if (
        encoder is None
        or encoder.precision != "fp32"
        or encoder.fast_decoding
        or encoder.device.type != "cpu"
    ):
        encoder = load_encoder(weights.encoder_name, device="cpu", precision="fp32")
    check_encoder(encoder, weights)
    return encoder


def export_onnx(
    weights: ProbeWeights,
    out_dir: str | os.PathLike[str],
    check_items: Sequence[ImageItem],
    *,
    encoder: Encoder | None = None,
    run_vectors: Mapping[str, np.ndarray] | None = None,
    log: Callable[[str], None] = lambda message: None,
) -> OnnxExport:
    """Write classifier.onnx, classifier.json and README.md into ``out_dir`` once the graph
    agrees with ``predict`` on ``check_items`` (``SelfCheckError`` otherwise, nothing
    written). ``run_vectors`` (the run's embeddings by path) add, for information, how the
    graph compares with the probe on the run's own execution path."""
    require_onnx()
    refuse_unexportable(weights)
    encoder = fp32_encoder(weights, encoder)
    spec = InputSpec.from_preprocess(encoder.preprocess)
    if not check_items:
        raise OnnxExportError("no images to check the export on")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".onnx-export-", dir=out))
    try:
        graph = ClassifierGraph(encoder.model, spec, weights).eval()
        log(f"exporting {weights.encoder_id} and the probe to ONNX (torch.onnx, opset {OPSET})…")
        model_files = write_graph(graph, spec, staging / ONNX_OUTPUTS[0], weights)
        card = model_card(weights, spec)
        log(f"checking the export on {len(check_items)} of the run's images…")
        check = check_classifier(
            staging / ONNX_OUTPUTS[0], card, check_items, encoder, weights, run_vectors
        )
        log(check.sentence())
        if not check.passed:
            raise SelfCheckError(check)
        card["self_check"] = check.to_dict()
        (staging / ONNX_OUTPUTS[1]).write_text(json.dumps(card, indent=2, allow_nan=True))
        (staging / ONNX_OUTPUTS[2]).write_text(readme(card))
        files = []
        for name in [*model_files, *ONNX_OUTPUTS[1:]]:
            os.replace(staging / name, out / name)
            files.append(out / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return OnnxExport(out, files, card, check)


def write_graph(
    graph: ClassifierGraph, spec: InputSpec, path: Path, weights: ProbeWeights
) -> list[str]:
    """``torch.onnx.export`` (the torch.export-based exporter, torch's default: it handles
    convolutions and attention alike, where the TorchScript exporter fails on
    ``nn.MultiheadAttention``'s fused inference path) with a dynamic batch axis; the file
    names written (the model, and its weights beside it above protobuf's 2 GB limit)."""
    height, width = spec.size
    example = torch.randint(0, 256, (2, height, width, 3), dtype=torch.uint8)
    batch = torch.export.Dim("batch")
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            graph,
            (example,),
            dynamo=True,
            input_names=["pixels"],
            output_names=["probabilities", "embedding"],
            dynamic_shapes=({0: batch},),
            opset_version=OPSET,
            optimize=True,
            verbose=False,
        )
    program.model.metadata_props.update(
        {
            "format": CARD_FORMAT,
            "classes": json.dumps(weights.class_names),
            "encoder_id": weights.encoder_id,
        }
    )
    size = sum(buffer.numel() * buffer.element_size() for buffer in graph.state_dict().values())
    external = size > EXTERNAL_DATA_BYTES
    program.save(path, external_data=external)
    return sorted(p.name for p in path.parent.iterdir() if p.name.startswith(path.name))


def check_classifier(
    onnx_path: str | os.PathLike[str],
    card: dict,
    items: Sequence[ImageItem],
    encoder: Encoder,
    weights: ProbeWeights,
    run_vectors: Mapping[str, np.ndarray] | None = None,
) -> SelfCheck:
    """onnxruntime on the card's pixels of ``items`` against ``predict_items`` with the fp32
    ``encoder`` (files either side cannot decode are left out and counted); and, for
    information, against the probe on ``run_vectors`` (the run's own embeddings by path)."""
    import onnxruntime

    reference, _ = predict_items(items, encoder, weights)
    by_name = {prediction.name: prediction for prediction in reference}
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names, pixels, unreadable = [], [], 0
    for item in items:
        if item.path not in by_name:
            unreadable += 1
            continue
        try:
            pixels.append(card_pixels(item.read_bytes(), card["input"]))
        except Exception:
            unreadable += 1
            continue
        names.append(item.path)
    probabilities, embeddings = [], []
    for start in range(0, len(pixels), CHECK_BATCH):
        batch = np.stack(pixels[start : start + CHECK_BATCH])
        p, e = session.run(["probabilities", "embedding"], {"pixels": batch})
        probabilities.append(p)
        embeddings.append(e)
    if not names:
        return SelfCheck(0, 0, float("inf"), float("inf"), _REFERENCE, unreadable)
    onnx_probabilities = np.concatenate(probabilities)
    expected = np.stack([by_name[name].probabilities for name in names])
    agree, ties = agreeing_classes(onnx_probabilities, expected)
    vectors = np.stack([by_name[name].embedding for name in names])
    run_path = {}
    known = [i for i, name in enumerate(names) if run_vectors and name in run_vectors]
    if known:
        run = weights.predict_proba(np.stack([run_vectors[names[i]] for i in known]))
        ours = onnx_probabilities[known]
        run_path = {
            "run_path": weights.execution_path or "recorded",
            "run_path_n_images": len(known),
            "run_path_n_agree": int(np.sum(ours.argmax(axis=1) == run.argmax(axis=1))),
            "run_path_max_probability_difference": float(np.abs(ours - run).max()),
        }
    return SelfCheck(
        n_images=len(names),
        n_agree=agree,
        n_ties=ties,
        max_probability_difference=float(np.abs(onnx_probabilities - expected).max()),
        max_embedding_difference=float(np.abs(np.concatenate(embeddings) - vectors).max()),
        reference=_REFERENCE,
        n_unreadable=unreadable,
        **run_path,
    )


_REFERENCE = "probe-studio predict on the fp32 path, files decoded at full size"


def agreeing_classes(probabilities: np.ndarray, expected: np.ndarray) -> tuple[int, int]:
    """(rows whose class agrees, of them ties): a row agrees when ``probabilities`` names the
    class ``expected`` does, or a class that ``expected`` ties with the top one (within
    ``TIE_TOLERANCE``: an argmax among equals is arbitrary)."""
    chosen = probabilities.argmax(axis=1)
    same = chosen == expected.argmax(axis=1)
    rows = np.arange(len(chosen))
    tie = ~same & (expected[rows, chosen] >= expected.max(axis=1) - TIE_TOLERANCE)
    return int(np.sum(same | tie)), int(np.sum(tie))


def model_card(weights: ProbeWeights, spec: InputSpec) -> dict:
    """classifier.json without its self-check."""
    return {
        "format": CARD_FORMAT,
        "classes": list(weights.class_names),
        "input": spec.card(),
        "outputs": {
            "probabilities": ["N", len(weights.class_names)],
            "embedding": ["N", weights.dim],
            "note": "probabilities: softmax of the probe's logits; embedding: the encoder's"
            " features divided by their L2 norm, what the probe was fitted on",
        },
        "dtype": "float32",
        "opset": OPSET,
        "encoder_id": weights.encoder_id,
        "encoder_name": weights.encoder_name,
        "run_execution_path": weights.execution_path,
        "chosen_c": weights.chosen_c,
        "protocol": weights.protocol,
        "metrics": weights.metrics,
        "images_per_class": weights.images_per_class,
        "n_images": int(sum(weights.images_per_class.values())),
        "probe_fitted": weights.created,
        "date": datetime.now(UTC).date().isoformat(),
        "exported_with": f"probe-studio, torch {torch.__version__.split('+')[0]}",
    }


def _estimate(metrics: dict, name: str) -> str:
    value = metrics.get(name)
    if not value:
        return "not measured"
    return f"{value['value']:.1%} (95% CI {value['low']:.1%} to {value['high']:.1%})"


def readme(card: dict) -> str:
    """README.md: what the model is, how well it was measured, how to run it."""
    classes = card["classes"]
    metrics = card.get("metrics") or {}
    protocol = card.get("protocol") or {}
    check = card.get("self_check") or {}
    per_class = ", ".join(f"{name} {count}" for name, count in card["images_per_class"].items())
    size = card["input"]["size"]
    lines = [
        "# An image classifier made with Probe Studio",
        "",
        f"`classifier.onnx` sorts an image into one of {len(classes)} classes:"
        f" {', '.join(f'`{name}`' for name in classes)}. It is one float32 graph: the frozen"
        f" encoder `{card['encoder_id']}`, its scaling and normalisation, and a linear probe"
        " (multinomial logistic regression) on the encoder's L2-normalised embedding.",
        "",
        f"It was fitted on {card['n_images']} images ({per_class}), C = {card['chosen_c']:.4g}.",
        "",
        "## How well it works",
        "",
        f"Measured by {protocol.get('description', 'the studio')}. {protocol.get('scored', '')}",
        "",
        f"- accuracy: {_estimate(metrics, 'accuracy')}",
        f"- balanced accuracy: {_estimate(metrics, 'balanced_accuracy')}",
        f"- macro F1: {_estimate(metrics, 'macro_f1')}",
    ]
    if metrics.get("top5_accuracy"):
        lines.append(f"- top-5 accuracy: {_estimate(metrics, 'top5_accuracy')}")
    lines += [
        "",
        "The intervals are 95% intervals (accuracy: Clopper-Pearson). The probe in this file was"
        " then refitted on every image at the chosen C. New images that differ from these"
        " (other cameras, other backgrounds, other classes) may score lower.",
        "",
        "## Checked before it was written",
        "",
        f"{check.get('n_images', 0)} of the images went through this file with onnxruntime,"
        " made into `pixels` exactly as `classifier.json` says, and through the studio's own"
        f" `predict` ({check.get('reference', '')}; the graph holds fp32 arithmetic): the"
        " classes agreed on"
        f" {check.get('n_agree', 0)} ({check.get('class_agreement', 0):.1%}) and the"
        f" probabilities within {check.get('max_probability_difference', float('nan')):.1e}."
        + _run_path_sentence(check),
        "",
        "## Use it",
        "",
        f"The input `pixels` is uint8 `[N, {size[0]}, {size[1]}, 3]`, RGB, already resized and"
        " cropped (`classifier.json` → `input` says how); the graph scales and normalises"
        " itself. The outputs are `probabilities` `[N, classes]` (in the order of"
        " `classifier.json` → `classes`) and `embedding` `[N, dim]`. With `pip install"
        " onnxruntime pillow numpy`, this classifies `photo.jpg`:",
        "",
        "```python",
        EXAMPLE.rstrip(),
        "```",
        "",
        "[onnxruntime-web](https://onnxruntime.ai/docs/tutorials/web/) runs the same file in a"
        " browser (`ort.InferenceSession.create('classifier.onnx')`, a `uint8` tensor of shape"
        f" `[1, {size[0]}, {size[1]}, 3]` fed as `pixels`); onnxruntime's other bindings (C,"
        " C#, Java, JavaScript, mobile) take it as it is.",
        "",
        f"Exported on {card['date']} with {card['exported_with']}.",
        "",
    ]
    return "\n".join(lines)


def _run_path_sentence(check: dict) -> str:
    if not check.get("run_path_n_images"):
        return ""
    return (
        f" Against the run's own embeddings ({check['run_path']} path), the classes agreed on"
        f" {check['run_path_n_agree']} of {check['run_path_n_images']} and the probabilities"
        f" within {check['run_path_max_probability_difference']:.1e}."
    )


def sample_items(items: Sequence[ImageItem], count: int, seed: int = 0) -> list[ImageItem]:
    """Up to ``count`` items, the classes taking turns, each class shuffled (seeded)."""
    rng = np.random.default_rng(seed)
    by_class: dict[int, list[ImageItem]] = {}
    for item in items:
        by_class.setdefault(item.label, []).append(item)
    queues = [list(rng.permutation(len(members))) for members in by_class.values()]
    members = list(by_class.values())
    chosen: list[ImageItem] = []
    while len(chosen) < count and any(queues):
        for queue, group in zip(queues, members, strict=True):
            if queue and len(chosen) < count:
                chosen.append(group[queue.pop()])
    return chosen


def run_images(
    run_dir: str | os.PathLike[str], source: str | None = None
) -> tuple[list[ImageItem], dict[str, np.ndarray]]:
    """The images a run used (its ``embeddings.parquet`` paths), from its source folder or zip
    (``source`` overrides the one ``metrics.json`` records), and their vectors by path."""
    run = Path(run_dir)
    if source is None:
        try:
            source = json.loads((run / "metrics.json").read_text())["settings"]["source"]
        except (OSError, ValueError, KeyError) as error:
            raise OnnxExportError(
                f"{run} does not say where its images are ({error}); give --check-images"
            ) from error
    try:
        dataset = scan(source)
    except (OSError, ValueError) as error:
        raise OnnxExportError(
            f"the run's images are needed to check the export, but {source} cannot be read"
            f" ({error}); give --check-images FOLDER_OR_ZIP"
        ) from error
    vectors: dict[str, np.ndarray] = {}
    embeddings = run / "embeddings.parquet"
    if embeddings.is_file():
        import pyarrow.parquet as pq

        table = pq.read_table(embeddings, columns=["path", "vector"]).to_pydict()
        vectors = {
            path: np.asarray(vector, dtype=np.float32)
            for path, vector in zip(table["path"], table["vector"], strict=True)
        }
    items = [item for item in dataset.items if not vectors or item.path in vectors]
    if not items:
        raise OnnxExportError(
            f"none of the run's images were found in {source}; give --check-images FOLDER_OR_ZIP"
        )
    return items, vectors


def export_from_images(
    weights: ProbeWeights,
    out_dir: str | os.PathLike[str],
    items: Sequence[ImageItem],
    run_vectors: Mapping[str, np.ndarray] | None = None,
    *,
    n_check: int = DEFAULT_CHECK_IMAGES,
    encoder: Encoder | None = None,
    log: Callable[[str], None] = lambda message: None,
) -> OnnxExport:
    """``export_onnx`` checked on up to ``n_check`` of ``items`` (the run's images; only those
    with a vector in ``run_vectors`` when given), the classes taking turns."""
    if run_vectors:
        items = [item for item in items if item.path in run_vectors]
    sample = sample_items(items, n_check)
    return export_onnx(weights, out_dir, sample, encoder=encoder, run_vectors=run_vectors, log=log)


def export_run(
    run_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str] | None = None,
    *,
    check_images: str | None = None,
    n_check: int = DEFAULT_CHECK_IMAGES,
    log: Callable[[str], None] = lambda message: None,
) -> OnnxExport:
    """``probe-studio export RUN_DIR --format onnx``: the run's probe (``probe.safetensors``)
    and encoder as one ONNX file in ``out_dir`` (default ``RUN_DIR/onnx``), checked on up to
    ``n_check`` of the run's images."""
    require_onnx()
    weights = read_probe(run_dir)
    refuse_unexportable(weights)
    items, vectors = run_images(run_dir, check_images)
    out = Path(out_dir) if out_dir is not None else Path(run_dir) / "onnx"
    return export_from_images(weights, out, items, vectors, n_check=n_check, log=log)


def zip_export(exported: OnnxExport) -> bytes:
    """The export's files as one zip archive (the app's download)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in exported.files:
            archive.write(path, path.name)
    return buffer.getvalue()


def check_exportable(weights: ProbeWeights, encoder: Encoder | None = None) -> None:
    """Whether ``weights`` can become an ONNX classifier, decided without exporting anything
    (the app asks before it offers the button): ``OnnxExportError`` with the reason when the
    ``[onnx]`` extra is missing, the encoder is a baseline or cannot be loaded from the probe,
    or its preprocessing is one the card cannot describe (``encoder``: the probe's encoder
    when at hand, any path; its preprocessing is what counts)."""
    require_onnx()
    refuse_unexportable(weights)
    if encoder is not None:
        check_encoder(encoder, weights)
        InputSpec.from_preprocess(encoder.preprocess)


@dataclass(frozen=True)
class OnnxZip:
    """The export as one zip (classifier.onnx, classifier.json, README.md), its card and its
    self-check: the app's download."""

    data: bytes
    card: dict
    check: SelfCheck


def export_zip(
    weights: ProbeWeights,
    items: Sequence[ImageItem],
    run_vectors: Mapping[str, np.ndarray] | None = None,
    *,
    n_check: int | None = None,
    encoder: Encoder | None = None,
    log: Callable[[str], None] = lambda message: None,
) -> OnnxZip:
    """``export_from_images`` into a private temporary folder, returned as one zip archive
    (the folder is removed); the same checks and refusals as the CLI's export."""
    with tempfile.TemporaryDirectory(prefix="probe-studio-onnx-") as folder:
        exported = export_from_images(
            weights,
            folder,
            items,
            run_vectors,
            n_check=DEFAULT_CHECK_IMAGES if n_check is None else n_check,
            encoder=encoder,
            log=log,
        )
        return OnnxZip(zip_export(exported), exported.card, exported.check)
