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
 * 3. Backward (`--mode bcheck | bspeed | backward`): the mma backward against the CPU reference, and timed against
 *    the plain backward; `--mode bsweep` times its dq and dkv kernels alone per subgroup count and tile; `--mode
 *    bkernels` times the default and each `--configs` config whole and each of its two dispatches alone.
 * 4. Probes (`--mode probe`, `--probes a,b` to pick some): the default forward's text patched to isolate one cost
 *    each (mma-probes.ts), next to the unpatched kernel; `--mode bprobe`: the memory, register and walk-length probes on the
 *    default backward's dq and dkv kernels, each timed alone.
 * `--only a,b` keeps the speed problems whose name contains any of the parts; with `--sweep true`, `--top N` takes
 * the N cheapest configs of each subgroup count and `--nsg 2,4` keeps those counts; `--tight true` adds each
 * config's twin with the other scratch layout (`tightScratch`), `--inturn true` each config's (and layout twin's) twin with K and V
 * staged in turn (`kvInTurn`), `--pk true` each config's twin with P over the staged K rows (`pOverK`); for the
 * backward modes `--tight true` / `--shared true` / `--dsv true` / `--dsvwide true` / `--hsplit true` add the unpadded-row / dq
 * scratch-count (`dqSharedScratch`) / dS-over-V (`dqDsOverV`) / dS-over-V with dq rows of 24 floats (`dqWideS`) /
 * head-split (`dqHeadSplit`, `dkvHeadSplit`) twins.
 */
import { type FusedBackwardArgs, type FusedProblem, type NaRank, randn, tensor, toFloat64Values } from '@natten-web/core';
import { tensorFromValues } from '@natten-web/testkit';
import { fusedBackward as cpuFusedBackward, fusedForward as cpuFusedForward } from '@natten-web/cpu';
import { generateFusedBackwardDelta, tileShapes } from '@natten-web/wgsl';
import {
  checkFusedBackwardMma,
  type DispatchCommand,
  defaultMmaConfig,
  enumerateMmaConfigs,
  fusedBackwardWithConfig,
  fusedBackwardMma,
  fusedForward,
  fusedForwardMma,
  type GpuTensor,
  mmaAvailability,
  mmaConfigCost,
  mmaConfigFits,
  type MmaBackwardConfig,
  mmaBackwardCommands,
  mmaBackwardScratch,
  mmaBackwardConfigFits,
  mmaBackwardTile,
  type MmaForwardConfig,
  mmaForwardFlags,
  planFusedForwardMma,
  selectFusedBackward,
} from '../src/index.ts';
import { BACKWARD_PROBES, countResidency, type Probe, PROBES, probedCommand, probeOf, residencyKernel } from './mma-probes.ts';
import { checkConfig, deviceScriptOptions, free, gpuArgs, hostArgs, makeArgs, maxErr, type Problem, openDevice, routeProblems, speedProblems, speedRow, timeCommand, timeRun } from './device-forward-problems.ts';

const values = deviceScriptOptions();
const { ctx, warmer } = await openDevice();
const avail = mmaAvailability(ctx);
console.log(`mma path: ${'why' in avail ? `unavailable (${avail.why})` : 'available'}`);


function label(c: MmaForwardConfig): string {
  return [`q=${c.queryTile.join('x')} bk=${c.keyChunk} nsg=${c.subgroups}`, ...mmaForwardFlags(c)].join(' ');
}

/**
 * With `--tight true`: each config's twin with the other scratch layout (padded rows <-> `tightScratch`; the tune
 * space offers it at 16-key chunks only); with `--inturn true` / `--pk true`: each config's and each layout twin's
 * twin with K and V staged in turn (opt-in `kvInTurn`) / with P over the staged K rows (opt-in `pOverK`, where it fits).
 */
function twinVariants(problem: FusedProblem, ...configs: MmaForwardConfig[]): MmaForwardConfig[] {
  const tight = values.tight !== 'true' ? [] : configs.map(({ tightScratch, ...c }) => (tightScratch ? c : { ...c, tightScratch: true }));
  // The memory twins of every config and of its layout twin.
  const bases = [...configs, ...tight];
  const inTurn = values.inturn !== 'true' ? [] : bases.filter((c) => c.kvInTurn !== true).map((c) => ({ ...c, kvInTurn: true }));
  // With `--pk true`: each config's twin with P over the staged K rows (opt-in `pOverK`), where it fits.
  // (and, session 25, that twin with the memory it frees spent on S rows of 24 floats: `wideS` in place of `padS`).
  const pOverK = values.pk !== 'true' ? [] : bases.filter((c) => c.pOverK !== true && c.kvInTurn !== true).flatMap(({ padS, ...c }) => [{ ...c, ...(padS === true ? { padS } : {}), pOverK: true }, { ...c, pOverK: true, wideS: true }]);
  // With `--pads true`: each unpadded config's twin with S padded (`padS`), or the padded one's without it.
  const pads = values.pads !== 'true' ? [] : configs.filter((c) => c.tightScratch === true).map(({ padS, ...c }) => (padS === true ? c : { ...c, padS: true }));
  // With `--wide true`: each config's twin with 16-byte K and V loads (opt-in `wideLoads`, float16).
  const wide = values.wide !== 'true' || problem.dtype === 'float32' ? [] : configs.map((c) => ({ ...c, wideLoads: true }));
  // With `--unit true`: each config's twins with unit steps forced on and off (`unitSteps`; one of them is what the
  // default rule gives the config).
  const unit = values.unit !== 'true' ? [] : configs.flatMap((c) => [{ ...c, unitSteps: true }, { ...c, unitSteps: false }]);
  return [...tight, ...inTurn, ...[...pOverK, ...pads, ...wide, ...unit].filter((c) => mmaConfigFits(ctx, problem, c))];
}

/** `--nsg 1,2`: keep the configs with these subgroup counts (all when absent). */
function nsgFilter(configs: MmaForwardConfig[]): MmaForwardConfig[] {
  const keep = values.nsg !== '' ? values.nsg.split(',').map(Number) : undefined;
  return keep ? configs.filter((c) => keep.includes(c.subgroups)) : configs;
}

/**
 * With `--sweep true`: the `--top` cheapest configs (by `mmaConfigCost`) of each subgroup count, after `--nsg`,
 * padded scratch rows only (`--tight true` adds their twins).
 */
function sweepConfigs(problem: FusedProblem, top: number): MmaForwardConfig[] {
  const ranked = nsgFilter(enumerateMmaConfigs(ctx, problem).filter((c) => c.tightScratch !== true)).sort((x, y) => mmaConfigCost(problem, x) - mmaConfigCost(problem, y));
  const counts = [...new Set(ranked.map((c) => c.subgroups))].sort((a, b) => a - b);
  return counts.flatMap((n) => ranked.filter((c) => c.subgroups === n).slice(0, top));
}

/** With `--chunk16 true`: the cheapest 16-key-chunk config per subgroup count (4, 8) that fits, beside the default. */
function chunk16Variants(problem: FusedProblem): MmaForwardConfig[] {
  if (values.chunk16 !== 'true') return [];
  const all = enumerateMmaConfigs(ctx, problem).filter((c) => c.keyChunk === 16);
  return ([4, 8] as const).flatMap((nsg) => {
    const c = all.filter((x) => x.subgroups === nsg).sort((x, y) => mmaConfigCost(problem, x) - mmaConfigCost(problem, y))[0];
    return c ? [c] : [];
  });
}

/**
 * With `--chunk16 true`: the default backward config (16-row chunks since session 8) with 32-row chunks, and with
 * 8 subgroups for both kernels (the default tiles widened along the last axis to 128 rows); with `--tight true`:
 * the default with unpadded scratch rows (`tightScratch`); with `--shared true`: the default with the other dq
 * scratch count (`dqSharedScratch`); with `--dsv true`: the default with dq's dS over the V rows (`dqDsOverV`); each
 * where it fits.
 */
function backwardVariants(rank: NaRank, def: MmaBackwardConfig, g: FusedBackwardArgs<GpuTensor>): (readonly [string, MmaBackwardConfig])[] {
  const widest = (tile: readonly number[]): number[] => {
    // Double the tile's last axis: twice the rows (16 x 8 subgroups) with the same leading extents.
    const t = [...tile];
    t[rank - 1] = (t[rank - 1] as number) * (8 / def.querySubgroups);
    return t;
  };
  const sg8: MmaBackwardConfig = { ...def, chunk: 16, queryTile: widest(def.queryTile), querySubgroups: 8, keyTile: def.keyTile.map((x, a) => (a === rank - 1 ? x * (8 / def.keySubgroups) : x)), keySubgroups: 8 };
  const { problem } = checkFusedBackwardMma(ctx, rank, g);
  const fits = (c: MmaBackwardConfig): boolean => mmaBackwardConfigFits(ctx, problem, c);
  const tight = values.tight === 'true' ? ([['tight', { ...def, tightScratch: true }]] as const) : [];
  const shared = values.shared === 'true' ? ([['dq-shared', { ...def, dqSharedScratch: !def.dqSharedScratch }]] as const) : [];
  const dsv = values.dsv === 'true' ? ([['ds-over-v', { ...def, dqDsOverV: true }]] as const) : [];
  // --dsvwide true: dS over V, and the memory it frees spent on the dq kernel's rows of 24 floats (session 25).
  const { dqPadS: _dqPad, ...dqUnpadded } = def;
  const dsvWide = values.dsvwide === 'true' ? ([['ds-over-v dq-wideS', { ...dqUnpadded, dqDsOverV: true, dqWideS: true }]] as const) : [];
  const chunks = values.chunk16 === 'true' ? ([['c32', { ...def, chunk: 32 }], ['c16 sg8', sg8]] as const) : [];
  // --hsplit true: the dkv kernel with two subgroups per 16 keys (dkvHeadSplit) at the default's subgroup count
  // (half the keys per workgroup) and at twice it (the same keys), and both kernels split.
  const split: (readonly [string, MmaBackwardConfig])[] = [];
  if (values.hsplit === 'true') {
    const kv = (n: 2 | 4 | 8): MmaBackwardConfig | undefined => {
      const tile = mmaBackwardTile(ctx, problem, 'dkv', n, def.chunk, true);
      return tile ? { ...def, keyTile: tile, keySubgroups: n, dkvHeadSplit: true } : undefined;
    };
    const same = kv(def.keySubgroups);
    const twice = def.keySubgroups < 8 ? kv((def.keySubgroups * 2) as 4 | 8) : undefined;
    const qTile = mmaBackwardTile(ctx, problem, 'dq', def.querySubgroups, def.chunk, true);
    if (same) split.push(['dkv-split', same]);
    if (twice) split.push([`dkv-split sg${twice.keySubgroups}`, twice]);
    if (same && qTile) split.push(['both-split', { ...same, queryTile: qTile, dqHeadSplit: true, dqSharedScratch: false }]);
  }
  // --pads true: the default without its scratch padding, and with it in one kernel only (dqPadS, dkvPadS).
  const { dqPadS: _dq, dkvPadS: _dkv, ...bare } = def;
  const pads = values.pads === 'true' ? ([['no-pads', bare], ['dq-pads', { ...bare, dqPadS: true }], ['dkv-pads', { ...bare, dkvPadS: true }]] as const) : [];
  // --configs '[{...}]' (backward modes): the default with each object's fields over it (tiles, subgroups, flags).
  const given = values.configs === '' ? [] : (JSON.parse(values.configs) as Partial<MmaBackwardConfig>[]).map((c) => [JSON.stringify(c), { ...def, ...c }] as const);
  return [...chunks, ...tight, ...shared, ...dsv, ...dsvWide, ...split, ...pads, ...given].filter(([, c]) => fits(c));
}

let failures = 0;
if ((values.mode === 'check' || values.mode === 'both') && !('why' in avail)) {
  const checks: Problem[] = [
    { name: '1d L=37 K=7', rank: 1, spatial: [37], heads: 2, dim: 32, kernelSize: [7] },
    { name: '1d L=100 K=9 d=3 causal', rank: 1, spatial: [100], heads: 2, dim: 16, kernelSize: [9], dilation: [3], isCausal: [true] },
    { name: '2d 19x23 K=5x7', rank: 2, spatial: [19, 23], heads: 2, dim: 64, kernelSize: [5, 7] },
    { name: '2d 19x23 K=5x7 rpb', rank: 2, spatial: [19, 23], heads: 2, dim: 64, kernelSize: [5, 7], rpb: true },
    { name: '2d 45x50 K=33 rpb D=128', rank: 2, spatial: [45, 50], heads: 2, dim: 128, kernelSize: [33, 33], rpb: true },
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
    // Strides and larger rpb problems (session 19: before the default route took them).
    { name: '2d 30x34 K=7 s=2x3', rank: 2, spatial: [30, 34], heads: 2, dim: 64, kernelSize: [7, 7], stride: [2, 3] },
    { name: '1d L=300 K=31 s=4 causal', rank: 1, spatial: [300], heads: 2, dim: 32, kernelSize: [31], stride: [4], isCausal: [true] },
    { name: '3d 8x12x12 K=3x5x5 s=1x2x3 d=1x2x1', rank: 3, spatial: [8, 12, 12], heads: 2, dim: 32, kernelSize: [3, 5, 5], stride: [1, 2, 3], dilation: [1, 2, 1] },
    { name: '2d 56x56 K=7 d=2 rpb D=32 B=2', rank: 2, spatial: [56, 56], heads: 2, dim: 32, kernelSize: [7, 7], dilation: [2, 2], rpb: true, batch: 2 },
    { name: '1d L=500 K=63 rpb', rank: 1, spatial: [500], heads: 2, dim: 64, kernelSize: [63], rpb: true },
    { name: '3d 8x12x12 K=3x5x5 rpb', rank: 3, spatial: [8, 12, 12], heads: 2, dim: 64, kernelSize: [3, 5, 5], rpb: true },
    // rpb with strides (session 20: the default route keeps them on the plain path until checked here).
    { name: '2d 30x34 K=7 s=2x3 rpb', rank: 2, spatial: [30, 34], heads: 2, dim: 64, kernelSize: [7, 7], stride: [2, 3], rpb: true },
    { name: '1d L=300 K=31 s=4 rpb D=32', rank: 1, spatial: [300], heads: 2, dim: 32, kernelSize: [31], stride: [4], rpb: true },
    { name: '3d 8x12x12 K=3x5x5 s=1x2x3 d=1x2x1 rpb', rank: 3, spatial: [8, 12, 12], heads: 2, dim: 32, kernelSize: [3, 5, 5], stride: [1, 2, 3], dilation: [1, 2, 1], rpb: true },
  ];
  // --dtype float32: the same problems on the split forward (f16 hi + lo, three multiplies), tolerance 1e-4.
  const dtype: 'float16' | 'float32' = values.dtype === 'float32' ? 'float32' : 'float16';
  console.log(`\n== correctness vs CPU reference (${dtype} inputs; tolerance out and lse ${dtype === 'float32' ? '1e-4' : '1e-2'})`);
  for (const p0 of checks) {
    const p = { ...p0, dtype };
    const t = makeArgs(p, 7);
    const ref = { out: tensor(t.out.shape, dtype), lse: tensor(t.lse.shape, 'float32') };
    cpuFusedForward(p.rank, { ...hostArgs(p, t), output: ref.out, logsumexp: ref.lse });
    const g = gpuArgs(ctx, p, t);
    const problem = planFusedForwardMma(ctx, p.rank, g, undefined).problem;
    const def = defaultMmaConfig(ctx, problem) as MmaForwardConfig;
    const base = values.sweep === 'true' ? nsgFilter(enumerateMmaConfigs(ctx, problem)) : [def, ...chunk16Variants(problem)];
    const configs = [...base, ...twinVariants(problem, ...base)];
    for (const c of configs) {
      if (!(await checkConfig(ctx, p, label(c), g, ref, () => fusedForwardMma(ctx, p.rank, g, c)))) failures++;
    }
    free(g);
  }
}

if (values.mode === 'probe' && !('why' in avail)) {
  const reps = Number(values.reps);
  console.log('\n== timing probes (float16, default config, patched kernel texts; GPU time, median)');
  for (const p0 of speedProblems(values.only as string)) {
    const p = { ...p0, dtype: 'float16' as const };
    const t = makeArgs(p, 11);
    const g = gpuArgs(ctx, p, t);
    const row = speedRow(p);
    const plan = planFusedForwardMma(ctx, p.rank, g, undefined);
    const def = defaultMmaConfig(ctx, plan.problem) as MmaForwardConfig;
    const commands = planFusedForwardMma(ctx, p.rank, g, def).commands;
    await timeCommand(ctx, commands, reps, warmer);
    row(`probe ${label(def)} unpatched`, await timeCommand(ctx, commands, reps, warmer));
    const named = values.probes === '' ? Object.keys(PROBES) : values.probes.split(',');
    for (const [name, probe] of named.map((n) => [n, probeOf(n)] as const)) {
      if (!probe) {
        console.log(`${p.name} probe ${name}: no such probe`);
        continue;
      }
      const patched = commands.map((x) => {
        const y = probedCommand(x, name, probe);
        return y.kernel.code === x.kernel.code ? x : y;
      });
      if (patched.every((x, i) => x === commands[i])) {
        console.log(`${p.name} probe ${name}: the patch matched nothing`);
        continue;
      }
      try {
        row(`probe ${name}`, await timeCommand(ctx, patched, reps, warmer));
      } catch (e) {
        console.log(`${p.name} probe ${name}: ${(e as Error).message.split('\n')[0]}`);
      }
    }
    row(`probe ${label(def)} unpatched again`, await timeCommand(ctx, commands, reps, warmer));
    free(g);
  }
}

if (values.mode === 'speed' || values.mode === 'both') {
  const reps = Number(values.reps);
  // `--routes true`: the rpb and stride problems (mma default against the plain default) instead.
  const speed = values.routes === 'true' ? routeProblems(values.only as string) : speedProblems(values.only as string);
  const dtype: 'float16' | 'float32' = values.dtype === 'float32' ? 'float32' : 'float16';
  console.log(`\n== speed (${dtype}, GPU time, median)`);
  for (const p0 of speed) {
    const p = { ...p0, dtype };
    const t = makeArgs(p, 11);
    const g = gpuArgs(ctx, p, t);
    const row = speedRow(p);
    if (!('why' in avail)) {
      const problem = planFusedForwardMma(ctx, p.rank, g, undefined).problem;
      const def = defaultMmaConfig(ctx, problem) as MmaForwardConfig;
      const base = values.sweep === 'true' ? sweepConfigs(problem, Number(values.top)) : [def, ...chunk16Variants(problem)];
      // `--configs '[{...}]'`: these configs too (each `{ path: 'mma', ... }` fields of MmaForwardConfig).
      const given = values.configs === '' ? [] : (JSON.parse(values.configs) as Omit<MmaForwardConfig, 'path'>[]).map((c): MmaForwardConfig => ({ ...c, path: 'mma' }));
      const configs = [...base, ...twinVariants(problem, ...base), ...given.filter((c) => mmaConfigFits(ctx, problem, c))];
      if (!configs.some((c) => JSON.stringify(c) === JSON.stringify(def))) configs.unshift(def);
      // A problem's first readings on the H200 were often 2-4x slow (docs/device-results.md): one discarded timing
      // of the default first, and the default timed again after the others.
      await timeCommand(ctx, planFusedForwardMma(ctx, p.rank, g, def).commands, reps, warmer);
      for (const c of configs) {
        try {
          const us = await timeCommand(ctx, planFusedForwardMma(ctx, p.rank, g, c).commands, reps, warmer);
          row(`mma ${label(c)}${JSON.stringify(c) === JSON.stringify(def) ? ' *' : ''} cost ${mmaConfigCost(problem, c).toFixed(0)}`, us);
        } catch (e) {
          console.log(`${p.name} mma ${label(c)}: ${(e as Error).message.split('\n')[0]}`);
        }
      }
      row(`mma ${label(def)} * again`, await timeCommand(ctx, planFusedForwardMma(ctx, p.rank, g, def).commands, reps, warmer));
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
/** The backward modes' dtype: `--dtype float32` runs the float32 split backward (float16 unless set). */
const BWD_DTYPE: 'float16' | 'float32' = values.dtype === 'float32' ? 'float32' : 'float16';

/** A speed problem's backward arguments on the GPU: inputs, a forward run for O and the LSE, dO, gradient outputs. */
async function backwardArgs(p0: Problem) {
  const p = { ...p0, dtype: BWD_DTYPE };
  const t = makeArgs(p, 11);
  const f = gpuArgs(ctx, p, t);
  await fusedForward(ctx, p.rank, f);
  const g = {
    ...f,
    logsumexp: f.logsumexp as GpuTensor,
    gradOutput: ctx.upload(t.out),
    gradQuery: ctx.createTensor(t.q.shape, BWD_DTYPE),
    gradKey: ctx.createTensor(t.k.shape, BWD_DTYPE),
    gradValue: ctx.createTensor(t.v.shape, BWD_DTYPE),
    gradRpb: t.rpb ? ctx.createTensor(t.rpb.shape, BWD_DTYPE) : null,
  };
  return { t, f, g };
}

/**
 * A backward's dispatches split into the float32 split's abs-max dispatches (`pre`, run once before timing the
 * kernels alone: they fill the scales the kernels read) and the rest, named by kernel.
 */
function backwardDispatches(commands: readonly DispatchCommand[]): { pre: DispatchCommand[]; kernels: DispatchCommand[] } {
  const isPre = (c: DispatchCommand): boolean => c.kernel.key.startsWith('abs-max');
  return { pre: commands.filter(isPre), kernels: commands.filter((c) => !isPre(c)) };
}

// ---- the experimental tensor-core backward (`--mode bcheck | bspeed | backward`)
if ((values.mode === 'bcheck' || values.mode === 'backward') && !('why' in avail)) {
  const checks: Problem[] = [
    { name: '1d L=100 K=9 d=3 causal', rank: 1, spatial: [100], heads: 2, dim: 32, kernelSize: [9], dilation: [3], isCausal: [true] },
    { name: '1d L=300 K=127 D=64', rank: 1, spatial: [300], heads: 2, dim: 64, kernelSize: [127] },
    // A window over MMA_BACKWARD_SMALL_WINDOW keys: the large-window default (dkv's lean layout, padded rows).
    { name: '1d L=1500 K=1025 causal D=64', rank: 1, spatial: [1500], heads: 2, dim: 64, kernelSize: [1025], isCausal: [true] },
    { name: '2d 19x23 K=5x7', rank: 2, spatial: [19, 23], heads: 2, dim: 64, kernelSize: [5, 7] },
    { name: '2d 16x16 K=7 GQA Dv=32', rank: 2, spatial: [16, 16], heads: 4, headsKv: 2, dim: 64, dimV: 32, kernelSize: [7, 7] },
    { name: '2d 33x40 K=13 d=2 D=128', rank: 2, spatial: [33, 40], heads: 2, dim: 128, kernelSize: [13, 13], dilation: [2, 2] },
    { name: '3d 6x9x11 K=3x5x5 causal FTF', rank: 3, spatial: [6, 9, 11], heads: 2, dim: 32, kernelSize: [3, 5, 5], isCausal: [false, true, false] },
    // Strides (session 19: before the default route took them).
    { name: '2d 30x34 K=7 s=2x3', rank: 2, spatial: [30, 34], heads: 2, dim: 64, kernelSize: [7, 7], stride: [2, 3] },
    { name: '1d L=300 K=31 s=4 causal', rank: 1, spatial: [300], heads: 2, dim: 32, kernelSize: [31], stride: [4], isCausal: [true] },
    { name: '3d 8x12x12 K=3x5x5 s=1x2x3 d=1x2x1', rank: 3, spatial: [8, 12, 12], heads: 2, dim: 32, kernelSize: [3, 5, 5], stride: [1, 2, 3], dilation: [1, 2, 1] },
    // rpb with d_rpb (session 20: the mma backward's bias and dS scratch), then rpb with strides.
    { name: '2d 19x23 K=5x7 rpb', rank: 2, spatial: [19, 23], heads: 2, dim: 64, kernelSize: [5, 7], rpb: true },
    { name: '2d 16x16 K=7 GQA rpb', rank: 2, spatial: [16, 16], heads: 4, headsKv: 2, dim: 64, kernelSize: [7, 7], rpb: true },
    { name: '2d 56x56 K=7 d=2 rpb D=32 B=2', rank: 2, spatial: [56, 56], heads: 2, dim: 32, kernelSize: [7, 7], dilation: [2, 2], rpb: true, batch: 2 },
    { name: '2d 45x50 K=33 rpb D=128', rank: 2, spatial: [45, 50], heads: 2, dim: 128, kernelSize: [33, 33], rpb: true },
    { name: '1d L=500 K=63 rpb', rank: 1, spatial: [500], heads: 2, dim: 64, kernelSize: [63], rpb: true },
    { name: '1d L=1500 K=1025 rpb D=64', rank: 1, spatial: [1500], heads: 2, dim: 64, kernelSize: [1025], rpb: true },
    { name: '3d 8x12x12 K=3x5x5 rpb', rank: 3, spatial: [8, 12, 12], heads: 2, dim: 64, kernelSize: [3, 5, 5], rpb: true },
    { name: '2d 30x34 K=7 s=2x3 rpb', rank: 2, spatial: [30, 34], heads: 2, dim: 64, kernelSize: [7, 7], stride: [2, 3], rpb: true },
    { name: '1d L=300 K=31 s=4 rpb D=32', rank: 1, spatial: [300], heads: 2, dim: 32, kernelSize: [31], stride: [4], rpb: true },
  ];
  const tol = BWD_DTYPE === 'float32' ? 1e-4 : 1e-2;
  console.log(`\n== mma backward vs CPU reference (${BWD_DTYPE}; dO scaled by 0.05; tolerance ${tol}, d_rpb ${tol} x max(1, max |d_rpb|))`);
  for (const p0 of checks) {
    const p = { ...p0, dtype: BWD_DTYPE };
    const t = makeArgs(p, 5);
    const h = hostArgs(p, t);
    cpuFusedForward(p.rank, h);
    // dO scaled by 0.05, as NATTEN's backward tests do.
    const dO = tensorFromValues(t.out.shape, BWD_DTYPE, toFloat64Values(randn(t.out.shape, BWD_DTYPE, 6)).map((x) => x * 0.05));
    const ref = { dq: tensor(t.q.shape, BWD_DTYPE), dk: tensor(t.k.shape, BWD_DTYPE), dv: tensor(t.v.shape, BWD_DTYPE), drpb: t.rpb ? tensor(t.rpb.shape, BWD_DTYPE) : null };
    cpuFusedBackward(p.rank, { ...h, logsumexp: t.lse, gradOutput: dO, gradQuery: ref.dq, gradKey: ref.dk, gradValue: ref.dv, gradRpb: ref.drpb });
    const g = {
      ...h,
      query: ctx.upload(t.q),
      key: ctx.upload(t.k),
      value: ctx.upload(t.v),
      output: ctx.upload(t.out),
      logsumexp: ctx.upload(t.lse),
      gradOutput: ctx.upload(dO),
      gradQuery: ctx.createTensor(t.q.shape, BWD_DTYPE),
      gradKey: ctx.createTensor(t.k.shape, BWD_DTYPE),
      gradValue: ctx.createTensor(t.v.shape, BWD_DTYPE),
      rpb: t.rpb ? ctx.upload(t.rpb) : null,
      gradRpb: t.rpb ? ctx.createTensor(t.rpb.shape, BWD_DTYPE) : null,
    };
    const def = checkFusedBackwardMma(ctx, p.rank, g).config;
    for (const [variant, config] of [['default', def] as const, ...backwardVariants(p.rank, def, g)]) {
      try {
        await fusedBackwardMma(ctx, p.rank, g, config);
        const errs = [maxErr(await ctx.read(g.gradQuery), ref.dq), maxErr(await ctx.read(g.gradKey), ref.dk), maxErr(await ctx.read(g.gradValue), ref.dv)];
        const drpb = g.gradRpb && ref.drpb ? maxErr(await ctx.read(g.gradRpb), ref.drpb) : undefined;
        const drpbScale = ref.drpb ? Math.max(1, ...toFloat64Values(ref.drpb).map(Math.abs)) : 1;
        const ok = errs.every((e) => e.err <= tol && e.nan === 0) && (drpb === undefined || (drpb.err <= tol * drpbScale && drpb.nan === 0));
        if (!ok) failures++;
        console.log(
          `${ok ? 'ok  ' : 'FAIL'} ${p.name.padEnd(34)} ${variant.padEnd(12)} dQ ${errs[0]?.err.toExponential(2)} dK ${errs[1]?.err.toExponential(2)} dV ${errs[2]?.err.toExponential(2)}${drpb ? ` dRpb ${drpb.err.toExponential(2)} (of ${drpbScale.toFixed(2)})` : ''}`,
        );
      } catch (e) {
        failures++;
        console.log(`FAIL ${p.name} ${variant}: ${(e as Error).message.split('\n').slice(0, 6).join(' | ')}`);
      }
    }
    for (const x of [g.query, g.key, g.value, g.output, g.logsumexp, g.gradOutput, g.gradQuery, g.gradKey, g.gradValue, g.rpb, g.gradRpb]) x?.buffer.destroy();
  }
}
if ((values.mode === 'bspeed' || values.mode === 'backward') && !('why' in avail)) {
  const reps = Number(values.reps);
  console.log(`\n== backward speed (${BWD_DTYPE}, GPU time of all dispatches, median): mma vs the plain default`);
  // `--routes true`: the rpb (with d_rpb) and stride problems.
  const problems = values.routes === 'true' ? routeProblems(values.only as string) : speedProblems(values.only as string);
  for (const p of problems) {
    const { f, g } = await backwardArgs(p);
    const def = checkFusedBackwardMma(ctx, p.rank, g).config;
    // One discarded timing first, and the default again last (first readings were often 2-4x slow on the H200).
    await timeRun(ctx, () => fusedBackwardMma(ctx, p.rank, g, def), reps, warmer);
    for (const [name, run] of [
      ['mma', () => fusedBackwardMma(ctx, p.rank, g, def)] as const,
      ...backwardVariants(p.rank, def, g).map(([v, c]) => [`mma ${v}`, () => fusedBackwardMma(ctx, p.rank, g, c)] as const),
      // With rpb: the same without d_rpb (what the dS scratch and the d_rpb passes cost).
      ...(g.gradRpb ? [['mma no d_rpb', () => fusedBackwardMma(ctx, p.rank, { ...g, gradRpb: null }, def)] as const] : []),
      // The plain backward's default config (fusedBackward itself now routes to the mma path here).
      ['plain', () => fusedBackwardWithConfig(ctx, p.rank, g, selectFusedBackward(ctx, p.rank, g).config)],
      ['mma again', () => fusedBackwardMma(ctx, p.rank, g, def)],
    ] as const) {
      try {
        const ms = await timeRun(ctx, run, reps, warmer);
        console.log(`${p.name.padEnd(34)} backward ${name.padEnd(16)} ${ms.toFixed(3).padStart(10)} ms`);
      } catch (e) {
        console.log(`${p.name} backward ${name}: ${(e as Error).message.split('\n')[0]}`);
      }
    }
    free(f);
    for (const x of [g.gradOutput, g.gradQuery, g.gradKey, g.gradValue, g.gradRpb]) x?.buffer.destroy();
  }
}
// ---- per-kernel backward times (`--mode bkernels`): the default and each `--configs` config, whole (both
// dispatches, as `fusedBackwardMma` runs them) and each of its two dispatches alone (dq, which writes delta, then dkv).
if (values.mode === 'bkernels' && !('why' in avail)) {
  const reps = Number(values.reps);
  console.log(`\n== backward per kernel (${BWD_DTYPE}, GPU time, median): whole, then each dispatch alone`);
  // `--routes true`: the rpb (dq, dkv, then the two d_rpb passes) and stride problems.
  for (const p of values.routes === 'true' ? routeProblems(values.only as string) : speedProblems(values.only as string)) {
    const { f, g } = await backwardArgs(p);
    const def = checkFusedBackwardMma(ctx, p.rank, g).config;
    // One discarded timing first (a problem's first readings were often slow), and the default again last.
    await timeRun(ctx, () => fusedBackwardMma(ctx, p.rank, g, def), reps, warmer);
    for (const [name, config] of [['default', def] as const, ...backwardVariants(p.rank, def, g), ['default again', def] as const]) {
      try {
        const whole = await timeRun(ctx, () => fusedBackwardMma(ctx, p.rank, g, config), reps, warmer);
        const plan = checkFusedBackwardMma(ctx, p.rank, g, config);
        const scratch = mmaBackwardScratch(ctx, plan.problem, g.logsumexp.shape);
        // Each dispatch by its kernel's name: the float32 split's abs-max dispatch first, dq, dkv, the d_rpb passes.
        const each: string[] = [];
        for (const c of mmaBackwardCommands(ctx, plan.kernels, plan.problem, g, plan.config, scratch)) each.push(`${c.kernel.key.split('/')[0]?.replace('na-fused-backward-mma-', '').replace('fused-backward-', '')} ${(await timeCommand(ctx, c, reps, warmer)).toFixed(1)}`);
        scratch.release();
        console.log(`${p.name.padEnd(34)} ${name.slice(0, 60).padEnd(60)} ${(whole * 1000).toFixed(1).padStart(9)} us = ${each.join(' + ')} us`);
      } catch (e) {
        failures++;
        console.log(`${p.name} ${name}: ${(e as Error).message.split('\n')[0]}`);
      }
    }
    free(f);
    for (const x of [g.gradOutput, g.gradQuery, g.gradKey, g.gradValue, g.gradRpb]) x?.buffer.destroy();
  }
}

// ---- overlapped backward dispatches (`--mode bconcurrent`): Dawn puts a barrier before a dispatch whose written
// buffers were last written by a compute dispatch, and that barrier waits for every dispatch before it. A 4-byte
// clear of such a buffer before the first pass leaves its last write a transfer, so the dispatch is ordered only
// after the clear and may run beside the one before. dq writes its delta to a scratch here and dkv reads a delta
// computed once (or by the separate delta kernel first), so neither waits for the other's data.
if (values.mode === 'bconcurrent' && !('why' in avail)) {
  const reps = Number(values.reps);
  console.log('\n== backward dispatches overlapped (f16, GPU time, median; touch = 4-byte clears of the written buffers first)');
  for (const p of speedProblems(values.only as string)) {
    const { f, g, def, delta, scratch: owned } = await backwardDefault(p);
    const scratch = ctx.createTensor(g.logsumexp.shape, 'float32');
    const [dq, dkv] = mmaBackwardCommands(ctx, def.kernels, def.problem, g, def.config, { delta }) as [DispatchCommand, DispatchCommand];
    const dqS: DispatchCommand = { ...dq, buffers: [...dq.buffers.slice(0, -1), scratch.buffer] };
    const rows = g.logsumexp.shape.reduce((a, b) => a * b, 1);
    const deltaCmd: DispatchCommand = {
      kernel: generateFusedBackwardDelta({ dimV: p.dimV ?? p.dim, dtype: 'float16' }),
      buffers: [g.output.buffer, g.gradOutput.buffer, delta.buffer],
      uniforms: { rows },
      workgroups: [Math.ceil(rows / 64), 1, 1],
    };
    const touch = (...b: GpuTensor[]) => b.map((x) => ({ buffer: x.buffer, size: 4 }));
    const first = (c: DispatchCommand, ...b: GpuTensor[]): DispatchCommand => ({ ...c, clear: touch(...b) });
    const variants: [string, DispatchCommand[]][] = [
      ['default [dq, dkv]', [dq, dkv]],
      ['dq alone', [dq]],
      ['dkv alone', [dkv]],
      ['delta kernel alone', [deltaCmd]],
      ['[dkv, dq] serial', [dkv, dqS]],
      ['[dkv, dq] touch', [first(dkv, g.gradQuery, scratch), dqS]],
      ['[dq, dkv] touch', [first(dqS, g.gradKey, g.gradValue), dkv]],
      ['[delta, dkv, dq] serial', [deltaCmd, dkv, dqS]],
      ['[delta, dkv, dq] touch', [first(deltaCmd, g.gradQuery, scratch), dkv, dqS]],
      ['default again', [dq, dkv]],
    ];
    // Two independent dq dispatches (the second writes other buffers): overlap shows as less than twice dq alone.
    const gq2 = ctx.createTensor(g.gradQuery.shape, 'float16');
    const scratch2 = ctx.createTensor(g.logsumexp.shape, 'float32');
    const dq2: DispatchCommand = { ...dq, buffers: [...dq.buffers.slice(0, -2), gq2.buffer, scratch2.buffer] };
    variants.push(
      ['[dq, dq2] serial', [dqS, dq2]],
      ['[dq, dq2] touch', [first(dqS, gq2, scratch2), dq2]],
      ['[dq, dq2] touch one pass', [first(dqS, gq2, scratch2), dq2]],
      ['[dkv, dq] touch one pass', [first(dkv, g.gradQuery, scratch), dqS]],
      ['[dq, dkv] touch one pass', [first(dqS, g.gradKey, g.gradValue), dkv]],
      ['[dq, dkv] one pass', [dq, dkv]],
    );
    // Reference gradients from the default, then each touch variant's once (a race would change them).
    await ctx.dispatch([dq, dkv]);
    const ref = await Promise.all([g.gradQuery, g.gradKey, g.gradValue].map((x) => ctx.read(x)));
    for (const [name, cmds] of variants) {
      try {
        const us = await timeCommand(ctx, cmds, reps, warmer, name.endsWith('one pass'));
        let diff = '';
        if (name.includes('touch') && !name.includes('dq2')) {
          for (const x of [g.gradQuery, g.gradKey, g.gradValue]) ctx.zero(x);
          await ctx.dispatch(cmds);
          const got = await Promise.all([g.gradQuery, g.gradKey, g.gradValue].map((x) => ctx.read(x)));
          diff = `  max |diff| vs default (dq dk dv) ${got.map((v, i) => maxErr(v, ref[i] as typeof v).err.toExponential(2)).join(' ')}`;
        }
        console.log(`${p.name.padEnd(34)} ${name.padEnd(26)} ${us.toFixed(1).padStart(9)} us${diff}`);
      } catch (e) {
        failures++;
        console.log(`${p.name} ${name}: ${(e as Error).message.split('\n')[0]}`);
      }
    }
    free(f);
    for (const x of [g.gradOutput, g.gradQuery, g.gradKey, g.gradValue, scratch, gq2, scratch2]) x.buffer.destroy();
    owned.release();
  }
}

/** A speed problem's backward arguments, its default mma backward (checked) and its scratch (the float32 split's scales filled once). */
async function backwardDefault(p: Problem) {
  const { f, g } = await backwardArgs(p);
  const def = checkFusedBackwardMma(ctx, p.rank, g);
  const scratch = mmaBackwardScratch(ctx, def.problem, g.logsumexp.shape);
  await ctx.dispatch(backwardDispatches(mmaBackwardCommands(ctx, def.kernels, def.problem, g, def.config, scratch)).pre, 'split scales');
  return { f, g, def, scratch, delta: scratch.delta };
}

// ---- backward timing probes (`--mode bprobe`): the default backward's dq and dkv kernels, each alone, with the
// memory and register probes of mma-probes.ts (`--probes a,b` picks some).
if (values.mode === 'bprobe' && !('why' in avail)) {
  const reps = Number(values.reps);
  console.log('\n== backward timing probes (f16, default config, each kernel alone, patched kernel texts; GPU time, median)');
  for (const p of speedProblems(values.only as string)) {
    const { f, g, def, scratch } = await backwardDefault(p);
    const [dq, dkv] = backwardDispatches(mmaBackwardCommands(ctx, def.kernels, def.problem, g, def.config, scratch)).kernels as [DispatchCommand, DispatchCommand];
    // dq first (it writes delta, which dkv reads); one discarded timing of each.
    for (const c of [dq, dkv]) await timeCommand(ctx, c, reps, warmer);
    const names = BACKWARD_PROBES.filter((n) => values.probes === '' || values.probes.split(',').includes(n));
    for (const [kernel, c] of [['dq', dq], ['dkv', dkv]] as const) {
      const row = (name: string, us: number) => console.log(`${p.name.padEnd(34)} ${kernel.padEnd(3)} ${name.padEnd(22)} ${us.toFixed(1).padStart(10)} us`);
      row('unpatched', await timeCommand(ctx, c, reps, warmer));
      for (const name of names) {
        const patched = probedCommand(c, name, PROBES[name] as Probe);
        if (patched.kernel.code === c.kernel.code) {
          console.log(`${p.name} ${kernel} probe ${name}: the patch matched nothing`);
          continue;
        }
        try {
          row(name, await timeCommand(ctx, patched, reps, warmer));
        } catch (e) {
          console.log(`${p.name} ${kernel} probe ${name}: ${(e as Error).message.split('\n')[0]}`);
        }
      }
      row('unpatched again', await timeCommand(ctx, c, reps, warmer));
    }
    free(f);
    for (const x of [g.gradOutput, g.gradQuery, g.gradKey, g.gradValue]) x.buffer.destroy();
    scratch.release();
  }
}

// ---- residency (`--mode occupancy`): how many workgroups of a kernel an SM holds at once, counted by the kernel
// itself (`countResidency`): the default forward, its memory and register probes, and the backward's dq and dkv;
// first the ceiling rows, a kernel that only sits resident with a given workgroup size and memory.
if (values.mode === 'occupancy' && !('why' in avail)) {
  const SMS = 132; // H200 SXM; WebGPU does not say
  const occ = ctx.createTensor([4], 'float32');
  // The counter's peak (its second word) after running commands that count themselves into `occ`.
  const peak = async (commands: readonly DispatchCommand[]): Promise<number> => {
    ctx.zero(occ);
    await ctx.dispatch(commands);
    const t = await ctx.read(occ);
    return new Uint32Array(new Float32Array(t.data as Float32Array).buffer)[1] as number;
  };
  const resident = (commands: readonly DispatchCommand[]): Promise<number> =>
    peak(commands.map((c) => ({ ...c, kernel: { ...c.kernel, key: `${c.kernel.key}#occ`, code: countResidency(c.kernel.code, c.kernel.bindings.length), bindings: [...c.kernel.bindings, { name: 'occ', access: 'read_write' as const }] }, buffers: [...c.buffers, occ.buffer] })));
  const fmt = (peak: number, total: number) => `${String(peak).padStart(6)} resident of ${String(total).padStart(7)} = ${(peak / SMS).toFixed(2).padStart(6)} per SM`;
  console.log(`\n== residency ceiling (a kernel that only sits resident; ${SMS} SMs assumed)`);
  for (const threads of [64, 128, 256]) {
    for (const bytes of [0, 4096, 8192, 11264, 12288, 16384, 24576, 32768, 40960, 49152]) {
      const kernel = residencyKernel(threads, bytes, 20000);
      try {
        const n = await peak([{ kernel, buffers: [occ.buffer], workgroups: [SMS * 40, 1, 1] }]);
        console.log(`ceiling threads ${String(threads).padStart(3)} bytes ${String(bytes).padStart(6)}: ${fmt(n, SMS * 40)}`);
      } catch (e) {
        console.log(`ceiling threads ${threads} bytes ${bytes}: ${(e as Error).message.split('\n')[0]}`);
      }
    }
  }
  console.log('\n== residency of the default kernels (f16)');
  const total = (cs: readonly DispatchCommand[]) => cs.reduce((n, c) => n + c.workgroups[0] * c.workgroups[1] * c.workgroups[2], 0);
  for (const p0 of speedProblems(values.only as string)) {
    const p = { ...p0, dtype: 'float16' as const };
    const t = makeArgs(p, 11);
    const g = gpuArgs(ctx, p, t);
    const def = defaultMmaConfig(ctx, planFusedForwardMma(ctx, p.rank, g, undefined).problem) as MmaForwardConfig;
    const commands = planFusedForwardMma(ctx, p.rank, g, def).commands;
    const names = ['unpatched', ...Object.keys(PROBES).filter((n) => values.probes === '' || values.probes.split(',').includes(n))];
    for (const name of names) {
      const probe = PROBES[name];
      const cs = probe ? commands.map((x) => probedCommand(x, name, probe)) : commands;
      try {
        console.log(`${p.name.padEnd(34)} fwd ${label(def)} ${name.padEnd(10)} ${String(cs[0]?.kernel.workgroupBytes).padStart(6)} B: ${fmt(await resident(cs), total(cs))}`);
      } catch (e) {
        console.log(`${p.name} fwd ${name}: ${(e as Error).message.split('\n')[0]}`);
      }
    }
    // --configs '[{...}]': these forward configs' residency too (each `{ path: 'mma', ... }` fields of MmaForwardConfig).
    for (const c0 of values.configs === '' ? [] : (JSON.parse(values.configs) as Omit<MmaForwardConfig, 'path'>[])) {
      const c: MmaForwardConfig = { ...c0, path: 'mma' };
      try {
        const cs = planFusedForwardMma(ctx, p.rank, g, c).commands;
        console.log(`${p.name.padEnd(34)} fwd ${label(c)} ${String(cs[0]?.kernel.workgroupBytes).padStart(6)} B: ${fmt(await resident(cs), total(cs))}`);
      } catch (e) {
        console.log(`${p.name} fwd ${label(c)}: ${(e as Error).message.split('\n')[0]}`);
      }
    }
    free(g);
    const b = await backwardDefault(p);
    const [dq, dkv] = backwardDispatches(mmaBackwardCommands(ctx, b.def.kernels, b.def.problem, b.g, b.def.config, b.scratch)).kernels as [DispatchCommand, DispatchCommand];
    for (const [kernel, c] of [['dq', dq], ['dkv', dkv]] as const) {
      try {
        console.log(`${p.name.padEnd(34)} ${kernel.padEnd(3)} ${String(c.kernel.workgroupBytes).padStart(6)} B: ${fmt(await resident([c]), total([c]))}`);
      } catch (e) {
        console.log(`${p.name} ${kernel}: ${(e as Error).message.split('\n')[0]}`);
      }
    }
    free(b.f);
    for (const x of [b.g.gradOutput, b.g.gradQuery, b.g.gradKey, b.g.gradValue]) x.buffer.destroy();
    b.scratch.release();
  }
  occ.buffer.destroy();
}

// ---- backward config sweep (`--mode bsweep`): the dq and dkv kernels timed alone for each subgroup count and
// the `--top` tiles by the forward's cost model (and the default's), so each kernel's best tile can be chosen
// independently; a '*' in the first / second mark column is the default's dq / dkv choice.
if (values.mode === 'bsweep' && !('why' in avail)) {
  const reps = Number(values.reps);
  console.log(`\n== backward sweep (${BWD_DTYPE}, GPU time per kernel, median): dq and dkv alone per config`);
  for (const p of speedProblems(values.only as string)) {
    const { f, g, def, scratch } = await backwardDefault(p);
    const best = { dq: Number.POSITIVE_INFINITY, dkv: Number.POSITIVE_INFINITY, dqAt: '', dkvAt: '' };
    // One discarded timing of the default's kernels first (a problem's first readings were often 2-4x slow).
    for (const c of backwardDispatches(mmaBackwardCommands(ctx, def.kernels, def.problem, g, def.config, scratch)).kernels) await timeCommand(ctx, c, reps, warmer);
    // --hsplit true: each subgroup count also with two subgroups per 16 rows in both kernels (dqHeadSplit,
    // dkvHeadSplit; tiles of 8 rows per subgroup, one scratch each, no dS over V).
    const splits = values.hsplit === 'true' ? [false, true] : [false];
    for (const [subgroups, split] of ([2, 4, 8] as const).flatMap((n) => splits.map((h) => [n, h] as const))) {
      const rows = (split ? 8 : 16) * subgroups;
      const tiles = tileShapes(p.rank, rows)
        .map((tile) => ({ tile, cost: mmaConfigCost(def.problem, { path: 'mma', queryTile: tile, keyChunk: 32, subgroups: (rows / 16) as 2 | 4 | 8 }) }))
        .sort((x, y) => x.cost - y.cost)
        .slice(0, Number(values.top));
      // The default's own tiles are always timed.
      for (const [tile, n, h] of [[def.config.queryTile, def.config.querySubgroups, def.config.dqHeadSplit === true], [def.config.keyTile, def.config.keySubgroups, def.config.dkvHeadSplit === true]] as const) {
        if (n === subgroups && h === split && !tiles.some((x) => x.tile.join() === tile.join())) tiles.push({ tile: [...tile], cost: 0 });
      }
      // Each tile with 16-row chunks (the default); --chunk16 true: with 32-row chunks too; --tight true: each also
      // with unpadded scratch rows (tightScratch); --shared true: each also with the dq kernel's S and dP in one
      // scratch and in two (dqSharedScratch; else the default's choice); --dsv true: each also with dq's dS over the
      // V rows (dqDsOverV); the dkv column then repeats.
      const chunks: (16 | 32)[] = values.chunk16 === 'true' ? [16, 32] : [16];
      const layouts = values.tight === 'true' ? [false, true] : [false];
      const sharing = split ? [false] : values.shared === 'true' ? [false, true] : [def.config.dqSharedScratch === true];
      const dsv = values.dsv === 'true' && !split ? [false, true] : [false];
      for (const [{ tile }, chunk, tight, shared, overV] of tiles.flatMap((x) => chunks.flatMap((c) => layouts.flatMap((t) => sharing.flatMap((sh) => dsv.map((o) => [x, c, t, sh, o] as const)))))) {
        const config: MmaBackwardConfig = { path: 'mma', queryTile: tile, querySubgroups: subgroups, keyTile: tile, keySubgroups: subgroups, chunk, ...(tight ? { tightScratch: true } : {}), ...(shared ? { dqSharedScratch: true } : {}), ...(overV ? { dqDsOverV: true } : {}), ...(split ? { dqHeadSplit: true, dkvHeadSplit: true } : {}) };
        const same = chunk === def.config.chunk && tight === (def.config.tightScratch === true) && !overV;
        const dqSame = same && shared === (def.config.dqSharedScratch === true) && split === (def.config.dqHeadSplit === true);
        const kvSame = same && split === (def.config.dkvHeadSplit === true);
        const mark = (t: readonly number[], n: number, ok: boolean) => (t.join() === tile.join() && n === subgroups && ok ? '*' : ' ');
        const name = `sg${subgroups} ${tile.join('x')}${chunk === 32 ? ' c32' : ''}${tight ? ' tight' : ''}${shared ? ' dqsh' : ''}${overV ? ' dsv' : ''}${split ? ' hsplit' : ''} ${mark(def.config.queryTile, def.config.querySubgroups, dqSame)}${mark(def.config.keyTile, def.config.keySubgroups, kvSame)}`;
        try {
          const { kernels } = checkFusedBackwardMma(ctx, p.rank, g, config);
          const [dq, dkv] = backwardDispatches(mmaBackwardCommands(ctx, kernels, def.problem, g, config, scratch)).kernels as [DispatchCommand, DispatchCommand];
          // dq first (it writes delta, which dkv reads).
          const dqUs = await timeCommand(ctx, dq, reps, warmer);
          const dkvUs = await timeCommand(ctx, dkv, reps, warmer);
          if (dqUs < best.dq) Object.assign(best, { dq: dqUs, dqAt: name });
          if (dkvUs < best.dkv) Object.assign(best, { dkv: dkvUs, dkvAt: name });
          console.log(`${p.name.padEnd(34)} ${name.padEnd(16)} dq ${dqUs.toFixed(1).padStart(9)} us  dkv ${dkvUs.toFixed(1).padStart(9)} us`);
        } catch (e) {
          console.log(`${p.name.padEnd(34)} ${name.padEnd(16)} ${(e as Error).message.split('\n')[0]}`);
        }
      }
    }
    console.log(`${p.name.padEnd(34)} BEST dq ${best.dqAt} ${best.dq.toFixed(1)} us; dkv ${best.dkvAt} ${best.dkv.toFixed(1)} us`);
    free(f);
    for (const x of [g.gradOutput, g.gradQuery, g.gradKey, g.gradValue]) x.buffer.destroy();
    scratch.release();
  }
}
ctx.destroy();
console.log(`\nfailures: ${failures}`);
process.exit(failures ? 1 : 0);
