/** A few validation rules through the CPU entry points (core's own tests cover every rule). */
import { type DType, NattenArgumentError, type Tensor, tensor } from '@natten-web/core';
import { describe, expect, it } from 'vitest';
import { cpuBackend, fusedForward, na1dQkForward, na2dBackward, na2dForward, na3dAvForward } from '../src/index.ts';
import { empty, rand } from './helpers.ts';

function qkv(shape: number[], dtype: DType = 'float32') {
  return { q: rand(shape, dtype, 1), k: rand(shape, dtype, 2), v: rand(shape, dtype, 3) };
}

function expectArgError(fn: () => void, ...parts: string[]): void {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  expect(caught).toBeInstanceOf(NattenArgumentError);
  for (const p of parts) expect((caught as Error).message).toContain(p);
}

describe('validation through the CPU ops', () => {
  it('kernel_size * dilation > length names the op, the axis and the values', () => {
    const { q, k, v } = qkv([1, 8, 6, 1, 4]);
    expectArgError(() => na2dForward(empty(q.shape, 'float32'), q, k, v, null, null, [3, 4], [2, 2], false, null), 'na2d_forward', 'kernel_size[1]=4', 'dilation[1]=2', '6');
  });

  it('the BMM ops reject even kernel sizes', () => {
    const q = rand([1, 1, 8, 4], 'float64', 1);
    expectArgError(() => na1dQkForward(empty([1, 1, 8, 4], 'float64'), q, q, null, 4, 1, false), 'na1d_qk_forward', 'kernel_size=4', 'odd');
  });

  it('rel_pos_bias with causal masking is rejected', () => {
    const { q, k, v } = qkv([1, 9, 1, 4]);
    const rpb = empty([1, 5], 'float32');
    expectArgError(() => fusedForward(1, { output: empty(q.shape, 'float32'), query: q, key: k, value: v, rpb, kernelSize: 3, isCausal: true }), 'na1d_forward', 'rel_pos_bias', 'causal');
  });

  it('logsumexp must be float32', () => {
    const { q, k, v } = qkv([1, 9, 1, 4], 'float64');
    expectArgError(
      () => fusedForward(1, { output: empty(q.shape, 'float64'), query: q, key: k, value: v, logsumexp: empty([1, 9, 1], 'float64'), kernelSize: 3 }),
      'logsumexp must be float32',
      'got float64',
    );
  });

  it('tile sizes must multiply to one of NATTEN forward tile products', () => {
    const { q, k, v } = qkv([1, 8, 8, 1, 4]);
    expectArgError(() => na2dForward(empty(q.shape, 'float32'), q, k, v, null, null, 3, 1, false, null, [4, 4], [4, 4]), 'na2d_forward', 'query_tile_size=[4, 4]', '16x16');
  });

  it('num_splits_key above the number of key tiles is rejected', () => {
    const { q, k, v } = qkv([1, 9, 8, 1, 4]);
    const g = () => empty(q.shape, 'float32');
    expectArgError(
      () => na2dBackward(g(), g(), g(), q, k, v, g(), g(), empty([1, 9, 8, 1], 'float32'), 3, [2, 1], false, null, [8, 8], [4, 16], [3, 1]),
      'na2d_backward',
      'num_splits_key[0]=3',
      '2',
    );
  });

  it('GQA: key/value heads must divide query heads', () => {
    const q = rand([1, 9, 3, 4], 'float32', 1);
    const kv = rand([1, 9, 2, 4], 'float32', 2);
    expectArgError(() => fusedForward(1, { output: empty(q.shape, 'float32'), query: q, key: kv, value: kv, kernelSize: 3 }), 'heads_q=3', 'heads_kv=2');
  });

  it('data arrays must match the dtype and the shape', () => {
    const q = rand([1, 9, 1, 4], 'float32', 1);
    const wrongType = { shape: [1, 9, 1, 4], dtype: 'float32', data: new Float64Array(36) } as unknown as Tensor;
    expectArgError(() => fusedForward(1, { output: empty(q.shape, 'float32'), query: q, key: wrongType, value: q, kernelSize: 3 }), 'na1d_forward', 'key', 'Float64Array');
    const short = { shape: [1, 9, 1, 4], dtype: 'float32', data: new Float32Array(35) } as Tensor;
    expectArgError(() => fusedForward(1, { output: empty(q.shape, 'float32'), query: q, key: q, value: short, kernelSize: 3 }), 'na1d_forward', 'value has 35 data elements', '36');
  });

  it('nothing is written when validation fails', () => {
    const { q, k, v } = qkv([1, 5, 1, 4]);
    const output = tensor(q.shape, 'float32', new Float32Array(20).fill(7));
    expect(() => fusedForward(1, { output, query: q, key: k, value: v, kernelSize: 7 })).toThrow(NattenArgumentError);
    expect(Array.from(output.data).every((x) => x === 7)).toBe(true);
  });

  it('3-D av_forward checks the attn shape', () => {
    const v = rand([1, 1, 3, 3, 3, 2], 'float64', 1);
    expectArgError(() => na3dAvForward(empty(v.shape, 'float64'), empty([1, 1, 3, 3, 3, 26], 'float64'), v, 3, 1, false), 'na3d_av_forward', 'attn must have shape [1, 1, 3, 3, 3, 27]');
  });
});

describe('cpuBackend', () => {
  it('is named cpu and rejects (does not throw) on bad input', async () => {
    expect(cpuBackend.name).toBe('cpu');
    const { q, k, v } = qkv([1, 5, 1, 4]);
    const p = cpuBackend.fusedForward(1, { output: empty(q.shape, 'float32'), query: q, key: k, value: v, kernelSize: 7 });
    await expect(p).rejects.toBeInstanceOf(NattenArgumentError);
  });

  it('rejects a rank other than 1, 2 or 3', async () => {
    const { q, k, v } = qkv([1, 5, 1, 4]);
    await expect(cpuBackend.fusedForward(4 as 1, { output: q, query: q, key: k, value: v, kernelSize: 3 })).rejects.toThrow('rank=4 must be 1, 2 or 3');
  });

  it('resolves after writing the outputs of every op', async () => {
    const q = rand([1, 1, 5, 2], 'float64', 3);
    const attn = empty([1, 1, 5, 3], 'float64');
    await expect(cpuBackend.qkForward(1, { attn, query: q, key: q, kernelSize: 3 })).resolves.toBeUndefined();
    expect(attn.data.every(Number.isFinite)).toBe(true);
    const out = empty(q.shape, 'float64');
    await cpuBackend.avForward(1, { output: out, attn, value: q, kernelSize: 3 });
    expect(out.data.some((x) => x !== 0)).toBe(true);
    const dA = empty(attn.shape, 'float64');
    const dV = empty(q.shape, 'float64');
    await cpuBackend.avBackward(1, { gradAttn: dA, gradValue: dV, gradOutput: q, attn, value: q, kernelSize: 3 });
    expect(dV.data.some((x) => x !== 0)).toBe(true);
    const dq = empty(q.shape, 'float64');
    const dk = empty(q.shape, 'float64');
    await cpuBackend.qkBackward(1, { gradQuery: dq, gradKey: dk, gradAttn: dA, query: q, key: q, kernelSize: 3 });
    expect(dq.data.some((x) => x !== 0) && dk.data.some((x) => x !== 0)).toBe(true);
  });
});
