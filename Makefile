# diffusers-tsa: `make test` and `make demo` set everything up from scratch in .venv.
PYTHON ?= python3
VENV ?= .venv
# The CPU build of torch is enough for the tests and the offline demo; set TORCH to your CUDA build otherwise.
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: install quality style test demo bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip

install: $(BIN)/python
	$(BIN)/python -m pip install $(TORCH)
	$(BIN)/python -m pip install -e ".[test]"

# Lint and format check (ruff, with diffusers' rules: pyproject.toml); `make style` fixes what it can.
quality: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

style: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Two workers by default (the suite's end-to-end runs are subprocesses); TEST_WORKERS=0 runs it in one process.
# loadgroup keeps each family's contract tests on one worker, which then makes the training runs they share once.
TEST_WORKERS ?= 2
test: quality
	$(BIN)/python -m pytest tests -n $(TEST_WORKERS) --dist loadgroup

# The main job on an embedded default: tiny offline models, synthetic clips, a real training run and a stock reload.
demo: install
	$(BIN)/python demo/run_demo.py --output_dir demo_output

bench: install
	$(BIN)/python benchmarks/bench_loss.py

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
