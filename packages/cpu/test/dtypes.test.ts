/**
 * Every op accumulates in f64 whatever the input dtype and rounds each output once: running on
 * f16/f32 inputs must give exactly the f64 result (on the decoded inputs) rounded to that dtype.
 */
import { type DType, fromValues, roundTo, type Tensor } from '@natten-web/core';
import { describe, expect, it } from 'vitest';
import { avBackward, avForward, fusedBackward, fusedForward, qkBackward, qkForward } from '../src/index.ts';
import { empty, rand, values } from './helpers.ts';

const as64 = (t: Tensor) => fromValues(t.shape, 'float64', values(t));

function expectRoundedEqual(actual: Tensor, reference: Tensor<'float64'>, dtype: DType, what: string) {
  const a = values(actual);
  const r = Array.from(reference.data, (x) => roundTo(x, dtype));
  const bad = r.findIndex((x, i) => !(x === a[i] || (Number.isNaN(x) && Number.isNaN(a[i] as number))));
  expect(bad, `${what}: first mismatch at ${bad}: ${a[bad]} vs ${r[bad]}`).toBe(-1);
}

describe.each(['float32', 'float16'] as const)('%s inputs give the f64 result rounded once', (dtype) => {
  const p2 = { kernelSize: [3, 3], dilation: [1, 2], isCausal: [false, true] } as const;

  it('fused forward and backward (2-D, GQA, Dv != D)', () => {
    const q = rand([1, 5, 6, 4, 8], dtype, 1);
    const k = rand([1, 5, 6, 2, 8], dtype, 2);
    const v = rand([1, 5, 6, 2, 4], dtype, 3);
    const o = empty([1, 5, 6, 4, 4], dtype);
    const lse = empty([1, 5, 6, 4], 'float32');
    fusedForward(2, { output: o, query: q, key: k, value: v, logsumexp: lse, ...p2 });
    const o64 = empty(o.shape, 'float64');
    const lse64 = empty(lse.shape, 'float32');
    fusedForward(2, { output: o64, query: as64(q), key: as64(k), value: as64(v), logsumexp: lse64, ...p2 });
    expectRoundedEqual(o, o64, dtype, 'output');
    expect(lse.data).toEqual(lse64.data);

    const dO = rand(o.shape, dtype, 4, 0.05);
    const grads = [empty(q.shape, dtype), empty(k.shape, dtype), empty(v.shape, dtype)] as const;
    fusedBackward(2, { gradQuery: grads[0], gradKey: grads[1], gradValue: grads[2], query: q, key: k, value: v, output: o, gradOutput: dO, logsumexp: lse, ...p2 });
    const refs = [empty(q.shape, 'float64'), empty(k.shape, 'float64'), empty(v.shape, 'float64')] as const;
    fusedBackward(2, { gradQuery: refs[0], gradKey: refs[1], gradValue: refs[2], query: as64(q), key: as64(k), value: as64(v), output: as64(o), gradOutput: as64(dO), logsumexp: lse, ...p2 });
    expectRoundedEqual(grads[0], refs[0], dtype, 'dQ');
    expectRoundedEqual(grads[1], refs[1], dtype, 'dK');
    expectRoundedEqual(grads[2], refs[2], dtype, 'dV');
  });

  it('qk and av forward and backward (3-D, rpb)', () => {
    const p3 = { kernelSize: 3, dilation: [1, 1, 2] } as const;
    const shape = [1, 2, 4, 4, 6, 3];
    const q = rand(shape, dtype, 5, 0.5);
    const k = rand(shape, dtype, 6);
    const rpb = rand([2, 5, 5, 5], dtype, 7);
    const attn = empty([1, 2, 4, 4, 6, 27], dtype);
    qkForward(3, { attn, query: q, key: k, rpb, ...p3 });
    const attn64 = empty(attn.shape, 'float64');
    qkForward(3, { attn: attn64, query: as64(q), key: as64(k), rpb: as64(rpb), ...p3 });
    expectRoundedEqual(attn, attn64, dtype, 'attn');

    const dA = rand(attn.shape, dtype, 8);
    const dq = empty(shape, dtype);
    const dk = empty(shape, dtype);
    const drpb = fromValues(rpb.shape, dtype, new Float64Array(250).fill(0.5));
    qkBackward(3, { gradQuery: dq, gradKey: dk, gradRpb: drpb, gradAttn: dA, query: q, key: k, ...p3 });
    const dq64 = empty(shape, 'float64');
    const dk64 = empty(shape, 'float64');
    const drpb64 = fromValues(rpb.shape, 'float64', new Float64Array(250).fill(0.5));
    qkBackward(3, { gradQuery: dq64, gradKey: dk64, gradRpb: drpb64, gradAttn: as64(dA), query: as64(q), key: as64(k), ...p3 });
    expectRoundedEqual(dq, dq64, dtype, 'dQ');
    expectRoundedEqual(dk, dk64, dtype, 'dK');
    expectRoundedEqual(drpb, drpb64, dtype, 'd_rpb');

    const a = rand(attn.shape, dtype, 9, 0.2);
    const out = empty(shape, dtype);
    avForward(3, { output: out, attn: a, value: k, ...p3 });
    const out64 = empty(shape, 'float64');
    avForward(3, { output: out64, attn: as64(a), value: as64(k), ...p3 });
    expectRoundedEqual(out, out64, dtype, 'av output');

    const dO = rand(shape, dtype, 10);
    const gA = empty(attn.shape, dtype);
    const gV = empty(shape, dtype);
    avBackward(3, { gradAttn: gA, gradValue: gV, gradOutput: dO, attn: a, value: k, ...p3 });
    const gA64 = empty(attn.shape, 'float64');
    const gV64 = empty(shape, 'float64');
    avBackward(3, { gradAttn: gA64, gradValue: gV64, gradOutput: as64(dO), attn: as64(a), value: as64(k), ...p3 });
    expectRoundedEqual(gA, gA64, dtype, 'd_attn');
    expectRoundedEqual(gV, gV64, dtype, 'dV');
  });
});
