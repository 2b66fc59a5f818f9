"""Faster execution paths for a frozen encoder, kept only where they are measured faithful.

``select_path`` runs when an encoder loads. On the CPU with ``precision="auto"`` it embeds a
fixed calibration batch (``calibration_batch``: 16 seeded synthetic images - noise, colour
gradients, smooth blobs, flat shapes - through the encoder's own preprocessing) with the
plain fp32 model, then with each candidate path:

- ``fp32+channels_last``: the same fp32 arithmetic in NHWC layout (convolution-heavy models);
- ``fp32+folded-bn+channels_last``: batch norms folded into the convolutions before them
  (``fold_batch_norms``: one pass over the activations fewer per convolution), fp32;
- ``int8-dynamic``: the ``nn.Linear`` layers the image forward uses with int8 weights and
  activations quantised row by row (``RowScaledInt8Linear``: each row's scale is its own, so
  a row's result never depends on the other rows of its batch; Linear-heavy models such as
  ViTs);
- ``bf16``: bfloat16 autocast, tried only on CPUs with native bf16 instructions.

A candidate is faithful when every calibration image keeps a cosine of at least
``MIN_COSINE`` between its L2-normalised embedding and the fp32 one; a path that keeps fp32
arithmetic must moreover agree within ``EXACT_TOLERANCE`` (it shares fp32's cache key).
Each path embeds the first half of the batch as a warm-up and the second half timed; the
faithful ones not twice slower are timed again, interleaved with fp32, best of
``TIMING_ROUNDS``. Going from fp32 to the fp32-arithmetic paths to int8 to bf16 (ever less
exact), a path replaces the one chosen so far only when it is at least ``MIN_SPEEDUP`` times
as fast, so that timing noise cannot swap near-equal paths; the fp32-arithmetic paths
(channels_last, folded batch norms) give the same embeddings within ``EXACT_TOLERANCE``, so
among them the fastest wins once one beats plain fp32 by ``MIN_SPEEDUP``.

Everything measured is kept in a ``PathChoice`` on the encoder (``encoder.path_choice``).
On CUDA the model runs in fp16 as before; ``precision="fp32"`` always gives the plain model.

The choice is a decision made once and kept (``probe_core.path_decisions``): ``select_path``
given a store and a key reads the decision back and times nothing; only the first load with
those settings on this machine calibrates.

Every forward pass runs on a batch of exactly ``forward_rows(device)`` rows (the extraction
core pads the last one), so that a row's vector never depends on how many images were
batched with it.
"""

from __future__ import annotations

import contextlib
import copy
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timezone

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter
from torch import nn
from torchvision import transforms

from .path_decisions import CandidateMeasurement, DecisionKey, PathDecision, PathDecisions
from .preprocessing import RGB_STEPS, step_name

__all__ = ["CandidateMeasurement", "ExecutionPath", "PathChoice", "forward_rows", "select_path"]

MIN_COSINE = 0.999
EXACT_TOLERANCE = 1e-5  # max |difference| of unit-norm embeddings for fp32-arithmetic paths
MIN_SPEEDUP = 1.1
CALIBRATION_IMAGES = 16
CALIBRATION_SEED = 0
TIMING_ROUNDS = 2
MIN_LAYER_SHARE = 0.25  # of the forward's multiply-adds, for a layer kind to suggest a path

# The forward pass's fixed batch shape, by device: every batch is padded to it. The CPU's is
# the batch size that measured fastest there (embed.DEFAULT_BATCH_SIZES).
FORWARD_ROWS = {"cuda": 256, "mps": 32, "cpu": 16}

NUMERICS = ("fp32", "int8-dynamic", "bf16", "fp16")  # from exact to least exact
# ONNX Runtime on the encoder's exported graph (probe_core.onnx_runtime_path): CPU only,
# named paths (opt-in), each its own arithmetic and cache key.
ONNX_NUMERICS = ("onnx", "onnx-int8")
CHANNELS_LAST = "channels_last"
FOLDED_BN = "folded-bn"


def forward_rows(device: torch.device | str) -> int:
    """How many rows every forward pass on ``device`` runs (the last batch padded to it)."""
    return FORWARD_ROWS.get(torch.device(device).type, 16)


class PrecisionError(ValueError):
    """A precision name that does not exist, or cannot run on the device."""


@dataclass(frozen=True)
class ExecutionPath:
    """How a model runs: its arithmetic (``numerics``) and its memory layout."""

    numerics: str = "fp32"  # one of NUMERICS
    channels_last: bool = False
    folded_bn: bool = False  # batch norms folded into the convolutions (fold_batch_norms)

    @property
    def name(self) -> str:
        """e.g. ``fp32``, ``fp32+channels_last``, ``fp32+folded-bn+channels_last``,
        ``int8-dynamic``, ``bf16``, ``fp16``."""
        options = [FOLDED_BN] * self.folded_bn + [CHANNELS_LAST] * self.channels_last
        return "+".join([self.numerics, *options])

    @property
    def is_fp32_arithmetic(self) -> bool:
        return self.numerics == "fp32"

    @classmethod
    def parse(cls, name: str) -> ExecutionPath:
        numerics, *options = name.split("+")
        if numerics in ONNX_NUMERICS and not options:
            return cls(numerics)
        if numerics not in NUMERICS or not set(options) <= {FOLDED_BN, CHANNELS_LAST}:
            raise PrecisionError(
                f"unknown precision {name!r}; expected auto, one of {', '.join(NUMERICS)}"
                f" optionally followed by +{FOLDED_BN} and/or +{CHANNELS_LAST}, or one of the"
                f" ONNX Runtime paths {', '.join(ONNX_NUMERICS)}"
            )
        return cls(numerics, CHANNELS_LAST in options, FOLDED_BN in options)

    def run(self, model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
        """The model's output for a batch already on the model's device and dtype."""
        if self.channels_last and batch.dim() == 4:
            batch = batch.contiguous(memory_format=torch.channels_last)
        if self.numerics == "bf16":
            with torch.autocast(batch.device.type, dtype=torch.bfloat16):
                return model(batch)
        return model(batch)


def readable_time(iso: str) -> str:
    """``2026-12-03T05:40:12+00:00`` as ``2026-12-03 05:40 UTC`` (as it is, if not ISO)."""
    try:
        moment = datetime.fromisoformat(iso).astimezone(timezone.utc)
    except ValueError:
        return iso
    return moment.strftime("%Y-%m-%d %H:%M UTC")


@dataclass(frozen=True)
class PathChoice:
    """The execution path an encoder uses, and why."""

    path: ExecutionPath
    reason: str
    measurements: tuple[CandidateMeasurement, ...] = ()
    fp32_images_per_second: float | None = None
    seconds: float = 0.0  # what choosing cost at load time (0 when read back from the store)
    calibrated: bool = False  # candidates were timed in this process
    decided_at: str = ""  # when the kept decision was made (ISO 8601 UTC); "": not kept
    location: str = ""  # the decision's file in the store ("": none, or in memory only)

    @property
    def precision(self) -> str:
        return self.path.name

    def describe(self) -> str:
        """One line for people: the path and when it was decided, e.g. ``fp32+folded-bn+
        channels_last, decided 2026-12-03 05:40 UTC (stored decision, no calibration)``."""
        if not self.decided_at:
            return f"{self.path.name} ({self.reason})"
        how = (
            f"calibrated in this process, {self.seconds:.1f} s"
            if self.calibrated
            else "stored decision, no calibration"
        )
        return f"{self.path.name}, decided {readable_time(self.decided_at)} ({how})"

    def record(self) -> dict:
        """What ``metrics.json`` keeps of the path: its name, the decision and its cost."""
        return {
            "name": self.path.name,
            "reason": self.reason,
            "decided_at": self.decided_at,
            "calibrated_in_this_process": self.calibrated,
            "calibration_seconds": round(self.seconds, 3),
            "decision_file": self.location,
        }


@dataclass(frozen=True)
class LayerProfile:
    """Where a forward pass spends its multiply-adds, and which Linear layers it uses."""

    conv_macs: int
    linear_macs: int
    linear_names: frozenset[str]
    batch_norm_folds: tuple[tuple[str, str], ...] = ()  # (conv, batch norm) names to fold

    def share(self, macs: int) -> float:
        total = self.conv_macs + self.linear_macs
        return macs / total if total else 0.0

    @property
    def conv_heavy(self) -> bool:
        return self.share(self.conv_macs) >= MIN_LAYER_SHARE

    @property
    def linear_heavy(self) -> bool:
        return self.share(self.linear_macs) >= MIN_LAYER_SHARE


# ----------------------------------------------------------------------- calibration batch


def calibration_images(
    count: int = CALIBRATION_IMAGES, seed: int = CALIBRATION_SEED
) -> list[Image.Image]:
    """Seeded synthetic RGB images of four kinds and four sizes: the same on every machine."""
    rng = np.random.default_rng(seed)
    kinds = (_noise_image, _gradient_image, _blob_image, _shapes_image)
    sizes = ((320, 240), (240, 320), (256, 256), (400, 300))
    return [kinds[i % len(kinds)](rng, sizes[(i // len(kinds)) % len(sizes)]) for i in range(count)]


def _noise_image(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    width, height = size
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def _gradient_image(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    width, height = size
    y, x = np.mgrid[0:height, 0:width] / max(size)
    channels = []
    for _ in range(3):
        angle, offset = rng.uniform(0, 2 * np.pi), rng.uniform(-0.5, 0.5)
        ramp = np.cos(angle) * x + np.sin(angle) * y + offset
        channels.append((ramp - ramp.min()) / (np.ptp(ramp) or 1.0))
    return Image.fromarray((np.stack(channels, axis=-1) * 255).astype(np.uint8))


def _blob_image(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    coarse = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    image = Image.fromarray(coarse).resize(size, Image.Resampling.BICUBIC)
    grain = rng.normal(0, 8, (size[1], size[0], 3))
    return Image.fromarray(np.clip(np.asarray(image) + grain, 0, 255).astype(np.uint8))


def _shapes_image(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    image = Image.new("RGB", size, tuple(int(v) for v in rng.integers(0, 256, 3)))
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        x0, y0 = rng.integers(0, size[0]), rng.integers(0, size[1])
        x1, y1 = x0 + rng.integers(8, size[0] // 2), y0 + rng.integers(8, size[1] // 2)
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape((int(x0), int(y0), int(x1), int(y1)), fill=colour)
    return image.filter(ImageFilter.GaussianBlur(1))


def calibration_batch(preprocess: Callable, count: int = CALIBRATION_IMAGES) -> torch.Tensor:
    """The calibration images through the encoder's own preprocessing, stacked."""
    return torch.stack([preprocess(image) for image in calibration_images(count)])


# ----------------------------------------------------------------------- measuring


def _unit(features: torch.Tensor) -> torch.Tensor:
    features = features.double()
    return features / features.norm(dim=-1, keepdim=True)


def _layer_profile(model: nn.Module, batch: torch.Tensor) -> tuple[torch.Tensor, LayerProfile]:
    """The model's output for ``batch``, and the multiply-adds of its Conv2d/Linear layers."""
    counts = {"conv": 0, "linear": 0}
    used: set[str] = set()
    handles = []

    def conv_hook(module: nn.Conv2d, _inputs, output: torch.Tensor) -> None:
        kernel = module.kernel_size[0] * module.kernel_size[1]
        counts["conv"] += output.numel() * kernel * module.in_channels // module.groups

    def linear_hook(name: str) -> Callable:
        def hook(module: nn.Linear, _inputs, output: torch.Tensor) -> None:
            counts["linear"] += output.numel() * module.in_features
            used.add(name)

        return hook

    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            handles.append(module.register_forward_hook(conv_hook))
        elif type(module) is nn.Linear:  # subclasses (e.g. attention out_proj) stay float
            handles.append(module.register_forward_hook(linear_hook(name)))
    try:
        output = model(batch)
    finally:
        for handle in handles:
            handle.remove()
    return output, LayerProfile(counts["conv"], counts["linear"], frozenset(used))


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def _quiet_quantization() -> Iterator[None]:
    # torch.ao.quantization warns that it is deprecated in favour of torchao at every call.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        yield


def _set_layout(model: nn.Module, channels_last: bool) -> None:
    # A layout change is lossless, so the shared fp32 model can go back and forth.
    model.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def foldable_batch_norms(model: nn.Module, batch: torch.Tensor) -> list[tuple[str, str]]:
    """(convolution, batch norm) module names where, in a forward pass over ``batch``, the
    batch norm's input is the very tensor the convolution returned (both in eval mode)."""
    # Each output is kept alive for the pass, so that no later tensor can reuse its id.
    produced: dict[int, tuple[str, torch.Tensor]] = {}
    pairs: list[tuple[str, str]] = []
    handles = []

    def conv_hook(name: str) -> Callable:
        def hook(_module, _inputs, output) -> None:
            produced[id(output)] = (name, output)

        return hook

    def norm_hook(name: str) -> Callable:
        def hook(_module, inputs) -> None:
            source = produced.get(id(inputs[0]))
            if source is not None and source[1] is inputs[0]:
                pairs.append((source[0], name))

        return hook

    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):  # timm's Conv2dSame too: padding, then the conv
            handles.append(module.register_forward_hook(conv_hook(name)))
        elif _foldable_norm(module):
            handles.append(module.register_forward_pre_hook(norm_hook(name)))
    try:
        with torch.inference_mode():
            model(batch)
    finally:
        for handle in handles:
            handle.remove()
    used = [conv for conv, _ in pairs]
    return [(conv, norm) for conv, norm in pairs if used.count(conv) == 1]


def _foldable_norm(module: nn.Module) -> bool:
    """An eval-mode BatchNorm2d with running statistics, plain or timm's BatchNormAct2d
    (whose forward is the batch norm, then ``drop``, then ``act``)."""
    plain = type(module) is nn.BatchNorm2d
    with_activation = type(module).__name__ == "BatchNormAct2d" and hasattr(module, "act")
    return (
        (plain or with_activation)
        and not module.training
        and module.running_mean is not None
        and module.running_var is not None
    )


def fold_batch_norms(model: nn.Module, pairs: list[tuple[str, str]]) -> nn.Module:
    """A copy of ``model`` with each batch norm of ``pairs`` folded into its convolution:
    ``w * s`` and ``(b - mean) * s + beta`` with ``s = gamma / sqrt(var + eps)``, computed
    in float64; the batch norm becomes what follows it (nothing, or timm's drop and act)."""
    folded = copy.deepcopy(model)
    modules = dict(folded.named_modules())
    for conv_name, norm_name in pairs:
        conv, norm = modules[conv_name], modules[norm_name]
        var, mean = norm.running_var.double(), norm.running_mean.double()
        gamma = norm.weight.double() if norm.weight is not None else torch.ones_like(var)
        beta = norm.bias.double() if norm.bias is not None else torch.zeros_like(var)
        scale = gamma / torch.sqrt(var + norm.eps)
        bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(var)
        with torch.no_grad():
            weight = conv.weight.double() * scale.view(-1, 1, 1, 1)
            conv.weight = nn.Parameter(weight.to(conv.weight.dtype), requires_grad=False)
            conv.bias = nn.Parameter(
                ((bias - mean) * scale + beta).to(conv.weight.dtype), requires_grad=False
            )
        after = (
            nn.Identity() if type(norm) is nn.BatchNorm2d else nn.Sequential(norm.drop, norm.act)
        )
        parent_name, _, child = norm_name.rpartition(".")
        setattr(modules[parent_name] if parent_name else folded, child, after)
    return folded.eval()


def prepare(
    model: nn.Module,
    path: ExecutionPath,
    linear_names: frozenset[str],
    folds: list[tuple[str, str]] | None = None,
) -> nn.Module:
    """``model`` ready to run ``path``: the same module with its layout set, or a copy: with
    ``folds`` folded (``folded_bn``), or with only ``linear_names`` quantised (int8; other
    towers stay float)."""
    if path.folded_bn:
        model = fold_batch_norms(model, folds or [])
    if path.numerics == "int8-dynamic":
        model = copy.deepcopy(model)
        modules = dict(model.named_modules())
        for name in sorted(linear_names):
            parent_name, _, child = name.rpartition(".")
            parent = modules[parent_name] if parent_name else model
            setattr(parent, child, RowScaledInt8Linear(modules[name]))
    _set_layout(model, path.channels_last)
    return model


class RowScaledInt8Linear(nn.Module):
    """An ``nn.Linear`` with int8 weights whose input is quantised row by row.

    torch's dynamic quantisation picks one activation scale for the whole input tensor, so a
    row's result would depend on the other rows of its batch. Here every row (one token of one
    image) is first divided by its own largest magnitude, and two fixed rows of +1 and -1 join
    the input, so the quantiser always sees the range [-1, 1]: its parameters never change,
    the int8 product is exact integer arithmetic, and each row is scaled back by its own
    factor. A row's output depends on that row alone.
    """

    def __init__(self, linear: nn.Linear):
        super().__init__()
        from torch.ao.quantization import quantize_dynamic

        bare = nn.Linear(linear.in_features, linear.out_features, bias=False)
        bare.weight = nn.Parameter(linear.weight.detach().clone(), requires_grad=False)
        with _quiet_quantization():
            self.inner = quantize_dynamic(nn.Sequential(bare), {nn.Linear}, dtype=torch.qint8)[0]
        bias = None if linear.bias is None else linear.bias.detach().clone()
        self.register_buffer("bias", bias)
        bounds = torch.ones(2, linear.in_features)
        bounds[1] = -1.0
        self.register_buffer("bounds", bounds)
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features).float()
        count = len(rows)
        # Each row's largest magnitude, in one pass (few parallel regions: on a busy machine
        # each one waits for its threads).
        scale = torch.linalg.vector_norm(rows, ord=float("inf"), dim=1, keepdim=True)
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        scaled = torch.empty(count + 2, self.in_features, dtype=rows.dtype)
        torch.div(rows, scale, out=scaled[:count])  # exactly within [-1, 1]
        scaled[count:] = self.bounds
        product = self.inner(scaled)[:count]
        bias = self.bias
        out = product.mul_(scale) if bias is None else torch.addcmul(bias, product, scale)
        return out.reshape(*x.shape[:-1], self.out_features).to(x.dtype)


def bf16_is_native() -> bool:
    """Whether this CPU has bfloat16 instructions (otherwise bf16 autocast is slow)."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported", "_is_arm_sve_bf16_supported")
    return any(getattr(torch.cpu, probe, lambda: False)() for probe in probes)


def candidate_paths(profile: LayerProfile, device: torch.device) -> list[ExecutionPath]:
    """The paths worth measuring for a model with this profile on this device, most exact first."""
    if device.type != "cpu":
        return []
    layout = profile.conv_heavy
    candidates = [ExecutionPath("fp32", channels_last=True)] if layout else []
    if layout and profile.batch_norm_folds:
        candidates.append(ExecutionPath("fp32", channels_last=True, folded_bn=True))
    if profile.linear_heavy and profile.linear_names and _quantization_available():
        candidates.append(ExecutionPath("int8-dynamic", channels_last=layout))
    if bf16_is_native():
        candidates.append(ExecutionPath("bf16", channels_last=layout))
    return candidates


def _quantization_available() -> bool:
    try:
        from torch.ao.quantization import quantize_dynamic  # noqa: F401
    except ImportError:
        return False
    return torch.backends.quantized.engine not in ("none", "")


def fidelity(reference: torch.Tensor, features: torch.Tensor) -> tuple[float, float]:
    """(min cosine, max |difference|) between the rows of two feature batches, unit-normed."""
    expected, actual = _unit(reference), _unit(features)
    cosines = (expected * actual).sum(dim=-1)
    return float(cosines.min()), float((expected - actual).abs().max())


def _judge(path: ExecutionPath, min_cosine: float, max_diff: float) -> tuple[bool, str]:
    if not np.isfinite(min_cosine) or min_cosine < MIN_COSINE:
        return False, f"min cosine {min_cosine:.5f} < {MIN_COSINE}"
    if path.is_fp32_arithmetic and max_diff > EXACT_TOLERANCE:
        return False, f"fp32 layout differs by {max_diff:.1e} > {EXACT_TOLERANCE:.0e}"
    return True, ""


@dataclass
class _Trial:
    path: ExecutionPath
    model: nn.Module
    measurement: CandidateMeasurement
    seconds: float = float("inf")  # best time on the timed half of the calibration batch

    def run(self, batch: torch.Tensor) -> torch.Tensor:
        _set_layout(self.model, self.path.channels_last)
        return self.path.run(self.model, batch)

    def timed_run(self, batch: torch.Tensor) -> torch.Tensor:
        _set_layout(self.model, self.path.channels_last)
        _synchronize(batch.device)
        started = time.perf_counter()
        output = self.path.run(self.model, batch)
        _synchronize(batch.device)
        self.seconds = min(self.seconds, time.perf_counter() - started)
        return output


def calibrate(
    model: nn.Module, preprocess: Callable, device: torch.device
) -> tuple[nn.Module, PathChoice]:
    """Measure the candidate paths on the calibration batch; the model to use and the choice.

    Every path embeds the first half of the batch (a warm-up), then the second half, timed;
    faithful paths that are not hopelessly slow get ``TIMING_ROUNDS - 1`` more timed runs
    of the second half, interleaved with fp32, and keep their best time.
    """
    started = time.perf_counter()
    fp32 = ExecutionPath()
    batch = calibration_batch(preprocess).to(device)
    warm_up, timed = batch[: len(batch) // 2], batch[len(batch) // 2 :]
    with torch.inference_mode():
        plain = _Trial(fp32, model, CandidateMeasurement(fp32.name, 1.0, 0.0, True))
        warm_up_output, profile = _layer_profile(model, warm_up)
        if profile.conv_heavy:
            folds = tuple(foldable_batch_norms(model, warm_up[:1]))
            profile = replace(profile, batch_norm_folds=folds)
        reference = torch.cat([warm_up_output, plain.timed_run(timed)])
        candidates = candidate_paths(profile, device)
        trials = [_try(model, path, profile, warm_up, timed, reference) for path in candidates]
        faithful = [trial for trial in trials if trial.measurement.faithful]
        # One timed run can be off by a lot on a busy machine: only hopeless paths stop here.
        contenders = [trial for trial in faithful if trial.seconds < 2 * plain.seconds]
        for _ in range(TIMING_ROUNDS - 1 if contenders else 0):
            for trial in [plain, *contenders]:
                trial.timed_run(timed)
        for trial in faithful:
            speedup = plain.seconds / trial.seconds
            trial.measurement = replace(trial.measurement, speedup=speedup)
    _set_layout(model, False)
    chosen = _pick(faithful)
    measurements = tuple(trial.measurement for trial in trials)
    choice = PathChoice(
        path=chosen.path if chosen else fp32,
        reason=_reason(chosen, measurements),
        measurements=measurements,
        fp32_images_per_second=len(timed) / plain.seconds,
        seconds=time.perf_counter() - started,
        calibrated=True,
    )
    if chosen is None:
        return model, choice
    _set_layout(chosen.model, chosen.path.channels_last)
    return chosen.model, choice


def _try(
    model: nn.Module,
    path: ExecutionPath,
    profile: LayerProfile,
    warm_up: torch.Tensor,
    timed: torch.Tensor,
    reference: torch.Tensor,
) -> _Trial:
    trial = _Trial(path, model, CandidateMeasurement(path.name, float("nan"), float("nan"), False))
    try:
        trial.model = prepare(model, path, profile.linear_names, list(profile.batch_norm_folds))
        with _quiet_quantization():
            features = torch.cat([trial.run(warm_up), trial.timed_run(timed)])
    except Exception as error:  # a path this build of torch cannot run: skip it
        _set_layout(model, False)
        trial.model = model
        trial.measurement = replace(trial.measurement, note=f"{type(error).__name__}: {error}")
        return trial
    min_cosine, max_diff = fidelity(reference, features)
    faithful, note = _judge(path, min_cosine, max_diff)
    trial.measurement = CandidateMeasurement(path.name, min_cosine, max_diff, faithful, note=note)
    return trial


def _pick(faithful: list[_Trial]) -> _Trial | None:
    """From exact to less exact, each path must beat the one chosen so far by MIN_SPEEDUP;
    among fp32-arithmetic paths (the same embeddings within EXACT_TOLERANCE) the faster wins
    once one has beaten plain fp32 so."""
    chosen, chosen_speed = None, 1.0
    for trial in faithful:  # candidate_paths lists them from most to least exact
        speed = trial.measurement.speedup or 0.0
        alike = chosen is not None and chosen.path.is_fp32_arithmetic
        alike = alike and trial.path.is_fp32_arithmetic
        if (speed > chosen_speed) if alike else (speed >= MIN_SPEEDUP * chosen_speed):
            chosen, chosen_speed = trial, speed
    return chosen


def _reason(chosen: _Trial | None, measurements: tuple[CandidateMeasurement, ...]) -> str:
    def describe(m: CandidateMeasurement) -> str:
        if m.note:
            return f"{m.path}: {m.note}"
        speed = "" if m.speedup is None else f"{m.speedup:.2f}x, "
        return f"{m.path}: {speed}min cosine {m.min_cosine:.5f}"

    details = "; ".join(describe(m) for m in measurements)
    if not measurements:
        return "no faster path applies to this model on this device"
    if chosen is None:
        return f"fp32: no candidate was both faithful and {MIN_SPEEDUP}x faster ({details})"
    return f"{chosen.path.name}: the fastest faithful path on the calibration batch ({details})"


def _prepare_named(
    model: nn.Module,
    preprocess: Callable,
    device: torch.device,
    path: ExecutionPath,
    encoder_id: str = "",
) -> nn.Module:
    """``model`` ready for a path that is not measured here (requested, or decided before)."""
    if path.numerics in ONNX_NUMERICS:
        return onnx_runtime(model, preprocess, device, path, encoder_id)[0]
    if path.numerics == "fp16":
        model = model.half()
    linear_names: frozenset[str] = frozenset()
    folds: list[tuple[str, str]] = []
    if path.numerics == "int8-dynamic" or path.folded_bn:
        one = calibration_batch(preprocess, count=1).to(device)
        with torch.inference_mode():
            _, profile = _layer_profile(model, one)
        linear_names = profile.linear_names
        folds = foldable_batch_norms(model, one) if path.folded_bn else []
    return prepare(model, path, linear_names, folds)


def _decided(
    model: nn.Module,
    preprocess: Callable,
    device: torch.device,
    decisions: PathDecisions,
    key: DecisionKey,
    encoder_id: str = "",
) -> tuple[nn.Module, PathChoice]:
    """The path kept in ``decisions`` for ``key``, or (first time) calibrated and kept."""
    calibrated: list[tuple[nn.Module, PathChoice]] = []

    def measure() -> PathDecision:
        model_and_choice = calibrate(model, preprocess, device)
        calibrated.append(model_and_choice)
        choice = model_and_choice[1]
        return PathDecision(
            key,
            choice.path.name,
            choice.reason,
            choice.measurements,
            choice.fp32_images_per_second,
            choice.seconds,
        )

    decision = decisions.decide(key, measure)
    path = ExecutionPath.parse(decision.path)
    if calibrated and calibrated[0][1].path == path:  # measured here: the model is ready
        ready, choice = calibrated[0]
        seconds = choice.seconds
    else:  # read back (or another process's decision won the race): nothing timed here
        ready, seconds = _prepare_named(model, preprocess, device, path, encoder_id), 0.0
    return ready, PathChoice(
        path,
        decision.reason,
        decision.measurements,
        decision.fp32_images_per_second,
        seconds=seconds,
        calibrated=bool(calibrated),
        decided_at=decision.decided_at,
        location=decision.location,
    )


def select_path(
    model: nn.Module,
    preprocess: Callable,
    device: torch.device,
    precision: str = "auto",
    *,
    decisions: PathDecisions | None = None,
    key: DecisionKey | None = None,
    encoder_id: str = "",
) -> tuple[nn.Module, PathChoice]:
    """The model ready to run and its path: decided (``auto`` on the CPU: read from
    ``decisions`` for ``key``, or calibrated once and kept there; calibrated every time when
    no store is given), fp16 (``auto`` on CUDA), plain fp32 (``fp32``, weight-free models,
    other devices) or a named path (``onnx``/``onnx-int8``: the graph of ``encoder_id`` in
    onnxruntime)."""
    path = None if precision == "auto" else ExecutionPath.parse(precision)
    if getattr(model, "keeps_float32", False):
        return model, PathChoice(ExecutionPath(), "weight-free features always run in fp32")
    if path is None:
        if device.type == "cuda":
            return model.half(), PathChoice(ExecutionPath("fp16"), "fp16 on CUDA")
        if device.type != "cpu":
            return model, PathChoice(ExecutionPath(), f"fp32 on {device.type}")
        if decisions is None or key is None:
            return calibrate(model, preprocess, device)
        return _decided(model, preprocess, device, decisions, key, encoder_id)
    if path.numerics in ONNX_NUMERICS:
        return onnx_runtime(model, preprocess, device, path, encoder_id)
    if path.numerics == "int8-dynamic" and device.type != "cpu":
        raise PrecisionError("int8-dynamic runs on the CPU only")
    if path.numerics == "fp16" and device.type == "cpu":
        raise PrecisionError("fp16 runs on CUDA or MPS only; on the CPU use auto or bf16")
    reason = "fp32 requested: the exact model" if path == ExecutionPath() else "requested"
    return _prepare_named(model, preprocess, device, path), PathChoice(path, reason)


def onnx_runtime(
    model: nn.Module,
    preprocess: Callable,
    device: torch.device,
    path: ExecutionPath,
    encoder_id: str,
) -> tuple[nn.Module, PathChoice]:
    """``model`` as its exported graph in onnxruntime (``probe_core.onnx_runtime_path``; the
    graph is exported once and kept beside the embedding cache), checked on the calibration
    batch: min cosine >= ``MIN_COSINE`` to the fp32 model, or ``PrecisionError``."""
    from . import onnx_runtime_path

    if device.type != "cpu":
        raise PrecisionError(f"{path.name} runs on the CPU only")
    started = time.perf_counter()
    batch = calibration_batch(preprocess)
    try:
        measurement, ort_model = onnx_runtime_path.checked(
            model, encoder_id, preprocess, batch, path.name, MIN_COSINE
        )
    except onnx_runtime_path.OrtPathError as error:
        raise PrecisionError(f"{path.name}: {error}") from error
    faithful = CandidateMeasurement(
        path.name, measurement.min_cosine, measurement.max_abs_diff, measurement.faithful
    )
    if not measurement.faithful:
        raise PrecisionError(f"{path.name} is not faithful to fp32: {measurement.note}")
    exported = (
        f", graph exported in {measurement.export_seconds:.1f} s"
        if measurement.export_seconds
        else ", graph from the cache"
    )
    reason = f"requested; min cosine {measurement.min_cosine:.6f} to fp32{exported}"
    if measurement.note:
        reason += f"; {measurement.note}"
    seconds = time.perf_counter() - started
    return ort_model, PathChoice(path, reason, (faithful,), seconds=seconds)


# ----------------------------------------------------------------------- JPEG draft decoding

DRAFT_MARGIN = 2  # draft-decoded JPEGs keep at least twice the side the preprocessing resizes to


def draft_min_side(preprocess: Callable) -> int | None:
    """The shorter side a JPEG may be draft-decoded down to before ``preprocess``, or None.

    Only when the preprocessing starts (after an RGB conversion) with a ``Resize`` that
    shrinks the image anyway; then the DCT-domain downscale keeps ``DRAFT_MARGIN`` times the
    resize target, so that the resize still averages several decoded pixels per output pixel.
    """
    steps = getattr(preprocess, "transforms", None)
    if not steps:
        return None
    for step in steps:
        if step_name(step) in RGB_STEPS:
            continue
        if isinstance(step, transforms.Resize):
            size = step.size
            sides = [size] if isinstance(size, int) else list(size)
            return DRAFT_MARGIN * max(int(side) for side in sides) if sides else None
        return None
    return None
