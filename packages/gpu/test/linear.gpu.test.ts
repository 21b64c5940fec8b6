import { NattenArgumentError, numel, randn, toFloat64Values } from '@natten-web/core';
import { afterAll, describe, expect, it } from 'vitest';
import { emulatingTensorCoreView } from '@natten-web/testkit';
import { type GpuContext, type GpuTensor, linear, linearCommand, type LinearOptions } from '../src/index.ts';
import { fakeTensorCoreContext } from './fake-tensor-core.ts';
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

type Case = { lead: number[]; nIn: number; nOut: number; parts: 1 | 3; bias: boolean };

/** Runs `linear` on `ctx` and counts the outputs outside f32 (1e-4) or f16 (2e-3 + 1e-3 |y|) tolerance. */
async function badOutputs(ctx: GpuContext, c: Case, dtype: 'float32' | 'float16', options?: LinearOptions): Promise<number> {
  const x = randn([...c.lead, c.nIn], dtype, 1);
  const w = randn([c.nOut, c.nIn], dtype, 2, 0.2);
  const b = c.bias ? randn([c.nOut], dtype, 3) : undefined;
  const rows = numel(x.shape) / c.nIn;
  const part = c.nOut / c.parts;
  const outs: GpuTensor[] = Array.from({ length: c.parts }, () => ctx.createTensor([...c.lead, part], dtype));
  const gx = ctx.upload(x);
  const gw = ctx.upload(w);
  const gb = b ? ctx.upload(b) : null;
  await linear(ctx, { input: gx, weight: gw, bias: gb, outputs: outs }, options);
  const want = reference(toFloat64Values(x), toFloat64Values(w), b ? toFloat64Values(b) : undefined, rows, c.nIn, c.nOut);
  // f32 accumulation; f16 outputs are rounded to half (relative 2^-11).
  const tol = (v: number): number => (dtype === 'float32' ? 1e-4 : 2e-3 + 1e-3 * Math.abs(v));
  let bad = 0;
  for (let p = 0; p < c.parts; p++) {
    const got = toFloat64Values(await ctx.read(outs[p] as GpuTensor));
    for (let r = 0; r < rows; r++) {
      for (let j = 0; j < part; j++) {
        const e = want[r * c.nOut + p * part + j] as number;
        if (!(Math.abs((got[r * part + j] as number) - e) <= tol(e))) bad++;
      }
    }
  }
  for (const t of [gx, gw, gb, ...outs]) t?.buffer.destroy();
  return bad;
}

describe.each(['float32', 'float16'] as const)('linear %s against an f64 reference', (dtype) => {
  it.each(CASES)('input [$lead, $nIn] x weight [$nOut, $nIn], bias $bias, $parts output(s)', async (c) => {
    expect(await badOutputs(await gpuContext(), c, dtype, { path: 'tiled' })).toBe(0);
  });
});

// The tensor-core kernel, its subgroup matrices emulated: rows and columns past the 64-row and 64/128-column blocks,
// k past the 32-wide steps (in = 8, 40, 72), 16-byte and one-value output stores (out / parts a multiple of 8 or not).
const MMA_CASES: (Case & { frags?: 4 | 8; rowFrags?: 2 })[] = [
  { lead: [3, 5], nIn: 8, nOut: 9, parts: 1, bias: true },
  { lead: [2, 70], nIn: 40, nOut: 136, parts: 1, bias: false },
  { lead: [1, 9, 10], nIn: 64, nOut: 192, parts: 3, bias: true },
  { lead: [129], nIn: 72, nOut: 48, parts: 3, bias: false },
  { lead: [67], nIn: 16, nOut: 200, parts: 1, bias: true, frags: 8 },
  { lead: [70], nIn: 32, nOut: 30, parts: 3, bias: true },
  { lead: [3, 50], nIn: 48, nOut: 264, parts: 1, bias: true, rowFrags: 2 },
  { lead: [2, 33], nIn: 24, nOut: 96, parts: 3, bias: false, rowFrags: 2 },
];

describe('linear on tensor cores (subgroup matrices emulated) against an f64 reference', () => {
  it.each(MMA_CASES)('input [$lead, $nIn] x weight [$nOut, $nIn], bias $bias, $parts output(s), frags $frags, rowFrags $rowFrags', async (c) => {
    const ctx = emulatingTensorCoreView(await gpuContext());
    expect(linearCommand(ctx, probeArgs(ctx, c), { path: 'auto' }).kernel.key).toContain('linear-mma');
    expect(await badOutputs(ctx, c, 'float16', { path: 'mma', ...(c.frags ? { frags: c.frags } : {}), ...(c.rowFrags ? { rowFrags: c.rowFrags } : {}) })).toBe(0);
  });
});

/** Arguments of case `c`'s shapes (float16) for planning only. */
function probeArgs(ctx: GpuContext, c: Case): Parameters<typeof linearCommand>[1] {
  const part = c.nOut / c.parts;
  return {
    input: ctx.createTensor([...c.lead, c.nIn], 'float16'),
    weight: ctx.createTensor([c.nOut, c.nIn], 'float16'),
    bias: null,
    outputs: Array.from({ length: c.parts }, () => ctx.createTensor([...c.lead, part], 'float16')),
  };
}

describe('linear kernel choice', () => {
  const t = (shape: number[], dtype: 'float16' | 'float32' = 'float16'): GpuTensor => ({ shape, dtype, numel: numel(shape), buffer: {} }) as unknown as GpuTensor;
  const args = (nIn: number, nOut: number, dtype: 'float16' | 'float32' = 'float16') => ({ input: t([100, nIn], dtype), weight: t([nOut, nIn], dtype), bias: null, outputs: [t([100, nOut], dtype)] });
  it('takes the tensor cores for float16 with in a multiple of 8, where the adapter has them', () => {
    const tc = fakeTensorCoreContext();
    expect(linearCommand(tc, args(64, 192)).kernel.key).toContain('linear-mma');
    expect(linearCommand(tc, args(64, 192)).workgroups).toEqual([3, 2, 1]);
    expect(linearCommand(tc, args(64, 256)).workgroups).toEqual([4, 2, 1]);
    // 4096 or more blocks of 64 x 64: blocks of 64 x 128, the subgroups 2 x 2.
    const big = { input: t([8192, 1024]), weight: t([4096, 1024]), bias: null, outputs: [t([8192, 4096])] };
    expect(linearCommand(tc, big).workgroups).toEqual([32, 128, 1]);
    expect(linearCommand(tc, big).kernel.code).toContain('acc_1_3');
    expect(linearCommand(tc, big, { frags: 8 }).workgroups).toEqual([32, 128, 1]);
    expect(linearCommand(tc, big, { frags: 8 }).kernel.code).not.toContain('acc_1_');
    expect(linearCommand(tc, args(60, 192)).kernel.key).not.toContain('linear-mma');
    expect(linearCommand(tc, args(64, 192, 'float32')).kernel.key).not.toContain('linear-mma');
    expect(linearCommand(tc, args(64, 192), { path: 'tiled' }).kernel.key).not.toContain('linear-mma');
    expect(() => linearCommand(tc, args(60, 192), { path: 'mma' })).toThrow("linear: path 'mma' (tensor cores) cannot run this call: in=60 must be a multiple of 8 (16-byte rows)");
    expect(() => linearCommand(tc, args(64, 192, 'float32'), { path: 'mma' })).toThrow("linear: path 'mma' (tensor cores) cannot run this call: it needs float16 tensors, not float32");
    expect(() => linearCommand(tc, args(64, 192), { frags: 5 as 4 })).toThrow('linear: frags must be 4 or 8, got 5');
    expect(() => linearCommand(tc, args(64, 192), { rowFrags: 2, frags: 8 })).toThrow('linear: rowFrags 2 takes frags 4, got frags 8');
    expect(linearCommand(tc, args(64, 192), { rowFrags: 2 }).workgroups).toEqual([2, 2, 1]);
    expect(() => linearCommand(tc, args(64, 192), { path: 'fast' as 'mma' })).toThrow("linear: path must be 'auto', 'mma' or 'tiled', got fast");
  });
  it('says why a forced tensor-core call cannot run on an adapter without them', () => {
    const plain = { ...(fakeTensorCoreContext() as object), features: new Set(['shader-f16', 'subgroups']), subgroupMatrix: [] } as unknown as GpuContext;
    expect(linearCommand(plain, args(64, 192)).kernel.key).not.toContain('linear-mma');
    expect(() => linearCommand(plain, args(64, 192), { path: 'mma' })).toThrow(/linear: path 'mma' \(tensor cores\) cannot run this call: .*subgroup/);
    expect(() => linearCommand(fakeTensorCoreContext(16), args(64, 192), { path: 'mma' })).toThrow("cannot run this call: the subgroup size must be fixed at 32 (adapter reports 16..16)");
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
