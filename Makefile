# The two commands a newcomer needs: `make demo` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
DEMO   ?= demo

.PHONY: demo test bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.test-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.installed

# Unsubscribe links are signed with a key from the environment; the demo
# makes a throw-away one when none is set (never a key kept in a file).
export RELMAIL_SIGNING_KEY ?= $(shell $(PYTHON) -c "import secrets; print(secrets.token_hex(24))")

## Build the demo shop in ./demo on SQLite and run the whole job on it:
## plan this week's campaign, render and send it to ./demo/outbox, summarize.
demo: $(VENV)/.installed
	rm -rf $(DEMO)
	$(BIN)/relmail init $(DEMO)
	$(BIN)/relmail -p $(DEMO) db upgrade
	$(BIN)/relmail -p $(DEMO) demo --seed 7
	$(BIN)/relmail -p $(DEMO) plan weekly --window this-week
	$(BIN)/relmail -p $(DEMO) send weekly --window this-week

## Install the test dependencies and run the whole suite (SQLite, and
## PostgreSQL when it is reachable; see tests/conftest.py).
test: $(VENV)/.test-installed
	$(BIN)/python -m pytest -n auto -q $(PYTEST_ARGS)

bench: $(VENV)/.test-installed
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) $(DEMO) .pytest_cache .hypothesis
