/**
 * The fused ops against the BMM chain NATTEN's unfused path runs:
 * attn = qk_forward(q*scale) (+rpb) -> softmax -> av_forward, and its backward through
 * av_backward, the softmax Jacobian and qk_backward. Layouts are permuted with core's helpers.
 */
import { type DType, fromValues, type Tensor, toHeadsFirst, toHeadsLast, zeros } from '@natten-web/core';
import { describe, it } from 'vitest';
import { avBackward, avForward, fusedBackward, fusedForward, qkBackward, qkForward } from '../src/index.ts';
import { bmmCases, type Case, caseKey } from './cases.ts';
import { empty, expectClose, rand, tol, values } from './helpers.ts';

function params(c: Case) {
  return { kernelSize: c.K, dilation: c.d, isCausal: c.causal, stride: c.s };
}

/** Row-wise softmax over the last axis (size P), -Infinity entries get weight 0. Returns probs and log-sum-exp. */
function softmaxRows(logits: Float64Array, P: number): { probs: Float64Array; lse: Float64Array } {
  const rows = logits.length / P;
  const probs = new Float64Array(logits.length);
  const lse = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    let m = Number.NEGATIVE_INFINITY;
    for (let t = 0; t < P; t++) m = Math.max(m, logits[r * P + t] as number);
    let sum = 0;
    for (let t = 0; t < P; t++) sum += Math.exp((logits[r * P + t] as number) - m);
    for (let t = 0; t < P; t++) probs[r * P + t] = Math.exp((logits[r * P + t] as number) - m) / sum;
    lse[r] = m + Math.log(sum);
  }
  return { probs, lse };
}

/** [B, H, *sp] (heads-first rows) -> [B, *sp, H] (the fused lse layout). */
function rowsToHeadsLast(rows: Float64Array, c: Case): Float64Array {
  const t = toHeadsLast(fromValues([c.B, c.H, ...c.spatial, 1], 'float64', rows), c.rank);
  return t.data;
}

function bmmChain(c: Case, q: Tensor<'float64'>, k: Tensor<'float64'>, v: Tensor<'float64'>, rpb: Tensor<'float64'> | null, scale: number) {
  const P = c.K.reduce((a, b) => a * b, 1);
  const qf = toHeadsFirst(q, c.rank);
  const qScaled = fromValues(qf.shape, 'float64', qf.data.map((x) => x * scale));
  const kf = toHeadsFirst(k, c.rank);
  const vf = toHeadsFirst(v, c.rank);
  const attn = empty([c.B, c.H, ...c.spatial, P], 'float64');
  qkForward(c.rank, { attn, query: qScaled, key: kf, rpb, ...params(c) });
  const { probs, lse } = softmaxRows(attn.data, P);
  const probT = fromValues(attn.shape, 'float64', probs);
  const outF = empty(vf.shape, 'float64');
  avForward(c.rank, { output: outF, attn: probT, value: vf, ...params(c) });
  return { P, qScaled, kf, vf, probs, probT, out: toHeadsLast(outF, c.rank), lse: rowsToHeadsLast(lse, c) };
}

describe('fused forward == softmax(qk_forward(q*scale) + rpb) . av_forward', () => {
  const dtypes: DType[] = ['float64', 'float32', 'float16'];
  bmmCases().forEach((c, i) => {
    for (const dtype of dtypes) {
      it(caseKey(c, dtype), () => {
        const sp = c.spatial;
        const q = rand([c.B, ...sp, c.H, c.D], dtype, 500 + i);
        const k = rand([c.B, ...sp, c.H, c.D], dtype, 600 + i);
        const v = rand([c.B, ...sp, c.H, c.Dv], dtype, 700 + i);
        const rpb = c.rpb ? rand([c.H, ...c.K.map((x) => 2 * x - 1)], dtype, 800 + i) : null;
        const scale = 0.4;
        const output = empty([c.B, ...sp, c.H, c.Dv], dtype);
        const logsumexp = empty([c.B, ...sp, c.H], 'float32');
        fusedForward(c.rank, { output, query: q, key: k, value: v, rpb, logsumexp, attnScale: scale, ...params(c) });
        // The chain runs in f64 on the same (already rounded) input values.
        const as64 = (t: Tensor) => fromValues(t.shape, 'float64', values(t));
        const ref = bmmChain(c, as64(q), as64(k), as64(v), rpb ? as64(rpb) : null, scale);
        const t = tol(dtype);
        expectClose(values(output), ref.out.data, t.atol, t.rtol, 'output');
        expectClose(values(logsumexp), ref.lse, 1e-5, 1e-6, 'logsumexp');
      });
    }
  });
});

describe('fused backward == av_backward -> softmax backward -> qk_backward', () => {
  bmmCases().forEach((c, i) => {
    it(caseKey(c, 'float64'), () => {
      const sp = c.spatial;
      const q = rand([c.B, ...sp, c.H, c.D], 'float64', 900 + i);
      const k = rand([c.B, ...sp, c.H, c.D], 'float64', 910 + i);
      const v = rand([c.B, ...sp, c.H, c.Dv], 'float64', 920 + i);
      const rpb = c.rpb ? rand([c.H, ...c.K.map((x) => 2 * x - 1)], 'float64', 930 + i) : null;
      const dO = rand([c.B, ...sp, c.H, c.Dv], 'float64', 940 + i);
      const scale = 0.45;
      const ref = bmmChain(c, q, k, v, rpb, scale);

      // Reference backward through the BMM ops.
      const dOf = toHeadsFirst(dO, c.rank);
      const dProb = empty(ref.probT.shape, 'float64');
      const dVf = empty(ref.vf.shape, 'float64');
      avBackward(c.rank, { gradAttn: dProb, gradValue: dVf, gradOutput: dOf, attn: ref.probT, value: ref.vf, ...params(c) });
      const dS = new Float64Array(ref.probs.length);
      for (let r = 0; r < dS.length / ref.P; r++) {
        let s = 0;
        for (let t = 0; t < ref.P; t++) s += (ref.probs[r * ref.P + t] as number) * (dProb.data[r * ref.P + t] as number);
        for (let t = 0; t < ref.P; t++) dS[r * ref.P + t] = (ref.probs[r * ref.P + t] as number) * ((dProb.data[r * ref.P + t] as number) - s);
      }
      const dQs = empty(ref.qScaled.shape, 'float64');
      const dKf = empty(ref.kf.shape, 'float64');
      const dRpbRef = rpb ? zeros(rpb.shape, 'float64') : null;
      qkBackward(c.rank, {
        gradQuery: dQs,
        gradKey: dKf,
        gradRpb: dRpbRef,
        gradAttn: fromValues(ref.probT.shape, 'float64', dS),
        query: ref.qScaled,
        key: ref.kf,
        ...params(c),
      });

      // Fused forward (for output and lse) and backward.
      const output = empty(dO.shape, 'float64');
      const logsumexp = empty([c.B, ...sp, c.H], 'float32');
      fusedForward(c.rank, { output, query: q, key: k, value: v, rpb, logsumexp, attnScale: scale, ...params(c) });
      const dq = empty(q.shape, 'float64');
      const dk = empty(k.shape, 'float64');
      const dv = empty(v.shape, 'float64');
      const gradRpb = rpb ? empty(rpb.shape, 'float64') : null;
      fusedBackward(c.rank, {
        gradQuery: dq,
        gradKey: dk,
        gradValue: dv,
        query: q,
        key: k,
        value: v,
        output,
        gradOutput: dO,
        logsumexp,
        rpb,
        gradRpb,
        attnScale: scale,
        ...params(c),
      });
      const dqRef = toHeadsLast(dQs, c.rank).data.map((x) => x * scale);
      expectClose(dq.data, dqRef, 2e-6, 1e-5, 'dQ');
      expectClose(dk.data, toHeadsLast(dKf, c.rank).data, 2e-6, 1e-5, 'dK');
      expectClose(dv.data, toHeadsLast(dVf, c.rank).data, 2e-6, 1e-5, 'dV');
      if (gradRpb && dRpbRef) expectClose(gradRpb.data, dRpbRef.data, 2e-6, 1e-5, 'd_rpb');
    });
  });
});
