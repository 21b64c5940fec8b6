import type { NaRank } from './tuples.ts';
import { product } from './tuples.ts';

/**
 * FLOP counts as NATTEN v0.17.5 counts them (spec §8): only the two GEMM-like contractions,
 * every query charged the full P = prod(K) slots (causal, dilation and borders do not change it).
 */
export interface FlopProblem {
  readonly batch: number;
  readonly heads: number;
  readonly spatial: readonly number[];
  readonly dim: number;
  /** Value head dim (defaults to dim). */
  readonly dimV?: number;
  readonly kernelSize: readonly number[];
}

export function naQkFlops(p: FlopProblem): number {
  return 2 * p.batch * p.heads * product(p.spatial) * product(p.kernelSize) * p.dim;
}

export function naAvFlops(p: FlopProblem): number {
  return 2 * p.batch * p.heads * product(p.spatial) * product(p.kernelSize) * (p.dimV ?? p.dim);
}

/** Fused forward FLOPs = QK + AV (= 4 B H N P D when dimV == dim). */
export function fnaFlops(p: FlopProblem): number {
  return naQkFlops(p) + naAvFlops(p);
}

/** Multiply-accumulates, half of the FLOPs. */
export function fnaMacs(p: FlopProblem): number {
  return fnaFlops(p) / 2;
}

/** Useful backward FLOPs (5 GEMM-like contractions: dP, dV, dQ, dK, plus the recomputed S) = 2.5x forward. */
export function fnaBackwardFlops(p: FlopProblem): number {
  return 2.5 * fnaFlops(p);
}

export function rankOf(p: FlopProblem): NaRank {
  return p.spatial.length as NaRank;
}
