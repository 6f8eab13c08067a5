# PhotoBot. `make run` sets everything up and starts the bot; `make test` runs the checks.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The shared datasets sit beside the checkout in development and CI; override to point elsewhere.
PHOTOBOT_DATASETS ?= $(abspath ../shared/data)
export PHOTOBOT_DATASETS

.PHONY: install run test test-fast lint types format playground browser postgres nginx clean

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

# ruff first: it answers in a second, so a style slip fails before mypy's run.
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	@$(MAKE) --no-print-directory types

# mypy with pyproject.toml's [tool.mypy]: strict for inference/ and storage/. Its cache (.mypy_cache)
# keeps a re-run to the files that changed.
types: install
	$(BIN)/mypy bot inference storage training photobot benchmarks

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# The playground's browser test drives Debian's Chromium (Playwright cannot download a browser here).
browser:
	@command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ] || { \
		echo "installing Debian's chromium for the playground's browser test"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq --no-install-recommends chromium; }

# The storage tests run on SQLite and on a throwaway PostgreSQL server (benchmarks/postgres_server.py):
# install Debian's server binaries (initdb, pg_ctl) when missing. The tests fail, never skip, without them.
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || { \
		echo "installing Debian's postgresql for the storage tests"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq --no-install-recommends postgresql; }

# The webhook replica tests put several `photobot run` processes behind Debian's nginx, run unprivileged
# on a free port with a temporary config (benchmarks/nginx_server.py): install it when missing.
nginx:
	@command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || { \
		echo "installing Debian's nginx for the webhook replica tests"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq --no-install-recommends nginx; }

# Everything: lint, format check and the whole suite, real training and the browser included.
test: lint browser postgres nginx
	PYTHONDONTWRITEBYTECODE= $(BIN)/pytest -q

# The inner loop: lint, then every test that needs no real training, no browser, no Ray cluster and no
# whole `photobot` process or benchmark run (marked `process`: what they serve is tested in-process too),
# on TEST_WORKERS pytest-xdist workers, each test file on one worker so that a module's bot starts once.
# `make test` runs all of them, one at a time. Times: docs/performance.md.
# PYTHONDONTWRITEBYTECODE (set on some machines) would make every worker re-rewrite each test module's
# asserts and every spawned process compile our modules again: the test targets keep their bytecode.
TEST_WORKERS ?= 2
test-fast: lint postgres
	PYTHONDONTWRITEBYTECODE= $(BIN)/pytest -q -n $(TEST_WORKERS) --dist loadfile -m "not slow and not browser and not ray and not process"

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
