# PhotoBot. `make run` sets everything up and starts the bot; `make test` runs the checks.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The shared datasets sit beside the checkout in development and CI; override to point elsewhere.
PHOTOBOT_DATASETS ?= $(abspath ../shared/data)
export PHOTOBOT_DATASETS

.PHONY: install run test lint format playground clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

run: install
	$(BIN)/photobot run --playground-without-token

playground: install
	$(BIN)/photobot playground

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: lint
	$(BIN)/pytest -q

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
