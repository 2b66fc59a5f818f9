"""``probe-studio explain RUN_DIR IMAGE ...``: an ``Explainer`` from a ``run`` output folder,
and the files the command writes.

From the run folder: the shipped probe (``probe.safetensors``, or ``probe.json``), the
embeddings (``embeddings.parquet``), the out-of-sample predictions with their folds
(``predictions.csv``) and the run's settings (``metrics.json``: the image folder it read,
for the per-class saliency). The encoder is the one the probe names, on the run's execution
path (``probe_core.predict.encoder_for``); saliency uses its own fp32 copy.

Files written to ``--out``:

- ``neighbours.csv``: ``image,rank,neighbour,label,cosine,same_fold`` (``same_fold`` is empty
  for an image that is not one of the run's);
- ``saliency.npz``: one float32 array per image, keyed by the image's path as given, at the
  image's own height x width, non-negative, summing to 1;
- ``saliency/<name>.png``: the overlays (``<name>`` is the image's file name, made unique);
- ``deletion.csv``: ``image,class,fraction,salient_drop,random_drop,beats_random``;
- ``classes.csv`` and ``saliency/class_<class>.png``: each class's mean saliency on the crop
  over its correctly predicted images, ``class,images,border_share,possible_shortcut``;
- ``skipped.csv``: ``path,reason`` for images that could not be explained.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..dataset import ImageItem, SkippedItem, scan
from ..embeddings_io import read_embeddings
from ..evaluation.protocols import TEST_FOLD
from ..export import read_probe, skipped_table
from ..images import ImageLoadError, load_image
from ..probe import ProbeWeights
from .explainer import Explainer, ExplainError, ImageExplanation, RunScores
from .geometry import on_file
from .neighbours import TRAIN_FOLD
from .overlay import crop_heat_map, explanation_overlay, with_caption
from .shortcuts import ClassSaliency

EXPLAIN_OUTPUTS = ("neighbours.csv", "saliency.npz", "deletion.csv", "classes.csv")
SALIENCY_FOLDER = "saliency"


class RunFolderError(ValueError):
    """A folder that is not a usable ``run`` output (names the file and the reason)."""


@dataclass
class RunFolder:
    """What ``explain`` reads from a run folder."""

    path: Path
    explainer: Explainer
    notes: list[str] = field(default_factory=list)  # what could not be set up, and why


def open_run(
    run_dir: str | Path,
    *,
    device: str | None = None,
    load_encoder: Callable[[ProbeWeights], tuple[object, list[str]]] | None = None,
) -> RunFolder:
    """An ``Explainer`` for a ``run`` output folder. ``load_encoder`` (for tests) replaces
    ``probe_core.predict.encoder_for``."""
    path = Path(run_dir).expanduser()
    if not path.is_dir():
        raise RunFolderError(f"{path}: not a folder (expected a `probe-studio run` output)")
    weights = read_probe(path)
    embeddings_file = path / "embeddings.parquet"
    if not embeddings_file.is_file():
        raise RunFolderError(f"{embeddings_file}: missing (the nearest images need it)")
    embeddings = read_embeddings(embeddings_file)
    if embeddings.encoder_id != weights.encoder_id:
        raise RunFolderError(
            f"{embeddings_file} holds embeddings of {embeddings.encoder_id}, but the probe was"
            f" fitted on {weights.encoder_id}"
        )
    notes: list[str] = []
    metrics = _metrics(path / "metrics.json", notes)
    scores = _run_scores(path / "predictions.csv", embeddings, weights, metrics, notes)
    read_image = _image_reader(metrics, embeddings, notes)
    encoder = None
    if load_encoder is None:
        from ..predict import encoder_for

        load_encoder = encoder_for
    try:
        encoder, encoder_notes = (
            load_encoder(weights) if device is None else load_encoder(weights, device=device)
        )
        notes += encoder_notes
    except ValueError as error:  # no encoder name (precomputed embeddings), or another id
        notes.append(f"no encoder, so no saliency and no new images: {error}")
    explainer = Explainer(embeddings, weights, scores, encoder=encoder, read_image=read_image)
    return RunFolder(path, explainer, notes)


def _metrics(metrics_file: Path, notes: list[str]) -> dict:
    if not metrics_file.is_file():
        notes.append(f"{metrics_file} is missing: the run's settings are unknown")
        return {}
    try:
        document = json.loads(metrics_file.read_text())
    except ValueError as error:
        notes.append(f"{metrics_file} cannot be read as JSON ({error})")
        return {}
    return document if isinstance(document, dict) else {}


def _fold_c(metrics: dict) -> dict[str, float]:
    """The C of the probe that scored each fold, from metrics.json."""
    protocol = metrics.get("protocol") or {}
    if protocol.get("name") == "cv":
        return {str(n): float(c) for n, c in enumerate(protocol.get("c_per_fold", []), start=1)}
    if protocol.get("name") in ("holdout", "given") and "chosen_c" in metrics:
        return {TEST_FOLD: float(metrics["chosen_c"])}
    return {}


def _run_scores(
    predictions_file: Path, embeddings, weights: ProbeWeights, metrics: dict, notes: list[str]
) -> RunScores | None:
    if not predictions_file.is_file():
        notes.append(f"{predictions_file} is missing: no folds, and typical images by centre")
        return None
    table = pd.read_csv(predictions_file, dtype={"path": str, "fold": str}, keep_default_na=False)
    columns = [f"p({name})" for name in weights.class_names]
    missing = [c for c in ("path", "fold", *columns) if c not in table.columns]
    if missing:
        raise RunFolderError(f"{predictions_file}: missing columns {', '.join(missing)}")
    row_of = {path: row for row, path in enumerate(embeddings.paths)}
    unknown = [p for p in table["path"] if p not in row_of]
    if unknown:
        raise RunFolderError(
            f"{predictions_file}: {len(unknown)} paths are not in embeddings.parquet"
            f" (e.g. {unknown[0]!r})"
        )
    evaluated = np.array([row_of[p] for p in table["path"]], dtype=int)
    folds = np.array(
        [
            TRAIN_FOLD if embeddings.class_names[int(label)] in weights.class_names else ""
            for label in embeddings.labels
        ],
        dtype=object,
    )
    folds[evaluated] = table["fold"].to_numpy(dtype=object)
    probabilities = table[columns].to_numpy(dtype=np.float64)
    seed = (metrics.get("settings") or {}).get("seed", 0)
    return RunScores(evaluated, probabilities, folds, _fold_c(metrics), {"seed": int(seed)})


def _image_reader(
    metrics: dict, embeddings, notes: list[str]
) -> Callable[[str], bytes | None] | None:
    """The run's images by path: from the folder or .zip ``run`` read (``metrics.json``),
    else from the image folder the embeddings record."""
    source = (metrics.get("settings") or {}).get("source")
    candidates = [source, getattr(embeddings, "image_root", "")]
    for candidate in filter(None, candidates):
        where = Path(candidate).expanduser()
        if where.is_dir() or (where.is_file() and where.suffix.lower() == ".zip"):
            try:
                items = {item.path: item for item in scan(where).items}
            except (OSError, ValueError) as error:
                notes.append(f"the run's images in {where} cannot be scanned: {error}")
                continue
            return lambda path: _read(items.get(path))
    notes.append(
        "the run's images are not found (the folder it read is gone or was not recorded):"
        " no per-class saliency, and run images are explained only when given"
    )
    return None


def _read(item: ImageItem | None) -> bytes | None:
    if item is None:
        return None
    try:
        return item.read_bytes()
    except OSError:
        return None


# ------------------------------------------------------------------------------- outputs


@dataclass
class ExplainOutcome:
    """What ``explain_images`` explained, skipped and found per class."""

    explanations: list[ImageExplanation]
    skipped: list[SkippedItem]
    classes: list[ClassSaliency]
    class_notes: list[str] = field(default_factory=list)
    images: dict[str, bytes] = field(default_factory=dict)  # the explained files' bytes


def explain_images(
    explainer: Explainer,
    images: Sequence[ImageItem],
    *,
    k: int = 8,
    class_name: str | None = None,
    per_class: int = 8,
    progress: Callable[[str], None] | None = None,
) -> ExplainOutcome:
    """Explain each image (a bad file is skipped with its reason), then each class's mean
    saliency over up to ``per_class`` correctly predicted images (none with 0)."""
    if class_name is not None and class_name not in explainer.weights.class_names:
        raise ExplainError(
            f"unknown class {class_name!r}; the probe's classes are"
            f" {', '.join(explainer.weights.class_names)}"
        )
    explanations, skipped, files = [], [], {}
    for item in images:
        if progress:
            progress(item.path)
        try:
            data = item.read_bytes()
            load_image(data)  # a clear reason before any work
            explanations.append(explainer.explain_image(data, item.path, class_name, k=k))
            files[item.path] = data
        except (OSError, ImageLoadError, ExplainError) as error:
            skipped.append(SkippedItem(item.path, str(error)))
    classes, class_notes = [], []
    reason = explainer.no_saliency_reason
    if per_class > 0 and reason is None and explainer.read_image and explainer.scores:
        for name in explainer.weights.class_names:
            if progress:
                progress(f"class {name}")
            classes.append(explainer.class_saliency(name, per_class))
    elif per_class > 0:
        class_notes.append(
            "no per-class saliency: "
            + (reason or "the run's images or its predictions.csv are not available")
        )
    return ExplainOutcome(explanations, skipped, classes, class_notes, files)


def write_explanations(out_dir: str | Path, outcome: ExplainOutcome) -> list[Path]:
    """Write the files listed in the module's docstring into ``out_dir``."""
    out = Path(out_dir)
    folder = out / SALIENCY_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    neighbours = pd.DataFrame(
        [
            {
                "image": e.name,
                "rank": rank,
                "neighbour": n.path,
                "label": n.label,
                "cosine": n.cosine,
                "same_fold": "" if n.same_fold is None else n.same_fold,
            }
            for e in outcome.explanations
            for rank, n in enumerate(e.neighbours.neighbours, start=1)
        ],
        columns=["image", "rank", "neighbour", "label", "cosine", "same_fold"],
    )
    neighbours.to_csv(out / "neighbours.csv", index=False)
    maps = {
        e.name: on_file(e.saliency.image, outcome.images[e.name])
        for e in outcome.explanations
        if e.saliency is not None
    }
    np.savez_compressed(out / "saliency.npz", **maps)
    deletion = pd.DataFrame(
        [
            {
                "image": e.name,
                "class": e.deletion.class_name,
                "fraction": step.fraction,
                "salient_drop": step.salient_drop,
                "random_drop": step.random_drop,
                "beats_random": step.beats_random,
            }
            for e in outcome.explanations
            if e.deletion is not None
            for step in e.deletion.steps
        ],
        columns=["image", "class", "fraction", "salient_drop", "random_drop", "beats_random"],
    )
    deletion.to_csv(out / "deletion.csv", index=False)
    written += [out / name for name in ("neighbours.csv", "saliency.npz", "deletion.csv")]
    names = unique_names([e.name for e in outcome.explanations])
    for explanation, name in zip(outcome.explanations, names, strict=True):
        if explanation.saliency is None:
            continue
        overlay = explanation_overlay(explanation, outcome.images[explanation.name])
        overlay.save(folder / f"{name}.png")
        written.append(folder / f"{name}.png")
    if outcome.classes:
        pd.DataFrame(
            [
                {
                    "class": c.class_name,
                    "images": c.n_images,
                    "border_share": c.border_share,
                    "possible_shortcut": c.possible_shortcut,
                }
                for c in outcome.classes
            ]
        ).to_csv(out / "classes.csv", index=False)
        written.append(out / "classes.csv")
        for entry, name in zip(
            outcome.classes, unique_names([c.class_name for c in outcome.classes]), strict=True
        ):
            if entry.n_images:
                heat = with_caption(crop_heat_map(entry.mean), [entry.sentence()])
                heat.save(folder / f"class_{name}.png")
                written.append(folder / f"class_{name}.png")
    if outcome.skipped:
        skipped_table(outcome.skipped).to_csv(out / "skipped.csv", index=False)
        written.append(out / "skipped.csv")
    return written


def unique_names(paths: Sequence[str]) -> list[str]:
    """A file-name-safe name per path (its file name without the extension; -2, -3 ...
    where names repeat)."""
    seen: dict[str, int] = {}
    names = []
    for path in paths:
        base = re.sub(r"[^\w.\-]+", "_", Path(path).stem or "image").strip("._") or "image"
        count = seen.get(base.lower(), 0) + 1
        seen[base.lower()] = count
        names.append(base if count == 1 else f"{base}-{count}")
    return names


def summary_lines(run: RunFolder, outcome: ExplainOutcome) -> list[str]:
    """What ``explain`` prints: the set-up, then per image its prediction, the deletion
    check and the nearest images, then per class where the probe looks."""
    explainer = run.explainer
    weights = explainer.weights
    lines = [
        f"probe      {len(weights.class_names)} classes ({', '.join(weights.class_names)}),"
        f" encoder {weights.encoder_id}"
    ]
    lines += [f"note       {note}" for note in run.notes]
    model = explainer.saliency if explainer.no_saliency_reason is None else None
    if model is not None:
        copy = (
            "the encoder reloaded in fp32 (gradients never run on the fast path)"
            if model.reloaded_fp32
            else "a copy of the encoder's fp32 model"
        )
        lines.append(f"saliency   {model.method.name}, on {copy}")
    else:
        lines.append(f"saliency   none: {explainer.no_saliency_reason}")
    for explanation in outcome.explanations:
        lines.append("")
        lines.append(f"{explanation.name}")
        if explanation.row is not None:
            scored = (
                f", the run predicted {explanation.scored_prediction}"
                if explanation.scored_prediction
                else ""
            )
            lines.append(f"  one of the run's images, labelled {explanation.label}{scored}")
        probability = float(np.max(explanation.probabilities))
        lines.append(
            f"  explaining {explanation.explained_class} for {explanation.probe_sentence()},"
            f" which predicts {explanation.predicted} ({probability:.2f})"
        )
        if explanation.deletion is not None:
            lines.append(f"  {explanation.deletion.sentence()}")
        elif explanation.no_saliency_reason:
            lines.append(f"  no saliency: {explanation.no_saliency_reason}")
        nearest = ", ".join(
            f"{n.path} ({n.label}, {n.cosine:.3f})" for n in explanation.neighbours.neighbours[:3]
        )
        lines.append(f"  nearest    {nearest}")
    for item in outcome.skipped:
        lines.append(f"skipped    {item.path}: {item.reason}")
    if outcome.classes or outcome.class_notes:
        lines.append("")
    for entry in outcome.classes:
        lines.append(f"class      {entry.sentence()}")
    lines += [f"class      {note}" for note in outcome.class_notes]
    return lines
