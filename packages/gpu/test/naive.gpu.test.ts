/**
 * The naive fused forward (benchmark baseline) vs the CPU reference (f64 accumulation): every rank, f32 and
 * f16, dilation, causal, stride, GQA, rpb, lse, Dv != D; plus its argument rules. Small sizes (lavapipe).
 */
import {
  compareTensors,
  type FusedForwardArgs,
  lseShape,
  type NaRank,
  NattenArgumentError,
  NattenUnsupportedError,
  randn,
  type Tensor,
  zeros,
} from '@natten-web/core';
import { fusedForward as cpuFusedForward } from '@natten-web/cpu';
import { afterAll, describe, expect, it } from 'vitest';
import { GpuContext, type GpuTensor, naiveFusedForward } from '../src/index.ts';
import { gpuContext } from './setup.ts';

afterAll(async () => (await gpuContext()).destroy());

interface Case {
  readonly rank: NaRank;
  readonly spatial: readonly number[];
  readonly kernelSize: readonly number[];
  readonly dilation?: readonly number[];
  readonly isCausal?: readonly boolean[];
  readonly stride?: readonly number[];
  readonly heads?: number;
  readonly headsKv?: number;
  readonly dim?: number;
  readonly dimV?: number;
  readonly dtype?: 'float32' | 'float16';
  readonly rpb?: boolean;
  readonly lse?: boolean;
  readonly batch?: number;
}

function hostArgs(c: Case): FusedForwardArgs<Tensor> {
  const dtype = c.dtype ?? 'float32';
  const B = c.batch ?? 1;
  const H = c.heads ?? 2;
  const Hkv = c.headsKv ?? H;
  const D = c.dim ?? 8;
  const Dv = c.dimV ?? D;
  return {
    query: randn([B, ...c.spatial, H, D], dtype, 11),
    key: randn([B, ...c.spatial, Hkv, D], dtype, 12),
    value: randn([B, ...c.spatial, Hkv, Dv], dtype, 13),
    output: zeros([B, ...c.spatial, H, Dv], dtype),
    logsumexp: c.lse === false ? undefined : zeros(lseShape(B, c.spatial, H), 'float32'),
    rpb: c.rpb ? randn([H, ...c.kernelSize.map((k) => 2 * k - 1)], dtype, 14, 0.5) : undefined,
    kernelSize: c.kernelSize,
    dilation: c.dilation,
    isCausal: c.isCausal,
    stride: c.stride,
  };
}

async function check(c: Case): Promise<void> {
  const ctx = await gpuContext();
  const args = hostArgs(c);
  cpuFusedForward(c.rank, args);
  const up = (t: Tensor | null | undefined): GpuTensor | undefined => (t ? ctx.upload(t) : undefined);
  const g: FusedForwardArgs<GpuTensor> = {
    ...args,
    query: ctx.upload(args.query),
    key: ctx.upload(args.key),
    value: ctx.upload(args.value),
    output: ctx.createTensor(args.output.shape, c.dtype ?? 'float32'),
    rpb: up(args.rpb),
    logsumexp: args.logsumexp ? ctx.createTensor(args.logsumexp.shape, 'float32') : undefined,
  };
  try {
    await naiveFusedForward(ctx, c.rank, g);
    const f16 = c.dtype === 'float16';
    const out = compareTensors(await ctx.read(g.output), args.output);
    const label = JSON.stringify(c);
    expect(out.actualNonFinite, label).toBe(0);
    expect(out.maxAbs, label).toBeLessThanOrEqual(f16 ? 1e-2 : 1e-4);
    expect(out.nmse, label).toBeLessThanOrEqual(f16 ? 1e-6 : 1e-7);
    if (g.logsumexp && args.logsumexp) {
      const lse = compareTensors(await ctx.read(g.logsumexp), args.logsumexp);
      expect(lse.maxAbs, `${label} lse`).toBeLessThanOrEqual(f16 ? 1e-2 : 1e-4);
    }
  } finally {
    for (const t of [g.query, g.key, g.value, g.output, g.rpb, g.logsumexp]) t?.buffer.destroy();
  }
}

const T = 300_000;

describe('naiveFusedForward vs the CPU reference', () => {
  it('1-D: K=5, dilation 2, stride 2, GQA, rpb', async () => {
    await check({ rank: 1, spatial: [23], kernelSize: [5], dilation: [2], stride: [2], heads: 4, headsKv: 2, rpb: true });
  }, T);
  it('1-D: causal K=4, f16, no lse, batch 2', async () => {
    await check({ rank: 1, spatial: [19], kernelSize: [4], isCausal: [true], dtype: 'float16', lse: false, batch: 2 });
  }, T);
  it('2-D: K=(3,5), dilation (2,1), causal (T,F), Dv != D (scalar rows)', async () => {
    await check({ rank: 2, spatial: [9, 11], kernelSize: [3, 5], dilation: [2, 1], isCausal: [true, false], dim: 6, dimV: 5 });
  }, T);
  it('2-D: K=3 rpb, f16', async () => {
    await check({ rank: 2, spatial: [8, 7], kernelSize: [3, 3], rpb: true, dtype: 'float16' });
  }, T);
  it('3-D: K=(3,2,3), causal (F,T,F), dilation (1,2,1), stride (2,1,1), MQA', async () => {
    await check({ rank: 3, spatial: [5, 6, 7], kernelSize: [3, 2, 3], isCausal: [false, true, false], dilation: [1, 2, 1], stride: [2, 1, 1], heads: 3, headsKv: 1 });
  }, T);
  it('3-D: K=3 rpb f16', async () => {
    await check({ rank: 3, spatial: [4, 5, 6], kernelSize: [3, 3, 3], rpb: true, dtype: 'float16' });
  }, T);
});

describe('naiveFusedForward argument rules', () => {
  const shapes = (dv: number) => {
    const s = { shape: [1, 8, 2, 4], dtype: 'float32' as const };
    return { query: s, key: s, value: { ...s, shape: [1, 8, 2, dv] }, output: { ...s, shape: [1, 8, 2, dv] }, kernelSize: 3 };
  };
  it('rejects tile sizes (the naive kernel has no tiles)', async () => {
    const ctx = await gpuContext();
    expect(() => naiveFusedForward.check(ctx, 1, { ...shapes(4), queryTileSize: [8], keyTileSize: [8] })).toThrow(
      new NattenArgumentError('na1d_forward (naive): query_tile_size/key_tile_size were given ([8]/[8]), but the naive kernel has no tiles; leave them unset'),
    );
  });
  it('rejects a value head dim over the private accumulator size', async () => {
    const ctx = await gpuContext();
    expect(() => naiveFusedForward.check(ctx, 1, shapes(1028))).toThrow(
      new NattenUnsupportedError("na1d_forward (naive): value head_dim=1028 exceeds the naive kernel's maximum of 1024"),
    );
  });
  it('rejects float64 (no f64 in WGSL)', async () => {
    const ctx = await gpuContext();
    const s = { shape: [1, 8, 2, 4], dtype: 'float64' as const };
    expect(() => naiveFusedForward.check(ctx, 1, { query: s, key: s, value: s, output: s, kernelSize: 3 })).toThrow(/na1d_forward \(naive\): dtype float64 is not supported on WebGPU/);
  });
  it('rejects float16 on a device without shader-f16', async () => {
    const ctx = await GpuContext.create({ disableFeatures: ['shader-f16'] });
    try {
      const s = { shape: [1, 8, 2, 4], dtype: 'float16' as const };
      expect(() => naiveFusedForward.check(ctx, 1, { query: s, key: s, value: s, output: s, kernelSize: 3 })).toThrow(
        new NattenUnsupportedError("na1d_forward (naive): float16 needs the WebGPU feature 'shader-f16', which this adapter does not offer; use float32"),
      );
    } finally {
      ctx.destroy();
    }
  });
});
