"""The encoder picker and the Compare page's ready sets in Chromium, on a server whose
Hugging Face cache holds one timm model (offline): what the pages say about it."""

from __future__ import annotations

import os
import re

import pytest
from safetensors.torch import save_file

from tests.conftest import streamlit_server
from tests.test_browser import LONG, TALL_VIEWPORT, shot, wait_for_idle
from tests.tiny_models import fill_hub_cache

pytestmark = pytest.mark.browser

NAME = "timm:test_resnet.r160_in1k"


@pytest.fixture(scope="module")
def cached_model_server(tmp_path_factory):
    """The app, offline, with ``timm/test_resnet.r160_in1k`` in its Hugging Face cache; the
    URL and the model's size on disk as the picker writes it."""
    import timm

    work = tmp_path_factory.mktemp("encoders-server")
    weights = work / "model.safetensors"
    save_file(timm.create_model("test_resnet.r160_in1k").state_dict(), weights)
    fill_hub_cache(work / "hf-cache", "timm/test_resnet.r160_in1k", {"model.safetensors": weights})
    env = {
        **os.environ,
        "PROBE_STUDIO_CACHE_DIR": str(work / "cache"),
        "HF_HUB_CACHE": str(work / "hf-cache"),
        "HF_HUB_OFFLINE": "1",
    }
    with streamlit_server(work / "streamlit.log", env) as (url, _):
        yield url, f"{weights.stat().st_size / 1e6:,.1f} MB"


def test_the_picker_and_the_ready_sets_say_what_is_on_disk(cached_model_server, chromium_browser):
    url, size = cached_model_server
    page = chromium_browser.new_page(viewport=TALL_VIEWPORT)
    try:
        page.goto(url)
        page.get_by_role("button", name="Run probe").wait_for(timeout=LONG)
        wait_for_idle(page)
        page.get_by_text("on disk (1)", exact=True).click()
        line = page.get_by_text(re.compile(f"^Runs with {re.escape(NAME)}"))
        line.wait_for(timeout=LONG)
        model = page.get_by_role("combobox", name="Model")
        assert model.input_value() == f"{NAME} (on disk, {size})"
        assert line.inner_text() == (
            f"Runs with {NAME}: timm/test_resnet.r160_in1k, in the Hugging Face cache"
            f" · on disk, {size}"
        )
        typed = page.get_by_role("textbox", name="…or any encoder name")
        typed.fill("timm:no_such_model")
        typed.press("Enter")
        page.get_by_text("unknown timm model 'no_such_model' (see timm.list_models())").wait_for()
        wait_for_idle(page)
        shot(page, "encoder-picker")

        page.get_by_role("link", name="Compare").click()
        page.get_by_role("heading", name="Compare encoders").wait_for(timeout=LONG)
        wait_for_idle(page)
        page.get_by_role(
            "button", name="pretrained vs random weights (all on disk or offline)"
        ).click()
        chips = page.get_by_test_id("stMultiSelect").get_by_text(re.compile("^timm:"))
        chips.nth(1).wait_for(timeout=LONG)
        assert chips.all_inner_texts() == [
            f"{NAME} (on disk, {size})",
            "timm:test_resnet@random (no trained weights, offline)",
        ]
        shot(page, "compare-ready-sets")
    finally:
        page.close()
