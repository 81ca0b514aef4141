# Two commands for a newcomer: `make demo` and `make test`. Everything else is set up here.
.DEFAULT_GOAL := help
SHELL := /bin/bash

VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_WORKERS ?= auto

.PHONY: help demo test chaos lint typecheck clean bench bench-full docs screenshots

help:
	@echo "make demo   run examples/quickstart.py on the in-process memory:// docket (no Redis needed)"
	@echo "make test   build .venv and run the whole test suite (starts its own redis-server processes)"
	@echo "make chaos  the fault-injection scenarios (tests/chaos) at full size (SIGKILLs, Redis restarts,"
	@echo "            killed connections, a frozen worker, clock skew, bad stream entries, tasks due at once,"
	@echo "            Redis out of memory, a 1,000,000-task soak); prints figures"
	@echo "make lint   ruff check, ruff format --check and mypy --strict (make test runs it first)"
	@echo "make docs   build the documentation site (docs/ and the API reference) into site/, strict:"
	@echo "            a broken link or a page missing from the nav fails it (make test builds it too)"
	@echo "make screenshots  run the dashboard's browser tests (Debian's chromium) and keep their"
	@echo "            screenshots in docs/images (shown by docs/dashboard.md)"
	@echo "make bench  side-by-side benchmark against pydocket and the peers, Sentinel and Cluster rows too (quick, ~8 min;"
	@echo "            'make bench-full' or 'make bench BENCH_MODE=full' for the published table:"
	@echo "            3 interleaved rounds, 30-40 minutes on 2 cores)"

# A Python >= 3.12 that really runs: python3.13/python3.12 on PATH (pyenv shims fail unless
# selected, so each candidate is executed, not just located), then pyenv's own versions.
$(STAMP): pyproject.toml
	@set -e; \
	found=""; \
	for cand in python3.13 python3.12 python3 \
	    $$(ls -d $${PYENV_ROOT:-$$HOME/.pyenv}/versions/3.1[2-9]*/bin/python3 2>/dev/null | sort -r); do \
	  if "$$cand" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' >/dev/null 2>&1; then \
	    found="$$cand"; break; \
	  fi; \
	done; \
	if [ -z "$$found" ]; then \
	  echo "error: docket needs Python >= 3.12 and none was found (tried python3.13, python3.12, python3 and pyenv's versions)." >&2; \
	  echo "       Install one (for example: pyenv install 3.12) and run make again." >&2; \
	  exit 1; \
	fi; \
	echo "==> using $$found ($$("$$found" --version))"; \
	if [ ! -x $(PY) ] || ! $(PY) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' 2>/dev/null; then \
	  rm -rf $(VENV); "$$found" -m venv $(VENV); \
	fi; \
	echo "==> installing pydocket with its extras into $(VENV)"; \
	$(PY) -m pip install --quiet --upgrade pip 2>&1 | grep -v 'is ignored: it is neither' || true; \
	$(PY) -m pip install --quiet -e '.[dev,django,starlette,fastapi,metrics,docs]' 2> $(VENV)/pip.log || \
	  { grep -v 'is ignored: it is neither' $(VENV)/pip.log >&2; echo "error: installing the project failed (log above)" >&2; exit 1; }; \
	touch $(STAMP)

demo: $(STAMP)
	$(PY) examples/quickstart.py

# The lint and the docs build run first: they take seconds, and CI holds the line on them
# as on the tests.
test: lint docs
	@command -v redis-server >/dev/null || { echo "error: redis-server is not on PATH; the suite starts its own private Redis processes with it." >&2; exit 1; }
	$(PY) -m pytest -n $(PYTEST_WORKERS) -q

# The chaos scenarios at full size (make test runs them too, at smoke size). One pytest
# process: the scenarios start their own redis-server and worker processes, and at full
# size they would only fight over the cores. DOCKET_CHAOS_RESULTS=path collects the
# figures as JSON lines.
chaos: $(STAMP)
	@command -v redis-server >/dev/null || { echo "error: redis-server is not on PATH; the chaos suite starts its own private Redis processes with it." >&2; exit 1; }
	$(PY) -m pytest -m chaos --chaos-size=full -p no:randomly -q

# The dashboard's browser tests, writing their screenshots where docs/dashboard.md shows
# them (a plain `make test` writes them to a temporary directory).
screenshots: $(STAMP)
	DOCKET_SCREENSHOTS=docs/images $(PY) -m pytest -q -p no:randomly \
	  tests/test_dashboard_browser.py tests/django/test_django_dashboard_browser.py

LINTED := docket docket_dashboard docket_django docket_starlette tests examples benchmarks docs_hooks.py

lint: $(STAMP)
	@echo "==> ruff check, ruff format --check, mypy --strict (docket, docket_dashboard, docket_django, docket_starlette)"
	$(VENV)/bin/ruff check $(LINTED)
	$(VENV)/bin/ruff format --check $(LINTED)
	$(VENV)/bin/mypy

# mkdocs-material with mkdocstrings (the docs extra); mkdocs.yml sets strict mode, so any
# warning (a broken link or anchor, a page not in the nav, a reference mkdocstrings cannot
# resolve) fails the build.
docs: $(STAMP)
	@echo "==> mkdocs build --strict (site/)"
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

BENCH_STAMP := $(VENV)/.bench-installed

$(BENCH_STAMP): $(STAMP)
	@echo "==> installing the bench extra (matplotlib, profilers) into $(VENV)"
	@$(PY) -m pip install --quiet -e '.[bench]' 2> $(VENV)/pip-bench.log || \
	  { grep -v 'is ignored: it is neither' $(VENV)/pip-bench.log >&2; echo "error: installing the bench extra failed" >&2; exit 1; }
	@touch $(BENCH_STAMP)

# Each system gets its own virtualenv under benchmarks/.venvs (built on first use) and the
# run its own redis-server; results land in benchmarks/results/<mode>/.
BENCH_MODE ?= quick
# A commit to measure beside the working tree in the same run: make bench BENCH_BASELINE=main
BENCH_BASELINE ?=

bench: $(BENCH_STAMP)
	@command -v redis-server >/dev/null || { echo "error: redis-server is not on PATH; the benchmark starts its own." >&2; exit 1; }
	$(PY) benchmarks/bench.py --mode $(BENCH_MODE) $(if $(BENCH_BASELINE),--baseline $(BENCH_BASELINE))

bench-full: $(BENCH_STAMP)
	@command -v redis-server >/dev/null || { echo "error: redis-server is not on PATH; the benchmark starts its own." >&2; exit 1; }
	$(PY) benchmarks/bench.py --mode full

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache benchmarks/.venvs site
