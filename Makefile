# Development entry points. Both create the pinned virtual environment (.venv) on first use.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: venv compare test lint docs bench clean

$(STAMP): setup.cfg pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	# torch first, pinned, so that no later resolution can pull a CUDA build
	$(VENV)/bin/pip install --quiet -c constraints.txt torch==2.13.0
	$(VENV)/bin/pip install --quiet -c constraints.txt -e ".[test,plots,arviz,flows,digits,docs,lightning]"
	touch $(STAMP)

venv: $(STAMP)

compare: $(STAMP)
	$(VENV)/bin/pyro-vsm compare

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .

# the API reference, warnings as errors, into docs/_build/html
docs: $(STAMP)
	$(VENV)/bin/sphinx-build -W --keep-going -b html docs docs/_build/html

bench: $(STAMP)
	$(VENV)/bin/python benchmarks/step_time.py
	$(VENV)/bin/python benchmarks/evaluation.py
	$(VENV)/bin/python benchmarks/scaling.py
	$(VENV)/bin/python benchmarks/ais.py

clean:
	rm -rf $(VENV) build *.egg-info docs/_build
