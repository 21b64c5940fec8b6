#!/usr/bin/env -S npx tsx
/** `natten-web-tune` (see src/cli.ts; in the workspace: `pnpm tune -- --problem "na2d 1x64x64x4x32 K=7"`). */
import { GpuContext } from '@natten-web/gpu';
import { runCli } from '../src/cli.ts';

let ctx: GpuContext | undefined;
const code = await runCli(process.argv.slice(2), {
  out: (s) => process.stdout.write(`${s}\n`),
  err: (s) => process.stderr.write(`${s}\n`),
  context: async () => {
    ctx = await GpuContext.create();
    return ctx;
  },
});
ctx?.destroy();
process.exitCode = code;
