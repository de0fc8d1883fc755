# The two commands of the README: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The torch pair that installs from this machine's disk; any recent pair works elsewhere.
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
# A strict editable install links each source file into build/, which mypy can read; a file
# added or removed needs a re-install, so the install depends on the list of files.
SOURCES := $(sort $(shell find pitfall_guard rules reference_impl -name '*.py' 2>/dev/null))
export OMP_NUM_THREADS ?= 1

.PHONY: demo test lint typecheck pytest bench install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.torch: | $(BIN)/python
	$(BIN)/python -m pip install -q $(TORCH_PINS)
	touch $@

$(VENV)/.sources: FORCE | $(BIN)/python
	@echo '$(SOURCES)' | cmp -s - $@ || echo '$(SOURCES)' > $@

$(VENV)/.installed: pyproject.toml $(VENV)/.torch $(VENV)/.sources
	$(BIN)/python -m pip install -q -e '.[dev]' --config-settings editable_mode=strict
	touch $@

install: $(VENV)/.installed

demo: install
	@echo '$$ pitfall-guard check fixtures/'
	@$(BIN)/pitfall-guard check fixtures/ || true
	@echo
	@echo '$$ pitfall-guard check reference_impl/'
	@$(BIN)/pitfall-guard check reference_impl/
	@echo
	@echo '$$ pitfall-guard run fixtures/mutants/missing_zero_grad.py --max-steps 20 -- --synthetic'
	@$(BIN)/pitfall-guard run fixtures/mutants/missing_zero_grad.py --max-steps 20 \
		-- --synthetic | tail -n 8

lint: install
	$(BIN)/ruff check .

typecheck: install
	$(BIN)/mypy -p pitfall_guard -p tests
	$(BIN)/mypy bench

pytest: install
	$(BIN)/pytest

test: lint typecheck pytest

bench: install
	$(BIN)/python bench/check_speed.py

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .pytest_cache .ruff_cache

FORCE:
