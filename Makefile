# prodvision: `make notebooks` and `make test` do all set-up on a fresh machine (Debian/Ubuntu, Python >= 3.10).
# A second run reinstalls nothing: the venv install is stamped against pyproject.toml, system packages are checked
# before apt-get is called, and trained models/features are cached under runs/cache.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.prodvision-installed
NBVAL_TIMEOUT ?= 1800

.PHONY: all setup system data notebooks test unit nbval benchmarks clean-cache help
all: test

help:
	@echo "make notebooks  - set up, then execute every notebook in order (writes outputs, figures/, results/)"
	@echo "make test       - set up, then unit tests + nbval on every notebook"
	@echo "make unit       - unit tests only;  make nbval - notebooks only;  make benchmarks - speed ratios"

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -e '.[dev]'
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (prodvision)" >/dev/null
	@touch $(STAMP)

system:
	@bash scripts/system-deps.sh

data: setup system
	@$(PY) -m prodvision data fetch

notebooks: data
	$(PY) scripts/run_notebooks.py

unit: data
	$(PY) -m pytest tests

nbval: data
	$(PY) -m pytest --nbval-lax --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg --nbval-cell-timeout=$(NBVAL_TIMEOUT) -p no:cacheprovider notebooks

test: unit nbval

benchmarks: data
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean-cache:
	rm -rf runs/cache
