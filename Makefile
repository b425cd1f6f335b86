# diffusers-tsa: `make test` and `make demo` set everything up from scratch in .venv.
PYTHON ?= python3
VENV ?= .venv
# The CPU build of torch is enough for the tests and the offline demo; set TORCH to your CUDA build otherwise.
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: install quality style test test-newest test-minimum demo bench clean

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

# The version matrix (`.ci/run` runs both after `make test`). test-newest: the whole suite in a second venv with the
# newest releases of the libraries we build on; test-minimum: the fast subset (`-m minimum`) in a third venv with the
# minimums setup.cfg declares (MINIMUM lists them; tests/test_packaging.py checks that the two agree). The newest leg
# ignores a site-wide pip constraints file (PIP_CONSTRAINT=/dev/null: some machines cap torch at a release they keep
# on disk), so that it tests what `pip install diffusers-tsa` gives a new user.
NEWEST_VENV ?= .venv-newest
MINIMUM_VENV ?= .venv-minimum
NEWEST := torch diffusers transformers accelerate peft datasets
MINIMUM := torch==2.9.0 diffusers==0.37.0 transformers==5.18.0 accelerate==1.6.0 peft==0.18.0 datasets==3.6.0

$(NEWEST_VENV)/bin/python $(MINIMUM_VENV)/bin/python:
	$(PYTHON) -m venv $(patsubst %/bin/python,%,$@)
	$@ -m pip install --upgrade pip

test-newest: $(NEWEST_VENV)/bin/python
	PIP_CONSTRAINT=/dev/null $< -m pip install --upgrade $(NEWEST) -e ".[test]"
	$< -m pip list --format=freeze | grep -i -E '^($(subst $() ,|,$(NEWEST)))=='
	$< -m pytest tests -n $(TEST_WORKERS) --dist loadgroup

test-minimum: $(MINIMUM_VENV)/bin/python
	$< -m pip install $(MINIMUM) -e ".[test]"
	$< -m pip list --format=freeze | grep -i -E '^($(subst $() ,|,$(NEWEST)))=='
	$< -m pytest tests -m minimum -n $(TEST_WORKERS) --dist loadgroup

# The main job on an embedded default: tiny offline models, synthetic clips, a real training run and a stock reload.
demo: install
	$(BIN)/python demo/run_demo.py --output_dir demo_output

bench: install
	$(BIN)/python benchmarks/bench_loss.py

clean:
	rm -rf $(VENV) $(NEWEST_VENV) $(MINIMUM_VENV) build dist *.egg-info .pytest_cache
