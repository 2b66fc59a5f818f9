"""The app's progress bar sends the browser a readable stream of updates, not every one."""

from __future__ import annotations

import pytest

from studio import progress


class FakeBar:
    def __init__(self):
        self.sent: list[tuple[float, str]] = []
        self.emptied = False

    def progress(self, fraction, text):
        self.sent.append((fraction, text))

    def empty(self):
        self.emptied = True


@pytest.fixture
def clock(monkeypatch):
    now = {"t": 100.0}
    monkeypatch.setattr(progress.time, "monotonic", lambda: now["t"])
    return now


@pytest.fixture
def bar(monkeypatch, clock):
    fake = FakeBar()
    monkeypatch.setattr(progress.st, "progress", lambda fraction, text: fake)
    return progress.ProgressBar("Embedding…", interval=2.0), fake


def test_the_first_change_is_sent_at_once_so_a_short_wait_is_still_reported(bar):
    shown, fake = bar
    shown.update(0.0, "Waiting for the shared encoder: 2nd in line")
    assert fake.sent == [(0.0, "Waiting for the shared encoder: 2nd in line")]


def test_later_updates_are_sent_at_most_once_per_interval_and_the_latest_wins(bar, clock):
    shown, fake = bar
    shown.update(0.1, "a")
    for step, text in enumerate(["b", "c", "d"]):  # four updates a second, as the queue polls
        clock["t"] += 0.25
        shown.update(0.1 + step / 100, text)
    assert [text for _, text in fake.sent] == ["a"]
    clock["t"] += 1.5  # 2 s after "a"
    shown.update(0.5, "e")
    assert [text for _, text in fake.sent] == ["a", "e"]


def test_an_update_that_changes_nothing_is_not_sent(bar, clock):
    shown, fake = bar
    shown.update(0.5, "same")
    clock["t"] += 10
    shown.update(0.5, "same")
    assert fake.sent == [(0.5, "same")]


def test_the_final_state_is_always_sent(bar, clock):
    shown, fake = bar
    shown.update(0.5, "half")
    clock["t"] += 0.1
    shown.update(1.0, "Embedded 45 images", final=True)
    assert fake.sent[-1] == (1.0, "Embedded 45 images")


def test_fractions_are_kept_within_the_bar(bar):
    shown, fake = bar
    shown.update(1.2, "over")
    assert fake.sent == [(1.0, "over")]
    shown.empty()
    assert fake.emptied
