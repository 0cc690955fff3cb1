# prodvision: `make notebooks` and `make test` do all set-up on a fresh machine (Debian/Ubuntu, Python >= 3.10).
# A second run reinstalls nothing: the venv install is stamped against pyproject.toml, system packages are checked
# before apt-get is called, and trained models/features are cached under runs/cache.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.prodvision-installed
BOOK_STAMP := $(VENV)/.prodvision-book-installed
BOOK_OUT ?= _build/html
NBVAL_TIMEOUT ?= 1800
# Tests write figures and run records to a scratch folder, so `make test` leaves the checkout as it was; trained models
# go to runs/cache (ignored by git) so that a second run reuses them. No progress bars in executed notebooks' outputs.
SCRATCH := $(CURDIR)/runs/test-output
TEST_ENV := PRODVISION_FIGURES=$(SCRATCH)/figures PRODVISION_RESULTS=$(SCRATCH)/results PRODVISION_PROGRESS=0

.PHONY: all setup system data notebooks book test unit unit-all nbval benchmarks clean-cache help
all: test

help:
	@echo "make notebooks  - set up, then execute every notebook in order (writes outputs, figures/, results/)"
	@echo "make test       - set up, then unit tests + nbval on every notebook"
	@echo "make unit       - the fast unit tests (not marked slow);  make unit-all - every unit test"
	@echo "make nbval      - notebooks only;  make benchmarks - speed and memory ratios (run on an idle machine)"
	@echo "make book       - the course as a static HTML book in $(BOOK_OUT)/ (offline; notebooks are not executed)"

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -e '.[dev]'
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (prodvision)" >/dev/null
	@touch $(STAMP)

# The book's tools (Sphinx, myst-nb, sphinx-book-theme, MathJax) are the `book` extra, installed on first use.
$(BOOK_STAMP): pyproject.toml $(STAMP)
	$(PY) -m pip install --disable-pip-version-check -e '.[dev,book]'
	@touch $(BOOK_STAMP)

system:
	@bash scripts/system-deps.sh

data: setup system
	@$(PY) -m prodvision data fetch

notebooks: data
	PRODVISION_PROGRESS=0 $(PY) scripts/run_notebooks.py
	$(PY) scripts/syllabus.py  # the syllabus's CPU times come from results/summary.json
	$(PY) -m pytest -q -p no:cacheprovider tests/test_serve_browser.py  # refreshes figures/serve_upload_page.png

unit: data
	$(TEST_ENV) $(PY) -m pytest -p no:cacheprovider -m "not slow" tests

# The book's build is no notebook run: the committed notebooks are rendered as they are, nothing is fetched.
book: $(BOOK_STAMP)
	@start=$$(date +%s); $(PY) -m sphinx -b html -c docs -W --keep-going -q . $(BOOK_OUT) \
	  && touch $(BOOK_OUT)/.prodvision-built \
	  && echo "book: $(BOOK_OUT)/index.html ($$(( $$(date +%s) - start )) s)"

unit-all: data $(BOOK_STAMP)  # tests/test_book.py builds the book
	$(TEST_ENV) $(PY) -m pytest -p no:cacheprovider tests

nbval: data
	$(TEST_ENV) $(PY) -m pytest --nbval-lax --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg --nbval-cell-timeout=$(NBVAL_TIMEOUT) -p no:cacheprovider notebooks

test: unit-all nbval

benchmarks: data
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean-cache:
	rm -rf runs/cache
