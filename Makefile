# lookalike — every target sets up its own virtual environment (.venv) first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DATA ?= ../shared/data/lfw
LOWRES ?=
OUT ?= runs/$(notdir $(DATA))$(if $(LOWRES),-lowres$(LOWRES),)
CACHE ?= cache/lookalike.sqlite
ARGS ?=

.PHONY: venv test lint benchmark benchmarks default-model clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

venv: $(BIN)/.installed

lint: venv
	$(BIN)/ruff check src tests benchmarks

test: venv lint
	$(BIN)/python -m pytest -q

benchmark: venv
	$(BIN)/lookalike benchmark --data $(DATA) --out $(OUT) --cache $(CACHE) $(if $(LOWRES),--lowres $(LOWRES),) $(ARGS)

# the default models shipped in src/lookalike/models/ (LFW without the PubFig people; 20 px, full-resolution, and 20 px on one side)
default-model: venv
	$(BIN)/python benchmarks/default_model.py --lowres 20 --cache $(CACHE)
	$(BIN)/python benchmarks/default_model.py --lowres full --cache $(CACHE)
	$(BIN)/python benchmarks/default_model.py --lowres 20-probes --cache $(CACHE)
	$(BIN)/python benchmarks/default_model.py --lowres 20-gallery --cache $(CACHE)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache src/*.egg-info
