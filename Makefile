# Entry points: `make demo`, `make test` (the whole suite) and `make check` (lint, types, fast tests). Each creates .venv and installs from the lock first.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
DEMO_HOME := $(CURDIR)/.spotrun-demo

.PHONY: demo test check lint install clean

install: $(INSTALLED)

# Editable in "compat" mode (a .pth path entry): a checkpoints/ folder in the user's working directory
# would otherwise shadow the package. torch first, from its CPU wheel pin: a bare `torch` requirement resolved later would pull CUDA packages.
$(INSTALLED): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt --config-settings editable_mode=compat -e ".[dev]"
	# litdata (for its resume tests) without its torchvision requirement: that would replace the CPU torch with a CUDA build.
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -c constraints.txt litdata
	touch $@

demo: $(INSTALLED)
	rm -rf $(DEMO_HOME)
	SPOTRUN_HOME=$(DEMO_HOME) $(VENV)/bin/spotrun run examples/digits.yaml
	@echo "Inspect it further with: SPOTRUN_HOME=$(DEMO_HOME) $(VENV)/bin/spotrun status digits"

test: $(INSTALLED)
	$(PY) -m pytest -q

# Before every push, in under 3 minutes on 2 cores: lint, formatting, types (mypy's files and strictness come from
# pyproject.toml) and the tests marked neither `slow` nor `e2e` (pyproject.toml says what each mark means).
check: lint
	$(PY) -m pytest -q -m "not slow and not e2e"

# Lint, formatting and types: what .ci/run checks before the suite.
lint: $(INSTALLED)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) $(DEMO_HOME)
