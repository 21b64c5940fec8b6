/**
 * Device script (not a test): correctness and speed of the generation-3 tensor-core fused forward (`fusedForwardMma`,
 * several subgroups per workgroup) on an adapter with `chromium-experimental-subgroup-matrix` (the NVIDIA device
 * machine). Bundle with `tools/device/bundle.sh packages/gpu/test/mma-device.ts` and run there.
 *
 * 1. Correctness (`--mode check`): small problems (ranks 1-3, causal, dilation, GQA, Dv != D, partial tiles, D=128)
 *    against the CPU reference (f64 on the same f16 inputs): max abs error of out and lse, NaN check; the default
 *    config, or every config with `--sweep true`.
 * 2. Speed (`--mode speed`): the benchmark problems, the default config (and the `--top` cheapest by the cost model
 *    with `--sweep true`) next to the plain path's default, GPU time from timestamp queries (median, warm clocks).
 * `--only a,b` keeps the speed problems whose name contains any of the parts.
 */
import { parseArgs } from 'node:util';
import { fnaFlops, tensor } from '@natten-web/core';
import { fusedForward as cpuFusedForward } from '@natten-web/cpu';
import {
  ClockWarmer,
  defaultMmaConfig,
  type DispatchCommand,
  enumerateMmaConfigs,
  fusedForward,
  fusedForwardMma,
  GpuContext,
  type GpuTensor,
  mmaAvailability,
  mmaConfigCost,
  type MmaForwardConfig,
  planFusedForwardMma,
  timeDispatch,
} from '../src/index.ts';
import { free, gpuArgs, hostArgs, makeArgs, maxErr, type Problem } from './device-forward-problems.ts';

const { values } = parseArgs({
  options: {
    mode: { type: 'string', default: 'both' },
    sweep: { type: 'string', default: 'false' },
    only: { type: 'string', default: '' },
    reps: { type: 'string', default: '20' },
    top: { type: 'string', default: '8' },
  },
});

const ctx = await GpuContext.create({ powerPreference: 'high-performance' });
// Keep the GPU's clock at boost while timing (see ClockWarmer); skipped on software adapters.
const warmer = ClockWarmer.useful(ctx) ? await ClockWarmer.create(ctx) : undefined;
const a = ctx.adapterInfo;
console.log(`adapter: ${a.vendor} / ${a.architecture} / ${a.device} (${a.description}) subgroups ${a.subgroupMinSize}..${a.subgroupMaxSize}`);
console.log(`features: ${[...ctx.features].join(', ')}`);
console.log(`subgroup matrix: ${ctx.subgroupMatrix.map((c) => `${c.componentType}->${c.resultComponentType} ${c.M}x${c.N}x${c.K}`).join(', ') || 'none'}`);
const avail = mmaAvailability(ctx);
console.log(`mma path: ${'why' in avail ? `unavailable (${avail.why})` : 'available'}`);


function label(c: MmaForwardConfig): string {
  return `q=${c.queryTile.join('x')} bk=${c.keyChunk} nsg=${c.subgroups}`;
}

let failures = 0;
if (values.mode !== 'speed' && !('why' in avail)) {
  const checks: Problem[] = [
    { name: '1d L=37 K=7', rank: 1, spatial: [37], heads: 2, dim: 32, kernelSize: [7] },
    { name: '1d L=100 K=9 d=3 causal', rank: 1, spatial: [100], heads: 2, dim: 16, kernelSize: [9], dilation: [3], isCausal: [true] },
    { name: '2d 19x23 K=5x7', rank: 2, spatial: [19, 23], heads: 2, dim: 64, kernelSize: [5, 7] },
    { name: '2d 20x17 K=4x6 d=2x1 causal TF', rank: 2, spatial: [20, 17], heads: 3, dim: 32, kernelSize: [4, 6], dilation: [2, 1], isCausal: [true, false] },
    { name: '2d 16x16 K=7 GQA Dv=32', rank: 2, spatial: [16, 16], heads: 4, headsKv: 2, dim: 64, dimV: 32, kernelSize: [7, 7] },
    { name: '2d 33x40 K=13 d=2 D=128', rank: 2, spatial: [33, 40], heads: 2, dim: 128, kernelSize: [13, 13], dilation: [2, 2] },
    { name: '3d 6x9x11 K=3x5x5 causal FTF', rank: 3, spatial: [6, 9, 11], heads: 2, dim: 32, kernelSize: [3, 5, 5], isCausal: [false, true, false] },
    { name: '3d 8x8x8 K=3x3x3 d=2 B=2', rank: 3, spatial: [8, 8, 8], heads: 1, dim: 16, kernelSize: [3, 3, 3], dilation: [2, 2, 2], batch: 2 },
    { name: '1d L=300 K=127 causal D=64', rank: 1, spatial: [300], heads: 2, dim: 64, kernelSize: [127], isCausal: [true] },
    { name: '2d 45x50 K=33 D=128', rank: 2, spatial: [45, 50], heads: 2, dim: 128, kernelSize: [33, 33] },
    { name: '1d L=600 K=255 causal D=128', rank: 1, spatial: [600], heads: 1, dim: 128, kernelSize: [255], isCausal: [true] },
    { name: '2d 70x90 K=21x33 d=1x2 GQA', rank: 2, spatial: [70, 90], heads: 4, headsKv: 2, dim: 64, kernelSize: [21, 33], dilation: [1, 2], batch: 2 },
    { name: '3d 5x12x20 K=3x5x7 d=1x2x2 GQA', rank: 3, spatial: [5, 12, 20], heads: 4, headsKv: 1, dim: 64, dimV: 48, kernelSize: [3, 5, 7], dilation: [1, 2, 2] },
  ];
  console.log('\n== correctness vs CPU reference (f16 inputs; tolerance out 1e-2, lse 1e-2)');
  for (const p of checks) {
    const t = makeArgs(p, 7);
    const ref = { out: tensor(t.out.shape, 'float16'), lse: tensor(t.lse.shape, 'float32') };
    cpuFusedForward(p.rank, { ...hostArgs(p, t), output: ref.out, logsumexp: ref.lse });
    const g = gpuArgs(ctx, p, t);
    const problem = planFusedForwardMma(ctx, p.rank, g, undefined).problem;
    const def = defaultMmaConfig(ctx, problem) as MmaForwardConfig;
    const configs = values.sweep === 'true' ? enumerateMmaConfigs(ctx, problem) : [def];
    for (const c of configs) {
      try {
        await fusedForwardMma(ctx, p.rank, g, c);
        const o = maxErr(await ctx.read(g.output), ref.out);
        const l = maxErr(await ctx.read(g.logsumexp as GpuTensor), ref.lse);
        const ok = o.err <= 1e-2 && l.err <= 1e-2 && o.nan === 0 && l.nan === 0;
        if (!ok) failures++;
        console.log(`${ok ? 'ok  ' : 'FAIL'} ${p.name.padEnd(34)} ${label(c)}  out ${o.err.toExponential(2)} lse ${l.err.toExponential(2)}${ok ? '' : ` bad out ${o.bad}/${o.n} first ${o.first}, bad lse ${l.bad}/${l.n} first ${l.first}`}${o.nan + l.nan ? ` NaN/Inf ${o.nan + l.nan}` : ''}`);
      } catch (e) {
        failures++;
        console.log(`FAIL ${p.name}: ${(e as Error).message.split('\n').slice(0, 6).join(' | ')}`);
      }
    }
    free(g);
  }
}

/**
 * Median GPU time of one dispatch in us: `timeDispatch` (back-to-back iterations in one submission, as the
 * benchmark harness's single-pass forward rows). Timing each run as its own submission after an idle gap
 * (`ctx.profile`) read short kernels several times slower on the H200 (2-D 128x128 K=7: 1.5 ms vs 0.28 ms).
 */
async function timeOp(command: DispatchCommand, reps: number): Promise<number> {
  const t = await timeDispatch(ctx, [command], { warmup: 2, iterations: reps, warmer });
  return t.medianNs / 1e3;
}

if (values.mode !== 'check') {
  const reps = Number(values.reps);
  const speed: Problem[] = ([
    { name: '1d L=4096 K=127', rank: 1, spatial: [4096], heads: 8, dim: 64, kernelSize: [127] },
    { name: '1d L=32768 K=2047 causal', rank: 1, spatial: [32768], heads: 8, dim: 64, kernelSize: [2047], isCausal: [true] },
    { name: '2d 128x128 K=7', rank: 2, spatial: [128, 128], heads: 8, dim: 64, kernelSize: [7, 7] },
    { name: '2d 128x128 K=13 d=2', rank: 2, spatial: [128, 128], heads: 8, dim: 64, kernelSize: [13, 13], dilation: [2, 2] },
    { name: '2d 256x256 K=15 H=16', rank: 2, spatial: [256, 256], heads: 16, dim: 64, kernelSize: [15, 15] },
    { name: '3d 16x32x32 K=3x7x7', rank: 3, spatial: [16, 32, 32], heads: 8, dim: 64, kernelSize: [3, 7, 7] },
    { name: 'flux 2d 256x256 K=80 H=24 D=128', rank: 2, spatial: [256, 256], heads: 24, dim: 128, kernelSize: [80, 80] },
  ] as Problem[]).filter((p) => values.only === '' || (values.only as string).split(',').some((o) => p.name.includes(o)));
  console.log('\n== speed (f16, GPU time, median)');
  for (const p of speed) {
    const t = makeArgs(p, 11);
    const g = gpuArgs(ctx, p, t);
    const flops = fnaFlops({ batch: 1, heads: p.heads, spatial: p.spatial, dim: p.dim, kernelSize: p.kernelSize });
    const row = (label: string, us: number) =>
      console.log(`${p.name.padEnd(34)} ${label.padEnd(30)} ${us.toFixed(1).padStart(10)} us  ${(flops / us / 1e6).toFixed(2).padStart(7)} TFLOP/s`);
    if (!('why' in avail)) {
      const problem = planFusedForwardMma(ctx, p.rank, g, undefined).problem;
      const def = defaultMmaConfig(ctx, problem) as MmaForwardConfig;
      const ranked = enumerateMmaConfigs(ctx, problem).sort((x, y) => mmaConfigCost(problem, x) - mmaConfigCost(problem, y));
      const configs = values.sweep === 'true' ? ranked.slice(0, Number(values.top)) : [def];
      if (!configs.some((c) => JSON.stringify(c) === JSON.stringify(def))) configs.unshift(def);
      for (const c of configs) {
        try {
          const us = await timeOp(planFusedForwardMma(ctx, p.rank, g, c).command, reps);
          row(`mma ${label(c)}${JSON.stringify(c) === JSON.stringify(def) ? ' *' : ''} cost ${mmaConfigCost(problem, c).toFixed(0)}`, us);
        } catch (e) {
          console.log(`${p.name} mma ${label(c)}: ${(e as Error).message.split('\n')[0]}`);
        }
      }
    }
    try {
      const us = await timeOp(fusedForward.plan(ctx, p.rank, g).command, Math.min(reps, 10));
      row('plain default', us);
    } catch (e) {
      console.log(`${p.name} plain: ${(e as Error).message.split('\n')[0]}`);
    }
    free(g);
  }
}
ctx.destroy();
console.log(`\nfailures: ${failures}`);
process.exit(failures ? 1 : 0);
