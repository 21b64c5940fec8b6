import { NattenArgumentError, numel, randn, toFloat64Values } from '@natten-web/core';
import { afterAll, describe, expect, it } from 'vitest';
import { type GpuTensor, linear, linearCommand } from '../src/index.ts';
import { gpuContext } from './setup.ts';

afterAll(async () => (await gpuContext()).destroy());

/** y = x W^T + b in f64. */
function reference(x: Float64Array, w: Float64Array, b: Float64Array | undefined, rows: number, nIn: number, nOut: number): Float64Array {
  const y = new Float64Array(rows * nOut);
  for (let r = 0; r < rows; r++) {
    for (let o = 0; o < nOut; o++) {
      let s = b ? (b[o] as number) : 0;
      for (let i = 0; i < nIn; i++) s += (x[r * nIn + i] as number) * (w[o * nIn + i] as number);
      y[r * nOut + o] = s;
    }
  }
  return y;
}

// Shapes that cross the 64 x 64 tiles and the 16-wide k slices unevenly, and the qkv split.
const CASES = [
  { lead: [3, 5], nIn: 7, nOut: 9, parts: 1 as const, bias: true },
  { lead: [2, 70], nIn: 33, nOut: 130, parts: 1 as const, bias: false },
  { lead: [1, 9, 10], nIn: 64, nOut: 192, parts: 3 as const, bias: true },
  { lead: [129], nIn: 17, nOut: 3, parts: 3 as const, bias: false },
];

describe.each(['float32', 'float16'] as const)('linear %s against an f64 reference', (dtype) => {
  it.each(CASES)('input [$lead, $nIn] x weight [$nOut, $nIn], bias $bias, $parts output(s)', async (c) => {
    const ctx = await gpuContext();
    const x = randn([...c.lead, c.nIn], dtype, 1);
    const w = randn([c.nOut, c.nIn], dtype, 2, 0.2);
    const b = c.bias ? randn([c.nOut], dtype, 3) : undefined;
    const rows = numel(x.shape) / c.nIn;
    const part = c.nOut / c.parts;
    const outs: GpuTensor[] = Array.from({ length: c.parts }, () => ctx.createTensor([...c.lead, part], dtype));
    const gx = ctx.upload(x);
    const gw = ctx.upload(w);
    const gb = b ? ctx.upload(b) : null;
    await linear(ctx, { input: gx, weight: gw, bias: gb, outputs: outs });
    const want = reference(toFloat64Values(x), toFloat64Values(w), b ? toFloat64Values(b) : undefined, rows, c.nIn, c.nOut);
    // f32 accumulation; f16 outputs are rounded to half (relative 2^-11).
    const tol = (v: number): number => (dtype === 'float32' ? 1e-4 : 2e-3 + 1e-3 * Math.abs(v));
    for (let p = 0; p < c.parts; p++) {
      const got = toFloat64Values(await ctx.read(outs[p] as GpuTensor));
      let bad = 0;
      for (let r = 0; r < rows; r++) {
        for (let j = 0; j < part; j++) {
          const e = want[r * c.nOut + p * part + j] as number;
          if (!(Math.abs((got[r * part + j] as number) - e) <= tol(e))) bad++;
        }
      }
      expect(bad).toBe(0);
    }
    for (const t of [gx, gw, gb, ...outs]) t?.buffer.destroy();
  });
});

describe('linear row blocks past the grid', () => {
  it('a grid of one row of workgroups walks every block of 64 rows (as past 65535 blocks)', async () => {
    const ctx = await gpuContext();
    const x = randn([200, 5], 'float32', 4);
    const w = randn([3, 5], 'float32', 5);
    const gx = ctx.upload(x);
    const gw = ctx.upload(w);
    const y = ctx.createTensor([200, 3], 'float32');
    const command = linearCommand(ctx, { input: gx, weight: gw, bias: null, outputs: [y] });
    expect(command.workgroups).toEqual([1, 4, 1]);
    await ctx.dispatch([{ ...command, workgroups: [1, 1, 1] }]);
    const want = reference(toFloat64Values(x), toFloat64Values(w), undefined, 200, 5, 3);
    const got = toFloat64Values(await ctx.read(y));
    expect(Math.max(...got.map((v, i) => Math.abs(v - (want[i] as number))))).toBeLessThan(1e-5);
    for (const t of [gx, gw, y]) t.buffer.destroy();
  });
});

describe('linear arguments', () => {
  it('names the argument and the rule', async () => {
    const ctx = await gpuContext();
    const x = ctx.createTensor([4, 8], 'float32');
    const w = ctx.createTensor([6, 8], 'float32');
    const y = ctx.createTensor([4, 6], 'float32');
    await expect(linear(ctx, { input: x, weight: ctx.createTensor([6, 7], 'float32'), bias: null, outputs: [y] })).rejects.toThrow('linear: input [4, 8] does not hold whole rows of in=7 values (weight [6, 7])');
    await expect(linear(ctx, { input: x, weight: w, bias: ctx.createTensor([5], 'float32'), outputs: [y] })).rejects.toThrow('linear: bias must be [out] = [6], got [5]');
    await expect(linear(ctx, { input: x, weight: w, bias: null, outputs: [ctx.createTensor([4, 5], 'float32')] })).rejects.toThrow(
      'linear: output must hold 4 rows x 6 columns (out / 1) = 24 values, got [4, 5]',
    );
    await expect(linear(ctx, { input: x, weight: ctx.createTensor([7, 8], 'float32'), bias: null, outputs: [y, y, y] })).rejects.toThrow('linear: out=7 does not split into 3 equal parts');
    await expect(linear(ctx, { input: x, weight: ctx.createTensor([6, 8, 1], 'float32'), bias: null, outputs: [y] })).rejects.toThrow(
      'linear: weight must be [out, in] with out, in >= 1, got [6, 8, 1]',
    );
    await expect(linear(ctx, { input: x, weight: ctx.createTensor([6, 8], 'float16'), bias: null, outputs: [y] })).rejects.toThrow(
      'linear: weight is float16 but input is float32; pass one dtype',
    );
    await expect(linear(ctx, { input: x, weight: w, bias: null, outputs: [ctx.createTensor([4, 6], 'float16')] })).rejects.toThrow('linear: output is float16 but input is float32');
    await expect(linear(ctx, { input: x, weight: w, bias: null, outputs: [y] })).resolves.toBeUndefined();
    await expect(linear(ctx, { input: x, weight: w, bias: null, outputs: [y, y] })).rejects.toBeInstanceOf(NattenArgumentError);
  });
});
