#!/usr/bin/env bash
# Builds the OCI images the Helm chart runs, one per part, FROM scratch:
#
#   <registry>/rallypoint-relay:<tag>      the relay
#   <registry>/rallypoint-collector:<tag>  the telemetry collector (and its `setup` Job)
#   <registry>/rallypoint-dashboard:<tag>  the dashboard
#   <registry>/rallypoint:<tag>            the CLI (simulate, join, probe from inside a cluster)
#   <registry>/rallypoint-web:<tag>        the browser app and its candidate list (rallypoint-static)
#
# <registry> and <tag> default to the chart's image.registry and appVersion
# (helm/rallypoint/values.yaml, Chart.yaml); override with IMAGE_REGISTRY and
# IMAGE_TAG. Push with `podman push <image>` after `podman login`.
#
# Each image is a static musl binary (release profile, debug line tables
# stripped; IMAGE_PROFILE=dev builds unoptimised binaries instead, what the
# test suite does to check every image in a fraction of the time), Debian's CA bundle, and /etc/passwd naming the chart's user
# 65532; the web image adds trunk's dist/. Nothing is pulled: podman builds
# daemonless (--isolation=chroot). scripts/images-smoke.sh checks them.
#
# Installs what is missing (podman, musl-tools, ca-certificates, the musl
# target; trunk and wasm-bindgen-cli through scripts/setup.sh). The first
# musl release build compiles every dependency again for the musl target:
# about 45 minutes on 2 shared cores; about 12 after a change to our crates.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

step() { echo "[images] $*" >&2; }
fail() { echo "[images] FAILED: $*" >&2; exit 1; }
have() { command -v "$1" >/dev/null 2>&1; }
started=$(date +%s)
elapsed() { echo "$(( $(date +%s) - $1 ))s"; }

musl=x86_64-unknown-linux-musl
# part  binary  Containerfile
parts=(
  "relay rallypoint-relay relay"
  "collector rallypoint-collector collector"
  "dashboard rallypoint-dashboard dashboard"
  "cli rallypoint cli"
  "web rallypoint-static web"
)
image_name() { case "$1" in cli) echo rallypoint ;; *) echo "rallypoint-$1" ;; esac; }

registry="${IMAGE_REGISTRY:-$(awk '/^image:/ { i = 1; next } i && /^[^ ]/ { i = 0 } i && $1 == "registry:" { print $2; exit }' helm/rallypoint/values.yaml)}"
tag="${IMAGE_TAG:-$(awk -F'"' '/^appVersion:/ { print $2 }' helm/rallypoint/Chart.yaml)}"
[ -n "$registry" ] || fail "no image.registry in helm/rallypoint/values.yaml; set IMAGE_REGISTRY"
[ -n "$tag" ] || fail "no appVersion in helm/rallypoint/Chart.yaml; set IMAGE_TAG"
revision="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
git diff --quiet HEAD 2>/dev/null || revision="$revision-dirty"
source_url="$(awk -F'"' '/^repository *=/ { print $2; exit }' Cargo.toml)"

# --- what is missing -------------------------------------------------------
source "$root/scripts/apt.sh"
apt_install podman musl-tools ca-certificates binutils
if ! rustup target list --installed | grep -qx "$musl"; then
  step "adding the $musl target (rustup)"
  rustup target add "$musl" >&2 || fail "rustup target add $musl failed"
fi
if ! have trunk || ! have wasm-bindgen; then
  step "trunk or wasm-bindgen-cli missing: scripts/setup.sh run installs them (about 15 minutes)"
  eval "$(scripts/setup.sh run)"
fi
ca_bundle=/etc/ssl/certs/ca-certificates.crt
[ -s "$ca_bundle" ] || fail "$ca_bundle is missing: apt-get install --reinstall ca-certificates"

# --- binaries ---------------------------------------------------------------
t=$(date +%s)
profile="${IMAGE_PROFILE:-release}"
case "$profile" in
  release) profile_dir=release ;;
  dev) profile_dir=debug ;;
  *) fail "IMAGE_PROFILE must be release or dev, not $profile" ;;
esac
step "cargo build --profile $profile --target $musl (relay, collector, dashboard, rallypoint, rallypoint-static)"
# ring compiles C and assembly for the target: musl-gcc is its C compiler.
export CC_x86_64_unknown_linux_musl=musl-gcc
cargo build --profile "$profile" --locked --target "$musl" \
  -p rallypoint-relay -p rallypoint-collector -p rallypoint-dashboard -p rallypoint-lab \
  --bin rallypoint-relay --bin rallypoint-collector --bin rallypoint-dashboard \
  --bin rallypoint --bin rallypoint-static \
  || fail "the musl $profile build failed (output above); a C compiler error in ring means musl-gcc is missing (apt-get install musl-tools)"
step "binaries built in $(elapsed "$t")"
bindir="target/$musl/$profile_dir"

t=$(date +%s)
step "building the browser app (scripts/build-web.sh)"
scripts/build-web.sh || fail "the browser app did not build (output above)"
step "browser app built in $(elapsed "$t")"

# --- images -----------------------------------------------------------------
stage="target/images"
rm -rf "$stage"
mkdir -p "$stage/rootfs/etc/ssl/certs"
cp "$ca_bundle" "$stage/rootfs/etc/ssl/certs/ca-certificates.crt"
echo 'nonroot:x:65532:65532:nonroot:/nonexistent:/sbin/nologin' > "$stage/rootfs/etc/passwd"
echo 'nonroot:x:65532:' > "$stage/rootfs/etc/group"

for entry in "${parts[@]}"; do
  read -r part bin file <<<"$entry"
  image="$registry/$(image_name "$part"):$tag"
  ctx="$stage/$part"
  mkdir -p "$ctx/bin"
  cp -a "$stage/rootfs" "$ctx/rootfs"
  [ -x "$bindir/$bin" ] || fail "$bindir/$bin was not built"
  if readelf -lW "$bindir/$bin" | grep -q INTERP; then
    fail "$bindir/$bin is dynamically linked: a scratch image cannot run it (is it the $musl build?)"
  fi
  # The release profile keeps debug line tables (Cargo.toml); symbols stay,
  # so panics still name functions.
  strip --strip-debug -o "$ctx/bin/$bin" "$bindir/$bin"
  if [ "$part" = web ]; then cp -a client/web/dist "$ctx/www"; fi
  t=$(date +%s)
  step "podman build $image"
  podman build --isolation=chroot --quiet \
    --build-arg VERSION="$tag" --build-arg REVISION="$revision" --build-arg SOURCE="$source_url" \
    -f "images/$file.Containerfile" -t "$image" "$ctx" >/dev/null \
    || fail "podman build of $image failed (images/$file.Containerfile, context $ctx)"
  size=$(podman image inspect --format '{{.Size}}' "$image")
  step "$image: $((size / 1000)) kB (binary $(( $(wc -c <"$ctx/bin/$bin") / 1000 )) kB), built in $(elapsed "$t")"
done

step "all images built in $(elapsed "$started"):"
for entry in "${parts[@]}"; do
  read -r part _ _ <<<"$entry"
  echo "$registry/$(image_name "$part"):$tag"
done
