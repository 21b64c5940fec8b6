/** Speed of the reference kernels: the 2-D 64x64, 4 heads, head dim 32, K=7 forward must stay well under a second. */
import { randn, tensor } from '@natten-web/core';
import { describe, expect, it } from 'vitest';
import { na2dForward } from '../src/index.ts';

describe('CPU speed', () => {
  it('2-D 64x64, H=4, D=32, K=7 fused forward (float32)', () => {
    const shape = [1, 64, 64, 4, 32];
    const q = randn(shape, 'float32', 1);
    const k = randn(shape, 'float32', 2);
    const v = randn(shape, 'float32', 3);
    const out = tensor(shape, 'float32');
    const lse = tensor([1, 64, 64, 4], 'float32');
    const wall: number[] = [];
    const cpu: number[] = [];
    for (let i = 0; i < 3; i++) {
      const c0 = process.cpuUsage();
      const t0 = performance.now();
      na2dForward(out, q, k, v, null, lse, 7, 1, false, null);
      wall.push(performance.now() - t0);
      const c = process.cpuUsage(c0);
      cpu.push((c.user + c.system) / 1000);
    }
    const best = Math.min(...cpu);
    console.log(
      `na2dForward 64x64 H4 D32 K7 f32: wall ${wall.map((t) => t.toFixed(0)).join(', ')} ms; cpu ${cpu.map((t) => t.toFixed(0)).join(', ')} ms (best ${best.toFixed(0)} ms)`,
    );
    // Process CPU time, not wall time: the shared dev machine is often oversubscribed. Measured
    // ~150-250 ms there when idle; the bound is the brief's "well under a second".
    expect(best).toBeLessThan(1000);
  });
});
