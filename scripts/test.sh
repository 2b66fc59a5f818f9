#!/usr/bin/env bash
# Installs everything the test suite needs (Debian's chromium for the browser tests,
# the package with its test extras) and runs the whole suite. Extra args go to pytest.
# Where the system Python refuses `pip install` (PEP 668: Debian, Ubuntu), the package goes
# into .venv (PROBE_STUDIO_VENV moves it), as scripts/studio.sh does; elsewhere (CI's pyenv
# Python, an activated virtual environment) into the Python that runs python3.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null 2>&1; then
  as_root=""
  [ "$(id -u)" -eq 0 ] || as_root="sudo"
  $as_root apt-get update -q
  DEBIAN_FRONTEND=noninteractive $as_root apt-get install -y -q chromium
fi
python="${PYTHON:-python3}"
if "$python" -c 'import os, sys, sysconfig
managed = os.path.isfile(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED"))
sys.exit(0 if managed and sys.prefix == sys.base_prefix else 1)'; then
  venv="${PROBE_STUDIO_VENV:-.venv}"
  [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
  python="$venv/bin/python"
fi
"$python" -m pip install -q -e ".[test]"
"$python" -m pytest "$@"
