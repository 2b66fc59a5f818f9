"""A progress bar that sends the browser what a person can read, not every update."""

from __future__ import annotations

import time

import streamlit as st

# Each update of a bar is a message that the browser redraws the page for. In a classroom of
# 30 (bench/classroom.py, the browsers on the server's two cores) the waiting sessions' place
# in line, sent four times a second, cost the browsers 6.8 s of CPU per session; once a
# second 5.1 s, once every 3 s 4.5 s.
SECONDS_BETWEEN_UPDATES = 2.0


class ProgressBar:
    """``st.progress`` for updates that come faster than anyone reads them.

    The first change is sent at once (a short wait is still reported); after it, an update
    that changes nothing is not sent and the others at most once every ``interval`` seconds,
    except one marked ``final`` (the state the bar is left in)."""

    def __init__(self, text: str, interval: float = SECONDS_BETWEEN_UPDATES):
        self.interval = interval
        self._bar = st.progress(0.0, text=text)
        self._shown = (0.0, text)
        self._sent_at: float | None = None

    def update(self, fraction: float, text: str, *, final: bool = False) -> None:
        fraction = min(max(fraction, 0.0), 1.0)
        if (fraction, text) == self._shown:
            return
        now = time.monotonic()
        if not final and self._sent_at is not None and now - self._sent_at < self.interval:
            return
        self._bar.progress(fraction, text=text)
        self._shown, self._sent_at = (fraction, text), now

    def empty(self) -> None:
        self._bar.empty()
