#!/usr/bin/env bash
# Bundles a TypeScript entry into one dependency-free ESM file and runs it under Deno's WebGPU
# (wgpu, naga), on lavapipe here. Exit code: deno's, i.e. the number of failed checks for entries that
# use ./harness.ts. Usage: tools/deno-smoke/run.sh <entry.ts> [extra deno args...]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
entry=${1:?usage: tools/deno-smoke/run.sh <entry.ts>}
shift
name=$(basename "$entry"); name=${name%.*}
out=$root/out/deno/$name.mjs
mkdir -p "$(dirname "$out")"
"$root/node_modules/.bin/tsx" "$root/tools/src/bundle.ts" --target=deno "$entry" "$out"
export DENO_NO_UPDATE_CHECK=1
exec "$root/tools/node_modules/@deno/linux-x64-glibc/deno" run --allow-all --unstable-webgpu "$@" "$out"
