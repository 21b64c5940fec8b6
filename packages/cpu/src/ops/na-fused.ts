/**
 * Fused neighborhood attention (NATTEN's `na{1,2,3}d_forward` / `na{1,2,3}d_backward`), heads-last.
 *
 * Reference semantics (spec §3.1, §3.2, §7): every value is accumulated in f64 whatever the input
 * dtype; outputs are rounded to their tensor's dtype once, at the end. Tile sizes, `num_splits_key`
 * and `compute_delta_with_torch` are validated like NATTEN's but never change a CPU result.
 */
import {
  type BoolDimsOrScalar,
  checkFusedBackward,
  checkFusedForward,
  type Dims,
  type DimsOrScalar,
  type FusedBackwardArgs,
  type FusedForwardArgs,
  type NaRank,
  opName,
  type Tensor,
} from '@natten-web/core';
import { buildGeometry, checkAllData, checkRank, readValues, writeValues } from '../common.ts';

/** Options of the fused forward beyond NATTEN v0.17.5's seed signature. */
export interface FusedForwardOptions<R extends NaRank> {
  /** Stride (NATTEN >= 0.20 "generalized NA"), 1 <= stride <= kernel_size per axis. Default 1. */
  readonly stride?: DimsOrScalar<R> | undefined;
}

/** Options of the fused backward beyond NATTEN v0.17.5's seed signature. */
export interface FusedBackwardOptions<R extends NaRank> {
  /** Stride used in the forward pass. Default 1. */
  readonly stride?: DimsOrScalar<R> | undefined;
  /** The bias the forward pass added; P is then recomputed as exp(scale*q.k + rpb - lse). */
  readonly relPosBias?: Tensor | null | undefined;
  /**
   * Receives d_rpb = sum of dS over the (batch, query, slot) cells that map to each bias entry.
   * **Overwritten** (unlike `na*d_qk_backward`, which accumulates). Requires `relPosBias`.
   */
  readonly gradRelPosBias?: Tensor | null | undefined;
}

/**
 * Generic fused forward for any rank, on core's argument object (what `cpuBackend.fusedForward` runs).
 *
 * `S[x,j] = scale*q_x.k_j + rpb[h, r(x,j)]` over the neighborhood of x; `O_x = softmax_j(S) . V`;
 * `logsumexp[x] = ln sum_j exp(S[x,j])` (natural log, stored as float32). With GQA, query head h
 * reads key/value head `floor(h / (heads / heads_kv))`.
 */
export function fusedForward(rank: NaRank, args: FusedForwardArgs): void {
  checkRank('fusedForward', rank);
  const op = opName(rank, 'forward');
  const p = checkFusedForward(op, rank, args);
  checkAllData(op, {
    output: args.output,
    query: args.query,
    key: args.key,
    value: args.value,
    rel_pos_bias: args.rpb,
    logsumexp: args.logsumexp,
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
  const B = p.batch;
  const H = p.heads;
  const Hkv = p.headsKv;
  const G = H / Hkv;
  const D = p.dim;
  const Dv = p.dimV;
  const scale = p.scale;

  const q = readValues(args.query);
  const k = readValues(args.key);
  const v = readValues(args.value);
  const rpb = args.rpb ? readValues(args.rpb) : null;
  const out = new Float64Array(B * N * H * Dv);
  const lse = new Float64Array(B * N * H);
  const logits = new Float64Array(geo.slots);
  const keys = new Int32Array(geo.slots);

  for (let b = 0; b < B; b++) {
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
          for (let h = 0; h < H; h++) {
            const hk = Math.floor(h / G);
            const qOff = ((b * N + xi) * H + h) * D;
            let n = 0;
            let m = Number.NEGATIVE_INFINITY;
            for (let t0 = 0; t0 < c0; t0++) {
              const j0 = s0 + t0 * d0;
              const r0 = (j0 - x0) / d0 + K0 - 1;
              for (let t1 = 0; t1 < c1; t1++) {
                const j1 = s1 + t1 * d1;
                const r01 = (h * R0 + r0) * R1 + (j1 - x1) / d1 + K1 - 1;
                for (let t2 = 0; t2 < c2; t2++) {
                  const j2 = s2 + t2 * d2;
                  const ji = (j0 * L1 + j1) * L2 + j2;
                  const kOff = ((b * N + ji) * Hkv + hk) * D;
                  let dot = 0;
                  for (let c = 0; c < D; c++) dot += (q[qOff + c] as number) * (k[kOff + c] as number);
                  let s = scale * dot;
                  if (rpb) s += rpb[r01 * R2 + (j2 - x2) / d2 + K2 - 1] as number;
                  logits[n] = s;
                  keys[n] = ji;
                  n++;
                  if (s > m) m = s;
                }
              }
            }
            let sum = 0;
            for (let i = 0; i < n; i++) {
              const e = Math.exp((logits[i] as number) - m);
              logits[i] = e;
              sum += e;
            }
            const inv = 1 / sum;
            const oOff = ((b * N + xi) * H + h) * Dv;
            for (let i = 0; i < n; i++) {
              const w = (logits[i] as number) * inv;
              const vOff = ((b * N + (keys[i] as number)) * Hkv + hk) * Dv;
              for (let c = 0; c < Dv; c++) out[oOff + c] = (out[oOff + c] as number) + w * (v[vOff + c] as number);
            }
            lse[(b * N + xi) * H + h] = m + Math.log(sum);
          }
        }
      }
    }
  }
  writeValues(args.output, out);
  if (args.logsumexp) writeValues(args.logsumexp, lse);
}

/**
 * Generic fused backward for any rank (what `cpuBackend.fusedBackward` runs), spec §7.2, gather
 * style and deterministic:
 *
 * - `delta_x = sum_c dO_x[c] * O_x[c]` from the stored output;
 * - `P_xj = exp(scale*q_x.k_j (+ rpb) - lse_x)` from the stored logsumexp;
 * - `dS_xj = P_xj * (dO_x.v_j - delta_x)`;
 * - per query: `dQ_x = scale * sum_j dS_xj k_j` (and d_rpb, overwritten, when `gradRpb` is given);
 * - per key, over its inverse neighborhood: `dV_j = sum_x P_xj dO_x`, `dK_j = scale * sum_x dS_xj q_x`,
 *   summed over the query heads of the key's GQA group.
 */
export function fusedBackward(rank: NaRank, args: FusedBackwardArgs): void {
  checkRank('fusedBackward', rank);
  const op = opName(rank, 'backward');
  const p = checkFusedBackward(op, rank, args);
  checkAllData(op, {
    grad_query: args.gradQuery,
    grad_key: args.gradKey,
    grad_value: args.gradValue,
    query: args.query,
    key: args.key,
    value: args.value,
    output: args.output,
    grad_output: args.gradOutput,
    logsumexp: args.logsumexp,
    rel_pos_bias: args.rpb,
    grad_rel_pos_bias: args.gradRpb,
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
  const B = p.batch;
  const H = p.heads;
  const Hkv = p.headsKv;
  const G = H / Hkv;
  const D = p.dim;
  const Dv = p.dimV;
  const scale = p.scale;

  const q = readValues(args.query);
  const k = readValues(args.key);
  const v = readValues(args.value);
  const o = readValues(args.output);
  const dO = readValues(args.gradOutput);
  const lse = readValues(args.logsumexp);
  const rpb = args.rpb ? readValues(args.rpb) : null;
  const dq = new Float64Array(q.length);
  const dk = new Float64Array(k.length);
  const dv = new Float64Array(v.length);
  const drpb = args.gradRpb ? new Float64Array(args.gradRpb.data.length) : null;

  // delta_x = sum_c dO_x[c] * O_x[c], one value per (b, x, h).
  const delta = new Float64Array(B * N * H);
  for (let i = 0; i < delta.length; i++) {
    const off = i * Dv;
    let acc = 0;
    for (let c = 0; c < Dv; c++) acc += (dO[off + c] as number) * (o[off + c] as number);
    delta[i] = acc;
  }

  // Pass A, per query: dQ (and d_rpb).
  for (let b = 0; b < B; b++) {
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
          for (let h = 0; h < H; h++) {
            const hk = Math.floor(h / G);
            const row = (b * N + xi) * H + h;
            const qOff = row * D;
            const oOff = row * Dv;
            const l = lse[row] as number;
            const dl = delta[row] as number;
            for (let t0 = 0; t0 < c0; t0++) {
              const j0 = s0 + t0 * d0;
              const r0 = (j0 - x0) / d0 + K0 - 1;
              for (let t1 = 0; t1 < c1; t1++) {
                const j1 = s1 + t1 * d1;
                const r01 = (h * R0 + r0) * R1 + (j1 - x1) / d1 + K1 - 1;
                for (let t2 = 0; t2 < c2; t2++) {
                  const j2 = s2 + t2 * d2;
                  const ji = (j0 * L1 + j1) * L2 + j2;
                  const kvRow = (b * N + ji) * Hkv + hk;
                  const kOff = kvRow * D;
                  const vOff = kvRow * Dv;
                  let dot = 0;
                  for (let c = 0; c < D; c++) dot += (q[qOff + c] as number) * (k[kOff + c] as number);
                  const r = r01 * R2 + (j2 - x2) / d2 + K2 - 1;
                  let s = scale * dot;
                  if (rpb) s += rpb[r] as number;
                  const prob = Math.exp(s - l);
                  let dp = 0;
                  for (let c = 0; c < Dv; c++) dp += (dO[oOff + c] as number) * (v[vOff + c] as number);
                  const ds = prob * (dp - dl);
                  const f = scale * ds;
                  for (let c = 0; c < D; c++) dq[qOff + c] = (dq[qOff + c] as number) + f * (k[kOff + c] as number);
                  if (drpb) drpb[r] = (drpb[r] as number) + ds;
                }
              }
            }
          }
        }
      }
    }
  }

  // Pass B, per key: dK and dV over the inverse neighborhood (exact ranges, no membership test).
  for (let b = 0; b < B; b++) {
    for (let j0 = 0; j0 < L0; j0++) {
      const f0 = A0.invFirst[j0] as number;
      const e0 = A0.invEnd[j0] as number;
      for (let j1 = 0; j1 < L1; j1++) {
        const f1 = A1.invFirst[j1] as number;
        const e1 = A1.invEnd[j1] as number;
        for (let j2 = 0; j2 < L2; j2++) {
          const f2 = A2.invFirst[j2] as number;
          const e2 = A2.invEnd[j2] as number;
          const ji = (j0 * L1 + j1) * L2 + j2;
          for (let hk = 0; hk < Hkv; hk++) {
            const kvRow = (b * N + ji) * Hkv + hk;
            const kOff = kvRow * D;
            const vOff = kvRow * Dv;
            for (let h = hk * G; h < (hk + 1) * G; h++) {
              for (let x0 = f0; x0 < e0; x0 += d0) {
                const r0 = (j0 - x0) / d0 + K0 - 1;
                for (let x1 = f1; x1 < e1; x1 += d1) {
                  const r01 = (h * R0 + r0) * R1 + (j1 - x1) / d1 + K1 - 1;
                  for (let x2 = f2; x2 < e2; x2 += d2) {
                    const xi = (x0 * L1 + x1) * L2 + x2;
                    const row = (b * N + xi) * H + h;
                    const qOff = row * D;
                    const oOff = row * Dv;
                    let dot = 0;
                    for (let c = 0; c < D; c++) dot += (q[qOff + c] as number) * (k[kOff + c] as number);
                    let s = scale * dot;
                    if (rpb) s += rpb[r01 * R2 + (j2 - x2) / d2 + K2 - 1] as number;
                    const prob = Math.exp(s - (lse[row] as number));
                    let dp = 0;
                    for (let c = 0; c < Dv; c++) dp += (dO[oOff + c] as number) * (v[vOff + c] as number);
                    const f = scale * prob * (dp - (delta[row] as number));
                    for (let c = 0; c < Dv; c++) dv[vOff + c] = (dv[vOff + c] as number) + prob * (dO[oOff + c] as number);
                    for (let c = 0; c < D; c++) dk[kOff + c] = (dk[kOff + c] as number) + f * (q[qOff + c] as number);
                  }
                }
              }
            }
          }
        }
      }
    }
  }

  writeValues(args.gradQuery, dq);
  writeValues(args.gradKey, dk);
  writeValues(args.gradValue, dv);
  if (args.gradRpb && drpb) writeValues(args.gradRpb, drpb);
}

/** Signature of `na{1,2,3}d_forward`, typed per rank. */
export type NaForwardFn<R extends NaRank> = (
  output: Tensor,
  query: Tensor,
  key: Tensor,
  value: Tensor,
  relPosBias: Tensor | null,
  logsumexp: Tensor | null,
  kernelSize: DimsOrScalar<R>,
  dilation: DimsOrScalar<R>,
  isCausal: BoolDimsOrScalar<R>,
  attnScale: number | null,
  queryTileSize?: Dims<R>,
  keyTileSize?: Dims<R>,
  options?: FusedForwardOptions<R>,
) => void;

/** Signature of `na{1,2,3}d_backward`, typed per rank. */
export type NaBackwardFn<R extends NaRank> = (
  gradQuery: Tensor,
  gradKey: Tensor,
  gradValue: Tensor,
  query: Tensor,
  key: Tensor,
  value: Tensor,
  output: Tensor,
  gradOutput: Tensor,
  logsumexp: Tensor,
  kernelSize: DimsOrScalar<R>,
  dilation: DimsOrScalar<R>,
  isCausal: BoolDimsOrScalar<R>,
  attnScale: number | null,
  queryTileSize?: Dims<R>,
  keyTileSize?: Dims<R>,
  numSplitsKey?: DimsOrScalar<R>,
  computeDeltaWithTorch?: boolean,
  options?: FusedBackwardOptions<R>,
) => void;

function forwardFor<R extends NaRank>(rank: R): NaForwardFn<R> {
  return (output, query, key, value, relPosBias, logsumexp, kernelSize, dilation, isCausal, attnScale, queryTileSize, keyTileSize, options) =>
    fusedForward(rank, {
      output,
      query,
      key,
      value,
      rpb: relPosBias,
      logsumexp,
      kernelSize,
      dilation,
      isCausal,
      attnScale,
      queryTileSize,
      keyTileSize,
      stride: options?.stride,
    });
}

function backwardFor<R extends NaRank>(rank: R): NaBackwardFn<R> {
  return (
    gradQuery,
    gradKey,
    gradValue,
    query,
    key,
    value,
    output,
    gradOutput,
    logsumexp,
    kernelSize,
    dilation,
    isCausal,
    attnScale,
    queryTileSize,
    keyTileSize,
    numSplitsKey,
    computeDeltaWithTorch,
    options,
  ) =>
    fusedBackward(rank, {
      gradQuery,
      gradKey,
      gradValue,
      query,
      key,
      value,
      output,
      gradOutput,
      logsumexp,
      kernelSize,
      dilation,
      isCausal,
      attnScale,
      queryTileSize,
      keyTileSize,
      numSplitsKey,
      computeDeltaWithTorch,
      stride: options?.stride,
      rpb: options?.relPosBias,
      gradRpb: options?.gradRelPosBias,
    });
}

/**
 * 1-D fused forward, NATTEN's `na1d_forward`: q/k/v/output `[B, L, H, D]` (heads-last), logsumexp
 * `[B, L, H]` float32 or null, rpb `[H, 2K-1]` or null. `attnScale` null means `head_dim^-0.5`; an
 * explicit value (even 0) is used as given. Outputs are written in place.
 */
export const na1dForward: NaForwardFn<1> = forwardFor(1);
/** 2-D fused forward, NATTEN's `na2d_forward`: tensors `[B, X, Y, H, D]`; see {@link na1dForward}. */
export const na2dForward: NaForwardFn<2> = forwardFor(2);
/** 3-D fused forward, NATTEN's `na3d_forward`: tensors `[B, X, Y, Z, H, D]`; see {@link na1dForward}. */
export const na3dForward: NaForwardFn<3> = forwardFor(3);

/**
 * 1-D fused backward, NATTEN's `na1d_backward`: writes grad_query, grad_key and grad_value in place
 * from the forward's output and logsumexp (spec §7.2). `options.relPosBias` / `options.gradRelPosBias`
 * go beyond NATTEN: the gradient of the bias is written (overwritten, not accumulated).
 */
export const na1dBackward: NaBackwardFn<1> = backwardFor(1);
/** 2-D fused backward, NATTEN's `na2d_backward`; see {@link na1dBackward}. */
export const na2dBackward: NaBackwardFn<2> = backwardFor(2);
/** 3-D fused backward, NATTEN's `na3d_backward`; see {@link na1dBackward}. */
export const na3dBackward: NaBackwardFn<3> = backwardFor(3);
