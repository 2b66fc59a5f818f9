"""Downloads told honestly: size and destination before, progress in bytes during, files in
the Hugging Face cache pinned to one commit after; the second load downloads nothing. Run
against a hub on localhost (tests/fake_hub.py), so huggingface_hub's own download path runs."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from probe_core.cli import main
from probe_core.encoders import (
    DEFAULT_ENCODER,
    DownloadProgress,
    EncoderError,
    EncoderUnavailableError,
    download_size,
    fetch_weights,
    load_encoder,
    needs_download,
)
from probe_core.encoders import hub as hub_module
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


def test_fetch_weights_downloads_first_with_size_then_megabytes_and_rate(hub, weights, monkeypatch):
    """What the app calls before loading (outside its model cache), so that its progress bar
    is live: the same reports as load_encoder, and the model then loads from the cache."""
    from huggingface_hub import constants

    monkeypatch.setattr(hub_module, "REPORT_INTERVAL", 0.0)  # every chunk reported
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 64 * 1024)  # was 10 MB: one chunk
    assert needs_download(NAME) and download_size(NAME) == len(weights)  # the hub's size
    reports: list[DownloadProgress] = []
    files = fetch_weights(NAME, download_progress=reports.append)

    assert files.repo == REPO and files.revision == COMMIT
    assert reports[0].describe() == (
        f"{NAME}: downloading {len(weights) / 1e6:.1f} MB from {REPO} into"
        f" {repo_cache_folder(REPO)}"
    )
    during = [r for r in reports if 0 < r.done_bytes < len(weights) and not r.finished]
    assert during, "no report while the bytes arrived"
    for report in during:
        megabytes = f"{report.done_bytes / 1e6:,.1f} of {len(weights) / 1e6:,.1f} MB"
        rate = f"{report.bytes_per_second / 1e6:,.1f} MB/s"
        assert report.describe() == f"{NAME}: {megabytes} · {rate}"
        assert report.bytes_per_second > 0 and 0 < report.fraction < 1
    assert reports[-1].finished and reports[-1].done_bytes == len(weights)
    assert not needs_download(NAME) and download_size(NAME) == 0 and hub.downloads == 1

    again: list[DownloadProgress] = []
    assert fetch_weights(NAME, download_progress=again.append).paths == files.paths
    encoder = load_encoder(NAME, device="cpu", precision="fp32", download_progress=again.append)
    assert again == [] and hub.downloads == 1  # both from the cache
    assert encoder.encoder_id == f"{NAME}@{REPO}@rev:{COMMIT[:12]}"


@pytest.mark.parametrize(
    "name",
    [DEFAULT_ENCODER, "baseline:pixels", "timm:resnet18@random", "open_clip:ViT-B-32"],
)
def test_encoders_without_hub_weights_fetch_nothing(name, hub):
    assert fetch_weights(name) is None and not needs_download(name)
    assert download_size(name) == 0


def test_fetch_weights_offline_names_the_model_and_the_offline_options(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(EncoderUnavailableError) as caught:
        fetch_weights("timm:resnet50.a1_in1k")
    message = str(caught.value)
    assert "timm:resnet50.a1_in1k" in message and "HF_HUB_OFFLINE is set" in message
    assert download_size("timm:resnet50.a1_in1k") is None  # the hub cannot be asked
    assert "'timm:resnet50@random'" in message and f"'{DEFAULT_ENCODER}'" in message


def test_fetch_weights_of_an_hf_name_asks_for_the_extra_before_downloading(hub, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "transformers", None)  # as if not installed
    with pytest.raises(EncoderError, match=r'pip install "probe-studio\[hf\]"'):
        fetch_weights("hf:" + REPO)
    assert hub.downloads == 0


def test_a_model_missing_on_the_hub_is_named(hub):
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


def test_embed_prints_size_and_destination_then_a_byte_progress_bar(
    hub, weights, image_folder, tmp_path, capsys
):
    out = tmp_path / "out"
    code = main(["embed", str(image_folder), "--encoder", NAME, "--out", str(out), "--no-cache",
                 "--precision", "fp32"])  # fmt: skip
    assert code == 0
    err = capsys.readouterr().err
    assert f"{NAME}: downloading {len(weights) / 1e6:.1f} MB from {REPO} into" in err
    assert "downloading:" in err and "B/s" in err  # tqdm's bar, in bytes
    assert hub.downloads == 1 and (out / "embeddings.parquet").is_file()


def test_predict_fetches_the_probes_encoder_with_progress(
    hub, weights, image_folder, tmp_path, capsys
):
    """A probe taken to a machine whose cache lacks its encoder's weights."""
    run = tmp_path / "run"
    assert main(["run", str(image_folder), "--encoder", NAME, "--out", str(run), "--no-cache",
                 "--projection", "none", "--precision", "fp32",
                 "--duplicate-threshold", "1.0"]) == 0  # fmt: skip
    import shutil

    shutil.rmtree(repo_cache_folder(REPO))
    capsys.readouterr()
    predictions = tmp_path / "predictions.csv"
    probe = next(run.rglob("probe.safetensors")).parent
    code = main(["predict", str(probe), str(image_folder), "--out", str(predictions)])
    assert code == 0, capsys.readouterr().err
    err = capsys.readouterr().err
    assert f"{NAME}: downloading {len(weights) / 1e6:.1f} MB from {REPO} into" in err
    assert "downloading:" in err and hub.downloads == 2 and predictions.is_file()
