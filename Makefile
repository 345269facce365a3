# Two commands for a new user: `make demo` and `make test`. Everything installs into .venv.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
LOCK   := requirements.lock
TORCH  := 2.13.0
SHELL  := /bin/bash
.SHELLFLAGS := -eo pipefail -c
# pip prints a harmless "Location ... is ignored" line per local index; keep the log readable.
QUIET  := 2>&1 | { grep -v "is ignored" || true; }

.PHONY: install demo test test-slow bench lint lock gpu-check proto clean

install: $(STAMP)

# Idempotent: re-runs only when pyproject.toml or the lock changes. torch is installed first and
# pinned exactly so that pip takes the CPU build on local disk instead of a multi-GB CUDA build;
# every other package comes at the version CI tested ($(LOCK), refreshed on purpose by `make lock`).
# pyproject.toml itself takes ranges, so `pip install bigmodel` fits a user's own (CUDA) torch.
$(STAMP): pyproject.toml $(LOCK)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q 'torch==$(TORCH)' $(QUIET)
	$(PY) -m pip install -q -c $(LOCK) -e '.[dev,transformers]' $(QUIET)
	$(PY) -c "import bigmodel, torch; assert torch.__version__.startswith('$(TORCH)'), torch.__version__"
	@command -v java >/dev/null || test -x "$$JAVA_HOME/bin/java" || echo "warning: no java found: \
	data prepare --engine spark and its tests need Java 17+ (apt-get install openjdk-17-jre-headless, \
	brew install openjdk@17, or set JAVA_HOME); they are skipped without it"
	touch $(STAMP)

# The newest versions pyproject.toml allows, beside the pinned torch, installed into a throwaway
# venv and frozen into $(LOCK). Run it on purpose, then `make test`, and commit the lock with the result.
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install -q 'torch==$(TORCH)' $(QUIET)
	.lock-venv/bin/python -m pip install -q '.[dev,transformers]' $(QUIET)
	{ echo "# make lock, $$(date -u +%F), Python $$(.lock-venv/bin/python -c 'import platform; print(platform.python_version())'): the versions CI tests. Refresh with make lock."; \
	  .lock-venv/bin/python -m pip freeze | grep -v '^bigmodel' | sed 's/^torch==$(TORCH)+cpu$$/torch==$(TORCH)/'; } > $(LOCK).tmp
	mv $(LOCK).tmp $(LOCK)
	rm -rf .lock-venv build

demo: install
	$(VENV)/bin/bigmodel demo

# Two pytest workers: most tests wait on the processes they start (CLI, servers, torchrun
# workers), so two keep both cores busy (10:47 for 594 tests on 2 cores, 2026-12-07). --dist loadfile keeps each
# module's tests, and its module-scoped server or dataset, on one worker.
TEST_WORKERS ?= 2
test: install
	$(PY) -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist loadfile -m "not slow" tests

# The long end-to-end runs (the demo's text part: an LM trained, MiniLM quantized); CI runs them too.
test-slow: install
	$(PY) -m pytest -q -p no:cacheprovider -m slow tests

bench: install
	$(PY) benchmarks/run.py

# The GPU paths (CUDA training, NCCL, bf16, --compile, FSDP) in under 5 minutes on a GPU machine;
# GPU_PYTHON: a Python with a CUDA build of torch and bigmodel's dependencies.
GPU_PYTHON ?= $(PY)
gpu-check:
	$(GPU_PYTHON) benchmarks/gpu_check.py --json benchmarks/results/gpu/check.json
	$(GPU_PYTHON) benchmarks/run.py --render

lint: install
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

# The gRPC service's Python code, from its .proto (committed; rerun after editing the .proto).
PROTO := src/bigmodel/serve/grpc_gen/inference.proto
proto: install
	$(PY) -m grpc_tools.protoc -I src --python_out=src --pyi_out=src --grpc_python_out=src $(PROTO)

clean:
	rm -rf $(VENV) build *.egg-info
