#!/usr/bin/env bash
# The browser tests (client/web/tests): builds the workspace binaries and the
# web app, installs the tests' pinned npm packages, then drives Debian's
# chromium with playwright-core against a local two-region stack.
# Screenshots and measured numbers land in artifacts/web/.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-$PWD/target}"
started=$(date +%s)

command -v "${CHROMIUM:-/usr/bin/chromium}" >/dev/null 2>&1 \
  || { echo "[test-web] chromium is missing: apt-get install chromium (scripts/setup.sh test)" >&2; exit 1; }

echo "[test-web] building the binaries and the web app" >&2
cargo build --workspace --bins
scripts/build-web.sh

echo "[test-web] installing the browser tests' npm packages" >&2
(cd client/web/tests && npm ci --no-audit --no-fund --loglevel=error)

echo "[test-web] running the browser tests" >&2
(cd client/web/tests \
  && RALLYPOINT_BIN="$target/debug/rallypoint" RALLYPOINT_BIN_DIR="$target/debug" npm test --silent)
echo "[test-web] green in $(( $(date +%s) - started ))s; artifacts in artifacts/web/" >&2
