/**
 * Shape rules of dense (FMHA) attention, heads-last, shared by the host reference (natten-web) and the WebGPU
 * kernels (@natten-web/gpu): `attention`, `mergeAttentions` and the additional-KV path of `na{1,2,3}d`.
 */
import { NattenArgumentError } from './errors.ts';
import { formatShape } from './tensor.ts';

/** Dense heads-last problem sizes: q [B, S, H, D], k [B, Skv, Hkv, D], v [B, Skv, Hkv, Dv]. */
export interface DenseDims {
  readonly batch: number;
  readonly queries: number;
  readonly keys: number;
  readonly heads: number;
  readonly headsKv: number;
  readonly dim: number;
  readonly dimV: number;
}

/** Validate dense attention shapes (rank-4 heads-last, GQA allowed). `names` label the tensors in errors. */
export function denseDims(
  op: string,
  q: readonly number[],
  k: readonly number[],
  v: readonly number[],
  names: readonly [string, string, string] = ['query', 'key', 'value'],
): DenseDims {
  const [qn, kn, vn] = names;
  for (const [name, s] of [[qn, q], [kn, k], [vn, v]] as const) {
    if (s.length !== 4) {
      throw new NattenArgumentError(`${op}: ${name} must be a rank-4 tensor [batch, tokens, heads, head_dim], got shape ${formatShape(s)}`);
    }
    if (s.some((x) => !(x >= 1))) throw new NattenArgumentError(`${op}: ${name} has an empty dimension (shape ${formatShape(s)})`);
  }
  const [B, S, H, D] = q as [number, number, number, number];
  const [Bk, Skv, Hkv, Dk] = k as [number, number, number, number];
  const [Bv, Sv, Hv, Dv] = v as [number, number, number, number];
  if (Bk !== B || Bv !== B) {
    throw new NattenArgumentError(`${op}: batch sizes differ: ${qn} ${formatShape(q)}, ${kn} ${formatShape(k)}, ${vn} ${formatShape(v)}`);
  }
  if (Sv !== Skv) throw new NattenArgumentError(`${op}: ${kn} has ${Skv} tokens but ${vn} has ${Sv}; they must match`);
  if (Dk !== D) throw new NattenArgumentError(`${op}: ${qn} head_dim=${D} and ${kn} head_dim=${Dk} must match`);
  if (Hv !== Hkv) throw new NattenArgumentError(`${op}: ${kn} has ${Hkv} heads but ${vn} has ${Hv}; key and value heads must be equal`);
  if (H % Hkv !== 0) {
    throw new NattenArgumentError(`${op}: key/value heads must evenly divide query heads (GQA/MQA), got heads_q=${H}, heads_kv=${Hkv}`);
  }
  return { batch: B, queries: S, keys: Skv, heads: H, headsKv: Hkv, dim: D, dimV: Dv };
}


/** Check the varlen offsets (throws naming the argument and the rule); the sequence count, or 0 without varlen. */
export function checkVarlen(op: string, dims: DenseDims, cuQ: ArrayLike<number> | undefined, cuKv: ArrayLike<number> | undefined): number {
  if (cuQ === undefined && cuKv === undefined) return 0;
  if (cuQ === undefined || cuKv === undefined) {
    throw new NattenArgumentError(`${op}: ${cuQ === undefined ? 'cumulativeSeqlenKv was given without cumulativeSeqlenQ' : 'cumulativeSeqlenQ was given without cumulativeSeqlenKv'}; pass both or neither`);
  }
  if (dims.batch !== 1) throw new NattenArgumentError(`${op}: variable-length sequences are packed along the tokens, so batch must be 1, got ${dims.batch}`);
  if (cuQ.length !== cuKv.length) throw new NattenArgumentError(`${op}: cumulativeSeqlenQ has ${cuQ.length} entries but cumulativeSeqlenKv has ${cuKv.length}; both are n + 1 for n sequences`);
  if (cuQ.length < 2) throw new NattenArgumentError(`${op}: cumulative sequence lengths need at least 2 entries (0 and the total), got ${cuQ.length}`);
  for (const [name, cu, total, what] of [
    ['cumulativeSeqlenQ', cuQ, dims.queries, 'queries'],
    ['cumulativeSeqlenKv', cuKv, dims.keys, 'keys'],
  ] as const) {
    if (cu[0] !== 0) throw new NattenArgumentError(`${op}: ${name}[0] must be 0, got ${cu[0]}`);
    for (let s = 1; s < cu.length; s++) {
      const a = cu[s - 1] as number;
      const b = cu[s] as number;
      if (!Number.isInteger(b) || b < a) throw new NattenArgumentError(`${op}: ${name} must be non-decreasing integers; ${name}[${s}]=${b} after ${a}`);
    }
    if (cu[cu.length - 1] !== total) throw new NattenArgumentError(`${op}: ${name} ends at ${cu[cu.length - 1]} but there are ${total} ${what}`);
  }
  for (let s = 0; s + 1 < cuQ.length; s++) {
    const nq = (cuQ[s + 1] as number) - (cuQ[s] as number);
    const nk = (cuKv[s + 1] as number) - (cuKv[s] as number);
    if (nq > 0 && nk === 0) throw new NattenArgumentError(`${op}: sequence ${s} has ${nq} queries but no keys; a query needs at least one key`);
  }
  return cuQ.length - 1;
}
