# Two entry points do all the set-up on a fresh machine:
#   make demo   - create .venv, install braidflow and what the examples use, run
#                 the showcase: an LLM pipeline over a local website, one page at a
#                 time, then concurrently within an API quota, then killed and resumed
#                 (progress on a terminal; DEMO_ARGS="--out DIR" keeps its files)
#   make test   - create .venv, install dev tools, run lint, type check and the tests
#                 (which build the documentation site, strict, and check its links)
# Also: make examples (every example), make docs (the site, into site/), make package
# (the sdist and the wheel, into dist/), make bench, make bench-ui (the dashboard on a
# store of 10,000 runs),
# make bench-peers (braidflow against PocketFlow, LangGraph, LlamaIndex, pydantic-graph).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The tests run in this many processes (pytest-xdist), a test file to a process, so
# the files that start Ray or chromium start it once; 0 runs them all in one process.
TEST_WORKERS ?= 2

.PHONY: demo examples test lint typecheck unit docs package bench bench-ui bench-peers bench-peers-smoke clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[examples]'
	touch $@

# The dev tools' bytecode is written by compileall on every core at once, not by pip
# one file after another: the same files, in half the time on 2 cores.
$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --no-compile -e '.[dev]'
	$(BIN)/python -m compileall -q -j 0 "$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')"
	touch $@

$(VENV)/.installed-docs: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[docs]'
	touch $@

$(VENV)/.installed-package: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[package]'
	touch $@

$(VENV)/.installed-bench: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	touch $@

DEMO_ARGS ?=

demo: $(VENV)/.installed
	$(BIN)/python examples/showcase.py $(DEMO_ARGS)

examples: $(VENV)/.installed
	$(BIN)/python examples/run_all.py

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests examples bench docs
	$(BIN)/ruff format --check src tests examples bench docs

typecheck: $(VENV)/.installed-dev
	$(BIN)/mypy

# compileall first: where PYTHONDONTWRITEBYTECODE is set, nothing else writes the
# bytecode of braidflow's own (editable) source, and each of the hundreds of Python
# processes the tests start would compile it again.
unit: $(VENV)/.installed-dev
	$(BIN)/python -m compileall -q src examples
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile

docs: $(VENV)/.installed-docs
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet
	@echo "The documentation site is in $(CURDIR)/site/"
	@echo "Open it in a browser, no server needed: file://$(CURDIR)/site/index.html"

# Lint first (a second), then the type check beside the tests: they leave a core idle
# at times (waiting on the processes they start, on chromium, on Ray).
OUTPUT_SYNC := $(if $(filter output-sync,$(.FEATURES)),--output-sync=line)
test: lint
	@$(MAKE) --no-print-directory -j 2 $(OUTPUT_SYNC) typecheck unit

# The sdist and the wheel, built in an isolated environment as a release would be,
# into dist/, and their metadata checked (tests/test_packaging.py installs and runs one).
package: $(VENV)/.installed-package
	rm -rf dist
	$(BIN)/python -m build --outdir dist .
	$(BIN)/twine check --strict dist/*

bench: $(VENV)/.installed-bench
	$(BIN)/python bench/run.py

bench-ui: $(VENV)/.installed-dev
	$(BIN)/python bench/ui.py

# The peers, pinned, in an environment of their own (see bench/peers/run.py).
.venv-peers/.installed: pyproject.toml
	$(PYTHON) -m venv .venv-peers
	.venv-peers/bin/python -m pip install --quiet --upgrade pip
	.venv-peers/bin/python -m pip install --quiet -e '.[peers]'
	touch $@

bench-peers: .venv-peers/.installed
	.venv-peers/bin/python bench/peers/run.py --docs

# Every library's workloads at tiny sizes, the peers included: a check, not figures
# (make test runs the harness with braidflow and PocketFlow only).
bench-peers-smoke: .venv-peers/.installed
	.venv-peers/bin/python bench/peers/run.py --smoke

clean:
	rm -rf $(VENV) .venv-peers .pytest_cache .mypy_cache .ruff_cache site dist
