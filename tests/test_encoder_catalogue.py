"""What the pickers and ``probe-studio encoders`` offer: every model already in the local
Hugging Face cache first (on disk, with its size), each family's short list, the weight-free
encoders, and ready-made comparisons; and ``compare`` across families from the CLI."""

from __future__ import annotations

import pandas as pd
import pytest
from safetensors.torch import save_file

from probe_core.cache import EmbeddingCache
from probe_core.cli import main
from probe_core.encoders import (
    DEFAULT_ENCODER,
    FAMILIES,
    EncoderError,
    EncoderInfo,
    describe,
    list_encoders,
    parse_name,
    ready_sets,
)
from probe_core.study import Study, StudySettings
from tests import tiny_models
from tests.tiny_models import fill_hub_cache, folder_files


@pytest.fixture
def filled_cache(tmp_path, monkeypatch):
    """A Hugging Face cache holding a timm model, a transformers DINOv2 and an open_clip repo
    (and a dataset repo, which is no encoder)."""
    import timm
    from huggingface_hub import constants

    cache = tmp_path / "hf-cache"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    weights = tmp_path / "model.safetensors"
    save_file(timm.create_model("test_resnet.r160_in1k").state_dict(), weights)
    fill_hub_cache(cache, "timm/test_resnet.r160_in1k", {"model.safetensors": weights})
    dinov2 = tiny_models.save_tiny_dinov2(tmp_path / "dinov2")
    fill_hub_cache(cache, "facebook/dinov2-tiny", folder_files(dinov2))
    tiny_models.tiny_open_clip(tmp_path / "clip")
    fill_hub_cache(cache, "lab/tiny-clip", folder_files(tmp_path / "clip"))
    (cache / "datasets--lab--images" / "snapshots").mkdir(parents=True)
    return cache


REPOS = {
    "hf:facebook/dinov2-tiny": "facebook/dinov2-tiny",
    "open_clip:hf-hub:lab/tiny-clip": "lab/tiny-clip",
    "timm:test_resnet.r160_in1k": "timm/test_resnet.r160_in1k",
}
ON_DISK = sorted(REPOS)


def test_models_in_the_cache_come_first_marked_on_disk_with_their_size(filled_cache):
    infos = list_encoders()
    first = infos[: len(ON_DISK)]
    assert sorted(info.name for info in first) == ON_DISK
    for info in first:
        assert info.on_disk and not info.needs_download
        folder = filled_cache / ("models--" + REPOS[info.name].replace("/", "--"))
        size = sum(path.stat().st_size for path in (folder / "blobs").iterdir())
        assert info.on_disk_bytes == size
        assert info.status == f"on disk, {size / 1e6:,.1f} MB"
    names = [info.name for info in infos]
    assert len(names) == len(set(names))
    assert names.index(DEFAULT_ENCODER) == len(ON_DISK)  # then the curated lists, bundled first
    assert {info.family for info in infos} == set(FAMILIES)
    weight_free = [info.weight_free for info in infos]
    assert weight_free == sorted(weight_free)  # the weight-free ones last


def test_curated_models_say_they_need_a_download_until_cached(filled_cache):
    infos = {info.name: info for info in list_encoders()}
    for name in (
        "timm:vit_small_patch14_dinov2.lvd142m",
        "hf:facebook/dinov2-small",
        "open_clip:hf-hub:timm/ViT-B-16-SigLIP2",
        "open_clip:ViT-B-32/laion2b_s34b_b79k",
    ):
        assert infos[name].needs_download and infos[name].status == "needs download"
    for name in ("timm:resnet50@random", "open_clip:ViT-B-32", "baseline:pixels"):
        assert infos[name].weight_free and infos[name].status == "no trained weights, offline"
    assert infos[DEFAULT_ENCODER].label == f"{DEFAULT_ENCODER} (available offline)"


def test_every_listed_name_parses_to_its_family(filled_cache):
    for info in list_encoders():
        family, spec = parse_name(info.name)
        assert family.name == info.family and spec
        assert family.weight_free(spec) == info.weight_free


def test_ready_sets_use_what_is_on_disk_and_name_the_downloads(filled_cache):
    sets = {ready.title: ready for ready in ready_sets()}
    trio = sets["CLIP vs SigLIP 2 vs DINOv2"]
    assert trio.names == (
        "open_clip:hf-hub:lab/tiny-clip",  # a CLIP on disk, rather than downloading one
        "open_clip:hf-hub:timm/ViT-B-16-SigLIP2",
        "hf:facebook/dinov2-tiny",  # and a DINOv2
    )
    assert trio.downloads == trio.names[1:2] and trio.label.endswith("(1 download)")
    random = sets["pretrained vs random weights"]
    assert random.names == ("timm:test_resnet.r160_in1k", "timm:test_resnet@random")
    assert random.downloads == () and random.label.endswith("(all on disk or offline)")
    baselines = sets["bundled vs trivial baselines"]
    assert baselines.names == (DEFAULT_ENCODER, "baseline:pixels", "baseline:color-histogram")


def test_an_empty_cache_gives_offline_ready_sets(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty"))
    sets = {ready.title: ready for ready in ready_sets()}
    assert sets["pretrained vs random weights"].names == (
        DEFAULT_ENCODER,
        "timm:tf_efficientnet_lite0@random",
    )
    assert sets["pretrained vs random weights"].downloads == ()
    assert len(sets["CLIP vs SigLIP 2 vs DINOv2"].downloads) == 3


def test_any_typed_name_gets_a_description(filled_cache):
    info = describe("timm:convnext_tiny@random")
    assert info == EncoderInfo(
        "timm:convnext_tiny@random",
        "timm model convnext_tiny@random",
        needs_download=False,
        weight_free=True,
        family="timm",
    )
    assert describe("hf:facebook/dinov2-tiny").on_disk
    assert describe("timm:convnext_tiny.fb_in1k").needs_download  # read from the cache
    assert not describe(f"hf:{filled_cache}").needs_download  # a folder: nothing to fetch
    with pytest.raises(EncoderError, match="unknown encoder"):
        describe("resnet50")


def test_the_encoders_command_lists_the_cache_first_then_families_forms_and_sets(
    filled_cache, capsys
):
    assert main(["encoders"]) == 0
    out = capsys.readouterr().out
    head, _, rest = out.partition("\nbundled\n")
    assert head.startswith(f"on disk (the Hugging Face cache, {filled_cache})")
    for name in ON_DISK:
        assert name in head and "on disk, " in head.split(name)[1].splitlines()[0]
    for family in ("open_clip", "timm", "hf", "baseline"):
        assert f"\n{family}\n" in rest
    for form in ("timm:<model>@random", "hf:<folder>", "open_clip:hf-hub:<org>/<repo>"):
        assert form in rest
    assert "pretrained vs random weights (all on disk or offline):" in rest


def test_an_empty_cache_is_said_so(tmp_path, monkeypatch, capsys):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "none"))
    assert main(["encoders"]) == 0
    assert "nothing yet: hub models are kept there once downloaded" in capsys.readouterr().out


@pytest.mark.slow  # three encoders, one of them the bundled one, on 24 images: ~1 minute
def test_compare_across_families_from_the_cli_uses_the_same_folds_for_all(tmp_path, image_folder):
    dinov2 = tiny_models.save_tiny_dinov2(tmp_path / "dinov2")
    names = ["timm:test_resnet@random", f"hf:{dinov2}", DEFAULT_ENCODER]
    out, cache = tmp_path / "out", tmp_path / "cache"
    code = main(["compare", str(image_folder), "--encoders", ",".join(names), "--out", str(out),
                 "--cache-dir", str(cache), "--duplicate-threshold", "1.0"])  # fmt: skip
    assert code == 0
    table = pd.read_csv(out / "comparison.csv")
    assert list(table["encoder"]) == names
    assert list(table["dim"]) == [96, 32, 1280]
    assert len(pd.read_csv(out / "pairs.csv")) == 3
    assert list(pd.read_csv(out / "per_image.csv").columns) == ["path", "true", *names]

    settings = StudySettings(duplicate_threshold=1.0, projection="none")
    outcome = Study(settings, cache=EmbeddingCache(cache)).compare(image_folder, names)
    results = [outcome.comparison.results[name] for name in names]
    assert all(r.folds == results[0].folds for r in results)
    assert all(list(r.evaluated) == list(results[0].evaluated) for r in results)
    assert outcome.zero_shot[names[1]].available is False  # DINOv2 has no text tower
