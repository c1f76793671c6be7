# loadwise — the two commands a fresh machine needs: `make run` (the pipeline) and `make test`.
# Both create the virtual environment when it is missing or out of date.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch lies in pip's find-links folder; uv does not read pip's configuration,
# so hand it the same folder (else uv plans the multi-GB CUDA build).
FIND_LINKS ?= $(shell pip config get global.find-links 2>/dev/null || echo /opt/wheels)
export HF_HUB_OFFLINE := 1
export MLFLOW_DISABLE_TELEMETRY := true
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 90

.PHONY: venv run test test-all lint format typecheck bench lock clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --disable-pip-version-check uv==0.13.9
	VIRTUAL_ENV=$(VENV) $(BIN)/uv pip install -q --find-links $(FIND_LINKS) \
		-c requirements.lock -e . --group dev
	@touch $@

run: venv  ## the pipeline end to end on embedded defaults
	$(BIN)/loadwise run

test: venv  ## the default suite (excludes `slow`)
	$(BIN)/python -m pytest -q

test-all: venv
	$(BIN)/python -m pytest -q -m ""

lint: venv
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: venv
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

typecheck: venv
	$(BIN)/mypy

bench: venv  ## benchmarks; each prints its figure next to a same-run baseline
	$(BIN)/loadwise bench ingest
	$(BIN)/loadwise bench replay
	@if [ -f ../shared/data/benchmarks/azure_conv_n4000_r20_s0_cap4096.csv ]; then \
	  $(BIN)/loadwise bench replay --trace ../shared/data/benchmarks/azure_conv_n4000_r20_s0_cap4096.csv \
	    --profile a100-llama2-7b --repeats 3; \
	else echo "skipping the Vidur-trace replay: ../shared/data/benchmarks not found"; fi
	$(BIN)/loadwise bench env --repeats 3
	$(BIN)/loadwise bench env --hold-headroom 0.1 --repeats 3
	$(BIN)/loadwise bench fork
	$(BIN)/loadwise fidelity

lock:  ## re-resolve the pinned set into requirements.lock
	VIRTUAL_ENV=$(VENV) $(BIN)/uv pip freeze --exclude-editable > requirements.lock

clean:
	rm -rf $(VENV) .loadwise .pytest_cache .ruff_cache .mypy_cache
