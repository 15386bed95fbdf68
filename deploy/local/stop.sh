#!/usr/bin/env bash
# `make stop`: stops a stack that `make run` left running (its terminal closed, or started in
# the background), from the pids it recorded in .local/run.pids. The `make run` script is
# asked first, so that its own ordered stop runs; whatever is still alive after it is stopped
# here in the same order (services, broker, Redis, Prometheus, PostgreSQL). A recorded pid
# that now belongs to another process is left alone.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
LOCAL=${ANALYTICS_LOCAL_DIR:-$ROOT/.local}
PIDS_FILE="$LOCAL/run.pids"
# shellcheck source=procs.sh
. "$ROOT/deploy/local/procs.sh"
trap '' INT TERM HUP

alive=$(recorded_alive)
if [ -z "$alive" ]; then
  echo "[stop] nothing of this checkout is running" >&2
  rm -f "$PIDS_FILE"
  exit 0
fi
while read -r name pid start; do
  [ "$name" = run ] && is_recorded_alive "$pid" "$start" || continue
  echo "[stop] asking make run (pid $pid) to stop the stack" >&2
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 1200); do proc_alive "$pid" || break; sleep 0.1; done
done <"$PIDS_FILE"
stop_recorded
echo "[stop] stopped" >&2
