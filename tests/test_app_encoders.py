"""Choosing encoders in the app, driven headless with AppTest: the Data page's picker (what
is on disk first, then each family, any typed name), a download shown with its size and
progress before the model loads, the offline failure, and the Compare page's ready sets and
a comparison across families."""

from __future__ import annotations

from dataclasses import replace

import pytest

from probe_core.encoders import DEFAULT_ENCODER, FAMILIES, DownloadProgress
from probe_core.encoders.hub import hub_cache_dir
from studio import encoder_picker, shared
from tests import test_app, test_encoder_catalogue, test_encoder_downloads, tiny_models
from tests.test_app import assert_ok, button, folder_upload, new_app, open_page, study, uploader

COMPARE = "app_pages/compare.py"

# Module fixtures: a private embedding cache (tests/test_app.py); a Hugging Face cache
# holding a timm, a transformers and an open_clip model (tests/test_encoder_catalogue.py);
# the fake hub serving a timm repo (tests/test_encoder_downloads.py).
app_env = test_app.app_env
filled_cache = test_encoder_catalogue.filled_cache
weights = test_encoder_downloads.weights
hub = test_encoder_downloads.hub


@pytest.fixture(autouse=True)
def fresh_encoder_list():
    shared.available_encoders.clear()  # st.cache_data: listed again from this test's cache
    encoder_picker.hub_download_size.clear()
    yield
    shared.available_encoders.clear()
    encoder_picker.hub_download_size.clear()


def model_box(at):
    found = [box for box in at.selectbox if box.key and box.key.startswith("encoder_in_")]
    assert len(found) == 1, [box.key for box in at.selectbox]
    return found[0]


def picker_caption(at) -> str:
    found = [c.value for c in at.caption if c.value.startswith("Runs with **")]
    assert len(found) == 1, found
    return found[0]


def test_the_picker_offers_what_is_on_disk_first_then_each_family(filled_cache):
    at = new_app()
    family = at.radio(key="encoder_family")
    on_disk = test_encoder_catalogue.ON_DISK
    assert family.options == [f"on disk ({len(on_disk)})", *FAMILIES]
    assert family.value == "bundled"  # the session's encoder, in its family
    assert model_box(at).value == DEFAULT_ENCODER

    family.set_value("on disk").run()
    assert_ok(at)
    box = model_box(at)
    assert [label.split(" (")[0] for label in box.options] == on_disk
    assert all(" (on disk, " in label and label.endswith(" MB)") for label in box.options)

    family = at.radio(key="encoder_family").set_value("timm").run()
    box = model_box(at)
    assert "timm:vit_small_patch14_dinov2.lvd142m (needs download)" in box.options
    assert "timm:resnet50@random (no trained weights, offline)" in box.options
    box.set_value("timm:vit_small_patch14_dinov2.lvd142m").run()
    assert picker_caption(at) == (
        "Runs with **timm:vit_small_patch14_dinov2.lvd142m**: timm DINOv2 ViT-S/14,"
        f" self-supervised on LVD-142M; 384-d · needs download into {filled_cache} (the hub"
        " did not tell its size: it may be out of reach)"  # HF_HUB_OFFLINE is set
    )


def test_any_typed_name_is_described_or_explained(filled_cache):
    at = new_app()
    at.text_input(key="custom_encoder").set_value("timm:convnext_tiny@random").run()
    assert picker_caption(at) == (
        "Runs with **timm:convnext_tiny@random**: timm model convnext_tiny@random · no trained"
        " weights, offline"
    )
    at.text_input(key="custom_encoder").set_value("timm:no_such_model").run()
    assert [w.value for w in at.warning] == [
        "unknown timm model 'no_such_model' (see timm.list_models())"
    ]


def test_a_typed_hub_name_downloads_with_its_size_then_runs(hub, weights, monkeypatch):
    """The weights come before the model loads, through a progress bar fed with the
    library's reports (size and destination, then MB and MB/s); the run then uses them."""
    reports: list[DownloadProgress] = []
    real = encoder_picker.fetch_weights

    def recording(name, listener):
        return real(name, lambda report: (reports.append(report), listener(report)))

    monkeypatch.setattr(encoder_picker, "fetch_weights", recording)
    at = new_app()
    uploader(at, "browse_").set_value(folder_upload(["red", "green", "blue"], per_class=4)).run()
    name = test_encoder_downloads.NAME
    at.text_input(key="custom_encoder").set_value(name).run()
    megabytes = f"{len(weights) / 1e6:.1f} MB"
    assert picker_caption(at).endswith(f" · needs download of {megabytes} into {hub_cache_dir()}")
    button(at, "Run probe").click().run()
    assert_ok(at)
    assert reports[0].describe().startswith(f"{name}: downloading {len(weights) / 1e6:.1f} MB")
    assert reports[-1].finished and hub.downloads == 1  # loading downloaded nothing more
    assert study(at).embeddings.encoder_id.startswith(f"{name}@{test_encoder_downloads.REPO}@rev:")


def test_offline_a_typed_hub_name_fails_at_once_naming_the_model(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    at = new_app()
    name = "timm:resnet50.a1_in1k"
    at.text_input(key="custom_encoder").set_value(name).run()
    button(at, "Run probe").click().run()
    assert_ok(at)
    [error] = [e.value for e in at.error]
    assert error.startswith(f"**{name}** could not be loaded: Could not download the weights")
    assert "HF_HUB_OFFLINE is set" in error and "'timm:resnet50@random'" in error
    assert study(at).settings.encoder == DEFAULT_ENCODER
    assert not at.get("progress")  # no bar left behind


def test_ready_sets_fill_the_compare_selection(filled_cache):
    at = open_page(new_app(), COMPARE)
    labels = [b.label for b in at.button if b.key and b.key.startswith("ready_")]
    assert labels == [
        "CLIP vs SigLIP 2 vs DINOv2 (1 download)",
        "pretrained vs random weights (all on disk or offline)",
        "bundled vs trivial baselines (all on disk or offline)",
    ]
    button(at, labels[0]).click().run()
    assert_ok(at)
    # what the cache holds: the open_clip repo is a CLIP, the transformers one a DINOv2, and
    # no SigLIP 2 is on disk, so that one would be downloaded
    chosen = at.multiselect(key="compare_encoders").value
    assert chosen[0] == "open_clip:hf-hub:lab/tiny-clip" and chosen[2] == "hf:facebook/dinov2-tiny"


@pytest.mark.slow  # three encoders loaded and measured for their fast paths: ~1.5 minutes
def test_a_comparison_across_families_on_the_compare_page_uses_the_same_folds(tmp_path):
    dinov2 = tiny_models.save_tiny_dinov2(tmp_path / "dinov2")
    names = ["timm:test_resnet@random", f"hf:{dinov2}", DEFAULT_ENCODER]
    at = new_app()
    uploader(at, "browse_").set_value(folder_upload(["red", "green", "blue"], per_class=4)).run()
    current = study(at)  # random and tiny weights see near-duplicates everywhere: exact only
    current.settings = replace(current.settings, duplicate_threshold=1.0)
    open_page(at, COMPARE)
    at.multiselect(key="compare_encoders").set_value(names)
    button(at, "Compare").click().run()
    assert_ok(at)
    assert [e.value for e in at.error] == []
    outcome = at.session_state["comparison_run"].outcome
    assert list(at.dataframe[0].value["encoder"]) == names
    assert list(at.dataframe[0].value["dim"]) == [96, 32, 1280]
    results = [outcome.comparison.results[name] for name in names]
    assert all(result.folds == results[0].folds for result in results)
    assert all(list(r.evaluated) == list(results[0].evaluated) for r in results)
