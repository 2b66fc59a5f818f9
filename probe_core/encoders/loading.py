"""``load_encoder``: the one door from an encoder name to a frozen model on its device;
``fetch_weights`` gets an encoder's hub weights into the cache beforehand (with progress),
``needs_download`` tells from the local cache alone whether it would have to, and
``download_size`` how much it would fetch."""

from __future__ import annotations

import torch

from ..acceleration import PrecisionError, forward_rows, select_path
from ..devices import DeviceUnavailableError, pick_device
from ..path_decisions import DecisionKey, PathDecisions
from .base import DEFAULT_ENCODER, Encoder, EncoderError
from .hub import DownloadListener, Downloads, HubFiles, is_cached
from .registry import parse_name


def load_encoder(
    name: str = DEFAULT_ENCODER,
    device: str | None = None,
    precision: str = "auto",
    download_progress: DownloadListener | None = None,
    decisions: PathDecisions | None = None,
) -> Encoder:
    """Build a frozen encoder by name on the best (or requested) device.

    ``precision="auto"``: on the CPU the fastest execution path measured faithful to fp32
    on a calibration batch (see ``probe_core.acceleration``), decided once per machine and
    settings and kept in ``decisions`` (default: ``PathDecisions.default()``, beside the
    embedding cache), and JPEG draft decoding where the preprocessing allows it; fp16 on
    CUDA. ``"fp32"``: the plain fp32 model and full-size decoding (the reference). A path
    name (e.g. ``"int8-dynamic"``) forces it; neither reads nor writes the store.
    ``download_progress`` receives ``DownloadProgress`` reports while weights download
    (the first says how much and where to, before anything is fetched).
    """
    family, spec = parse_name(name)
    try:
        target = pick_device(device)
    except DeviceUnavailableError as error:
        raise EncoderError(str(error)) from error
    built = family.build(spec, Downloads(name.strip(), download_progress))
    model = built.model.to(target, torch.float32).eval()
    model.requires_grad_(False)
    encoder_id = f"{family.name}:{built.identity}"
    preprocess = built.preprocess
    rows = forward_rows(target)
    fast_decoding = precision != "fp32"
    # The key's preprocessing id is the encoder's own (with its JPEG decoding): built before
    # the path is known, from an Encoder that only describes it.
    described = Encoder(name, encoder_id, model, preprocess, built.dim, target, torch.float32)
    described.fast_decoding = fast_decoding
    key = DecisionKey.current(encoder_id, described.preprocess_id, str(target), rows)
    try:
        model, choice = select_path(
            model,
            preprocess,
            target,
            precision,
            decisions=decisions if decisions is not None else PathDecisions.default(),
            key=key,
            encoder_id=encoder_id,
        )
    except PrecisionError as error:
        raise EncoderError(str(error)) from error
    dtype = torch.float16 if choice.path.numerics == "fp16" else torch.float32
    return Encoder(
        name=name,
        encoder_id=encoder_id,
        model=model,
        preprocess=preprocess,
        dim=built.dim,
        device=target,
        dtype=dtype,
        path=choice.path,
        path_choice=choice,
        fast_decoding=fast_decoding,
        forward_rows=rows,
    )


def fetch_weights(name: str, download_progress: DownloadListener | None = None) -> HubFiles | None:
    """Get an encoder's weights from the Hugging Face hub into its local cache, without
    building the model: the same files, commit and reports as ``load_encoder`` (the first
    report says how much and where to before anything is fetched; then bytes done and the
    rate, at most every ``hub.REPORT_INTERVAL`` seconds; the last ``finished``), and the same
    fast failure, naming the model and the offline options, when the hub cannot be reached
    and the cache lacks them. Nothing is reported when everything is cached already.

    None for an encoder with no hub weights (bundled, baselines, random weights, local files
    and folders, URL-only checkpoints that their library downloads itself). Lets an app
    show a download's progress outside the function that caches loaded models."""
    family, spec = parse_name(name)
    weights = family.hub_weights(spec)
    if weights is None:
        return None
    return Downloads(name.strip(), download_progress).fetch_weights(weights)


def needs_download(name: str) -> bool:
    """Whether loading ``name`` would download weights from the Hugging Face hub: some of the
    files it needs are missing from the local cache. Looks at the disk only (no network)."""
    family, spec = parse_name(name)
    weights = family.hub_weights(spec)
    return weights is not None and not is_cached(weights.repo, weights.choose)


def download_size(name: str) -> int | None:
    """How many bytes loading ``name`` would download: 0 when its weights are cached or it
    has none on the hub; the hub's file sizes otherwise; None when the hub cannot be reached
    or does not tell (asks the hub, within seconds, only when something is missing)."""
    family, spec = parse_name(name)
    weights = family.hub_weights(spec)
    if weights is None:
        return 0
    return Downloads(name.strip()).download_size(weights)
