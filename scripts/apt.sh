# Sourced by scripts/setup.sh and scripts/images.sh: installs the Debian
# packages among "$@" that are missing, saying which, and fails naming the
# step that went wrong. The caller defines `step` (its log prefix).

apt_install() {
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  if [ "${#missing[@]}" -gt 0 ]; then
    step "installing ${missing[*]} (apt)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null || {
      step "FAILED: apt-get update: check the network to Debian's mirrors"
      return 1
    }
    apt-get install -y -qq "${missing[@]}" >/dev/null || {
      step "FAILED: apt-get install ${missing[*]}: run it by hand to see why"
      return 1
    }
  fi
}
