/**
 * Backward ops against float64 central finite differences of a scalar loss.
 * Fused: loss = sum(out * dO). QK: loss = sum over valid slots of attn * dA. AV: loss = sum(out * dO).
 */
import { type Tensor, zeros } from '@natten-web/core';
import { describe, expect, it } from 'vitest';
import { avBackward, avForward, fusedBackward, fusedForward, na1dQkBackward, qkBackward, qkForward } from '../src/index.ts';
import { bmmCases, type Case, caseKey, fusedCases } from './cases.ts';
import { dot, empty, expectGradClose, f64, numericGrad, rand, sampleIndices, values } from './helpers.ts';

const SAMPLES = 48;

function params(c: Case) {
  return { kernelSize: c.K, dilation: c.d, isCausal: c.causal, stride: c.s };
}

function fusedSetup(c: Case, seed: number) {
  const sp = c.spatial;
  const q = rand([c.B, ...sp, c.H, c.D], 'float64', seed);
  const k = rand([c.B, ...sp, c.Hkv, c.D], 'float64', seed + 1);
  const v = rand([c.B, ...sp, c.Hkv, c.Dv], 'float64', seed + 2);
  const rpb = c.rpb ? rand([c.H, ...c.K.map((x) => 2 * x - 1)], 'float64', seed + 3) : null;
  const dO = rand([c.B, ...sp, c.H, c.Dv], 'float64', seed + 4);
  const output = empty([c.B, ...sp, c.H, c.Dv], 'float64');
  const logsumexp = empty([c.B, ...sp, c.H], 'float32');
  const forward = (scale: number | null = null) =>
    fusedForward(c.rank, { output, query: q, key: k, value: v, rpb, logsumexp, attnScale: scale, ...params(c) });
  const loss = (scale: number | null = null) => {
    forward(scale);
    return dot(output.data, dO.data);
  };
  /** Run the fused backward on the stored forward into fresh dQ/dK/dV; `extra` overrides arguments. */
  const backward = (gradRpb: Tensor | null, extra: object = {}) => {
    const grads = { gradQuery: zeros(q.shape, 'float64'), gradKey: zeros(k.shape, 'float64'), gradValue: zeros(v.shape, 'float64') };
    fusedBackward(c.rank, { ...grads, query: q, key: k, value: v, output, gradOutput: dO, logsumexp, rpb, gradRpb, ...params(c), ...extra });
    return grads;
  };
  return { q, k, v, rpb, dO, output, logsumexp, forward, loss, backward };
}

describe('fused backward vs finite differences (float64)', () => {
  fusedCases().forEach((c, i) => {
    it(caseKey(c), () => {
      const s = fusedSetup(c, 1000 + 13 * i);
      s.forward();
      const gradRpb = s.rpb ? zeros(s.rpb.shape, 'float64') : null;
      const { gradQuery: dq, gradKey: dk, gradValue: dv } = s.backward(gradRpb);
      // The logsumexp is stored in float32, so P carries ~1e-7 relative error: tolerances reflect that.
      const check = (name: string, x: Tensor<'float64'>, g: Tensor<'float64'>, seed: number) => {
        const num = numericGrad(x.data, () => s.loss(), sampleIndices(x.data.length, SAMPLES, seed));
        expectGradClose(g.data, num, 2e-5, 1e-5, name);
      };
      check('dQ', s.q, dq, i);
      check('dK', s.k, dk, i + 1);
      check('dV', s.v, dv, i + 2);
      if (s.rpb && gradRpb) check('d_rpb', s.rpb, gradRpb, i + 3);
    });
  });

  it('applies an explicit attnScale (here 0.3) once to dQ and dK', () => {
    const c = fusedCases()[11] as Case; // 1-D, B=2, GQA 4/2, Dv 6
    const s = fusedSetup(c, 77);
    s.forward(0.3);
    const { gradQuery: dq, gradKey: dk } = s.backward(null, { attnScale: 0.3 });
    expectGradClose(dq.data, numericGrad(s.q.data, () => s.loss(0.3)), 2e-5, 1e-5, 'dQ');
    expectGradClose(dk.data, numericGrad(s.k.data, () => s.loss(0.3)), 2e-5, 1e-5, 'dK');
  });

  it('overwrites grad_rel_pos_bias, and tiles / num_splits_key / compute_delta_with_torch never change the result', () => {
    const c = fusedCases()[13] as Case; // 2-D 5x5 K 3x3 rpb
    const s = fusedSetup(c, 99);
    s.forward();
    const run = (extra: object, fill: number) => {
      const gradRpb = f64(s.rpb?.shape ?? [], new Float64Array((s.rpb as Tensor).data.length).fill(fill));
      const grads = s.backward(gradRpb, extra);
      return [grads.gradQuery.data, grads.gradKey.data, grads.gradValue.data, gradRpb.data];
    };
    const base = run({}, 0);
    expect(run({}, 123)).toEqual(base);
    expect(run({ queryTileSize: [8, 8], keyTileSize: [16, 4], numSplitsKey: [1, 2], computeDeltaWithTorch: true }, 0)).toEqual(base);
    expect(run({ queryTileSize: [2, 64], keyTileSize: [64, 1], numSplitsKey: 1 }, 0)).toEqual(base);
  });
});

function qkSetup(c: Case, seed: number) {
  const sp = c.spatial;
  const P = c.K.reduce((a, b) => a * b, 1);
  const q = rand([c.B, c.H, ...sp, c.D], 'float64', seed);
  const k = rand([c.B, c.H, ...sp, c.D], 'float64', seed + 1);
  const rpb = c.rpb ? rand([c.H, ...c.K.map((x) => 2 * x - 1)], 'float64', seed + 2) : null;
  const dA = rand([c.B, c.H, ...sp, P], 'float64', seed + 3);
  const attn = empty([c.B, c.H, ...sp, P], 'float64');
  const loss = () => {
    qkForward(c.rank, { attn, query: q, key: k, rpb, ...params(c) });
    let sum = 0;
    attn.data.forEach((a, i) => {
      if (Number.isFinite(a)) sum += a * (dA.data[i] as number);
    });
    return sum;
  };
  return { q, k, rpb, dA, loss };
}

describe('qk backward vs finite differences (float64)', () => {
  bmmCases().forEach((c, i) => {
    it(caseKey(c), () => {
      const s = qkSetup(c, 2000 + 17 * i);
      const dq = zeros(s.q.shape, 'float64');
      const dk = zeros(s.k.shape, 'float64');
      const gradRpb = s.rpb ? zeros(s.rpb.shape, 'float64') : null;
      qkBackward(c.rank, { gradQuery: dq, gradKey: dk, gradRpb, gradAttn: s.dA, query: s.q, key: s.k, ...params(c) });
      const check = (name: string, x: Tensor<'float64'>, g: Tensor<'float64'>, seed: number) =>
        expectGradClose(g.data, numericGrad(x.data, s.loss, sampleIndices(x.data.length, SAMPLES, seed)), 1e-7, 1e-7, name);
      check('dQ', s.q, dq, i);
      check('dK', s.k, dk, i + 1);
      if (s.rpb && gradRpb) check('d_rpb', s.rpb, gradRpb, i + 2);
    });
  });

  it('accumulates into grad_rel_pos_bias (+=), like NATTEN', () => {
    const c = bmmCases()[2] as Case; // 1-D L=9 K=3 rpb
    const s = qkSetup(c, 5);
    const rpbShape = (s.rpb as Tensor).shape;
    const grads = () => [zeros(s.q.shape, 'float64'), zeros(s.k.shape, 'float64')] as const;
    const fresh = zeros(rpbShape, 'float64');
    const [dq0, dk0] = grads();
    na1dQkBackward(dq0, dk0, fresh, s.dA, s.q, s.k, 3, 1, false);
    const acc = f64(rpbShape, new Float64Array(fresh.data.length).fill(10));
    const [dq1, dk1] = grads();
    na1dQkBackward(dq1, dk1, acc, s.dA, s.q, s.k, 3, 1, false);
    na1dQkBackward(dq1, dk1, acc, s.dA, s.q, s.k, 3, 1, false);
    expect(Array.from(acc.data, (x, i) => x - 10 - 2 * (fresh.data[i] as number)).every((e) => Math.abs(e) < 1e-12)).toBe(true);
    // d_query / d_key are written, not accumulated.
    expect(dq1.data).toEqual(dq0.data);
    expect(dk1.data).toEqual(dk0.data);
  });
});

describe('av backward vs finite differences (float64)', () => {
  bmmCases().forEach((c, i) => {
    it(caseKey(c), () => {
      const sp = c.spatial;
      const P = c.K.reduce((a, b) => a * b, 1);
      const attn = rand([c.B, c.H, ...sp, P], 'float64', 3000 + i);
      const v = rand([c.B, c.H, ...sp, c.Dv + 1], 'float64', 3100 + i);
      const dO = rand(v.shape, 'float64', 3200 + i);
      const out = empty(v.shape, 'float64');
      const loss = () => {
        avForward(c.rank, { output: out, attn, value: v, ...params(c) });
        return dot(out.data, dO.data);
      };
      const dA = f64(attn.shape, new Float64Array(attn.data.length).fill(Number.NaN));
      const dv = zeros(v.shape, 'float64');
      avBackward(c.rank, { gradAttn: dA, gradValue: dv, gradOutput: dO, attn, value: v, ...params(c) });
      // Invalid slots are never read by the forward, so their derivative is 0, which the backward writes.
      expectGradClose(dA.data, numericGrad(attn.data, loss, sampleIndices(attn.data.length, SAMPLES * 2, i)), 1e-7, 1e-7, 'd_attn');
      expectGradClose(dv.data, numericGrad(v.data, loss, sampleIndices(v.data.length, SAMPLES, i + 1)), 1e-7, 1e-7, 'dV');
      expect(dA.data.some(Number.isNaN)).toBe(false);
    });
  });
});
