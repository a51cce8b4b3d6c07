# The two commands a newcomer needs (see README.md):
#   make demo   install medvid and run `medvid demo` on the embedded echocardiograms
#   make test   install medvid with its test extras and run the whole test suite
PYTHON ?= python3
PIP := $(PYTHON) -m pip

.PHONY: install install-test demo test bench

install:
	$(PIP) install torch==2.13.0
	$(PIP) install -e .
	$(PIP) install --no-deps "scenedetect>=0.6" "platformdirs>=3"

install-test: install
	$(PIP) install -e ".[dev]"
	# Independent references the tests compare against (pytorch-fid's Frechet distance; the upstream
	# EfficientNet-Lite port). --no-deps: pytorch-fid pins torchvision, which does not import beside CPU torch.
	$(PIP) install --no-deps "pytorch-fid==0.3.0" "efficientnet-lite-pytorch==0.1.0"

demo: install
	medvid demo

test: install-test
	$(PYTHON) -m pytest

bench: install
	for b in benchmarks/*.py; do $(PYTHON) $$b || exit 1; done
