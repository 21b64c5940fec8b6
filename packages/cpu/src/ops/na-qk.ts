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
import { buildGeometry, checkAllData, checkRank, gatherInverse, readValues, writeValues } from '../common.ts';

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
  const [A0, A1, A2] = geo.axes;
  const L0 = A0.length;
  const L1 = A1.length;
  const L2 = A2.length;
  const K0 = A0.kernel;
  const K1 = A1.kernel;
  const K2 = A2.kernel;
  const d0 = A0.dilation;
  const d1 = A1.dilation;
  const d2 = A2.dilation;
  const R0 = A0.rpbExtent;
  const R1 = A1.rpbExtent;
  const R2 = A2.rpbExtent;
  const N = geo.tokens;
  const P = geo.slots;
  const D = p.dim;
  const q = readValues(args.query);
  const k = readValues(args.key);
  const rpb = args.rpb ? readValues(args.rpb) : null;
  const attn = new Float64Array(p.batch * p.heads * N * P).fill(Number.NEGATIVE_INFINITY);

  for (let bh = 0; bh < p.batch * p.heads; bh++) {
    const h = bh % p.heads;
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
          const qOff = (bh * N + xi) * D;
          const aOff = (bh * N + xi) * P;
          for (let t0 = 0; t0 < c0; t0++) {
            const j0 = s0 + t0 * d0;
            const r0 = (j0 - x0) / d0 + K0 - 1;
            for (let t1 = 0; t1 < c1; t1++) {
              const j1 = s1 + t1 * d1;
              const r01 = (h * R0 + r0) * R1 + (j1 - x1) / d1 + K1 - 1;
              for (let t2 = 0; t2 < c2; t2++) {
                const j2 = s2 + t2 * d2;
                const kOff = (bh * N + (j0 * L1 + j1) * L2 + j2) * D;
                let dot = 0;
                for (let c = 0; c < D; c++) dot += (q[qOff + c] as number) * (k[kOff + c] as number);
                if (rpb) dot += rpb[r01 * R2 + (j2 - x2) / d2 + K2 - 1] as number;
                attn[aOff + (t0 * K1 + t1) * K2 + t2] = dot;
              }
            }
          }
        }
      }
    }
  }
  writeValues(args.attn, attn);
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
  const [A0, A1, A2] = geo.axes;
  const L0 = A0.length;
  const L1 = A1.length;
  const L2 = A2.length;
  const K0 = A0.kernel;
  const K1 = A1.kernel;
  const K2 = A2.kernel;
  const d0 = A0.dilation;
  const d1 = A1.dilation;
  const d2 = A2.dilation;
  const R0 = A0.rpbExtent;
  const R1 = A1.rpbExtent;
  const R2 = A2.rpbExtent;
  const N = geo.tokens;
  const P = geo.slots;
  const D = p.dim;
  const q = readValues(args.query);
  const k = readValues(args.key);
  const dA = readValues(args.gradAttn);
  const dq = new Float64Array(q.length);
  const dk = new Float64Array(k.length);
  // Accumulate into the caller's bias gradient: start from its current values.
  const drpb = args.gradRpb ? Float64Array.from(readValues(args.gradRpb)) : null;

  // Pass A, per query: dQ and d_rpb.
  for (let bh = 0; bh < p.batch * p.heads; bh++) {
    const h = bh % p.heads;
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
          const qOff = (bh * N + xi) * D;
          const aOff = (bh * N + xi) * P;
          for (let t0 = 0; t0 < c0; t0++) {
            const j0 = s0 + t0 * d0;
            const r0 = (j0 - x0) / d0 + K0 - 1;
            for (let t1 = 0; t1 < c1; t1++) {
              const j1 = s1 + t1 * d1;
              const r01 = (h * R0 + r0) * R1 + (j1 - x1) / d1 + K1 - 1;
              for (let t2 = 0; t2 < c2; t2++) {
                const j2 = s2 + t2 * d2;
                const kOff = (bh * N + (j0 * L1 + j1) * L2 + j2) * D;
                const a = dA[aOff + (t0 * K1 + t1) * K2 + t2] as number;
                for (let c = 0; c < D; c++) dq[qOff + c] = (dq[qOff + c] as number) + a * (k[kOff + c] as number);
                if (drpb) {
                  const r = r01 * R2 + (j2 - x2) / d2 + K2 - 1;
                  drpb[r] = (drpb[r] as number) + a;
                }
              }
            }
          }
        }
      }
    }
  }

  // Pass B, per key: dK over the inverse neighborhood; the slot of j in x's window is (j - start(x)) / d.
  gatherInverse(geo, p.batch * p.heads, dA, q, dk, D);

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
