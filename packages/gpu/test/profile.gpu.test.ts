import { randn } from '@natten-web/core';
import { afterAll, describe, expect, it } from 'vitest';
import { ClockWarmer, fusedForward, GpuContext } from '../src/index.ts';
import { gpuContext } from './setup.ts';
import { SPIN } from './test-kernels.ts';

afterAll(async () => (await gpuContext()).destroy());

describe('GpuContext.profile', () => {
  it('without timestamp queries, the wall time waits for the GPU (ops themselves only queue their work)', async () => {
    const ctx = await GpuContext.create({ disableFeatures: ['timestamp-query'] });
    try {
      expect(ctx.hasTimestamps).toBe(false);
      const out = ctx.createTensor([64], 'float32');
      const spin = () => ctx.dispatch([{ kernel: SPIN, buffers: [out.buffer], uniforms: { n: 20_000_000, value: 0 }, workgroups: [1, 1, 1] }]);
      await spin();
      await ctx.workDone();
      const t0 = performance.now();
      await spin();
      const queued = performance.now() - t0;
      await ctx.workDone();
      const p = await ctx.profile(spin);
      expect(p.gpuNs).toBeUndefined();
      expect(p.wallMs).toBeGreaterThan(4 * queued);
    } finally {
      ctx.destroy();
    }
  });

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

describe('ClockWarmer', () => {
  it('calibrates its dispatch time, and its queued work never counts in a profile', async () => {
    const ctx = await gpuContext();
    // Small dispatches: lavapipe runs them on the CPU. 16 ms each, so that the op's own time (1-10 ms on lavapipe,
    // the top of that range on a loaded CPU) stays under the bound below even when the calibration comes out short
    // (at a 4 ms target it read 1.44 ms once, in a CI run, and the op 9.3 ms).
    const warmer = await ClockWarmer.create(ctx, { dispatchMs: 16, workgroups: 16 });
    try {
      // Calibrated to within a factor of a few of the target (CPU timing is noisy, but not 10x off).
      expect(warmer.dispatchMs).toBeGreaterThan(16 / 8);
      expect(warmer.dispatchMs).toBeLessThan(16 * 8);
      expect(ClockWarmer.useful(ctx)).toBe(!ctx.adapterInfo.isFallbackAdapter);
      const shape = [1, 16, 16, 2, 16];
      const q = ctx.upload(randn(shape, 'float32', 1));
      const out = ctx.createTensor(shape, 'float32');
      const run = () => fusedForward(ctx, 2, { output: out, query: q, key: q, value: q, kernelSize: 5 });
      await run();
      await warmer.warm(20);
      // Several warm dispatches queued ahead of the op: the profile still counts the op's own pass only, while the
      // wall time includes them. Eight of them, so that the wall-time bound (a quarter of their calibrated time)
      // holds when the calibration ran on a loaded CPU (lavapipe) and came out twice too long (seen once in a
      // full-suite run beside a build).
      for (let i = 0; i < 8; i++) warmer.queue();
      const p = await ctx.profile(run);
      if (ctx.hasTimestamps) {
        expect(p.dispatches).toBe(1);
        expect((p.gpuNs as number) / 1e6).toBeLessThan(4 * warmer.dispatchMs);
        expect(p.wallMs).toBeGreaterThan(2 * warmer.dispatchMs);
      }
    } finally {
      warmer.release();
    }
  });

  it('rejects options outside their ranges, naming them', async () => {
    const ctx = await gpuContext();
    await expect(ClockWarmer.create(ctx, { dispatchMs: 0 })).rejects.toThrow('ClockWarmer: dispatchMs must be in (0, 100], got 0');
    await expect(ClockWarmer.create(ctx, { workgroups: 1.5 })).rejects.toThrow(/ClockWarmer: workgroups must be an integer in \[1, \d+\], got 1.5/);
  });
});
