VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --progress-bar on
# one stamp per install, so `make demo` installs the library alone and `make test` / `make docs` add their extras
BASE_STAMP := $(VENV)/.installed-base
STAMP := $(VENV)/.installed-test
DOCS_STAMP := $(VENV)/.installed-docs

.PHONY: setup test test-min docs demo bench clean

$(BASE_STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	# torch first, pinned to the builds served locally; the project range admits them
	$(PIP) "torch==2.14.1" "torchvision==0.29.1"
	$(PIP) -e .
	touch $@

$(STAMP): $(BASE_STAMP)
	$(PIP) -e ".[test,peers,serve]"
	# pyiqa (the peers extra) pulls bitsandbytes, which it never imports; peft does, and on a CPU machine it prints a
	# "kernels" notice on every import that would end up in the command-line tests' one-line error output
	$(PY) -m pip uninstall -y bitsandbytes
	touch $@

$(DOCS_STAMP): $(BASE_STAMP)
	$(PIP) -e ".[docs]"
	touch $@

setup: $(STAMP) $(DOCS_STAMP)

# the site is built first, once: tests/test_site.py opens that build (MST_CLIPIQA_SITE) rather than a second one.
# Each test runs on one thread (tests/conftest.py), so two workers (pytest-xdist) use both cores of a CI machine:
# 11 min instead of 16 there
TEST_WORKERS ?= 2
test: $(STAMP) $(DOCS_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(MAKE) docs
	MST_CLIPIQA_SITE=$(CURDIR)/site HF_HUB_OFFLINE=1 $(PY) -m pytest -q -n $(TEST_WORKERS)

# the suite on the declared floors: a fresh $(VENV_MIN) with every direct dependency pinned to its floor
# (constraints/min.txt, from pyproject.toml); slow (~10 min on 2 cores), so not part of `make test` or CI
VENV_MIN ?= .venv-min
MIN_STAMP := $(VENV_MIN)/.installed

constraints/min.txt: pyproject.toml constraints/floors.py
	python3 constraints/floors.py > $@

$(MIN_STAMP): constraints/min.txt
	rm -rf $(VENV_MIN)
	python3 -m venv $(VENV_MIN)
	$(VENV_MIN)/bin/python -m pip install --progress-bar on -c constraints/min.txt torch torchvision
	$(VENV_MIN)/bin/python -m pip install --progress-bar on -c constraints/min.txt -e ".[test]"
	$(VENV_MIN)/bin/python constraints/floors.py --check
	touch $(MIN_STAMP)

test-min: $(MIN_STAMP)
	$(VENV_MIN)/bin/python constraints/floors.py --check
	HF_HUB_OFFLINE=1 $(VENV_MIN)/bin/python -m pytest -q

# the documentation site, into site/; --strict fails on broken links and missing API references
docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet

# the library alone (no test, peers or docs extras): what the demo needs
demo: $(BASE_STAMP)
	$(VENV)/bin/mst-clipiqa demo

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) $(VENV_MIN) demo_out site
