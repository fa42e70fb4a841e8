# Two entry points do all the set-up on a fresh machine:
#   make demo     - create .venv, install braidflow and what the examples use, run
#                   the showcase: an LLM pipeline over a local website, one page at a
#                   time, then concurrently within an API quota, then killed and resumed
#                   (progress on a terminal; DEMO_ARGS="--out DIR" keeps its files)
#   make test     - the quick tier, the one to run often (about a minute from a fresh
#                   clone on 2 cores, .venv included): create .venv, install the test
#                   tools (the `test` extra), run lint, the type check and the ~2,400
#                   tests that need no service and take under half a second each
#   make test-all - everything, what CI runs (about 6 minutes): make test, then
#                   make test-rest: the `dev` extra and the ~250 other tests (marked
#                   slow, postgres, ray, browser or packaging in pyproject.toml): crash
#                   and kill loops, PostgreSQL, Ray, chromium, the documentation site
#                   built strict with its links checked, the examples, the wheel
# Also: make examples (every example), make docs (the site, into site/), make package
# (the sdist and the wheel, into dist/), make bench, make bench-ui (the dashboard on a
# store of 10,000 runs),
# make bench-peers (braidflow against PocketFlow, LangGraph, LlamaIndex, pydantic-graph).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo examples test test-all test-rest test-quick lint typecheck docs package bench bench-ui bench-peers bench-peers-smoke clean

# The venv gets pip and uv from this Python's own pip (pip --python, pip 22.3 and later;
# ensurepip would install an older pip and compile it, only for it to be replaced), then
# everything else from uv, which installs make test's 50 packages in 3 s where pip takes
# 12 (it resolves and fetches in parallel, and keeps what it fetched: ~/.cache/uv).
$(BIN)/python:
	$(PYTHON) -m venv --without-pip $(VENV)
	$(PYTHON) -m pip --python $(BIN)/python install --quiet --no-compile --upgrade pip uv \
	  || { $(BIN)/python -m ensurepip && $(BIN)/python -m pip install --quiet --upgrade pip uv; }

# A .venv made before uv was used gets it the same way.
$(BIN)/uv: | $(BIN)/python
	$(PYTHON) -m pip --python $(BIN)/python install --quiet --no-compile uv \
	  || $(BIN)/python -m pip install --quiet uv

INSTALL = $(BIN)/uv pip install --quiet --python $(BIN)/python

$(VENV)/.installed: pyproject.toml | $(BIN)/uv
	$(INSTALL) -e '.[examples]'
	touch $@

# make test's tools, without their bytecode: where PYTHONDONTWRITEBYTECODE is set, each
# test process compiles what it imports, in less time than compiling all of them.
$(VENV)/.installed-test: pyproject.toml | $(BIN)/uv
	$(INSTALL) -e '.[test]'
	touch $@

# The rest, with its bytecode (written on every core at once): the tests of
# make test-rest start hundreds of Python processes (Ray's, the examples').
$(VENV)/.installed-dev: pyproject.toml $(VENV)/.installed-test
	$(INSTALL) --compile-bytecode -e '.[dev]'
	touch $@

$(VENV)/.installed-docs: pyproject.toml | $(BIN)/uv
	$(INSTALL) -e '.[docs]'
	touch $@

$(VENV)/.installed-package: pyproject.toml | $(BIN)/uv
	$(INSTALL) -e '.[package]'
	touch $@

$(VENV)/.installed-bench: pyproject.toml | $(BIN)/uv
	$(INSTALL) -e '.[bench]'
	touch $@

DEMO_ARGS ?=

demo: $(VENV)/.installed
	$(BIN)/python examples/showcase.py $(DEMO_ARGS)

examples: $(VENV)/.installed
	$(BIN)/python examples/run_all.py

lint: $(VENV)/.installed-test
	$(BIN)/ruff check src tests examples bench docs
	$(BIN)/ruff format --check src tests examples bench docs

typecheck: $(VENV)/.installed-test
	$(BIN)/mypy

docs: $(VENV)/.installed-docs
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet
	@echo "The documentation site is in $(CURDIR)/site/"
	@echo "Open it in a browser, no server needed: file://$(CURDIR)/site/index.html"

# The tests run in this many processes (pytest-xdist); 0 runs them all in one process.
TEST_WORKERS ?= 2
# The quick tier: the tests with none of the markers of pyproject.toml. make test-rest
# runs exactly the others, so make test-all runs each test once.
QUICK = not slow and not postgres and not ray and not browser and not packaging

# Lint first (a second), then the type check beside the quick tests. compileall first:
# where PYTHONDONTWRITEBYTECODE is set, nothing else writes the bytecode of braidflow's
# own (editable) source, and each Python process the tests start would compile it again.
OUTPUT_SYNC := $(if $(filter output-sync,$(.FEATURES)),--output-sync=line)
test: lint
	@$(MAKE) --no-print-directory -j 2 $(OUTPUT_SYNC) typecheck test-quick

test-quick: $(VENV)/.installed-test
	$(BIN)/python -m compileall -q -j 0 src
	$(BIN)/pytest -n $(TEST_WORKERS) -m '$(QUICK)'

# A test file to a process (--dist loadfile), so the files that start Ray, chromium or
# PostgreSQL start it once.
test-rest: $(VENV)/.installed-dev
	$(BIN)/python -m compileall -q -j 0 src examples
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile -m 'not ($(QUICK))'

test-all:
	@$(MAKE) --no-print-directory test
	@$(MAKE) --no-print-directory test-rest

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
