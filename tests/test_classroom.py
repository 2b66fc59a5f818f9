"""A classroom on one server: 30 browser sessions at once, each with its own small folder.

Slow and in a real browser (``-m "slow and browser"``), out of the quick loop. It drives the
same classroom as ``bench/classroom.py`` (which prints the times and the memory): one server,
a warm-up session, then 30 student sessions that each upload their own 30-60 images in three
classes named after the session and press *Run probe* together. Every session must get its
own correct results: its own classes on the confusion matrix, every image scored, an
accuracy above chance. The embedding queue must have batched across sessions, the waiting
sessions must have been told their place in line, and the server must stay within 100 MB
of memory per additional session.
"""

from __future__ import annotations

import re

import pytest

from bench.classroom import report, run_classroom

pytestmark = [pytest.mark.slow, pytest.mark.browser]

SESSIONS = 30
MEMORY_PER_SESSION_MIB = 100


@pytest.fixture(scope="module")
def classroom(tmp_path_factory):
    run = run_classroom(SESSIONS, tmp_path_factory.mktemp("classroom"))
    print(report(run))  # shown with -s, and on failure
    return run


def test_every_session_gets_its_own_correct_results(classroom):
    assert len(classroom.outcomes) == SESSIONS
    wrong = [f"{o.folder.path.name}: {o.problem()}" for o in classroom.outcomes if not o.correct]
    assert wrong == []
    # Each saw its own three classes and its own image count, which differ between sessions.
    assert len({tuple(o.classes_shown) for o in classroom.outcomes}) == SESSIONS
    assert {o.scored for o in classroom.outcomes} == {30, 40, 50, 60}


def test_the_sessions_shared_batches_and_were_told_their_place_in_line(classroom):
    log = classroom.log
    assert log is not None, "the server logged no embedding through the queue"
    assert log.images == sum(o.folder.images for o in classroom.outcomes)
    assert log.shared_batches > 0
    # Batches are cut from every waiting session's images: most of them are full.
    assert log.fill > 0.8
    told = [t for o in classroom.outcomes for t in o.waiting_texts]
    places = [re.search(r"(\d+)(st|nd|rd|th) in line", t) for t in told]
    assert any(place and int(place.group(1)) > 1 for place in places), told[:10]
    waiting = [t for t in told if "in line" in t]
    assert all(re.search(r"· (about \d+ s|estimating the wait)$", t) for t in waiting), waiting


def test_the_server_stays_within_100_mb_per_additional_session(classroom):
    growth = (classroom.peak_rss_mib - classroom.rest_rss_mib) / SESSIONS
    assert growth <= MEMORY_PER_SESSION_MIB, report(classroom)
