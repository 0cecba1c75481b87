# quorum-hub: `make run` starts a hub with its own Redis; `make test` runs every test.
# Both install what is missing first (redis-server, through the system's package manager).

CARGO ?= cargo
# Extra flags for the hub started by `make run`, e.g. make run HUB_ARGS="--listen 0.0.0.0:8080"
HUB_ARGS ?=
# Extra flags for `quorum-hub-bench suite`, e.g. make bench BENCH_ARGS="--duration 30s"
BENCH_ARGS ?=
# The previous build `make bench` measures votes beside (a commit; `none` for no comparison):
# the build before votes ran in batches and sessions shrank.
BENCH_BASELINE ?= 3250f6e
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# The Python client's tests run in this virtual environment (make python-test).
PYTHON3 ?= python3
PYVENV := target/pyvenv

.PHONY: run test python-test typescript-test bench bench-cluster cluster deps browser-deps build lint fmt clean

## run: install what is missing, build, and start a hub with its managed Redis on :8080
run: deps
	$(CARGO) build --release --locked -p quorum-hub
	./target/release/quorum-hub $(HUB_ARGS)

# Longest either run of the Rust suites may take (built beforehand) before scripts/watchdog
# prints the stacks of the test still running and stops it: a hung test fails the run.
TEST_LIMIT ?= 900

# The suites that run a second time against a 3+3 Redis Cluster (QUORUM_TEST_REDIS=cluster):
# the contract (vote rules, JSON-RPC, fan-out across hubs, rate limit, resume, gap repair,
# paging, the limits, deadlines, replies against the OpenRPC document, webhooks, and
# Server-Sent Events, Web Push, decision policies).
CLUSTER_SUITES := --test vote_rules --test jsonrpc --test fanout --test resilience --test limits --test lifecycle --test openrpc --test webhooks --test sse --test push --test policies

## test: install what is missing, check the documents' links, run every test, then the contract suites again on a
## Redis Cluster (the dashboard tests drive Chromium), then the Python and TypeScript clients' suites
test: deps browser-deps
	scripts/check-links README.md ARCHITECTURE.md SECURITY.md docs/*.md clients/python/README.md clients/typescript/README.md
	$(CARGO) test --locked --no-run
	scripts/watchdog $(TEST_LIMIT) $(CARGO) test --locked
	QUORUM_TEST_REDIS=cluster scripts/watchdog $(TEST_LIMIT) $(CARGO) test --locked $(CLUSTER_SUITES)
	$(MAKE) python-test
	$(MAKE) typescript-test

## python-test: the Python client's suite (clients/python: mypy --strict, then pytest against
## a debug hub and private redis-servers; with tests/test_mcp.py, `quorum-hub mcp` driven by
## the official MCP SDK) in a virtual environment in target/pyvenv;
## installs python3-venv if `python3 -m venv` cannot work
python-test: deps
	@if ! $(PYTHON3) -m ensurepip --version >/dev/null 2>&1 || ! $(PYTHON3) -m venv --help >/dev/null 2>&1; then \
	  if command -v apt-get >/dev/null 2>&1; then \
	    echo "installing python3-venv with apt-get"; \
	    $(SUDO) apt-get update -qq && \
	    $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3 python3-venv >/dev/null; \
	  fi; \
	  if ! $(PYTHON3) -m ensurepip --version >/dev/null 2>&1; then \
	    echo "$(PYTHON3) -m venv cannot work (no ensurepip): install Python 3.10 or newer with its venv module" >&2; exit 1; \
	  fi; \
	fi
	@if ! $(PYVENV)/bin/python -m pip --version >/dev/null 2>&1; then \
	  echo "creating $(PYVENV)"; rm -rf $(PYVENV) && $(PYTHON3) -m venv $(PYVENV); \
	fi
	$(PYVENV)/bin/pip install -q -e './clients/python[test,mcp]'
	$(CARGO) build --locked
	cd clients/python && $(CURDIR)/$(PYVENV)/bin/mypy --cache-dir $(CURDIR)/target/mypy-cache
	QUORUM_HUB_BIN=$(CURDIR)/target/debug/quorum-hub $(PYVENV)/bin/python -m pytest clients/python/tests -q

# Longest the TypeScript client's suite may take (it takes about 15 s) before scripts/watchdog stops it.
TS_TEST_LIMIT ?= 300

## typescript-test: the TypeScript client's suite (clients/typescript: npm ci, tsc --noEmit, then node --test
## against a debug hub and private redis-servers); installs Node.js 20 or newer if `node` is missing or older
typescript-test: deps
	@if ! node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)' >/dev/null 2>&1 \
	    || ! command -v npm >/dev/null 2>&1; then \
	  if command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Node.js 20 or newer and npm with apt-get"; \
	    $(SUDO) apt-get update -qq && \
	    $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null; \
	  fi; \
	  if ! node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)' >/dev/null 2>&1; then \
	    echo "Node.js 20 or newer is needed (found: $$(node --version 2>/dev/null || echo none)): install it with your package manager or from nodejs.org" >&2; exit 1; \
	  fi; \
	fi
	@node --version
	$(CARGO) build --locked
	cd clients/typescript && npm ci --no-audit --no-fund --loglevel=error
	cd clients/typescript && node node_modules/typescript/bin/tsc --noEmit -p .
	cd clients/typescript && QUORUM_HUB_BIN=$(CURDIR)/target/debug/quorum-hub $(CURDIR)/scripts/watchdog $(TS_TEST_LIMIT) \
	  node --test --test-concurrency=4 $$(node --help | grep -q -- --test-force-exit && echo --test-force-exit) test/

## bench: a release hub with its managed Redis, the load scenarios and redis-benchmark, one table
bench: deps
	BENCH_BASELINE=$(BENCH_BASELINE) ./bench/run.sh $(BENCH_ARGS)

## bench-cluster: the same load scenarios against a release hub on a local 3+3 Redis Cluster
bench-cluster: deps
	./bench/run.sh --cluster $(BENCH_ARGS)

## cluster: a local 3+3 Redis Cluster (ports 7001-7006) and two hubs on it (:8080, :8081)
cluster: deps
	HUB_ARGS="$(HUB_ARGS)" ./scripts/try-cluster.sh

## deps: install redis-server (and redis-cli, which makes test clusters) if missing
deps:
	@if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then \
	  if command -v apt-get >/dev/null 2>&1; then \
	    echo "installing redis-server with apt-get"; \
	    $(SUDO) apt-get update -qq && \
	    $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server redis-tools >/dev/null; \
	  else \
	    echo "redis-server is missing: install Redis 7 or newer with your package manager" >&2; exit 1; \
	  fi; \
	fi
	@redis-server --version

## browser-deps: install Chromium (headless, for the dashboard tests) if it is missing
browser-deps:
	@if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1 \
	    && ! command -v google-chrome >/dev/null 2>&1; then \
	  if command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium with apt-get"; \
	    $(SUDO) apt-get update -qq && \
	    $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null; \
	  else \
	    echo "chromium is missing: install Chromium or Chrome with your package manager" >&2; exit 1; \
	  fi; \
	fi

build:
	$(CARGO) build --release --locked

## lint: formatting and clippy, as CI runs them
lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets --locked -- -D warnings

fmt:
	$(CARGO) fmt

clean:
	$(CARGO) clean
	rm -rf data
