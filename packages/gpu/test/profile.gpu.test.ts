import { randn } from '@natten-web/core';
import { afterAll, describe, expect, it } from 'vitest';
import { fusedForward } from '../src/index.ts';
import { gpuContext } from './setup.ts';

describe('GpuContext.profile', () => {
  afterAll(async () => (await gpuContext()).destroy());
  it('measures GPU time of every dispatch an op makes', async () => {
    const ctx = await gpuContext();
    const shape = [1, 16, 16, 2, 16];
    const q = ctx.upload(randn(shape, 'float32', 1));
    const k = ctx.upload(randn(shape, 'float32', 2));
    const v = ctx.upload(randn(shape, 'float32', 3));
    const out = ctx.createTensor(shape, 'float32');
    const run = () => fusedForward(ctx, 2, { output: out, query: q, key: k, value: v, kernelSize: 5 });
    await run();
    const p = await ctx.profile(run);
    expect(p.wallMs).toBeGreaterThan(0);
    if (ctx.hasTimestamps) {
      expect(p.dispatches).toBeGreaterThanOrEqual(1);
      expect(p.gpuNs).toBeGreaterThan(0);
      expect(p.gpuNs as number).toBeLessThan(p.wallMs * 1e6 + 1);
    } else {
      expect(p.gpuNs).toBeUndefined();
    }
    const host = await ctx.read(out);
    expect(Array.from(host.data as Float32Array).every(Number.isFinite)).toBe(true);
  });
});
