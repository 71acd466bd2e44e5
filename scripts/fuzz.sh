#!/usr/bin/env bash
# Runs every fuzz target for a bounded time (default 45 s each; FUZZ_SECONDS
# overrides): the wire decoders (protocol/fuzz) and the relay's session state
# machine (relay/fuzz). Installs cargo-fuzz when missing.
#
# cargo-fuzz wants a nightly compiler; RUSTC_BOOTSTRAP=1 lets stable build
# with the flags it passes. The targets are safe Rust, so they are built
# without a sanitizer (-s none): faster to build, and libFuzzer still finds
# panics, which is what a failure is here.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${FUZZ_SECONDS:-45}"
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "[fuzz] installing cargo-fuzz (cargo, a few minutes)" >&2
  cargo install cargo-fuzz --locked >&2
fi
export RUSTC_BOOTSTRAP=1
for spec in protocol/fuzz:decode_frames relay/fuzz:session; do
  dir="${spec%%:*}" target="${spec##*:}"
  echo "[fuzz] $target for ${seconds}s ($dir)" >&2
  (cd "$dir" && cargo fuzz run -s none "$target" -- -max_total_time="$seconds" -rss_limit_mb=2048 >&2)
done
echo "[fuzz] no crash" >&2
