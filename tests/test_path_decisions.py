"""The execution path is decided once per machine and settings, kept beside the embedding
cache, and read back by every later load and process without timing anything."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import threading
import time

import pytest

from probe_core import acceleration
from probe_core.encoders import DEFAULT_ENCODER, load_encoder
from probe_core.path_decisions import (
    DECISIONS_DIR_ENV,
    CandidateMeasurement,
    DecisionKey,
    PathDecision,
    PathDecisions,
)
from tests.conftest import REPO


def a_key(**changes) -> DecisionKey:
    key = DecisionKey("test:model", "abc", "cpu", 16, "2.14.1", "Some CPU", "f00d", 2)
    return dataclasses.replace(key, **changes)


def a_decision(key: DecisionKey, path: str = "fp32+channels_last") -> PathDecision:
    measured = (CandidateMeasurement(path, 0.99999, 2e-7, True, speedup=1.3),)
    return PathDecision(key, path, "fastest faithful", measured, 80.0, 3.5)


def test_a_decision_round_trips_through_its_file(tmp_path):
    store = PathDecisions(tmp_path)
    kept = store.put(a_decision(a_key()))
    assert kept.location == str(tmp_path / f"{a_key().digest}.json")
    read = store.get(a_key())
    assert read.from_store and read.location == kept.location
    assert dataclasses.replace(read, from_store=False) == kept
    assert read.decided_at.endswith("+00:00")  # UTC
    assert json.loads((tmp_path / f"{a_key().digest}.json").read_text())["path"] == kept.path


@pytest.mark.parametrize(
    "change",
    [
        {"torch_version": "2.15.0"},
        {"cpu_model": "Another CPU"},
        {"cpu_flags": "beef"},
        {"threads": 8},
        {"device": "cuda:0"},
        {"forward_rows": 32},
        {"preprocess_id": "def"},
        {"encoder_id": "test:other"},
    ],
)
def test_another_torch_cpu_or_setting_makes_a_new_decision(tmp_path, change):
    store = PathDecisions(tmp_path)
    store.put(a_decision(a_key()))
    assert store.get(a_key(**change)) is None
    made = store.decide(a_key(**change), lambda: a_decision(a_key(**change), "fp32"))
    assert made.path == "fp32" and store.get(a_key()).path == "fp32+channels_last"


def test_the_current_key_names_this_torch_cpu_and_thread_count():
    import torch

    key = DecisionKey.current("test:model", "abc", "cpu", 16)
    assert key.torch_version == torch.__version__
    assert key.threads == torch.get_num_threads()
    assert key.cpu_model and key.cpu_flags


@pytest.mark.parametrize("damage", ["garbage", "empty", "truncated", "other key", "no path"])
def test_a_damaged_decision_file_is_deleted_and_decided_again(tmp_path, damage):
    store = PathDecisions(tmp_path)
    path = tmp_path / f"{a_key().digest}.json"
    store.put(a_decision(a_key()))
    text = path.read_text()
    if damage == "garbage":
        path.write_text("not json at all")
    elif damage == "empty":
        path.write_text("")
    elif damage == "truncated":
        path.write_text(text[: len(text) // 2])
    elif damage == "other key":
        path.write_text(json.dumps(a_decision(a_key(threads=64)).to_json()))
    else:
        record = json.loads(text)
        del record["path"]
        path.write_text(json.dumps(record))
    assert store.get(a_key()) is None
    assert not path.exists()
    calls = []
    made = store.decide(a_key(), lambda: calls.append(1) or a_decision(a_key(), "bf16"))
    assert calls == [1] and made.path == "bf16"
    assert store.get(a_key()).path == "bf16"  # a whole file again


def test_two_loads_deciding_at_once_measure_once(tmp_path):
    store, other = PathDecisions(tmp_path), PathDecisions(tmp_path)  # two processes' views
    calls = []

    def slow_measure() -> PathDecision:
        calls.append(threading.get_ident())
        time.sleep(0.3)
        return a_decision(a_key())

    results = []
    threads = [
        threading.Thread(target=lambda s=s: results.append(s.decide(a_key(), slow_measure)))
        for s in (store, other)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1
    assert {r.decided_at for r in results} == {results[0].decided_at}
    assert sorted(r.from_store for r in results) == [False, True]


def test_a_second_load_reads_the_decision_and_times_nothing(tmp_path, monkeypatch):
    store = PathDecisions(tmp_path)
    first = load_encoder(DEFAULT_ENCODER, device="cpu", decisions=store)
    assert first.path_choice.calibrated and first.path_choice.seconds > 0
    assert first.path_choice.decided_at and os.path.isfile(first.path_choice.location)

    def no_timing(*args, **kwargs):
        raise AssertionError("calibrated again")

    monkeypatch.setattr(acceleration, "calibrate", no_timing)
    again = load_encoder(DEFAULT_ENCODER, device="cpu", decisions=store)
    choice = again.path_choice
    assert not choice.calibrated and choice.seconds == 0.0
    assert again.precision == first.precision and again.cache_key == first.cache_key
    assert choice.decided_at == first.path_choice.decided_at
    assert choice.measurements == first.path_choice.measurements
    assert "stored decision, no calibration" in choice.describe()
    assert f"decided {acceleration.readable_time(choice.decided_at)} (" in choice.describe()
    assert acceleration.readable_time("2026-12-03T05:40:12+00:00") == "2026-12-03 05:40 UTC"


def test_a_named_path_neither_reads_nor_writes_the_store(tmp_path, monkeypatch):
    store = PathDecisions(tmp_path)
    store.put(a_decision(a_key()))
    before = sorted(os.listdir(tmp_path))
    monkeypatch.setattr(acceleration, "calibrate", lambda *a, **k: pytest.fail("calibrated"))
    forced = load_encoder(
        DEFAULT_ENCODER, device="cpu", precision="fp32+channels_last", decisions=store
    )
    exact = load_encoder(DEFAULT_ENCODER, device="cpu", precision="fp32", decisions=store)
    assert forced.precision == "fp32+channels_last" and exact.precision == "fp32"
    assert forced.path_choice.decided_at == "" and exact.path_choice.location == ""
    assert sorted(os.listdir(tmp_path)) == before


def test_the_store_lives_beside_the_embedding_cache(tmp_path, monkeypatch):
    monkeypatch.delenv(DECISIONS_DIR_ENV, raising=False)
    monkeypatch.setenv("PROBE_STUDIO_CACHE_DIR", str(tmp_path / "cache"))
    assert PathDecisions.default().directory == tmp_path / "cache" / "execution-paths"
    assert PathDecisions.beside(tmp_path / "mine").directory == tmp_path / "mine" / (
        "execution-paths"
    )
    monkeypatch.setenv(DECISIONS_DIR_ENV, str(tmp_path / "paths"))
    assert PathDecisions.beside(tmp_path / "mine").directory == tmp_path / "paths"


def test_clearing_the_embedding_cache_keeps_the_decisions(tmp_path):
    from probe_core.cache import EmbeddingCache

    cache = EmbeddingCache(tmp_path)
    cache.store("key", [bytes(32)], [[1.0, 0.0]])
    PathDecisions(tmp_path / "execution-paths").put(a_decision(a_key()))
    cache.clear()
    assert cache.lookup("key", [bytes(32)]) == {}
    assert PathDecisions(tmp_path / "execution-paths").get(a_key()) is not None


SECOND_PROCESS = """
import json
from probe_core.encoders import DEFAULT_ENCODER, load_encoder
from probe_core import acceleration

def no_timing(*args, **kwargs):
    raise AssertionError("calibrated in the second process")

acceleration.calibrate = no_timing
encoder = load_encoder(DEFAULT_ENCODER, device="cpu")
print(json.dumps(encoder.path_choice.record()))
"""


def test_a_second_process_reuses_the_stored_decision_without_timing(encoder):
    """The session's encoder decided (or read) its path in the store that this test session
    shares with its subprocesses; a new process reads it and calibrates nothing."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    ran = subprocess.run(
        [sys.executable, "-c", SECOND_PROCESS],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=600,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
    record = json.loads(ran.stdout.strip().splitlines()[-1])
    assert record["calibrated_in_this_process"] is False
    assert record["calibration_seconds"] == 0.0
    assert record["name"] == encoder.precision
    assert record["decided_at"] == encoder.path_choice.decided_at
    assert record["decision_file"] == encoder.path_choice.location
