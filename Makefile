# Two commands do all set-up on a fresh machine that has python3: `make demo` and `make test`.
# The development environment is locked: .venv gets exactly requirements/dev.lock (every tool and
# dependency pinned, with hashes), then the project itself, editable. `make lock` refreshes the
# lock on purpose; nothing here uses a tool that happens to be installed on the machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
LOCK := requirements/dev.lock
UV_VERSION := 0.13.10

.PHONY: demo test lint typecheck pytest bench soak lock clean

# A changed lock rebuilds .venv from scratch, so nothing the lock dropped stays installed.
$(STAMP): $(LOCK) pyproject.toml
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --require-hashes -r $(LOCK)
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
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

# Re-resolve the newest versions allowed by pyproject.toml's [dev] extra (and the build backend)
# for every CPython from 3.10 up, with a pinned uv in a throwaway venv.
lock:
	tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	$(PYTHON) -m venv "$$tmp" && \
	"$$tmp/bin/python" -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION) && \
	"$$tmp/bin/uv" pip compile pyproject.toml requirements/build.in --extra dev \
		--universal --python-version 3.10 --generate-hashes --upgrade --quiet \
		--custom-compile-command "make lock" --output-file $(LOCK)

clean:
	rm -rf $(VENV) build dist .mypy_cache .ruff_cache
