#!/usr/bin/env bash
# `make profile-processor`: where the processor's CPU goes while it reads a backlog, as the
# top frames of a `perf record` with call graphs (docs/benchmarks-notes.md quotes them).
#
# Starts a broker of its own (nisshi, in memory) on a free port, lets a processor create the
# topics, writes PROFILE_EVENTS events (default 2 000 000; 2 000 000 users, uniform, the
# shape of `make bench` row 4) with `loadgen produce`, then starts a processor with a fresh
# consumer group and changelog under `perf record` and stops it once it has consumed them all.
# Prints the processor's rate and the report; keeps perf.data and the logs in PROFILE_DIR
# (default a new temporary folder, printed). PROFILE_PERF=0 runs the processor without perf
# (its rate and flush time undisturbed). Needs perf (Debian's linux-perf, installed when
# missing); perf samples the CPU clock, so it works where hardware counters do not.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
EVENTS=${PROFILE_EVENTS:-2000000}
DIR=${PROFILE_DIR:-$(mktemp -d /tmp/profile-processor.XXXXXX)}
mkdir -p "$DIR"
eval "$(bash deploy/local/install-deps.sh)"
if ! command -v perf >/dev/null 2>&1; then
  echo "[profile] installing linux-perf from Debian" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends linux-perf >"$DIR/apt.log" 2>&1
fi
cargo build --release -q -p processor -p loadgen
BIN="$ROOT/target/release"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
KAFKA_PORT=$(free_port)
ADMIN_PORT=$(free_port)
export KAFKA_BROKERS="127.0.0.1:$KAFKA_PORT"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

"$BROKER_BIN" broker --listener-url "tcp://$KAFKA_BROKERS" --advertised-listener-url "tcp://$KAFKA_BROKERS" \
  --group-initial-rebalance-delay 100ms --storage-engine memory://nisshi/ >"$DIR/broker.log" 2>&1 &
broker=$!
pids+=($broker)
cpu_s() { awk '{ printf "%.2f", ($14 + $15) / 100 }' "/proc/$1/stat" 2>/dev/null; } # user+sys of a pid

metric() { # metric NAME: its value on the processor's admin port, or nothing
  { curl -s "http://127.0.0.1:$ADMIN_PORT/metrics" 2>/dev/null || true; } | awk -v n="$1" '$1 == n { print $2 }'
}
ready() { curl -sf "http://127.0.0.1:$ADMIN_PORT/readyz" >/dev/null 2>&1; }

# A first processor creates the topics (12 partitions) and is stopped.
"$BIN/processor" --listen "127.0.0.1:$ADMIN_PORT" >"$DIR/setup.log" 2>&1 &
setup=$!
pids+=($setup)
for _ in $(seq 600); do ready && break; sleep 0.1; done
ready || { echo "[profile] the first processor never got ready; see $DIR/setup.log" >&2; exit 1; }
kill -INT "$setup"; wait "$setup" || true

echo "[profile] producing $EVENTS events" >&2
"$BIN/loadgen" produce --events "$EVENTS" --in-flight 20000 --linger-ms 50 \
  --users 2000000 --zipf 0 --current-hour-share 0.95 --seed 7 >"$DIR/produce.log"
cat "$DIR/produce.log" >&2
echo "[profile] a bare consumer over the same events" >&2
"$BIN/loadgen" consume --brokers "$KAFKA_BROKERS" --events "$EVENTS" >&2

broker_cpu_before=$(cpu_s "$broker")
record=(perf record -F 499 -g --call-graph dwarf,16384 -o "$DIR/perf.data" --)
[ "${PROFILE_PERF:-1}" = 0 ] && record=()
echo "[profile] the processor${record:+ under perf record}" >&2
"${record[@]}" "$BIN/processor" --listen "127.0.0.1:$ADMIN_PORT" --group-id "profile-$$" \
  --changelog-topic "profile-changelog-$$" >"$DIR/processor.log" 2>&1 &
recorder=$!
pids+=($recorder)
start=""
rss_before=""
for _ in $(seq 36000); do
  n=$(metric analytics_processor_events_consumed_total)
  [ -z "$rss_before" ] && [ -n "$n" ] && rss_before=$(metric process_resident_memory_bytes)
  if [ -n "$n" ] && [ "${n%.*}" -gt 0 ] && [ -z "$start" ]; then start=$(date +%s.%N); fi
  if [ -n "$n" ] && [ "${n%.*}" -ge "$EVENTS" ]; then break; fi
  sleep 0.05
done
end=$(date +%s.%N)
sleep 2
rss=$(metric process_resident_memory_bytes)
pairs=$(awk '/^analytics_processor_tracked_users/ { s += $2 } END { print s }' <(curl -s "http://127.0.0.1:$ADMIN_PORT/metrics"))
python3 -c "print(f'[profile] memory: RSS {$rss / 1e6:.0f} MB, grown by {($rss - ${rss_before:-0}) / 1e6:.0f} MB for $pairs (hour, user) pairs: {($rss - ${rss_before:-0}) / max($pairs, 1):.1f} bytes a pair')" >&2
echo "[profile] CPU over the run: broker $(python3 -c "print(round($(cpu_s "$broker") - $broker_cpu_before, 1))") s, processor $(cpu_s "$(pgrep -f "profile-changelog-$$" | tail -n1)") s" >&2
flush_sum=$(metric analytics_processor_flush_duration_seconds_sum)
flush_count=$(metric analytics_processor_flush_duration_seconds_count)
echo "[profile] flushes: ${flush_count:-?}, ${flush_sum:-?} s in all (the loop consumes nothing meanwhile)" >&2
pkill -INT -f "profile-changelog-$$" || true
wait "$recorder" || true
python3 -c "print(f'[profile] processor: {$EVENTS / ($end - ${start:-$end} + 1e-9):.0f} events/s, {$end - ${start:-$end}:.1f} s')" >&2
[ "${PROFILE_PERF:-1}" = 0 ] && exit 0
echo "== self time, by function" 
perf report -i "$DIR/perf.data" --no-children -g none --percent-limit 1 --stdio --sort dso,symbol 2>/dev/null |
  grep -v '^$' | grep -v '^#' | head -n 40
echo "== with callees (inclusive), by function"
perf report -i "$DIR/perf.data" --children -g none --percent-limit 4 --stdio --sort symbol 2>/dev/null |
  grep -v '^$' | grep -v '^#' | head -n 50
echo "[profile] perf.data and logs in $DIR" >&2
