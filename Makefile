# Covey: `make demo` and `make test` bootstrap everything they need on a fresh machine.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.covey-installed
NODE_STAMP := node_modules/.covey-installed
# Flower (the alliance's scale-out path) lives in a venv inside .venv: flwr 1.42 pins older typer, rich,
# fastapi and uvicorn than Covey's (requirements/flower.in names its version).
FLOWER_VENV := $(VENV)/flower
LOCKS := requirements/bootstrap.lock.txt requirements/covey.lock.txt requirements/nodeps.lock.txt
UV := $(VENV)/bin/uv
UV_PIP := UV_PYTHON_DOWNLOADS=never $(UV) pip
# torch's CPU build (2.13.0+cpu, in the lock) is not on PyPI: it comes from pip's find-links (/opt/wheels here).
FIND_LINKS ?= $(or $(PIP_FIND_LINKS),$(shell $(PYTHON) -m pip config get global.find-links 2>/dev/null))
UV_FLAGS := --quiet --require-hashes $(if $(FIND_LINKS),--find-links $(FIND_LINKS))
FLOWER_STAMP := $(FLOWER_VENV)/.covey-installed
# Tests mostly wait on nodes, servers and subprocesses: two workers keep a 2-core machine busy.
TEST_WORKERS ?= 2
PYTEST := $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=15

.PHONY: all bootstrap browser demo test test-fast bench lint lock lock-check clean

all: test

# Every install comes from a committed, hash-pinned lock (requirements/*.lock.txt, described in scripts/locks.py;
# `make lock` re-resolves them). The venv's own pip installs uv from its lock; uv installs the rest.
$(STAMP): pyproject.toml $(LOCKS)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@test -x $(UV) || $(PY) -m pip install --quiet --require-hashes --no-deps -r requirements/bootstrap.lock.txt
	$(UV_PIP) sync $(UV_FLAGS) --python $(PY) requirements/covey.lock.txt
	$(UV_PIP) install $(UV_FLAGS) --python $(PY) --no-deps -r requirements/nodeps.lock.txt
	# covey itself: nothing to resolve (all locked above), built by the locked setuptools.
	$(UV_PIP) install --quiet --python $(PY) --no-deps --no-build-isolation -e .
	$(PY) scripts/locks.py check
	@touch $(STAMP)

# Flower's own packages live here; covey and torch come from .venv, seen through a .pth file after them.
$(FLOWER_STAMP): $(STAMP) requirements/flower.lock.txt
	rm -rf $(FLOWER_VENV)
	$(PYTHON) -m venv --without-pip $(FLOWER_VENV)
	echo "import site; site.addsitedir('$$($(PY) -c 'import sysconfig; print(sysconfig.get_path("purelib"))')')" \
		> "$$($(FLOWER_VENV)/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')/covey-main-venv.pth"
	$(UV_PIP) install $(UV_FLAGS) --python $(FLOWER_VENV)/bin/python --no-deps -r requirements/flower.lock.txt
	$(FLOWER_VENV)/bin/python -c 'import flwr, covey.alliance, torch'
	@touch $(FLOWER_STAMP)

$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch $(NODE_STAMP)

bootstrap: $(STAMP) $(FLOWER_STAMP) $(NODE_STAMP)

# Debian's Chromium for the explorer's browser tests (Playwright cannot download browsers here).
browser:
	bash scripts/install-browser.sh

# The demo needs no Flower venv, so a fresh machine reaches it sooner.
demo: $(STAMP) $(NODE_STAMP)
	$(VENV)/bin/covey demo

test: bootstrap browser
	$(PYTEST)

test-fast: bootstrap browser
	$(PYTEST) -m "not e2e"

bench: bootstrap browser
	@for script in bench/*.py; do echo "== $$script"; $(PY) $$script || exit 1; done

lint: bootstrap lock-check
	$(VENV)/bin/ruff check covey tests bench
	$(VENV)/bin/ruff format --check covey tests bench
	$(VENV)/bin/mypy covey

# Re-resolve every lock from pyproject.toml, requirements/flower.in and requirements/nodeps.in (needs the registry).
# The committed lock installs pip-tools, even when pyproject.toml has moved on from it.
lock:
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@test -x $(UV) || $(PY) -m pip install --quiet --require-hashes --no-deps -r requirements/bootstrap.lock.txt
	$(UV_PIP) install $(UV_FLAGS) --python $(PY) -r requirements/covey.lock.txt
	$(PY) scripts/locks.py compile

# Fails when pyproject.toml and the locks disagree (also run by every bootstrap and by the test suite).
lock-check: $(STAMP)
	$(PY) scripts/locks.py check

clean:
	rm -rf $(VENV) node_modules .pytest_cache .mypy_cache .ruff_cache
