/**
 * Device script (not a test): the shared conformance suite's `large` cases (1-D 4096, 2-D 128x128, 3-D 16x32x32,
 * head dim 64; every op; f32 and f16) on the WebGPU backend against the CPU reference in f64, with the suite's
 * own tolerances. For GPUs the 2-core CI machine cannot reach (the NVIDIA device machine):
 *   tools/device/bundle.sh packages/gpu/test/large-conformance-device.ts
 *   node .devkit/large-conformance-device.mjs [--ops forward,backward] [--ranks 2,3] [--budget-s 400]
 * Prints one line per case and a summary; exit code = failures.
 */
import { parseArgs } from 'node:util';
import { type NaRank, OP_FAMILIES, type OpFamily } from '@natten-web/core';
import { cpuBackend } from '@natten-web/cpu';
import { buildCases, runNaCase } from '@natten-web/testkit';
import { createGpuBackend, GpuContext } from '../src/index.ts';

const { values } = parseArgs({
  options: {
    ops: { type: 'string', default: OP_FAMILIES.join(',') },
    ranks: { type: 'string', default: '1,2,3' },
    dtypes: { type: 'string', default: 'float32,float16' },
    'budget-s': { type: 'string', default: '400' },
  },
});
const ctx = await GpuContext.create({ powerPreference: 'high-performance' });
const a = ctx.adapterInfo;
console.log(`adapter: ${a.vendor} / ${a.device} (${a.description})`);
const backend = createGpuBackend(ctx);
const cases = buildCases({
  size: 'large',
  ops: (values.ops as string).split(',') as OpFamily[],
  ranks: (values.ranks as string).split(',').map(Number) as NaRank[],
  dtypes: (values.dtypes as string).split(',') as ('float32' | 'float16')[],
});
const t0 = performance.now();
const budgetMs = Number(values['budget-s']) * 1000;
let passed = 0;
let failed = 0;
let notRun = 0;
for (const c of cases) {
  if (performance.now() - t0 > budgetMs) {
    notRun++;
    continue;
  }
  const s = performance.now();
  try {
    const r = await runNaCase(backend, c, { reference: cpuBackend });
    const worst = r.checks.map((x) => `${x.name} ${x.comparison.maxAbs.toExponential(1)}`).join(', ');
    console.log(`${r.ok ? 'ok  ' : 'FAIL'} ${c.key} (${((performance.now() - s) / 1000).toFixed(1)} s) maxAbs: ${worst}`);
    if (!r.ok) console.log(r.message);
    r.ok ? passed++ : failed++;
  } catch (e) {
    failed++;
    console.log(`FAIL ${c.key}: ${(e as Error).message.split('\n')[0]}`);
  }
}
console.log(`large conformance on ${a.device}: ${passed} passed, ${failed} failed, ${notRun} not run (time budget) of ${cases.length}`);
ctx.destroy();
process.exit(failed);
