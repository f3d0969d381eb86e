#!/usr/bin/env bash
# The README's first command: install the package into a virtual environment (scripts/venv.sh: the active
# one, else ./.venv) and run the crash/resume demo on the file backend. Usage: bash scripts/demo.sh [demo options]
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/venv.sh
source scripts/venv.sh
persist_venv
"$PY" -m pip install --quiet --disable-pip-version-check -e .
exec "$(dirname "$PY")/backtest-persist" demo "$@"
