#!/usr/bin/env bash
# The whole test suite, as CI runs it: install the package with every extra, start the test servers,
# then lint, type-check and test. Usage: bash scripts/test.sh [extra pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m pip install --quiet --disable-pip-version-check -e ".[dev]"

bash scripts/services.sh up
eval "$(bash scripts/services.sh env)"
# mysqlclient (optional driver of bare mysql:// URLs) builds against libmariadb-dev, which services.sh installs.
python3 -m pip install --quiet --disable-pip-version-check "mysqlclient>=2.2"

echo "== ruff"
python3 -m ruff check .
python3 -m ruff format --check .
echo "== mypy (strict)"
python3 -m mypy
echo "== pytest"
python3 -m pytest --hypothesis-profile=ci -p no:cacheprovider --durations=25 "$@"
