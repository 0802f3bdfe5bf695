# The two commands of the README: `make train` and `make test`. Both create .venv from the pins first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PYVER := $(shell $(PYTHON) -c 'import sys; print(f"{sys.version_info[0]}{sys.version_info[1]}")' 2>/dev/null)
REQS := requirements/py$(if $(filter 311,$(PYVER)),311,312).txt
PYTEST_ARGS ?=
# Tests are compile-bound and XLA compiles on one thread: two workers use both cores.
PYTEST_WORKERS ?= 2
# `make test` and `make test-fast` lint these first (ruff, configured in pyproject.toml).
LINT_PATHS := hope_jax kernels tests experiments

# `make train`: the embedded default (a tiny Hope on the pip-only English corpus, byte level, CPU).
WORKDIR ?= workdirs/hope-tiny
TRAIN_ARGS ?=

.PHONY: train lint test test-fast bench bench-optimizers bench-kernels compare bench-models bench-peers venv clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml setup.py $(REQS)
	@echo ">> creating $(VENV) with $(PYTHON) ($(PYVER)), pins from $(REQS)"
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r $(REQS)
	$(PY) -m pip install --quiet --no-deps -e .
	@touch $@

train: venv
	$(PY) -m hope_jax.cli train --workdir=$(WORKDIR) $(TRAIN_ARGS)
	@echo ">> a sample from the trained model (hope-jax generate --workdir=$(WORKDIR)):"
	$(PY) -m hope_jax.cli generate --workdir=$(WORKDIR) --max_tokens=300

lint: venv
	$(VENV)/bin/ruff check $(LINT_PATHS)

test: venv
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist worksteal --durations=40 $(PYTEST_ARGS)

# The subset that CI also runs under Python 3.12 / jax 0.12.
test-fast: venv
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist worksteal -m fast $(PYTEST_ARGS)

bench: venv
	$(PY) experiments/bench/bench_chunked_scan.py

bench-optimizers: venv
	$(PY) experiments/bench/bench_optimizers.py

bench-kernels: venv
	$(PY) experiments/bench/bench_kernels.py

# Hope vs Titans vs Transformer++ vs Gated DeltaNet, tiny, equal tokens (docs/experiments.md).
COMPARISON ?= tiny
COMPARE_ARGS ?=
compare: venv
	$(PY) experiments/compare/run.py --comparison=$(COMPARISON) $(COMPARE_ARGS)

# Training tokens/s and memory vs T, then decode ms/token vs context (docs/experiments.md).
bench-models: venv
	$(PY) experiments/bench/bench_models.py
	$(PY) experiments/bench/bench_decode.py

# hope_jax vs the PyTorch peers (nested-learning's Hope, titans-pytorch), side by side; the peers
# live in their own environment, .venv-peers (docs/experiments.md, "Against the PyTorch peers").
PEERS_VENV ?= .venv-peers
PEER_CASES ?=
$(PEERS_VENV)/.installed: requirements/peers.txt
	@echo ">> creating $(PEERS_VENV) with $(PYTHON): torch (CPU), titans-pytorch, nested-learning"
	$(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/python -m pip install --quiet -r requirements/peers.txt
	@touch $@

bench-peers: venv
	@$(MAKE) --no-print-directory $(PEERS_VENV)/.installed || echo ">> the peers did not install; bench_peers.py records why and runs hope_jax alone"
	$(PY) experiments/bench/bench_peers.py --peers_python=$(PEERS_VENV)/bin/python $(if $(PEER_CASES),--cases=$(PEER_CASES))

clean:
	rm -rf $(VENV) .jax_cache .pytest_cache
