#!/usr/bin/env bash
# `make run`: installs what is missing, starts the broker (Tansu), Redis and PostgreSQL under
# .local/ on their standard ports (reusing any that already answer), builds the services in
# release mode and runs them in the foreground. Ctrl-C or SIGTERM stops everything it started.
# Data persist in .local/ across runs (Redis is a cache and is rebuilt from PostgreSQL).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
LOCAL="$ROOT/.local"
LOGS="$LOCAL/logs"
KAFKA_PORT=${KAFKA_PORT:-9092}
REDIS_PORT=${REDIS_PORT:-6379}
PG_PORT=${PG_PORT:-5432}

log() { printf '[run] %s\n' "$*" >&2; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() {
  local i
  for i in $(seq 1 300); do port_open "$1" && return 0; sleep 0.1; done
  log "$2 did not open port $1; see $LOGS/$2.log"; return 1
}

eval "$(WITH_PROMETHEUS=1 bash "$ROOT/deploy/local/install-deps.sh")"
mkdir -p "$LOCAL/tansu" "$LOCAL/redis" "$LOCAL/prometheus" "$LOGS"
PROM_PORT=${PROM_PORT:-9090}

pids=()
pg_started=""
cleanup() {
  trap - EXIT INT TERM
  log "stopping"
  local i
  for (( i=${#pids[@]}-1; i>=0; i-- )); do kill -TERM "${pids[i]}" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ -n "$pg_started" ]; then as_postgres "$PG_BINDIR/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null 2>&1 || true; fi
  log "stopped"
}
trap cleanup EXIT
trap 'exit 0' INT
trap 'exit 0' TERM

as_postgres() {
  if [ "$(id -u)" = 0 ]; then setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"; else "$@"; fi
}

# --- broker -----------------------------------------------------------------------------
if port_open "$KAFKA_PORT"; then
  log "reusing the Kafka broker already on 127.0.0.1:$KAFKA_PORT"
else
  log "starting Tansu on 127.0.0.1:$KAFKA_PORT (data: .local/tansu/tansu.db)"
  # Tansu 0.6.0 takes the SQLite path relative to its working directory.
  (cd "$LOCAL/tansu" && exec "$TANSU_BIN" broker \
      --listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
      --advertised-listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
      --storage-engine "sqlite://tansu.db") >>"$LOGS/broker.log" 2>&1 &
  pids+=($!)
  wait_port "$KAFKA_PORT" broker
fi

# --- redis ------------------------------------------------------------------------------
if port_open "$REDIS_PORT"; then
  log "reusing the Redis already on 127.0.0.1:$REDIS_PORT"
else
  log "starting Redis on 127.0.0.1:$REDIS_PORT (cache only, no persistence)"
  "$REDIS_SERVER" --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
    --dir "$LOCAL/redis" >>"$LOGS/redis.log" 2>&1 &
  pids+=($!)
  wait_port "$REDIS_PORT" redis
fi

# --- postgres ---------------------------------------------------------------------------
PGDATA="$LOCAL/pg"
if [ "$(id -u)" = 0 ] && ! setpriv --reuid=postgres --regid=postgres --init-groups -- test -x "$LOCAL"; then
  # The postgres user cannot reach the checkout (e.g. under /root): keep its data beside the cache.
  PGDATA="${ANALYTICS_CACHE_DIR:-/var/tmp/hourly-analytics}/pg-$(printf '%s' "$ROOT" | md5sum | cut -c1-8)"
  log "postgres cannot read $LOCAL; its data go to $PGDATA"
fi
if port_open "$PG_PORT"; then
  log "reusing the PostgreSQL already on 127.0.0.1:$PG_PORT"
else
  if [ ! -f "$PGDATA/PG_VERSION" ]; then
    log "initialising PostgreSQL in $PGDATA"
    mkdir -p "$PGDATA"
    [ "$(id -u)" = 0 ] && chown postgres:postgres "$PGDATA"
    as_postgres "$PG_BINDIR/initdb" -D "$PGDATA" -A trust -U postgres >>"$LOGS/postgres.log" 2>&1
  fi
  log "starting PostgreSQL on 127.0.0.1:$PG_PORT"
  as_postgres "$PG_BINDIR/pg_ctl" -D "$PGDATA" -l "$PGDATA/server.log" -w \
    -o "-p $PG_PORT -k $PGDATA -c listen_addresses=127.0.0.1" start >/dev/null
  pg_started=1
fi
"$PG_BINDIR/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -tAc \
  "SELECT 1 FROM pg_database WHERE datname = 'analytics'" | grep -q 1 ||
  "$PG_BINDIR/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -qc "CREATE DATABASE analytics"

# --- services ---------------------------------------------------------------------------
log "building the services (release)"
(cd "$ROOT" && cargo build --release --bins -p command -p processor -p materializer -p query)
export KAFKA_BROKERS="127.0.0.1:$KAFKA_PORT"
export REDIS_URL="redis://127.0.0.1:$REDIS_PORT/"
export POSTGRES_URL="postgres://postgres@127.0.0.1:$PG_PORT/analytics"
# Tansu 0.6.0 can leave a restarted processor without partitions (docs/operations.md).
export REJOIN_WHEN_UNASSIGNED="${REJOIN_WHEN_UNASSIGNED:-20s}"
for svc in processor materializer query command; do
  "$ROOT/target/release/$svc" >>"$LOGS/$svc.log" 2>&1 &
  pids+=($!)
done

# --- prometheus -------------------------------------------------------------------------
prom_url=""
if ! command -v prometheus >/dev/null 2>&1; then
  log "prometheus is not installed: metrics are still served at /metrics"
elif port_open "$PROM_PORT"; then
  log "something already listens on 127.0.0.1:$PROM_PORT; not starting Prometheus"
else
  prometheus --config.file="$ROOT/deploy/prometheus/prometheus.yml" \
    --storage.tsdb.path="$LOCAL/prometheus" \
    --web.listen-address="127.0.0.1:$PROM_PORT" >>"$LOGS/prometheus.log" 2>&1 &
  pids+=($!)
  prom_url="http://127.0.0.1:$PROM_PORT"
fi

ready() { curl -fsS -o /dev/null "http://$1/readyz" 2>/dev/null; }
for addr in 127.0.0.1:8081 127.0.0.1:8082 127.0.0.1:8083 127.0.0.1:8084; do
  for i in $(seq 1 600); do ready "$addr" && break; sleep 0.1; done
  ready "$addr" || log "warning: $addr is not ready yet (see $LOGS/)"
done

cat <<TXT

  The pipeline is running. Logs: .local/logs/   Stop: Ctrl-C

    ingest:   curl -i -X POST "http://127.0.0.1:8081/analytics?timestamp=\$(date +%s)000&user=alice&click"
    query:    curl -s "http://127.0.0.1:8082/analytics?timestamp=\$(date +%s)000"
    metrics:  http://127.0.0.1:8081/metrics  :8082/metrics  :8083/metrics  :8084/metrics
    prometheus: ${prom_url:-not running}   (alerts: deploy/prometheus/alerts.yml)

TXT
# Wait for a signal, or for any service to exit.
wait -n "${pids[@]}" || true
log "a process exited; stopping the rest"
