#!/usr/bin/env bash
# Builds the browser app (client/web) into client/web/dist, which `rallypoint
# up` serves at `/`. Uses trunk and the wasm-bindgen-cli that scripts/setup.sh
# installs (the CLI must equal Cargo.lock's wasm-bindgen); nothing is
# downloaded at build time. Prints the wasm size, raw and gzipped.
set -euo pipefail
cd "$(dirname "$0")/.."

fail() { echo "[build-web] $*" >&2; exit 1; }

command -v trunk >/dev/null 2>&1 || fail "trunk is missing: run scripts/setup.sh"
rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown \
  || fail "the wasm32-unknown-unknown target is missing: rustup target add wasm32-unknown-unknown"
want=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/"/, "", $3); print $3 }' Cargo.lock)
have=$(wasm-bindgen --version 2>/dev/null | awk '{ print $2 }' || true)
[ "$have" = "$want" ] \
  || fail "wasm-bindgen-cli ${have:-missing} does not match Cargo.lock's wasm-bindgen $want: cargo install wasm-bindgen-cli --version $want"

echo "[build-web] trunk build --release --offline (client/web)" >&2
(cd client/web && trunk build --release --offline)

wasm=$(ls client/web/dist/*.wasm)
raw=$(wc -c < "$wasm")
gz=$(gzip -9 -c "$wasm" | wc -c)
echo "[build-web] $wasm: $raw bytes, $gz bytes gzipped (the budget: at most 1048576 gzipped)" >&2
[ "$gz" -le 1048576 ] || fail "the gzipped wasm exceeds 1 MB"
