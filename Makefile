# Two commands do all the set-up on a fresh machine:
#   make run    creates .venv if missing, installs everything, trains the default model
#   make test   same set-up, then the test suite (pytest)
PYTHON ?= python3
VENV ?= .venv
# CPU build of torch from the local wheel cache; set TORCH_SPEC=torch to take pip's default (CUDA) build
TORCH_SPEC ?= torch==2.13.0
RUN_ARGS ?= --model=LPO4Rec --dataset=amazon-beauty
BIN := $(VENV)/bin
STAMP := $(VENV)/.recbole_lpo-installed

.PHONY: install run test recbole-tests clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet --no-deps recbole==1.2.1
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

run: install
	$(BIN)/python run_recbole_lpo.py $(RUN_ARGS)

test: install
	OMP_NUM_THREADS=2 MKL_NUM_THREADS=2 $(BIN)/python -m pytest -q tests

# RecBole 1.2.1's own tests without and with the plugin; RECBOLE_SRC = a RecBole checkout or
# git repository with the tag v1.2.1 (its tests are not in the pip package)
recbole-tests: install
	RECBOLE_SRC="$(RECBOLE_SRC)" PYTHON=$(BIN)/python bash benchmarks/recbole_own_tests.sh

clean:
	rm -rf $(VENV) saved log log_tensorboard
