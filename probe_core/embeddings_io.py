"""Open precomputed embeddings: a Parquet file, or a folder of Parquet shards.

The columns are those of a run's ``embeddings.parquet``: ``path`` (text), ``label`` (the class
name), ``vector`` (a list of numbers, the same length in every row) and optionally ``sha256``
(the hex digest of the image file) and ``split`` (``train``/``val``/``test``). Any tool can
write them. Vectors that are not unit-norm are L2-normalised on load, since the protocol works
on unit-norm vectors; ``PrecomputedEmbeddings.messages`` says so.

Probe Studio's own writers add schema metadata (``embeddings_metadata``): the encoder id, the
class names (a class whose images were all skipped has no row but stays a class), whether
the images came in a train/test split layout (the split is then the path's first folder) and,
for a local folder, where the images are (so that thumbnails can be shown).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .dataset import SPLIT_FOLDERS
from .embeddings import Embeddings

REQUIRED_COLUMNS = ("path", "label", "vector")
METADATA_PREFIX = "probe_studio."
ENCODER_ID_KEY = METADATA_PREFIX + "encoder_id"
CLASS_NAMES_KEY = METADATA_PREFIX + "class_names"
SPLIT_LAYOUT_KEY = METADATA_PREFIX + "split_layout"
CACHE_KEY_KEY = METADATA_PREFIX + "cache_key"
IMAGE_ROOT_KEY = METADATA_PREFIX + "image_root"
UNIT_NORM_TOLERANCE = 1e-3


class EmbeddingsFileError(ValueError):
    """A file (or folder) that cannot be used as embeddings; names the file and the reason."""

    def __init__(self, path: str | os.PathLike[str], reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


@dataclass
class PrecomputedEmbeddings(Embeddings):
    """Embeddings read from a file, with what was done to them on the way in."""

    source: str = ""
    messages: list[str] = field(default_factory=list)


def embeddings_metadata(embeddings: Embeddings) -> dict[str, str]:
    """The Parquet schema metadata that ``read_embeddings`` reads back."""
    metadata = {
        ENCODER_ID_KEY: embeddings.encoder_id,
        CLASS_NAMES_KEY: json.dumps(list(embeddings.class_names)),
        SPLIT_LAYOUT_KEY: json.dumps(embeddings.has_splits),
    }
    if embeddings.image_root:
        metadata[IMAGE_ROOT_KEY] = embeddings.image_root
    return metadata


def write_parquet(
    frame: pd.DataFrame, path: str | os.PathLike[str], metadata: Mapping[str, str]
) -> Path:
    """``frame.to_parquet(path, index=False)`` with ``metadata`` added to the schema metadata,
    e.g. ``write_parquet(embeddings_table(e), path, embeddings_metadata(e))``."""
    path = Path(path)
    partial = path.with_name(f".{path.name}.part")  # a reader never sees half a file
    pq.write_table(_with_metadata(frame, metadata), partial)
    os.replace(partial, path)
    return path


def parquet_bytes(frame: pd.DataFrame, metadata: Mapping[str, str]) -> bytes:
    """The bytes ``write_parquet`` writes, in memory (the app's downloads)."""
    sink = pa.BufferOutputStream()
    pq.write_table(_with_metadata(frame, metadata), sink)
    return sink.getvalue().to_pybytes()


def _with_metadata(frame: pd.DataFrame, metadata: Mapping[str, str]) -> pa.Table:
    table = pa.Table.from_pandas(frame, preserve_index=False)
    merged = dict(table.schema.metadata or {}) | {
        key.encode(): value.encode() for key, value in metadata.items()
    }
    return table.replace_schema_metadata(merged)


def parquet_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The ``probe_studio.*`` schema metadata of one Parquet file (empty if none)."""
    raw = pq.read_schema(path).metadata or {}
    return {
        key.decode(): value.decode()
        for key, value in raw.items()
        if key.decode(errors="replace").startswith(METADATA_PREFIX)
    }


def _shards(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if path.is_dir():
        shards = sorted(p for p in path.rglob("*.parquet") if p.is_file())
        if not shards:
            raise EmbeddingsFileError(path, "the folder holds no .parquet files")
        return shards
    raise EmbeddingsFileError(path, "does not exist")


@dataclass(frozen=True)
class _Shard:
    """The validated rows of one Parquet file."""

    paths: list[str]
    labels: list[str]
    vectors: np.ndarray
    sha256: list[str]
    splits: list[str]
    metadata: dict[str, str]


def _read_shard(path: Path) -> _Shard:
    try:
        table = pq.read_table(path)
        metadata = parquet_metadata(path)
    except (pa.ArrowInvalid, OSError) as error:
        raise EmbeddingsFileError(path, f"not a Parquet file ({error})") from error
    missing = [name for name in REQUIRED_COLUMNS if name not in table.column_names]
    if missing:
        raise EmbeddingsFileError(
            path,
            f"missing column(s) {', '.join(missing)}: expected path, label, vector"
            " (sha256 and split are optional)",
        )
    if table.num_rows == 0:
        raise EmbeddingsFileError(path, "the file has no rows")
    frame = table.select([c for c in table.column_names if c != "vector"]).to_pandas()
    for column in ("path", "label"):
        if frame[column].isna().any():
            row = int(frame[column].isna().to_numpy().argmax())
            raise EmbeddingsFileError(path, f"row {row} has no {column}")
    paths = frame["path"].astype(str).tolist()
    split_layout = json.loads(metadata.get(SPLIT_LAYOUT_KEY, "false"))
    return _Shard(
        paths=paths,
        labels=frame["label"].astype(str).tolist(),
        vectors=_vectors(path, table.column("vector"), paths),
        sha256=_optional_text(frame, "sha256"),
        splits=_splits(path, frame, paths, split_layout),
        metadata=metadata,
    )


def _vectors(path: Path, column: pa.ChunkedArray, paths: list[str]) -> np.ndarray:
    """The vector column as a float32 matrix: equal lengths, numbers, finite and non-zero."""
    kind = column.type
    if not (pa.types.is_list(kind) or pa.types.is_large_list(kind)) and not (
        pa.types.is_fixed_size_list(kind)
    ):
        raise EmbeddingsFileError(path, f"column vector is {kind}, not a list of numbers")
    if not (pa.types.is_floating(kind.value_type) or pa.types.is_integer(kind.value_type)):
        raise EmbeddingsFileError(path, f"column vector holds {kind.value_type}, not numbers")
    column = column.combine_chunks()
    if column.null_count:
        row = int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
        raise EmbeddingsFileError(path, f"row {row} ({paths[row]}) has no vector")
    lengths = pc.list_value_length(column).to_numpy()
    if (lengths != lengths[0]).any():
        row = int(np.flatnonzero(lengths != lengths[0])[0])
        raise EmbeddingsFileError(
            path,
            f"ragged vectors: row 0 has {lengths[0]} values, row {row} ({paths[row]})"
            f" has {lengths[row]}",
        )
    if lengths[0] == 0:
        raise EmbeddingsFileError(path, "the vectors are empty (0 values)")
    values = column.flatten()
    if values.null_count:
        raise EmbeddingsFileError(path, "column vector holds missing values (nulls)")
    matrix = values.to_numpy(zero_copy_only=False).astype(np.float32).reshape(len(paths), -1)
    checks = (
        (~np.isfinite(matrix).all(axis=1), "has non-finite values (NaN or infinity)"),
        (~matrix.any(axis=1), "is a zero vector (it has no direction to normalise)"),
    )
    for bad, reason in checks:
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            count = int(bad.sum())
            also = f" (and {count - 1} more rows)" if count > 1 else ""
            raise EmbeddingsFileError(path, f"row {row} ({paths[row]}) {reason}{also}")
    return matrix


def _optional_text(frame: pd.DataFrame, column: str) -> list[str]:
    if column not in frame:
        return [""] * len(frame)
    return frame[column].fillna("").astype(str).tolist()


def _splits(path: Path, frame: pd.DataFrame, paths: list[str], split_layout: bool) -> list[str]:
    """The ``split`` column, or the path's first folder in a split layout, else no split."""
    if "split" in frame:
        splits = [SPLIT_FOLDERS.get(s.lower(), s) for s in _optional_text(frame, "split")]
        unknown = sorted(set(splits) - {"", *SPLIT_FOLDERS.values()})
        if unknown:
            raise EmbeddingsFileError(
                path, f"unknown split value(s) {unknown}: expected train, val or test"
            )
        return splits
    if split_layout:
        return [SPLIT_FOLDERS.get(p.split("/", 1)[0].lower(), "") for p in paths]
    return [""] * len(paths)


def read_embeddings(path: str | os.PathLike[str]) -> PrecomputedEmbeddings:
    """Read and check embeddings from a Parquet file or a folder of shards (in file-name
    order); raise ``EmbeddingsFileError`` naming the file and the reason when unusable."""
    source = Path(path).expanduser()
    shards = [_read_shard(shard) for shard in _shards(source)]
    dims = {shard.vectors.shape[1] for shard in shards}
    if len(dims) > 1:
        raise EmbeddingsFileError(
            source, f"the shards have vectors of different lengths: {sorted(dims)}"
        )
    labels = [label for shard in shards for label in shard.labels]
    class_names = _class_names(shards, labels)
    if len(set(labels)) < 2:
        raise EmbeddingsFileError(
            source,
            f"only one class ({labels[0]!r}): a probe needs images of at least two classes",
        )
    vectors = np.concatenate([shard.vectors for shard in shards])
    vectors, messages = _unit_norm(vectors)
    index = {name: i for i, name in enumerate(class_names)}
    encoder_id = shards[0].metadata.get(ENCODER_ID_KEY) or f"precomputed:{source.name}"
    return PrecomputedEmbeddings(
        vectors=vectors,
        labels=np.array([index[label] for label in labels], dtype=np.int64),
        paths=[p for shard in shards for p in shard.paths],
        class_names=class_names,
        encoder_id=encoder_id,
        sha256=[digest for shard in shards for digest in shard.sha256],
        splits=[split for shard in shards for split in shard.splits],
        image_root=shards[0].metadata.get(IMAGE_ROOT_KEY, ""),
        source=str(source),
        messages=messages,
    )


def read_for_comparison(
    sources: Iterable[str | os.PathLike[str]], named: Mapping[str, Embeddings] | None = None
) -> dict[str, Embeddings]:
    """``named`` plus the embeddings read from each source (in order, one at a time), each
    named by the encoder id its file records, with the file's name added when that is taken."""
    found = dict(named or {})
    for source in sources:
        opened = read_embeddings(source)
        name = opened.encoder_id
        if name in found:
            name = f"{name} ({Path(source).name})"
        found[name] = opened
    return found


def _class_names(shards: list[_Shard], labels: list[str]) -> list[str]:
    """The class names stored by Probe Studio (they keep classes without rows), else the
    sorted labels."""
    stored = shards[0].metadata.get(CLASS_NAMES_KEY)
    if stored:
        names = [str(name) for name in json.loads(stored)]
        if set(labels) <= set(names):
            return names
    return sorted(set(labels))


def _unit_norm(vectors: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """The vectors as they are when unit-norm; else L2-normalised, with a message saying so."""
    norms = np.linalg.norm(vectors.astype(np.float64), axis=1)
    if np.all(np.abs(norms - 1.0) <= UNIT_NORM_TOLERANCE):
        return vectors, []
    message = (
        f"the vectors were not unit-norm (norms {norms.min():.3g} to {norms.max():.3g});"
        " they were L2-normalised on load, as the probe expects"
    )
    return (vectors / norms[:, None]).astype(np.float32), [message]
