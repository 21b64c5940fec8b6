/**
 * Dense (FMHA) attention, its backward, and the merge of partial attentions, computed on the host in
 * f64. They serve `attention`, `mergeAttentions` and the additional-KV path of `na{1,2,3}d` (spec §6,
 * §11) until a backend provides them.
 */
import { type DenseDims, denseDims } from '@natten-web/core';

export { type DenseDims, denseDims };

/** softmax(scale * q k^T) v per (b, h), with lse [B, S, H]. Causal is top-left aligned: query i sees keys j <= i. */
export function denseForward(
  p: DenseDims,
  q: Float64Array,
  k: Float64Array,
  v: Float64Array,
  scale: number,
  causal: boolean,
): { out: Float64Array; lse: Float64Array } {
  const { batch: B, queries: S, keys: N, heads: H, headsKv: Hkv, dim: D, dimV: Dv } = p;
  const G = H / Hkv;
  const out = new Float64Array(B * S * H * Dv);
  const lse = new Float64Array(B * S * H);
  const logits = new Float64Array(N);
  for (let b = 0; b < B; b++) {
    for (let i = 0; i < S; i++) {
      for (let h = 0; h < H; h++) {
        const hk = Math.floor(h / G);
        const qOff = ((b * S + i) * H + h) * D;
        const n = causal ? Math.min(i + 1, N) : N;
        let m = Number.NEGATIVE_INFINITY;
        for (let j = 0; j < n; j++) {
          const kOff = ((b * N + j) * Hkv + hk) * D;
          let dot = 0;
          for (let c = 0; c < D; c++) dot += (q[qOff + c] as number) * (k[kOff + c] as number);
          const s = scale * dot;
          logits[j] = s;
          if (s > m) m = s;
        }
        let sum = 0;
        for (let j = 0; j < n; j++) {
          const e = Math.exp((logits[j] as number) - m);
          logits[j] = e;
          sum += e;
        }
        const oOff = ((b * S + i) * H + h) * Dv;
        for (let j = 0; j < n; j++) {
          const w = (logits[j] as number) / sum;
          const vOff = ((b * N + j) * Hkv + hk) * Dv;
          for (let c = 0; c < Dv; c++) out[oOff + c] = (out[oOff + c] as number) + w * (v[vOff + c] as number);
        }
        lse[(b * S + i) * H + h] = m + Math.log(sum);
      }
    }
  }
  return { out, lse };
}

/**
 * Backward of dense attention from the (possibly merged) output and lse, spec §7.2 applied to a dense
 * key set: delta = dO.O, P = exp(scale q.k - lse), dS = P (dO.v - delta), dQ = scale dS k,
 * dK = scale dS^T q, dV = P^T dO (summed over each KV head's query heads).
 */
export function denseBackward(
  p: DenseDims,
  q: Float64Array,
  k: Float64Array,
  v: Float64Array,
  out: Float64Array,
  dOut: Float64Array,
  lse: Float64Array,
  scale: number,
  causal: boolean,
): { dq: Float64Array; dk: Float64Array; dv: Float64Array } {
  const { batch: B, queries: S, keys: N, heads: H, headsKv: Hkv, dim: D, dimV: Dv } = p;
  const G = H / Hkv;
  const dq = new Float64Array(B * S * H * D);
  const dk = new Float64Array(B * N * Hkv * D);
  const dv = new Float64Array(B * N * Hkv * Dv);
  for (let b = 0; b < B; b++) {
    for (let i = 0; i < S; i++) {
      for (let h = 0; h < H; h++) {
        const hk = Math.floor(h / G);
        const qOff = ((b * S + i) * H + h) * D;
        const oOff = ((b * S + i) * H + h) * Dv;
        let delta = 0;
        for (let c = 0; c < Dv; c++) delta += (dOut[oOff + c] as number) * (out[oOff + c] as number);
        const l = lse[(b * S + i) * H + h] as number;
        const n = causal ? Math.min(i + 1, N) : N;
        for (let j = 0; j < n; j++) {
          const kOff = ((b * N + j) * Hkv + hk) * D;
          const vOff = ((b * N + j) * Hkv + hk) * Dv;
          let dot = 0;
          for (let c = 0; c < D; c++) dot += (q[qOff + c] as number) * (k[kOff + c] as number);
          const prob = Math.exp(scale * dot - l);
          let dp = 0;
          for (let c = 0; c < Dv; c++) {
            dp += (dOut[oOff + c] as number) * (v[vOff + c] as number);
            dv[vOff + c] = (dv[vOff + c] as number) + prob * (dOut[oOff + c] as number);
          }
          const ds = prob * (dp - delta);
          for (let c = 0; c < D; c++) {
            dq[qOff + c] = (dq[qOff + c] as number) + scale * ds * (k[kOff + c] as number);
            dk[kOff + c] = (dk[kOff + c] as number) + scale * ds * (q[qOff + c] as number);
          }
        }
      }
    }
  }
  return { dq, dk, dv };
}

/**
 * Merge partial attentions over disjoint key sets (spec §11): folded left,
 * `O = O0 - sigmoid(l1 - l0) (O0 - O1)`, `l = l0 - log sigmoid(l0 - l1)` (= logaddexp), in f64.
 * `outputs[i]` has `rows * dimV` values, `lses[i]` has `rows`.
 */
export function mergeF64(outputs: readonly Float64Array[], lses: readonly Float64Array[], dimV: number): { out: Float64Array; lse: Float64Array } {
  const out = Float64Array.from(outputs[0] as Float64Array);
  const lse = Float64Array.from(lses[0] as Float64Array);
  const rows = lse.length;
  for (let m = 1; m < outputs.length; m++) {
    const o1 = outputs[m] as Float64Array;
    const l1s = lses[m] as Float64Array;
    for (let r = 0; r < rows; r++) {
      const l0 = lse[r] as number;
      const l1 = l1s[r] as number;
      const diff = l1 - l0;
      // sigmoid(diff), stable for both signs
      const w1 = diff >= 0 ? 1 / (1 + Math.exp(-diff)) : Math.exp(diff) / (1 + Math.exp(diff));
      const off = r * dimV;
      for (let c = 0; c < dimV; c++) {
        const a = out[off + c] as number;
        out[off + c] = a - w1 * (a - (o1[off + c] as number));
      }
      lse[r] = Math.max(l0, l1) + Math.log1p(Math.exp(-Math.abs(diff)));
    }
  }
  return { out, lse };
}
