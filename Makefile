.PHONY: demo test services services-stop bench lint

demo:           ## the crash/resume demo on the file backend (in a virtual environment: scripts/venv.sh)
	bash scripts/demo.sh

test:           ## the whole suite, servers included (what CI runs)
	bash scripts/test.sh

services:       ## install what is missing and start the test servers
	bash scripts/services.sh up

services-stop:
	bash scripts/services.sh stop

# The virtual environment that scripts/demo.sh and scripts/test.sh create (scripts/venv.sh).
PY ?= .venv/bin/python

bench:
	$(dir $(PY))backtest-persist bench

lint:
	$(PY) -m ruff check . && $(PY) -m ruff format --check . && $(PY) -m mypy
