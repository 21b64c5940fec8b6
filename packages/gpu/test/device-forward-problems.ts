/**
 * Problems and helpers the tensor-core device scripts (sgmat-device.ts, mma-device.ts) share: f16 inputs of a
 * problem, the CPU-reference and GPU argument sets built from them, the max-error check, buffer release.
 */
import { fnaFlops, type FusedBackwardArgs, type FusedForwardArgs, type NaRank, randn, type Tensor, tensor, toFloat64Values } from '@natten-web/core';
import { parseArgs } from 'node:util';
import { ClockWarmer, type DispatchCommand, GpuContext, type GpuTensor, timeDispatch } from '../src/index.ts';

export interface Problem {
  name: string;
  rank: NaRank;
  spatial: number[];
  heads: number;
  headsKv?: number;
  dim: number;
  dimV?: number;
  kernelSize: number[];
  dilation?: number[];
  isCausal?: boolean[];
  stride?: number[];
  rpb?: boolean;
  batch?: number;
  /** Tensor dtype (float16 unless set; the mma forward runs float32 split). */
  dtype?: 'float16' | 'float32';
}

export function makeArgs(p: Problem, seed: number) {
  const B = p.batch ?? 1;
  const hk = p.headsKv ?? p.heads;
  const dv = p.dimV ?? p.dim;
  const dt = p.dtype ?? 'float16';
  const q = randn([B, ...p.spatial, p.heads, p.dim], dt, seed);
  const k = randn([B, ...p.spatial, hk, p.dim], dt, seed + 1);
  const v = randn([B, ...p.spatial, hk, dv], dt, seed + 2);
  const rpb = p.rpb ? randn([p.heads, ...p.kernelSize.map((x) => 2 * x - 1)], dt, seed + 3) : undefined;
  const out = tensor([B, ...p.spatial, p.heads, dv], dt);
  const lse = tensor([B, ...p.spatial, p.heads], 'float32');
  return { q, k, v, rpb, out, lse };
}

export function hostArgs(p: Problem, t: ReturnType<typeof makeArgs>): FusedForwardArgs {
  return {
    output: t.out,
    query: t.q,
    key: t.k,
    value: t.v,
    rpb: t.rpb ?? null,
    logsumexp: t.lse,
    kernelSize: p.kernelSize,
    dilation: p.dilation ?? 1,
    isCausal: p.isCausal ?? false,
    ...(p.stride ? { stride: p.stride } : {}),
  };
}

export function gpuArgs(ctx: GpuContext, p: Problem, t: ReturnType<typeof makeArgs>): FusedForwardArgs<GpuTensor> {
  return {
    output: ctx.createTensor(t.out.shape, t.out.dtype as 'float16' | 'float32'),
    query: ctx.upload(t.q),
    key: ctx.upload(t.k),
    value: ctx.upload(t.v),
    rpb: t.rpb ? ctx.upload(t.rpb) : null,
    logsumexp: ctx.createTensor(t.lse.shape, 'float32'),
    kernelSize: p.kernelSize,
    dilation: p.dilation ?? 1,
    isCausal: p.isCausal ?? false,
    ...(p.stride ? { stride: p.stride } : {}),
  };
}

/** A backward's arguments over a forward's GPU arguments: a random dO (seed 9), fresh gradient tensors, no d_rpb. */
export function gpuBackwardArgs(ctx: GpuContext, p: Problem, g: FusedForwardArgs<GpuTensor>): FusedBackwardArgs<GpuTensor> {
  const grad = (t: GpuTensor): GpuTensor => ctx.createTensor(t.shape, t.dtype);
  return {
    ...g,
    gradOutput: ctx.upload(makeArgs(p, 9).out),
    gradQuery: grad(g.query),
    gradKey: grad(g.key),
    gradValue: grad(g.value),
    gradRpb: null,
    logsumexp: g.logsumexp as GpuTensor,
  };
}

export function maxErr(got: Tensor, want: Tensor, tol = 1e-2): { err: number; nan: number; bad: number; first: number; n: number } {
  const g = toFloat64Values(got);
  const w = toFloat64Values(want);
  let err = 0;
  let nan = 0;
  let bad = 0;
  let first = -1;
  for (let i = 0; i < g.length; i++) {
    const x = g[i] as number;
    const e = Math.abs(x - (w[i] as number));
    if (!Number.isFinite(x)) nan++;
    else err = Math.max(err, e);
    if (!(e <= tol)) {
      bad++;
      if (first < 0) first = i;
    }
  }
  return { err, nan, bad, first, n: g.length };
}

export function free(g: FusedForwardArgs<GpuTensor>): void {
  for (const t of [g.output, g.query, g.key, g.value, g.rpb, g.logsumexp]) t?.buffer.destroy();
}

/**
 * Run one config against the CPU reference and print its line; true when out and lse are within the tolerance
 * (1e-2 for float16 problems, 1e-4 for float32: the spec's forward targets) and finite.
 */
export async function checkConfig(ctx: GpuContext, p: Problem, label: string, g: FusedForwardArgs<GpuTensor>, ref: { out: Tensor; lse: Tensor }, run: () => Promise<void>): Promise<boolean> {
  const tol = p.dtype === 'float32' ? 1e-4 : 1e-2;
  try {
    await run();
    const o = maxErr(await ctx.read(g.output), ref.out, tol);
    const l = maxErr(await ctx.read(g.logsumexp as GpuTensor), ref.lse, tol);
    const ok = o.err <= tol && l.err <= tol && o.nan === 0 && l.nan === 0;
    console.log(`${ok ? 'ok  ' : 'FAIL'} ${p.name.padEnd(34)} ${label}  out ${o.err.toExponential(2)} lse ${l.err.toExponential(2)}${ok ? '' : ` bad out ${o.bad}/${o.n} first ${o.first}, bad lse ${l.bad}/${l.n} first ${l.first}`}${o.nan + l.nan ? ` NaN/Inf ${o.nan + l.nan}` : ''}`);
    return ok;
  } catch (e) {
    console.log(`FAIL ${p.name}: ${(e as Error).message.split('\n').slice(0, 6).join(' | ')}`);
    return false;
  }
}

/**
 * Median GPU time of one dispatch in us: `timeDispatch` (back-to-back iterations in one submission, as the
 * benchmark harness's single-pass forward rows). Timing each run as its own submission after an idle gap
 * (`ctx.profile`) read short kernels several times slower on the H200 (2-D 128x128 K=7: 1.5 ms vs 0.28 ms).
 */
export async function timeCommand(ctx: GpuContext, command: DispatchCommand | readonly DispatchCommand[], reps: number, warmer: ClockWarmer | undefined, onePass = false): Promise<number> {
  const t = await timeDispatch(ctx, Array.isArray(command) ? command : [command as DispatchCommand], { warmup: 2, iterations: reps, onePass, ...(warmer ? { warmer } : {}) });
  return t.medianNs / 1e3;
}

/** The benchmark problems (f16 speed), those whose name contains a part of `only` (comma-separated; '' = all). */
export function speedProblems(only: string): Problem[] {
  const all: Problem[] = [
    { name: '1d L=4096 K=127', rank: 1, spatial: [4096], heads: 8, dim: 64, kernelSize: [127] },
    { name: '1d L=32768 K=2047 causal', rank: 1, spatial: [32768], heads: 8, dim: 64, kernelSize: [2047], isCausal: [true] },
    { name: '2d 128x128 K=7', rank: 2, spatial: [128, 128], heads: 8, dim: 64, kernelSize: [7, 7] },
    { name: '2d 128x128 K=13 d=2', rank: 2, spatial: [128, 128], heads: 8, dim: 64, kernelSize: [13, 13], dilation: [2, 2] },
    { name: '2d 256x256 K=15 H=16', rank: 2, spatial: [256, 256], heads: 16, dim: 64, kernelSize: [15, 15] },
    { name: '3d 16x32x32 K=3x7x7', rank: 3, spatial: [16, 32, 32], heads: 8, dim: 64, kernelSize: [3, 7, 7] },
    { name: 'flux 2d 256x256 K=80 H=24 D=128', rank: 2, spatial: [256, 256], heads: 24, dim: 128, kernelSize: [80, 80] },
    // Between the standard problems' windows (up to 225 keys in 2-D) and FLUX-like's 6400: where rules change.
    { name: '2d 128x128 K=31', rank: 2, spatial: [128, 128], heads: 8, dim: 64, kernelSize: [31, 31] },
    { name: '2d 128x128 K=45', rank: 2, spatial: [128, 128], heads: 8, dim: 64, kernelSize: [45, 45] },
    // 1-D 4096 with half and twice the heads: whether a kernel's time follows its work (throughput) or stays
    // (latency of each workgroup's walk, the grid being one wave).
    { name: '1d L=4096 K=127 H=4', rank: 1, spatial: [4096], heads: 4, dim: 64, kernelSize: [127] },
    { name: '1d L=4096 K=127 H=16', rank: 1, spatial: [4096], heads: 16, dim: 64, kernelSize: [127] },
  ];
  return all.filter((p) => only === '' || only.split(',').some((o) => p.name.includes(o)));
}

/**
 * Problems the default route kept off the tensor-core path until session 19 or 20 (`--routes true` in the speed
 * modes): relative positional bias (vision stages of NAT / DiNAT shape: head dim 32, K=7, some dilated; the backward
 * with d_rpb since session 20), stride, and both together.
 */
export function routeProblems(only: string): Problem[] {
  const all: Problem[] = [
    { name: 'rpb 2d 56x56 K=7 H=2 D=32', rank: 2, spatial: [56, 56], heads: 2, dim: 32, kernelSize: [7, 7], rpb: true, batch: 8 },
    { name: 'rpb 2d 28x28 K=7 H=4 D=32 d=2', rank: 2, spatial: [28, 28], heads: 4, dim: 32, kernelSize: [7, 7], dilation: [2, 2], rpb: true, batch: 8 },
    { name: 'rpb 2d 14x14 K=7 H=8 D=32', rank: 2, spatial: [14, 14], heads: 8, dim: 32, kernelSize: [7, 7], rpb: true, batch: 8 },
    { name: 'rpb 2d 128x128 K=7', rank: 2, spatial: [128, 128], heads: 8, dim: 64, kernelSize: [7, 7], rpb: true },
    { name: 'rpb 2d 128x128 K=13 d=2', rank: 2, spatial: [128, 128], heads: 8, dim: 64, kernelSize: [13, 13], dilation: [2, 2], rpb: true },
    { name: 'rpb 3d 16x32x32 K=3x7x7', rank: 3, spatial: [16, 32, 32], heads: 8, dim: 64, kernelSize: [3, 7, 7], rpb: true },
    { name: 'rpb 1d L=4096 K=127', rank: 1, spatial: [4096], heads: 8, dim: 64, kernelSize: [127], rpb: true },
    { name: 'stride 2d 128x128 K=7 s=2', rank: 2, spatial: [128, 128], heads: 8, dim: 64, kernelSize: [7, 7], stride: [2, 2] },
    { name: 'stride 2d 128x128 K=13 s=4x2', rank: 2, spatial: [128, 128], heads: 8, dim: 64, kernelSize: [13, 13], stride: [4, 2] },
    { name: 'stride 3d 16x32x32 K=3x7x7 s=1x2x2', rank: 3, spatial: [16, 32, 32], heads: 8, dim: 64, kernelSize: [3, 7, 7], stride: [1, 2, 2] },
    { name: 'stride 1d L=4096 K=127 s=16', rank: 1, spatial: [4096], heads: 8, dim: 64, kernelSize: [127], stride: [16] },
    { name: 'stride 1d L=8192 K=511 s=64 causal', rank: 1, spatial: [8192], heads: 8, dim: 64, kernelSize: [511], stride: [64], isCausal: [true] },
    { name: 'rpb+stride 2d 128x128 K=7 s=2', rank: 2, spatial: [128, 128], heads: 8, dim: 64, kernelSize: [7, 7], stride: [2, 2], rpb: true },
    { name: 'rpb+stride 3d 16x32x32 K=3x7x7 s=1x2x2', rank: 3, spatial: [16, 32, 32], heads: 8, dim: 64, kernelSize: [3, 7, 7], stride: [1, 2, 2], rpb: true },
  ];
  return all.filter((p) => only === '' || only.split(',').some((o) => p.name.includes(o)));
}

type DeviceScriptOptions = { mode: string; routes: string; sweep: string; only: string; reps: string; top: string; dtype: string; chunk16: string; tight: string; inturn: string; pk: string; probes: string; shared: string; dsv: string; dsvwide: string; hsplit: string; nsg: string; pads: string; wide: string; unit: string; configs: string };

/** The device scripts' shared options (`--mode`, `--sweep`, `--only`, `--reps`, `--top`, `--nsg`, ...). */
export function deviceScriptOptions(): DeviceScriptOptions {
  const { values } = parseArgs({
    options: {
      chunk16: { type: 'string', default: 'false' },
      tight: { type: 'string', default: 'false' },
      inturn: { type: 'string', default: 'false' },
      pk: { type: 'string', default: 'false' },
      probes: { type: 'string', default: '' },
      shared: { type: 'string', default: 'false' },
      dsv: { type: 'string', default: 'false' },
      dsvwide: { type: 'string', default: 'false' },
      hsplit: { type: 'string', default: 'false' },
      dtype: { type: 'string', default: 'float16' },
      mode: { type: 'string', default: 'both' },
      routes: { type: 'string', default: 'false' },
      sweep: { type: 'string', default: 'false' },
      only: { type: 'string', default: '' },
      reps: { type: 'string', default: '20' },
      top: { type: 'string', default: '8' },
      nsg: { type: 'string', default: '' },
      pads: { type: 'string', default: 'false' },
      wide: { type: 'string', default: 'false' },
      unit: { type: 'string', default: 'false' },
      configs: { type: 'string', default: '' },
    },
  });
  return values as DeviceScriptOptions;
}

/** The high-performance adapter's context, a clock warmer on hardware adapters, and the adapter printed. */
export async function openDevice(): Promise<{ ctx: GpuContext; warmer: ClockWarmer | undefined }> {
  const ctx = await GpuContext.create({ powerPreference: 'high-performance' });
  // Keep the GPU's clock at boost while timing (see ClockWarmer); skipped on software adapters.
  const warmer = ClockWarmer.useful(ctx) ? await ClockWarmer.create(ctx) : undefined;
  const a = ctx.adapterInfo;
  console.log(`adapter: ${a.vendor} / ${a.architecture} / ${a.device} (${a.description}) subgroups ${a.subgroupMinSize}..${a.subgroupMaxSize}`);
  console.log(`features: ${[...ctx.features].join(', ')}`);
  console.log(`subgroup matrix: ${ctx.subgroupMatrix.map((c) => `${c.componentType}->${c.resultComponentType} ${c.M}x${c.N}x${c.K}`).join(', ') || 'none'}`);
  return { ctx, warmer };
}

/** Median GPU time of an op in ms (`ctx.profile`, every dispatch it makes), with the clock held up as the bench does. */
export async function timeRun(ctx: GpuContext, run: () => Promise<void>, reps: number, warmer: ClockWarmer | undefined): Promise<number> {
  if (warmer) await warmer.warm(300);
  await run();
  const samples: number[] = [];
  for (let i = 0; i < reps; i++) {
    warmer?.queue();
    const p = await ctx.profile(run);
    samples.push(p.gpuNs === undefined ? p.wallMs : p.gpuNs / 1e6);
  }
  return samples.sort((a, b) => a - b)[Math.floor(samples.length / 2)] as number;
}

/** A speed-table row printer for a problem: name, label, GPU microseconds and NA TFLOP/s. */
export function speedRow(p: Problem): (label: string, us: number) => void {
  const flops = fnaFlops({ batch: 1, heads: p.heads, spatial: p.spatial, dim: p.dim, kernelSize: p.kernelSize });
  return (label, us) => console.log(`${p.name.padEnd(34)} ${label.padEnd(30)} ${us.toFixed(1).padStart(10)} us  ${(flops / us / 1e6).toFixed(2).padStart(7)} TFLOP/s`);
}
