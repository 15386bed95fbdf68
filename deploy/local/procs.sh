# Process bookkeeping shared by run.sh and stop.sh (sourced, not run).
#
# `make run` records every server it starts in $PIDS_FILE, one line each:
#   <name> <pid> <start time in clock ticks since boot>
# The start time makes a record safe against pid reuse: a record whose pid now belongs to
# another process is ignored. Lines are written in start order; stopping goes through
# STOP_ORDER, whatever the order of the file.

# The order in which a stack is stopped: the front door, the services (command first, so no new event is
# accepted, then the consumers, then the reader), then the servers, the broker first of them
# only once nothing is in its groups any more.
STOP_ORDER="nginx command processor materializer query broker redis prometheus postgres"

# Seconds to wait for each process after its polite signal, before SIGKILL.
stop_grace() {
  case "$1" in
    command|processor|materializer|query) echo 15 ;;  # --shutdown-timeout is 10 s
    postgres) echo 30 ;;
    *) echo 10 ;;
  esac
}

# The signal that asks each process to stop quickly and cleanly.
stop_signal() {
  case "$1" in
    postgres) echo INT ;;   # "fast" shutdown: abort transactions, checkpoint, exit
    *) echo TERM ;;
  esac
}

# Start time of process $1 (field 22 of /proc/PID/stat), empty when it does not exist.
proc_start() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
  stat=${stat##*) }            # drop "pid (comm) ", comm may contain spaces
  set -- $stat                 # state ppid pgrp ... : starttime is the 20th from here
  echo "${20}"
}

# Is process $1 alive and not a zombie (a dead child not reaped yet counts as stopped)?
proc_alive() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [ "${stat%% *}" != Z ]
}

# Is the recorded process ($1 pid, $2 start time) still that process, and alive?
is_recorded_alive() {
  [ -n "$2" ] && [ "$(proc_start "$1")" = "$2" ] && proc_alive "$1"
}

# Records server $1 with pid $2.
record_pid() {
  printf '%s %s %s\n' "$1" "$2" "$(proc_start "$2")" >>"$PIDS_FILE"
}

# Stops process $2 (named $1): its stop signal, then SIGKILL after its grace period.
# Prints one line. Safe to call for a process that is already gone.
stop_one() {
  local name=$1 pid=$2 grace i
  proc_alive "$pid" || return 0
  grace=$(stop_grace "$name")
  kill "-$(stop_signal "$name")" "$pid" 2>/dev/null || true
  for (( i = 0; i < grace * 10; i++ )); do
    proc_alive "$pid" || { printf '[stop] %-12s stopped (%d.%ds)\n' "$name" $((i / 10)) $((i % 10)) >&2; return 0; }
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  printf '[stop] %-12s did not stop within %ss: killed\n' "$name" "$grace" >&2
}

# Stops every live process recorded in $PIDS_FILE, in STOP_ORDER, then removes the file.
# Records whose pid was reused by another process are skipped.
stop_recorded() {
  [ -f "$PIDS_FILE" ] || return 0
  local want name pid start
  for want in $STOP_ORDER; do
    while read -r name pid start; do
      [ "$name" = "$want" ] || continue
      is_recorded_alive "$pid" "$start" || continue
      stop_one "$name" "$pid"
    done <"$PIDS_FILE"
  done
  rm -f "$PIDS_FILE"
}

# Names of the recorded processes still alive (the same process: pid and start time).
recorded_alive() {
  [ -f "$PIDS_FILE" ] || return 0
  local name pid start
  while read -r name pid start; do
    is_recorded_alive "$pid" "$start" && echo "$name"
  done <"$PIDS_FILE"
  return 0
}

# Pids (one per line) of the processes listening on TCP port $1 of this machine.
port_pids() {
  ss -Htlnp "sport = :$1" 2>/dev/null | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u
}
