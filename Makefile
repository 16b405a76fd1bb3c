VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup test test-min docs demo bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	# torch first, pinned to the builds served locally; the project range admits them
	$(PY) -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
	$(PY) -m pip install -q -e ".[test,peers,serve,docs]"
	# pyiqa (the peers extra) pulls bitsandbytes, which it never imports; peft does, and on a CPU machine it prints a
	# "kernels" notice on every import that would end up in the command-line tests' one-line error output
	$(PY) -m pip uninstall -q -y bitsandbytes
	touch $(STAMP)

setup: $(STAMP)

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q
	$(MAKE) docs

# the suite on the declared floors: a fresh $(VENV_MIN) with every direct dependency pinned to its floor
# (constraints/min.txt, from pyproject.toml); slow (~10 min on 2 cores), so not part of `make test` or CI
VENV_MIN ?= .venv-min
MIN_STAMP := $(VENV_MIN)/.installed

constraints/min.txt: pyproject.toml constraints/floors.py
	python3 constraints/floors.py > $@

$(MIN_STAMP): constraints/min.txt
	rm -rf $(VENV_MIN)
	python3 -m venv $(VENV_MIN)
	$(VENV_MIN)/bin/python -m pip install -q -c constraints/min.txt torch torchvision
	$(VENV_MIN)/bin/python -m pip install -q -c constraints/min.txt -e ".[test]"
	$(VENV_MIN)/bin/python constraints/floors.py --check
	touch $(MIN_STAMP)

test-min: $(MIN_STAMP)
	$(VENV_MIN)/bin/python constraints/floors.py --check
	HF_HUB_OFFLINE=1 $(VENV_MIN)/bin/python -m pytest -q

# the documentation site, into site/; --strict fails on broken links and missing API references
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet

demo: $(STAMP)
	$(VENV)/bin/mst-clipiqa demo

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) $(VENV_MIN) demo_out site
