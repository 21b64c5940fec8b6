/**
 * Shared helpers of the fused-backward GPU tests: build a case, produce the forward output and logsumexp with the
 * CPU reference (f64 math), compute the reference gradients on f32 copies of exactly the values the GPU sees, run
 * the GPU backward, and compare.
 */
import {
  cast,
  compareTensors,
  type Comparison,
  type DType,
  type FusedBackwardArgs,
  type NaRank,
  randn,
  type Tensor,
  zeros,
} from '@natten-web/core';
import { fusedBackward as cpuFusedBackward, fusedForward as cpuFusedForward } from '@natten-web/cpu';
import type { FusedBackwardConfig, planFusedBackward } from '@natten-web/wgsl';
import { expect } from 'vitest';
import { createGpuBackend, fusedBackwardWithConfig, type GpuContext, type GpuTensor } from '../src/index.ts';

export interface BwdCase {
  readonly rank: NaRank;
  readonly batch: number;
  readonly spatial: readonly number[];
  readonly heads: number;
  readonly headsKv?: number;
  readonly dim: number;
  readonly dimV?: number;
  readonly kernelSize: readonly number[];
  readonly dilation?: readonly number[];
  readonly causal?: readonly boolean[];
  readonly stride?: readonly number[];
  readonly rpb?: boolean;
  readonly gradRpb?: boolean;
  readonly dtype: 'float32' | 'float16';
  readonly seed?: number;
  readonly config?: FusedBackwardConfig;
}

export function caseName(c: BwdCase): string {
  const parts = [
    `${c.rank}d`,
    `B${c.batch}`,
    `L${c.spatial.join('x')}`,
    `H${c.heads}${c.headsKv && c.headsKv !== c.heads ? `/${c.headsKv}` : ''}`,
    `D${c.dim}${c.dimV && c.dimV !== c.dim ? `/${c.dimV}` : ''}`,
    `K${c.kernelSize.join('x')}`,
  ];
  if (c.dilation?.some((d) => d > 1)) parts.push(`d${c.dilation.join('x')}`);
  if (c.stride?.some((s) => s > 1)) parts.push(`s${c.stride.join('x')}`);
  if (c.causal?.some((x) => x)) parts.push(`c${c.causal.map((x) => (x ? 1 : 0)).join('')}`);
  if (c.rpb) parts.push(c.gradRpb ? 'rpb+grad' : 'rpb');
  parts.push(c.dtype === 'float16' ? 'f16' : 'f32');
  if (c.config) {
    parts.push(
      `q${c.config.queryTile.join('x')}`,
      `k${c.config.keyTile.join('x')}`,
      `s${c.config.numSplitsKey.join('x')}`,
      c.config.computeDeltaWithTorch ? 'delta-pass' : 'delta-fused',
    );
    if (c.config.lanes !== undefined && c.config.lanes > 1) parts.push(`lanes${c.config.lanes}`);
  }
  return parts.join(' ');
}

export interface Prepared {
  /** Arguments in the case dtype, for the GPU. */
  readonly args: FusedBackwardArgs;
  /** Reference gradients (f32), from f32 copies of exactly the GPU's inputs. */
  readonly ref: { gradQuery: Tensor; gradKey: Tensor; gradValue: Tensor; gradRpb: Tensor | null };
}

export function prepare(c: BwdCase): Prepared {
  const seed = c.seed ?? 1;
  const hkv = c.headsKv ?? c.heads;
  const dv = c.dimV ?? c.dim;
  const dt: DType = c.dtype;
  const qShape = [c.batch, ...c.spatial, c.heads, c.dim];
  const kShape = [c.batch, ...c.spatial, hkv, c.dim];
  const vShape = [c.batch, ...c.spatial, hkv, dv];
  const oShape = [c.batch, ...c.spatial, c.heads, dv];
  const q = randn(qShape, dt, seed);
  const k = randn(kShape, dt, seed + 1);
  const v = randn(vShape, dt, seed + 2);
  const dO = randn(oShape, dt, seed + 3, 0.05);
  const rpb = c.rpb ? randn([c.heads, ...c.kernelSize.map((K) => 2 * K - 1)], dt, seed + 4, 0.5) : null;
  const params = {
    kernelSize: c.kernelSize,
    dilation: c.dilation ?? 1,
    isCausal: c.causal ?? false,
    stride: c.stride ?? 1,
  };
  const f32 = (t: Tensor): Tensor => cast(t, 'float32');
  const out32 = zeros(oShape, 'float32');
  const lse = zeros([c.batch, ...c.spatial, c.heads], 'float32');
  cpuFusedForward(c.rank, { output: out32, query: f32(q), key: f32(k), value: f32(v), rpb: rpb ? f32(rpb) : null, logsumexp: lse, attnScale: null, ...params });
  const out = cast(out32, dt);
  const ref = {
    gradQuery: zeros(qShape, 'float32'),
    gradKey: zeros(kShape, 'float32'),
    gradValue: zeros(vShape, 'float32'),
    gradRpb: c.gradRpb && rpb ? zeros(rpb.shape, 'float32') : null,
  };
  cpuFusedBackward(c.rank, {
    gradQuery: ref.gradQuery,
    gradKey: ref.gradKey,
    gradValue: ref.gradValue,
    query: f32(q),
    key: f32(k),
    value: f32(v),
    output: f32(out),
    gradOutput: f32(dO),
    logsumexp: lse,
    rpb: rpb ? f32(rpb) : null,
    gradRpb: ref.gradRpb,
    attnScale: null,
    ...params,
  });
  const args: FusedBackwardArgs = {
    gradQuery: zeros(qShape, dt),
    gradKey: zeros(kShape, dt),
    gradValue: zeros(vShape, dt),
    query: q,
    key: k,
    value: v,
    output: out,
    gradOutput: dO,
    logsumexp: lse,
    rpb,
    gradRpb: c.gradRpb && rpb ? zeros(rpb.shape, dt) : null,
    attnScale: null,
    ...params,
    ...(c.config
      ? {
          queryTileSize: c.config.queryTile,
          keyTileSize: c.config.keyTile,
          numSplitsKey: c.config.numSplitsKey,
          computeDeltaWithTorch: c.config.computeDeltaWithTorch,
          ...(c.config.lanes !== undefined ? { lanes: c.config.lanes } : {}),
        }
      : {}),
  };
  return { args, ref };
}

/** Fresh output tensors (so a rerun starts from zeros, not the previous result). */
export function freshOutputs(args: FusedBackwardArgs): FusedBackwardArgs {
  return {
    ...args,
    gradQuery: zeros(args.gradQuery.shape, args.gradQuery.dtype),
    gradKey: zeros(args.gradKey.shape, args.gradKey.dtype),
    gradValue: zeros(args.gradValue.shape, args.gradValue.dtype),
    gradRpb: args.gradRpb ? zeros(args.gradRpb.shape, args.gradRpb.dtype) : null,
  };
}

export async function runGpu(ctx: GpuContext, rank: NaRank, args: FusedBackwardArgs): Promise<FusedBackwardArgs> {
  const a = freshOutputs(args);
  await createGpuBackend(ctx).fusedBackward(rank, a);
  return a;
}

export interface GradCheck {
  readonly name: string;
  readonly cmp: Comparison;
}

export function compareGrads(got: FusedBackwardArgs, ref: Prepared['ref']): GradCheck[] {
  const out: GradCheck[] = [
    { name: 'grad_query', cmp: compareTensors(cast(got.gradQuery, 'float32'), ref.gradQuery) },
    { name: 'grad_key', cmp: compareTensors(cast(got.gradKey, 'float32'), ref.gradKey) },
    { name: 'grad_value', cmp: compareTensors(cast(got.gradValue, 'float32'), ref.gradValue) },
  ];
  if (ref.gradRpb && got.gradRpb) out.push({ name: 'grad_rpb', cmp: compareTensors(cast(got.gradRpb, 'float32'), ref.gradRpb) });
  return out;
}

/**
 * Tolerances (STYLE §5): f32 atol 1e-4 and NMSE <= 1e-7; f16 atol 1e-2 (NATTEN HEAD's fp16 backward) and
 * NMSE <= 1e-6. d_rpb sums dS over every (batch, query) pair of a cell, so its magnitude (and rounding) grows
 * with the number of queries: it is held to the same NMSE and an atol scaled by its largest reference value.
 */
export function tolerance(dtype: 'float32' | 'float16', name: string, refMax: number): { atol: number; nmse: number } {
  const base = dtype === 'float32' ? { atol: 1e-4, nmse: 1e-7 } : { atol: 1e-2, nmse: 1e-6 };
  if (name === 'grad_rpb') return { atol: Math.max(base.atol, base.atol * refMax), nmse: base.nmse };
  return base;
}

export function maxAbs(t: Tensor): number {
  let m = 0;
  const d = t.data;
  for (let i = 0; i < d.length; i++) m = Math.max(m, Math.abs(d[i] as number));
  return m;
}

/** Bit-exact equality of two tensors' data. */
export function bitEqual(a: Tensor, b: Tensor): boolean {
  const x = new Uint8Array(a.data.buffer, a.data.byteOffset, a.data.byteLength);
  const y = new Uint8Array(b.data.buffer, b.data.byteOffset, b.data.byteLength);
  if (x.length !== y.length) return false;
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return false;
  return true;
}

/**
 * Run the GPU backward with an explicit config (`fusedBackwardWithConfig`), for knobs that are not NATTEN
 * arguments (queriesPerInvocation): host tensors uploaded, gradients read back into fresh host tensors.
 */
export async function runGpuWithConfig(ctx: GpuContext, rank: NaRank, args: FusedBackwardArgs, config: FusedBackwardConfig): Promise<FusedBackwardArgs> {
  const a = freshOutputs(args);
  const owned: GpuTensor[] = [];
  const up = (t: Tensor): GpuTensor => {
    const g = ctx.upload(t);
    owned.push(g);
    return g;
  };
  const g: FusedBackwardArgs<GpuTensor> = {
    ...a,
    query: up(a.query),
    key: up(a.key),
    value: up(a.value),
    output: up(a.output),
    gradOutput: up(a.gradOutput),
    logsumexp: up(a.logsumexp),
    rpb: a.rpb ? up(a.rpb) : null,
    gradQuery: up(a.gradQuery),
    gradKey: up(a.gradKey),
    gradValue: up(a.gradValue),
    gradRpb: a.gradRpb ? up(a.gradRpb) : null,
  };
  try {
    await fusedBackwardWithConfig(ctx, rank, g, config);
    return {
      ...a,
      gradQuery: await ctx.read(g.gradQuery),
      gradKey: await ctx.read(g.gradKey),
      gradValue: await ctx.read(g.gradValue),
      gradRpb: g.gradRpb ? await ctx.read(g.gradRpb) : null,
    };
  } finally {
    for (const t of owned) t.buffer.destroy();
  }
}

/**
 * Every gradient of `got` within the per-dtype tolerances of the reference (`tolerance`: d_rpb's atol scaled by
 * its largest reference value), with no non-finite values; the failure message names the worst element.
 */
export function expectGradsClose(got: FusedBackwardArgs, ref: Prepared['ref'], dtype: 'float32' | 'float16', label: string): void {
  for (const g of compareGrads(got, ref)) {
    const refMax = g.name === 'grad_rpb' && ref.gradRpb ? maxAbs(ref.gradRpb) : 1;
    const tol = tolerance(dtype, g.name, refMax);
    const where = `${label} ${g.name}: worst index ${g.cmp.worstIndex}, expected ${g.cmp.worstExpected}, got ${g.cmp.worstActual}`;
    expect(g.cmp.actualNonFinite, `${where} (non-finite values)`).toBe(0);
    expect(g.cmp.maxAbs, where).toBeLessThanOrEqual(tol.atol);
    expect(g.cmp.nmse, `${where} (nmse)`).toBeLessThanOrEqual(tol.nmse);
  }
}

type BackwardPlan = ReturnType<typeof planFusedBackward>;

/** The pass of a backward plan whose kernel belongs to `family` (e.g. 'na-fused-backward-dq'). */
export function planPass(plan: BackwardPlan, family: string): BackwardPlan['passes'][number] | undefined {
  return plan.passes.find((p) => p.kernel.key.startsWith(`${family}/`));
}

/** The code of every pass of a backward plan except the dq and dK/dV row kernels (delta, reductions). */
export function nonRowKernelCode(plan: BackwardPlan): string[] {
  return plan.passes.filter((p) => !/^na-fused-backward-(dq|dkv)\//.test(p.kernel.key)).map((p) => p.kernel.code);
}
