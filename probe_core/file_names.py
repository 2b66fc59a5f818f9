"""File names for downloads that say what they hold: the dataset and the encoder.

``download_stem("demo", "bundled:efficientnet-lite0")`` is ``demo_efficientnet-lite0``; the app
names its downloads ``<stem>_report.html``, ``<stem>_predictions.csv``, … (the CLI's run folder
keeps its fixed names, an interface). A stem is safe on every common file system (ASCII
letters, digits, ``-``, ``.`` and one ``_`` between the parts), short (at most
``MAX_STEM_LENGTH`` characters) and stable: the same names give the same stem, and names
shortened to fit keep a digest of the full names, so different studies stay apart.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Sequence
from pathlib import PurePath

MAX_PART_LENGTH = 40
MAX_STEM_LENGTH = 2 * MAX_PART_LENGTH + 1
# Families whose name says enough without the prefix: "bundled:efficientnet-lite0" reads
# "efficientnet-lite0", "open_clip:ViT-B-32/openai" reads "ViT-B-32-openai". Others keep it
# ("baseline:pixels" reads "baseline-pixels").
QUIET_FAMILIES = ("bundled", "open_clip")
DIGEST_LENGTH = 6


def download_stem(dataset: str, encoders: str | Sequence[str]) -> str:
    """``<dataset>_<encoder>``, or ``<dataset>_<a>-vs-<b>…`` for several encoders."""
    names = [encoders] if isinstance(encoders, str) else list(encoders)
    encoder_part = "-vs-".join(_encoder_part(name) for name in names)
    return f"{_fit(_safe(dataset), dataset, 'dataset')}_{_fit(encoder_part, names, 'encoder')}"


def _encoder_part(name: str) -> str:
    family, separator, rest = name.partition(":")
    if not separator:
        family, rest = "", name
    if "@" in rest:  # a local weights file (name@/path/w.pt) or an id's digest (name@1a2b…)
        model, _, source = rest.partition("@")
        rest = f"{model}@{PurePath(source.replace(chr(92), '/')).stem}"
    readable = rest if family in QUIET_FAMILIES or not family else f"{family}-{rest}"
    return _safe(readable)


def _safe(text: str) -> str:
    """ASCII letters, digits, ``-`` and ``.``; runs of anything else become one ``-``."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    cleaned = re.sub(r"[^A-Za-z0-9.-]+", "-", ascii_text)
    cleaned = re.sub(r"-{2,}", "-", cleaned)
    return cleaned.strip("-.")


def _fit(part: str, source: object, fallback: str) -> str:
    """``part`` within ``MAX_PART_LENGTH``; when it had to be cut, or nothing was left of
    the name, a digest of the full name keeps different names apart."""
    if part and len(part) <= MAX_PART_LENGTH:
        return part
    digest = hashlib.sha256(repr(source).encode()).hexdigest()[:DIGEST_LENGTH]
    if not part:
        return f"{fallback}-{digest}"
    return f"{part[: MAX_PART_LENGTH - DIGEST_LENGTH - 1].rstrip('-.')}-{digest}"
