/**
 * BMM-style QK ("PN") op: NATTEN's `na{1,2,3}d_qk_forward` / `na{1,2,3}d_qk_backward`, heads-first.
 * f64 accumulation for every dtype; outputs rounded once to their tensor's dtype.
 */
import {
  type BoolDimsOrScalar,
  checkQkBackward,
  checkQkForward,
  type DimsOrScalar,
  type NaRank,
  opName,
  type QkBackwardArgs,
  type QkForwardArgs,
  type Tensor,
} from '@natten-web/core';
import { buildGeometry, checkAllData, checkRank, type Geometry, neighborList, readValues, writeValues } from '../common.ts';
import { inverseNeighborhood, neighborhoodNeighborhood, pointwiseNeighborhood } from '../kernels.ts';

/** Options of the BMM ops beyond NATTEN v0.17.5's seed signature. */
export interface BmmOptions<R extends NaRank> {
  /** Stride (NATTEN >= 0.20 semantics), 1 <= stride <= kernel_size per axis. Default 1. */
  readonly stride?: DimsOrScalar<R> | undefined;
}

/**
 * Generic QK forward for any rank (what `cpuBackend.qkForward` runs), spec §3.4:
 * `attn[b,h,x,t] = q_x.k_{n_t(x)} + rpb[h, r(x, n_t(x))]` for a valid slot t, `-Infinity` for an
 * invalid (causal) slot. No scaling happens here: the caller pre-scales the query.
 */
export function qkForward(rank: NaRank, args: QkForwardArgs): void {
  checkRank('qkForward', rank);
  const op = opName(rank, 'qk_forward');
  const p = checkQkForward(op, rank, args);
  checkAllData(op, { attn: args.attn, query: args.query, key: args.key, rel_pos_bias: args.rpb });
  const geo = buildGeometry(p.params, p.spatial);
  const q = readValues(args.query);
  const k = readValues(args.key);
  const rpb = args.rpb ? readValues(args.rpb) : null;
  const attn = new Float64Array(p.batch * p.heads * geo.tokens * geo.slots).fill(Number.NEGATIVE_INFINITY);
  pointwiseNeighborhood(geo, p.batch * p.heads, p.heads, q, k, p.dim, rpb, attn);
  writeValues(args.attn, attn);
}

/**
 * `d_rpb[h, r] += dA[bh, x, t]` over the valid cells mapping to r, summed in (bh, x, t) order.
 */
function accumulateBiasGrad(geo: Geometry, bhCount: number, heads: number, dA: Float64Array, drpb: Float64Array): void {
  const N = geo.tokens;
  const P = geo.slots;
  const win = neighborList(geo, 'window');
  const { slots, bias } = win;
  for (let bh = 0; bh < bhCount; bh++) {
    const hBias = (bh % heads) * geo.biasSize;
    for (let xi = 0; xi < N; xi++) {
      const n = win.load(xi);
      const aOff = (bh * N + xi) * P;
      for (let i = 0; i < n; i++) {
        const r = hBias + (bias[i] as number);
        drpb[r] = (drpb[r] as number) + (dA[aOff + (slots[i] as number)] as number);
      }
    }
  }
}

/**
 * Generic QK backward for any rank (what `cpuBackend.qkBackward` runs), spec §7.4:
 * `dQ_x = sum_{valid t} dA[x,t] k_{n_t(x)}`, `dK_j = sum_{x: j in N(x)} dA[x, t(x,j)] q_x` (gather over
 * the inverse neighborhood), and, when `gradRpb` is given, `d_rpb[h, r] += sum dA` over the cells
 * mapping to r. Invalid slots of `d_attn` are never read.
 *
 * **`gradRpb` is ACCUMULATED (`+=`) like NATTEN's kernel: zero it first** (NATTEN's Python wrapper
 * passes `zeros_like(bias)`).
 */
export function qkBackward(rank: NaRank, args: QkBackwardArgs): void {
  checkRank('qkBackward', rank);
  const op = opName(rank, 'qk_backward');
  const p = checkQkBackward(op, rank, args);
  checkAllData(op, {
    grad_query: args.gradQuery,
    grad_key: args.gradKey,
    grad_rel_pos_bias: args.gradRpb,
    grad_attn: args.gradAttn,
    query: args.query,
    key: args.key,
  });
  const geo = buildGeometry(p.params, p.spatial);
  const BH = p.batch * p.heads;
  const q = readValues(args.query);
  const k = readValues(args.key);
  const dA = readValues(args.gradAttn);
  const dq = new Float64Array(q.length);
  const dk = new Float64Array(k.length);
  neighborhoodNeighborhood(geo, BH, dA, k, p.dim, dq);
  inverseNeighborhood(geo, BH, dA, q, p.dim, dk);
  // Accumulate into the caller's bias gradient: start from its current values.
  const drpb = args.gradRpb ? Float64Array.from(readValues(args.gradRpb)) : null;
  if (drpb) accumulateBiasGrad(geo, BH, p.heads, dA, drpb);

  // Outputs are written only after every read (a float64 input is read without a copy).
  writeValues(args.gradQuery, dq);
  writeValues(args.gradKey, dk);
  if (args.gradRpb && drpb) writeValues(args.gradRpb, drpb);
}

/** Signature of `na{1,2,3}d_qk_forward`, typed per rank. */
export type NaQkForwardFn<R extends NaRank> = (
  attn: Tensor,
  query: Tensor,
  key: Tensor,
  relPosBias: Tensor | null,
  kernelSize: DimsOrScalar<R>,
  dilation: DimsOrScalar<R>,
  isCausal: BoolDimsOrScalar<R>,
  options?: BmmOptions<R>,
) => void;

/** Signature of `na{1,2,3}d_qk_backward`, typed per rank. */
export type NaQkBackwardFn<R extends NaRank> = (
  gradQuery: Tensor,
  gradKey: Tensor,
  gradRelPosBias: Tensor | null,
  gradAttn: Tensor,
  query: Tensor,
  key: Tensor,
  kernelSize: DimsOrScalar<R>,
  dilation: DimsOrScalar<R>,
  isCausal: BoolDimsOrScalar<R>,
  options?: BmmOptions<R>,
) => void;

function qkForwardFor<R extends NaRank>(rank: R): NaQkForwardFn<R> {
  return (attn, query, key, relPosBias, kernelSize, dilation, isCausal, options) =>
    qkForward(rank, { attn, query, key, rpb: relPosBias, kernelSize, dilation, isCausal, stride: options?.stride });
}

function qkBackwardFor<R extends NaRank>(rank: R): NaQkBackwardFn<R> {
  return (gradQuery, gradKey, gradRelPosBias, gradAttn, query, key, kernelSize, dilation, isCausal, options) =>
    qkBackward(rank, {
      gradQuery,
      gradKey,
      gradRpb: gradRelPosBias,
      gradAttn,
      query,
      key,
      kernelSize,
      dilation,
      isCausal,
      stride: options?.stride,
    });
}

/**
 * 1-D QK forward, NATTEN's `na1d_qk_forward`: query/key `[B, H, L, D]` (heads-first), attn
 * `[B, H, L, K]` written in place, rpb `[H, 2K-1]` or null. Unscaled; -Infinity in invalid slots.
 */
export const na1dQkForward: NaQkForwardFn<1> = qkForwardFor(1);
/** 2-D QK forward, NATTEN's `na2d_qk_forward`: attn `[B, H, X, Y, Kx*Ky]`; see {@link na1dQkForward}. */
export const na2dQkForward: NaQkForwardFn<2> = qkForwardFor(2);
/** 3-D QK forward, NATTEN's `na3d_qk_forward`; see {@link na1dQkForward}. */
export const na3dQkForward: NaQkForwardFn<3> = qkForwardFor(3);

/**
 * 1-D QK backward, NATTEN's `na1d_qk_backward`: writes grad_query and grad_key; **accumulates
 * (`+=`) into gradRelPosBias** when given, like NATTEN, so zero it first.
 */
export const na1dQkBackward: NaQkBackwardFn<1> = qkBackwardFor(1);
/** 2-D QK backward, NATTEN's `na2d_qk_backward`; accumulates into gradRelPosBias (see {@link na1dQkBackward}). */
export const na2dQkBackward: NaQkBackwardFn<2> = qkBackwardFor(2);
/** 3-D QK backward, NATTEN's `na3d_qk_backward`; accumulates into gradRelPosBias (see {@link na1dQkBackward}). */
export const na3dQkBackward: NaQkBackwardFn<3> = qkBackwardFor(3);
