# Two commands: `make demo` and `make test`. Each sets up everything it needs
# on a clean machine (virtualenv, npm packages, Chromium, configurable-http-proxy).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TOOLS := build/tools
CHP := $(TOOLS)/node_modules/.bin/configurable-http-proxy
PYTEST_ARGS ?=

export PATH := $(CURDIR)/$(TOOLS)/node_modules/.bin:$(CURDIR)/$(BIN):$(PATH)
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: all demo test test-server test-ui test-floor lint format install labextension chromium chp bench bench-tools clean

all: test

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# the package (its build runs npm for the labextension) with test and bench extras
LABEXT_LINK := $(VENV)/share/jupyter/labextensions/jupyter-lims-bridge

# A reinstall must not write its shared data (install.json) through the link that
# `jupyter-builder develop` made to the build output: drop the link first
# (.stamp-labextension makes it again).
.stamp-install: $(BIN)/python pyproject.toml
	if [ -L $(LABEXT_LINK) ]; then rm $(LABEXT_LINK); fi
	$(BIN)/python -m pip install -q -e ".[test,bench]"
	rm -f .stamp-labextension
	touch $@

install: .stamp-install

# The JupyterLab panel. `pip install -e` builds it the first time; this rebuilds it
# when its sources change and links the environment's copy to the build
# (`jupyter-builder develop`), so tests and the demo never see a stale panel.
LABEXT_OUT := jupyter_lims_bridge/labextension/static/style.js
LABEXT_SRC := $(wildcard labextension/src/*.ts labextension/src/*/*.ts labextension/src/*/*.tsx \
                         labextension/style/* labextension/schema/*) \
              labextension/package.json labextension/package-lock.json

$(LABEXT_OUT): $(LABEXT_SRC)
	cd labextension && npm install --no-audit --no-fund && npm run build:prod

.stamp-labextension: .stamp-install $(LABEXT_OUT)
	$(BIN)/jupyter-builder develop --overwrite . >/dev/null
	touch $@

labextension: .stamp-labextension

# configurable-http-proxy for the JupyterHub end-to-end tests
$(CHP):
	mkdir -p $(TOOLS)
	npm install --silent --no-audit --no-fund --prefix $(TOOLS) configurable-http-proxy@^5

chp: $(CHP)

# Debian's Chromium for the browser tests (Playwright drives it; no browser download)
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

# The demo needs the package, JupyterLab and the panel: the demo extra, not the test
# and bench extras (a venv that already has them, from make install, is reused as is).
.stamp-demo: $(BIN)/python pyproject.toml
	if [ -L $(LABEXT_LINK) ]; then rm $(LABEXT_LINK); fi
	if [ -f .stamp-install ] && [ .stamp-install -nt pyproject.toml ]; then :; else \
	  $(BIN)/python -m pip install -q -e ".[demo]"; fi
	rm -f .stamp-labextension
	touch $@

demo: .stamp-demo $(LABEXT_OUT)
	$(BIN)/jupyter-builder develop --overwrite . >/dev/null
	$(BIN)/jupyter lims-bridge demo

# ruff (lint + format) for Python, ESLint + Prettier for the panel; `make format` fixes
lint: install labextension
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	cd labextension && npm run --silent lint:check

format: install labextension
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .
	cd labextension && npm run --silent lint

test: lint chp chromium
	$(BIN)/python -m pytest tests --ignore=tests/ui $(PYTEST_ARGS)
	$(BIN)/python -m pytest tests/ui $(PYTEST_ARGS)
	$(MAKE) --no-print-directory test-floor

# The floor job: a second virtualenv holding the lowest PyJWT, tornado and
# jupyter_server that pyproject.toml allows (pinned in tests/floor-constraints.txt),
# and the server tests that exercise them (about half a minute once installed).
FLOOR_VENV := .venv-floor
FLOOR_BIN := $(FLOOR_VENV)/bin
FLOOR_TESTS := tests/test_claims.py tests/test_open_api.py tests/test_open_page.py \
               tests/test_proxy_tokens.py tests/test_proxy.py tests/test_tunnel.py tests/test_statefile.py

$(FLOOR_BIN)/python:
	$(PYTHON) -m venv $(FLOOR_VENV)
	$(FLOOR_BIN)/python -m pip install -q --upgrade pip

# after .stamp-install: the labextension is built, so this editable build skips npm
.stamp-floor: $(FLOOR_BIN)/python .stamp-install pyproject.toml tests/floor-constraints.txt
	$(FLOOR_BIN)/python -m pip install -q -c tests/floor-constraints.txt -e . \
	    "pytest>=8" "pytest-jupyter[server]>=0.10" pytest-timeout
	$(FLOOR_BIN)/python tests/support/floor_check.py
	touch $@

test-floor: .stamp-floor
	$(FLOOR_BIN)/python tests/support/floor_check.py
	$(FLOOR_BIN)/python -m pytest $(FLOOR_TESTS) $(PYTEST_ARGS)

test-server: install
	$(BIN)/python -m pytest tests --ignore=tests/ui --ignore=tests/e2e $(PYTEST_ARGS)

test-ui: install labextension chromium
	$(BIN)/python -m pytest tests/ui $(PYTEST_ARGS)

# wrk and curl load the proxy benchmark; jupyter-server-proxy (a dependency) and
# configurable-http-proxy (make chp) are its anchors
bench-tools:
	@command -v wrk >/dev/null 2>&1 && command -v curl >/dev/null 2>&1 || { \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk curl >/dev/null; }

bench: install bench-tools chp
	$(BIN)/python bench/open.py
	$(BIN)/python bench/staging.py
	$(BIN)/python bench/proxy.py
	$(BIN)/python bench/proxy_load.py

clean:
	rm -rf $(VENV) $(FLOOR_VENV) build .stamp-install .stamp-demo .stamp-labextension .stamp-floor labextension/node_modules labextension/lib jupyter_lims_bridge/labextension
