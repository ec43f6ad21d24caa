# Everything a fresh Debian/Ubuntu machine needs, from apt packages to the project's .venv.
# `make demo` and `make test` do their own set-up first; `make setup` is safe to run again.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# Real components the platform drives (see README "What runs for real").
APT_PACKAGES := postgresql-15 postgresql-client-15 stunnel4 \
	openssh-client cloud-init sudo lz4 python3.11 python3.11-venv ca-certificates git make \
	systemd-container debootstrap iproute2
# Debian's interpreter, not one under /root: the `postgres` user must be able to run what
# the project installs.
PYTHON ?= $(firstword $(wildcard /usr/bin/python3.11) python3.11)
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
UV := $(or $(shell command -v uv 2>/dev/null),$(CURDIR)/.tools/bin/uv)
VENV := .venv
export UV_PYTHON_DOWNLOADS := never
# Trust the system certificate store (where a site adds its own CA).
export UV_NATIVE_TLS := 1

.PHONY: help setup apt venv demo test lint typecheck unit bench clean

help:  ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 12

setup: apt venv  ## Install apt packages and the project into .venv (idempotent)

apt:  ## Install the missing apt packages only
	@missing=$$(for p in $(APT_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing apt packages:" $$missing; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

$(CURDIR)/.tools/bin/uv:
	$(PYTHON) -m venv .tools
	.tools/bin/pip install -q 'uv>=0.5,<1'

venv: $(UV)  ## Sync .venv with uv.lock
	$(UV) sync --frozen --python $(PYTHON)

demo: setup  ## The main job end to end on embedded defaults
	$(VENV)/bin/erpcloud demo

test: setup lint typecheck unit  ## Lint, type-check and run every test against real components

lint:
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck:
	$(VENV)/bin/mypy

unit:
	$(VENV)/bin/pytest

bench: setup  ## Run every benchmark in bench/, then the summary table (build/bench/)
	@for script in bench/[a-z]*.py; do name=$$(basename $$script .py); \
		case $$name in common|summary) continue;; esac; \
		echo "== bench/$$name"; $(VENV)/bin/python -m bench.$$name || status=1; done; \
	echo "== summary"; $(VENV)/bin/python -m bench.summary && exit $${status:-0}

clean:  ## Remove build output (not .venv)
	rm -rf build .pytest_cache .mypy_cache .ruff_cache .hypothesis
