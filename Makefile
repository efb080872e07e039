# Two commands for a fresh machine: `make demo` (the main job, hardware-free) and `make test`.
VENV := .venv
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup test demo bench clean

setup: $(STAMP)

$(STAMP): requirements.txt requirements-common.txt requirements-ros.txt requirements-test.txt requirements-export.txt requirements-onnx.txt setup.py scripts/setup_venv.sh
	bash scripts/setup_venv.sh

test: setup
	$(PYTHON) -m pytest

demo: setup
	$(VENV)/bin/mobile-vla demo

bench: setup
	$(VENV)/bin/mobile-vla bench --base-model full-random --device cpu --json runs/bench.json

clean:
	rm -rf build install log .pytest_cache
