import type { DType } from './dtype.ts';
import { NattenArgumentError } from './errors.ts';
import { formatShape, type Tensor } from './tensor.ts';
import type { NaRank } from './tuples.ts';

/**
 * Fused ops are heads-last: `[B, *spatial, H, D]`. BMM (qk/av) ops are heads-first: `[B, H, *spatial, D]`.
 * The BMM attention tensor is `[B, H, *spatial, P (+ extra)]`; logsumexp is `[B, *spatial, H]` (float32).
 */
export interface HeadsLastShape {
  readonly batch: number;
  readonly spatial: readonly number[];
  readonly heads: number;
  readonly dim: number;
}

export type HeadsFirstShape = HeadsLastShape;

export function parseHeadsLast(op: string, name: string, shape: readonly number[], rank: NaRank): HeadsLastShape {
  if (shape.length !== rank + 3) {
    throw new NattenArgumentError(
      `${op}: ${name} must be a rank-${rank + 3} tensor [batch, ${spatialNames(rank)}, heads, head_dim] for ${rank}-D NA, got shape ${formatShape(shape)}`,
    );
  }
  const out = {
    batch: shape[0] as number,
    spatial: shape.slice(1, 1 + rank),
    heads: shape[rank + 1] as number,
    dim: shape[rank + 2] as number,
  };
  checkPositive(op, name, shape);
  return out;
}

export function parseHeadsFirst(op: string, name: string, shape: readonly number[], rank: NaRank): HeadsFirstShape {
  if (shape.length !== rank + 3) {
    throw new NattenArgumentError(
      `${op}: ${name} must be a rank-${rank + 3} tensor [batch, heads, ${spatialNames(rank)}, head_dim] for ${rank}-D NA, got shape ${formatShape(shape)}`,
    );
  }
  checkPositive(op, name, shape);
  return {
    batch: shape[0] as number,
    heads: shape[1] as number,
    spatial: shape.slice(2, 2 + rank),
    dim: shape[rank + 2] as number,
  };
}

function checkPositive(op: string, name: string, shape: readonly number[]): void {
  shape.forEach((s, i) => {
    if (!(s >= 1)) {
      throw new NattenArgumentError(`${op}: ${name} has an empty dimension ${i} (shape ${formatShape(shape)}); every extent must be >= 1`);
    }
  });
}

export function spatialNames(rank: NaRank): string {
  return rank === 1 ? 'length' : rank === 2 ? 'height, width' : 'depth, height, width';
}

export function headsLastShape(s: HeadsLastShape): number[] {
  return [s.batch, ...s.spatial, s.heads, s.dim];
}

export function headsFirstShape(s: HeadsFirstShape): number[] {
  return [s.batch, s.heads, ...s.spatial, s.dim];
}

export function lseShape(batch: number, spatial: readonly number[], heads: number): number[] {
  return [batch, ...spatial, heads];
}

export function attnShape(batch: number, heads: number, spatial: readonly number[], slots: number): number[] {
  return [batch, heads, ...spatial, slots];
}

/** Permute heads-last [B, *sp, H, D] <-> heads-first [B, H, *sp, D]. Works for any dtype. */
export function toHeadsFirst<D extends DType>(t: Tensor<D>, rank: NaRank): Tensor<D> {
  return permuteHeads(t, rank, true);
}

export function toHeadsLast<D extends DType>(t: Tensor<D>, rank: NaRank): Tensor<D> {
  return permuteHeads(t, rank, false);
}

function permuteHeads<D extends DType>(t: Tensor<D>, rank: NaRank, toFirst: boolean): Tensor<D> {
  const shape = t.shape;
  const B = shape[0] as number;
  const N = shape.slice(toFirst ? 1 : 2, (toFirst ? 1 : 2) + rank).reduce((a, b) => a * b, 1);
  const H = (toFirst ? shape[rank + 1] : shape[1]) as number;
  const D = shape[rank + 2] as number;
  const src = t.data;
  const dst = new (src.constructor as new (n: number) => typeof src)(src.length);
  for (let b = 0; b < B; b++) {
    for (let n = 0; n < N; n++) {
      for (let h = 0; h < H; h++) {
        const last = ((b * N + n) * H + h) * D;
        const first = ((b * H + h) * N + n) * D;
        const from = toFirst ? last : first;
        const to = toFirst ? first : last;
        for (let c = 0; c < D; c++) dst[to + c] = src[from + c] as number;
      }
    }
  }
  const sp = shape.slice(toFirst ? 1 : 2, (toFirst ? 1 : 2) + rank);
  const newShape = toFirst ? [B, H, ...sp, D] : [B, ...sp, H, D];
  return { shape: newShape, dtype: t.dtype, data: dst };
}
