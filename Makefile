# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck pytest bench soak clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) examples/demo.py

lint: $(STAMP)
	$(PY) -m ruff check src tests benchmarks examples
	$(PY) -m ruff format --check src tests benchmarks examples

typecheck: $(STAMP)
	$(PY) -m mypy --strict src

pytest: $(STAMP)
	$(PY) -m pytest tests

test: lint typecheck pytest

bench: $(STAMP)
	$(PY) benchmarks/run.py

soak: $(STAMP)
	$(PY) -m tests.reliability.soak --operations 100000

clean:
	rm -rf $(VENV) build dist .mypy_cache .ruff_cache
