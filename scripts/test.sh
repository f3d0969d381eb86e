#!/usr/bin/env bash
# The whole test suite, as CI runs it: install the package with every extra into a virtual environment
# (scripts/venv.sh), start the test servers, then lint, type-check and test.
# Usage: bash scripts/test.sh [extra pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."

# A virtual environment (the active one, else ./.venv): the system Python may be externally managed (PEP 668).
# shellcheck source=scripts/venv.sh
source scripts/venv.sh
persist_venv
"$PY" -m pip install --quiet --disable-pip-version-check -e ".[dev]"

bash scripts/services.sh up
eval "$(bash scripts/services.sh env)"
# mysqlclient (optional driver of bare mysql:// URLs) builds against libmariadb-dev, which services.sh installs.
"$PY" -m pip install --quiet --disable-pip-version-check "mysqlclient>=2.2"

echo "== ruff"
"$PY" -m ruff check .
"$PY" -m ruff format --check .
echo "== mypy (strict)"
"$PY" -m mypy
echo "== pytest"
"$PY" -m pytest --hypothesis-profile=ci -p no:cacheprovider --durations=25 "$@"
