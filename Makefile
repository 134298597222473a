# The local gate is the CI gate: `make test` is what .ci/run calls.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test lint typecheck unit demo bench chaos clean tree

CHAOS_MINUTES ?= 5

$(STAMP): pyproject.toml hatch_build.py
	$(PY) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || (echo "Python >= 3.11 required" && exit 1)
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,bench]'
	touch $(STAMP)

# The editable install imports warren from build/editable/warren, a tree of symlinks into
# runtime/ and services/ (hatch_build.py); refresh it so new modules show up.
tree: $(STAMP)
	$(BIN)/python hatch_build.py

lint: tree
	$(BIN)/ruff format --check runtime services tests bench hatch_build.py
	$(BIN)/ruff check runtime services tests bench hatch_build.py
	$(BIN)/lint-imports

# mypy reads the package as it is imported (warren, through the symlink tree)
typecheck: tree
	$(BIN)/mypy build/editable/warren tests bench

# coverage run (not pytest-cov) so the pytest plugin, imported before any test, is measured too
unit: tree
	rm -f .coverage .coverage.*
	$(BIN)/coverage run -m pytest $(PYTEST_ARGS); status=$$?; \
	  $(BIN)/coverage combine -q && $(BIN)/coverage report; \
	  report=$$?; [ $$status -eq 0 ] && exit $$report || exit $$status

test: lint typecheck unit

demo: tree
	$(BIN)/warren run demo-publisher

bench: tree
	$(BIN)/python -m bench $(BENCH_ARGS)

# Randomized soak: random faults under steady load; exits non-zero on any loss.
chaos: tree
	$(BIN)/python -m tests.chaos.soak --minutes $(CHAOS_MINUTES) $(CHAOS_ARGS)

clean:
	rm -rf $(VENV) build .mypy_cache .ruff_cache .pytest_cache .coverage
