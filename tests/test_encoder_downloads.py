"""Downloads told honestly: size and destination before, progress in bytes during, files in
the Hugging Face cache pinned to one commit after; the second load downloads nothing. Run
against a hub on localhost (tests/fake_hub.py), so huggingface_hub's own download path runs."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from probe_core.cli import main
from probe_core.encoders import DownloadProgress, load_encoder
from probe_core.encoders.hub import repo_cache_folder
from tests.fake_hub import COMMIT, FakeHub

REPO = "timm/test_resnet.r160_in1k"
NAME = "timm:test_resnet.r160_in1k"


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> bytes:
    import timm

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "model.safetensors"
    save_file(timm.create_model("test_resnet.r160_in1k", pretrained=False).state_dict(), path)
    return path.read_bytes()


@pytest.fixture
def hub(tmp_path, monkeypatch, weights):
    """The fake hub serving the timm repo, online, with an empty cache."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    for proxy in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY"):
        monkeypatch.delenv(proxy, raising=False)
    with FakeHub({REPO: {"model.safetensors": weights, "config.json": b"{}"}}) as server:
        # as HF_ENDPOINT=... would set them when huggingface_hub is imported
        monkeypatch.setattr(constants, "ENDPOINT", server.endpoint)
        template = server.endpoint + "/{repo_id}/resolve/{revision}/{filename}"
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
        yield server


def test_a_download_is_announced_then_reported_and_lands_in_the_cache(hub, weights):
    reports: list[DownloadProgress] = []
    encoder = load_encoder(NAME, device="cpu", precision="fp32", download_progress=reports.append)

    first, last = reports[0], reports[-1]
    assert (first.done_bytes, first.total_bytes, first.finished) == (0, len(weights), False)
    assert first.destination == str(repo_cache_folder(REPO))
    assert first.describe() == (
        f"{NAME}: downloading {len(weights) / 1e6:.1f} MB from {REPO} into {first.destination}"
    )
    assert last.finished and last.done_bytes == len(weights) == last.total_bytes
    assert [r.done_bytes for r in reports] == sorted(r.done_bytes for r in reports)
    assert all(r.bytes_per_second >= 0 for r in reports)
    assert hub.downloads == 1  # the weights only: config.json is not what timm loads
    assert encoder.encoder_id == f"{NAME}@{REPO}@rev:{COMMIT[:12]}"
    cached = repo_cache_folder(REPO) / "snapshots" / COMMIT / "model.safetensors"
    assert cached.read_bytes() == weights

    again: list[DownloadProgress] = []
    load_encoder(NAME, device="cpu", precision="fp32", download_progress=again.append)
    assert again == [] and hub.downloads == 1


def test_the_cli_prints_size_and_destination_then_a_byte_progress_bar(
    hub, weights, image_folder, tmp_path, capsys
):
    code = main(
        ["run", str(image_folder), "--encoder", NAME, "--out", str(tmp_path / "out"),
         "--no-cache", "--projection", "none", "--precision", "fp32",
         "--duplicate-threshold", "1.0"]
    )  # fmt: skip
    assert code == 0
    err = capsys.readouterr().err
    assert f"{NAME}: downloading {len(weights) / 1e6:.1f} MB from {REPO} into" in err
    assert "downloading:" in err and "B/s" in err  # tqdm's bar, in bytes


def test_a_model_missing_on_the_hub_is_named(hub):
    from probe_core.encoders import EncoderError

    with pytest.raises(EncoderError, match="no model 'lab/missing' on the Hugging Face hub"):
        load_encoder("hf:lab/missing", device="cpu")


def test_download_reports_read_as_sentences():
    report = DownloadProgress("hf:a/b", "a/b", "/cache/models--a--b", 5_000_000, 20_000_000, 2.5e6)
    assert report.fraction == 0.25
    assert report.describe() == "hf:a/b: 5.0 of 20.0 MB · 2.5 MB/s"
    unknown = DownloadProgress("hf:a/b", "a/b", "/c", 0, None)
    assert unknown.fraction is None and "size unknown" in unknown.describe()
    done = DownloadProgress("hf:a/b", "a/b", "/c", 20_000_000, 20_000_000, finished=True)
    assert done.describe() == "hf:a/b: downloaded 20.0 of 20.0 MB into /c"
