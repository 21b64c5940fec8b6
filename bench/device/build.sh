#!/usr/bin/env bash
# Bundles the benchmark harness (bench/src/run.ts and everything it imports) into one ESM file for the
# NVIDIA device machine, where there is no node_modules: .devkit/bench.mjs (and .devkit/bench-bmm.mjs, the BMM
# ops' harness), with only `webgpu` external
# (it resolves from .devkit/node_modules/webgpu, made by tools/device/make-kit.sh). Beside it writes
# .devkit/bench-build.json with the git commit, because the device has no git.
#
# Usage: bench/device/build.sh [out.mjs]        (also: pnpm bench:bundle)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
out=${1:-$root/.devkit/bench.mjs}
if [ ! -f "$root/.devkit/node_modules/webgpu/package.json" ] || [ ! -f "$root/.devkit/node.xz" ]; then
  echo "bench/device/build.sh: the device kit is missing (.devkit/node.xz, .devkit/node_modules/webgpu): run tools/device/make-kit.sh first" >&2
  exit 1
fi
"$root/tools/device/bundle.sh" "$root/bench/src/run.ts" "$out"
# The BMM ops' harness (pnpm bench:bmm) beside it, reading the same build info.
"$root/tools/device/bundle.sh" "$root/bench/src/bmm.ts" "$(dirname "$out")/bench-bmm.mjs"
commit=$(git -C "$root" rev-parse --short=12 HEAD)
if [ -n "$(git -C "$root" status --porcelain --untracked-files=no -- bench packages)" ]; then commit="$commit+dirty"; fi
printf '{"commit":"%s","builtAt":"%s"}\n' "$commit" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" > "$(dirname "$out")/bench-build.json"
echo "build info: $(cat "$(dirname "$out")/bench-build.json")"
