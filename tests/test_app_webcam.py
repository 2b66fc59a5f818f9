"""The Data page's Webcam tab, driven headless with AppTest: classes are named, filled from
uploads and recorded frames (the recorder's batches go through ``store_frames``, as its
callback does), removed, and used as the study's dataset. The camera itself is driven by
Chromium's fake camera in ``tests/test_browser_webcam.py``."""

from __future__ import annotations

import base64

from streamlit.testing.v1 import AppTest

from studio import shared
from studio.webcam import store_frames
from tests.test_app import (  # noqa: F401  (app_env: the module's private cache and folders)
    app_env,
    assert_ok,
    button,
    new_app,
    png_bytes,
    preview_lines,
    run_probe,
    study,
    uploader,
    values,
)


def captures_of(at: AppTest):
    return at.session_state["workspace"].captures


def add_class(at: AppTest, name: str) -> None:
    at.text_input(key="webcam_new_class").set_value(name)
    button(at, "Add this class").click().run()
    assert_ok(at)


def card_lines(at: AppTest) -> list[str]:
    """The head line of each recorded class (the preview's lines below are plain Markdown;
    a card's class name is escaped for HTML)."""
    return [
        m.value
        for m in at.markdown
        if m.proto.allow_html and " · " in m.value and m.value.startswith("**")
    ]


def test_named_classes_take_uploads_and_frames_and_become_the_dataset():
    at = new_app()
    assert button(at, "Use the recorded classes").disabled
    add_class(at, "cup")
    assert at.radio(key="webcam_active").value == "cup"
    assert at.text_input(key="webcam_new_class").value == ""  # ready for the next name
    uploader(at, "webcam_upload_cup_").set_value(
        [(f"IMG_{v}.png", png_bytes(0, v), "image/png") for v in range(3)]
    )
    at.run()
    assert_ok(at)
    add_class(at, "spoon")
    assert at.radio(key="webcam_active").value == "spoon"  # the new class records next
    assert at.radio(key="webcam_active").options == ["cup", "spoon"]

    captures = captures_of(at)
    frames = [
        {
            "id": f"tab-{n}",
            "class_name": name,
            "image": "data:image/png;base64," + base64.b64encode(png_bytes(index, n)).decode(),
        }
        for n, (index, name) in enumerate([(0, "cup"), (1, "spoon"), (1, "spoon"), (1, "spoon")])
    ]
    assert store_frames(captures, frames).written == 4
    at.run()
    assert_ok(at)
    assert card_lines(at) == [
        "**cup** · 4 images (1 webcam frame, 3 added)",
        "**spoon** · 3 images",
    ]
    assert sorted(p.name for p in (captures.root / "cup").iterdir()) == [
        "IMG_0.png",
        "IMG_1.png",
        "IMG_2.png",
        "frame-0001.png",
    ]

    button(at, "Use the recorded classes").click().run()
    assert_ok(at)
    assert values(at.subheader)[0] == "Webcam classes (2 classes, 7 images)"
    cards = card_lines(at)  # the tab still shows the recorded classes above the preview
    assert [line for line in preview_lines(at) if line not in cards] == ["**cup** · 4 images"]
    assert preview_lines(at).count("**spoon** · 3 images") == 2
    assert study(at).name == "webcam"
    run_probe(at)
    assert values(at.title) == ["Results"]
    assert study(at).result.class_names == ["cup", "spoon"]


def test_a_name_that_cannot_be_a_class_is_refused_and_a_class_can_be_removed():
    at = new_app()
    add_class(at, "cup")
    add_class(at, "Cup")
    assert values(at.error) == ["Class not added: there is already a class named “cup”."]
    add_class(at, "   ")
    assert values(at.error) == ["Class not added: a class needs a name."]
    add_class(at, "fork")
    assert card_lines(at) == ["**cup** · 0 images", "**fork** · 0 images"]
    button_keys = [b.key for b in at.button if b.label == "Remove"]
    assert button_keys == ["webcam_remove_cup", "webcam_remove_fork"]
    at.button(key="webcam_remove_fork").click().run()
    assert_ok(at)
    assert card_lines(at) == ["**cup** · 0 images"]
    assert at.radio(key="webcam_active").value == "cup"
    assert captures_of(at).class_names == ["cup"]
    assert values(at.subheader)[0] == shared.DEMO_LABEL


def test_a_set_downloaded_before_continues_here():
    at = new_app()
    add_class(at, "left")
    captures = captures_of(at)
    for n in range(3):
        captures.add_frame("left", png_bytes(0, n))
    data = captures.to_zip()

    later = new_app()  # another session opens the download
    uploader(later, "webcam_zip_").set_value([("webcam-classes.zip", data, "application/zip")])
    later.run()
    assert_ok(later)
    assert values(later.success) == ["webcam-classes.zip: 3 images added to the classes above."]
    assert card_lines(later) == ["**left** · 3 images"]
    assert later.radio(key="webcam_active").value == "left"

    uploader(later, "webcam_zip_").set_value([("photos.zip", b"not a zip", "application/zip")])
    later.run()
    assert_ok(later)
    assert values(later.error)[0].startswith("photos.zip could not be opened: ")


def test_the_live_page_waits_for_results_then_uses_the_shipped_probe_once():
    at = new_app()
    at.switch_page("app_pages/live.py").run()
    assert_ok(at)
    assert values(at.title) == ["Live"]
    assert values(at.info) == [
        "No results yet: choose images on the **Data** page and press **Run probe**."
    ]

    at.switch_page("app_pages/data.py").run()
    run_probe(at)
    at.switch_page("app_pages/live.py").run()
    assert_ok(at)
    assert values(at.info) == [] and values(at.error) == []
    (caption,) = values(at.caption)
    assert caption.startswith(
        "Each frame goes through **bundled:efficientnet-lite0** and the probe fitted on every"
        " image of “Bundled demo: 144 Noto emoji in 6 categories”"
    )
    current = study(at)
    weights = current.shipped_probe[1]
    assert current.shipped_probe[0] is current.result
    assert weights.class_names == current.result.class_names
    assert weights.encoder_name == "bundled:efficientnet-lite0"
    at.run()  # a frame's rerun uses the probe fitted once
    assert study(at).shipped_probe[1] is weights
