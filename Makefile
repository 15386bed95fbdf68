# The two commands that matter: `make run` and `make test`.
.PHONY: run stop test chaos bench get-instructions profile-processor deps build lint fmt clean-local key image

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

## get-instructions: instructions per GET, query against a bare hyper server, by callgrind (needs `make run` up)
get-instructions:
	cargo build --release -q -p query -p loadgen
	@bash deploy/local/get-instructions.sh

## profile-processor: where the processor's CPU goes over a backlog (perf record with call graphs; PROFILE_EVENTS)
profile-processor:
	@bash deploy/local/profile-processor.sh

## deps: install the broker (nisshi), redis-server, PostgreSQL and Prometheus if missing (idempotent, cached)
deps:
	@WITH_PROMETHEUS=1 bash deploy/local/install-deps.sh >/dev/null

## build: release binaries of the four services
build:
	cargo build --release --bins

## key: mint an API key, NAME=... SCOPES=write|read|write,read|browser [KEYS_FILE=path to append to]
key:
	@test -n "$(NAME)" -a -n "$(SCOPES)" || { echo "usage: make key NAME=ci-writer SCOPES=write [KEYS_FILE=deploy/keys]" >&2; exit 2; }
	@cargo run -q --release -p command -- keys new --name "$(NAME)" --scopes "$(SCOPES)" $(if $(KEYS_FILE),--append "$(KEYS_FILE)")

## image: the container image hourly-analytics:VERSION (needs Docker or Podman)
IMAGE ?= hourly-analytics:$(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
image:
	@if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then docker build -t $(IMAGE) .; \
	elif command -v podman >/dev/null 2>&1; then podman build -t $(IMAGE) .; \
	elif command -v docker >/dev/null 2>&1; then echo "make image: docker is installed but its daemon does not answer (docker info fails); start it, or use podman" >&2; exit 1; \
	else echo "make image: neither docker nor podman is installed here; install one of them, or build elsewhere from the Dockerfile" >&2; exit 1; fi

## lint: formatting, clippy with warnings denied, and the API docs with no broken link (what CI checks before `make test`)
lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	RUSTDOCFLAGS="-D rustdoc::broken_intra_doc_links -A rustdoc::private_intra_doc_links" cargo doc --workspace --no-deps --document-private-items

fmt:
	cargo fmt --all

## clean-local: delete the local stack's data (.local/)
clean-local:
	@bash deploy/local/stop.sh
	rm -rf .local
