/**
 * Fused NA backward benchmark (a script, not a test): time per backward configuration for one problem.
 *
 *   npx tsx packages/gpu/test/fused-backward-bench.ts [--rank 2] [--size 128] [--heads 8] [--dim 64] [--kernel 7]
 *       [--dtype float16|float32|both] [--batch 1] [--reps 20] [--warmup 3] [--configs all|default|N] [--causal]
 *       [--balanced]   (only the most square tile shape per tile product, one split, fused delta: one row per product pair)
 *       [--lanes]      (also the lane-split twins, lanes 2 and 4, where the device has subgroups)
 *       [--multi]      (the default tiles with (queries per dq invocation, keys per dkv invocation) in
 *                      (1,1) (2,1) (1,2) (2,2) (4,4), each with lanes 1, 2 and 4)
 *
 * Defaults are the lead's H100 target (2-D 128x128, K=7, H=8, D=64), both dtypes. The forward output and
 * logsumexp come from the GPU fused forward. Every config of `enumerateFusedBackwardConfigs` (tiles x
 * num_splits_key x delta mode) is timed with `timeDispatch` (GPU timestamps around the whole pass list when the
 * device has `timestamp-query`, else submit-to-done wall time), after `warmup` untimed iterations that absorb
 * pipeline compiles. Prints median/min per config, best first, and the default config's row; the useful
 * backward FLOP count is 2.5x the forward's 4*B*N*H*K^rank*D (5 GEMM-like contractions vs 2).
 */
import { parseArgs } from 'node:util';
import { type FusedBackwardArgs, fnaFlops, lseShape, type NaRank, randn } from '@natten-web/core';
import { balancedShape, enumerateFusedBackwardConfigs, type FusedBackwardConfig } from '@natten-web/wgsl';
import { ClockWarmer, backwardKernelLimits, buildFusedBackward, fusedForward, GpuContext, type GpuTensor, selectFusedBackward, timeDispatch } from '../src/index.ts';

const { values } = parseArgs({
  options: {
    rank: { type: 'string', default: '2' },
    size: { type: 'string', default: '128' },
    // per-axis extents, e.g. 16x32x32 (overrides --size; the rank is its length)
    spatial: { type: 'string' },
    // per-axis kernel sizes, e.g. 3x7x7 (overrides --kernel)
    kernels: { type: 'string' },
    heads: { type: 'string', default: '8' },
    dim: { type: 'string', default: '64' },
    kernel: { type: 'string', default: '7' },
    dtype: { type: 'string', default: 'both' },
    batch: { type: 'string', default: '1' },
    reps: { type: 'string', default: '20' },
    warmup: { type: 'string', default: '3' },
    configs: { type: 'string', default: 'all' },
    causal: { type: 'boolean', default: false },
    balanced: { type: 'boolean', default: false },
    lanes: { type: 'boolean', default: false },
    // the default tiles with 2 and 4 queries per dq invocation (experimental), single-lane and with lanes 2 and 4
    multi: { type: 'boolean', default: false },
  },
});

const rank = (values.spatial ? values.spatial.split('x').length : Number(values.rank)) as NaRank;
const spatial = values.spatial ? values.spatial.split('x').map(Number) : Array.from({ length: rank }, () => Number(values.size));
const H = Number(values.heads);
const D = Number(values.dim);
const K = Number(values.kernel);
const kernelSize = values.kernels ? values.kernels.split('x').map(Number) : spatial.map(() => K);
const B = Number(values.batch);
const reps = Number(values.reps);
const warmup = Number(values.warmup);
const dtypes = values.dtype === 'both' ? (['float16', 'float32'] as const) : values.dtype === 'float32' ? (['float32'] as const) : (['float16'] as const);

const ctx = await GpuContext.create();
// Keep the GPU's clock at boost while timing (see ClockWarmer); skipped on software adapters.
const warmer = ClockWarmer.useful(ctx) ? await ClockWarmer.create(ctx) : undefined;
const a = ctx.adapterInfo;
console.log(`adapter: ${a.vendor} / ${a.architecture} / ${a.device} (${a.description}); features ${[...ctx.features].join(',')}`);
console.log(`limits: workgroup storage ${ctx.limits.maxComputeWorkgroupStorageSize} B, invocations ${ctx.limits.maxComputeInvocationsPerWorkgroup}`);
const fwdFlops = fnaFlops({ batch: B, heads: H, spatial, dim: D, kernelSize });
const usefulFlops = 2.5 * fwdFlops;
const key = (c: FusedBackwardConfig): string =>
  `q=${c.queryTile.join('x')} k=${c.keyTile.join('x')} splits=${c.numSplitsKey.join('x')} delta=${c.computeDeltaWithTorch ? 'pass' : 'fused'}${c.lanes !== undefined && c.lanes > 1 ? ` lanes=${c.lanes}` : ''}${c.queriesPerInvocation !== undefined && c.queriesPerInvocation > 1 ? ` Q=${c.queriesPerInvocation}` : ''}${c.keysPerInvocation !== undefined && c.keysPerInvocation > 1 ? ` K=${c.keysPerInvocation}` : ''}`;

const summary: Record<string, unknown>[] = [];
for (const dtype of dtypes) {
  if (dtype === 'float16' && !ctx.hasF16) {
    console.log('float16: skipped, the device has no shader-f16');
    continue;
  }
  console.log(`\nproblem: rank ${rank} ${spatial.join('x')} B=${B} H=${H} D=${D} K=${kernelSize.join("x")} ${dtype}${values.causal ? ' causal' : ''}`);
  const shape = [B, ...spatial, H, D];
  const up = (seed: number, scale = 1): GpuTensor => ctx.upload(randn(shape, dtype, seed, scale));
  const query = up(1);
  const keyT = up(2);
  const value = up(3);
  const output = ctx.createTensor(shape, dtype);
  const logsumexp = ctx.createTensor(lseShape(B, spatial, H), 'float32');
  await fusedForward(ctx, rank, { output, query, key: keyT, value, logsumexp, kernelSize, isCausal: values.causal });
  const args: FusedBackwardArgs<GpuTensor> = {
    gradQuery: ctx.createTensor(shape, dtype),
    gradKey: ctx.createTensor(shape, dtype),
    gradValue: ctx.createTensor(shape, dtype),
    query,
    key: keyT,
    value,
    output,
    gradOutput: up(4, 0.05),
    logsumexp,
    kernelSize,
    isCausal: values.causal,
  };
  const sel = selectFusedBackward(ctx, rank, args);
  const def = sel.config;
  const isBalanced = (c: FusedBackwardConfig): boolean =>
    key(c) ===
    key({
      queryTile: balancedShape(rank, c.queryTile.reduce((x, y) => x * y, 1)),
      keyTile: balancedShape(rank, c.keyTile.reduce((x, y) => x * y, 1)),
      numSplitsKey: c.numSplitsKey.map(() => 1),
      computeDeltaWithTorch: false,
      ...(c.lanes !== undefined ? { lanes: c.lanes } : {}),
    });
  const all = enumerateFusedBackwardConfigs(sel.problem, values.lanes ? backwardKernelLimits(ctx) : ctx.limits).filter((c) => !values.balanced || isBalanced(c));
  const same = (x: FusedBackwardConfig, y: FusedBackwardConfig): boolean => key(x) === key(y);
  let list: FusedBackwardConfig[];
  if (values.configs === 'default') list = [def];
  else if (values.configs === 'all') list = [def, ...all.filter((c) => !same(c, def))];
  else list = [def, ...all.filter((c) => !same(c, def))].slice(0, Number(values.configs));
  // `--configs default --lanes`: the default tiles single-lane and with lanes 2 and 4.
  if (values.lanes && values.configs === 'default') {
    const { lanes: _, ...single } = def;
    list = [single, ...[2, 4].map((lanes) => ({ ...single, lanes }))];
  }
  if (values.multi) {
    const { lanes: _, ...single } = def;
    const groups: [number, number][] = [[1, 1], [2, 1], [1, 2], [2, 2], [4, 4]];
    list = [
      def,
      ...groups.flatMap(([q, k]) =>
        [1, 2, 4].map((lanes) => ({ ...single, ...(q > 1 ? { queriesPerInvocation: q } : {}), ...(k > 1 ? { keysPerInvocation: k } : {}), ...(lanes > 1 ? { lanes } : {}) })),
      ),
    ];
  }
  console.log(`${all.length} enumerated configs; timing ${list.length}; default ${key(def)}`);
  const rows: { config: string; medianUs: number; minUs: number; method: string }[] = [];
  for (const c of list) {
    let built: ReturnType<typeof buildFusedBackward>;
    try {
      built = buildFusedBackward(ctx, rank, args, c);
    } catch (e) {
      console.log(`${key(c).padEnd(52)} not valid: ${(e as Error).message.split('\n')[0]}`);
      continue;
    }
    try {
      const t0 = performance.now();
      const r = await timeDispatch(ctx, built.commands, { warmup, iterations: reps, warmer });
      const wall = performance.now() - t0;
      const row = { config: key(c), medianUs: r.medianNs / 1e3, minUs: r.minNs / 1e3, method: r.method };
      rows.push(row);
      console.log(
        `${row.config.padEnd(52)} median ${row.medianUs.toFixed(1).padStart(9)} us  min ${row.minUs.toFixed(1).padStart(9)} us  useful ${(usefulFlops / (r.medianNs * 1e3)).toFixed(2)} TFLOP/s  (${wall.toFixed(0)} ms incl. compile)`,
      );
    } catch (e) {
      console.log(`${key(c).padEnd(52)} FAILED: ${(e as Error).message.split('\n')[0]}`);
    } finally {
      built.release();
    }
  }
  // Per-pass split of the default config (each pass timed alone; dkv reads the delta the dq pass left behind).
  const built = buildFusedBackward(ctx, rank, args, def);
  try {
    for (const cmd of built.commands) {
      const r = await timeDispatch(ctx, [cmd], { warmup, iterations: reps, warmer });
      console.log(`  pass ${cmd.kernel.key.split('/')[0]?.padEnd(32)} median ${(r.medianNs / 1e3).toFixed(1).padStart(9)} us  workgroups ${cmd.workgroups.join('x')}`);
    }
  } finally {
    built.release();
  }
  rows.sort((x, y) => x.medianUs - y.medianUs);
  console.log(`best (${dtype}):`);
  for (const r of rows.slice(0, 5)) console.log(`  ${r.config.padEnd(52)} median ${r.medianUs.toFixed(1)} us`);
  const d = rows.find((r) => r.config === key(def));
  if (d) console.log(`  default: ${d.config} median ${d.medianUs.toFixed(1)} us`);
  summary.push({ dtype, adapter: a, problem: { rank, spatial, B, H, D, K, causal: values.causal }, usefulFlops, rows });
  for (const t of [query, keyT, value, output, logsumexp, args.gradQuery, args.gradKey, args.gradValue, args.gradOutput]) t.buffer.destroy();
}
console.log(`\nJSON ${JSON.stringify(summary)}`);
ctx.destroy();
