"""Zero-shot classification with an encoder's text tower, to compare with the probe.

Each class name (the folder name, ``_`` and ``-`` read as spaces) is put into every prompt
template, the prompts are embedded by the text tower and L2-normalised, averaged per class
and re-normalised: CLIP's prompt ensemble. An image's class probabilities are the softmax of
``logit_scale`` times its cosine similarity to each class embedding. The templates default
to open_clip's 80 OpenAI ImageNet templates; any list of ``"{}"`` format strings or
callables (as open_clip uses) can replace them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy.special import softmax

from ..embeddings import Embeddings
from .intervals import Estimate, proportion_interval
from .protocols import ProbeResult

if TYPE_CHECKING:  # the encoder comes loaded: this module never loads torch itself
    from ..encoders import Encoder

Template = str | Callable[[str], str]

DEFAULT_LOGIT_SCALE = 100.0  # CLIP's learned temperature, capped at 100
TEXT_BATCH_SIZE = 256


@dataclass(frozen=True)
class ZeroShotResult:
    """Zero-shot predictions on the probe's evaluation images, or why there are none.

    ``predictions`` and ``labels`` index ``class_names``; ``evaluated`` indexes the
    embeddings; ``probabilities`` is (n_evaluated, n_classes). ``templates`` are the
    templates used, written as format strings.
    """

    encoder: str
    available: bool
    reason: str = ""
    class_names: tuple[str, ...] = ()
    accuracy: Estimate | None = None
    evaluated: np.ndarray | None = None
    labels: np.ndarray | None = None
    predictions: np.ndarray | None = None
    probabilities: np.ndarray | None = None
    templates: tuple[str, ...] = ()


class TemplateError(ValueError):
    """Prompt templates that cannot be used, with the reason (the first problem found)."""


def parse_templates(text: str) -> list[str]:
    """Templates written one per line (the CLI's ``--templates`` file, the app's box): the
    non-empty lines, stripped, each with exactly one ``{}`` for the class name; else
    ``TemplateError`` saying which line is wrong and why. One rule for the CLI and the app."""
    templates = [line.strip() for line in text.splitlines() if line.strip()]
    if not templates:
        raise TemplateError("Write at least one zero-shot template.")
    for template in templates:
        try:
            slots = template.format("\0").count("\0")  # where the class name goes
        except (IndexError, KeyError, ValueError):
            slots = -1
        if slots == 0:
            raise TemplateError(f"Template “{template}” has no {{}} for the class name.")
        if slots != 1:
            raise TemplateError(f"Template “{template}” has braces other than one {{}}.")
    return templates


def default_templates() -> tuple[Template, ...]:
    """open_clip's OpenAI ImageNet prompt templates (80 callables)."""
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

    return tuple(OPENAI_IMAGENET_TEMPLATES)


def class_prompts(class_names: Sequence[str]) -> list[str]:
    """Folder names as words: ``smileys_emotion`` -> ``smileys emotion``."""
    return [" ".join(re.sub(r"[_-]+", " ", name).split()) for name in class_names]


def fill_template(template: Template, prompt: str) -> str:
    return template.format(prompt) if isinstance(template, str) else template(prompt)


def template_text(template: Template) -> str:
    """A template as a ``"{}"`` format string (a callable is shown by filling in ``{}``)."""
    return fill_template(template, "{}")


def class_text_embeddings(
    encoder: Encoder, class_names: Sequence[str], templates: Sequence[Template] | None = None
) -> np.ndarray:
    """One unit-norm text embedding per class (n_classes, dim): the mean of its normalised
    prompt embeddings over all templates, re-normalised."""
    import torch  # already loaded with the encoder

    templates = tuple(templates) if templates is not None else default_templates()
    if not templates:
        raise ValueError("zero-shot needs at least one prompt template")
    texts = [fill_template(t, prompt) for prompt in class_prompts(class_names) for t in templates]
    encoder.model.eval()
    with torch.inference_mode():
        features = torch.cat(
            [
                encoder.encode_text(texts[start : start + TEXT_BATCH_SIZE]).cpu()
                for start in range(0, len(texts), TEXT_BATCH_SIZE)
            ]
        )
        features = torch.nn.functional.normalize(features, dim=-1)
        per_class = features.reshape(len(class_names), len(templates), -1).mean(dim=1)
        per_class = torch.nn.functional.normalize(per_class, dim=-1)
    return per_class.numpy().astype(np.float32)


def zero_shot_predict(
    image_vectors: np.ndarray, text_embeddings: np.ndarray, logit_scale: float = DEFAULT_LOGIT_SCALE
) -> np.ndarray:
    """Class probabilities (n_images, n_classes) from unit-norm image and text embeddings."""
    similarity = np.asarray(image_vectors, np.float64) @ np.asarray(text_embeddings, np.float64).T
    return softmax(logit_scale * similarity, axis=1)


def unavailable_reason(encoder: Encoder) -> str | None:
    """Why zero-shot cannot run with this encoder, or None when it can."""
    if encoder.has_text_tower:
        return None
    why = getattr(encoder.model, "no_text_reason", "")  # a text tower it cannot use
    if why:
        return f"{encoder.name} has a text tower but {why}, so zero-shot is not available"
    return f"{encoder.name} has no text tower, so zero-shot is not available"


def zero_shot(
    embeddings: Embeddings,
    encoder: Encoder,
    result: ProbeResult | None = None,
    templates: Sequence[Template] | None = None,
    logit_scale: float = DEFAULT_LOGIT_SCALE,
) -> ZeroShotResult:
    """Zero-shot accuracy on the probe's evaluation images (all images without ``result``).

    With ``result`` the candidate classes are the probe's classes (classes too small for a
    probe are left out there too). ``available`` is False, with the reason, for encoders
    without a text tower. The accuracy carries a Clopper-Pearson interval.
    """
    reason = unavailable_reason(encoder)
    if reason:
        return ZeroShotResult(encoder.name, available=False, reason=reason)
    if embeddings.encoder_id != encoder.encoder_id:
        raise ValueError(
            f"the embeddings come from {embeddings.encoder_id}, not from {encoder.encoder_id}:"
            " zero-shot needs the image and text embeddings of the same model"
        )
    if result is None:
        class_names = list(embeddings.class_names)
        evaluated = np.arange(len(embeddings))
        labels = np.asarray(embeddings.labels)
    else:
        class_names, evaluated, labels = list(result.class_names), result.evaluated, result.labels
    if len(evaluated) == 0:
        raise ValueError("there are no images to evaluate zero-shot on")
    templates = tuple(templates) if templates is not None else default_templates()
    text = class_text_embeddings(encoder, class_names, templates)
    probabilities = zero_shot_predict(embeddings.vectors[evaluated], text, logit_scale)
    predictions = np.argmax(probabilities, axis=1)
    n_correct = int(np.sum(predictions == labels))
    return ZeroShotResult(
        encoder=encoder.name,
        available=True,
        class_names=tuple(class_names),
        accuracy=proportion_interval(n_correct, len(evaluated)),
        evaluated=np.asarray(evaluated),
        labels=np.asarray(labels),
        predictions=predictions,
        probabilities=probabilities,
        templates=tuple(template_text(t) for t in templates),
    )
