#!/usr/bin/env bash
# Bundles one TypeScript entry (and everything it imports, our workspace packages included) into a
# single ESM file for the device machine, where there is no node_modules. Only `webgpu` stays
# external; it resolves from .devkit/node_modules/webgpu (see pack-webgpu.sh).
#
# Usage: tools/device/bundle.sh <entry.ts> [out.mjs]     default out: .devkit/<entry name>.mjs
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
entry=${1:?usage: tools/device/bundle.sh <entry.ts> [out.mjs]}
name=$(basename "$entry"); name=${name%.*}
out=${2:-$root/.devkit/$name.mjs}
"$root/node_modules/.bin/tsx" "$root/tools/src/bundle.ts" --target=node "$entry" "$out"
echo "bundled $entry -> $out ($(du -h "$out" | cut -f1))"
