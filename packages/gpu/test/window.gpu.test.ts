import { axisInverse, axisWindow } from '@natten-web/core';
import { generateWindowProbe } from '@natten-web/wgsl';
import { afterAll, describe, expect, it } from 'vitest';
import { gpuContext } from './setup.ts';

describe('WGSL window math equals core window math (index-conformance kernel)', () => {
  afterAll(async () => (await gpuContext()).destroy());
  for (const causal of [false, true]) {
    it(`every L<=17, K, d, stride, causal=${causal}`, async () => {
      const ctx = await gpuContext();
      let checked = 0;
      for (let K = 2; K <= 7; K++) {
        const kernel = generateWindowProbe({ kernelSize: K, causal });
        for (let L = K; L <= 17; L++) {
          for (let d = 1; K * d <= L; d++) {
            for (let s = 1; s <= K; s++) {
              const out = ctx.createTensor([L, 4], 'float32');
              await ctx.dispatch([{ kernel, buffers: [out.buffer], uniforms: { length: L, dilation: d, stride: s }, workgroups: [Math.ceil(L / 64), 1, 1] }]);
              const host = await ctx.read(out);
              const got = new Int32Array((host.data as Float32Array).buffer);
              out.buffer.destroy();
              const p = { length: L, kernelSize: K, dilation: d, causal, stride: s };
              for (let x = 0; x < L; x++) {
                const w = axisWindow(x, p);
                const inv = axisInverse(x, p);
                const row = [got[4 * x], got[4 * x + 1], got[4 * x + 2], got[4 * x + 3]];
                expect(row, `L=${L} K=${K} d=${d} s=${s} x=${x}`).toEqual([w.start, w.count, inv.first, inv.end]);
                checked++;
              }
            }
          }
        }
      }
      expect(checked).toBeGreaterThan(1000);
    });
  }
});
