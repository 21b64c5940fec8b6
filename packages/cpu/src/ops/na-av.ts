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
import { buildGeometry, checkAllData, checkRank, readValues, writeValues } from '../common.ts';
import { inverseNeighborhood, neighborhoodNeighborhood, pointwiseNeighborhood } from '../kernels.ts';
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
  const attn = readValues(args.attn);
  const v = readValues(args.value);
  const out = new Float64Array(v.length);
  neighborhoodNeighborhood(geo, p.batch * p.heads, attn, v, p.dim, out);
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
  const attn = readValues(args.attn);
  const v = readValues(args.value);
  const dO = readValues(args.gradOutput);
  // d_attn is zero in invalid slots, which the PN kernel leaves untouched.
  const dA = new Float64Array(attn.length);
  const dv = new Float64Array(v.length);
  pointwiseNeighborhood(geo, p.batch * p.heads, p.heads, dO, v, p.dim, null, dA);
  inverseNeighborhood(geo, p.batch * p.heads, attn, dO, p.dim, dv);

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
