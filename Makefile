# Two commands: `make run` (everything up, embedded, seeded) and `make test` (suite + linters).
# The first call creates .venv and installs the project into it; later calls reuse it.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: run test test-faults bench lint chromium unit integration e2e schemas clean help

help:
	@echo "make run     start PostgreSQL, NATS, the directory and the router (embedded unless DATABASE_URL/NATS_URL are set), and route sample referrals"
	@echo "make test    ruff, mypy --strict and the whole pytest suite"
	@echo "make test-faults  the fault-injection suite (crashes, restarts, scale-out on a NATS cluster, poison, hostile input)"
	@echo "make bench   benchmarks beside the bare dependencies at 500 / 100,000 / 1,000,000 sites, and 1 / 2 / 3 routers on a 3-node NATS cluster"
	@echo "make schemas regenerate contracts/schemas/*.json from the msgspec contracts"
	@echo "make clean   remove .venv and the embedded servers' state folder"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv
	$(BIN)/uv pip install --quiet --python $(BIN)/python -e '.[dev]'
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/eo run

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint chromium
	$(BIN)/pytest

# The office finder's browser tests drive Debian's Chromium (never a downloaded browser):
# installed with apt when missing and run as root; CHROMIUM=/path/to/chromium uses another.
chromium:
	@[ -n "$$CHROMIUM" ] || command -v chromium >/dev/null || \
	  ([ "$$(id -u)" = 0 ] && apt-get update -qq && \
	   DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || \
	  (echo "make test needs Chromium for the office finder tests: apt-get install chromium"; \
	   exit 1)

# The fault-injection suite: crashes, restarts, replicas, poison and hostile input, on real
# processes (loopback only). Prints its figures; long, so not part of `make test`.
# Benchmarks (not tests): router (ROUTER_TRANSACTION message and batch) and directory beside
# the bare dependencies (the router's per-referral and batched floors), at 500, 100,000 and
# 1,000,000 sites; routed referrals/s with 1, 2 and 3 routers on a 3-node NATS cluster (R3);
# a burst of 100,000 referrals into one router; a table on stdout and JSON under
# bench-results/. Options: make bench BENCH_ARGS="--sizes 500 --burst 20000" (see
# python -m tests.benchmarks.run --help).
BENCH_ARGS ?=
bench: $(STAMP)
	@command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk) || \
	  (echo "make bench needs wrk (apt-get install wrk)"; exit 1)
	$(BIN)/python -m tests.benchmarks.run $(BENCH_ARGS)

test-faults: $(STAMP)
	$(BIN)/pytest -m faults -s tests/faults

unit: $(STAMP)
	$(BIN)/pytest tests/unit

integration: $(STAMP)
	$(BIN)/pytest -m integration

e2e: $(STAMP) chromium
	$(BIN)/pytest -m e2e

schemas: $(STAMP)
	$(BIN)/python -m contracts.export

clean:
	rm -rf $(VENV) .state
