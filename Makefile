# The two commands of the README: `make run` (the embedded demo) and `make test` (the whole suite).
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test test-fast stop lint venv venv-dev services migrate clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "Python 3.11 is required, found " + sys.version.split()[0])'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed-base: requirements/base.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements/base.txt
	touch $@

$(VENV)/.installed-dev: requirements/base.txt requirements/prod.txt requirements/dev.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements/dev.txt
	touch $@ $(VENV)/.installed-base

venv: $(VENV)/.installed-base
venv-dev: $(VENV)/.installed-dev

## run: set up and run the embedded demo (SQLite, filesystem broker, worker + beat, dev server)
run: venv
	HOST=$(HOST) PORT=$(PORT) scripts/run-demo.sh

## test: set up and run the whole test suite against real PostgreSQL and Redis
test: venv-dev
	scripts/test.sh $(PYTEST_ARGS)

## test-fast: pytest on PostgreSQL only, test database kept between runs: make test-fast ARGS="-k usage -x"
test-fast: venv-dev
	scripts/test.sh --fast $(ARGS)

## stop: stop this checkout's test servers (its Redis; PostgreSQL unless another checkout uses it)
stop:
	scripts/services.sh stop

lint: venv-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) var db.sqlite3 db.sqlite3-* .pytest_cache test-output
