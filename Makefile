# Two commands do all set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint install clean bench fuzz

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## Serve Quorum on SQLite with the example policy (local development values when no Slack credentials are set).
run: $(STAMP)
	QUORUM_CONFIG=$${QUORUM_CONFIG:-examples/quorum.yml} QUORUM_DEV=$${QUORUM_DEV:-1} $(BIN)/quorum serve

## Run the whole suite (PostgreSQL legs run when QUORUM_TEST_POSTGRES_URL is set).
test: $(STAMP)
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check bot handlers storage tests bench
	$(BIN)/ruff format --check bot handlers storage tests bench
	$(BIN)/mypy bot handlers storage
	$(BIN)/lint-imports

bench: $(STAMP)
	$(BIN)/python bench/rearm.py
	$(BIN)/python bench/vote_path.py

## The fuzz suite at scale: QUORUM_FUZZ_EXAMPLES per test (weighted; 1200 ≈ 12 700 requests), random draws.
fuzz: $(STAMP)
	QUORUM_FUZZ_EXAMPLES=$${QUORUM_FUZZ_EXAMPLES:-1200} $(BIN)/pytest -q -p no:cacheprovider tests/fuzz

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
