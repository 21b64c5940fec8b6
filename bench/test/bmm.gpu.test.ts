/**
 * `pnpm bench:bmm` plumbing on the real adapter (lavapipe here), with the quick set's 2-D case in float32: every BMM op
 * is timed on the plain kernels, the tensor-core path reports why it cannot run (float32; lavapipe has no subgroup
 * matrices either), the fused forward is timed in the same pass, and the table and rates follow from the timings.
 */
import { GpuContext } from '@natten-web/gpu';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BMM_OPS, bmmWork, measureBmmCase, renderBmm } from '../src/bmm.ts';
import { QUICK_CASES } from '../src/cases.ts';

const c = QUICK_CASES.find((x) => x.name.startsWith('q-2d'));
if (!c) throw new Error('the quick set has no q-2d case');

let ctx: GpuContext;
beforeAll(async () => {
  ctx = await GpuContext.create();
});
afterAll(() => ctx?.destroy());

describe('bench:bmm', () => {
  it('counts 2 N P D flops per head and product, and the attention tensor in the dtype', () => {
    // 24x24 tokens, K=5x5 (25 slots), 2 heads, D=32, batch 1.
    expect(bmmWork(c, 'float32')).toEqual({ flops: 2 * 576 * 25 * 2 * 32, attnBytes: 576 * 25 * 2 * 4 });
    expect(bmmWork(c, 'float16').attnBytes).toBe(576 * 25 * 2 * 2);
  });

  it('times every op on the plain kernels and the fused forward, and says why the tensor cores did not run', async () => {
    const { fused, rows } = await measureBmmCase(ctx, c, 'float32', 1);
    expect(fused.note).toBeUndefined();
    expect(fused.ms).toBeGreaterThan(0);
    for (const op of BMM_OPS) {
      const plain = rows.find((r) => r.op === op && r.path === 'plain');
      expect(plain?.note, op).toBeUndefined();
      expect(plain?.ms, op).toBeGreaterThan(0);
      const { flops, attnBytes } = bmmWork(c, 'float32');
      const times = op.endsWith('backward') ? 2 : 1;
      expect(plain?.tflops).toBeCloseTo((times * flops) / (plain?.ms as number) / 1e9, 12);
      expect(plain?.attnGBps).toBeCloseTo((times * attnBytes) / (plain?.ms as number) / 1e6, 9);
      const mma = rows.find((r) => r.op === op && r.path === 'mma');
      expect(mma?.ms).toBeUndefined();
      expect(mma?.note).toMatch(/path 'mma' \(tensor cores\) cannot run this call: /);
    }
    const text = renderBmm({ fused: [fused], rows });
    expect(text.split('\n')[0]).toMatch(/^case +dtype +op +plain us +tensor cores us/);
    expect(text.split('\n').filter((l) => l.startsWith('q-2d-24x24-K5-d2  f32'))).toHaveLength(4);
    expect(text).toMatch(/tensor cores not run: float32: /);
  });

  it('with per-kernel timing, times each dispatch of an op alone (one path only) and lists them under its row', async () => {
    const { rows } = await measureBmmCase(ctx, c, 'float32', 1, undefined, ['plain'], true);
    expect(rows.map((r) => r.path)).toEqual(['plain', 'plain', 'plain', 'plain']);
    const keys = (op: string) => rows.find((r) => r.op === op)?.kernels?.map((k) => k.key);
    expect(keys('qk_forward')).toEqual(['na-bmm-pn/v1']);
    expect(keys('qk_backward')).toEqual(['na-bmm-nn/v1', 'na-bmm-in/v1']);
    expect(keys('av_backward')).toEqual(['na-bmm-pn/v1', 'na-bmm-in/v1']);
    for (const r of rows) for (const k of r.kernels ?? []) expect(k.ms, `${r.op} ${k.key}`).toBeGreaterThan(0);
    const text = renderBmm({ fused: [{ case: c.name, dtype: 'float32' }], rows });
    expect(text.split('\n').filter((l) => /^ +na-bmm-(pn|nn|in)\/v1 +\d/.test(l))).toHaveLength(6);
  });
});
