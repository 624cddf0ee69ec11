# ICU Monitor. Two commands from a fresh clone: `make run` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

.PHONY: help install run test bench lint format audit clean postgresql-binaries browser vendor

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

# The venv is rebuilt when a requirements file changes. Debian's python3 needs python3-venv
# for `-m venv`; installed here when missing (CI and fresh machines run as root).
$(INSTALLED): requirements.txt requirements-dev.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is needed"'
	@$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || { \
		echo "Installing python3-venv (Debian)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv; }
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@touch $@

# A development .env (DEBUG on, a random SECRET_KEY) so that `manage.py` works on its own too.
# Never overwritten; delete it to get a new one.
.env:
	@printf 'DEBUG=true\nSECRET_KEY=%s\n# Logs for a terminal; production and the tests use json.\nLOG_FORMAT=text\n' "$$($(PYTHON) -c 'import secrets; print(secrets.token_urlsafe(50))')" > $@
	@echo "Wrote a development .env (DEBUG=true, random SECRET_KEY, LOG_FORMAT=text)"

install: $(INSTALLED) .env ## Create .venv and install the pinned dependencies

# RUN_ARGS: run_dev's options, e.g. make run RUN_ARGS="--port 8001" (see README, Two commands).
run: install ## Migrate, then run broker, consumer, 3 emulated patients and the web server
	$(PY) manage.py migrate --noinput
	@mkdir -p var/static  # STATIC_ROOT: WhiteNoise warns when it is missing
	$(PY) manage.py run_dev $(RUN_ARGS)

lint: $(INSTALLED) ## ruff lint and format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(INSTALLED) ## Format and autofix with ruff
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# The suite runs twice: on SQLite, then on PostgreSQL, a throwaway server the tests start
# themselves (testing/fixtures.py). Debian's server binaries are installed when missing; the Debian
# cluster service is not used. DATABASE_URL is unset: a developer's server is never touched.
test: $(INSTALLED) lint postgresql-binaries browser ## Lint, check migrations, run the suite on SQLite and on PostgreSQL
	env -u DATABASE_URL ICU_TEST_DB_ENGINE=sqlite DJANGO_SETTINGS_MODULE=icu.settings_test \
		$(PY) manage.py makemigrations --check --dry-run
	env -u DATABASE_URL ICU_TEST_DB_ENGINE=sqlite $(PY) -m pytest
	env -u DATABASE_URL ICU_TEST_DB_ENGINE=postgresql $(PY) -m pytest

# Not part of `make test`: 10-15 minutes on 2 cores, and what it measures is speed, which a noisy
# shared machine makes vary; each figure is a ratio against a reference measured in the same run.
bench: $(INSTALLED) postgresql-binaries ## Benchmarks: a table of figures and bench/results/latest.json
	env -u DATABASE_URL $(PY) -m bench $(BENCH_ARGS)

postgresql-binaries:
	@ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || { \
		echo "Installing the PostgreSQL server binaries (Debian)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql; }

# The central station's browser tests (ward/tests) drive Debian's headless Chromium through
# its chromedriver, installed when missing.
browser:
	@test -x /usr/bin/chromium -a -x /usr/bin/chromedriver || { \
		echo "Installing Chromium and its driver for the browser tests (Debian)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium chromium-driver; }

# uPlot, the central station's charts, is committed under ward/static (with its licence): running
# the project needs no Node and no CDN. This re-fetches the pinned version from the npm registry
# (npm checks the tarball against the registry's integrity hash); change UPLOT_VERSION to update.
UPLOT_VERSION := 1.6.32
UPLOT_DIR := ward/static/ward/vendor/uplot
vendor: ## Re-fetch the vendored uPlot (UPLOT_VERSION) from the npm registry
	@command -v npm >/dev/null || { echo "make vendor needs npm (apt-get install npm)"; exit 1; }
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
		(cd "$$tmp" && npm pack --silent uplot@$(UPLOT_VERSION) >/dev/null) && \
		tar -xzf "$$tmp/uplot-$(UPLOT_VERSION).tgz" -C "$$tmp" && \
		mkdir -p $(UPLOT_DIR) && \
		cp "$$tmp/package/dist/uPlot.esm.js" "$$tmp/package/dist/uPlot.min.css" \
			"$$tmp/package/LICENSE" $(UPLOT_DIR)/ && \
		printf 'uplot %s from the npm registry, %s\n' $(UPLOT_VERSION) \
			"$$(npm view --silent uplot@$(UPLOT_VERSION) dist.integrity)" > $(UPLOT_DIR)/VERSION
	@cat $(UPLOT_DIR)/VERSION

# Known vulnerabilities of every pinned requirement, from PyPI's vulnerability data (the JSON API
# of each release). Strict: a package that cannot be looked up fails the audit too. Not part of
# `make test`: it needs that API, which a registry mirror may not serve.
audit: $(INSTALLED) ## pip-audit the pinned requirements (runtime and dev)
	$(VENV)/bin/pip-audit --strict --no-deps --disable-pip --progress-spinner off \
		-r requirements.txt -r requirements-dev.txt

clean: ## Remove the venv, caches, the local SQLite database and its export files
	rm -rf $(VENV) .pytest_cache .ruff_cache db.sqlite3 db.sqlite3-wal db.sqlite3-shm db.sqlite3.migrate-lock var/media
