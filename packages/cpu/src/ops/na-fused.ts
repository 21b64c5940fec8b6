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
  type FusedProblem,
  type NaRank,
  opName,
  type Tensor,
} from '@natten-web/core';
import { axpy, buildGeometry, checkAllData, checkRank, dot, type Geometry, neighborList, readValues, writeValues } from '../common.ts';

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

/** The sizes and f64 inputs both fused passes read; query head h reads key/value head floor(h / G). */
interface AttentionInputs {
  readonly geo: Geometry;
  /** Tokens, batch, query heads, key/value heads, GQA group size, head dims of q/k and v. */
  readonly N: number;
  readonly B: number;
  readonly H: number;
  readonly Hkv: number;
  readonly G: number;
  readonly D: number;
  readonly Dv: number;
  readonly scale: number;
  readonly q: Float64Array;
  readonly k: Float64Array;
  readonly v: Float64Array;
  readonly rpb: Float64Array | null;
}

function attentionInputs(
  p: FusedProblem,
  args: { readonly query: Tensor; readonly key: Tensor; readonly value: Tensor; readonly rpb?: Tensor | null | undefined },
): AttentionInputs {
  const geo = buildGeometry(p.params, p.spatial);
  return {
    geo,
    N: geo.tokens,
    B: p.batch,
    H: p.heads,
    Hkv: p.headsKv,
    G: p.heads / p.headsKv,
    D: p.dim,
    Dv: p.dimV,
    scale: p.scale,
    q: readValues(args.query),
    k: readValues(args.key),
    v: readValues(args.value),
    rpb: args.rpb ? readValues(args.rpb) : null,
  };
}

/** The attention logit `S = scale * q.k (+ rpb[r])` of the query row at `qOff` and the key row at `kOff`. */
function logit(a: AttentionInputs, qOff: number, kOff: number, r: number): number {
  const s = a.scale * dot(a.q, qOff, a.k, kOff, a.D);
  return a.rpb ? s + (a.rpb[r] as number) : s;
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
  const a = attentionInputs(p, args);
  const { geo, N, B, H, Hkv, G, D, Dv, v } = a;
  const out = new Float64Array(B * N * H * Dv);
  const lse = new Float64Array(B * N * H);
  const logits = new Float64Array(geo.slots);
  const win = neighborList(geo, 'window');
  const { tokens, bias } = win;

  for (let b = 0; b < B; b++) {
    for (let xi = 0; xi < N; xi++) {
      const n = win.load(xi);
      for (let h = 0; h < H; h++) {
        const hk = Math.floor(h / G);
        const row = (b * N + xi) * H + h;
        const qOff = row * D;
        const hBias = h * geo.biasSize;
        let m = Number.NEGATIVE_INFINITY;
        for (let i = 0; i < n; i++) {
          const s = logit(a, qOff, ((b * N + (tokens[i] as number)) * Hkv + hk) * D, hBias + (bias[i] as number));
          logits[i] = s;
          if (s > m) m = s;
        }
        let sum = 0;
        for (let i = 0; i < n; i++) {
          const e = Math.exp((logits[i] as number) - m);
          logits[i] = e;
          sum += e;
        }
        const inv = 1 / sum;
        for (let i = 0; i < n; i++) {
          const vOff = ((b * N + (tokens[i] as number)) * Hkv + hk) * Dv;
          axpy(out, row * Dv, (logits[i] as number) * inv, v, vOff, Dv);
        }
        lse[row] = m + Math.log(sum);
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
  const a = attentionInputs(p, args);
  const { geo, N, B, H, Hkv, G, D, Dv, scale, q, k, v } = a;
  const o = readValues(args.output);
  const dO = readValues(args.gradOutput);
  const lse = readValues(args.logsumexp);
  const dq = new Float64Array(q.length);
  const dk = new Float64Array(k.length);
  const dv = new Float64Array(v.length);
  const drpb = args.gradRpb ? new Float64Array(args.gradRpb.data.length) : null;

  // delta_x = sum_c dO_x[c] * O_x[c], one value per (b, x, h).
  const delta = new Float64Array(B * N * H);
  for (let i = 0; i < delta.length; i++) delta[i] = dot(dO, i * Dv, o, i * Dv, Dv);

  // Pass A, per query: dQ (and d_rpb).
  const win = neighborList(geo, 'window');
  for (let b = 0; b < B; b++) {
    for (let xi = 0; xi < N; xi++) {
      const n = win.load(xi);
      for (let h = 0; h < H; h++) {
        const hk = Math.floor(h / G);
        const row = (b * N + xi) * H + h;
        const qOff = row * D;
        const oOff = row * Dv;
        const l = lse[row] as number;
        const dl = delta[row] as number;
        const hBias = h * geo.biasSize;
        for (let i = 0; i < n; i++) {
          const kvRow = (b * N + (win.tokens[i] as number)) * Hkv + hk;
          const kOff = kvRow * D;
          const r = hBias + (win.bias[i] as number);
          const prob = Math.exp(logit(a, qOff, kOff, r) - l);
          const ds = prob * (dot(dO, oOff, v, kvRow * Dv, Dv) - dl);
          axpy(dq, qOff, scale * ds, k, kOff, D);
          if (drpb) drpb[r] = (drpb[r] as number) + ds;
        }
      }
    }
  }

  // Pass B, per key: dK and dV over the inverse neighborhood, summed over the query heads of its GQA group.
  const inv = neighborList(geo, 'inverse');
  for (let b = 0; b < B; b++) {
    for (let ji = 0; ji < N; ji++) {
      const m = inv.load(ji);
      for (let hk = 0; hk < Hkv; hk++) {
        const kvRow = (b * N + ji) * Hkv + hk;
        const kOff = kvRow * D;
        const vOff = kvRow * Dv;
        for (let h = hk * G; h < (hk + 1) * G; h++) {
          const hBias = h * geo.biasSize;
          for (let i = 0; i < m; i++) {
            const row = (b * N + (inv.tokens[i] as number)) * H + h;
            const qOff = row * D;
            const oOff = row * Dv;
            const prob = Math.exp(logit(a, qOff, kOff, hBias + (inv.bias[i] as number)) - (lse[row] as number));
            const f = scale * prob * (dot(dO, oOff, v, vOff, Dv) - (delta[row] as number));
            axpy(dv, vOff, prob, dO, oOff, Dv);
            axpy(dk, kOff, f, q, qOff, D);
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
