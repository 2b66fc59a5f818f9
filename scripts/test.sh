#!/usr/bin/env bash
# Installs everything the test suite needs (Debian's chromium for the browser tests,
# the package with its test extras) and runs the whole suite. Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null 2>&1; then
  as_root=""
  [ "$(id -u)" -eq 0 ] || as_root="sudo"
  $as_root apt-get update -q
  DEBIAN_FRONTEND=noninteractive $as_root apt-get install -y -q chromium
fi
python3 -m pip install -q -e ".[test]"
python3 -m pytest "$@"
