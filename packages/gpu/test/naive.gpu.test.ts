/**
 * The naive fused forward (benchmark baseline) vs the CPU reference (f64 accumulation): every rank, f32 and
 * f16, dilation, causal, stride, GQA, rpb, lse, Dv != D; plus its argument rules. Small sizes (lavapipe).
 */
import { NattenArgumentError, NattenUnsupportedError } from '@natten-web/core';
import { afterAll, describe, expect, it } from 'vitest';
import { GpuContext, naiveFusedForward } from '../src/index.ts';
import { expectFwdClose, type FwdCase, runFwdCaseWith } from './fused-forward-cases.ts';
import { gpuContext } from './setup.ts';

afterAll(async () => (await gpuContext()).destroy());

/** One case on the naive kernel vs the CPU reference (seeds 11..14 for q, k, v, rpb; STYLE §5 tolerances). */
async function check(c: FwdCase): Promise<void> {
  const ctx = await gpuContext();
  const r = await runFwdCaseWith(ctx, { seed: 11, ...c }, (g) => naiveFusedForward(ctx, c.rank, g));
  expectFwdClose(r, JSON.stringify(c));
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
