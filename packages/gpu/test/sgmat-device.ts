/**
 * Device script (not a test): correctness and speed of the tensor-core (subgroup-matrix) fused forward on an
 * adapter that has `chromium-experimental-subgroup-matrix` (the NVIDIA device machine). Bundle with
 * `tools/device/bundle.sh packages/gpu/test/sgmat-device.ts` and run there.
 *
 * 1. Correctness: small problems (ranks 1-3, causal, dilation, rpb, GQA, Dv != D, partial tiles) against the
 *    CPU reference (f64 on the same f16 inputs): max abs error of out and lse, NaN check.
 * 2. Speed: the benchmark problems, tensor-core default config vs every enumerated tensor-core config (quick
 *    sweep) vs the plain path's default, GPU time from timestamp queries (median of runs).
 * `--only a,b` keeps the speed problems whose name contains any of the parts. `--sweep probes` times the
 * direct walk of the `--top` configs and its timing probes (`FusedForwardSgmatSpec.probe`).
 * `--sweep true` tries every config (check) or the `--top` cheapest by the cost model (speed); `--sweep variants`
 * tries the experimental walks (direct loads, row skipping) of the default (check) or of the `--top` configs
 * (speed); `--sweep gather` the K/V gather diagnostics. Next device session:
 *   node .devkit/sgmat-device.mjs --mode check --sweep variants && node .devkit/sgmat-device.mjs --mode speed --sweep variants --top 2
 */
import { tensor } from '@natten-web/core';
import { fusedForward as cpuFusedForward } from '@natten-web/cpu';
import {
  defaultSgmatConfig,
  sgmatConfigCost,
  enumerateSgmatConfigs,
  fusedForward,
  fusedForwardSgmat,
  planFusedForwardSgmat,
  sgmatAvailability,
  type SgmatForwardConfig,
} from '../src/index.ts';
import { checkConfig, deviceScriptOptions, free, gpuArgs, hostArgs, makeArgs, type Problem, openDevice, speedProblems, speedRow, timeCommand } from './device-forward-problems.ts';

const values = deviceScriptOptions();
const { ctx, warmer } = await openDevice();
const avail = sgmatAvailability(ctx);
console.log(`tensor-core path: ${'why' in avail ? `unavailable (${avail.why})` : `subgroup size ${avail.subgroupSize}`}`);


/** The experimental walk variants of a config (`--sweep variants`): guarded, direct, direct + row skipping. */
function variants(c: SgmatForwardConfig): SgmatForwardConfig[] {
  return [c, { ...c, directWalk: true }, { ...c, directWalk: true, skipRows: true }];
}
/** Timing probes of a config (`--sweep probes`, speed only; wrong results by design): where the time goes. */
function probes(c: SgmatForwardConfig): SgmatForwardConfig[] {
  const d = { ...c, directWalk: true };
  return [d, { ...d, probe: 'no-softmax' as const }, { ...d, probe: 'no-pv' as const }, { ...d, probe: 'fixed-kv' as const }];
}
function label(c: SgmatForwardConfig): string {
  return `q=${c.queryTile.join('x')} bk=${c.keyChunk}${c.gather ? ` gather ${c.gather}` : ''}${c.directWalk ? ' direct' : ''}${c.skipRows ? ' skip' : ''}${c.probe ? ` probe ${c.probe}` : ''}`;
}

let failures = 0;
if (values.mode !== 'speed' && !('why' in avail)) {
  const checks: Problem[] = [
    { name: '1d L=37 K=7', rank: 1, spatial: [37], heads: 2, dim: 32, kernelSize: [7] },
    { name: '1d L=100 K=9 d=3 causal', rank: 1, spatial: [100], heads: 2, dim: 16, kernelSize: [9], dilation: [3], isCausal: [true] },
    { name: '2d 19x23 K=5x7 rpb', rank: 2, spatial: [19, 23], heads: 2, dim: 64, kernelSize: [5, 7], rpb: true },
    { name: '2d 20x17 K=4x6 d=2x1 causal TF', rank: 2, spatial: [20, 17], heads: 3, dim: 32, kernelSize: [4, 6], dilation: [2, 1], isCausal: [true, false] },
    { name: '2d 16x16 K=7 GQA Dv=32', rank: 2, spatial: [16, 16], heads: 4, headsKv: 2, dim: 64, dimV: 32, kernelSize: [7, 7] },
    { name: '2d 33x40 K=13 d=2 D=128', rank: 2, spatial: [33, 40], heads: 2, dim: 128, kernelSize: [13, 13], dilation: [2, 2] },
    { name: '3d 6x9x11 K=3x5x5 causal FTF', rank: 3, spatial: [6, 9, 11], heads: 2, dim: 32, kernelSize: [3, 5, 5], isCausal: [false, true, false] },
    { name: '3d 8x8x8 K=3x3x3 d=2 B=2', rank: 3, spatial: [8, 8, 8], heads: 1, dim: 16, kernelSize: [3, 3, 3], dilation: [2, 2, 2], batch: 2 },
    { name: '1d L=300 K=127 causal D=64', rank: 1, spatial: [300], heads: 2, dim: 64, kernelSize: [127], isCausal: [true] },
    { name: '2d 45x50 K=33 rpb D=128', rank: 2, spatial: [45, 50], heads: 2, dim: 128, kernelSize: [33, 33], rpb: true },
    { name: '3d 5x12x20 K=3x5x7 d=1x2x2 GQA', rank: 3, spatial: [5, 12, 20], heads: 4, headsKv: 1, dim: 64, dimV: 48, kernelSize: [3, 5, 7], dilation: [1, 2, 2] },
  ];
  console.log('\n== correctness vs CPU reference (f16 inputs; tolerance out 1e-2, lse 1e-2)');
  for (const p of checks) {
    const t = makeArgs(p, 7);
    const ref = { out: tensor(t.out.shape, 'float16'), lse: tensor(t.lse.shape, 'float32') };
    cpuFusedForward(p.rank, { ...hostArgs(p, t), output: ref.out, logsumexp: ref.lse });
    const g = gpuArgs(ctx, p, t);
    const problem = planFusedForwardSgmat(ctx, p.rank, g, undefined).problem;
    const def = defaultSgmatConfig(ctx, problem) as SgmatForwardConfig;
    const configs = values.sweep === 'true' ? enumerateSgmatConfigs(ctx, problem) : values.sweep === 'gather' ? [def, { ...def, gather: 'k' as const }, { ...def, gather: 'kv' as const }] : values.sweep === 'variants' ? variants(def) : [def];
    for (const c of configs) {
      if (!(await checkConfig(ctx, p, label(c), g, ref, () => fusedForwardSgmat(ctx, p.rank, g, c)))) failures++;
    }
    free(g);
  }
}

if (values.mode !== 'check') {
  const reps = Number(values.reps);
  const speed = speedProblems(values.only as string);
  console.log('\n== speed (f16, GPU time, median)');
  for (const p of speed) {
    const t = makeArgs(p, 11);
    const g = gpuArgs(ctx, p, t);
    const row = speedRow(p);
    if (!('why' in avail)) {
      const problem = planFusedForwardSgmat(ctx, p.rank, g, undefined).problem;
      const def = defaultSgmatConfig(ctx, problem) as SgmatForwardConfig;
      const ranked = enumerateSgmatConfigs(ctx, problem).sort((x, y) => sgmatConfigCost(problem, x) - sgmatConfigCost(problem, y));
      const configs = values.sweep === 'true' ? ranked.slice(0, Number(values.top)) : values.sweep === 'variants' ? ranked.slice(0, Number(values.top)).flatMap(variants) : values.sweep === 'probes' ? ranked.slice(0, Number(values.top)).flatMap(probes) : [def];
      if (!configs.some((c) => JSON.stringify(c) === JSON.stringify(def))) configs.unshift(def);
      for (const c of configs) {
        try {
          const us = await timeCommand(ctx, planFusedForwardSgmat(ctx, p.rank, g, c).command, reps, warmer);
          row(`sgmat ${label(c)}${JSON.stringify(c) === JSON.stringify(def) ? ' *' : ''} cost ${sgmatConfigCost(problem, c).toFixed(0)}`, us);
        } catch (e) {
          console.log(`${p.name} sgmat ${c.queryTile.join('x')}: ${(e as Error).message.split('\n')[0]}`);
        }
      }
    }
    try {
      const us = await timeCommand(ctx, fusedForward.plan(ctx, p.rank, g).command, Math.min(reps, 10), warmer);
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
