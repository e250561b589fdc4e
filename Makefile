# make demo: set up .venv and run the built-in example.  make test: set up and run the suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
# constraints.txt pins torch to the CPU wheel; see the comment inside it.
INSTALL := $(PIP) install --quiet --constraint constraints.txt

.PHONY: demo test lint typecheck bench clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit("rtinfer needs Python 3.11+, found " + sys.version.split()[0]) if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(VENV)/.installed-all: pyproject.toml constraints.txt | $(BIN)/python
	$(INSTALL) -e '.[all]'
	@touch $@

$(VENV)/.installed-dev: pyproject.toml constraints.txt | $(BIN)/python
	$(INSTALL) -e '.[dev]'
	@touch $@ $(VENV)/.installed-all

demo: $(VENV)/.installed-all
	$(BIN)/rtinfer demo --kit perception --out demo-repo

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests benchmarks

typecheck: $(VENV)/.installed-dev
	$(BIN)/mypy

# pytest exits 5 when it collects nothing; that must fail loudly, never pass.
test: lint typecheck
	@$(BIN)/python -m pytest -n 2 --dist loadfile; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing the run"; exit 1; fi; \
	exit $$rc

bench: $(VENV)/.installed-all
	$(BIN)/python benchmarks/engines_minilm.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
