# rewards: `make run` serves on SQLite with the shipped rulesets; `make test` runs everything.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: help install dev run test lint clean

help: ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $(STAMP)

install: $(STAMP) ## create .venv and install rewards with its dev extras

run: install ## serve on http://127.0.0.1:8000 (SQLite file rewards.db, shipped rulesets/)
	$(BIN)/rewards serve --host 127.0.0.1 --port 8000

lint: install ## ruff, the import layers (import-linter) and mypy
	$(BIN)/ruff check src tests bench
	$(BIN)/lint-imports --no-cache
	$(BIN)/mypy

test: install lint ## the whole suite (PostgreSQL tests run when REWARDS_TEST_POSTGRES_URL is set)
	$(BIN)/python -m pytest

clean: ## remove the venv, caches and local databases
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache .import_linter_cache .grimp_cache .hypothesis rewards.db rewards.db-*
