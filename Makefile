# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# torch is installed first and pinned, so that `torch>=2.1` in pyproject.toml never pulls a
# multi-GB CUDA build where this CPU wheel is what the machine has; override for a GPU machine:
#   make test TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
TORCH_SPEC ?= torch==2.13.0

.PHONY: demo test clean

$(VENV)/.core: pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install --quiet $(TORCH_SPEC)
	$(PIP) install --quiet -e .
	touch $@

$(VENV)/.test: $(VENV)/.core
	$(PIP) install --quiet -e '.[test]'
	touch $@

demo: $(VENV)/.core
	$(VENV)/bin/qnnlab quantizers

test: $(VENV)/.test
	$(PY) -m pytest

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
