# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# torch is installed first and pinned, so that `torch>=2.1` in pyproject.toml never pulls a
# multi-GB CUDA build where this CPU wheel is what the machine has; override for a GPU machine:
#   make test TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
TORCH_SPEC ?= torch==2.13.0
FASHION_MNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

.PHONY: demo test lint fashion-mnist browser clean

$(VENV)/.core: pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install --quiet $(TORCH_SPEC)
	$(PIP) install --quiet -e .
	touch $@

$(VENV)/.test: $(VENV)/.core
	$(PIP) install --quiet -e '.[test]'
	touch $@

# The demo times the packed BNN against ONNX Runtime's int8 as well as torch's (the bench extra).
$(VENV)/.bench: $(VENV)/.core
	$(PIP) install --quiet -e '.[bench]'
	touch $@

# Tests read the real Fashion-MNIST files from Debian's package (they skip where it cannot be had).
fashion-mnist:
	@if [ ! -f $(FASHION_MNIST) ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null; \
	  else echo "note: run 'sudo apt-get install dataset-fashion-mnist' for the Fashion-MNIST tests"; fi; fi

# The report's browser test drives Debian's headless Chromium (it skips where it cannot be had).
browser:
	@if ! command -v chromedriver >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	  else echo "note: run 'sudo apt-get install chromium chromium-driver' for the report's browser test"; fi; fi

demo: $(VENV)/.bench
	$(VENV)/bin/qnnlab demo

lint: $(VENV)/.test
	$(PY) -m ruff check src tests scripts
	$(PY) -m ruff format --check src tests scripts

test: $(VENV)/.test fashion-mnist browser lint
	$(PY) -m pytest

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
