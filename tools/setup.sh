#!/usr/bin/env bash
# One-time set-up on a fresh machine with Node >= 20:
#  - pnpm at the version pinned in package.json (npm i -g),
#  - on Debian/Ubuntu as root: Mesa's lavapipe (software Vulkan, so WebGPU runs without a GPU; Debian 12
#    needs Mesa >= 25 from bookworm-backports) and chromium (browser tests),
#  - the workspace's dependencies.
# Safe to run again. Set NATTEN_WEB_SKIP_SYSTEM=1 to skip the system packages.
set -euo pipefail
cd "$(dirname "$0")/.."

PNPM_VERSION=$(node -p "require('./package.json').packageManager.split('@')[1]")

log() { printf '[setup] %s\n' "$*" >&2; }

install_system() {
  if [ "${NATTEN_WEB_SKIP_SYSTEM:-}" = 1 ]; then log "skipping system packages (NATTEN_WEB_SKIP_SYSTEM=1)"; return; fi
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    log "not root on a Debian-like system: skipping system packages (WebGPU needs a Vulkan driver; see docs/getting-started.md)"
    return
  fi
  local need=()
  if ! ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1 || ! ldconfig -p | grep libvulkan.so.1 >/dev/null \
     || [ "$(dpkg-query -W -f='${Version}' mesa-vulkan-drivers 2>/dev/null | cut -d. -f1)" -lt 25 ] 2>/dev/null; then
    need+=(mesa)
  fi
  command -v chromium >/dev/null 2>&1 || need+=(chromium)
  [ ${#need[@]} -eq 0 ] && { log "system packages present"; return; }
  export DEBIAN_FRONTEND=noninteractive
  if [[ " ${need[*]} " == *" mesa "* ]] && grep -q bookworm /etc/os-release 2>/dev/null; then
    local mirror
    mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    [ -n "$mirror" ] || mirror=$(awk '/^deb /{print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
    if [ -n "$mirror" ] && ! grep -rqs bookworm-backports /etc/apt/sources.list.d/; then
      echo "deb $mirror bookworm-backports main" > /etc/apt/sources.list.d/backports.list
    fi
  fi
  log "apt-get update"
  apt-get update -qq
  if [[ " ${need[*]} " == *" mesa "* ]]; then
    log "installing Mesa lavapipe (libvulkan1, mesa-vulkan-drivers)"
    if grep -q bookworm /etc/os-release 2>/dev/null; then
      apt-get install -y -qq --no-install-recommends -t bookworm-backports libvulkan1 mesa-vulkan-drivers >/dev/null
    else
      apt-get install -y -qq --no-install-recommends libvulkan1 mesa-vulkan-drivers >/dev/null
    fi
  fi
  if [[ " ${need[*]} " == *" chromium "* ]]; then
    log "installing chromium"
    apt-get install -y -qq --no-install-recommends chromium >/dev/null
  fi
}

install_pnpm() {
  if command -v pnpm >/dev/null 2>&1 && [ "$(pnpm --version 2>/dev/null)" = "$PNPM_VERSION" ]; then return; fi
  log "installing pnpm@$PNPM_VERSION"
  npm i -g "pnpm@$PNPM_VERSION" >/dev/null 2>&1
}

install_system
install_pnpm
log "pnpm install"
if [ "${CI:-}" = true ]; then pnpm install --frozen-lockfile; else pnpm install; fi
log "done: run 'pnpm demo' (main job) or 'pnpm test' (tests)"
