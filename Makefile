# The front door: `make run` and `make test` set themselves up from a clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test soak lint proto proto-check bench bench-million clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The whole control plane on its embedded default, with the example fanout through it.
run: $(STAMP)
	$(BIN)/fanout up --data-dir .fanout -- $(BIN)/python -P examples/fanout.py $(ARGS)

test: $(STAMP)
	$(BIN)/pytest

# Long checks (runs of minutes, a million actions); not part of `make test`.
soak: $(STAMP)
	$(BIN)/pytest -m soak --timeout 1800 tests/soak

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

proto: $(STAMP)
	$(BIN)/python scripts/gen_protos.py

proto-check: $(STAMP)
	$(BIN)/python scripts/gen_protos.py --check

# Every figure but the million, printed and written to bench/results/ (a few minutes). The Ray peer
# runs when Ray is installed: `$(BIN)/pip install -e '.[bench]'`.
bench: $(STAMP)
	$(BIN)/python -m bench.run_all

# One run of 1,000,000 actions on reusable workers (many minutes).
bench-million: $(STAMP)
	$(BIN)/python -m bench.run_all --million

clean:
	rm -rf $(VENV) .fanout .pytest_cache .mypy_cache .ruff_cache
