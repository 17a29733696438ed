# The README's two set-up commands. Each creates .venv if missing and installs what it needs.
#   make demo   train the embedded default (scikit-learn's 8x8 digits) and write a sample grid
#   make test   run the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Offline by default: the demo and the tests need no network once installed.
export HF_DATASETS_OFFLINE ?= 1
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: demo test install lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt examples/tokar-example-plugin/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# constraints.txt pins torch==2.13.0: a CPU wheel here, instead of gigabytes of CUDA packages
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	# the example third-party plugin, installed like any other (its `tokar` entry point)
	$(BIN)/python -m pip install --quiet --no-deps -e examples/tokar-example-plugin
	touch $(STAMP)

demo: $(STAMP)
	rm -rf runs/demo
	$(BIN)/tokar train recipes/digits/pixel_gpt.yaml --run-dir runs/demo
	$(BIN)/tokar sample runs/demo -n 40 --out runs/demo/samples/demo_grid.png

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev,bench]"
	$(BIN)/python benchmarks/train_throughput.py

clean:
	rm -rf runs .pytest_cache .ruff_cache
