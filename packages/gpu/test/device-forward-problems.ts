/**
 * Problems and helpers the tensor-core device scripts (sgmat-device.ts, mma-device.ts) share: f16 inputs of a
 * problem, the CPU-reference and GPU argument sets built from them, the max-error check, buffer release.
 */
import { type FusedForwardArgs, type NaRank, randn, type Tensor, tensor, toFloat64Values } from '@natten-web/core';
import type { GpuContext, GpuTensor } from '../src/index.ts';

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
  rpb?: boolean;
  batch?: number;
}

export function makeArgs(p: Problem, seed: number) {
  const B = p.batch ?? 1;
  const hk = p.headsKv ?? p.heads;
  const dv = p.dimV ?? p.dim;
  const q = randn([B, ...p.spatial, p.heads, p.dim], 'float16', seed);
  const k = randn([B, ...p.spatial, hk, p.dim], 'float16', seed + 1);
  const v = randn([B, ...p.spatial, hk, dv], 'float16', seed + 2);
  const rpb = p.rpb ? randn([p.heads, ...p.kernelSize.map((x) => 2 * x - 1)], 'float16', seed + 3) : undefined;
  const out = tensor([B, ...p.spatial, p.heads, dv], 'float16');
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
  };
}

export function gpuArgs(ctx: GpuContext, p: Problem, t: ReturnType<typeof makeArgs>): FusedForwardArgs<GpuTensor> {
  return {
    output: ctx.createTensor(t.out.shape, 'float16'),
    query: ctx.upload(t.q),
    key: ctx.upload(t.k),
    value: ctx.upload(t.v),
    rpb: t.rpb ? ctx.upload(t.rpb) : null,
    logsumexp: ctx.createTensor(t.lse.shape, 'float32'),
    kernelSize: p.kernelSize,
    dilation: p.dilation ?? 1,
    isCausal: p.isCausal ?? false,
  };
}

export function maxErr(got: Tensor, want: Tensor): { err: number; nan: number; bad: number; first: number; n: number } {
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
    if (!(e <= 1e-2)) {
      bad++;
      if (first < 0) first = i;
    }
  }
  return { err, nan, bad, first, n: g.length };
}

export function free(g: FusedForwardArgs<GpuTensor>): void {
  for (const t of [g.output, g.query, g.key, g.value, g.rpb, g.logsumexp]) t?.buffer.destroy();
}
