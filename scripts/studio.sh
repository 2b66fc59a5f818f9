#!/usr/bin/env bash
# Opens Probe Studio from a virtual environment of its own, so that it works where the system
# Python refuses `pip install` (PEP 668: Debian, Ubuntu). Nothing needs activating.
#
#   bash scripts/studio.sh [--cpu] [streamlit options, e.g. --server.port 8502]
#
# The first run creates .venv beside app.py (PROBE_STUDIO_VENV moves it) and installs the
# package into it: torch and its CUDA libraries, several GB. --cpu installs the CPU-only build
# of torch instead (from https://download.pytorch.org/whl/cpu, a few hundred MB). Later runs
# start the app straight away, offline; they install again only when pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${PROBE_STUDIO_VENV:-.venv}"
python="${PYTHON:-python3}"
cpu_index="https://download.pytorch.org/whl/cpu"
variant="default"
if [ "${1:-}" = "--cpu" ]; then
  variant="cpu"
  shift
fi

if [ ! -x "$venv/bin/python" ]; then
  echo "Creating a virtual environment in $venv ..."
  if ! "$python" -m venv "$venv"; then
    rm -rf "$venv"
    echo "Could not create a virtual environment with $python." >&2
    echo "On Debian or Ubuntu, install the venv module first: sudo apt install python3-venv" >&2
    exit 1
  fi
fi

stamp="$venv/.probe-studio-installed"
digest='import hashlib; print(hashlib.sha256(open("pyproject.toml", "rb").read()).hexdigest())'
wanted="$("$venv/bin/python" -c "$digest") $variant"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$wanted" ]; then
  if [ "$variant" = "cpu" ]; then
    echo "Installing the CPU-only build of torch into $venv ..."
    # --force-reinstall: replaces a CUDA build that an earlier run installed
    "$venv/bin/python" -m pip install --force-reinstall --index-url "$cpu_index" torch torchvision
  else
    echo "Installing Probe Studio into $venv (the first time: torch with its CUDA libraries," \
      "several GB; 'bash scripts/studio.sh --cpu' takes the CPU-only build instead) ..."
  fi
  "$venv/bin/python" -m pip install -e .
  echo "$wanted" >"$stamp"
fi

exec "$venv/bin/python" -m streamlit run app.py "$@"
