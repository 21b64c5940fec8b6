/**
 * BMM-style AV ("NN") op: NATTEN's `na{1,2,3}d_av_forward` / `na{1,2,3}d_av_backward`, heads-first.
 * f64 accumulation for every dtype; outputs rounded once to their tensor's dtype.
 */
import {
  type AvBackwardArgs,
  type AvForwardArgs,
  type BoolDimsOrScalar,
  checkAvBackward,
  checkAvForward,
  type DimsOrScalar,
  type NaRank,
  opName,
  type Tensor,
} from '@natten-web/core';
import { buildGeometry, checkAllData, checkRank, gatherInverse, readValues, writeValues } from '../common.ts';
import type { BmmOptions } from './na-qk.ts';

/**
 * Generic AV forward for any rank (what `cpuBackend.avForward` runs), spec §3.6:
 * `out_x = sum_{valid t} attn[x,t] v_{n_t(x)}`. Invalid (causal) slots are skipped, never read.
 */
export function avForward(rank: NaRank, args: AvForwardArgs): void {
  checkRank('avForward', rank);
  const op = opName(rank, 'av_forward');
  const p = checkAvForward(op, rank, args);
  checkAllData(op, { output: args.output, attn: args.attn, value: args.value });
  const geo = buildGeometry(p.params, p.spatial);
  const [A0, A1, A2] = geo.axes;
  const L0 = A0.length;
  const L1 = A1.length;
  const L2 = A2.length;
  const K1 = A1.kernel;
  const K2 = A2.kernel;
  const d0 = A0.dilation;
  const d1 = A1.dilation;
  const d2 = A2.dilation;
  const N = geo.tokens;
  const P = geo.slots;
  const D = p.dim;
  const attn = readValues(args.attn);
  const v = readValues(args.value);
  const out = new Float64Array(v.length);

  for (let bh = 0; bh < p.batch * p.heads; bh++) {
    for (let x0 = 0; x0 < L0; x0++) {
      const s0 = A0.start[x0] as number;
      const c0 = A0.count[x0] as number;
      for (let x1 = 0; x1 < L1; x1++) {
        const s1 = A1.start[x1] as number;
        const c1 = A1.count[x1] as number;
        for (let x2 = 0; x2 < L2; x2++) {
          const s2 = A2.start[x2] as number;
          const c2 = A2.count[x2] as number;
          const xi = (x0 * L1 + x1) * L2 + x2;
          const oOff = (bh * N + xi) * D;
          const aOff = (bh * N + xi) * P;
          for (let t0 = 0; t0 < c0; t0++) {
            const j0 = s0 + t0 * d0;
            for (let t1 = 0; t1 < c1; t1++) {
              const j1 = s1 + t1 * d1;
              for (let t2 = 0; t2 < c2; t2++) {
                const j2 = s2 + t2 * d2;
                const vOff = (bh * N + (j0 * L1 + j1) * L2 + j2) * D;
                const a = attn[aOff + (t0 * K1 + t1) * K2 + t2] as number;
                for (let c = 0; c < D; c++) out[oOff + c] = (out[oOff + c] as number) + a * (v[vOff + c] as number);
              }
            }
          }
        }
      }
    }
  }
  writeValues(args.output, out);
}

/**
 * Generic AV backward for any rank (what `cpuBackend.avBackward` runs), spec §3.7, §7.4:
 * `d_attn[x,t] = dO_x.v_{n_t(x)}` for a valid slot and **0** for an invalid one;
 * `dV_j = sum_{x: j in N(x)} attn[x, t(x,j)] dO_x`, gathered over the inverse neighborhood.
 */
export function avBackward(rank: NaRank, args: AvBackwardArgs): void {
  checkRank('avBackward', rank);
  const op = opName(rank, 'av_backward');
  const p = checkAvBackward(op, rank, args);
  checkAllData(op, {
    grad_attn: args.gradAttn,
    grad_value: args.gradValue,
    grad_output: args.gradOutput,
    attn: args.attn,
    value: args.value,
  });
  const geo = buildGeometry(p.params, p.spatial);
  const [A0, A1, A2] = geo.axes;
  const L0 = A0.length;
  const L1 = A1.length;
  const L2 = A2.length;
  const K1 = A1.kernel;
  const K2 = A2.kernel;
  const d0 = A0.dilation;
  const d1 = A1.dilation;
  const d2 = A2.dilation;
  const N = geo.tokens;
  const P = geo.slots;
  const D = p.dim;
  const attn = readValues(args.attn);
  const v = readValues(args.value);
  const dO = readValues(args.gradOutput);
  const dA = new Float64Array(attn.length);
  const dv = new Float64Array(v.length);

  // Pass A, per query: d_attn (zero in invalid slots, which stay untouched).
  for (let bh = 0; bh < p.batch * p.heads; bh++) {
    for (let x0 = 0; x0 < L0; x0++) {
      const s0 = A0.start[x0] as number;
      const c0 = A0.count[x0] as number;
      for (let x1 = 0; x1 < L1; x1++) {
        const s1 = A1.start[x1] as number;
        const c1 = A1.count[x1] as number;
        for (let x2 = 0; x2 < L2; x2++) {
          const s2 = A2.start[x2] as number;
          const c2 = A2.count[x2] as number;
          const xi = (x0 * L1 + x1) * L2 + x2;
          const oOff = (bh * N + xi) * D;
          const aOff = (bh * N + xi) * P;
          for (let t0 = 0; t0 < c0; t0++) {
            const j0 = s0 + t0 * d0;
            for (let t1 = 0; t1 < c1; t1++) {
              const j1 = s1 + t1 * d1;
              for (let t2 = 0; t2 < c2; t2++) {
                const j2 = s2 + t2 * d2;
                const vOff = (bh * N + (j0 * L1 + j1) * L2 + j2) * D;
                let dot = 0;
                for (let c = 0; c < D; c++) dot += (dO[oOff + c] as number) * (v[vOff + c] as number);
                dA[aOff + (t0 * K1 + t1) * K2 + t2] = dot;
              }
            }
          }
        }
      }
    }
  }

  // Pass B, per key: dV over the inverse neighborhood.
  gatherInverse(geo, p.batch * p.heads, attn, dO, dv, D);

  writeValues(args.gradAttn, dA);
  writeValues(args.gradValue, dv);
}

/** Signature of `na{1,2,3}d_av_forward`, typed per rank. */
export type NaAvForwardFn<R extends NaRank> = (
  output: Tensor,
  attn: Tensor,
  value: Tensor,
  kernelSize: DimsOrScalar<R>,
  dilation: DimsOrScalar<R>,
  isCausal: BoolDimsOrScalar<R>,
  options?: BmmOptions<R>,
) => void;

/** Signature of `na{1,2,3}d_av_backward`, typed per rank. */
export type NaAvBackwardFn<R extends NaRank> = (
  gradAttn: Tensor,
  gradValue: Tensor,
  gradOutput: Tensor,
  attn: Tensor,
  value: Tensor,
  kernelSize: DimsOrScalar<R>,
  dilation: DimsOrScalar<R>,
  isCausal: BoolDimsOrScalar<R>,
  options?: BmmOptions<R>,
) => void;

function avForwardFor<R extends NaRank>(rank: R): NaAvForwardFn<R> {
  return (output, attn, value, kernelSize, dilation, isCausal, options) =>
    avForward(rank, { output, attn, value, kernelSize, dilation, isCausal, stride: options?.stride });
}

function avBackwardFor<R extends NaRank>(rank: R): NaAvBackwardFn<R> {
  return (gradAttn, gradValue, gradOutput, attn, value, kernelSize, dilation, isCausal, options) =>
    avBackward(rank, { gradAttn, gradValue, gradOutput, attn, value, kernelSize, dilation, isCausal, stride: options?.stride });
}

/**
 * 1-D AV forward, NATTEN's `na1d_av_forward`: attn `[B, H, L, K]`, value and output `[B, H, L, D]`
 * (heads-first); invalid slots are skipped.
 */
export const na1dAvForward: NaAvForwardFn<1> = avForwardFor(1);
/** 2-D AV forward, NATTEN's `na2d_av_forward`; see {@link na1dAvForward}. */
export const na2dAvForward: NaAvForwardFn<2> = avForwardFor(2);
/** 3-D AV forward, NATTEN's `na3d_av_forward`; see {@link na1dAvForward}. */
export const na3dAvForward: NaAvForwardFn<3> = avForwardFor(3);

/**
 * 1-D AV backward, NATTEN's `na1d_av_backward`: writes grad_attn (0 in invalid slots) and
 * grad_value in place.
 */
export const na1dAvBackward: NaAvBackwardFn<1> = avBackwardFor(1);
/** 2-D AV backward, NATTEN's `na2d_av_backward`; see {@link na1dAvBackward}. */
export const na2dAvBackward: NaAvBackwardFn<2> = avBackwardFor(2);
/** 3-D AV backward, NATTEN's `na3d_av_backward`; see {@link na1dAvBackward}. */
export const na3dAvBackward: NaAvBackwardFn<3> = avBackwardFor(3);
