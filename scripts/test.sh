#!/usr/bin/env bash
# Installs what is missing, builds, and runs the full test suite: unit tests,
# virtual-time simulations and integration tests against real nats-server
# processes, real relays and real sockets.
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(scripts/setup.sh test)"
started=$(date +%s)
# A one-off build gains nothing from incremental caches, which would double
# the target directory's size on disk.
export CARGO_INCREMENTAL=0
# Habits that keep the code as it is: formatted, no clippy finding (the
# browser crate's wasm-only modules linted for wasm32), and no clock read in
# the sans-IO client core (client/core/clippy.toml).
echo "[test] checking formatting and lints (cargo fmt --check, cargo clippy -D warnings)" >&2
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
cargo clippy -p rallypoint-web --target wasm32-unknown-unknown --all-targets -- -D warnings
echo "[test] building every binary (integration tests start them as processes)" >&2
cargo build --workspace --bins --tests
echo "[test] running the Rust test suite" >&2
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
else
  cargo test --workspace --no-fail-fast
fi
echo "[test] running the browser tests (chromium, the latency lab's simulated locations)" >&2
scripts/test-web.sh
echo "[test] fuzzing the wire decoders and the relay session (bounded)" >&2
scripts/fuzz.sh
# Unoptimised binaries: the images are the chart's, built and checked the
# same way, in minutes rather than the release build's ~45 (the host build
# above already compiled the build scripts and proc-macros they share).
# A registry name of their own, so these never overwrite (or get pushed as)
# the release images scripts/images.sh builds by default.
echo "[test] building every image (debug binaries) and smoke-testing each" >&2
IMAGE_PROFILE=dev IMAGE_REGISTRY=localhost/rallypoint-test scripts/images.sh
IMAGE_REGISTRY=localhost/rallypoint-test scripts/images-smoke.sh
echo "[test] all green in $(( $(date +%s) - started ))s" >&2
