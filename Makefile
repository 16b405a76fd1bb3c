VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup test docs demo bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	# torch first, pinned to the builds served locally; the project range admits them
	$(PY) -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
	$(PY) -m pip install -q -e ".[test,docs]"
	# pyiqa (a test extra) pulls bitsandbytes, which it never imports; peft does, and on a CPU machine it prints a
	# "kernels" notice on every import that would end up in the command-line tests' one-line error output
	$(PY) -m pip uninstall -q -y bitsandbytes
	touch $(STAMP)

setup: $(STAMP)

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q
	$(MAKE) docs

# the documentation site, into site/; --strict fails on broken links and missing API references
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet

demo: $(STAMP)
	$(VENV)/bin/mst-clipiqa demo

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) demo_out site
