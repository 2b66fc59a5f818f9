"""One embedding queue per shared encoder: requests from every session fill shared batches.

A classroom runs many sessions of one server, each embedding a small folder. Embedded in each
session's own thread, 30 sessions run 30 forward passes at once: 30 sets of activation
buffers in memory (each thread with its own malloc arena, which keeps them), 30 half-empty
batches, and the cores shared 30 ways. The queue instead has one worker thread. Sessions
submit the images they need embedded (``EmbeddingQueue.submit``: what the embedding cache
did not hold, de-duplicated, see ``embed.extract_embeddings``); the worker cuts batches from
all of them and runs each through ``embed.encode_items``, the same decoding, preprocessing,
forward pass and normalisation as a session embedding alone. Every forward pass has the
model's fixed batch shape (``extraction.forward_batch``), so a row's vector does not depend on
the other rows of its batch: every session gets bit-identical vectors to a solo run.

Fair turns. Sessions take turns in the order they arrived (round robin). In its turn a
session contributes up to ``quantum`` images (default 64: a small folder in one turn), then
the next session's turn begins, in the same batch when there is room; a session with more
left goes to the back of the line. So a large folder delays a small folder that arrives after
it by at most one quantum, and small folders are served in the order they came.

Waiting. ``Ticket.place()`` says where a request stands: its place in line (0 while its
images are being embedded), the sessions and images ahead of it, and an estimated wait from
the measured seconds per batch. A request leaves the queue when it is cancelled
(``Ticket.cancel``; ``encode`` does so whenever its caller stops, e.g. a closed browser tab)
or when its session's ``alive()`` check fails before its turn.

No Streamlit here: the app binds a session's id and liveness check (``studio/shared.py``).
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field

import numpy as np

from .dataset import ImageItem
from .embed import EncodeItems, ProgressCallback, default_batch_size, encode_items
from .encoders import Encoder

DEFAULT_QUANTUM = 64  # images per turn: a small folder (30-60 images) is served in one turn
GATHER_SECONDS = 0.05  # a batch with room waits this long for other sessions' images
POLL_SECONDS = 0.25  # how often a waiting caller reports its place and checks it is alive
SECONDS_PER_BATCH_WEIGHT = 0.3  # exponential average of the measured batch times

Alive = Callable[[], bool]
PlaceListener = Callable[["QueuePlace"], None]
BatchListener = Callable[[list[int], np.ndarray], None]


class QueueLeft(RuntimeError):
    """The request left the queue before it was done (cancelled, its session gone, or the
    queue closed)."""


@dataclass(frozen=True)
class QueuePlace:
    """Where one request stands in the queue."""

    position: int  # 0: its images are being embedded now; 1: next in line; 2: one ahead; ...
    sessions_ahead: int  # other sessions served before this request's next image
    images_ahead: int  # other requests' images embedded before this request is done
    done: int  # this request's images embedded so far
    total: int
    estimated_seconds: float | None  # until this request is done; None before a batch was timed

    @property
    def embedding_now(self) -> bool:
        return self.position == 0

    def describe(self) -> str:
        """One line for a progress bar: 'Waiting for the shared encoder: 3rd in line ...'."""
        wait = (
            "estimating the wait"
            if self.estimated_seconds is None
            else f"about {math.ceil(self.estimated_seconds)} s"
        )
        if self.embedding_now:
            return f"Embedding {self.done:,}/{self.total:,} images on the shared encoder · {wait}"
        ahead = f"{self.images_ahead:,} image{'s' if self.images_ahead != 1 else ''} ahead"
        return (
            f"Waiting for the shared encoder: {ordinal(self.position)} in line ({ahead}) · {wait}"
        )


def ordinal(number: int) -> str:
    if 10 <= number % 100 <= 20:
        suffix = "th"
    else:
        suffix = {1: "st", 2: "nd", 3: "rd"}.get(number % 10, "th")
    return f"{number}{suffix}"


@dataclass(frozen=True)
class BatchRecord:
    """One forward batch the worker ran."""

    images: int
    sessions: int
    seconds: float


RECENT_BATCHES = 1_000  # batch records kept for QueueStats.recent; the totals count them all


@dataclass(frozen=True)
class QueueStats:
    """What the queue has done since it started: how many batches, how full."""

    batch_size: int
    batches: int
    images: int
    full_batches: int
    shared_batches: int  # batches that held images of more than one session
    waiting_sessions: int
    recent: tuple[BatchRecord, ...] = ()  # the latest batches, oldest first

    @property
    def fill(self) -> float:
        """Images per batch slot over every batch run (1.0: every batch full)."""
        slots = self.batches * self.batch_size
        return self.images / slots if slots else 0.0


@dataclass
class _Part:
    """What one batch gave one request: rows for ``indices``, and how many images failed."""

    indices: list[int]
    rows: np.ndarray | None
    failed: int = 0


@dataclass(eq=False)
class Ticket:
    """One session's request: its images, what came back so far, and where it stands."""

    queue: EmbeddingQueue = field(repr=False)
    session: Hashable
    items: Sequence[ImageItem] = field(repr=False)
    dispatched: int = 0  # items handed to the worker (in order)
    vectors: dict[int, np.ndarray] = field(default_factory=dict, repr=False)
    failures: dict[int, str] = field(default_factory=dict, repr=False)
    in_flight: int = 0  # of its items in the batch being embedded now
    cancelled: bool = False
    error: BaseException | None = None
    first_started: float | None = None
    _parts: list[_Part] = field(default_factory=list)

    @property
    def total(self) -> int:
        return len(self.items)

    @property
    def pending(self) -> int:
        """Items not yet handed to the worker."""
        return self.total - self.dispatched

    @property
    def finished(self) -> int:
        return len(self.vectors) + len(self.failures)

    @property
    def done(self) -> bool:
        return self.finished == self.total

    def place(self) -> QueuePlace:
        return self.queue.place(self)

    def cancel(self) -> None:
        """Leave the queue: images not yet in a batch are dropped (a batch already running
        finishes, and its rows for this request are discarded)."""
        self.queue._cancel(self)


@dataclass
class _Lane:
    """One session's requests, in the order it made them, and what is left of its turn."""

    tickets: deque[Ticket]
    turn_left: int
    alive: Alive | None = None


class EmbeddingQueue:
    """Embeds the images of every session through one encoder, in shared batches.

    ``batch_size``: images per shared batch (the encoder's fixed forward batch shape);
    ``quantum``: images a session contributes per turn; ``gather_seconds``: how long a batch
    with room waits for more requests before it runs.
    """

    def __init__(
        self,
        encoder: Encoder,
        *,
        batch_size: int | None = None,
        quantum: int = DEFAULT_QUANTUM,
        gather_seconds: float = GATHER_SECONDS,
        encode: EncodeItems = encode_items,
    ):
        if quantum < 1:
            raise ValueError(f"quantum must be at least 1, not {quantum}")
        self.encoder = encoder
        # One shared batch is one forward pass: the model's fixed batch shape (the extraction
        # core pads a short batch to it; ``extraction.forward_batch``).
        self.batch_size = batch_size or getattr(encoder, "forward_rows", 0)
        self.batch_size = self.batch_size or default_batch_size(encoder.device)
        self.quantum = quantum
        self.gather_seconds = gather_seconds
        self._encode = encode
        self._lanes: OrderedDict[Hashable, _Lane] = OrderedDict()
        self._condition = threading.Condition()
        self._recent: deque[BatchRecord] = deque(maxlen=RECENT_BATCHES)
        self._totals = {"batches": 0, "images": 0, "full_batches": 0, "shared_batches": 0}
        self._seconds_per_batch: float | None = None
        self._batch_started: float | None = None
        self._closed = False
        self._worker = threading.Thread(
            target=self._run, daemon=True, name="probe-studio-embedding-queue"
        )
        self._worker.start()

    # ----------------------------------------------------------------- sessions' side

    def submit(
        self, session: Hashable, items: Sequence[ImageItem], alive: Alive | None = None
    ) -> Ticket:
        """Queue ``items`` for ``session``; ``alive()`` (when given) is checked before each of
        the session's turns, and a session found gone leaves the queue."""
        ticket = Ticket(self, session, list(items))
        with self._condition:
            if self._closed:
                raise QueueLeft("the embedding queue is closed")
            if not ticket.items:
                return ticket
            lane = self._lanes.get(session)
            if lane is None:
                lane = self._lanes[session] = _Lane(deque(), self.quantum)
            lane.tickets.append(ticket)
            if alive is not None:
                lane.alive = alive
            self._condition.notify_all()
        return ticket

    def encode(
        self,
        session: Hashable,
        items: Sequence[ImageItem],
        *,
        progress: ProgressCallback | None = None,
        on_batch: BatchListener | None = None,
        on_wait: PlaceListener | None = None,
        alive: Alive | None = None,
        poll_seconds: float = POLL_SECONDS,
    ) -> tuple[dict[int, np.ndarray], dict[int, str]]:
        """Embed ``items`` for ``session`` and wait for them, like ``embed.encode_items``:
        (vectors by item index, failure reason by item index).

        In the caller's thread: ``on_batch(indices, rows)`` and ``progress(done, total,
        images_per_second)`` as this request's rows come back; ``on_wait(place)`` every
        ``poll_seconds`` while none do. Whatever ends the wait early (an exception in a
        listener, ``alive()`` turning False) takes the request out of the queue; a request
        that left raises ``QueueLeft``.
        """
        ticket = self.submit(session, items, alive=alive)
        reported = 0
        try:
            while True:
                parts, finished = self._wait_for_parts(ticket, poll_seconds)
                for part in parts:
                    if on_batch is not None and part.indices:
                        on_batch(part.indices, part.rows)
                    reported += len(part.indices) + part.failed
                    if progress is not None:
                        progress(reported, ticket.total, self._rate(ticket))
                if finished:
                    break
                if not parts and on_wait is not None:
                    on_wait(ticket.place())
                if alive is not None and not alive():
                    ticket.cancel()
        finally:
            ticket.cancel()  # nothing left to drop once it is done
        return ticket.vectors, ticket.failures

    def encode_function(
        self,
        session: Hashable,
        *,
        on_wait: PlaceListener | None = None,
        alive: Alive | None = None,
    ) -> EncodeItems:
        """``embed.encode_items`` for one session through this queue, for
        ``extract_embeddings(encode=...)``: the embedding cache, de-duplication and assembly
        stay there; the caller's batch size and workers give way to the queue's."""

        def encode(
            items: Sequence[ImageItem],
            encoder: Encoder,
            *,
            batch_size: int | None = None,
            num_workers: int | None = None,
            progress: ProgressCallback | None = None,
            on_batch: BatchListener | None = None,
        ) -> tuple[dict[int, np.ndarray], dict[int, str]]:
            if encoder is not self.encoder:
                raise ValueError(
                    f"this queue embeds with {self.encoder.encoder_id}, not {encoder.encoder_id}"
                )
            return self.encode(
                session, items, progress=progress, on_batch=on_batch, on_wait=on_wait, alive=alive
            )

        return encode

    def leave(self, session: Hashable) -> None:
        """Take every request of ``session`` out of the queue."""
        with self._condition:
            lane = self._lanes.pop(session, None)
            for ticket in lane.tickets if lane else ():
                ticket.cancelled = True
            self._condition.notify_all()

    def place(self, ticket: Ticket) -> QueuePlace:
        with self._condition:
            return self._place(ticket)

    def stats(self) -> QueueStats:
        with self._condition:
            return QueueStats(
                self.batch_size,
                **self._totals,
                waiting_sessions=len(self._lanes),
                recent=tuple(self._recent),
            )

    def close(self, timeout: float | None = 10.0) -> None:
        """Stop the worker; requests still waiting leave the queue."""
        with self._condition:
            self._closed = True
            for lane in self._lanes.values():
                for ticket in lane.tickets:
                    ticket.cancelled = True
            self._lanes.clear()
            self._condition.notify_all()
        self._worker.join(timeout)

    # ----------------------------------------------------------------- internals

    def _cancel(self, ticket: Ticket) -> None:
        with self._condition:
            if ticket.done or ticket.cancelled:
                return
            ticket.cancelled = True
            lane = self._lanes.get(ticket.session)
            if lane is not None and ticket in lane.tickets:
                lane.tickets.remove(ticket)
                if not lane.tickets:
                    del self._lanes[ticket.session]
            self._condition.notify_all()

    def _wait_for_parts(self, ticket: Ticket, timeout: float) -> tuple[list[_Part], bool]:
        """Rows delivered since the last call, and whether the request is done."""
        with self._condition:
            if not ticket._parts and not ticket.done and not ticket.cancelled:
                self._condition.wait(timeout)
            if ticket.error is not None:
                raise ticket.error
            if ticket.cancelled and not ticket.done:
                raise QueueLeft(f"the request of session {ticket.session!r} left the queue")
            parts, ticket._parts = ticket._parts, []
            return parts, ticket.done

    @staticmethod
    def _rate(ticket: Ticket) -> float:
        if ticket.first_started is None:
            return 0.0
        elapsed = time.perf_counter() - ticket.first_started
        return ticket.finished / elapsed if elapsed > 0 else 0.0

    def _waiting_images(self) -> int:
        return sum(t.pending for lane in self._lanes.values() for t in lane.tickets)

    def _take_batch(self) -> list[tuple[Ticket, int]]:
        """The next batch, cut from the sessions' turns in order (call holding the lock)."""
        batch: list[tuple[Ticket, int]] = []
        while len(batch) < self.batch_size and self._lanes:
            session, lane = next(iter(self._lanes.items()))
            if lane.alive is not None and not _still_alive(lane.alive):
                self._lanes.pop(session)
                for ticket in lane.tickets:
                    ticket.cancelled = True
                continue
            ticket = lane.tickets[0]
            take = min(self.batch_size - len(batch), lane.turn_left, ticket.pending)
            batch.extend((ticket, i) for i in range(ticket.dispatched, ticket.dispatched + take))
            ticket.dispatched += take
            lane.turn_left -= take
            if ticket.pending == 0:
                lane.tickets.popleft()
            if not lane.tickets:
                del self._lanes[session]
            elif lane.turn_left == 0:
                lane.turn_left = self.quantum
                self._lanes.move_to_end(session)
        return batch

    def _place(self, ticket: Ticket) -> QueuePlace:
        """Replays the turns from now on with what is waiting (call holding the lock)."""
        before = 0  # images of the stream up to and including this request's last one
        first_at: int | None = None  # images of the stream before this request's next one
        sessions_before: set = set()
        if ticket.pending:
            rotation = deque(
                (session, lane.turn_left, [[t, t.pending] for t in lane.tickets])
                for session, lane in self._lanes.items()
            )
            while rotation:
                session, turn_left, requests = rotation.popleft()
                while turn_left and requests:
                    request = requests[0]
                    take = min(turn_left, request[1])
                    if request[0] is ticket:
                        if first_at is None:
                            first_at = before
                        if take == request[1]:
                            before += take
                            rotation.clear()
                            requests.clear()
                            break
                    elif first_at is None and session != ticket.session:
                        sessions_before.add(session)
                    before += take
                    turn_left -= take
                    request[1] -= take
                    if request[1] == 0:
                        requests.pop(0)
                if requests:
                    rotation.append((session, self.quantum, requests))
        embedding_now = ticket.in_flight > 0
        position = 0 if embedding_now else len(sessions_before) + 1
        own_left = ticket.pending
        estimate = None
        if self._seconds_per_batch is not None:
            running = 0.0
            if self._batch_started is not None:
                elapsed = time.perf_counter() - self._batch_started
                running = max(0.0, self._seconds_per_batch - elapsed)
            batches = math.ceil(before / self.batch_size)
            estimate = running + batches * self._seconds_per_batch
        return QueuePlace(
            position=position,
            sessions_ahead=len(sessions_before),
            images_ahead=max(0, before - own_left),
            done=ticket.finished,
            total=ticket.total,
            estimated_seconds=estimate,
        )

    def _run(self) -> None:
        while True:
            with self._condition:
                while not self._closed and not self._lanes:
                    self._condition.wait()
                if self._closed:
                    return
                deadline = time.monotonic() + self.gather_seconds
                while self._waiting_images() < self.batch_size:  # room: let others join
                    left = deadline - time.monotonic()
                    if left <= 0 or self._closed:
                        break
                    self._condition.wait(left)
                if self._closed:
                    return
                batch = self._take_batch()
                if not batch:
                    continue
                started = time.perf_counter()
                self._batch_started = started
                for ticket, _ in batch:
                    ticket.in_flight += 1
                    if ticket.first_started is None:
                        ticket.first_started = started
            error: BaseException | None = None
            try:
                vectors, failures = self._encode(
                    [ticket.items[i] for ticket, i in batch],
                    self.encoder,
                    batch_size=self.batch_size,
                    num_workers=0,
                )
            except Exception as caught:  # the requests in this batch fail; others go on
                error, vectors, failures = caught, {}, {}
            seconds = time.perf_counter() - started
            self._deliver(batch, vectors, failures, error, seconds)

    def _deliver(self, batch, vectors, failures, error, seconds) -> None:
        with self._condition:
            self._batch_started = None
            record = BatchRecord(len(batch), len({ticket.session for ticket, _ in batch}), seconds)
            self._recent.append(record)
            self._totals["batches"] += 1
            self._totals["images"] += record.images
            self._totals["full_batches"] += record.images == self.batch_size
            self._totals["shared_batches"] += record.sessions > 1
            if error is None:
                average = self._seconds_per_batch
                weight = SECONDS_PER_BATCH_WEIGHT
                self._seconds_per_batch = (
                    seconds if average is None else (1 - weight) * average + weight * seconds
                )
            parts: dict[int, tuple[Ticket, list[int], list[np.ndarray], list[int]]] = {}
            for position, (ticket, index) in enumerate(batch):
                ticket.in_flight -= 1
                if ticket.cancelled:
                    continue
                if error is not None:
                    ticket.error = error
                    continue
                ticket_part = parts.setdefault(id(ticket), (ticket, [], [], []))
                if position in failures:
                    ticket.failures[index] = failures[position]
                    ticket_part[3].append(index)
                else:
                    ticket.vectors[index] = vectors[position]
                    ticket_part[1].append(index)
                    ticket_part[2].append(vectors[position])
            for ticket, indices, rows, failed in parts.values():
                stacked = np.stack(rows) if rows else None
                ticket._parts.append(_Part(indices, stacked, len(failed)))
            if error is not None:
                for ticket, _ in batch:
                    self._drop(ticket)
            self._condition.notify_all()

    def _drop(self, ticket: Ticket) -> None:
        """Take a failed request's remaining images out of its lane (holding the lock)."""
        lane = self._lanes.get(ticket.session)
        if lane is not None and ticket in lane.tickets:
            lane.tickets.remove(ticket)
            if not lane.tickets:
                del self._lanes[ticket.session]


def _still_alive(alive: Alive) -> bool:
    try:
        return bool(alive())
    except Exception:
        return False
