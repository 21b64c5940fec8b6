/**
 * Fused NA forward benchmark (not a test): time per kernel configuration for one problem.
 *
 *   npx tsx packages/gpu/test/fused-forward-bench.ts [--rank 2] [--size 128] [--heads 8] [--dim 64] [--kernel 7]
 *       [--dtype float16] [--batch 1] [--reps 30] [--warmup 3] [--configs all|default|N] [--causal]
 *       [--tiles 8x4:32:f16,8x8:32:f32,8x4:32:f32:2,4x8:32:f16:1:2] [--repeat 3] [--no-naive] [--lanes] [--multi]
 *
 * Defaults are the lead's H100 target (2-D 128x128, K=7, H=8, D=64, f16). Timing: the runtime's `timeDispatch`
 * (timing.ts): GPU timestamp queries per pass when the device has `timestamp-query` (DAWN_NODE_FLAGS disable
 * quantization), otherwise submit-to-`onSubmittedWorkDone` wall time. Each config's first dispatch (pipeline
 * compile) is excluded and reported separately. Prints median/min per config and useful
 * GFLOP/s (4*B*N*H*K^rank*D for D == Dv), best first, plus the default config's row, and (unless --no-naive)
 * the naive one-invocation-per-query kernel (`na-naive.ts`) as the regression baseline row.
 */
import { parseArgs } from 'node:util';
import { fnaFlops, lseShape, type NaRank, randn } from '@natten-web/core';
import { canonicalKeyTile, type FusedForwardConfig } from '@natten-web/wgsl';
import { ClockWarmer, fusedForward, GpuContext, type GpuTensor, planNaiveFusedForward, timeDispatch } from '../src/index.ts';

const { values } = parseArgs({
  allowNegative: true,
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
    dtype: { type: 'string', default: 'float16' },
    batch: { type: 'string', default: '1' },
    reps: { type: 'string', default: '30' },
    warmup: { type: 'string', default: '3' },
    configs: { type: 'string', default: 'all' },
    causal: { type: 'boolean', default: false },
    naive: { type: 'boolean', default: true },
    // explicit configs, e.g. --tiles 8x4:32:f16,4x8:32:f32:4 (query tile : key chunk : staging [: lanes per query,
    // needs subgroups [: queries per invocation]]); overrides --configs
    tiles: { type: 'string' },
    // run the whole list this many times, interleaved (robust against a shared, noisy GPU)
    repeat: { type: 'string', default: '1' },
    // the default config and its lane-split twins (lanes 2, 4, 8; those the problem and device allow)
    lanes: { type: 'boolean', default: false },
    // the default config with 2 and 4 queries per invocation, each single-lane and with lanes 2 and 4
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
const dtype = values.dtype === 'float32' ? 'float32' : 'float16';
const reps = Number(values.reps);
const warmup = Number(values.warmup);

const ctx = await GpuContext.create();
// Keep the GPU's clock at boost while timing (see ClockWarmer); skipped on software adapters.
const warmer = ClockWarmer.useful(ctx) ? await ClockWarmer.create(ctx) : undefined;
const a = ctx.adapterInfo;
console.log(`adapter: ${a.vendor} / ${a.architecture} / ${a.device} (${a.description}); features ${[...ctx.features].join(',')}`);
console.log(`problem: rank ${rank} ${spatial.join('x')} B=${B} H=${H} D=${D} K=${kernelSize.join("x")} ${dtype}${values.causal ? ' causal' : ''}`);

const shape = [B, ...spatial, H, D];
const query = ctx.upload(randn(shape, dtype, 1));
const key = ctx.upload(randn(shape, dtype, 2));
const value = ctx.upload(randn(shape, dtype, 3));
const output = ctx.createTensor(shape, dtype);
const logsumexp = ctx.createTensor(lseShape(B, spatial, H), 'float32');
const args = {
  query,
  key,
  value,
  output,
  logsumexp,
  kernelSize,
  isCausal: values.causal,
};
const flops = fnaFlops({ batch: B, heads: H, spatial, dim: D, kernelSize });

const all = fusedForward.configs(ctx, rank, args);
const def = fusedForward.defaultConfig(ctx, rank, args);
const sameConfig = (x: FusedForwardConfig, y: FusedForwardConfig): boolean => JSON.stringify(x) === JSON.stringify(y);
let list: FusedForwardConfig[];
if (values.configs === 'default') list = [def];
else if (values.configs === 'all') list = all;
else list = [def, ...all.filter((c) => !sameConfig(c, def))].slice(0, Number(values.configs));
if (values.tiles) {
  list = values.tiles.split(',').map((t) => {
    const [q, k, stage, lanes, qpi] = t.split(':');
    const queryTile = (q ?? '').split('x').map(Number);
    const config: FusedForwardConfig = {
      path: 'plain',
      queryTile,
      keyTile: canonicalKeyTile(rank, Number(k)),
      stage: stage === 'f16' ? 'f16' : 'f32',
      ...(lanes !== undefined && Number(lanes) > 1 ? { lanes: Number(lanes) } : {}),
      ...(qpi !== undefined && Number(qpi) > 1 ? { queriesPerInvocation: Number(qpi) } : {}),
    };
    return config;
  });
}
if (values.lanes) list = [def, ...[2, 4, 8].map((lanes) => ({ ...def, lanes }))];
if (values.multi) {
  const { lanes: _, ...single } = def;
  list = [def, ...[2, 4].flatMap((queriesPerInvocation) => [1, 2, 4].map((lanes) => ({ ...single, queriesPerInvocation, ...(lanes > 1 ? { lanes } : {}) })))];
}
list = Array.from({ length: Number(values.repeat) }, () => list).flat();
console.log(`${all.length} valid configs; timing ${list.length}; ${ctx.hasTimestamps ? 'timestamp queries' : 'submit-to-onSubmittedWorkDone wall time'} (timing.ts timeDispatch)`);

interface Row {
  config: FusedForwardConfig;
  median: number;
  min: number;
}
const rows: Row[] = [];
for (const config of list) {
  let command;
  try {
    command = fusedForward.plan(ctx, rank, args as typeof args & { output: GpuTensor }, config).command;
  } catch (e) {
    console.log(`${JSON.stringify(config)}: ${(e as Error).message.split('\n')[0]}`);
    continue;
  }
  const t0 = performance.now();
  await ctx.dispatch([command]);
  const firstMs = performance.now() - t0;
  const timing = await timeDispatch(ctx, [command], { warmup, iterations: reps, warmer });
  const median = timing.medianNs / 1e3;
  const min = timing.minNs / 1e3;
  rows.push({ config, median, min });
  console.log(
    `${JSON.stringify(config.queryTile)} x ${product(config.keyTile)} stage=${config.stage}${config.lanes === undefined ? '' : ` lanes=${config.lanes}`}${config.queriesPerInvocation === undefined ? '' : ` Q=${config.queriesPerInvocation}`}: median ${median.toFixed(1)} us, min ${min.toFixed(1)} us, ${(flops / median / 1e3).toFixed(2)} GFLOP/s useful (first dispatch incl. compile ${firstMs.toFixed(0)} ms)${sameConfig(config, def) ? '  <- default' : ''}`,
  );
}
if (values.naive) {
  const { command } = planNaiveFusedForward(ctx, rank, args as typeof args & { output: GpuTensor });
  const timing = await timeDispatch(ctx, [command], { warmup: Math.max(1, warmup), iterations: reps, warmer });
  console.log(`naive baseline: median ${(timing.medianNs / 1e3).toFixed(1)} us, min ${(timing.minNs / 1e3).toFixed(1)} us, ${(flops / timing.medianNs).toFixed(2)} GFLOP/s useful`);
}
rows.sort((p, q) => p.median - q.median);
console.log('\nbest first:');
for (const r of rows.slice(0, 10)) {
  console.log(`  ${r.median.toFixed(1).padStart(10)} us  ${JSON.stringify(r.config)}${sameConfig(r.config, def) ? '  <- default' : ''}`);
}
ctx.destroy();

function product(xs: readonly number[]): number {
  return xs.reduce((p, q) => p * q, 1);
}
