# dbfleet — the commands a user and CI run. See README.md.
SHELL := /bin/bash
.DEFAULT_GOAL := help
.PHONY: help setup up down test unit integration lint bench

help:
	@echo "make up     - set up what is missing, start the local Vault, bring up the default fleet and prove it"
	@echo "make test   - lint, then unit, policy and integration tests (real engine, Vault, PostgreSQL, HAProxy)"
	@echo "make lint   - ruff, shellcheck on every shell script, actionlint on the CI workflow"
	@echo "make down   - destroy every stack in reverse order and stop what make up started"
	@echo "make setup  - only install/build the toolchain (cached in ~/.cache/dbfleet)"

setup:
	@bash scripts/setup.sh

up: setup
	@bash scripts/up.sh

down:
	@bash scripts/down.sh

test: setup
	@bash scripts/lint.sh
	@bash scripts/test.sh

unit: setup
	@bash scripts/test.sh unit

integration: setup
	@bash scripts/test.sh integration

lint: setup
	@bash scripts/lint.sh

bench: setup
	@source scripts/env.sh && python -m bench
