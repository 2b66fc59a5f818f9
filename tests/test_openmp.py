"""Entry points let OpenMP's idle threads sleep, set up before torch loads, and a user's own
OpenMP settings win."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import probe_core
from probe_core.openmp import SPIN_COUNT, let_idle_threads_sleep


@pytest.fixture
def before_torch(monkeypatch):
    """A process as an entry point sees it: torch not yet imported, no OpenMP settings."""
    monkeypatch.delitem(sys.modules, "torch")
    for name in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY"):
        monkeypatch.delenv(name, raising=False)


def test_before_torch_loads_the_spin_count_is_set(before_torch):
    assert let_idle_threads_sleep()
    assert os.environ["GOMP_SPINCOUNT"] == str(SPIN_COUNT)


@pytest.mark.parametrize("name, value", [("GOMP_SPINCOUNT", "123"), ("OMP_WAIT_POLICY", "ACTIVE")])
def test_a_users_own_setting_is_kept(before_torch, monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    assert not let_idle_threads_sleep()
    assert os.environ[name] == value
    if name != "GOMP_SPINCOUNT":
        assert "GOMP_SPINCOUNT" not in os.environ


def test_once_torch_is_loaded_nothing_changes(monkeypatch):
    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert "torch" in sys.modules
    assert not let_idle_threads_sleep()
    assert "GOMP_SPINCOUNT" not in os.environ


def test_the_cli_sets_it_up_before_its_imports_load_torch():
    script = (
        "import os, sys\n"
        "import probe_core, probe_core.openmp\n"
        "assert 'torch' not in sys.modules, 'importing the package loaded torch'\n"
        "import probe_core.cli\n"
        "assert 'torch' in sys.modules\n"
        "print(os.environ.get('GOMP_SPINCOUNT'))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    run = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == str(SPIN_COUNT)


def test_every_public_name_of_the_package_loads_on_first_use():
    for name in probe_core.__all__:
        assert getattr(probe_core, name) is not None
    assert "Study" in dir(probe_core)
    with pytest.raises(AttributeError, match="no_such_name"):
        probe_core.no_such_name  # noqa: B018
