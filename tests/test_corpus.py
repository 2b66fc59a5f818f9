"""Every kind of bad or awkward input in the generated corpus (``tests/corpus``), through the
command line and through the app: both finish, every bad item is named with its specific
reason, every good image is used, and no file of the input is modified.

The corpus is built once per module, each tool runs on it once, and one test per kind checks
what happened to that kind, so a failure names the kind.
"""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from probe_core.cli import main
from probe_core.export import RUN_OUTPUTS
from probe_core.roots import ROOTS_ENV
from studio import shared
from tests import badfiles
from tests.corpus.build_corpus import KIND_NAMES, Manifest, build_corpus, build_empty_root
from tests.test_app import assert_ok, button, new_app

MIN_KINDS = 25

pytestmark = [
    pytest.mark.slow,
    # Pillow warns while reading the "JPEG with a broken EXIF block" kind; the image is used.
    pytest.mark.filterwarnings("ignore:Corrupt EXIF data:UserWarning"),
]


def fingerprint(manifest: Manifest) -> dict[str, dict[str, tuple]]:
    """Hashes of every file of the input (links as links, never followed), and the link targets
    that lie outside it."""
    return {
        "root": badfiles.tree_fingerprint(manifest.root),
        "outside": badfiles.tree_fingerprint(manifest.outside),
    }


def cli(argv: list[str]) -> SimpleNamespace:
    """Run ``probe-studio`` in this process: exit code, stdout and stderr."""
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(argv)
    return SimpleNamespace(code=code, stdout=stdout.getvalue(), stderr=stderr.getvalue())


def cli_run_args(folder: Path, out: Path, cache: Path) -> list[str]:
    return [
        "run",
        str(folder),
        "--out",
        str(out),
        "--cache-dir",
        str(cache),
        "--projection",
        "pca",
        "--workers",
        "1",
    ]


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Manifest:
    manifest = build_corpus(tmp_path_factory.mktemp("corpus") / "input")
    assert len(manifest.entries) >= MIN_KINDS, manifest.left_out
    return manifest


@pytest.fixture(scope="module")
def cli_run(corpus, tmp_path_factory):
    """The command line, run once on the corpus."""
    before = fingerprint(corpus)
    work = tmp_path_factory.mktemp("cli")
    ran = cli(cli_run_args(corpus.root, work / "out", work / "cache"))
    out = work / "out"
    skipped = pd.read_csv(out / "skipped.csv", dtype=str, keep_default_na=False)
    embedded = pd.read_parquet(out / "embeddings.parquet")
    return SimpleNamespace(
        ran=ran,
        out=out,
        labels=dict(zip(embedded["path"], embedded["label"], strict=True)),
        embedded_paths=list(embedded["path"]),
        reasons=dict(zip(skipped["path"], skipped["reason"], strict=True)),
        skipped_paths=list(skipped["path"]),
        metrics=json.loads((out / "metrics.json").read_text()),
        before=before,
        after=fingerprint(corpus),
    )


@pytest.fixture(scope="module")
def app_env(tmp_path_factory):
    """A private embedding cache and session folders under tmp (as in test_app)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PROBE_STUDIO_CACHE_DIR", str(tmp_path_factory.mktemp("app-cache")))
        patch.delenv(ROOTS_ENV, raising=False)
        patch.setattr(tempfile, "tempdir", str(tmp_path_factory.mktemp("sessions")))
        shared.embedding_cache.clear()  # st.cache_resource: re-created under the new directory
        yield patch
        shared.embedding_cache.clear()


def load_server_folder(at: AppTest, folder: Path) -> AppTest:
    """Type a folder into the "Server folder" tab and press "Load folder"."""
    at.text_input(key="server_path").set_value(str(folder))
    button(at, "Load folder").click().run()
    assert_ok(at)
    return at


@pytest.fixture(scope="module")
def app_run(corpus, app_env):
    """One session: load the corpus as a server folder, run the probe, look at every page."""
    app_env.setenv(ROOTS_ENV, str(corpus.root.parent))
    before = fingerprint(corpus)
    at = load_server_folder(new_app(), corpus.root)
    loaded_errors = [e.value for e in at.error]
    button(at, "Run probe").click().run()
    assert_ok(at)
    success = [t.value for t in at.title]  # Run probe goes straight to Results
    errors = [e.value for e in at.error]
    at.switch_page("app_pages/data.py").run()  # the preview lists every skipped file, once known
    assert_ok(at)
    preview_warnings = [w.value for w in at.warning]
    tables = [e.dataframe[0].value for e in at.expander if e.label.startswith("Skipped files")]
    expanders = [e.label for e in at.expander]
    at.switch_page("app_pages/results.py").run()
    assert_ok(at)
    results_warnings = [w.value for w in at.warning]
    at.session_state["map_method"] = "pca"
    at.switch_page("app_pages/map.py").run()
    assert_ok(at)
    at.switch_page("app_pages/predict_export.py").run()
    assert_ok(at)
    downloads = [d.label for d in at.get("download_button")]
    current = at.session_state["study"]
    table = tables[0] if tables else pd.DataFrame(columns=["file", "reason"])
    return SimpleNamespace(
        at=at,
        study=current,
        loaded_errors=loaded_errors,
        success=success,
        errors=errors,
        preview_warnings=preview_warnings,
        results_warnings=results_warnings,
        expanders=expanders,
        downloads=downloads,
        table=dict(zip(table["file"], table["reason"], strict=True)),
        labels={
            path: current.embeddings.class_names[label]
            for path, label in zip(current.embeddings.paths, current.embeddings.labels, strict=True)
        },
        reasons={s.path: s.reason for s in current.embeddings.skipped},
        before=before,
        after=fingerprint(corpus),
    )


# --- the corpus itself ----------------------------------------------------------------------


def test_the_corpus_has_at_least_25_kinds_and_no_committed_binaries(corpus):
    assert len(KIND_NAMES) == len(set(KIND_NAMES)) >= MIN_KINDS
    assert [e.kind for e in corpus.entries] == [k for k in KIND_NAMES if k not in corpus.left_out]
    paths = [path for entry in corpus.entries for path in entry.paths]
    assert len(paths) == len(set(paths)), "a path belongs to one kind only"
    committed = [p for p in Path(__file__).parent.joinpath("corpus").iterdir() if p.is_file()]
    assert {p.suffix for p in committed} <= {".py"}, committed


# --- the command line -------------------------------------------------------------------------


def test_cli_finishes_and_writes_every_output(cli_run):
    assert cli_run.ran.code == 0, cli_run.ran.stderr
    for name in RUN_OUTPUTS:
        assert (cli_run.out / name).is_file() and (cli_run.out / name).stat().st_size > 0, name


@pytest.mark.parametrize("kind", KIND_NAMES)
def test_cli_handles_each_kind(kind, corpus, cli_run):
    if kind in corpus.left_out:
        pytest.skip(f"this file system cannot hold it: {corpus.left_out[kind]}")
    entry = corpus.entry(kind)
    for expected in entry.expected:
        if expected.label is not None:
            assert cli_run.labels.get(expected.path) == expected.label, (
                f"{expected.path} should be embedded as {expected.label}",
                cli_run.reasons.get(expected.path),
            )
        else:
            assert expected.path in cli_run.reasons, f"{expected.path} should be in skipped.csv"
            assert expected.reason in cli_run.reasons[expected.path], expected.path
    if entry.excluded_class:
        assert entry.excluded_class in cli_run.metrics["excluded_classes"]
        assert entry.excluded_class not in cli_run.metrics["classes"]
        assert any(entry.message in m for m in cli_run.metrics["messages"]), cli_run.metrics[
            "messages"
        ]
        assert entry.message in cli_run.ran.stdout  # printed as a note


def test_cli_uses_every_good_image_and_nothing_unexpected(corpus, cli_run):
    assert len(cli_run.embedded_paths) == len(set(cli_run.embedded_paths))
    assert len(cli_run.skipped_paths) == len(set(cli_run.skipped_paths))
    assert cli_run.labels == corpus.used()
    assert set(cli_run.reasons) == set(corpus.skipped())
    metrics = cli_run.metrics
    assert metrics["classes"] == list(corpus.classes)
    assert sorted(metrics["excluded_classes"]) == sorted(corpus.excluded_classes())
    excluded = [m for m in metrics["messages"] if " excluded: " in m]
    assert len(excluded) == len(corpus.excluded_classes())
    # The rest only report the corpus's copies of images (duplicate groups, label conflicts).
    others = [m for m in metrics["messages"] if m not in excluded]
    assert all("duplicate" in m for m in others), others
    assert metrics["n_images"] == len(corpus.used())
    assert metrics["n_skipped"] == len(corpus.skipped())


def test_cli_leaves_every_input_file_unchanged(cli_run):
    assert cli_run.after == cli_run.before


def test_cli_on_an_empty_root_says_no_images_found(tmp_path):
    root = build_empty_root(tmp_path / "empty")
    before = badfiles.tree_fingerprint(root)
    ran = cli(cli_run_args(root, tmp_path / "out", tmp_path / "cache"))
    assert ran.code == 2
    assert "no images found" in ran.stderr
    assert not (tmp_path / "out").exists()
    assert badfiles.tree_fingerprint(root) == before


# --- the app ----------------------------------------------------------------------------------


def test_app_loads_the_corpus_runs_and_reports_accuracy(corpus, app_run):
    current = app_run.study
    assert current.label == f"Server folder {corpus.root.resolve()}"
    assert app_run.loaded_errors == []
    assert app_run.errors == []
    result = current.result
    assert result is not None
    assert app_run.success == ["Results"]
    assert result.class_names == list(corpus.classes)
    assert app_run.expanders == [f"Skipped files ({len(corpus.skipped())})"]
    # Every page opened without an exception; the exports are offered.
    assert "Embeddings (Parquet)" in app_run.downloads


@pytest.mark.parametrize("kind", KIND_NAMES)
def test_app_handles_each_kind(kind, corpus, app_run):
    if kind in corpus.left_out:
        pytest.skip(f"this file system cannot hold it: {corpus.left_out[kind]}")
    entry = corpus.entry(kind)
    for expected in entry.expected:
        if expected.label is not None:
            assert app_run.labels.get(expected.path) == expected.label, (
                f"{expected.path} should be embedded as {expected.label}",
                app_run.reasons.get(expected.path),
            )
        else:
            assert expected.reason in app_run.reasons.get(expected.path, ""), expected.path
            # ...and the "Skipped files" table lists it with the same reason.
            assert app_run.table.get(expected.path) == app_run.reasons[expected.path]
    if entry.excluded_class:
        result = app_run.study.result
        assert entry.excluded_class in result.excluded_classes
        assert any(entry.message in m for m in result.messages), result.messages
        # The Data page warns before the run; the Results page shows the message.
        assert any(
            f"“{entry.excluded_class}” has fewer than 2" in w for w in app_run.preview_warnings
        )
        assert any(entry.message in w for w in app_run.results_warnings), app_run.results_warnings


def test_app_uses_every_good_image_and_nothing_unexpected(corpus, app_run):
    assert app_run.labels == corpus.used()
    assert set(app_run.reasons) == set(corpus.skipped())
    assert app_run.table == app_run.reasons
    assert sorted(app_run.study.result.excluded_classes) == sorted(corpus.excluded_classes())


def test_app_leaves_every_input_file_unchanged(app_run):
    assert app_run.after == app_run.before


def test_app_on_an_empty_root_says_no_images_found(app_env, monkeypatch, tmp_path):
    root = build_empty_root(tmp_path / "empty")
    monkeypatch.setenv(ROOTS_ENV, str(tmp_path))
    before = badfiles.tree_fingerprint(root)
    at = load_server_folder(new_app(), root)
    assert [e.value for e in at.error] == [
        "No images found. Expected one subfolder per class with images inside."
    ]
    assert {m.label: m.value for m in at.metric}["Images"] == "0"
    assert "Run probe" not in [b.label for b in at.button]
    assert badfiles.tree_fingerprint(root) == before
