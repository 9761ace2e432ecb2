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
	$(PY) -m pip install -e ".[test,sdv,docs]"
	touch $(STAMP)

lint: install
	$(VENV)/bin/ruff check src tests benchmarks tutorials
	$(VENV)/bin/ruff format --check src tests benchmarks tutorials

# pytest runs the tutorials (quick settings) and every README code block; then the docs build
test: lint
	$(PY) -m pytest
	$(MAKE) docs

demo: install
	$(VENV)/bin/scvi-gen demo --out scvi_gen_demo

# warnings are errors; offline, intersphinx inventories are skipped (docs/conf.py)
docs: install
	$(VENV)/bin/sphinx-build -W --keep-going -b html docs docs/_build/html

benchmark: install
	$(PY) benchmarks/quality.py

clean:
	rm -rf $(VENV) docs/_build scvi_gen_demo
