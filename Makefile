.PHONY: demo test services services-stop bench lint

demo:           ## the crash/resume demo on the file backend
	python3 -m pip install --quiet -e . && backtest-persist demo

test:           ## the whole suite, servers included (what CI runs)
	bash scripts/test.sh

services:       ## install what is missing and start the test servers
	bash scripts/services.sh up

services-stop:
	bash scripts/services.sh stop

bench:
	backtest-persist bench

lint:
	python3 -m ruff check . && python3 -m ruff format --check . && python3 -m mypy
