# Every target depends on `install`, so a fresh clone needs nothing else.
VENV   := .venv
PYTHON := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install run test lint format bench bench-instructions bench-forwarder bench-api bench-system bench-data broker-order chaos rejoin cluster cluster-chaos load clean

install: $(STAMP)

# Versions come from constraints.txt (all pinned), the same for CI and the image.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

## Start PostgreSQL (embedded), the Kafka-protocol broker (tansu) and the services.
run: install
	$(VENV)/bin/shortlink dev

## The whole test suite, against real servers (started by the session when
## DATABASE_URL / KAFKA_BOOTSTRAP_SERVERS are not set), after lint and types.
test: install lint
	command -v docker-compose >/dev/null || (apt-get update -qq && apt-get install -y -qq docker-compose)
	test -x /usr/bin/chromium || (apt-get update -qq && apt-get install -y -qq chromium chromium-driver)
	# Caddy: the TLS terminator that tests/shortlink/redirect/test_tls.py runs in front.
	command -v caddy >/dev/null || (apt-get update -qq && apt-get install -y -qq caddy)
	$(VENV)/bin/pytest

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

## Redirect benchmark: the real server against a bare aiohttp baseline (docs/benchmarks.md).
bench: install
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(PYTHON) -m loadtests.bench_redirect

## Forwarder: clicks recorded and delivered per second on one core, click-to-POST delay.
bench-forwarder: install
	$(PYTHON) -m loadtests.bench_forwarder

## API: 100,000-recipient links and messages requests; stats and dashboard data with 10M clicks;
## a 470-character body against a 30-character one (BENCH_API_ARGS=--only-render: that alone).
bench-api: install
	$(PYTHON) -m loadtests.bench_api $(BENCH_API_ARGS)

## Storage at scale: 20M links and 20M clicks over 150 simulated days, bytes per row, cold
## lookups at 1M and 20M links, then the purge (BENCH_DATA_ARGS=--links N --clicks N --days N).
bench-data: install
	$(PYTHON) -m loadtests.bench_data $(BENCH_DATA_ARGS)

## Whole system on this machine: highest click rate with redirect p99 <= 10 ms and no loss.
bench-system: install
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(PYTHON) -m loadtests.bench_system

## Does the broker serve each partition's batches in offset order? Two consumers, one reading
## as served and one through shortlink.kafka.contiguous, against concurrent producers.
broker-order: install
	$(PYTHON) -m loadtests.broker_order $(BROKER_ORDER_ARGS)

## Under steady taps (malformed ones too): hostile taps and API requests (loadtests/hostile.py),
## then faults: broker paused, PostgreSQL restarted and read-only, a failing endpoint, forwarder
## killed, a redirect worker stopped. 302s = recorded = delivered, no 5xx, no dead event or
## task (CHAOS_ARGS=--quick).
chaos: install
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(PYTHON) -m loadtests.chaos $(CHAOS_ARGS)

## The forwarders' consumer group on the local broker: how long partitions stall when a
## member restarts, stops or dies, per membership setting (docs/forwarder.md).
rejoin: install
	$(PYTHON) -m loadtests.rejoin $(REJOIN_ARGS)

## The system on several hosts of this machine (network namespaces, as root): PostgreSQL
## primary + replica under pg_auto_failover, the broker, 2 redirect, 2 forwarder, sink and
## load hosts; steady taps (cluster), or one window per fault (cluster-chaos): the primary's
## host cut off, a forwarder host killed, a redirect host cut from the broker, a redirect
## host killed and restarted (loadtests/cluster.py, docs/benchmarks.md).
CLUSTER_PACKAGES := command -v wrk >/dev/null && command -v pg_autoctl >/dev/null || \
	(apt-get update -qq && apt-get install -y -qq wrk postgresql-15 postgresql-15-auto-failover)
cluster: install
	$(CLUSTER_PACKAGES)
	$(PYTHON) -m loadtests.cluster $(CLUSTER_ARGS)

cluster-chaos: install
	$(CLUSTER_PACKAGES)
	$(PYTHON) -m loadtests.cluster --chaos $(CLUSTER_ARGS)

## Locust, headless and bounded, against a running `make run` (docs/load-tests.md).
load: install
	$(PYTHON) -m loadtests.load

## Instructions per redirect under callgrind: a noise-free before/after for hot-path changes.
bench-instructions: install
	command -v valgrind >/dev/null || (apt-get update -qq && apt-get install -y -qq valgrind)
	$(PYTHON) -m loadtests.bench_instructions

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
