#!/usr/bin/env bash
# `make run`: installs what is missing, starts the broker (nisshi), Redis, PostgreSQL and
# Prometheus under .local/ on their standard ports, builds the services in release mode and
# runs them in the foreground.
#
# Stopping: Ctrl-C, SIGTERM or SIGHUP (terminal closed) starts one ordered stop that further
# signals cannot interrupt: command, processor, materializer, query, then the broker, Redis,
# Prometheus and PostgreSQL, each given a bounded time and then killed. Every server runs in
# its own session, so a signal to the terminal's process group reaches this script only.
# This holds too when `make run` is a script's background job or a supervisor's child that
# ignores SIGINT or SIGTERM (see the start of the script); under `nohup` SIGHUP stays ignored.
# Every pid is recorded in .local/run.pids, so `make stop` can stop a stack whose terminal
# is gone.
#
# A port that is already taken is reused only by a server provably of this checkout (its data
# directory is this checkout's); otherwise this script stops with one line naming the holder.
#
# Knobs (environment): FRONT_PORT KAFKA_PORT REDIS_PORT PG_PORT PROM_PORT COMMAND_PORT QUERY_PORT
# PROCESSOR_PORT MATERIALIZER_PORT; ANALYTICS_LOCAL_DIR (default .local); ANALYTICS_BIN_DIR
# (use these binaries instead of building the release ones).

# --- signals ignored on entry -------------------------------------------------------------
# A non-interactive shell cannot trap, nor reset, a signal that was ignored when it started
# (POSIX), and a background job of a non-interactive shell (`make run &` in a script) starts
# with SIGINT and SIGQUIT ignored; some supervisors ignore SIGINT or SIGTERM in what they
# start too. The traps below would then be set for nothing: a script's or a supervisor's
# SIGINT would not stop this stack as Ctrl-C does. So the script runs itself again, once,
# with the default action for SIGINT and SIGTERM (`env --default-signal`, GNU coreutils 8.31
# or later), and its traps take. SIGHUP is left as it came: ignored, it means `nohup make
# run`, which asks to outlive the terminal. /proc/PID/status's SigIgn is the mask of ignored
# signals, signal n at bit n-1: SIGINT (2) is 0x2, SIGTERM (15) 0x4000. The marker variable
# stops a second re-execution should the reset not take.
sigign=
if [ -r "/proc/$$/status" ]; then
  while read -r key val; do [ "$key" = SigIgn: ] && sigign=$val; done <"/proc/$$/status"
fi
if [[ $sigign =~ ^[0-9a-fA-F]+$ ]] && (( 16#$sigign & 0x4002 )); then
  if [ -z "${ANALYTICS_RUN_SIGNALS_RESET:-}" ] && env --default-signal=INT true 2>/dev/null; then
    exec env --default-signal=INT,TERM ANALYTICS_RUN_SIGNALS_RESET=1 "${BASH:-bash}" "$0" "$@"
  fi
  printf '[run] warning: started with SIGINT or SIGTERM ignored, and env --default-signal (GNU coreutils 8.31+) cannot restore them here: they may not stop this stack, make stop will\n' >&2
fi
unset ANALYTICS_RUN_SIGNALS_RESET sigign key val
# --- end of signals ignored on entry --------------------------------------------------------

set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
LOCAL=${ANALYTICS_LOCAL_DIR:-$ROOT/.local}
LOGS="$LOCAL/logs"
PIDS_FILE="$LOCAL/run.pids"
KAFKA_PORT=${KAFKA_PORT:-9092}
REDIS_PORT=${REDIS_PORT:-6379}
PG_PORT=${PG_PORT:-5432}
PROM_PORT=${PROM_PORT:-9090}
FRONT_PORT=${FRONT_PORT:-8080}
COMMAND_PORT=${COMMAND_PORT:-8081}
QUERY_PORT=${QUERY_PORT:-8082}
PROCESSOR_PORT=${PROCESSOR_PORT:-8083}
MATERIALIZER_PORT=${MATERIALIZER_PORT:-8084}
# shellcheck source=procs.sh
. "$ROOT/deploy/local/procs.sh"

log() { printf '[run] %s\n' "$*" >&2; }
die() { printf '[run] %s\n' "$*" >&2; exit 1; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() {
  local i
  for i in $(seq 1 300); do port_open "$1" && return 0; sleep 0.1; done
  die "$2 did not open port $1; see $LOGS/$2.log"
}
as_postgres() {
  if [ "$(id -u)" = 0 ]; then setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"; else "$@"; fi
}
# Who holds port $1, for an error message.
holder() {
  local pids pid
  pids=$(port_pids "$1")
  [ -n "$pids" ] || { echo "another process"; return; }
  for pid in $pids; do
    printf '%s (pid %s) ' "$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | cut -c1-60)" "$pid"
  done
}

mkdir -p "$LOGS"

# --- a stack of this checkout already running? ---------------------------------------
if [ -f "$PIDS_FILE" ]; then
  while read -r name pid start; do
    if [ "$name" = run ] && is_recorded_alive "$pid" "$start"; then
      die "a stack of this checkout is already running (make run, pid $pid): stop it with 'make stop'"
    fi
  done <"$PIDS_FILE"
  if [ -n "$(recorded_alive)" ]; then log "stopping what an earlier run of this checkout left running"; fi
  stop_recorded
fi

# --- the stop sequence ------------------------------------------------------------------
stopping=0
stop_all() {
  trap '' INT TERM HUP
  [ "$stopping" = 0 ] || return 0
  stopping=1
  set +e
  if [ -z "$(recorded_alive | grep -vx run)" ]; then rm -f "$PIDS_FILE"; return 0; fi
  log "stopping"
  stop_recorded
  log "stopped"
}
trap 'stop_all; exit 0' INT TERM HUP
trap stop_all EXIT
record_pid run $$

# --- installs ---------------------------------------------------------------------------
eval "$(WITH_PROMETHEUS=1 INSTALL_LOG="$LOGS/install.log" bash "$ROOT/deploy/local/install-deps.sh")"

PGDATA="$LOCAL/pg"
if [ "$(id -u)" = 0 ] && ! setpriv --reuid=postgres --regid=postgres --init-groups -- test -x "$LOCAL"; then
  # The postgres user cannot reach the checkout (e.g. under /root): keep its data beside the cache.
  PGDATA="${ANALYTICS_CACHE_DIR:-/var/tmp/hourly-analytics}/pg-$(printf '%s' "$LOCAL" | md5sum | cut -c1-8)"
  log "postgres cannot read $LOCAL; its data go to $PGDATA"
fi
mkdir -p "$LOCAL/broker" "$LOCAL/redis" "$LOCAL/prometheus"

# --- which ports are free, which servers are ours ----------------------------------------
# A server counts as ours when the data it serves are this checkout's; it is then adopted
# (recorded, and stopped with the rest).
ours_postgres() {
  local dir pid
  dir=$("$PG_BINDIR/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -tAc 'SHOW data_directory' 2>/dev/null) || return 1
  [ "$dir" = "$PGDATA" ] && [ -f "$PGDATA/postmaster.pid" ] || return 1
  pid=$(head -n1 "$PGDATA/postmaster.pid")
  proc_alive "$pid" && port_pids "$PG_PORT" | grep -qx "$pid" && echo "$pid"
}
ours_by_cwd() { # port, directory: the listener runs in that directory
  local pid
  for pid in $(port_pids "$1"); do
    [ "$(readlink "/proc/$pid/cwd")" = "$2" ] && [ -d "$2" ] && { echo "$pid"; return 0; }
  done
  return 1
}
ours_redis() { # this checkout's password is accepted and its dir is ours
  local reply pid
  reply=$(printf '*2\r\n$4\r\nAUTH\r\n$%s\r\n%s\r\n*3\r\n$6\r\nCONFIG\r\n$3\r\nGET\r\n$3\r\ndir\r\n' \
      "${#REDIS_PASSWORD}" "$REDIS_PASSWORD" |
    timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$REDIS_PORT; cat >&3; timeout 1 cat <&3" 2>/dev/null | tr -d '\r' | tail -n1)
  [ "$reply" = "$LOCAL/redis" ] || return 1
  ours_by_cwd "$REDIS_PORT" "$LOCAL/redis" || { pid=$(port_pids "$REDIS_PORT" | head -n1); [ -n "$pid" ] && echo "$pid"; }
}

# The password is generated once and kept only in Redis's own config file (mode 0600).
REDIS_CONF="$LOCAL/redis/redis.conf"
if [ ! -s "$REDIS_CONF" ]; then
  mkdir -p "$LOCAL/redis"
  (umask 077 && printf 'requirepass %s\n' "$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')" >"$REDIS_CONF")
fi
REDIS_PASSWORD=$(awk '$1 == "requirepass" { print $2 }' "$REDIS_CONF")

reuse_broker="" reuse_redis="" reuse_pg=""
if port_open "$KAFKA_PORT"; then
  reuse_broker=$(ours_by_cwd "$KAFKA_PORT" "$LOCAL/broker") ||
    die "port $KAFKA_PORT (broker) is held by $(holder "$KAFKA_PORT")which is not this checkout's broker: stop it, or run with KAFKA_PORT=<free port>"
fi
if port_open "$REDIS_PORT"; then
  reuse_redis=$(ours_redis) ||
    die "port $REDIS_PORT (Redis) is held by $(holder "$REDIS_PORT")which is not this checkout's Redis: stop it, or run with REDIS_PORT=<free port>"
fi
if port_open "$PG_PORT"; then
  reuse_pg=$(ours_postgres) ||
    die "port $PG_PORT (PostgreSQL) is held by $(holder "$PG_PORT")whose data directory is not $PGDATA: stop it, or run with PG_PORT=<free port>"
fi
for p in "$FRONT_PORT:front" "$COMMAND_PORT:command" "$QUERY_PORT:query" "$PROCESSOR_PORT:processor" "$MATERIALIZER_PORT:materializer"; do
  if port_open "${p%%:*}"; then
    die "port ${p%%:*} (${p#*:}) is held by $(holder "${p%%:*}")stop it, or run with $(printf '%s' "${p#*:}" | tr a-z A-Z)_PORT=<free port>"
  fi
done

# --- broker -----------------------------------------------------------------------------
if [ -n "$reuse_broker" ]; then
  log "reusing this checkout's broker on 127.0.0.1:$KAFKA_PORT (pid $reuse_broker)"
  record_pid broker "$reuse_broker"
else
  log "starting the broker (nisshi) on 127.0.0.1:$KAFKA_PORT (data: .local/broker/broker.db)"
  # The SQLite path is taken relative to the broker's working directory.
  (cd "$LOCAL/broker" && exec setsid "$BROKER_BIN" broker \
      --listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
      --advertised-listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
      --group-initial-rebalance-delay 100ms \
      --storage-engine "sqlite://broker.db") >>"$LOGS/broker.log" 2>&1 &
  record_pid broker $!
  wait_port "$KAFKA_PORT" broker
fi

# --- redis ------------------------------------------------------------------------------
if [ -n "$reuse_redis" ]; then
  log "reusing this checkout's Redis on 127.0.0.1:$REDIS_PORT (pid $reuse_redis)"
  record_pid redis "$reuse_redis"
else
  log "starting Redis on 127.0.0.1:$REDIS_PORT (cache only, no persistence, password in $REDIS_CONF)"
  (cd "$LOCAL/redis" && exec setsid "$REDIS_SERVER" "$REDIS_CONF" --port "$REDIS_PORT" --bind 127.0.0.1 \
      --save '' --appendonly no --dir "$LOCAL/redis") >>"$LOGS/redis.log" 2>&1 &
  record_pid redis $!
  wait_port "$REDIS_PORT" redis
fi

# --- postgres ---------------------------------------------------------------------------
if [ -n "$reuse_pg" ]; then
  log "reusing this checkout's PostgreSQL on 127.0.0.1:$PG_PORT (pid $reuse_pg)"
  record_pid postgres "$reuse_pg"
else
  if [ ! -f "$PGDATA/PG_VERSION" ]; then
    log "initialising PostgreSQL in $PGDATA"
    mkdir -p "$PGDATA"
    [ "$(id -u)" = 0 ] && chown postgres:postgres "$PGDATA"
    as_postgres "$PG_BINDIR/initdb" -D "$PGDATA" -A trust -U postgres >>"$LOGS/postgres.log" 2>&1
  fi
  log "starting PostgreSQL on 127.0.0.1:$PG_PORT"
  as_pg=()
  [ "$(id -u)" = 0 ] && as_pg=(setpriv --reuid=postgres --regid=postgres --init-groups --)
  setsid "${as_pg[@]}" "$PG_BINDIR/postgres" -D "$PGDATA" -p "$PG_PORT" -k "$PGDATA" \
    -c listen_addresses=127.0.0.1 >>"$LOGS/postgres.log" 2>&1 &
  record_pid postgres $!
  wait_port "$PG_PORT" postgres
  for _ in $(seq 1 100); do
    "$PG_BINDIR/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" && break
    sleep 0.1
  done
fi
"$PG_BINDIR/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -tAc \
  "SELECT 1 FROM pg_database WHERE datname = 'analytics'" | grep -q 1 ||
  "$PG_BINDIR/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -qc "CREATE DATABASE analytics"
# The materializer writes as analytics_writer, the query reads as analytics_reader (SELECT only).
"$PG_BINDIR/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -d analytics -qv ON_ERROR_STOP=1 \
  -f "$ROOT/deploy/postgres/roles.sql" >>"$LOGS/postgres.log" 2>&1 ||
  die "cannot create the PostgreSQL roles (deploy/postgres/roles.sql); see $LOGS/postgres.log"

# --- services ---------------------------------------------------------------------------
if [ -n "${ANALYTICS_BIN_DIR:-}" ]; then
  BIN_DIR=$ANALYTICS_BIN_DIR
else
  log "building the services (release; a few minutes the first time, output in $LOGS/build.log)"
  t0=$SECONDS
  if ! (cd "$ROOT" && cargo build --release --bins -p command -p processor -p materializer -p query) \
      >"$LOGS/build.log" 2>&1; then
    tail -n 30 "$LOGS/build.log" >&2
    die "the build failed; see $LOGS/build.log"
  fi
  log "built in $((SECONDS - t0)) s"
  BIN_DIR="$ROOT/target/release"
fi
export KAFKA_BROKERS="127.0.0.1:$KAFKA_PORT"
# The local broker keeps its log in SQLite here, where every fetch that finds nothing costs it
# about a millisecond: with the consumers' 20 ms fetch wait it burns a whole core while the
# stack is idle, half a core at 100 ms (docs/operations.md, "Local broker"). So this stack's
# consumers wait up to 100 ms unless KAFKA_OPTIONS says otherwise: a write shows some 50 ms
# later than with 20 ms, and the idle machine stays quiet.
export KAFKA_OPTIONS="${KAFKA_OPTIONS:-fetch.wait.max.ms=100}"
export REDIS_URL="redis://:$REDIS_PASSWORD@127.0.0.1:$REDIS_PORT/"
pg_url() { echo "postgres://$1@127.0.0.1:$PG_PORT/analytics"; }
for svc in processor:$PROCESSOR_PORT materializer:$MATERIALIZER_PORT query:$QUERY_PORT command:$COMMAND_PORT; do
  name=${svc%%:*}
  case $name in
    query) pg_role=analytics_reader ;;
    *) pg_role=analytics_writer ;;
  esac
  POSTGRES_URL=$(pg_url $pg_role) setsid "$BIN_DIR/$name" --listen "127.0.0.1:${svc#*:}" >>"$LOGS/$name.log" 2>&1 &
  record_pid "$name" $!
done

# --- prometheus -------------------------------------------------------------------------
prom_url=""
if ! command -v prometheus >/dev/null 2>&1; then
  log "prometheus is not installed: metrics are still served at /metrics"
elif port_open "$PROM_PORT"; then
  log "port $PROM_PORT is held by $(holder "$PROM_PORT")not starting Prometheus (PROM_PORT=<free port> to start one)"
else
  setsid prometheus --config.file="$ROOT/deploy/prometheus/prometheus.yml" \
    --storage.tsdb.path="$LOCAL/prometheus" \
    --web.listen-address="127.0.0.1:$PROM_PORT" >>"$LOGS/prometheus.log" 2>&1 &
  record_pid prometheus $!
  prom_url="http://127.0.0.1:$PROM_PORT"
fi

# --- the front door (nginx) -----------------------------------------------------------
NGINX_DIR="$LOCAL/nginx"
mkdir -p "$NGINX_DIR"
sed -e "s|@PREFIX@|$NGINX_DIR|g" -e "s|@LISTEN@|127.0.0.1:$FRONT_PORT|" \
    -e "s|@COMMAND@|server 127.0.0.1:$COMMAND_PORT;|" -e "s|@QUERY@|server 127.0.0.1:$QUERY_PORT;|" \
    "$ROOT/deploy/nginx/nginx.conf.template" >"$NGINX_DIR/nginx.conf"
"$NGINX_BIN" -t -q -p "$NGINX_DIR" -e "$NGINX_DIR/error.log" -c "$NGINX_DIR/nginx.conf" >>"$LOGS/nginx.log" 2>&1 ||
  die "the front door's config does not pass nginx -t; see $LOGS/nginx.log"
setsid "$NGINX_BIN" -p "$NGINX_DIR" -e "$NGINX_DIR/error.log" -c "$NGINX_DIR/nginx.conf" >>"$LOGS/nginx.log" 2>&1 &
record_pid nginx $!
wait_port "$FRONT_PORT" "the front door (nginx)"

ready() { curl -fsS -o /dev/null "http://$1/readyz" 2>/dev/null; }
for port in "$COMMAND_PORT" "$QUERY_PORT" "$PROCESSOR_PORT" "$MATERIALIZER_PORT"; do
  for _ in $(seq 1 600); do ready "127.0.0.1:$port" && break; sleep 0.1; done
  ready "127.0.0.1:$port" || log "warning: 127.0.0.1:$port is not ready yet (see $LOGS/)"
done

cat <<TXT

  The pipeline is running. Logs: $LOGS/   Stop: Ctrl-C (or 'make stop' from another terminal)

    ingest:   curl -i -X POST "http://127.0.0.1:$FRONT_PORT/analytics?timestamp=\$(date +%s)000&user=alice&click"
    query:    curl -s "http://127.0.0.1:$FRONT_PORT/analytics?timestamp=\$(date +%s)000"
    (the front door :$FRONT_PORT; command :$COMMAND_PORT and query :$QUERY_PORT answer directly too)
    metrics:  http://127.0.0.1:$COMMAND_PORT/metrics  :$QUERY_PORT/metrics  :$PROCESSOR_PORT/metrics  :$MATERIALIZER_PORT/metrics
    prometheus: ${prom_url:-not running}   (alerts: deploy/prometheus/alerts.yml)
    redis:    REDISCLI_AUTH=\$(awk '\$1=="requirepass"{print \$2}' $REDIS_CONF) redis-cli -p $REDIS_PORT

TXT
# Wait for a signal, or for any server to exit.
mapfile -t children < <(awk '$1 != "run" { print $2 }' "$PIDS_FILE")
while :; do
  for pid in "${children[@]}"; do
    proc_alive "$pid" || { log "$(awk -v p="$pid" '$2 == p { print $1 }' "$PIDS_FILE") (pid $pid) exited; stopping the rest"; exit 1; }
  done
  sleep 1 &
  wait $! || true
done
