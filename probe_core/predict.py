"""Apply a fitted probe to new images: embedded by the encoder the probe names, with the same
preprocessing and execution path as the images it was fitted on.

    weights = read_probe("probe-results")          # a run folder, or a probe file
    encoder, notes = encoder_for(weights)          # refuses another encoder id
    predictions, skipped = predict_items(scan_unlabelled(["new/"]).items, encoder, weights)
    predictions_table(predictions).to_csv("predictions.csv", index=False)

    classified = classify_image(jpeg_bytes, encoder, weights)   # one in-memory image, timed
    classified.prediction.probabilities, classified.seconds.forward
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import torch
from PIL import Image

from .dataset import ImageItem, SkippedItem
from .embed import ProgressCallback, encode_items, model_input, unit_embeddings
from .encoders import Encoder, EncoderError, load_encoder
from .images import load_image
from .probe import ProbeWeights


@dataclass(frozen=True)
class Prediction:
    """Class probabilities for one new image (columns follow ``class_names``), and the
    L2-normalised embedding the probe was applied to."""

    name: str
    class_names: list[str]
    probabilities: np.ndarray
    embedding: np.ndarray | None = None

    @property
    def predicted(self) -> str:
        return self.class_names[int(np.argmax(self.probabilities))]

    @property
    def confidence(self) -> float:
        return float(np.max(self.probabilities))


class ProbeMismatchError(ValueError):
    """A probe used with embeddings from an encoder it was not fitted on."""


def check_encoder(encoder: Encoder, weights: ProbeWeights) -> None:
    """Refuse an encoder other than the one the probe was fitted on, naming both ids."""
    if weights.encoder_id != encoder.encoder_id:
        raise ProbeMismatchError(
            f"this probe was fitted on embeddings of {weights.encoder_id}, not"
            f" {encoder.encoder_id} (the encoder loaded as {encoder.name!r}); its weights do"
            " not apply to another encoder's embeddings"
        )
    if weights.dim != encoder.dim:
        raise ProbeMismatchError(
            f"this probe expects {weights.dim}-d embeddings; {encoder.encoder_id} gives"
            f" {encoder.dim}-d"
        )


def encoder_for(
    weights: ProbeWeights, device: str | None = None, precision: str | None = None
) -> tuple[Encoder, list[str]]:
    """The encoder the probe names, on the execution path its embeddings ran on (or
    ``precision``), and notes on anything that differs from the run (another path where the
    run's cannot run here; another preprocessing digest).

    Raises ``ProbeMismatchError`` for a probe fitted on precomputed embeddings (no encoder
    name to load) or when the encoder loaded has another id than the probe's.
    """
    if not weights.encoder_name:
        raise ProbeMismatchError(
            f"this probe was fitted on precomputed embeddings of {weights.encoder_id}: the"
            " studio cannot load that encoder from its id. Embed new images with the tool"
            " that made those embeddings, or run the probe on the image folder itself"
        )
    notes = []
    path = precision or weights.execution_path or "auto"
    try:
        encoder = load_encoder(weights.encoder_name, device=device, precision=path)
    except EncoderError as error:
        if precision is not None or path == "auto":
            raise
        notes.append(
            f"the run's execution path {path} cannot run here ({error}); using the fastest"
            " faithful path instead, whose embeddings may differ from the run's in the last bits"
        )
        encoder = load_encoder(weights.encoder_name, device=device)
    check_encoder(encoder, weights)
    if weights.preprocess_id and encoder.preprocess_id != weights.preprocess_id:
        # The run may have decoded JPEGs at full size although its path is not fp32's.
        toggled = replace(encoder, fast_decoding=not encoder.fast_decoding)
        if toggled.preprocess_id == weights.preprocess_id:
            encoder = toggled
        else:
            notes.append(
                f"the preprocessing here ({encoder.preprocess_id}) differs from the run's"
                f" ({weights.preprocess_id}): another library version or device; predictions"
                " may differ slightly from the run's"
            )
    return encoder, notes


def predict_items(
    items: Sequence[ImageItem],
    encoder: Encoder,
    weights: ProbeWeights,
    *,
    batch_size: int | None = None,
    num_workers: int | None = 0,
    progress: ProgressCallback | None = None,
) -> tuple[list[Prediction], list[SkippedItem]]:
    """Embed the items exactly as the training images were, then apply the probe; files that
    cannot be read or decoded are skipped with their reason. Predictions keep the items'
    order."""
    check_encoder(encoder, weights)
    vectors, failures = encode_items(items, encoder, batch_size=batch_size, num_workers=num_workers)
    order = sorted(vectors)
    probabilities = (
        weights.predict_proba(np.stack([vectors[i] for i in order]))
        if order
        else np.zeros((0, len(weights.class_names)))
    )
    predictions = [
        Prediction(items[i].path, list(weights.class_names), row, vectors[i])
        for i, row in zip(order, probabilities, strict=True)
    ]
    skipped = [SkippedItem(items[i].path, reason) for i, reason in sorted(failures.items())]
    return predictions, skipped


def predict_images(
    files: Iterable[tuple[str, bytes]], encoder: Encoder, weights: ProbeWeights
) -> tuple[list[Prediction], list[SkippedItem]]:
    """``predict_items`` for (name, bytes) pairs, e.g. uploads."""
    return predict_items([ImageItem(name, data, -1) for name, data in files], encoder, weights)


@dataclass(frozen=True)
class StageSeconds:
    """Where one image's classification spent its time, in seconds."""

    decode: float  # bytes to an RGB image
    preprocess: float  # the encoder's own preprocessing, to the model's input tensor
    forward: float  # the encoder's forward pass and the L2 normalisation
    probe: float  # the probe's probabilities

    @property
    def total(self) -> float:
        return self.decode + self.preprocess + self.forward + self.probe


@dataclass(frozen=True)
class Classified:
    """One in-memory image classified: its prediction, the time each stage took, and the size
    of the image decoded (width, height)."""

    prediction: Prediction
    seconds: StageSeconds
    size: tuple[int, int]


def classify_image(
    data: bytes | Image.Image,
    encoder: Encoder,
    weights: ProbeWeights,
    *,
    name: str = "image",
    live: bool = False,
) -> Classified:
    """Classify one image held in memory (a webcam frame, a dropped file), each stage timed:
    decoded and preprocessed as ``predict_items`` does with a file of the same bytes, so the
    probabilities are the same. ``live=True`` (a frame shown and never stored) runs the image
    alone instead of in the encoder's fixed batch shape (``extraction.forward_batch``): many
    times faster, with probabilities that may differ from ``predict``'s in the last bits.
    Raises ``ImageLoadError`` for bytes that are not an image and ``ProbeMismatchError`` for
    an encoder other than the probe's."""
    check_encoder(encoder, weights)
    started = time.perf_counter()
    image = (
        data
        if isinstance(data, Image.Image)
        else load_image(data, draft_min_side=encoder.draft_side)
    )
    decoded = time.perf_counter()
    encoder.model.eval()
    with torch.inference_mode():
        batch = model_input([image], encoder)
        prepared = time.perf_counter()
        vector = unit_embeddings(encoder, batch, fixed_shape=not live)[0]
    embedded = time.perf_counter()
    probabilities = weights.predict_proba(vector[None, :])[0]
    finished = time.perf_counter()
    return Classified(
        Prediction(name, list(weights.class_names), probabilities, vector),
        StageSeconds(
            decode=decoded - started,
            preprocess=prepared - decoded,
            forward=embedded - prepared,
            probe=finished - embedded,
        ),
        image.size,
    )


def predictions_table(
    predictions: Sequence[Prediction], class_names: Sequence[str]
) -> pd.DataFrame:
    """``path,predicted,confidence``, then ``p(<class>)`` for each class (as in a run's
    predictions.csv)."""
    frame = pd.DataFrame(
        {
            "path": [p.name for p in predictions],
            "predicted": [p.predicted for p in predictions],
        }
    )
    matrix = (
        np.stack([p.probabilities for p in predictions])
        if predictions
        else np.zeros((0, len(class_names)))
    )
    frame["confidence"] = matrix.max(axis=1, initial=0.0)
    for column, name in enumerate(class_names):
        frame[f"p({name})"] = matrix[:, column]
    return frame
