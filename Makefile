# The two commands that matter: `make run` and `make test`.
.PHONY: run stop test chaos bench deps build lint fmt clean-local key

## run: install what is missing, start broker, Redis, PostgreSQL and the four services
run:
	@bash deploy/local/run.sh

## stop: stop a stack that `make run` left running (terminal closed), from the pids in .local/
stop:
	@bash deploy/local/stop.sh

## test: unit and end-to-end tests (real broker, Redis, PostgreSQL started by the harness)
test:
	@bash deploy/local/test.sh

## chaos: ten minutes of load with every fault, randomised (seed printed; CHAOS_SEED to replay)
chaos:
	@bash deploy/local/test.sh --chaos

## bench: benchmarks against same-run baselines; writes docs/benchmarks.md (about 10 min)
bench:
	@bash deploy/local/bench.sh

## deps: install the broker (nisshi), redis-server, PostgreSQL and Prometheus if missing (idempotent, cached)
deps:
	@WITH_PROMETHEUS=1 bash deploy/local/install-deps.sh >/dev/null

## build: release binaries of the four services
build:
	cargo build --release --bins

## key: mint an API key, NAME=... SCOPES=write|read|write,read [KEYS_FILE=path to append to]
key:
	@test -n "$(NAME)" -a -n "$(SCOPES)" || { echo "usage: make key NAME=ci-writer SCOPES=write [KEYS_FILE=deploy/keys]" >&2; exit 2; }
	@cargo run -q --release -p command -- keys new --name "$(NAME)" --scopes "$(SCOPES)" $(if $(KEYS_FILE),--append "$(KEYS_FILE)")

## lint: formatting and clippy, warnings denied
lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

fmt:
	cargo fmt --all

## clean-local: delete the local stack's data (.local/)
clean-local:
	@bash deploy/local/stop.sh
	rm -rf .local
