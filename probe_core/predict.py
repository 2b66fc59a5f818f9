"""Apply a fitted probe to new images."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from .dataset import ImageItem, SkippedItem
from .embed import encode_items
from .encoders import Encoder
from .probe import ProbeWeights


@dataclass(frozen=True)
class Prediction:
    """Class probabilities for one new image (columns follow ``class_names``)."""

    name: str
    class_names: list[str]
    probabilities: np.ndarray

    @property
    def predicted(self) -> str:
        return self.class_names[int(np.argmax(self.probabilities))]


class ProbeMismatchError(ValueError):
    """A probe used with embeddings from an encoder it was not fitted on."""


def predict_images(
    files: Iterable[tuple[str, bytes]], encoder: Encoder, weights: ProbeWeights
) -> tuple[list[Prediction], list[SkippedItem]]:
    """Embed new images exactly as the training images were, then apply the probe."""
    if weights.encoder_id != encoder.encoder_id:
        raise ProbeMismatchError(
            f"this probe was fitted on embeddings of {weights.encoder_id}, not {encoder.encoder_id}"
        )
    items = [ImageItem(name, data, -1) for name, data in files]
    vectors, failures = encode_items(items, encoder, num_workers=0)
    order = sorted(vectors)
    probabilities = (
        weights.predict_proba(np.stack([vectors[i] for i in order])) if order else np.zeros((0, 0))
    )
    predictions = [
        Prediction(items[i].path, list(weights.class_names), row)
        for i, row in zip(order, probabilities, strict=True)
    ]
    skipped = [SkippedItem(items[i].path, reason) for i, reason in sorted(failures.items())]
    return predictions, skipped
