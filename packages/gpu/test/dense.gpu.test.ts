import { randn, type Tensor, toFloat64Values } from '@natten-web/core';
import { emulatingTensorCoreView, fakeTensorCoreContext, tensorFromValues } from '@natten-web/testkit';
import { afterAll, describe, expect, it } from 'vitest';
import { attentionMerge, type DenseOptions, denseBackward, denseBackwardPlan, denseForward, denseForwardPlan, type GpuContext, type GpuTensor } from '../src/index.ts';
import { cumulative, type Dims, reference, referenceBackward, referenceVarlen, type VarlenCase } from '@natten-web/testkit';
import { gpuContext } from './setup.ts';

afterAll(async () => (await gpuContext()).destroy());

const maxDiff = (a: ArrayLike<number>, b: ArrayLike<number>): number => {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs((a[i] as number) - (b[i] as number)));
  return m;
};

const CASES: FwdCase[] = [
  { name: 'GQA, Dv != D, more queries than keys', B: 2, S: 70, N: 37, H: 4, Hkv: 2, D: 16, Dv: 8, causal: false, dtype: 'float32' },
  { name: 'causal, square', B: 1, S: 50, N: 50, H: 2, Hkv: 2, D: 8, Dv: 8, causal: true, dtype: 'float32' },
  { name: 'causal, fewer queries than keys', B: 1, S: 20, N: 45, H: 1, Hkv: 1, D: 8, Dv: 12, causal: true, dtype: 'float32' },
  { name: 'a few extra tokens, head dim 64', B: 1, S: 130, N: 5, H: 2, Hkv: 1, D: 64, Dv: 64, causal: false, dtype: 'float16' },
  { name: 'head dims 100 / 40 (16-key chunks)', B: 1, S: 33, N: 70, H: 2, Hkv: 2, D: 100, Dv: 40, causal: false, dtype: 'float16' },
];

type FwdCase = Dims & { name: string; causal: boolean; dtype: 'float32' | 'float16' };

/** Case `c`'s dense forward on `ctx` against the f64 reference. */
async function checkForward(ctx: GpuContext, c: FwdCase, options: DenseOptions = {}): Promise<void> {
  const q = randn([c.B, c.S, c.H, c.D], c.dtype, 1);
  const k = randn([c.B, c.N, c.Hkv, c.D], c.dtype, 2);
  const v = randn([c.B, c.N, c.Hkv, c.Dv], c.dtype, 3);
  const scale = 1 / Math.sqrt(c.D);
  const output = ctx.createTensor([c.B, c.S, c.H, c.Dv], c.dtype);
  const lse = ctx.createTensor([c.B, c.S, c.H], 'float32');
  const [gq, gk, gv] = [q, k, v].map((t) => ctx.upload(t)) as [GpuTensor, GpuTensor, GpuTensor];
  await denseForward(ctx, { query: gq, key: gk, value: gv, output, lse, scale, isCausal: c.causal }, options);
  const want = reference(c, toFloat64Values(q), toFloat64Values(k), toFloat64Values(v), scale, c.causal);
  const tol = c.dtype === 'float32' ? 2e-5 : 2e-3;
  expect(maxDiff(toFloat64Values(await ctx.read(output)), want.out)).toBeLessThan(tol);
  expect(maxDiff(toFloat64Values(await ctx.read(lse)), want.lse)).toBeLessThan(1e-4);
  for (const t of [gq, gk, gv, output, lse]) t.buffer.destroy();
}

describe('dense attention on WebGPU against an f64 reference', () => {
  it.each(CASES)('$name ($dtype)', async (c) => {
    await checkForward(await gpuContext(), c);
  });

  it('names the argument and the rule', async () => {
    const ctx = await gpuContext();
    const t = (shape: number[], dtype: 'float32' | 'float16' = 'float32'): GpuTensor => ctx.createTensor(shape, dtype);
    const base = { query: t([1, 4, 2, 8]), key: t([1, 3, 2, 8]), value: t([1, 3, 2, 8]), output: t([1, 4, 2, 8]), lse: t([1, 4, 2]), scale: 0.3 };
    await expect(denseForward(ctx, { ...base, key: t([1, 3, 2, 4]) })).rejects.toThrow('attention: query head_dim=8 and key head_dim=4 must match');
    await expect(denseForward(ctx, { ...base, lse: t([1, 4, 3]) })).rejects.toThrow('attention: lse must have shape [1, 4, 2], got [1, 4, 3]');
    await expect(denseForward(ctx, { ...base, lse: t([1, 4, 2], 'float16') })).rejects.toThrow('attention: lse must be float32, got float16');
    await expect(denseForward(ctx, { ...base, value: t([1, 3, 2, 8], 'float16') })).rejects.toThrow('attention: value is float16 but query is float32; pass one dtype');
    await expect(denseForward(ctx, { ...base, scale: Number.NaN })).rejects.toThrow('attention: scale must be a finite number, got NaN');
    await expect(denseForward(ctx, base)).resolves.toBeUndefined();
  });
});

/** Dense attention over keys A written, then over keys B merged into it (`mergeInto`), against the reference over A and B. */
async function checkMergeInto(ctx: GpuContext, dtype: 'float32' | 'float16', options: DenseOptions = {}): Promise<void> {
  const [S, NA, NB, H, Hkv, D, Dv] = [70, 20, 37, 4, 2, 32, 16];
  const q = randn([1, S, H, D], dtype, 1);
  const [kA, kB] = [randn([1, NA, Hkv, D], dtype, 2), randn([1, NB, Hkv, D], dtype, 3)];
  const [vA, vB] = [randn([1, NA, Hkv, Dv], dtype, 4), randn([1, NB, Hkv, Dv], dtype, 5)];
  const cat = (a: Tensor, b: Tensor): Float64Array => Float64Array.from([...toFloat64Values(a), ...toFloat64Values(b)]);
  const scale = 0.3;
  const want = reference({ B: 1, S, N: NA + NB, H, Hkv, D, Dv }, toFloat64Values(q), cat(kA, kB), cat(vA, vB), scale, false);
  const g = (t: Tensor): GpuTensor => ctx.upload(t);
  const output = ctx.createTensor([1, S, H, Dv], dtype);
  const lse = ctx.createTensor([1, S, H], 'float32');
  await denseForward(ctx, { query: g(q), key: g(kA), value: g(vA), output, lse, scale }, options);
  await denseForward(ctx, { query: g(q), key: g(kB), value: g(vB), output, lse, scale, mergeInto: true }, options);
  expect(maxDiff(toFloat64Values(await ctx.read(output)), want.out)).toBeLessThan(dtype === 'float32' ? 2e-5 : 3e-3);
  expect(maxDiff(toFloat64Values(await ctx.read(lse)), want.lse)).toBeLessThan(1e-4);
}

describe('dense attention merged into what the outputs hold (mergeInto)', () => {
  it.each(['float32', 'float16'] as const)('plain kernel, %s', async (dtype) => {
    await checkMergeInto(await gpuContext(), dtype, { path: 'plain' });
  });
  it.each(['float16', 'float32'] as const)('tensor cores (emulated), %s', async (dtype) => {
    await checkMergeInto(emulatingTensorCoreView(await gpuContext()), dtype, { path: 'mma' });
  });
});

describe('mergeAttentions on WebGPU against an f64 merge', () => {
  // Head dims 6 (32 rows per workgroup), 64 (4 rows), 260 (one row, 65 groups of four channels over 64 invocations).
  it.each([
    ['float32', [2, 5, 7, 3, 6]],
    ['float16', [2, 5, 7, 3, 6]],
    ['float16', [3, 11, 64]],
    ['float32', [2, 3, 260]],
  ] as const)('three partial attentions (%s, shape %j), folded left', async (dtype, dims) => {
    const ctx = await gpuContext();
    const shape = [...dims];
    const dv = shape[shape.length - 1] as number;
    const outs = [0, 1, 2].map((s) => randn(shape, dtype, 10 + s));
    const lses = [0, 1, 2].map((s) => randn(shape.slice(0, -1), 'float32', 20 + s, 3));
    const ov = outs.map((t) => toFloat64Values(t));
    const lv = lses.map((t) => toFloat64Values(t));
    // f64: the logsumexp of all three, and each output weighted by exp(l_i - l).
    const rows = lv[0]?.length as number;
    const want = new Float64Array(ov[0]?.length as number);
    const wantLse = new Float64Array(rows);
    for (let r = 0; r < rows; r++) {
      const ls = lv.map((l) => l[r] as number);
      const m = Math.max(...ls);
      const l = m + Math.log(ls.reduce((a, x) => a + Math.exp(x - m), 0));
      wantLse[r] = l;
      for (let c = 0; c < dv; c++) want[r * dv + c] = ov.reduce((a, o, i) => a + Math.exp((ls[i] as number) - l) * (o[r * dv + c] as number), 0);
    }
    const g = (t: Tensor): GpuTensor => ctx.upload(t);
    const output = ctx.createTensor(shape, dtype);
    const lse = ctx.createTensor(shape.slice(0, -1), 'float32');
    const gOuts = outs.map(g);
    const gLses = lses.map(g);
    await attentionMerge(ctx, { outputs: gOuts, lses: gLses, output, lse });
    expect(maxDiff(toFloat64Values(await ctx.read(output)), want)).toBeLessThan(dtype === 'float32' ? 1e-5 : 3e-3);
    expect(maxDiff(toFloat64Values(await ctx.read(lse)), wantLse)).toBeLessThan(1e-5);
    // In place: the first output and lse accumulate the merge.
    await attentionMerge(ctx, { outputs: gOuts, lses: gLses, output: gOuts[0] as GpuTensor, lse: gLses[0] as GpuTensor });
    expect(maxDiff(toFloat64Values(await ctx.read(gOuts[0] as GpuTensor)), want)).toBeLessThan(dtype === 'float32' ? 1e-5 : 3e-3);
    expect(maxDiff(toFloat64Values(await ctx.read(gLses[0] as GpuTensor)), wantLse)).toBeLessThan(1e-5);
  });

  it('names the argument and the rule', async () => {
    const ctx = await gpuContext();
    const o = (): GpuTensor => ctx.createTensor([2, 3, 4], 'float32');
    const l = (): GpuTensor => ctx.createTensor([2, 3], 'float32');
    const a = o();
    const la = l();
    await expect(attentionMerge(ctx, { outputs: [a], lses: [la], output: o(), lse: l() })).rejects.toThrow('mergeAttentions: needs at least 2 outputs to merge, got 1');
    await expect(attentionMerge(ctx, { outputs: [a, o()], lses: [la, ctx.createTensor([2, 4], 'float32')], output: o(), lse: l() })).rejects.toThrow('mergeAttentions: lses[1] must have shape [2, 3], got [2, 4]');
    await expect(attentionMerge(ctx, { outputs: [a, o()], lses: [la, l()], output: a, lse: l() })).rejects.toThrow('mergeAttentions: output and lse must not share a buffer with the inputs');
    const b = o();
    await expect(attentionMerge(ctx, { outputs: [a, b], lses: [la, l()], output: b, lse: la })).rejects.toThrow('mergeAttentions: output and lse must not share a buffer with the inputs');
  });
});

const BWD_CASES: BwdCase[] = [
  { name: 'GQA, Dv != D', B: 2, S: 70, N: 37, H: 4, Hkv: 2, D: 16, Dv: 8, causal: false, dtype: 'float32' },
  { name: 'causal, square', B: 1, S: 50, N: 50, H: 2, Hkv: 1, D: 8, Dv: 8, causal: true, dtype: 'float32' },
  { name: 'causal, fewer queries than keys', B: 1, S: 20, N: 45, H: 1, Hkv: 1, D: 8, Dv: 12, causal: true, dtype: 'float32' },
  { name: 'three extra tokens: query splits and their reduction, dQ added to what it holds', B: 1, S: 300, N: 3, H: 4, Hkv: 2, D: 16, Dv: 16, causal: false, dtype: 'float32', accumulate: true },
  // 23 query splits: both steps of the reduction (four partials at a time, then one); dK and dV of different
  // lengths (Dv != D) in its one dispatch.
  { name: 'five extra tokens, 23 query splits, Dv != D', B: 1, S: 1472, N: 5, H: 2, Hkv: 1, D: 16, Dv: 8, causal: false, dtype: 'float32' },
  { name: 'float16, head dim 64, query splits', B: 1, S: 90, N: 20, H: 2, Hkv: 2, D: 64, Dv: 64, causal: false, dtype: 'float16' },
  { name: 'float16, causal, one split', B: 1, S: 40, N: 40, H: 2, Hkv: 1, D: 32, Dv: 16, causal: true, dtype: 'float16' },
];

type BwdCase = FwdCase & { accumulate?: boolean; outputScale?: number };

/** Case `c`'s dense backward on `ctx` against the f64 reference. */
async function checkBackward(ctx: GpuContext, c: BwdCase, options: DenseOptions = {}): Promise<void> {
  const q = randn([c.B, c.S, c.H, c.D], c.dtype, 1);
  const k = randn([c.B, c.N, c.Hkv, c.D], c.dtype, 2);
  const v = randn([c.B, c.N, c.Hkv, c.Dv], c.dtype, 3);
  const dO = randn([c.B, c.S, c.H, c.Dv], c.dtype, 4);
  const dq0 = randn([c.B, c.S, c.H, c.D], c.dtype, 5);
  const scale = 0.4;
  const g = (t: Tensor): GpuTensor => ctx.upload(t);
  let output = ctx.createTensor([c.B, c.S, c.H, c.Dv], c.dtype);
  const lse = ctx.createTensor([c.B, c.S, c.H], 'float32');
  const [gq, gk, gv, gdO] = [q, k, v, dO].map(g) as [GpuTensor, GpuTensor, GpuTensor, GpuTensor];
  await denseForward(ctx, { query: gq, key: gk, value: gv, output, lse, scale, isCausal: c.causal }, options);
  // `outputScale`: the backward reads an output that many times the forward's (as a merged output can exceed V).
  let outValues: Float64Array | undefined;
  if (c.outputScale !== undefined) {
    const o = await ctx.read(output);
    outValues = toFloat64Values(o).map((x) => x * (c.outputScale as number));
    output.buffer.destroy();
    output = ctx.upload(tensorFromValues(o.shape, c.dtype, Array.from(outValues)));
  }
  const want = referenceBackward(c, toFloat64Values(q), toFloat64Values(k), toFloat64Values(v), toFloat64Values(dO), scale, c.causal, outValues);
  const gradQuery = c.accumulate ? g(dq0) : ctx.createTensor(q.shape, c.dtype);
  const gradKey = ctx.createTensor(k.shape, c.dtype);
  const gradValue = ctx.createTensor(v.shape, c.dtype);
  await denseBackward(ctx, { query: gq, key: gk, value: gv, output, lse, gradOutput: gdO, gradQuery, gradKey, gradValue, scale, isCausal: c.causal, accumulateGradQuery: c.accumulate === true }, options);
  const wantDq = c.accumulate ? want.dq.map((x, i) => x + (toFloat64Values(dq0)[i] as number)) : want.dq;
  // float16: the output (and so delta) and the gradients are rounded to half; relative to the largest gradient.
  const tol = (w: Float64Array): number => (c.dtype === 'float32' ? 1e-4 : 2e-3) * Math.max(1, ...Array.from(w, Math.abs));
  expect(maxDiff(toFloat64Values(await ctx.read(gradQuery)), wantDq)).toBeLessThan(tol(wantDq));
  expect(maxDiff(toFloat64Values(await ctx.read(gradKey)), want.dk)).toBeLessThan(tol(want.dk));
  expect(maxDiff(toFloat64Values(await ctx.read(gradValue)), want.dv)).toBeLessThan(tol(want.dv));
}

describe('dense attention backward on WebGPU against an f64 reference', () => {
  it('sums the query splits\' partials of dK and dV in one dispatch (23 splits for 1472 queries and 5 keys)', async () => {
    const ctx = await gpuContext();
    const t = (shape: number[]): GpuTensor => ctx.createTensor(shape, 'float32');
    const q = [1, 1472, 2, 16];
    const kv = [1, 5, 1, 16];
    const v = [1, 5, 1, 8];
    const o = [1, 1472, 2, 8];
    const plan = denseBackwardPlan(ctx, { query: t(q), key: t(kv), value: t(v), output: t(o), lse: t([1, 1472, 2]), gradOutput: t(o), gradQuery: t(q), gradKey: t(kv), gradValue: t(v), scale: 0.25 }, { path: 'plain' });
    const last = plan.commands.at(-1);
    expect(plan.commands.filter((c) => c.kernel.key.startsWith('dense-grad-reduce'))).toHaveLength(1);
    expect(last?.kernel.key).toMatch(/^dense-grad-reduce-kv\//);
    expect(last?.uniforms).toMatchObject({ elems_k: 80, elems_v: 40, splits: 23 });
    expect(last?.workgroups).toEqual([2, 1, 2]);
    plan.release();
  });
  it.each(BWD_CASES)('$name ($dtype)', async (c) => {
    await checkBackward(await gpuContext(), c);
  });

  it('names the argument and the rule', async () => {
    const ctx = await gpuContext();
    const t = (shape: number[], dtype: 'float32' | 'float16' = 'float32'): GpuTensor => ctx.createTensor(shape, dtype);
    const base = {
      query: t([1, 4, 2, 8]),
      key: t([1, 3, 2, 8]),
      value: t([1, 3, 2, 6]),
      output: t([1, 4, 2, 6]),
      lse: t([1, 4, 2]),
      gradOutput: t([1, 4, 2, 6]),
      gradQuery: t([1, 4, 2, 8]),
      gradKey: t([1, 3, 2, 8]),
      gradValue: t([1, 3, 2, 6]),
      scale: 0.3,
    };
    await expect(denseBackward(ctx, { ...base, gradKey: t([1, 3, 2, 6]) })).rejects.toThrow('attentionBackward: gradKey must have shape [1, 3, 2, 8], got [1, 3, 2, 6]');
    await expect(denseBackward(ctx, { ...base, gradOutput: t([1, 4, 2, 8]) })).rejects.toThrow('attentionBackward: gradOutput must have shape [1, 4, 2, 6], got [1, 4, 2, 8]');
    await expect(denseBackward(ctx, { ...base, gradQuery: t([1, 4, 2, 8], 'float16') })).rejects.toThrow('attentionBackward: gradQuery is float16 but query is float32; pass one dtype');
    await expect(denseBackward(ctx, { ...base, lse: t([1, 4, 2], 'float16') })).rejects.toThrow('attentionBackward: lse must be float32, got float16');
    await expect(denseBackward(ctx, { ...base, scale: Number.POSITIVE_INFINITY })).rejects.toThrow('attentionBackward: scale must be a finite number, got Infinity');
    await expect(denseBackward(ctx, { ...base, cumulativeSeqlenQ: [0, 4] })).rejects.toThrow('attentionBackward: cumulativeSeqlenQ was given without cumulativeSeqlenKv; pass both or neither');
    await expect(denseBackward(ctx, base)).resolves.toBeUndefined();
  });

  it('gives the same bits on a second run', async () => {
    const ctx = await gpuContext();
    const c = BWD_CASES[3] as Dims;
    const up = (shape: number[], seed: number): GpuTensor => ctx.upload(randn(shape, 'float32', seed));
    const args = { query: up([c.B, c.S, c.H, c.D], 1), key: up([c.B, c.N, c.Hkv, c.D], 2), value: up([c.B, c.N, c.Hkv, c.Dv], 3), gradOutput: up([c.B, c.S, c.H, c.Dv], 4) };
    const output = ctx.createTensor([c.B, c.S, c.H, c.Dv], 'float32');
    const lse = ctx.createTensor([c.B, c.S, c.H], 'float32');
    await denseForward(ctx, { ...args, output, lse, scale: 0.3 });
    const run = async (): Promise<number[]> => {
      const grads = { gradQuery: ctx.createTensor([c.B, c.S, c.H, c.D], 'float32'), gradKey: ctx.createTensor([c.B, c.N, c.Hkv, c.D], 'float32'), gradValue: ctx.createTensor([c.B, c.N, c.Hkv, c.Dv], 'float32') };
      await denseBackward(ctx, { ...args, ...grads, output, lse, scale: 0.3 });
      return [...(await ctx.read(grads.gradKey)).data, ...(await ctx.read(grads.gradValue)).data, ...(await ctx.read(grads.gradQuery)).data] as number[];
    };
    expect(await run()).toEqual(await run());
  });
});

describe('variable-length (packed) dense attention on WebGPU against an f64 reference per sequence', () => {
  // Sequences of 0..70 queries and 1..40 keys (an empty one included), GQA, Dv != D; causal top-left per sequence.
  it.each([false, true])('forward and backward, causal %s', async (causal) => {
    await checkVarlenCase(await gpuContext(), { seqQ: [5, 0, 70, 1, 33], seqKv: [7, 3, 40, 1, 20], H: 4, Hkv: 2, D: 16, Dv: 8, causal }, 'float32');
  });

  it('names the argument and the rule', async () => {
    const ctx = await gpuContext();
    const t = (shape: number[]): GpuTensor => ctx.createTensor(shape, 'float32');
    const base = { query: t([1, 6, 2, 8]), key: t([1, 5, 2, 8]), value: t([1, 5, 2, 8]), output: t([1, 6, 2, 8]), lse: t([1, 6, 2]), scale: 0.3 };
    await expect(denseForward(ctx, { ...base, cumulativeSeqlenQ: [0, 6] })).rejects.toThrow('attention: cumulativeSeqlenQ was given without cumulativeSeqlenKv; pass both or neither');
    await expect(denseForward(ctx, { ...base, cumulativeSeqlenQ: [0, 2, 6], cumulativeSeqlenKv: [0, 5] })).rejects.toThrow('attention: cumulativeSeqlenQ has 3 entries but cumulativeSeqlenKv has 2');
    await expect(denseForward(ctx, { ...base, cumulativeSeqlenQ: [0, 4, 2, 6], cumulativeSeqlenKv: [0, 1, 2, 5] })).rejects.toThrow('attention: cumulativeSeqlenQ must be non-decreasing integers; cumulativeSeqlenQ[2]=2 after 4');
    await expect(denseForward(ctx, { ...base, cumulativeSeqlenQ: [0, 2, 5], cumulativeSeqlenKv: [0, 1, 5] })).rejects.toThrow('attention: cumulativeSeqlenQ ends at 5 but there are 6 queries');
    await expect(denseForward(ctx, { ...base, cumulativeSeqlenQ: [0, 2, 6], cumulativeSeqlenKv: [0, 0, 5] })).rejects.toThrow('attention: sequence 0 has 2 queries but no keys; a query needs at least one key');
    const b2 = { ...base, query: t([2, 3, 2, 8]), key: t([2, 5, 2, 8]), value: t([2, 5, 2, 8]), output: t([2, 3, 2, 8]), lse: t([2, 3, 2]) };
    await expect(denseForward(ctx, { ...b2, cumulativeSeqlenQ: [0, 3], cumulativeSeqlenKv: [0, 5] })).rejects.toThrow('attention: variable-length sequences are packed along the tokens, so batch must be 1, got 2');
  });
});

/** A packed varlen case's forward and backward on `ctx` against the f64 reference per sequence. */
async function checkVarlenCase(ctx: GpuContext, c: VarlenCase, dtype: 'float32' | 'float16', options: DenseOptions = {}, backwardOptions = options): Promise<void> {
  const S = cumulative(c.seqQ).at(-1) as number;
  const N = cumulative(c.seqKv).at(-1) as number;
  const { H, Hkv, D, Dv } = c;
  const q = randn([1, S, H, D], dtype, 1);
  const k = randn([1, N, Hkv, D], dtype, 2);
  const v = randn([1, N, Hkv, Dv], dtype, 3);
  const dO = randn([1, S, H, Dv], dtype, 4);
  const scale = 0.3;
  const [qv, kv, vv, dv] = [q, k, v, dO].map((t) => toFloat64Values(t)) as [Float64Array, Float64Array, Float64Array, Float64Array];
  const want = referenceVarlen(c, qv, kv, vv, dv, scale);
  const { cuQ, cuKv } = want;
  // float16: gradients relative to the largest one.
  const tol = dtype === 'float32' ? 1e-4 : 4e-3 * Math.max(1, ...Array.from(want.dq, Math.abs), ...Array.from(want.dk, Math.abs), ...Array.from(want.dv, Math.abs));
  const [gq, gk, gv, gdO] = [q, k, v, dO].map((t) => ctx.upload(t)) as [GpuTensor, GpuTensor, GpuTensor, GpuTensor];
  const output = ctx.createTensor([1, S, H, Dv], dtype);
  const lse = ctx.createTensor([1, S, H], 'float32');
  const varlen = { cumulativeSeqlenQ: cuQ, cumulativeSeqlenKv: cuKv };
  await denseForward(ctx, { query: gq, key: gk, value: gv, output, lse, scale, isCausal: c.causal, ...varlen }, options);
  const grads = { gradQuery: ctx.createTensor(q.shape, dtype), gradKey: ctx.createTensor(k.shape, dtype), gradValue: ctx.createTensor(v.shape, dtype) };
  await denseBackward(ctx, { query: gq, key: gk, value: gv, output, lse, gradOutput: gdO, ...grads, scale, isCausal: c.causal, ...varlen }, backwardOptions);
  expect(maxDiff(toFloat64Values(await ctx.read(output)), want.out)).toBeLessThan(dtype === 'float32' ? 2e-5 : 3e-3);
  expect(maxDiff(toFloat64Values(await ctx.read(lse)), want.lse)).toBeLessThan(1e-4);
  expect(maxDiff(toFloat64Values(await ctx.read(grads.gradQuery)), want.dq)).toBeLessThan(tol);
  expect(maxDiff(toFloat64Values(await ctx.read(grads.gradKey)), want.dk)).toBeLessThan(tol);
  expect(maxDiff(toFloat64Values(await ctx.read(grads.gradValue)), want.dv)).toBeLessThan(tol);
}

describe('variable-length dense attention, random cases (seeded)', () => {
  /** A small seeded generator (LCG), so the cases are the same in every run. */
  const rng = (seed: number) => {
    let x = seed >>> 0;
    return (n: number): number => {
      x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
      return x % n;
    };
  };
  const cases = Array.from({ length: 6 }, (_, c) => {
    const r = rng(1000 + c);
    const seqs = 1 + r(6);
    // The first sequence has queries; later ones may be empty.
    const seqQ = Array.from({ length: seqs }, (_, i) => (i > 0 && r(5) === 0 ? 0 : 1 + r(90)));
    const seqKv = seqQ.map((q) => (q === 0 && r(2) === 0 ? 0 : 1 + r(70)));
    const Hkv = [1, 2][r(2)] as number;
    return { seqQ, seqKv, H: Hkv * [1, 2][r(2)]!, Hkv, D: [8, 24][r(2)] as number, Dv: [8, 16][r(2)] as number, causal: r(2) === 1 };
  });
  it.each(cases)('sequences q $seqQ kv $seqKv, H $H/$Hkv, D $D/$Dv, causal $causal', async (c) => {
    await checkVarlenCase(await gpuContext(), c, 'float32');
  });
});

// The tensor-core kernels, their subgroup matrices emulated (float16): queries and keys past the 64-row workgroups and
// the staged chunks, GQA, Dv != D, causal with fewer and more queries than keys, a few extra tokens (query splits),
// dQ added to what it holds, head dim 128 (smaller chunks), varlen with empty sequences.
const MMA_CASES: BwdCase[] = [
  { name: 'GQA, Dv != D, more queries than keys', B: 2, S: 70, N: 37, H: 4, Hkv: 2, D: 32, Dv: 16, causal: false, dtype: 'float16' },
  { name: 'causal, square, past a chunk', B: 1, S: 81, N: 81, H: 2, Hkv: 1, D: 16, Dv: 16, causal: true, dtype: 'float16' },
  { name: 'causal, fewer queries than keys', B: 1, S: 20, N: 45, H: 1, Hkv: 1, D: 16, Dv: 32, causal: true, dtype: 'float16' },
  { name: 'three extra tokens: query splits, dQ added', B: 1, S: 150, N: 3, H: 2, Hkv: 2, D: 64, Dv: 64, causal: false, dtype: 'float16', accumulate: true },
  { name: 'head dims 128 / 48', B: 1, S: 33, N: 70, H: 2, Hkv: 2, D: 128, Dv: 48, causal: false, dtype: 'float16' },
];

describe('dense attention on tensor cores (subgroup matrices emulated) against an f64 reference', () => {
  const mma: DenseOptions = { path: 'mma' };
  it.each(MMA_CASES)('forward: $name', async (c) => {
    await checkForward(emulatingTensorCoreView(await gpuContext()), c, mma);
  });
  it.each(MMA_CASES)('backward: $name', async (c) => {
    await checkBackward(emulatingTensorCoreView(await gpuContext()), c, mma);
  });
  // Padded scratch rows and 32-key chunks (the causal forward's default; 16 query rows in dK/dV, which lavapipe's 32 KiB
  // of workgroup memory holds) on two cases, forward and backward.
  const padded: DenseOptions = { path: 'mma', chunk: { forward: 32, dq: 32, dkv: 16 }, tight: false };
  it.each(MMA_CASES.slice(0, 2))('forward and backward, padded rows, 32-key chunks: $name', async (c) => {
    const ctx = emulatingTensorCoreView(await gpuContext());
    await checkForward(ctx, c, padded);
    await checkBackward(ctx, c, padded);
  });
  // float32 on the tensor cores (the split: hi and lo halves, three multiplies per product), forward and backward.
  const F32_CASES: FwdCase[] = [
    { name: 'GQA, Dv != D', B: 2, S: 70, N: 37, H: 4, Hkv: 2, D: 32, Dv: 16, causal: false, dtype: 'float32' },
    { name: 'causal, square, past a chunk', B: 1, S: 81, N: 81, H: 2, Hkv: 1, D: 16, Dv: 16, causal: true, dtype: 'float32' },
  ];
  it.each(F32_CASES)('float32 (split): $name', async (c) => {
    const ctx = emulatingTensorCoreView(await gpuContext());
    await checkForward(ctx, c, mma);
    await checkBackward(ctx, c, mma);
    const t = (shape: number[]): GpuTensor => ctx.createTensor(shape, 'float32');
    const plan = denseForwardPlan(ctx, { query: t([1, 8, 2, 16]), key: t([1, 8, 2, 16]), value: t([1, 8, 2, 16]), output: t([1, 8, 2, 16]), lse: t([1, 8, 2]), scale: 0.25 });
    expect(plan.commands.map((x) => x.kernel.key.split('/')[0])).toEqual(['abs-max3', 'dense-forward-mma']);
    expect(plan.commands[1]?.kernel.key).toContain('"split":true');
    plan.release();
    const grads = { gradOutput: t([1, 8, 2, 16]), gradQuery: t([1, 8, 2, 16]), gradKey: t([1, 8, 2, 16]), gradValue: t([1, 8, 2, 16]) };
    const bplan = denseBackwardPlan(ctx, { query: t([1, 8, 2, 16]), key: t([1, 8, 2, 16]), value: t([1, 8, 2, 16]), output: t([1, 8, 2, 16]), lse: t([1, 8, 2]), ...grads, scale: 0.25 });
    expect(bplan.commands.map((x) => x.kernel.key.split('/')[0])).toEqual(['abs-max5', 'dense-backward-q-mma', 'dense-backward-kv-mma']);
    // max |Q|, |K|, |V|, |dO|, |O| in one dispatch's five grid rows.
    expect(bplan.commands[0]?.workgroups[1]).toBe(5);
    bplan.release();
  });
  // dS's scale comes from a bound on |dP - delta|, and delta = dO . O: with an output far larger than V (a merged
  // output: NA's extra KV tokens) a bound from max |V| alone overflows f16 (NaN and infinities in every gradient).
  it('float32 (split): an output 1e5 times the forward\'s (delta bounded by max |O|)', async () => {
    await checkBackward(emulatingTensorCoreView(await gpuContext()), { name: 'merged output', B: 1, S: 40, N: 3, H: 2, Hkv: 2, D: 16, Dv: 16, causal: false, dtype: 'float32', outputScale: 1e5 }, mma);
  });
  it('float32 (split), varlen with empty sequences, causal', async () => {
    const ctx = emulatingTensorCoreView(await gpuContext());
    await checkVarlenCase(ctx, { seqQ: [5, 0, 70, 1, 33], seqKv: [7, 3, 40, 1, 20], H: 4, Hkv: 2, D: 32, Dv: 16, causal: true }, 'float32', mma);
  });
  it.each([false, true])('varlen, empty sequences, GQA, causal %s', async (causal) => {
    await checkVarlenCase(emulatingTensorCoreView(await gpuContext()), { seqQ: [5, 0, 70, 1, 33], seqKv: [7, 3, 40, 1, 20], H: 4, Hkv: 2, D: 32, Dv: 16, causal }, 'float16', mma);
  });
});

/** The forward dispatch a dense forward call plans (its last). */
const denseForwardCommand = (ctx: GpuContext, args: Parameters<typeof denseForwardPlan>[1], options?: DenseOptions) => denseForwardPlan(ctx, args, options).commands.at(-1) as NonNullable<ReturnType<typeof denseForwardPlan>['commands'][number]>;

describe('dense kernel choice', () => {
  const t = (shape: number[], dtype: 'float16' | 'float32' = 'float16'): GpuTensor => ({ shape, dtype, numel: shape.reduce((a, b) => a * b, 1), buffer: {} }) as unknown as GpuTensor;
  const args = (D: number, Dv: number, dtype: 'float16' | 'float32' = 'float16') => ({
    query: t([1, 100, 2, D], dtype),
    key: t([1, 50, 2, D], dtype),
    value: t([1, 50, 2, Dv], dtype),
    output: t([1, 100, 2, Dv], dtype),
    lse: t([1, 100, 2], 'float32'),
    scale: 0.1,
  });
  it('takes the tensor cores for float16 with head dims multiples of 16 up to 128, where the adapter has them', () => {
    const tc = fakeTensorCoreContext() as GpuContext;
    expect(denseForwardCommand(tc, args(64, 64)).kernel.key).toContain('dense-forward-mma');
    // 16-key chunks with unpadded scratch rows; the causal forward 32 with padded rows.
    expect(denseForwardCommand(tc, args(64, 64)).kernel.key).toMatch(/"chunk":16.*"tight":true/);
    expect(denseForwardCommand(tc, { ...args(64, 64), isCausal: true }).kernel.key).toContain('"chunk":32');
    expect(denseForwardCommand(tc, { ...args(64, 64), isCausal: true }).kernel.key).not.toContain('tight');
    expect(denseForwardCommand(tc, args(128, 128), { chunk: { forward: 32 }, tight: false }).kernel.key).toMatch(/"chunk":32,"dim":128/);
    expect(() => denseForwardCommand(tc, args(128, 128), { path: 'mma', chunk: { forward: 64 } })).toThrow(
      "attention: path 'mma' (tensor cores) cannot run this call: its workgroup memory (forward, chunk 64) exceeds this device's 49152 bytes",
    );
    expect(() => denseForwardCommand(tc, args(64, 64), { chunk: { forward: 8 as 16 } })).toThrow('attention: chunk.forward must be one of 16, 32, 64, got 8');
    expect(denseForwardCommand(tc, args(64, 64)).workgroups).toEqual([2, 2, 1]);
    expect(denseForwardCommand(tc, args(64, 64), { path: 'plain' }).kernel.key).not.toContain('mma');

    expect(denseForwardCommand(tc, args(40, 64)).kernel.key).not.toContain('mma');
    expect(denseForwardCommand(tc, args(160, 64)).kernel.key).not.toContain('mma');
    expect(() => denseForwardCommand(tc, args(40, 64), { path: 'mma' })).toThrow("attention: path 'mma' (tensor cores) cannot run this call: query head_dim=40 must be a multiple of 16 up to 128");

    expect(() => denseForwardCommand(tc, args(64, 64), { path: 'fast' as 'mma' })).toThrow("attention: path must be 'auto', 'mma' or 'plain', got fast");
  });
  it('says why a forced tensor-core call cannot run on an adapter without them', () => {
    const plain = { ...(fakeTensorCoreContext() as object), features: new Set(['shader-f16', 'subgroups']), subgroupMatrix: [] } as unknown as GpuContext;
    expect(denseForwardCommand(plain, args(64, 64)).kernel.key).not.toContain('mma');
    expect(() => denseForwardCommand(plain, args(64, 64), { path: 'mma' })).toThrow(/attention: path 'mma' \(tensor cores\) cannot run this call: .*subgroup/);
  });
});
