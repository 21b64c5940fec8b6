#!/usr/bin/env bash
# Copies just what Dawn's `webgpu` package needs at run time on linux-x64 out of node_modules:
# package.json, index.js (its entry: it require()s dist/<platform>-<arch>/dawn.node), types.d.ts,
# LICENSE.md and dist/linux-x64/dawn.node. dawn.node (21 MB) is stored xz-compressed as
# dawn.node.xz (about 5 MB); tools/device/setup.sh unpacks it on the device. --no-xz copies it plain.
#
# Usage: tools/device/pack-webgpu.sh [--no-xz] [dest]     default dest: .devkit/node_modules/webgpu
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
compress=1
if [ "${1:-}" = --no-xz ]; then compress=0; shift; fi
dest=${1:-$root/.devkit/node_modules/webgpu}
src=$(readlink -f "$root/tools/node_modules/webgpu")
[ -f "$src/dist/linux-x64/dawn.node" ] || { echo "pack-webgpu: $src has no dist/linux-x64/dawn.node (run pnpm install)" >&2; exit 1; }
version=$(node -p "require('$src/package.json').version")
rm -rf "$dest"
mkdir -p "$dest/dist/linux-x64"
cp "$src/package.json" "$src/index.js" "$src/types.d.ts" "$src/LICENSE.md" "$dest/"
if [ "$compress" = 1 ]; then
  xz -T2 -6 -c "$src/dist/linux-x64/dawn.node" > "$dest/dist/linux-x64/dawn.node.xz"
else
  cp "$src/dist/linux-x64/dawn.node" "$dest/dist/linux-x64/dawn.node"
fi
echo "packed webgpu@$version -> ${dest#"$root"/} ($(du -sh "$dest" | cut -f1))"
