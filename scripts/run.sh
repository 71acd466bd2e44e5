#!/usr/bin/env bash
# Installs what is missing, builds, and runs the whole system locally:
# two regions, every part, on loopback (`rallypoint up`). Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(scripts/setup.sh run)"
echo "[run] building (first build takes a few minutes)" >&2
cargo build --workspace --bins
scripts/build-web.sh
exec target/debug/rallypoint up "$@"
