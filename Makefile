# Hubbub's make targets. `make run` and `make test` do all the set-up on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
HUBBUB := $(BIN)/hubbub

.PHONY: install run test test-unit lint migrate bench status rebuild replay verify state clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## create the virtualenv and install Hubbub with its dev tools

run: $(STAMP) ## migrate and start everything (embedded PostgreSQL + NATS unless URLs are set)
	$(HUBBUB) run

test: $(STAMP) ## the whole suite on real PostgreSQL and NATS (embedded unless URLs are set)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

lint: $(STAMP) ## ruff, mypy --strict and the import-layer contracts
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

migrate: $(STAMP)
	$(HUBBUB) migrate

bench: $(STAMP) ## the benchmark harness; prints and writes bench/report.md + bench/report.json
	$(BIN)/python -m bench $(BENCH_ARGS)

status: $(STAMP)
	$(HUBBUB) projections status

rebuild: $(STAMP)
	@test -n "$(PROJECTION)" || (echo "usage: make rebuild PROJECTION=name" >&2; exit 2)
	$(HUBBUB) projections rebuild $(PROJECTION)

# `@`: stdout is the export (or the state) alone, fit for a pipe or a file.
replay: $(STAMP) ## events as JSON lines on stdout; AFTER=, STREAM=, TYPE=, SINCE=, UNTIL=, FORMAT=cloudevents
	@$(HUBBUB) audit replay $(if $(AFTER),--after $(AFTER)) $(if $(STREAM),--stream $(STREAM)) \
		$(if $(TYPE),--type $(TYPE)) $(if $(SINCE),--since $(SINCE)) $(if $(UNTIL),--until $(UNTIL)) \
		$(if $(FORMAT),--format $(FORMAT))

verify: $(STAMP) ## check every hash chain (STREAM=: one stream's); exit 1 naming the first bad event
	$(HUBBUB) audit verify $(if $(STREAM),--stream $(STREAM))

state: $(STAMP) ## STREAM=<id> [AT_POSITION=<token> | AT_TIME=<RFC 3339>]: an aggregate's state then
	@test -n "$(STREAM)" || (echo "usage: make state STREAM=<stream id> [AT_POSITION=|AT_TIME=]" >&2; exit 2)
	@$(HUBBUB) audit state $(STREAM) $(if $(AT_POSITION),--at-position $(AT_POSITION)) \
		$(if $(AT_TIME),--at-time $(AT_TIME))

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
