#!/usr/bin/env bash
# `make test` (and `make chaos` with --chaos): installs the test dependencies if missing (cached outside the checkout),
# builds the service binaries and runs every test. Integration tests start their own broker,
# Redis and PostgreSQL on free ports with temporary data; they never touch .local/.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
eval "$(WITH_PROMETHEUS=1 WITH_SCHEMATHESIS=1 WITH_VALIDATORS=1 WITH_BROWSER=1 bash deploy/local/install-deps.sh)"
export BROKER_BIN PG_BINDIR REDIS_SERVER NGINX_BIN SCHEMATHESIS_BIN VALIDATORS_BIN_DIR CHROMIUM_BIN PLAYWRIGHT_DIR
cargo build --workspace --bins
if [ "${1:-}" = "--chaos" ]; then
  # Keep the servers' logs and data for diagnosis (the path is printed).
  KEEP_E2E_DIR=1 CHAOS_SECONDS="${CHAOS_SECONDS:-600}" CHAOS_FULL=1 cargo test -p e2e --test chaos -- --nocapture
else
  cargo test --workspace
fi
