#!/usr/bin/env bash
# Installs what the local stack needs, idempotently:
#   - Tansu (Kafka-protocol broker) from crates.io, cached outside the checkout;
#   - redis-server and PostgreSQL from Debian, when their binaries are missing;
#   - optionally prometheus (WITH_PROMETHEUS=1) and the DejaVu font for the benchmark plot
#     (WITH_FONTS=1).
# Prints nothing but progress; a second run is a no-op.
set -euo pipefail

CACHE_DIR="${ANALYTICS_CACHE_DIR:-$HOME/.cache/hourly-analytics}"
TANSU_VERSION="0.6.0"
TANSU_ROOT="$CACHE_DIR/tansu-$TANSU_VERSION"
TANSU_BIN="$TANSU_ROOT/bin/tansu"

log() { printf '[install-deps] %s\n' "$*" >&2; }

apt_updated=0
apt_install() {
  if [ "$(id -u)" != 0 ]; then
    log "need root to apt-get install $*; install them by hand"; return 1
  fi
  if [ "$apt_updated" = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2
}

pg_bindir() {
  local d
  for d in /usr/lib/postgresql/*/bin; do
    [ -x "$d/postgres" ] && { echo "$d"; return 0; }
  done
  return 1
}

install_tansu() {
  if [ -x "$TANSU_BIN" ]; then return 0; fi
  log "building tansu $TANSU_VERSION into $TANSU_ROOT (about 10 minutes, once)"
  mkdir -p "$CACHE_DIR"
  local tgt="$CACHE_DIR/tansu-build-target"
  cargo install tansu --locked --version "$TANSU_VERSION" \
    --features dynostore,libsql --root "$TANSU_ROOT" --target-dir "$tgt" >&2
  rm -rf "$tgt"
}

install_redis() {
  command -v redis-server >/dev/null 2>&1 && return 0
  log "installing redis-server from Debian"
  apt_install redis-server
  # Debian's package starts a system instance on 6379; the project runs its own.
  if command -v systemctl >/dev/null 2>&1; then systemctl disable --now redis-server >/dev/null 2>&1 || true; fi
  service redis-server stop >/dev/null 2>&1 || true
}

install_postgres() {
  pg_bindir >/dev/null && return 0
  log "installing PostgreSQL from Debian"
  apt_install postgresql
  service postgresql stop >/dev/null 2>&1 || true
}

install_prometheus() {
  command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 && return 0
  log "installing prometheus from Debian"
  apt_install prometheus
  service prometheus stop >/dev/null 2>&1 || true
}

install_fonts() {
  [ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] && return 0
  log "installing fonts-dejavu-core from Debian (labels of the benchmark plot)"
  apt_install fonts-dejavu-core
}

install_tools() {
  command -v curl >/dev/null 2>&1 && command -v setpriv >/dev/null 2>&1 && return 0
  log "installing curl and util-linux from Debian"
  apt_install curl util-linux
}

install_tools
install_tansu
install_redis
install_postgres
if [ "${WITH_PROMETHEUS:-0}" = 1 ]; then install_prometheus || log "prometheus could not be installed"; fi
if [ "${WITH_FONTS:-0}" = 1 ]; then install_fonts || log "fonts-dejavu-core could not be installed: the plot has no labels"; fi

# Print the paths other scripts need, as shell assignments.
echo "TANSU_BIN=$TANSU_BIN"
echo "PG_BINDIR=$(pg_bindir)"
echo "REDIS_SERVER=$(command -v redis-server)"
