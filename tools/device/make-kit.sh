#!/usr/bin/env bash
# Prepares, on this (CPU) machine, the ignored folders a device run carries:
#   .devkit/node.xz                      this machine's node binary, xz-compressed
#   .devkit/node_modules/webgpu/         Dawn's webgpu package, linux-x64 only (pack-webgpu.sh)
#   .devkit/smoke.mjs                    the bundled tools/device/smoke.ts
#   .gl/*.deb                            the Vulkan loader and GL packages (amd64) the device lacks
# and lists both folders in .git/info/exclude. Re-running refreshes webgpu and the bundle, and rebuilds
# node.xz only when the node version changed. Usage: tools/device/make-kit.sh
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"

exclude=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$exclude")"
touch "$exclude"
for p in /.devkit/ /.gl/; do grep -qxF "$p" "$exclude" || echo "$p" >> "$exclude"; done

mkdir -p .devkit
node_version=$(node --version)
if [ ! -f .devkit/node.xz ] || [ "$(cat .devkit/node.version 2>/dev/null)" != "$node_version" ]; then
  xz -T2 -c "$(command -v node)" > .devkit/node.xz.part
  mv .devkit/node.xz.part .devkit/node.xz
  echo "$node_version" > .devkit/node.version
fi
echo "node $node_version -> .devkit/node.xz ($(du -h .devkit/node.xz | cut -f1))"

if ! ls .gl/*.deb >/dev/null 2>&1; then
  mkdir -p .gl /tmp/amd64/partial
  o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64 -oAPT::Sandbox::User=root'
  # shellcheck disable=SC2086
  apt-get $o -qq update
  # shellcheck disable=SC2086
  (cd .gl && apt-get $o -qq download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
fi
echo "Vulkan loader debs -> .gl ($(du -ch .gl/*.deb | tail -1 | cut -f1)): $(cd .gl && echo *.deb)"

tools/device/pack-webgpu.sh
tools/device/bundle.sh tools/device/smoke.ts .devkit/smoke.mjs
echo "carried size: .devkit $(du -sh .devkit | cut -f1), .gl $(du -sh .gl | cut -f1), tracked tree $(git ls-files -z | du -ch --files0-from=- | tail -1 | cut -f1)"
