"""The embedding queue shared by a server's sessions: shared batches, fair turns, a session
that leaves, places in line, and vectors bit-identical to a session embedding alone.

Scheduling tests use a stand-in for ``encode_items`` that records each batch and can be held,
so that what is queued at each moment is known; the identity test uses the bundled encoder.
"""

from __future__ import annotations

import hashlib
import threading
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from probe_core.dataset import ImageItem, scan_folder
from probe_core.embed import extract_embeddings
from probe_core.embedding_queue import EmbeddingQueue, QueueLeft, QueuePlace, ordinal
from tests.conftest import pattern_image

BATCH = 16
WAIT = 30  # seconds: a ceiling for waits that end as soon as their condition holds


def items(session: str, count: int) -> list[ImageItem]:
    return [ImageItem(f"{session}/{i:04d}.png", source=b"", label=0) for i in range(count)]


def vector(path: str) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(path.encode()).digest()[:4], "little")
    return np.random.default_rng(seed).standard_normal(8).astype(np.float32)


class RecordingEncode:
    """Stands in for ``encode_items``: records the paths of each batch, and holds the worker
    at the start of a batch while ``hold`` is set (``holding`` says it is waiting there)."""

    def __init__(self, fail_on: str | None = None):
        self.batches: list[list[str]] = []
        self.hold = threading.Event()
        self.holding = threading.Event()
        self.released = threading.Event()
        self.fail_on = fail_on

    def __call__(self, batch_items, encoder, *, batch_size, num_workers):
        assert num_workers == 0 and batch_size == BATCH and len(batch_items) <= BATCH
        if self.hold.is_set():
            self.holding.set()
            assert self.released.wait(WAIT)
        paths = [item.path for item in batch_items]
        self.batches.append(paths)
        if self.fail_on is not None and self.fail_on in paths:
            raise RuntimeError("the encoder ran out of memory")
        return {i: vector(path) for i, path in enumerate(paths)}, {}

    def stream(self) -> list[str]:
        return [path for batch in self.batches for path in batch]


FAKE_ENCODER = SimpleNamespace(encoder_id="fake", device=torch.device("cpu"))


@pytest.fixture
def recording():
    return RecordingEncode()


@pytest.fixture
def queue(recording):
    made = EmbeddingQueue(FAKE_ENCODER, batch_size=BATCH, quantum=64, encode=recording)
    yield made
    recording.released.set()
    made.close()


def held_with(queue, recording, first: tuple[str, int]):
    """Submit ``first`` and wait until the worker is held inside its first batch, so that
    whatever is submitted next is queued behind it, in the order submitted."""
    recording.hold.set()
    ticket = queue.submit(first[0], items(*first))
    assert recording.holding.wait(WAIT)
    return ticket


def run_in_thread(target, *args, **kwargs):
    outcome = {}

    def call():
        try:
            outcome["value"] = target(*args, **kwargs)
        except BaseException as error:  # handed to the test
            outcome["error"] = error

    thread = threading.Thread(target=call)
    thread.start()
    return thread, outcome


def wait_done(ticket) -> None:
    for _ in range(WAIT * 100):
        if ticket.done:
            return
        threading.Event().wait(0.01)
    raise AssertionError(f"{ticket} not done")


# ----------------------------------------------------------------------------- batching


def test_small_requests_from_many_sessions_fill_shared_batches(queue, recording):
    tickets = [queue.submit(f"s{n}", items(f"s{n}", 6)) for n in range(8)]
    for ticket in tickets:
        wait_done(ticket)
    stats = queue.stats()
    assert stats.images == 48
    # 8 sessions x 6 images: three full batches of 16, each holding three sessions' images,
    # instead of eight batches of 6 (37% full).
    assert [len(batch) for batch in recording.batches] == [16, 16, 16]
    assert stats.fill == 1.0 and stats.full_batches == 3 and stats.shared_batches == 3
    assert [record.sessions for record in stats.recent] == [3, 4, 3]
    for n, ticket in enumerate(tickets):
        assert sorted(ticket.vectors) == list(range(6))
        for i, row in ticket.vectors.items():
            assert np.array_equal(row, vector(f"s{n}/{i:04d}.png"))


def test_encode_reports_rows_and_progress_in_the_callers_thread(queue):
    seen, progress = [], []

    def on_batch(indices, rows):
        seen.append((threading.current_thread().name, list(indices), rows.shape))

    vectors, failures = queue.encode(
        "solo", items("solo", 40), on_batch=on_batch, progress=lambda *a: progress.append(a)
    )
    me = threading.current_thread().name
    assert failures == {} and sorted(vectors) == list(range(40))
    assert [(name, indices) for name, indices, _ in seen] == [
        (me, list(range(0, 16))),
        (me, list(range(16, 32))),
        (me, list(range(32, 40))),
    ]
    assert [shape for *_, shape in seen] == [(16, 8), (16, 8), (8, 8)]
    assert [(done, total) for done, total, _ in progress] == [(16, 40), (32, 40), (40, 40)]
    assert queue.encode("solo", []) == ({}, {})


# ----------------------------------------------------------------------------- fairness


def test_a_large_folder_does_not_starve_the_small_ones(queue, recording):
    large = held_with(queue, recording, ("large", 1000))
    small = [queue.submit(f"small{n}", items(f"small{n}", 30)) for n in range(5)]
    recording.released.set()
    for ticket in [*small, large]:
        wait_done(ticket)

    stream = recording.stream()
    finished_at = {
        ticket.session: max(stream.index(f"{ticket.session}/{i:04d}.png") for i in range(30))
        for ticket in small
    }
    # The large folder had its first batch running, then the rest of its turn (64 images in
    # all); the small folders then came in the order they arrived, each whole in one turn.
    assert stream[:64] == [f"large/{i:04d}.png" for i in range(64)]
    assert list(finished_at.values()) == [64 + 30 * (n + 1) - 1 for n in range(5)]
    assert stream[64 + 150 :] == [f"large/{i:04d}.png" for i in range(64, 1000)]


def test_large_folders_take_turns_of_one_quantum(queue, recording):
    held_with(queue, recording, ("a", 16))
    first = queue.submit("b", items("b", 200))
    second = queue.submit("c", items("c", 100))
    recording.released.set()
    wait_done(first)
    wait_done(second)
    owners = [path.split("/")[0] for path in recording.stream()[16:]]
    runs = [owners[0]]
    for owner in owners[1:]:
        if owner != runs[-1]:
            runs.append(owner)
    # b and c alternate in turns of 64 images until c is done; b then finishes alone.
    assert runs == ["b", "c", "b", "c", "b"]
    assert owners.count("b") == 200 and owners.count("c") == 100
    assert owners[:64] == ["b"] * 64 and owners[64:128] == ["c"] * 64


# ----------------------------------------------------------------------------- leaving


def test_a_session_that_disconnects_while_queued_leaves_the_queue(queue, recording):
    first = held_with(queue, recording, ("first", 20))
    connected = {"gone": False}
    thread, outcome = run_in_thread(
        queue.encode, "gone", items("gone", 30), alive=lambda: not connected["gone"]
    )
    stayed = queue.submit("stays", items("stays", 30))
    for _ in range(WAIT * 100):  # the leaving session is queued behind the held batch
        if queue.stats().waiting_sessions == 3:
            break
        threading.Event().wait(0.01)
    connected["gone"] = True  # the browser tab closes while its images wait
    recording.released.set()
    thread.join(WAIT)
    wait_done(first)
    wait_done(stayed)

    assert isinstance(outcome.get("error"), QueueLeft)
    assert not any(path.startswith("gone/") for path in recording.stream())
    assert len(stayed.vectors) == 30 and len(first.vectors) == 20
    assert queue.stats().waiting_sessions == 0


def test_a_cancelled_request_is_dropped_and_the_ones_behind_move_up(queue, recording):
    held_with(queue, recording, ("first", 16))
    leaving = queue.submit("leaving", items("leaving", 40))
    behind = queue.submit("behind", items("behind", 10))
    assert behind.place().position == 2  # behind "leaving"
    leaving.cancel()
    assert behind.place() == QueuePlace(
        position=1, sessions_ahead=0, images_ahead=0, done=0, total=10, estimated_seconds=None
    )
    recording.released.set()
    wait_done(behind)
    assert not any(path.startswith("leaving/") for path in recording.stream())


def test_a_caller_that_stops_waiting_takes_its_request_out(queue, recording):
    held_with(queue, recording, ("first", 16))

    def stop(place):
        raise KeyboardInterrupt  # e.g. Streamlit stopping a script whose session closed

    with pytest.raises(KeyboardInterrupt):
        queue.encode("impatient", items("impatient", 30), on_wait=stop)
    assert queue.stats().waiting_sessions == 0
    recording.released.set()
    assert queue.encode("next", items("next", 3))[1] == {}
    assert not any(path.startswith("impatient/") for path in recording.stream())


def test_a_failed_batch_fails_its_requests_only():
    recording = RecordingEncode(fail_on="bad/0003.png")
    queue = EmbeddingQueue(FAKE_ENCODER, batch_size=BATCH, encode=recording, gather_seconds=0)
    try:
        with pytest.raises(RuntimeError, match="out of memory"):
            queue.encode("bad", items("bad", 40))
        assert queue.stats().waiting_sessions == 0  # its other images were dropped
        vectors, _ = queue.encode("good", items("good", 20))
        assert len(vectors) == 20
    finally:
        queue.close()


# ----------------------------------------------------------------------------- waiting


def test_each_waiting_session_sees_its_place_and_an_estimated_wait(queue, recording):
    first = held_with(queue, recording, ("a", 40))
    b = queue.submit("b", items("b", 30))
    c = queue.submit("c", items("c", 30))
    assert first.place().position == 0 and first.place().embedding_now  # its first 16 run
    assert c.place() == QueuePlace(
        position=3, sessions_ahead=2, images_ahead=54, done=0, total=30, estimated_seconds=None
    )
    assert b.place().position == 2 and b.place().images_ahead == 24
    assert c.place().describe() == (
        "Waiting for the shared encoder: 3rd in line (54 images ahead) · estimating the wait"
    )

    recording.hold.clear()
    recording.released.set()
    wait_done(first)
    wait_done(b)
    wait_done(c)
    # Estimates come from the measured seconds per batch: 84 images ahead and own = 6 batches.
    per_batch = queue._seconds_per_batch
    assert per_batch is not None and per_batch > 0
    place = QueuePlace(3, 2, 54, 0, 30, 6 * per_batch)
    assert place.describe().endswith(f"about {int(np.ceil(6 * per_batch))} s")
    assert [ordinal(n) for n in (1, 2, 3, 4, 11, 12, 13, 21, 22, 101)] == [
        "1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "101st",
    ]  # fmt: skip


def test_the_estimate_counts_the_batches_until_the_request_is_done(recording):
    queue = EmbeddingQueue(FAKE_ENCODER, batch_size=BATCH, encode=recording)
    try:
        queue.encode("warm", items("warm", 16))  # one batch timed
        held_with(queue, recording, ("a", 16))
        b = queue.submit("b", items("b", 40))
        place = b.place()
        per_batch = queue._seconds_per_batch
        # The held batch, then three batches for b's 40 images.
        assert place.estimated_seconds is not None
        assert 3 * per_batch <= place.estimated_seconds <= 4 * per_batch
    finally:
        recording.released.set()
        queue.close()


def test_the_queue_refuses_another_encoder(queue):
    encode = queue.encode_function("s")
    other = SimpleNamespace(encoder_id="other", device=torch.device("cpu"))
    with pytest.raises(ValueError, match="embeds with fake, not other"):
        encode(items("s", 2), other)


# ----------------------------------------------------------------------------- identity


def write_session_folder(root, session: int, counts: dict[str, int]):
    """Distinct images per session (no embedding is shared through identical bytes)."""
    for class_index, (name, count) in enumerate(counts.items()):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for variant in range(count):
            image = pattern_image(class_index, 100 * session + variant)
            image.save(folder / f"{variant:03d}.png")
    return root


def test_vectors_through_the_shared_queue_are_bit_identical_to_a_solo_run(encoder, tmp_path):
    counts = [{"a": 4, "b": 3}, {"a": 10, "b": 9, "c": 11}, {"x": 2, "y": 3}]
    folders = [write_session_folder(tmp_path / f"s{n}", n, c) for n, c in enumerate(counts)]
    (folders[1] / "b" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    datasets = [scan_folder(folder) for folder in folders]
    solo = [extract_embeddings(dataset, encoder) for dataset in datasets]
    queue = EmbeddingQueue(encoder, batch_size=BATCH, quantum=8, gather_seconds=0.5)
    try:
        threads = [
            run_in_thread(
                extract_embeddings, dataset, encoder, encode=queue.encode_function(f"s{n}")
            )
            for n, dataset in enumerate(datasets)
        ]
        for thread, _ in threads:
            thread.join(120)
        shared = [outcome["value"] for _, outcome in threads]
        stats = queue.stats()
    finally:
        queue.close()
    assert stats.images == sum(len(d.items) for d in datasets)
    assert stats.shared_batches >= 1  # the sessions' images were mixed in batches
    for alone, together in zip(solo, shared, strict=True):
        assert together.paths == alone.paths
        assert together.vectors.dtype == np.float32
        assert np.array_equal(together.vectors, alone.vectors)
        assert together.n_computed == alone.n_computed
        assert together.skipped == alone.skipped
    assert [s.path for s in shared[1].skipped] == ["b/broken.png"]  # with its reason
