"""Write a run's results to files: metrics, predictions, embeddings, figures, skipped list."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from .dataset import SkippedItem
from .embeddings import Embeddings
from .embeddings_io import embeddings_metadata, parquet_bytes, write_parquet
from .evaluation.comparison import comparison_table, pairs_table, per_image_table
from .evaluation.duplicates import duplicates_table
from .evaluation.fewshot import fewshot_table
from .evaluation.label_issues import label_issues_table, low_confidence_table
from .evaluation.map_quality import DEFAULT_NEIGHBOURS, projection_table
from .evaluation.protocols import ProbeResult
from .figures import confusion_figure, embedding_figure, fewshot_figure
from .probe import ProbeWeights
from .projection import Projection, score_map

if TYPE_CHECKING:
    from .study import ComparisonOutcome

RUN_OUTPUTS = (
    "metrics.json",
    "predictions.csv",
    "embeddings.parquet",
    "confusion.html",
    "umap.html",
    "skipped.csv",
    "duplicates.csv",
    "label_issues.csv",
    "low_confidence_labels.csv",
    "projection.csv",
    "map_quality.json",
)
LOW_CONFIDENCE_FILE = "low_confidence_labels.csv"
MAP_OUTPUT = "umap.html"
MAP_OUTPUTS = (MAP_OUTPUT, "projection.csv", "map_quality.json")  # written with every map


def predictions_table(embeddings: Embeddings, result: ProbeResult) -> pd.DataFrame:
    """One row per evaluated image (every image under cv): path, true, predicted, fold, and a
    probability per class. ``fold`` is the cross-validation fold, or ``test``."""
    evaluated = result.evaluated
    frame = pd.DataFrame(
        {
            "path": [embeddings.paths[i] for i in evaluated],
            "true": [result.class_names[i] for i in result.labels],
            "predicted": [result.class_names[i] for i in result.predictions],
            "fold": result.folds,
        }
    )
    frame["correct"] = frame["true"] == frame["predicted"]
    frame["confidence"] = result.probabilities.max(axis=1)
    for column, name in enumerate(result.class_names):
        frame[f"p({name})"] = result.probabilities[:, column]
    return frame


def embeddings_table(embeddings: Embeddings) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "path": embeddings.paths,
            "label": [embeddings.class_names[i] for i in embeddings.labels],
            "vector": list(embeddings.vectors.astype(np.float32)),
            "sha256": embeddings.sha256,
        }
    )


def embeddings_parquet(embeddings: Embeddings) -> bytes:
    """``embeddings.parquet`` as ``write_run`` (the CLI) writes it, in memory: the table with
    its metadata (encoder id, class names, split layout, image root), so the app's download
    reopens with its encoder (``embeddings_io.read_embeddings``)."""
    return parquet_bytes(embeddings_table(embeddings), embeddings_metadata(embeddings))


def skipped_table(skipped: list[SkippedItem]) -> pd.DataFrame:
    return pd.DataFrame({"path": [s.path for s in skipped], "reason": [s.reason for s in skipped]})


def result_duplicates_table(embeddings: Embeddings, result: ProbeResult) -> pd.DataFrame:
    """duplicates.csv: ``group,path,label`` for every image in a group of two or more."""
    if result.duplicates is None:
        return pd.DataFrame(columns=["group", "path", "label"])
    return duplicates_table(result.duplicates, embeddings.paths, embeddings.class_names)


def result_label_issues_table(embeddings: Embeddings, result: ProbeResult) -> pd.DataFrame:
    """label_issues.csv: ``path,given,suggested,score``, most suspicious first: flagged images
    whose most likely class is another one (``suggested``, never ``given``)."""
    return label_issues_table(result.label_issues, embeddings.paths, result.class_names)


def result_low_confidence_table(embeddings: Embeddings, result: ProbeResult) -> pd.DataFrame:
    """low_confidence_labels.csv: ``path,given,runner_up,score``, most suspicious first:
    flagged images whose given class is still the most likely, with low confidence."""
    return low_confidence_table(result.low_confidence_labels, embeddings.paths, result.class_names)


def protocol_document(result: ProbeResult) -> dict:
    """The protocol that ran and why: metrics.json key ``"protocol"``."""
    protocol = result.protocol
    document = {
        "name": protocol.name,
        "description": protocol.describe(),
        "reason": protocol.reason,
        "n_evaluated": len(result.evaluated),
        "scored": protocol.scored_sentence(len(result.evaluated)),
    }
    if protocol.name == "cv":
        document |= {
            "folds": protocol.n_folds,
            "repeats": protocol.n_repeats,
            "c_per_fold": [sweep.chosen_c for sweep in result.fold_sweeps],
        }
        if result.repeat_accuracies:
            document["repeat_accuracies"] = result.repeat_accuracies
    if protocol.name == "holdout":
        document["test_size"] = protocol.test_size
    return document


def metrics_document(
    embeddings: Embeddings, result: ProbeResult, settings: dict[str, object]
) -> dict:
    """metrics.json: settings, protocol, data summary, chosen C with its sweep, every metric."""
    duplicates = result.duplicates
    return {
        "settings": settings,
        "protocol": protocol_document(result),
        "encoder_id": embeddings.encoder_id,
        "n_images": len(embeddings),
        "n_train": len(result.train),
        "n_evaluated": len(result.evaluated),
        "n_skipped": len(embeddings.skipped),
        "classes": result.class_names,
        "excluded_classes": result.excluded_classes,
        "messages": result.messages,
        "chosen_c": result.chosen_c,
        "c_rule": result.sweep.rule,
        "sweep": {
            "method": result.sweep.method,
            "c_rule": result.sweep.rule,
            "c_values": list(result.sweep.c_values),
            "validation_accuracy": list(result.sweep.scores),
            "validation_log_loss": list(result.sweep.log_losses),
            "validation_log_loss_se": list(result.sweep.log_loss_se),
            "extended": result.sweep.extended,
        },
        "duplicates": {
            "threshold": duplicates.threshold if duplicates else None,
            "groups": len(duplicates.groups) if duplicates else 0,
            "label_conflicts": len(duplicates.conflicts) if duplicates else 0,
            "leaks": len(duplicates.leaks) if duplicates else 0,
        },
        "label_issues": len(result.label_issues),
        "low_confidence_labels": len(result.low_confidence_labels),
        "metrics": result.metrics.to_dict(),
    }


def write_figure(figure: go.Figure, path: Path) -> None:
    """A standalone HTML file with plotly.js inlined, so it opens offline."""
    figure.write_html(path, include_plotlyjs=True, full_html=True)


def write_run(
    out_dir: str | Path,
    embeddings: Embeddings,
    result: ProbeResult,
    settings: dict[str, object],
    projection: Projection | None = None,
) -> list[Path]:
    """Write a run's output files into ``out_dir`` (the map only with a projection)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / name for name in RUN_OUTPUTS if name not in MAP_OUTPUTS}
    document = metrics_document(embeddings, result, settings)
    paths["metrics.json"].write_text(json.dumps(document, indent=2, allow_nan=True))
    predictions_table(embeddings, result).to_csv(paths["predictions.csv"], index=False)
    write_parquet(
        embeddings_table(embeddings), paths["embeddings.parquet"], embeddings_metadata(embeddings)
    )
    write_figure(confusion_figure(result.metrics), paths["confusion.html"])
    skipped_table(embeddings.skipped).to_csv(paths["skipped.csv"], index=False)
    result_duplicates_table(embeddings, result).to_csv(paths["duplicates.csv"], index=False)
    result_label_issues_table(embeddings, result).to_csv(paths["label_issues.csv"], index=False)
    result_low_confidence_table(embeddings, result).to_csv(paths[LOW_CONFIDENCE_FILE], index=False)
    written = list(paths.values())
    if projection is not None:
        written.extend(write_map(out, embeddings, result, projection))
    return written


def write_map(
    out_dir: str | Path, embeddings: Embeddings, result: ProbeResult, projection: Projection
) -> list[Path]:
    """The map as standalone HTML (``umap.html``, whichever method made it), its coordinates
    (``projection.csv``: path,label,x,y[,z]) and how far to trust it (``map_quality.json``:
    trustworthiness and k-NN label agreement in the full embedding and on the map)."""
    out = Path(out_dir)
    html, table, quality = (out / name for name in MAP_OUTPUTS)
    write_figure(embedding_figure(projection, embeddings, result), html)
    labels = [embeddings.class_names[i] for i in embeddings.labels]
    projection_table(embeddings.paths, labels, projection.coords).to_csv(table, index=False)
    score = projection.score
    if score is None:  # a projection made without the labels
        k = projection.params.get("n_neighbors", DEFAULT_NEIGHBOURS)
        score = score_map(embeddings.vectors, projection.coords, embeddings.labels, k=k)
    document = score.to_json_dict() if score is not None else {"note": "too few points to score"}
    quality.write_text(json.dumps(document, indent=2))
    return [html, table, quality]


PROBE_FORMAT = "probe-studio-linear-probe/1"
PROBE_OUTPUTS = ("probe.safetensors", "probe.json")
# ProbeWeights fields held as JSON documents in the safetensors metadata (strings only there).
_DOCUMENT_FIELDS = ("metrics", "protocol", "images_per_class")
_TEXT_FIELDS = ("encoder_name", "execution_path", "preprocess_id", "created")


def probe_weights(
    embeddings: Embeddings,
    result: ProbeResult,
    probe,
    *,
    encoder_name: str = "",
    execution_path: str = "",
    preprocess_id: str = "",
) -> ProbeWeights:
    """The probe file's contents: ``probe`` (fitted on every used image, as
    ``probe_on_all_images`` gives it), the class names and encoder, and the protocol's
    metrics with their intervals."""
    labels = [
        result.class_names.index(embeddings.class_names[i]) for i in embeddings.labels[result.used]
    ]
    counts = np.bincount(labels, minlength=len(result.class_names))
    return ProbeWeights.from_estimator(
        probe,
        result.class_names,
        embeddings.encoder_id,
        encoder_name=encoder_name,
        execution_path=execution_path,
        preprocess_id=preprocess_id,
        metrics=result.metrics.to_dict(),
        protocol=protocol_document(result),
        images_per_class={
            name: int(count) for name, count in zip(result.class_names, counts, strict=True)
        },
        created=datetime.now(UTC).isoformat(timespec="seconds"),
    )


def probe_to_safetensors(weights: ProbeWeights) -> bytes:
    from safetensors.numpy import save

    metadata = {
        "format": PROBE_FORMAT,
        "class_names": json.dumps(weights.class_names),
        "encoder_id": weights.encoder_id,
        "chosen_c": repr(weights.chosen_c),
    }
    metadata |= {name: getattr(weights, name) for name in _TEXT_FIELDS}
    metadata |= {
        name: json.dumps(getattr(weights, name), allow_nan=True) for name in _DOCUMENT_FIELDS
    }
    return save({"coef": weights.coef, "intercept": weights.intercept}, metadata=metadata)


def probe_to_json(weights: ProbeWeights) -> str:
    document = {
        "format": PROBE_FORMAT,
        "encoder_id": weights.encoder_id,
        "class_names": weights.class_names,
        "chosen_c": weights.chosen_c,
    }
    document |= {name: getattr(weights, name) for name in (*_TEXT_FIELDS, *_DOCUMENT_FIELDS)}
    document |= {"coef": weights.coef.tolist(), "intercept": weights.intercept.tolist()}
    return json.dumps(document, allow_nan=True)


def write_probe_files(out_dir: str | Path, weights: ProbeWeights) -> list[Path]:
    """``probe.safetensors`` and ``probe.json`` (the same probe; ``read_probe`` takes either)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors, document = (out / name for name in PROBE_OUTPUTS)
    tensors.write_bytes(probe_to_safetensors(weights))
    document.write_text(probe_to_json(weights))
    return [tensors, document]


class ProbeFileError(ValueError):
    """A probe file that is not a Probe Studio safetensors or JSON export."""


def read_probe(path: str | Path) -> ProbeWeights:
    """The probe in a file, or in a ``run`` output folder (its ``probe.safetensors``)."""
    path = Path(path).expanduser()
    if path.is_dir():
        found = [path / name for name in PROBE_OUTPUTS if (path / name).is_file()]
        if not found:
            raise ProbeFileError(
                f"{path} holds no {' or '.join(PROBE_OUTPUTS)} (is it a `probe-studio run`"
                " output folder?)"
            )
        path = found[0]
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        return read_probe_file(path.read_bytes())
    except ProbeFileError as error:
        raise ProbeFileError(f"{path}: {error}") from error


def read_probe_file(data: bytes) -> ProbeWeights:
    """Load a probe exported as safetensors or JSON; anything else (pickle too) is refused."""
    if data[:1] == b"{":
        try:
            document = json.loads(data)
            weights = ProbeWeights(
                np.asarray(document["coef"], dtype=np.float32),
                np.asarray(document["intercept"], dtype=np.float32),
                [str(name) for name in document["class_names"]],
                str(document["encoder_id"]),
                float(document["chosen_c"]),
                **{name: str(document.get(name) or "") for name in _TEXT_FIELDS},
                **{name: dict(document.get(name) or {}) for name in _DOCUMENT_FIELDS},
            )
        except (ValueError, KeyError, TypeError) as error:
            raise ProbeFileError(f"not a probe JSON export: {error}") from error
    else:
        from safetensors.numpy import load

        try:
            tensors = load(data)
            metadata = _safetensors_metadata(data)
            weights = ProbeWeights(
                tensors["coef"],
                tensors["intercept"],
                json.loads(metadata["class_names"]),
                metadata["encoder_id"],
                float(metadata["chosen_c"]),
                **{name: metadata.get(name, "") for name in _TEXT_FIELDS},
                **{name: dict(json.loads(metadata.get(name) or "{}")) for name in _DOCUMENT_FIELDS},
            )
        except Exception as error:  # safetensors raises its own error types
            raise ProbeFileError(
                "not a probe export (expected safetensors or JSON; pickle is never loaded)"
            ) from error
    n_classes = len(weights.class_names)
    if (
        weights.coef.ndim != 2
        or weights.coef.shape[0] != n_classes
        or weights.intercept.shape != (n_classes,)
    ):
        raise ProbeFileError("probe file shapes do not match its class names")
    return weights


def _safetensors_metadata(data: bytes) -> dict[str, str]:
    header_length = int.from_bytes(data[:8], "little")
    return json.loads(data[8 : 8 + header_length]).get("__metadata__", {})


COMPARISON_OUTPUTS = ("comparison.csv", "pairs.csv", "per_image.csv", "zero_shot.csv")


def zero_shot_table(outcome: ComparisonOutcome) -> pd.DataFrame:
    """One row per encoder: zero-shot accuracy with its interval, or why there is none."""
    rows = []
    for name, result in outcome.zero_shot.items():
        accuracy = result.accuracy
        rows.append(
            {
                "encoder": name,
                "available": result.available,
                "accuracy": accuracy.value if accuracy else np.nan,
                "accuracy_low": accuracy.low if accuracy else np.nan,
                "accuracy_high": accuracy.high if accuracy else np.nan,
                "reason": result.reason,
            }
        )
    return pd.DataFrame(rows)


def write_comparison(out_dir: str | Path, outcome: ComparisonOutcome) -> list[Path]:
    """comparison.csv, pairs.csv, per_image.csv, zero_shot.csv, and fewshot.csv if drawn."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    comparison = outcome.comparison
    tables = {
        "comparison.csv": comparison_table(comparison),
        "pairs.csv": pairs_table(comparison),
        "per_image.csv": per_image_table(comparison),
        "zero_shot.csv": zero_shot_table(outcome),
    }
    if outcome.fewshot:
        tables["fewshot.csv"] = fewshot_table(outcome.fewshot)
    for name, table in tables.items():
        table.to_csv(out / name, index=False)
    if outcome.fewshot:
        write_figure(
            fewshot_figure(outcome.fewshot, zero_shot=outcome.zero_shot_accuracies()),
            out / "fewshot.html",
        )
    return [out / name for name in tables]
