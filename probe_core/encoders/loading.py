"""``load_encoder``: the one door from an encoder name to a frozen model on its device."""

from __future__ import annotations

import torch

from ..acceleration import PrecisionError, select_path
from ..devices import DeviceUnavailableError, pick_device
from .base import DEFAULT_ENCODER, Encoder, EncoderError
from .hub import DownloadListener, Downloads
from .registry import parse_name


def load_encoder(
    name: str = DEFAULT_ENCODER,
    device: str | None = None,
    precision: str = "auto",
    download_progress: DownloadListener | None = None,
) -> Encoder:
    """Build a frozen encoder by name on the best (or requested) device.

    ``precision="auto"``: on the CPU the fastest execution path measured faithful to fp32
    on a calibration batch (see ``probe_core.acceleration``), and JPEG draft decoding where
    the preprocessing allows it; fp16 on CUDA. ``"fp32"``: the plain fp32 model and
    full-size decoding (the reference). A path name (e.g. ``"int8-dynamic"``) forces it.
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
    remember_as = (encoder_id, repr(preprocess), str(target), torch.get_num_threads())
    try:
        model, choice = select_path(model, preprocess, target, precision, remember_as=remember_as)
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
        fast_decoding=precision != "fp32",
    )
