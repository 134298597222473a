# The local gate is the CI gate: `make test` is what .ci/run calls.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test redis lint typecheck unit scenarios cluster-test container-test demo bench chaos soak clean sysdeps

CHAOS_MINUTES ?= 5

$(STAMP): pyproject.toml
	$(PY) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || (echo "Python >= 3.11 required" && exit 1)
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,bench]'
	touch $(STAMP)

# Debian packages the full suite uses (command:package): nftables and iproute2 for the
# kernel-level partitions, prometheus (promtool checks; a real Prometheus scraping a worker),
# kubernetes-client (kubectl kustomize renders deploy/k8s; no cluster needed), shellcheck and
# curl (deploy/chaos/partition.sh is linted, and run against the local services).
# Installed here when root; otherwise the one command to run is printed, and those tests
# skip (outside CI) until then. RabbitMQ itself must already answer on 127.0.0.1:5672;
# Redis (the deduplication store's tests) is started here if nothing answers on 6379.
SYSDEPS := nft:nftables ip:iproute2 promtool:prometheus redis-server:redis-server \
	kubectl:kubernetes-client shellcheck:shellcheck curl:curl

sysdeps:
	@missing=""; for pair in $(SYSDEPS); do \
	  command -v "$${pair%%:*}" >/dev/null 2>&1 || missing="$$missing $${pair#*:}"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then \
	  echo "installing Debian packages for the full suite:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	else \
	  echo "some tests need Debian packages; run: sudo apt-get install -y$$missing"; \
	fi

lint: $(STAMP)
	$(BIN)/ruff format --check runtime services tests bench deploy
	$(BIN)/ruff check runtime services tests bench deploy
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy runtime/warren services/warren_services tests bench deploy/k8s/gen_prometheusrule.py

# coverage run (not pytest-cov) so the pytest plugin, imported before any test, is measured too
unit: $(STAMP)
	rm -f .coverage .coverage.*
	$(BIN)/coverage run -m pytest -m "not cluster and not scenario and not container" $(PYTEST_ARGS); status=$$?; \
	  $(BIN)/coverage combine -q && $(BIN)/coverage report; \
	  report=$$?; [ $$status -eq 0 ] && exit $$report || exit $$status

redis: sysdeps
	@$(PY) -c 'import socket; socket.create_connection(("127.0.0.1", 6379), timeout=2).close()' 2>/dev/null \
	  || { command -v redis-server >/dev/null && echo "starting redis-server on 127.0.0.1:6379" \
	       && redis-server --bind 127.0.0.1 --port 6379 --save "" --daemonize yes; } || true

test: sysdeps redis lint typecheck unit

# The slow end-to-end scenarios (tests marked scenario, and all of tests/chaos/): partitions
# through the fault proxy, broker restarts and memory alarms on a throwaway node, kernel-level
# cuts (root), the services through partitions and stops, the partition script, kill -9,
# token-endpoint outages, fresh-venv installs, and slow tests moved out of make test. About 10
# minutes, so apart from make test (which stays under 8); .ci/run runs both.
scenarios: sysdeps redis $(STAMP)
	$(BIN)/python -m pytest -m "scenario and not cluster and not container" $(PYTEST_ARGS)

# Failover on a throwaway three-node cluster (tests marked cluster): a few minutes, so apart
# from make test; .ci/run runs both. Needs rabbitmq-server installed; the kernel-level
# partition needs root (as in make test).
cluster-test: sysdeps $(STAMP)
	$(BIN)/python -m pytest -m "cluster and not container" $(PYTEST_ARGS)

# The compose stack (deploy/compose.yaml) on a real Docker engine, cut and stopped as the
# original incident was (tests/containers/; docs/deploy.md has the scenarios and numbers).
# Installs Debian's docker.io and debootstrap when root; uses the engine that answers, else
# starts a dockerd of its own for the run (no iptables rules, ip_forward untouched) and stops
# it after.
# Images that cannot be pulled are built here (deploy/images/build.sh). About 4 minutes.
CONTAINER_DEPS := dockerd:docker.io debootstrap:debootstrap ip:iproute2 curl:curl

container-test: $(STAMP)
	@missing=""; for pair in $(CONTAINER_DEPS); do \
	  command -v "$${pair%%:*}" >/dev/null 2>&1 || missing="$$missing $${pair#*:}"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian packages for the container tests:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else \
	    echo "the container tests need Debian packages; run: sudo apt-get install -y$$missing"; \
	  fi; \
	fi
	$(BIN)/python -m pytest -m container tests/containers $(PYTEST_ARGS)

# The incident, live: an API under load, its link to RabbitMQ silently cut for 15 s and healed;
# nothing lost. Uses WARREN_AMQP_URL, else 127.0.0.1:5672, else a throwaway node of its own.
# Reports land in demo-out/; DEMO_ARGS="--duration 30 ..." reshapes it (--help lists them).
demo: $(STAMP)
	$(BIN)/python -m warren_services.demo $(DEMO_ARGS)

bench: $(STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

# Randomized soak: random faults under steady load; exits non-zero on any loss.
chaos: $(STAMP)
	$(BIN)/python -m tests.chaos.soak --minutes $(CHAOS_MINUTES) $(CHAOS_ARGS)

# The services as an operator runs them (api, push-sender with Redis dedup, fake provider),
# under steady load and then with their broker links cut every interval: samples RSS,
# descriptors, threads, buffer depth and latency, fits slopes, fails on growth past the
# bounds or on any loss. By hand: 5 + 20 minutes at 200/s (300/s saturates 2 cores).
# CI: SOAK_ARGS=--short (4 minutes at 100/s).
soak: redis $(STAMP)
	$(BIN)/python -m tests.chaos.service_soak $(SOAK_ARGS)

clean:
	rm -rf $(VENV) build .mypy_cache .ruff_cache .pytest_cache .coverage
