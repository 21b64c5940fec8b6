import { NattenArgumentError } from './errors.ts';
import { formatShape } from './tensor.ts';
import {
  type BoolDims,
  type Dims,
  type NaRank,
  normalizeBools,
  normalizeDims,
  product,
} from './tuples.ts';
import { type AxisParams, buildAxisTables, type AxisTables } from './window.ts';

/** Neighborhood parameters, normalized to per-axis tuples. */
export interface NaParams<R extends NaRank = NaRank> {
  readonly rank: R;
  readonly kernelSize: Dims<R>;
  readonly dilation: Dims<R>;
  readonly isCausal: BoolDims<R>;
  readonly stride: Dims<R>;
}

/** What the caller may pass: a number/boolean for every axis or a per-axis tuple. */
export interface NaParamsInput {
  readonly kernelSize: number | readonly number[];
  readonly dilation?: number | readonly number[] | undefined;
  readonly isCausal?: boolean | readonly boolean[] | undefined;
  readonly stride?: number | readonly number[] | undefined;
}

/**
 * Normalize and validate NA parameters against a spatial shape.
 * Rules (spec §2, §4): K >= 2, d >= 1, 1 <= s <= K, K * d <= L per axis.
 * Argument names follow NATTEN (`kernel_size`, `dilation`, `is_causal`, `stride`).
 */
export function normalizeParams<R extends NaRank>(
  op: string,
  rank: R,
  input: NaParamsInput,
  spatial: readonly number[],
): NaParams<R> {
  const kernelSize = normalizeDims(op, 'kernel_size', input.kernelSize, rank, 2);
  const dilation = normalizeDims(op, 'dilation', input.dilation ?? 1, rank, 1);
  const isCausal = normalizeBools(op, 'is_causal', input.isCausal ?? false, rank);
  const stride = normalizeDims(op, 'stride', input.stride ?? 1, rank, 1);
  if (spatial.length !== rank) {
    throw new NattenArgumentError(`${op}: expected ${rank} spatial extents, got ${formatShape(spatial)}`);
  }
  for (let a = 0; a < rank; a++) {
    const K = kernelSize[a] as number;
    const d = dilation[a] as number;
    const s = stride[a] as number;
    const L = spatial[a] as number;
    const label = (name: string): string => (rank === 1 ? name : `${name}[${a}]`);
    if (K * d > L) {
      throw new NattenArgumentError(
        `${op}: ${label('kernel_size')}=${K} times ${label('dilation')}=${d} exceeds input length ${L} along spatial axis ${a}; need kernel_size * dilation <= length`,
      );
    }
    if (s > K) {
      throw new NattenArgumentError(
        `${op}: ${label('stride')}=${s} is larger than ${label('kernel_size')}=${K}; stride must satisfy 1 <= stride <= kernel_size`,
      );
    }
  }
  return { rank, kernelSize, dilation, isCausal, stride };
}

export function axisParams(params: NaParams, spatial: readonly number[]): AxisParams[] {
  const out: AxisParams[] = [];
  for (let a = 0; a < params.rank; a++) {
    out.push({
      length: spatial[a] as number,
      kernelSize: params.kernelSize[a] as number,
      dilation: params.dilation[a] as number,
      causal: params.isCausal[a] as boolean,
      stride: params.stride[a] as number,
    });
  }
  return out;
}

export function buildTables(params: NaParams, spatial: readonly number[]): AxisTables[] {
  return axisParams(params, spatial).map(buildAxisTables);
}

/** Number of neighborhood slots per query, P = prod(K). */
export function numSlots(params: NaParams): number {
  return product(params.kernelSize);
}

export function anyCausal(params: NaParams): boolean {
  return params.isCausal.some((c) => c);
}

/** rpb shape: [H, 2K0-1, (2K1-1, (2K2-1))]. */
export function rpbShape(heads: number, params: NaParams): number[] {
  return [heads, ...params.kernelSize.map((k) => 2 * k - 1)];
}
