/**
 * One-file ESM bundles of a TypeScript entry (our workspace packages included, read from their
 * `src/index.ts` exports), for runtimes that have no node_modules:
 * - `node`: the device machine. Only `webgpu` stays external; it resolves from the bundle's
 *   `node_modules/webgpu` (tools/device/pack-webgpu.sh puts it in `.devkit/node_modules/webgpu`).
 * - `deno`: Deno/wgpu. Nothing external: WebGPU is `navigator.gpu`, and the bundle must not import
 *   Node built-ins or `webgpu` (the build fails if it does).
 *
 * Usage: `tsx tools/src/bundle.ts --target=node|deno <entry.ts> <out.mjs>`
 */
import { build } from 'esbuild';
import { resolve } from 'node:path';
import { isMain } from './workspace.ts';

export type BundleTarget = 'node' | 'deno';

/** Gives CommonJS code inside a Node ESM bundle a `require` (ESM output has none). */
const NODE_BANNER =
  "import { createRequire as __bundleCreateRequire } from 'node:module'; const require = __bundleCreateRequire(import.meta.url);";

export async function bundleEntry(
  entry: string,
  outfile: string,
  target: BundleTarget,
  logLevel: 'silent' | 'warning' = 'warning',
): Promise<void> {
  await build({
    entryPoints: [entry],
    outfile,
    bundle: true,
    format: 'esm',
    legalComments: 'none',
    logLevel,
    ...(target === 'node'
      ? { platform: 'node', target: 'node20', external: ['webgpu'], banner: { js: NODE_BANNER } }
      : { platform: 'neutral', target: 'es2022', mainFields: ['module', 'main'] }),
  });
}

if (isMain(import.meta.url)) {
  const args = process.argv.slice(2);
  const targetArg = args.find((a) => a.startsWith('--target='))?.slice('--target='.length);
  const [entry, out] = args.filter((a) => !a.startsWith('--'));
  if ((targetArg !== 'node' && targetArg !== 'deno') || entry === undefined || out === undefined) {
    console.error('usage: tsx tools/src/bundle.ts --target=node|deno <entry.ts> <out.mjs>');
    process.exitCode = 2;
  } else {
    await bundleEntry(resolve(entry), resolve(out), targetArg);
  }
}
