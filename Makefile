# The two commands of the quick start are `make demo` and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-unit test-e2e check install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/stripesync demo

# Fast unit tests first, then the end-to-end suites (exit code 5 = none selected yet).
test: $(STAMP)
	$(BIN)/python -m pytest -m "not e2e" -q -p no:cacheprovider
	$(BIN)/python -m pytest -m "e2e" -q -p no:cacheprovider || [ $$? -eq 5 ]

check: $(STAMP)
	$(BIN)/ruff check stripesync tests bench
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .stripesync *.egg-info
