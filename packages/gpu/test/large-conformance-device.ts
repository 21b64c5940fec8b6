/**
 * Device script (not a test): the shared conformance suite's `large` cases (1-D 4096, 2-D 128x128, 3-D 16x32x32,
 * head dim 64; every op; f32 and f16) on the WebGPU backend against the CPU reference in f64, with the suite's
 * own tolerances. For GPUs the 2-core CI machine cannot reach (the NVIDIA device machine):
 *   tools/device/bundle.sh packages/gpu/test/large-conformance-device.ts
 *   node .devkit/large-conformance-device.mjs [--ops forward,backward] [--ranks 2,3] [--budget-s 400] [--set d128|d32]
 * Prints one line per case and a summary; exit code = failures.
 */
import { parseArgs } from 'node:util';
import { type NaRank, OP_FAMILIES, type OpFamily } from '@natten-web/core';
import { cpuBackend } from '@natten-web/cpu';
import { adaptToOp, buildCases, type CaseGeometry, caseKey, type NaCase, runNaCase, seedOf } from '@natten-web/testkit';
import { createGpuBackend, GpuContext } from '../src/index.ts';

const { values } = parseArgs({
  options: {
    ops: { type: 'string', default: OP_FAMILIES.join(',') },
    ranks: { type: 'string', default: '1,2,3' },
    dtypes: { type: 'string', default: 'float32,float16' },
    'budget-s': { type: 'string', default: '400' },
    // 'large': the suite's large cases; 'd128': head dim 128 problems of the fused ops (the default forward and
    // backward split rows over lanes there on GPUs with wide subgroups); 'd32': head dim 32 problems of the fused
    // ops, on grids large enough for the head-dim-32 defaults of the tensor-core path (2 forward subgroups, the dkv
    // kernel's lean layout, dq with 2 subgroups)
    set: { type: 'string', default: 'large' },
  },
});
const ctx = await GpuContext.create({ powerPreference: 'high-performance' });
const a = ctx.adapterInfo;
console.log(`adapter: ${a.vendor} / ${a.device} (${a.description})`);
const backend = createGpuBackend(ctx);
const ops = (values.ops as string).split(',') as OpFamily[];
const ranks = (values.ranks as string).split(',').map(Number) as NaRank[];
const dtypes = (values.dtypes as string).split(',') as ('float32' | 'float16')[];
const cases = values.set === 'd128' ? headDimCases(128) : values.set === 'd32' ? headDimCases(32) : buildCases({ size: 'large', ops, ranks, dtypes });

/**
 * Head dim 128 geometries (Dv 128 or 64) or head dim 32 ones (Dv 32 or 16): rpb, causal, dilation, GQA; fused
 * forward and backward only.
 */
function headDimCases(dim: 128 | 32): NaCase[] {
  const g = (spatial: number[], kernelSize: number[], o: Partial<CaseGeometry> = {}): CaseGeometry => ({
    spatial,
    kernelSize,
    dilation: spatial.map(() => 1),
    stride: spatial.map(() => 1),
    isCausal: spatial.map(() => false),
    batch: 1,
    heads: 2,
    headsKv: o.heads ?? 2,
    dim,
    dimV: dim,
    rpb: false,
    lse: true,
    ...o,
  });
  const d32 = [
    g([2048], [127], { heads: 8 }),
    g([64, 64], [7, 7], { heads: 8 }),
    g([48, 48], [7, 7], { dilation: [2, 2], isCausal: [true, false], heads: 8, headsKv: 4 }),
    g([32, 32], [13, 13], { heads: 16, dimV: 16 }),
    g([16, 16, 16], [5, 5, 5], { heads: 4 }),
  ];
  const geoms = (dim === 32 ? d32 : [
    g([512], [63], { rpb: true }),
    g([600], [31], { dilation: [3], isCausal: [true], dimV: 64 }),
    g([32, 40], [7, 9], { rpb: true }),
    g([40, 40], [13, 13], { dilation: [2, 2], isCausal: [false, true], heads: 4, headsKv: 2 }),
    g([8, 12, 12], [3, 5, 5]),
    g([8, 10, 12], [3, 3, 5], { dilation: [1, 2, 1], isCausal: [true, false, false], dimV: 64 }),
  ]).filter((x) => ranks.includes(x.spatial.length as NaRank));
  const out: NaCase[] = [];
  for (const op of ops.filter((o) => o === 'forward' || o === 'backward')) {
    for (const dtype of dtypes) {
      for (const geom of geoms) {
        const a = adaptToOp(geom, op);
        if (!a) continue;
        const key = caseKey(op, dtype, a);
        out.push({ ...a, key, op, rank: a.spatial.length as NaRank, dtype, seed: seedOf(key) });
      }
    }
  }
  return out;
}
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
