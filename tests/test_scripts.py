"""The README's Quick start: its two commands exist, CI runs exactly the test command, and the
app command makes and uses a virtual environment of its own (driven here with a stand-in
``python3`` that records what it is asked to do, so nothing is installed)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"


def quick_start_commands() -> list[str]:
    """The shell blocks of the README's Quick start section, in order."""
    section = README.read_text().split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", section, re.S)]


def test_the_quick_start_has_an_app_command_and_a_test_command_that_exist():
    app_command, test_command = quick_start_commands()
    assert shlex.split(app_command) == ["bash", "scripts/studio.sh"]
    assert shlex.split(test_command) == ["bash", "scripts/test.sh"]
    for command in (app_command, test_command):
        script = REPO / shlex.split(command)[1]
        assert script.is_file()
        check = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert check.returncode == 0, check.stderr


def test_ci_runs_exactly_the_readmes_test_command():
    _, test_command = quick_start_commands()
    lines = [
        line.strip()
        for line in (REPO / ".ci" / "run").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert lines[-1] == test_command
    assert not any("pip install" in line for line in lines)  # installing is test.sh's job


def test_the_readme_says_what_the_install_downloads_and_how_to_get_the_cpu_build():
    section = README.read_text().split("## Quick start", 1)[1].split("\n## ", 1)[0]
    assert "several GB" in section
    assert "bash scripts/studio.sh --cpu" in section
    assert "https://download.pytorch.org/whl/cpu" in section
    assert "python3-venv" in section


# --- scripts/studio.sh with a stand-in python3 -------------------------------------------------

STAND_IN = """#!/usr/bin/env bash
# python3 stand-in: records each call; `-m venv DIR` makes DIR/bin/python (this stand-in),
# `-c CODE` runs in the real Python, everything else succeeds without doing anything.
echo "$(basename "$0") $*" >> "$STAND_IN_LOG"
if [ "$1" = "-m" ] && [ "$2" = "venv" ]; then
  [ -z "${STAND_IN_NO_VENV:-}" ] || { echo "ensurepip is not available" >&2; exit 1; }
  mkdir -p "$3/bin" && cp "$0" "$3/bin/python" && exit 0
fi
[ "$1" = "-c" ] && exec REAL_PYTHON "$@"
exit 0
"""


@pytest.fixture
def studio(tmp_path):
    """Runs scripts/studio.sh with the stand-in python3 and .venv in tmp; returns
    (run(*args) -> CompletedProcess, the call log, the venv folder)."""
    stand_in = tmp_path / "bin" / "python3"
    stand_in.parent.mkdir()
    stand_in.write_text(STAND_IN.replace("REAL_PYTHON", sys.executable))
    stand_in.chmod(0o755)
    log, venv = tmp_path / "calls.log", tmp_path / "venv"

    def run(*args: str, **env: str) -> subprocess.CompletedProcess:
        log.write_text("")
        environment = {
            **os.environ,
            "PYTHON": str(stand_in),
            "PROBE_STUDIO_VENV": str(venv),
            "STAND_IN_LOG": str(log),
            **env,
        }
        return subprocess.run(
            ["bash", str(REPO / "scripts" / "studio.sh"), *args],
            env=environment,
            capture_output=True,
            text=True,
            timeout=60,
        )

    return run, log, venv


def calls(log: Path) -> list[str]:
    """The recorded calls, without the script's own hashing of pyproject.toml."""
    return [line for line in log.read_text().splitlines() if " -c " not in f" {line} "]


def test_the_first_run_makes_the_venv_installs_into_it_and_starts_the_app_from_it(studio):
    run, log, venv = studio
    done = run("--server.port", "8599")
    assert done.returncode == 0, done.stderr
    assert calls(log) == [
        f"python3 -m venv {venv}",
        "python -m pip install -e .",
        "python -m streamlit run app.py --server.port 8599",
    ]
    assert "several GB" in done.stdout and "--cpu" in done.stdout


def test_later_runs_install_nothing_so_they_work_offline(studio):
    run, log, _ = studio
    assert run().returncode == 0
    done = run()
    assert done.returncode == 0, done.stderr
    assert calls(log) == ["python -m streamlit run app.py"]


def test_a_changed_pyproject_installs_again(studio):
    run, log, venv = studio
    assert run().returncode == 0
    (venv / ".probe-studio-installed").write_text("an older pyproject.toml default\n")
    assert run().returncode == 0
    assert "python -m pip install -e ." in calls(log)


def test_cpu_installs_the_cpu_only_torch_before_the_package(studio):
    run, log, _ = studio
    done = run("--cpu", "--server.port", "8599")
    assert done.returncode == 0, done.stderr
    assert calls(log)[1:] == [
        "python -m pip install --force-reinstall --index-url"
        " https://download.pytorch.org/whl/cpu torch torchvision",
        "python -m pip install -e .",
        "python -m streamlit run app.py --server.port 8599",
    ]


def test_without_the_venv_module_it_says_which_package_to_install(studio):
    run, log, venv = studio
    done = run(STAND_IN_NO_VENV="1")
    assert done.returncode == 1
    assert "sudo apt install python3-venv" in done.stderr
    assert not venv.exists()
    assert not any("streamlit" in call for call in calls(log))
