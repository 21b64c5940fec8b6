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

