# astrosage — two commands on a fresh machine:
#   make demo   # venv + CPU torch pin + package, then the offline tiny recipe end to end
#   make test   # same install if needed, then the offline test suite
#
# GPU clusters: install your own CUDA build of torch first, then `pip install -e ".[all]"`
# (see README); this Makefile's torch pin is the CPU build for laptops and CI.

PYTHON    ?= python3.11
VENV      ?= .venv
TORCH_PIN ?= torch==2.13.0
EXTRAS    ?= all,dev
PYTEST_ARGS ?=

BIN   := $(VENV)/bin
STAMP := $(VENV)/.astrosage-installed

.PHONY: install demo test clean-runs help

help:
	@echo "make demo   - install (if needed) and run recipes/tiny-cpu.yaml offline"
	@echo "make test   - install (if needed) and run the offline test suite"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Reinstall whenever pyproject.toml changes.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet $(TORCH_PIN)
	$(BIN)/pip install --quiet -e ".[$(EXTRAS)]"
	touch $(STAMP)

install: $(STAMP)

demo: install
	HF_HUB_OFFLINE=1 $(BIN)/astrosage run recipes/tiny-cpu.yaml

test: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest $(PYTEST_ARGS)

clean-runs:
	rm -rf runs
