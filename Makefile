# Two entry points: `make demo` (the main job) and `make test` (the suite). Both build .venv on first use.
# torch 2.14.1 + torchvision 0.29.1 (a pair that matches; the `ofa` package imports torchvision); the
# core package alone needs only torch >= 2.0.
VENV ?= .venv
TORCH ?= torch==2.14.1 torchvision==0.29.1
PY := $(VENV)/bin/python

$(VENV)/.installed: setup.cfg pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

.PHONY: demo test
demo: $(VENV)/.installed
	$(VENV)/bin/help-nas demo

test: $(VENV)/.installed
	$(PY) -m pytest -q
