# One command installs and runs each job; the virtual environment is created on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.scvi-gen-installed

.PHONY: install test lint demo docs benchmark clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	# the CPU build of torch first, so no dependency pulls a multi-GB CUDA build
	$(PY) -m pip install torch==2.13.0
	$(PY) -m pip install -e ".[test,sdv]"
	touch $(STAMP)

lint: install
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

test: lint
	$(PY) -m pytest

demo: install
	$(VENV)/bin/scvi-gen demo --out scvi_gen_demo

docs: install
	$(PY) -m pip install -e ".[docs]"
	$(VENV)/bin/sphinx-build --keep-going -b html docs docs/_build/html

benchmark: install
	$(PY) benchmarks/quality.py

clean:
	rm -rf $(VENV) docs/_build scvi_gen_demo
