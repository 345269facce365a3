# Two commands for a new user: `make demo` and `make test`. Everything installs into .venv.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
SHELL  := /bin/bash
.SHELLFLAGS := -eo pipefail -c
# pip prints a harmless "Location ... is ignored" line per local index; keep the log readable.
QUIET  := 2>&1 | { grep -v "is ignored" || true; }

.PHONY: install demo test bench lint clean

install: $(STAMP)

# Idempotent: re-runs only when pyproject.toml changes. torch is installed first and pinned
# exactly so that pip takes the CPU build on local disk instead of a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q 'torch==2.13.0' $(QUIET)
	$(PY) -m pip install -q -e '.[dev,transformers]' $(QUIET)
	$(PY) -c "import bigmodel, torch; assert torch.__version__.startswith('2.13.0'), torch.__version__"
	touch $(STAMP)

demo: install
	$(VENV)/bin/bigmodel demo

# Two pytest workers: most tests wait on the processes they start (CLI, servers, torchrun
# workers), so two keep both cores busy (5:45 instead of 8:20 here). --dist loadfile keeps each
# module's tests, and its module-scoped server or dataset, on one worker.
TEST_WORKERS ?= 2
test: install
	$(PY) -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist loadfile tests

bench: install
	$(PY) benchmarks/run.py

lint: install
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) build *.egg-info
