"""Probe results cached on disk: a hit is the fresh result without a refit; any change to
the embeddings, the settings or the format misses; a damaged entry is rebuilt, never loaded."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import multiprocessing
import os
import pickle
import time
import zipfile

import numpy as np
import pytest
from sklearn.base import BaseEstimator

from probe_core import result_cache as result_cache_module
from probe_core.cli import main
from probe_core.embeddings import Embeddings
from probe_core.evaluation.protocols import run_probe
from probe_core.probe import LinearProbe, ProbeWeights
from probe_core.result_cache import (
    RESULTS_FOLDER,
    ResultCache,
    map_key,
    result_key,
)
from probe_core.study import Study, StudyProgress, StudySettings
from tests.conftest import write_image_folder

FAST = StudySettings(protocol="holdout", fixed_c=1.0)  # one fit: the tests that rebuild entries
FAST_OPTIONS = {"protocol": "holdout", "probe": LinearProbe(C=1.0)}


def make_embeddings(n_per_class: int = 16, dim: int = 12, seed: int = 0) -> Embeddings:
    """Three overlapping classes (so that C matters and a few labels look doubtful)."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(3), n_per_class)
    vectors = rng.normal(size=(len(labels), dim)) + 1.2 * np.eye(3, dim)[labels]
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    names = ["cat", "dog", "fox"]
    paths = [f"{names[label]}/{i:03d}.png" for i, label in enumerate(labels)]
    return Embeddings(
        vectors=vectors,
        labels=labels,
        paths=paths,
        class_names=names,
        encoder_id="test-encoder@1",
        sha256=[hashlib.sha256(path.encode()).hexdigest() for path in paths],
    )


def assert_identical(a, b, where: str = "result", ignore: tuple[str, ...] = ()) -> None:
    """Same types and values all the way down (NaN equals NaN; arrays by dtype and bytes)."""
    assert type(a) is type(b), f"{where}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape, where
        assert np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"), where
    elif dataclasses.is_dataclass(a):
        for field in dataclasses.fields(a):
            if field.name not in ignore:
                name = field.name
                assert_identical(getattr(a, name), getattr(b, name), f"{where}.{name}")
    elif isinstance(a, BaseEstimator):
        assert vars(a).keys() == vars(b).keys(), where
        for name in vars(a):
            assert_identical(vars(a)[name], vars(b)[name], f"{where}.{name}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_identical(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and np.isnan(a):
        assert np.isnan(b), where
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


class FitCounter:
    """Counts LinearProbe fits (a hit must not fit at all)."""

    def __init__(self, monkeypatch):
        self.calls = 0
        original = LinearProbe.fit

        def counting_fit(probe, *args, **kwargs):
            self.calls += 1
            return original(probe, *args, **kwargs)

        monkeypatch.setattr(LinearProbe, "fit", counting_fit)


def evaluate(settings: StudySettings, cache: ResultCache | None, embeddings: Embeddings):
    """Study.evaluate, with the progress it reported: (message, from_cache) per event."""
    events: list[StudyProgress] = []
    result = Study(settings, result_cache=cache, progress=events.append).evaluate(embeddings)
    return result, [
        (event.message, event.from_cache) for event in events if event.stage == "evaluate"
    ]


# --------------------------------------------------------------------------- hits


def test_a_hit_is_the_fresh_result_without_a_single_fit(tmp_path, monkeypatch):
    embeddings = make_embeddings()
    settings = StudySettings(protocol="cv", folds=3)  # nested cv with the C sweep
    uncached, _ = evaluate(settings, None, embeddings)
    cache = ResultCache(tmp_path)
    first, first_messages = evaluate(settings, cache, embeddings)
    assert first_messages == [("cv", False)] and len(cache.entries()) == 1

    fits = FitCounter(monkeypatch)
    hit, hit_messages = evaluate(settings, cache, copy.deepcopy(embeddings))
    assert fits.calls == 0
    assert hit_messages == [("cv", True)]
    assert hit is not first
    # Everything: split and folds, sweeps, predictions, probabilities, metrics, the fitted
    # probe's state, duplicates, label issues and messages; also the time the fit took.
    assert_identical(hit, first)
    # And what a run without any cache gives (only the time it took differs).
    assert_identical(hit, uncached, ignore=("seconds",))
    assert hit.chosen_c == uncached.chosen_c and len(hit.fold_sweeps) == 3
    assert hit.label_issues and hit.duplicates is not None

    # The restored probe predicts new images exactly like the fitted one and exports the same.
    new_images = make_embeddings(seed=7).vectors
    np.testing.assert_array_equal(
        hit.probe.predict_proba(new_images), uncached.probe.predict_proba(new_images)
    )
    np.testing.assert_array_equal(hit.probe.predict(new_images), uncached.probe.predict(new_images))
    assert_identical(
        ProbeWeights.from_estimator(hit.probe, hit.class_names, "test-encoder@1"),
        ProbeWeights.from_estimator(uncached.probe, uncached.class_names, "test-encoder@1"),
    )


def test_repeats_excluded_classes_and_duplicate_groups_survive_the_round_trip(tmp_path):
    embeddings = make_embeddings()
    # A copy of the first image, labelled as a class of its own: a duplicate group with a
    # label conflict, and a class of one image (excluded).
    embeddings.vectors = np.vstack([embeddings.vectors, embeddings.vectors[:1]])
    embeddings.labels = np.append(embeddings.labels, 3)
    embeddings.paths = [*embeddings.paths, "owl/000.png"]
    embeddings.class_names = [*embeddings.class_names, "owl"]
    embeddings.sha256 = [*embeddings.sha256, "f" * 64]
    embeddings.splits = [*embeddings.splits, ""]
    settings = StudySettings(protocol="cv", folds=2, repeats=2, fixed_c=0.5)
    cache = ResultCache(tmp_path)
    fresh, _ = evaluate(settings, cache, embeddings)
    hit, messages = evaluate(settings, cache, embeddings)
    assert messages == [(settings.protocol, True)]
    assert fresh.excluded_classes == ["owl"] and len(fresh.repeat_accuracies) == 2
    assert fresh.duplicates.conflicts and fresh.messages
    assert_identical(hit, fresh)


# --------------------------------------------------------------------------- invalidation


def changed_vector(e: Embeddings) -> None:
    e.vectors = e.vectors.copy()
    e.vectors[5, 3] = np.nextafter(e.vectors[5, 3], np.float32(2))  # one float32 ulp


def changed_label(e: Embeddings) -> None:
    e.labels = e.labels.copy()
    e.labels[5] = (e.labels[5] + 1) % 3


def changed_path(e: Embeddings) -> None:
    e.paths = [*e.paths[:5], "cat/renamed.png", *e.paths[6:]]


def changed_class_name(e: Embeddings) -> None:
    e.class_names = ["cat", "dog", "wolf"]


def changed_split(e: Embeddings) -> None:
    e.splits = ["train"] * (len(e) - 1) + ["test"]


def changed_file_digest(e: Embeddings) -> None:
    e.sha256 = [*e.sha256[:5], "0" * 64, *e.sha256[6:]]


def changed_encoder(e: Embeddings) -> None:
    e.encoder_id = "test-encoder@2"


@pytest.mark.parametrize(
    "change",
    [
        changed_vector,
        changed_label,
        changed_path,
        changed_class_name,
        changed_split,
        changed_file_digest,
        changed_encoder,
    ],
)
def test_any_change_to_the_embeddings_changes_the_key(change):
    embeddings = make_embeddings()
    changed = copy.deepcopy(embeddings)
    change(changed)
    assert result_key(changed) != result_key(embeddings)


@pytest.mark.parametrize(
    "options",
    [
        {"protocol": "holdout"},
        {"folds": 3},
        {"repeats": 2},
        {"test_size": 0.3},
        {"seed": 1},
        {"probe": LinearProbe(C=1.0)},
        {"probe": LinearProbe(C=2.0)},
        {"probe": LinearProbe(c_grid=(0.1, 1.0))},
        {"duplicate_threshold": 0.95},
        {"duplicate_threshold": None},
        {"groups": np.arange(48) // 2},
    ],
)
def test_any_setting_that_changes_the_result_changes_the_key(options):
    embeddings = make_embeddings()
    assert result_key(embeddings, **options) != result_key(embeddings)


def test_what_does_not_change_the_result_keeps_the_key():
    embeddings = make_embeddings()
    rerun = copy.deepcopy(embeddings)
    rerun.n_computed, rerun.n_from_cache, rerun.seconds = 0, len(rerun), 0.01  # a warm run
    key = result_key(embeddings)
    assert result_key(rerun) == key
    # run_probe's defaults, spelled out, are the same settings.
    assert result_key(embeddings, protocol="auto", seed=0, probe=LinearProbe(seed=0)) == key
    assert result_key(embeddings, probe=None, groups=None) == key


def test_changed_settings_refit_and_the_first_settings_still_hit(tmp_path, monkeypatch):
    embeddings = make_embeddings()
    cache = ResultCache(tmp_path)
    evaluate(FAST, cache, embeddings)
    fits = FitCounter(monkeypatch)
    other = dataclasses.replace(FAST, fixed_c=2.0)
    _, messages = evaluate(other, cache, embeddings)
    assert fits.calls == 1 and messages == [("holdout", False)]
    _, messages = evaluate(FAST, cache, embeddings)
    _, messages_other = evaluate(other, cache, embeddings)
    assert fits.calls == 1 and messages == messages_other == [("holdout", True)]
    assert len(cache.entries()) == 2


def test_a_new_format_version_misses_and_an_old_entry_is_not_read(tmp_path, monkeypatch):
    embeddings = make_embeddings()
    cache = ResultCache(tmp_path)
    old_key = result_key(embeddings, **FAST_OPTIONS)
    cache.store(old_key, run_probe(embeddings, **FAST_OPTIONS))
    bumped = result_cache_module.FORMAT_VERSION + 1
    monkeypatch.setattr(result_cache_module, "FORMAT_VERSION", bumped)
    assert result_key(embeddings, **FAST_OPTIONS) != old_key
    assert cache.lookup(old_key) is None  # written by the old format: rejected and removed
    assert cache.entries() == []


def test_the_key_holds_the_solver_and_device_that_run_not_auto():
    """On this CPU-only machine ``auto`` runs scikit-learn on the CPU: the same result as
    asking for it, so the same key; the torch solver is another result."""
    embeddings = make_embeddings()
    auto = result_key(embeddings, probe=LinearProbe(solver="auto", device="auto"))
    assert LinearProbe().resolved().get_params()["solver"] == "sklearn"
    assert LinearProbe().resolved().get_params()["device"] == "cpu"
    assert result_key(embeddings, probe=LinearProbe(solver="sklearn")) == auto
    assert result_key(embeddings, probe=LinearProbe(solver="sklearn", device="cpu")) == auto
    torch_key = result_key(embeddings, probe=LinearProbe(solver="torch", device="cpu"))
    assert torch_key != auto
    assert result_key(embeddings, probe=LinearProbe(solver="torch", device="auto")) == torch_key


def test_the_code_fingerprint_covers_every_module_a_result_runs(monkeypatch):
    """The modules come from the package's own import graph: the torch solver the probe
    imports when asked for it is among them, and an edit to any of them misses."""
    modules = result_cache_module.dependencies(
        [result_cache_module.run_probe.__module__, result_cache_module.__name__]
    )
    for module in (
        "probe_core.probe",
        "probe_core.torch_probe",
        "probe_core.evaluation.protocols",
        "probe_core.evaluation.splits",
        "probe_core.evaluation.label_issues",
        "probe_core.result_cache",
    ):
        assert module in modules
    fingerprint = result_cache_module._fingerprint(modules, ("numpy",))
    files = dict(result_cache_module.module_files())
    edited = files["probe_core.torch_probe"].read_bytes() + b"\n# edited\n"
    monkeypatch.setattr(type(files["probe_core.torch_probe"]), "read_bytes", lambda self: edited)
    assert result_cache_module._fingerprint(modules, ("numpy",)) != fingerprint


def test_an_unreadable_module_turns_the_cache_off_instead_of_guessing(
    tmp_path, monkeypatch, caplog
):
    """No source to read (an install without .py files): no stored entry can be shown to
    come from this code, so each process gets its own fingerprint and a warning."""
    files = dict(result_cache_module.module_files())
    files["probe_core.torch_probe"] = tmp_path / "missing.py"
    monkeypatch.setattr(result_cache_module, "module_files", lambda: files)
    modules = ["probe_core.probe", "probe_core.torch_probe"]
    first = result_cache_module._fingerprint(modules, ("numpy",))
    second = result_cache_module._fingerprint(modules, ("numpy",))
    assert first != second
    assert "result cache off for this process: cannot read probe_core.torch_probe" in caplog.text


def test_a_change_in_the_code_that_computes_results_misses(monkeypatch):
    embeddings = make_embeddings()
    key = result_key(embeddings)
    monkeypatch.setattr(result_cache_module, "code_fingerprint", lambda: "edited evaluation code")
    assert result_key(embeddings) != key


# --------------------------------------------------------------------------- damage


def truncate(path, key, other_entry):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def flip_bytes(path, key, other_entry):
    data = bytearray(path.read_bytes())
    for position in range(len(data) // 3, len(data) // 3 + 64, 8):
        data[position] ^= 0xFF
    path.write_bytes(bytes(data))


def wrong_checksum(path, key, other_entry):
    with np.load(path, allow_pickle=False) as data:
        members = {name: data[name] for name in data.files}
    members["checksum"] = members["checksum"] ^ np.uint8(1)
    np.savez(path, **members)


def edited_number_with_old_checksum(path, key, other_entry):
    """A well-formed entry whose probabilities were changed after the checksum was taken."""
    with np.load(path, allow_pickle=False) as data:
        members = {name: data[name] for name in data.files}
    float_arrays = [n for n, a in members.items() if a.dtype == np.float64 and a.size > 1]
    members[float_arrays[0]] = members[float_arrays[0]] * 0.5
    np.savez(path, **members)


def planted_pickle(path, key, other_entry):
    """A pickle that would create a file if it were ever unpickled."""
    path.write_bytes(pickle.dumps(Trap(str(path) + ".unpickled")))


def planted_entry_of_another_key(path, key, other_entry):
    path.write_bytes(other_entry.read_bytes())


def planted_foreign_class(path, key, other_entry):
    """A well-formed entry, valid checksum, whose document names a class outside the list."""
    document = json.dumps(
        {"$": "estimator", "class": "Popen", "state": {"args": ["touch", "planted"]}}
    ).encode()
    np.savez(
        path,
        format_version=np.array(result_cache_module.FORMAT_VERSION),
        key=np.frombuffer(key.encode(), dtype=np.uint8),
        document=np.frombuffer(document, dtype=np.uint8),
        checksum=result_cache_module._checksum(key, document, {}),
    )


class Trap:
    def __init__(self, target: str):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


@pytest.mark.parametrize(
    "damage",
    [
        truncate,
        flip_bytes,
        wrong_checksum,
        edited_number_with_old_checksum,
        planted_pickle,
        planted_entry_of_another_key,
        planted_foreign_class,
    ],
)
def test_a_damaged_or_planted_entry_is_rebuilt_not_loaded(tmp_path, monkeypatch, damage):
    embeddings = make_embeddings()
    cache = ResultCache(tmp_path)
    fresh, _ = evaluate(FAST, cache, embeddings)
    (path,) = cache.entries()
    key = path.stem
    other_key = result_key(embeddings, **FAST_OPTIONS, seed=3)
    other_entry = cache.store(other_key, run_probe(embeddings, **FAST_OPTIONS, seed=3))
    damage(path, key, other_entry)

    fits = FitCounter(monkeypatch)
    rebuilt, messages = evaluate(FAST, cache, embeddings)
    assert fits.calls == 1 and messages == [("holdout", False)]  # recomputed, not loaded
    assert_identical(rebuilt, fresh, ignore=("seconds",))
    assert not (tmp_path / (path.name + ".unpickled")).exists()
    # The entry was rewritten and is trusted again.
    again, messages = evaluate(FAST, cache, embeddings)
    assert fits.calls == 1 and messages == [("holdout", True)]
    assert_identical(again, rebuilt)


def test_an_unfinished_temporary_file_is_never_read_and_is_cleaned_up_when_stale(tmp_path):
    embeddings = make_embeddings()
    cache = ResultCache(tmp_path)
    key = result_key(embeddings, **FAST_OPTIONS)
    result = run_probe(embeddings, **FAST_OPTIONS)
    cache.store(key, result)
    killed_writer = tmp_path / ".tmp-killed.part"  # what a writer killed mid-write leaves
    killed_writer.write_bytes(cache.path_for(key).read_bytes()[:1000])
    assert cache.entries() == [cache.path_for(key)]
    assert_identical(cache.lookup(key), result)

    an_hour_ago = time.time() - 2 * result_cache_module.STALE_TEMP_SECONDS
    os.utime(killed_writer, (an_hour_ago, an_hour_ago))
    cache.store(result_key(embeddings, **FAST_OPTIONS, seed=1), result)
    assert not killed_writer.exists()


def test_least_recently_used_entries_go_first_once_past_the_size_bound(tmp_path):
    embeddings = make_embeddings()
    result = run_probe(embeddings, **FAST_OPTIONS)
    keys = [hashlib.sha256(name.encode()).hexdigest() for name in "abc"]
    size = ResultCache(tmp_path / "probe").store(keys[0], result).stat().st_size
    cache = ResultCache(tmp_path / "bounded", max_bytes=int(2.5 * size))
    for age, key in enumerate(keys[:2]):
        cache.store(key, result)
        stamp = time.time() - 100 + age
        os.utime(cache.path_for(key), (stamp, stamp))
    assert cache.lookup(keys[0]) is not None  # used now: the newest
    cache.store(keys[2], result)
    assert {path.stem for path in cache.entries()} == {keys[0], keys[2]}


# --------------------------------------------------------------------------- concurrency


def store_repeatedly(directory: str, key: str, result, times: int) -> None:
    cache = ResultCache(directory)
    for _ in range(times):
        assert cache.store(key, result) is not None


def test_concurrent_writers_of_one_key_leave_one_valid_entry(tmp_path):
    embeddings = make_embeddings()
    key = result_key(embeddings, **FAST_OPTIONS)
    result = run_probe(embeddings, **FAST_OPTIONS)
    fork = multiprocessing.get_context("fork")
    writers = [
        fork.Process(target=store_repeatedly, args=(str(tmp_path), key, result, 25))
        for _ in range(3)
    ]
    for writer in writers:
        writer.start()
    cache = ResultCache(tmp_path)
    seen = 0
    while any(writer.is_alive() for writer in writers):
        read = cache.lookup(key)  # a reader meanwhile sees a whole entry or none
        if read is not None:
            assert_identical(read, result)
            seen += 1
    for writer in writers:
        writer.join()
        assert writer.exitcode == 0
    assert [path.name for path in tmp_path.iterdir()] == [f"{key}.npz"]  # no temporary files
    assert_identical(cache.lookup(key), result)
    assert zipfile.is_zipfile(cache.path_for(key))


# --------------------------------------------------------------------------- maps


def project_with(cache: ResultCache | None, embeddings: Embeddings, **options):
    """Study.project, with the progress it reported: (message, from_cache) per event."""
    events: list[StudyProgress] = []
    study = Study(StudySettings(), result_cache=cache, progress=events.append)
    projection = study.project(embeddings, **options)
    return projection, [
        (event.message, event.from_cache) for event in events if event.stage == "project"
    ]


@pytest.mark.parametrize("method", ["pca", "umap"])
def test_a_map_is_made_once_then_served_from_the_cache_with_its_score(
    tmp_path, monkeypatch, method
):
    embeddings = make_embeddings()
    fresh, messages = project_with(ResultCache(tmp_path), embeddings, method=method)
    assert messages == [(method, False)] and fresh.score is not None

    def no_projection(*args, **kwargs):
        raise AssertionError("a hit must not compute the map")

    monkeypatch.setattr("probe_core.study.project", no_projection)
    again, messages = project_with(ResultCache(tmp_path), embeddings, method=method)
    assert messages == [(method, True)]
    assert_identical(again, fresh)


@pytest.mark.parametrize(
    "options",
    [
        {"method": "umap"},
        {"seed": 1},
        {"n_neighbors": 5},
        {"min_dist": 0.5},
        {"n_components": 3},
        {"labels": np.roll(make_embeddings().labels, 1)},
    ],
    ids=lambda options: next(iter(options)),
)
def test_any_map_setting_changes_the_map_key(options):
    embeddings = make_embeddings()
    base = {"method": "pca", "seed": 0, "labels": embeddings.labels}
    assert map_key(embeddings, **base) != map_key(embeddings, **(base | options))


def test_the_map_key_follows_the_vectors_and_the_map_code(monkeypatch):
    embeddings = make_embeddings()
    key = map_key(embeddings, method="pca")
    assert map_key(embeddings, method="pca") == key
    assert map_key(make_embeddings(seed=1), method="pca") != key
    assert map_key(embeddings, method="pca") != result_key(embeddings)
    monkeypatch.setattr(result_cache_module, "map_code_fingerprint", lambda: "edited")
    assert map_key(embeddings, method="pca") != key


def test_without_a_cache_every_map_is_computed(tmp_path):
    embeddings = make_embeddings()
    _, first = project_with(None, embeddings, method="pca")
    _, second = project_with(None, embeddings, method="pca")
    assert first == second == [("pca", False)]


def test_a_damaged_map_entry_is_rebuilt(tmp_path):
    embeddings = make_embeddings()
    cache = ResultCache(tmp_path)
    fresh, _ = project_with(cache, embeddings, method="pca")
    path = cache.path_for(map_key(embeddings, method="pca", seed=0, labels=embeddings.labels))
    path.write_bytes(path.read_bytes()[:-40])
    rebuilt, messages = project_with(cache, embeddings, method="pca")
    assert messages == [("pca", False)]
    assert_identical(rebuilt, fresh, ignore=("seconds",))


def test_a_probe_entry_is_never_read_as_a_map(tmp_path):
    embeddings = make_embeddings()
    cache = ResultCache(tmp_path)
    key = result_key(embeddings, **FAST_OPTIONS)
    cache.store(key, run_probe(embeddings, **FAST_OPTIONS))
    assert cache.lookup_map(key) is None
    assert not cache.path_for(key).exists()  # treated as damaged


# --------------------------------------------------------------------------- CLI


def test_the_cli_rerun_takes_the_result_from_the_cache(tmp_path, capsys, monkeypatch, encoder):
    # Each run loads the bundled encoder by name; the session's copy saves reloading it.
    monkeypatch.setattr("probe_core.study.load_encoder", lambda name, **options: encoder)
    folder = write_image_folder(tmp_path / "images", {"red": 5, "green": 5, "blue": 5})
    cache_dir = tmp_path / "cache"
    results = cache_dir / RESULTS_FOLDER

    def run(out: str, *extra: str) -> str:
        arguments = ["run", str(folder), "--out", str(tmp_path / out), "--projection", "pca"]
        assert main([*arguments, "--cache-dir", str(cache_dir), *extra]) == 0
        printed = capsys.readouterr()
        return printed.out + printed.err

    cold = run("cold")
    assert "fitting and scoring the probe" in cold and "probe result from cache" not in cold
    assert "computing the PCA map" in cold
    entries = sorted(results.glob("*.npz"))  # the probe result and the map
    assert len(entries) == 2

    warm = run("warm")
    assert "probe result from cache" in warm and "fitting and scoring" not in warm
    assert "PCA map from cache" in warm and "computing the PCA map" not in warm
    assert "embedded 0 images, 15 from cache" in warm
    outputs = ("metrics.json", "predictions.csv", "label_issues.csv", "duplicates.csv")
    for name in (*outputs, "projection.csv", "map_quality.json"):
        assert (tmp_path / "warm" / name).read_bytes() == (tmp_path / "cold" / name).read_bytes()

    written = [entry.stat().st_mtime_ns for entry in entries]
    uncached = run("uncached", "--no-cache")  # neither cache is read nor written
    assert "fitting and scoring the probe" in uncached and "probe result from cache" not in uncached
    assert "computing the PCA map" in uncached
    assert "embedded 15 images, 0 from cache" in uncached
    assert sorted(results.glob("*.npz")) == entries
    assert [entry.stat().st_mtime_ns for entry in entries] == written
