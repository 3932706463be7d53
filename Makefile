# kredis: two commands. `make run` tries it; `make test` is what CI runs.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: deps run test fmt lint bench bench-operator chaos load

deps:
	@./scripts/install-deps.sh

## Start `kredis dev` (a small Kubernetes on this machine) with the operator in-process and
## apply examples/kredis.yaml (3 masters x 1 replica); prints kubectl and redis-cli commands
## once the cluster is Ready. Ctrl-C stops everything.
run: deps
	$(CARGO) run --quiet -p kredis -- dev --example

## Format check, clippy with -D warnings, and every test. Incremental compilation is off here:
## CI builds from scratch anyway, and a stale incremental cache has produced link errors.
test: export CARGO_INCREMENTAL = 0
test: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	# Examples (the benchmarks) are checked by clippy above; building them again for tests
	# would only cost CI time.
	# Four test threads: the engine and operator suites wait on redis and on timers far more
	# than they compute, so 4 nearly halve them even on 2 cores (docs/reliability.md).
	RUST_TEST_THREADS=$${RUST_TEST_THREADS:-4} $(CARGO) test --workspace --lib --bins --tests
	$(CARGO) test --workspace --doc

fmt:
	$(CARGO) fmt --all

## Benchmarks (not part of `make test`): slot migration vs redis-cli --cluster rebalance.
bench: deps
	$(CARGO) run --release -p kredis-engine --example migration_bench

## Client load through each scale step (not part of `make test`): 16 tasks of SET/GET on a
## cluster client before, during and after 3 -> 4 and 4 -> 3, kredis and redis-cli, 200k keys.
## docs/reliability.md
load: deps
	$(CARGO) run --release -p kredis-engine --example migration_bench -- --keys $${KREDIS_LOAD_KEYS:-200000} --load $${KREDIS_LOAD_TASKS:-16}

## Operator resources (not part of `make test`): 20 KRedis of 3x1 in `kredis dev` with the
## operator as its own process; time to Ready, peak RSS, CPU while idle. docs/operator-benchmark.md
bench-operator: deps
	$(CARGO) run --release -p kredis --example operator_bench

## The long chaos run (not part of `make test`, which runs one seed of 8 rounds): 3 seeds x 20
## rounds of faults under a writing client; prints a report per seed. docs/reliability.md
chaos: deps
	RUST_LOG=$${RUST_LOG:-warn} KREDIS_CHAOS_SEEDS=$${KREDIS_CHAOS_SEEDS:-1,2,3} KREDIS_CHAOS_ROUNDS=$${KREDIS_CHAOS_ROUNDS:-20} \
		$(CARGO) test -p kredis-operator --test suite chaos:: -- --nocapture
