# The local gate is the CI gate: `make test` is what .ci/run calls.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test lint typecheck unit demo bench chaos clean

CHAOS_MINUTES ?= 5

$(STAMP): pyproject.toml
	$(PY) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || (echo "Python >= 3.11 required" && exit 1)
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,bench]'
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff format --check runtime services tests bench
	$(BIN)/ruff check runtime services tests bench

typecheck: $(STAMP)
	$(BIN)/mypy runtime services tests bench

# coverage run (not pytest-cov) so the pytest plugin, imported before any test, is measured too
unit: $(STAMP)
	rm -f .coverage .coverage.*
	$(BIN)/coverage run -m pytest $(PYTEST_ARGS); status=$$?; \
	  $(BIN)/coverage combine -q && $(BIN)/coverage report; \
	  report=$$?; [ $$status -eq 0 ] && exit $$report || exit $$status

test: lint typecheck unit

demo: $(STAMP)
	$(BIN)/warren run demo-publisher

bench: $(STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

# Randomized soak: random faults under steady load; exits non-zero on any loss.
chaos: $(STAMP)
	$(BIN)/python -m tests.chaos.soak --minutes $(CHAOS_MINUTES) $(CHAOS_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .coverage
