# Set-up and entry points. `make train` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch; an unpinned torch would pull a multi-GB CUDA build.
TORCH_PIN ?= torch==2.13.0

.PHONY: venv train test bench clean

$(BIN)/fmnist: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH_PIN)"
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

venv: $(BIN)/fmnist

train: venv
	$(BIN)/fmnist train $(ARGS)

test: venv
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The benchmark of docs/benchmarks.md, on the real data: $FMNIST_DATA_DIR, else ../shared/data/fashion-mnist.
BENCH_DATA_DIR ?= $(or $(FMNIST_DATA_DIR),../shared/data/fashion-mnist)

bench: venv
	$(BIN)/python benchmarks/bench.py --data-dir "$(BENCH_DATA_DIR)" --full-baseline $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
