# One entry point for people and CI. `make demo` and `make test` each set up .venv first.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export TORCH_EXTENSIONS_DIR ?= $(HOME)/.cache/torch_extensions

.PHONY: setup setup-dev demo test test-all bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

setup: $(BIN)/python
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[serve,export,constrained]"
	$(PIP) install -q --no-deps xgrammar==0.2.8

setup-dev: setup
	$(PIP) install -q -e ".[dev]"

demo: setup
	$(BIN)/knowlm demo --workdir demo-work

test: setup-dev
	$(BIN)/python -m pytest -q

bench: setup-dev
	@for b in bench/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) demo-work .pytest_cache
