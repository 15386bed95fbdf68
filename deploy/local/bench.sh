#!/usr/bin/env bash
# `make bench`: installs what the benchmarks need if missing (cached outside the checkout),
# builds everything in release mode and runs e2e/tests/bench/, which starts its own broker,
# Redis, PostgreSQL and services on free ports and writes docs/benchmarks.md and
# docs/benchmarks-latency.png. Knobs: BENCH_SECONDS, BENCH_RUNS, BENCH_CONCURRENCY,
# BENCH_BACKLOG, BENCH_CATCHUP_SECONDS, BENCH_OUT, BENCH_GET_ONLY, BENCH_FRESHNESS_ONLY,
# BENCH_RANGES_ONLY, BENCH_RANGE_DAYS, BENCH_RANGE_USERS, BENCH_QUERY_ARGS (see
# e2e/tests/bench/).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
eval "$(WITH_FONTS=1 bash deploy/local/install-deps.sh)"
export BROKER_BIN PG_BINDIR REDIS_SERVER
cargo build --release --workspace --bins
ANALYTICS_BIN_DIR="$ROOT/target/release" \
  cargo test --release -p e2e --test bench -- --ignored --nocapture
