# One entry point for people and CI. Every target sets up .venv first.
VENV      ?= .venv
PY        := $(VENV)/bin/python
SENTI     := $(VENV)/bin/sentiserve
STAMP     := $(VENV)/.installed
REPO      ?= model_repository

.PHONY: setup model serve test test-fast fuzz lint format bench clean

setup: $(STAMP)

# torch first, as the CPU build: a plain `torch` requirement would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

## model: build the default model repository (skips what is already built)
model: setup
	$(SENTI) build --model-repository $(REPO)

## serve: build the default model if missing, then serve it on 127.0.0.1
serve: model
	$(SENTI) serve --model-repository $(REPO)

## test: lint, type-check and the whole test suite (what CI runs)
test: setup lint
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

## fuzz: a long property-based run of the HTTP API from its OpenAPI document
fuzz: setup
	SENTISERVE_FUZZ_EXAMPLES=1000 $(PY) -m pytest -q tests/integration/test_fuzz.py

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/mypy

format: setup
	$(VENV)/bin/ruff format src tests benchmarks
	$(VENV)/bin/ruff check --fix src tests benchmarks

## bench: engine throughput side by side (needs `make model`)
bench: model
	$(PY) benchmarks/engines.py --model-repository $(REPO) --out benchmarks/RESULTS.md

clean:
	rm -rf build $(REPO) .pytest_cache .mypy_cache .ruff_cache
