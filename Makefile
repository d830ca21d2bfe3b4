# Two entry points do all the setup: `make run` (the main job) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3

.PHONY: setup run test lint format bench mutate docs docs-serve

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first: pip's usual build here, a CPU wheel where one is on disk.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev,lm,docs,tracking]'
	touch $@

setup: $(VENV)/.installed

run: setup
	$(VENV)/bin/imm-ray train rl --compare --epochs 50 100 200 --seeds 0-9

# KenLM's lmplz, for the tests that compare the Kneser–Ney bigram with it (cached in ~/.cache).
.PHONY: lmplz
lmplz:
	PYTHON=$(PYTHON) scripts/build_lmplz.sh

test: setup lmplz
	$(PY) -m pytest

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# The documentation site (mkdocs.yml, docs/): a broken link or a missing reference fails the
# build. NO_MKDOCS_2_WARNING silences Material's end-of-life banner on every build.
docs: setup
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

docs-serve: setup
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs serve -a 127.0.0.1:8000

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: setup
	$(PY) benchmarks/rl_throughput.py
	$(PY) benchmarks/rl_seeds_throughput.py
	$(PY) benchmarks/logistic_figure1.py
	$(PY) benchmarks/sweep_startup.py

# Mutation testing of the framework-free math ([tool.mutmut] in pyproject.toml; results in
# mutants/). MUTMUT_CHILDREN caps the parallel mutant runs (default: one per core).
MUTMUT_CHILDREN ?= $(shell nproc 2>/dev/null || echo 2)
mutate: setup
	$(VENV)/bin/mutmut run --max-children $(MUTMUT_CHILDREN)
	$(VENV)/bin/mutmut results
