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
# `make lock UPGRADE=` keeps every pin it can (to add a dependency without upgrading the rest).
UPGRADE ?= --upgrade

# The quality gate: at least this many tests must pass, and these are the deterministic
# concurrency regressions it runs first (all on virtual time).
MIN_TESTS := 700
CONCURRENCY_TESTS := tests/compat tests/concurrency tests/reliability \
	tests/orchestration/test_engine_singleflight.py tests/orchestration/test_engine_deadlines.py \
	tests/orchestration/test_engine_capacity.py tests/contract/test_capacity_and_deadlines.py
DIST := dist
# A tag build (CI on a tag, or a checkout at a vX.Y.Z tag) must match the package version.
TAG ?= $(if $(filter tag,$(GITHUB_REF_TYPE)),$(GITHUB_REF_NAME),$(shell git describe --exact-match --tags --match 'v[0-9]*' HEAD 2>/dev/null))

.PHONY: demo test lint typecheck pytest bench soak lock clean matrix quality release-check \
	workflow-lint concurrency suite versions dist wheel-check

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
	$(PY) -m ruff check src tests benchmarks examples tools
	$(PY) -m ruff format --check src tests benchmarks examples tools

typecheck: $(STAMP)
	$(PY) -m mypy --strict src tools

pytest: $(STAMP)
	$(PY) -m pytest tests

test: lint typecheck pytest

bench: $(STAMP)
	$(PY) benchmarks/run.py

soak: $(STAMP)
	$(PY) -m tests.reliability.soak --operations 100000

# The suite on every CPython 3.10-3.13 found (PATH or pyenv), each in its own .venv-X.Y built
# from the lock; versions it cannot find are listed. `make matrix MATRIX_ARGS=--require-all`
# fails on a missing one.
matrix:
	$(PYTHON) tools/matrix.py $(MATRIX_ARGS)

# -- the quality and release gates ---------------------------------------------------------------

workflow-lint: $(STAMP)
	$(VENV)/bin/actionlint .github/workflows/ci.yml

concurrency: $(STAMP)
	$(PY) -m pytest $(CONCURRENCY_TESTS)

suite: $(STAMP)
	mkdir -p build
	$(PY) -m pytest tests --junitxml=build/junit.xml
	$(PY) tools/count_tests.py build/junit.xml --minimum $(MIN_TESTS)

versions: $(STAMP)
	$(PY) tools/check_version.py --tag "$(TAG)"

dist: $(STAMP)
	rm -rf $(DIST)
	$(PY) -m hatchling build -d $(DIST)
	$(PY) tools/check_version.py --tag "$(TAG)" --dist $(DIST)

wheel-check: dist
	$(PY) tools/check_wheel.py --dist $(DIST)

# Format check (changes nothing), lint, strict mypy for 3.10 and 3.13, the workflow linter, the
# deterministic concurrency regressions, the whole suite with its minimum test count, version
# consistency, sdist and wheel, and the wheel installed in a clean venv: its public API manifest
# and the product page's quick start.
quality: lint
	$(PY) -m mypy --strict --python-version 3.10 src tools
	$(PY) -m mypy --strict --python-version 3.13 src tools
	$(MAKE) workflow-lint versions concurrency suite wheel-check

# The same gate before a release; on a tag (TAG=vX.Y.Z, or a checkout at that tag) the tag must
# also match pyproject.toml, coalestra.__version__ and a dated CHANGELOG section.
release-check:
	@echo "release-check: tag $(if $(TAG),$(TAG),(none: not a tag build))"
	$(MAKE) quality TAG="$(TAG)"

# Re-resolve the newest versions allowed by pyproject.toml's [dev] extra (and the build backend)
# for every CPython from 3.10 up, with a pinned uv in a throwaway venv; and the small lock the
# wheel check installs pytest from, at the same versions.
lock:
	tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	$(PYTHON) -m venv "$$tmp" && \
	"$$tmp/bin/python" -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION) && \
	"$$tmp/bin/uv" pip compile pyproject.toml requirements/build.in --extra dev \
		--universal --python-version 3.10 --generate-hashes $(UPGRADE) --quiet \
		--custom-compile-command "make lock" --output-file $(LOCK) && \
	"$$tmp/bin/uv" pip compile requirements/wheel-check.in --constraint $(LOCK) \
		--universal --python-version 3.10 --generate-hashes --quiet \
		--custom-compile-command "make lock" --output-file requirements/wheel-check.lock

clean:
	rm -rf $(VENV) .venv-3.* build dist .mypy_cache .ruff_cache
