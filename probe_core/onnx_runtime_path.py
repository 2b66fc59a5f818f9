"""ONNX Runtime as a CPU execution path for an encoder: the encoder's own graph (the model
alone, after the studio's preprocessing) run by onnxruntime with every graph optimisation, and
its int8 quantisation (``MatMul``/``Gemm`` weights, activations quantised per batch: the
onnxruntime counterpart of ``int8-dynamic``).

Two path names, both their own arithmetic and so their own cache key (``Encoder.cache_key``
ends in the numerics):

- ``onnx``: the fp32 graph, onnxruntime's ``ORT_ENABLE_ALL`` optimisations (constant folding,
  operator fusion, layout changes). Not bit-identical to torch's fp32 (other kernels), so it is
  judged like any other fast path: min cosine >= ``MIN_COSINE`` to torch fp32 on the
  calibration batch.
- ``onnx-int8``: ``onnxruntime.quantization.quantize_dynamic`` of that graph, kept only when
  faithful by the same rule.

The graph is exported once per encoder id, preprocessing, input size, torch and onnxruntime
version (``graph_key``) into ``<cache dir>/onnx-paths/`` (written atomically; a damaged file
is exported again): exporting a model takes from seconds to minutes, so a later process only
opens the file. ``measure`` times both against the torch paths on the calibration batch of
``probe_core.acceleration`` (``bench/extract.py`` prints it on real images).

This module needs the ``[onnx]`` extra (onnx, onnxruntime, onnxscript); without it the paths
are unavailable and say so (``OrtPathError``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

ONNX_PATHS = ("onnx", "onnx-int8")
OPSET = 18
GRAPH_FOLDER = "onnx-paths"
EXPORT_BATCH = 2


class OrtPathError(RuntimeError):
    """An ONNX Runtime path that cannot be built: the extra is missing, or the model does not
    export."""


def ort_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        return False
    return True


def graph_key(encoder_id: str, preprocess: Callable, input_shape: tuple[int, ...]) -> str:
    """What the exported graph depends on: the encoder, its preprocessing (the input it takes),
    and the versions of the exporter and of the runtime."""
    import onnxruntime

    recipe = "|".join(
        [
            encoder_id,
            repr(preprocess),
            "x".join(str(side) for side in input_shape),
            f"torch={torch.__version__}",
            f"onnxruntime={onnxruntime.__version__}",
            f"opset={OPSET}",
        ]
    )
    return hashlib.sha256(recipe.encode()).hexdigest()[:24]


def graph_folder(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where exported encoder graphs are kept: beside the embedding cache."""
    if cache_dir is None:
        from .cache import default_cache_dir

        cache_dir = default_cache_dir()
    return Path(cache_dir) / GRAPH_FOLDER


class _Features(nn.Module):
    """The model's forward as float32 features (open_clip towers may return other dtypes)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images).float()


def export_encoder_graph(model: nn.Module, input_shape: tuple[int, ...], path: Path) -> Path:
    """The fp32 model as an ONNX graph (input ``images`` float32 ``[N, C, H, W]``, output
    ``features`` ``[N, dim]``, dynamic batch), written atomically to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.zeros((EXPORT_BATCH, *input_shape), dtype=torch.float32)
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=path.parent))
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                _Features(model).eval(),
                (example,),
                dynamo=True,
                input_names=["images"],
                output_names=["features"],
                dynamic_shapes=({0: torch.export.Dim("batch")},),
                opset_version=OPSET,
                optimize=True,
                verbose=False,
            )
        staged = staging / path.name
        # Weights inside the file (one file to move atomically) up to protobuf's 2 GB.
        program.save(staged, external_data=False)
        os.replace(staged, path)
    except Exception as error:
        raise OrtPathError(f"the encoder does not export to ONNX: {error}") from error
    finally:
        for leftover in staging.iterdir() if staging.exists() else ():
            leftover.unlink()
        if staging.exists():
            staging.rmdir()
    return path


def quantize_graph(fp32_path: Path, int8_path: Path) -> Path:
    """onnxruntime's dynamic int8 quantisation of the MatMul and Gemm weights (what torch's
    ``int8-dynamic`` does to ``nn.Linear``), written atomically."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    staged = int8_path.with_name(f".{int8_path.name}.{os.getpid()}.tmp")
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # "Please consider to run pre-processing before quantization"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_dynamic(
                fp32_path,
                staged,
                op_types_to_quantize=["MatMul", "Gemm"],
                weight_type=QuantType.QInt8,
            )
    finally:
        root.setLevel(level)
    os.replace(staged, int8_path)
    return int8_path


def _usable(path: Path) -> bool:
    """A graph file that onnx can read (a damaged one is exported again)."""
    if not path.is_file() or path.stat().st_size == 0:
        return False
    try:
        import onnx

        onnx.load(path, load_external_data=False)
    except Exception:
        return False
    return True


def graph_files(
    model: nn.Module,
    encoder_id: str,
    preprocess: Callable,
    input_shape: tuple[int, ...],
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    int8: bool = False,
) -> tuple[Path, float]:
    """The graph file for ``model`` (exported once, then reused), and the seconds this call
    spent exporting or quantising (0 when it was on disk)."""
    if not ort_available():
        raise OrtPathError(
            'ONNX Runtime paths need the [onnx] extra: pip install "probe-studio[onnx]"'
        )
    folder = graph_folder(cache_dir)
    key = graph_key(encoder_id, preprocess, input_shape)
    fp32_path, int8_path = folder / f"{key}.onnx", folder / f"{key}.int8.onnx"
    started, made = time.perf_counter(), False
    if not _usable(fp32_path):
        export_encoder_graph(model, input_shape, fp32_path)
        made = True
    if int8 and not _usable(int8_path):
        quantize_graph(fp32_path, int8_path)
        made = True
    seconds = time.perf_counter() - started if made else 0.0
    return (int8_path if int8 else fp32_path), seconds


def session_options(threads: int | None = None):
    """Every graph optimisation, one thread pool the size of torch's (the studio's thread
    budget), operators run in sequence, idle threads asleep."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    # Idle pool threads sleep instead of spinning, as the studio's OpenMP threads do: a
    # spinning pool takes the cores that decode the next batch (openmp.let_idle_threads_sleep).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


class OrtModel(nn.Module):
    """An encoder's forward through onnxruntime: takes the preprocessed float32 batch the
    torch model takes, returns its features as a CPU tensor. ``encode_text`` and the other
    attributes of the torch model (a text tower for zero-shot) stay reachable through
    ``torch_model``; pickling (Ray actors) carries the graph's path, not the session."""

    def __init__(self, graph: Path, torch_model: nn.Module, path_name: str):
        super().__init__()
        self.graph = Path(graph)
        self.path_name = path_name
        self.torch_model = torch_model
        self._session = None

    @property
    def session(self):
        if self._session is None:
            import onnxruntime

            self._session = onnxruntime.InferenceSession(
                str(self.graph), session_options(), providers=["CPUExecutionProvider"]
            )
        return self._session

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        batch = images.detach().to("cpu", torch.float32).contiguous().numpy()
        (features,) = self.session.run(["features"], {"images": batch})
        return torch.from_numpy(features)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name in ("torch_model", "_session", "encode_text"):
                raise
            return getattr(self.torch_model, name)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_session"] = None
        return state


class OrtTextModel(OrtModel):
    """``OrtModel`` of a model with a text tower: text is embedded by the torch model."""

    def encode_text(self, *args, **kwargs):
        return self.torch_model.encode_text(*args, **kwargs)


def build(
    model: nn.Module,
    encoder_id: str,
    preprocess: Callable,
    input_shape: tuple[int, ...],
    path_name: str,
    cache_dir: str | os.PathLike[str] | None = None,
) -> tuple[OrtModel, float]:
    """``model`` on the ONNX Runtime path ``path_name`` (``onnx`` or ``onnx-int8``), and the
    seconds spent exporting (0 when the graph was on disk)."""
    if path_name not in ONNX_PATHS:
        raise ValueError(f"{path_name!r} is not an ONNX Runtime path ({', '.join(ONNX_PATHS)})")
    graph, seconds = graph_files(
        model, encoder_id, preprocess, input_shape, cache_dir, int8=path_name == "onnx-int8"
    )
    kind = OrtTextModel if callable(getattr(model, "encode_text", None)) else OrtModel
    return kind(graph, model, path_name), seconds


# ----------------------------------------------------------------------- measuring


@dataclass(frozen=True)
class OrtMeasurement:
    """One ONNX Runtime path on the calibration batch against torch fp32 (and the best torch
    path when given)."""

    path: str
    min_cosine: float
    max_abs_diff: float
    faithful: bool
    images_per_second: float | None = None
    export_seconds: float = 0.0
    note: str = ""


def _unit(features: np.ndarray) -> np.ndarray:
    features = features.astype(np.float64)
    return features / np.linalg.norm(features, axis=1, keepdims=True)


def fidelity(reference: np.ndarray, features: np.ndarray) -> tuple[float, float]:
    """(min cosine, max |difference|) of unit-normed rows."""
    expected, actual = _unit(reference), _unit(features)
    return float((expected * actual).sum(axis=1).min()), float(np.abs(expected - actual).max())


def best_seconds(run: Callable[[], object], rounds: int = 3) -> float:
    """The best of ``rounds`` timed runs after one warm-up."""
    run()
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return best


def checked(
    model: nn.Module,
    encoder_id: str,
    preprocess: Callable,
    batch: torch.Tensor,
    path_name: str,
    min_cosine: float,
    cache_dir: str | os.PathLike[str] | None = None,
) -> tuple[OrtMeasurement, OrtModel]:
    """``model`` on ``path_name`` and how faithful it is on ``batch`` (preprocessed, float32):
    min cosine to the torch fp32 ``model``, at least ``min_cosine`` (the caller's bar,
    ``probe_core.acceleration.MIN_COSINE``) to be faithful."""
    ort_model, seconds = build(
        model, encoder_id, preprocess, tuple(batch.shape[1:]), path_name, cache_dir
    )
    with torch.inference_mode():
        reference = model(batch).float().numpy()
        features = ort_model(batch).numpy()
    measured, max_diff = fidelity(reference, features)
    faithful = bool(np.isfinite(measured) and measured >= min_cosine)
    note = "" if faithful else f"min cosine {measured:.5f} < {min_cosine}"
    if faithful and path_name == "onnx-int8" and not quantized_operators(ort_model.graph):
        note = "no MatMul or Gemm weights to quantise: the arithmetic of onnx"
    return OrtMeasurement(path_name, measured, max_diff, faithful, None, seconds, note), ort_model


def quantized_operators(graph: Path) -> int:
    """How many integer operators (MatMulInteger, ConvInteger, QLinear*) a graph holds."""
    import onnx

    model = onnx.load(graph, load_external_data=False)
    return sum(
        node.op_type.endswith("Integer") or node.op_type.startswith("QLinear")
        for node in model.graph.node
    )


def measure(
    model: nn.Module,
    encoder_id: str,
    preprocess: Callable,
    batch: torch.Tensor,
    min_cosine: float,
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    paths: tuple[str, ...] = ONNX_PATHS,
    rounds: int = 3,
) -> list[OrtMeasurement]:
    """Each ONNX Runtime path on ``batch``: ``checked``'s fidelity against ``min_cosine``, and
    images per second (best of ``rounds`` after a warm-up)."""
    measurements = []
    for name in paths:
        try:
            measurement, ort_model = checked(
                model, encoder_id, preprocess, batch, name, min_cosine, cache_dir
            )
        except Exception as error:
            note = f"{type(error).__name__}: {error}"
            measurements.append(OrtMeasurement(name, float("nan"), float("nan"), False, note=note))
            continue
        with torch.inference_mode():
            seconds = best_seconds(lambda model=ort_model: model(batch), rounds)
        measurements.append(replace(measurement, images_per_second=len(batch) / seconds))
    return measurements
