#!/usr/bin/env bash
# Instructions per GET /analytics of the query service and of the bare hyper server
# (`loadgen baseline`), counted by valgrind's callgrind: a figure that does not move with the
# machine's neighbours, unlike the throughput ratio of `make bench` (docs/benchmarks-notes.md).
#
# Needs the stack of `make run` (its Redis and PostgreSQL, whose URLs are read from the
# running query process) and release binaries of query and loadgen (`make get-instructions`
# builds them; or ANALYTICS_BIN_DIR). Each server is started on
# 127.0.0.1:$PORT under callgrind, warmed up with 3 000 GETs, then counted over $REQUESTS
# GETs from 16 clients. The cache of the query is set to an hour so that every GET is
# answered from memory, as 95% of them are in production. Writes callgrind's files to
# $OUT (default /tmp/get-instructions) for `callgrind_annotate`.
#
# Usage: make get-instructions (or bash deploy/local/get-instructions.sh)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN_DIR=${ANALYTICS_BIN_DIR:-$ROOT/target/release}
PORT=${PORT:-18090}
REQUESTS=${REQUESTS:-20000}
OUT=${OUT:-/tmp/get-instructions}

die() { printf '[get-instructions] %s\n' "$*" >&2; exit 1; }
for b in query loadgen; do
  [ -x "$BIN_DIR/$b" ] || die "$BIN_DIR/$b missing: cargo build --release -p $b"
done
if ! command -v valgrind >/dev/null; then
  [ "$(id -u)" = 0 ] || die "valgrind missing: install it (apt-get install valgrind)"
  (apt-get update -qq && apt-get install -y -qq valgrind) >/dev/null
fi
QUERY_PID=$(pgrep -x query | head -n1) || die "no query running: start the stack with make run"
# The Redis and PostgreSQL URLs of the running query (the same user reads its environment).
eval "$(tr '\0' '\n' <"/proc/$QUERY_PID/environ" | grep -E '^(REDIS_URL|POSTGRES_URL)=' | sed 's/^/export /; s/=/="/; s/$/"/')"
export RUST_LOG=info CACHE_CURRENT_HOUR=1h CACHE_OTHER_HOURS=1h
mkdir -p "$OUT"

count() { # name, server command...
  local name=$1 pid i ir
  shift
  rm -f "$OUT/$name".out*
  valgrind --tool=callgrind --callgrind-out-file="$OUT/$name.out" "$@" >"$OUT/$name.log" 2>&1 &
  pid=$!
  for i in $(seq 1 300); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.2; done
  "$BIN_DIR/loadgen" run --query "127.0.0.1:$PORT" --get-share 1 --concurrency 16 \
    --requests 3000 --quiet >/dev/null
  callgrind_control -z "$pid" >/dev/null 2>&1
  "$BIN_DIR/loadgen" run --query "127.0.0.1:$PORT" --get-share 1 --concurrency 16 \
    --requests "$REQUESTS" --quiet >/dev/null
  callgrind_control -d "$pid" >/dev/null 2>&1
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  ir=$(callgrind_annotate "$OUT/$name.out.1" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1; exit }')
  printf '%s: %d instructions per GET (%s)\n' "$name" "$((ir / REQUESTS))" "$OUT/$name.out.1"
}

count bare "$BIN_DIR/loadgen" baseline --listen "127.0.0.1:$PORT"
count query "$BIN_DIR/query" --listen "127.0.0.1:$PORT"
