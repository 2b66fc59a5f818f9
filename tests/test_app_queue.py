"""The app embeds through the server's shared embedding queue (headless, AppTest).

The queue itself is specified in ``tests/test_embedding_queue.py``; 30 browser sessions at
once in ``tests/test_classroom.py`` (slow).
"""

from __future__ import annotations

import gc
import io
import threading
import time

import numpy as np

from probe_core.embed import extract_embeddings
from probe_core.encoders import DEFAULT_ENCODER
from studio import shared
from tests.conftest import pattern_image
from tests.test_app import (  # noqa: F401 - app_env: the private cache and session folders
    app_env,
    new_app,
    run_probe,
    study,
    uploader,
)


def distinct_upload(
    classes: list[str], per_class: int, first: int = 7_000
) -> list[tuple[str, bytes, str]]:
    """A picked folder whose images no other test embeds (the embedding cache is shared)."""
    files = []
    for index, name in enumerate(classes):
        for variant in range(per_class):
            buffer = io.BytesIO()
            pattern_image(index, first + variant).save(buffer, "PNG")
            files.append((f"queued/{name}/{variant}.png", buffer.getvalue(), "image/png"))
    return files


def test_run_probe_embeds_through_the_servers_shared_queue_with_solo_vectors():
    at = new_app()
    uploader(at, "browse_").set_value(distinct_upload(["moths", "wasps"], 5)).run()
    encoder = shared.shared_encoder(DEFAULT_ENCODER)
    queue = shared.embedding_queue(encoder.encoder_id, id(encoder), encoder)
    before = queue.stats()
    run_probe(at)

    after = queue.stats()
    assert after.images - before.images == 10  # every image of the folder went through it
    assert after.batches > before.batches
    assert after.waiting_sessions == 0
    embeddings = study(at).embeddings
    solo = extract_embeddings(study(at).dataset, encoder)  # no cache: embedded again, alone
    assert embeddings.paths == solo.paths
    assert np.array_equal(embeddings.vectors, solo.vectors)
    assert study(at).result is not None


def test_the_loaded_libraries_are_out_of_the_collectors_sight():
    new_app()
    # Streamlit's full collection after every run would otherwise walk every torch, Plotly
    # and scikit-learn object each time (see shared.freeze_loaded_objects).
    assert gc.get_freeze_count() > 100_000


def test_a_session_waits_for_a_free_fitting_slot_then_fits():
    at = new_app()
    uploader(at, "browse_").set_value(distinct_upload(["ants", "bees"], 4, 8_000)).run()
    for _ in range(shared.FIT_SLOTS):  # every core is fitting another session's probe
        shared._fit_slots.acquire()
    failed = []

    def press() -> None:
        try:
            run_probe(at)
        except BaseException as error:  # handed to the test
            failed.append(error)

    presser = threading.Thread(target=press)
    try:
        presser.start()
        deadline = time.monotonic() + 600  # a ceiling: the loop ends once the session waits
        while shared.sessions_waiting_to_fit() == 0 and presser.is_alive():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert shared.sessions_waiting_to_fit() == 1  # it embedded, then waited for a core
    finally:
        for _ in range(shared.FIT_SLOTS):
            shared._fit_slots.release()
    presser.join(600)
    assert failed == []
    assert study(at).result is not None
    assert shared.sessions_waiting_to_fit() == 0
