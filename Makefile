# Two entry points: `make demo` (the main job) and `make test` (the suite). Both build .venv on first use.
VENV ?= .venv
PY := $(VENV)/bin/python

$(VENV)/.installed: setup.cfg pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

.PHONY: demo test
demo: $(VENV)/.installed
	$(VENV)/bin/help-nas demo

test: $(VENV)/.installed
	$(PY) -m pytest -q
