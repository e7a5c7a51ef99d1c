# rewards: `make run` serves on SQLite with the shipped rulesets; `make test` runs everything.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
VERSION_OF = $(shell $(1) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)
PYTHON_VERSION := $(call VERSION_OF,$(PYTHON))
# The venv remembers the Python that made it: `make PYTHON=python3.12 install` rebuilds a
# venv made by another version (a venv cannot change its interpreter in place).
VENV_PYTHON := $(VENV)/.python-$(PYTHON_VERSION)
STAMP  := $(VENV)/.installed-$(PYTHON_VERSION)-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: help install dev run test lint clean

help: ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

$(VENV_PYTHON):
	@test -n "$(PYTHON_VERSION)" || { echo "$(PYTHON) not found; try make PYTHON=python3.11 or python3.12"; exit 1; }
	@if [ "$(call VERSION_OF,$(BIN)/python)" != "$(PYTHON_VERSION)" ]; then \
		echo "creating $(VENV) with $(PYTHON) ($(PYTHON_VERSION))"; \
		rm -rf $(VENV) && $(PYTHON) -m venv $(VENV) && $(BIN)/pip install --quiet --upgrade pip; \
	fi
	@rm -f $(VENV)/.python-* && touch $@

$(STAMP): $(VENV_PYTHON) pyproject.toml
	$(BIN)/pip install --quiet -e '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $(STAMP)

install: $(STAMP) ## create .venv (make PYTHON=python3.12 install: another Python) and install rewards with its dev extras

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
