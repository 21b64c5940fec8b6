/**
 * Benchmark cases. `standard` is the set (for the NVIDIA machine); `quick` is small enough for a
 * software adapter (lavapipe) to finish in seconds. Each case runs per dtype and per pass.
 */
import { fnaBackwardFlops, fnaFlops, type NaRank, product } from '@natten-web/core';

export type BenchDType = 'float16' | 'float32';
export type BenchPass = 'forward' | 'forward+backward';
export type CaseSetName = 'quick' | 'standard';

export interface BenchCase {
  /** Unique within its set; also the key torch results are matched on. */
  readonly name: string;
  readonly rank: NaRank;
  readonly spatial: readonly number[];
  readonly kernelSize: readonly number[];
  readonly dilation: readonly number[];
  readonly isCausal: readonly boolean[];
  readonly batch: number;
  readonly heads: number;
  readonly dim: number;
  readonly dtypes: readonly BenchDType[];
  readonly passes: readonly BenchPass[];
}

/** One measurement: a case at one dtype and one pass. */
export interface BenchItem {
  readonly case: BenchCase;
  readonly dtype: BenchDType;
  readonly pass: BenchPass;
}

const BOTH_DTYPES: readonly BenchDType[] = ['float16', 'float32'];
const BOTH_PASSES: readonly BenchPass[] = ['forward', 'forward+backward'];

interface CaseInput {
  readonly name: string;
  readonly spatial: readonly number[];
  readonly kernelSize: number | readonly number[];
  readonly dilation?: number;
  readonly causal?: boolean;
  readonly heads?: number;
  readonly dim?: number;
  readonly dtypes?: readonly BenchDType[];
}

function makeCase(c: CaseInput): BenchCase {
  const rank = c.spatial.length as NaRank;
  const axes = Array.from({ length: rank }, () => 0);
  return {
    name: c.name,
    rank,
    spatial: [...c.spatial],
    kernelSize: typeof c.kernelSize === 'number' ? axes.map(() => c.kernelSize as number) : [...c.kernelSize],
    dilation: axes.map(() => c.dilation ?? 1),
    isCausal: axes.map(() => c.causal ?? false),
    batch: 1,
    heads: c.heads ?? 8,
    dim: c.dim ?? 64,
    dtypes: c.dtypes ?? BOTH_DTYPES,
    passes: BOTH_PASSES,
  };
}

/** The standard set: B=1, H=8, d=64 unless stated; each f16 and f32, forward and forward+backward. */
export const STANDARD_CASES: readonly BenchCase[] = [
  makeCase({ name: '1d-L4096-K127', spatial: [4096], kernelSize: 127 }),
  makeCase({ name: '1d-L32768-K2047-causal', spatial: [32768], kernelSize: 2047, causal: true }),
  makeCase({ name: '2d-128x128-K7', spatial: [128, 128], kernelSize: 7 }),
  makeCase({ name: '2d-128x128-K13-d2', spatial: [128, 128], kernelSize: 13, dilation: 2 }),
  makeCase({ name: '2d-256x256-K15-H16', spatial: [256, 256], kernelSize: 15, heads: 16 }),
  makeCase({ name: '3d-16x32x32-K3x7x7', spatial: [16, 32, 32], kernelSize: [3, 7, 7] }),
  // NATTEN's FLUX-like problem (f16 only).
  makeCase({ name: '2d-256x256-K80-H24-d128-flux', spatial: [256, 256], kernelSize: 80, heads: 24, dim: 128, dtypes: ['float16'] }),
];

/**
 * Small problems of each rank (causal, dilation), for lavapipe: 8 measurements. Pipeline compiles dominate there
 * (minutes on a busy 2-core machine), so each case runs only the dtypes and passes listed.
 */
export const QUICK_CASES: readonly BenchCase[] = [
  makeCase({ name: 'q-1d-L512-K63-causal', spatial: [512], kernelSize: 63, causal: true, heads: 2, dim: 32 }),
  makeCase({ name: 'q-2d-24x24-K5-d2', spatial: [24, 24], kernelSize: 5, dilation: 2, heads: 2, dim: 32, dtypes: ['float32'] }),
  makeCase({ name: 'q-3d-6x8x8-K3x5x5', spatial: [6, 8, 8], kernelSize: [3, 5, 5], heads: 2, dim: 32, dtypes: ['float16'] }),
];

export const CASE_SETS: Readonly<Record<CaseSetName, readonly BenchCase[]>> = {
  quick: QUICK_CASES,
  standard: STANDARD_CASES,
};

/** Every (case, dtype, pass) of a set whose name contains `filter` (comma-separated alternatives; all when undefined), in set order. */
export function expandCases(cases: readonly BenchCase[], filter?: string, only?: BenchDType): BenchItem[] {
  const out: BenchItem[] = [];
  for (const c of cases) {
    if (filter !== undefined && !filter.split(',').some((f) => c.name.includes(f))) continue;
    for (const dtype of c.dtypes) {
      if (only !== undefined && dtype !== only) continue;
      for (const pass of c.passes) out.push({ case: c, dtype, pass });
    }
  }
  return out;
}

/** Tokens per batch element. */
export function tokens(c: BenchCase): number {
  return product(c.spatial);
}

/**
 * Useful NA FLOPs (core's `fnaFlops`, NATTEN's count: every query charged the full window). The backward is
 * `fnaBackwardFlops` (2.5x forward), so forward+backward is 3.5x forward.
 */
export function itemFlops(c: BenchCase, pass: BenchPass): number {
  const p = { batch: c.batch, heads: c.heads, spatial: c.spatial, dim: c.dim, kernelSize: c.kernelSize };
  return pass === 'forward' ? fnaFlops(p) : fnaFlops(p) + fnaBackwardFlops(p);
}

export function bytesOf(dtype: BenchDType): number {
  return dtype === 'float16' ? 2 : 4;
}

/**
 * The byte floor: every B x N x H x d tensor read or written exactly once. Forward: q, k, v read, o written
 * (4 tensors). Forward+backward: that plus the backward's q, k, v, o, dO read and dq, dk, dv written (8 more).
 * The f32 logsumexp (d times smaller) is left out.
 */
export function byteFloor(c: BenchCase, dtype: BenchDType, pass: BenchPass): number {
  const tensorBytes = c.batch * tokens(c) * c.heads * c.dim * bytesOf(dtype);
  return (pass === 'forward' ? 4 : 12) * tensorBytes;
}

/** Short human label: `2-D 128x128 K=7 d=2 causal H=8 D=64`. */
export function caseLabel(c: BenchCase): string {
  const ks = c.kernelSize.every((k) => k === c.kernelSize[0]) ? String(c.kernelSize[0]) : `(${c.kernelSize.join(',')})`;
  const dil = c.dilation.some((d) => d !== 1) ? ` dil=${c.dilation.every((d) => d === c.dilation[0]) ? c.dilation[0] : c.dilation.join(',')}` : '';
  const causal = c.isCausal.some((x) => x) ? ' causal' : '';
  const b = c.batch !== 1 ? ` B=${c.batch}` : '';
  return `${c.rank}-D ${c.spatial.join('x')} K=${ks}${dil}${causal}${b} H=${c.heads} d=${c.dim}`;
}

/** The problem list `bench/baselines/torch_na.py` reads. */
export interface TorchProblem {
  readonly name: string;
  readonly spatial: readonly number[];
  readonly kernelSize: readonly number[];
  readonly dilation: readonly number[];
  readonly isCausal: readonly boolean[];
  readonly batch: number;
  readonly heads: number;
  readonly dim: number;
  readonly dtype: BenchDType;
  readonly backward: boolean;
}

export function torchProblems(items: readonly BenchItem[]): TorchProblem[] {
  return items.map(({ case: c, dtype, pass }) => ({
    name: c.name,
    spatial: c.spatial,
    kernelSize: c.kernelSize,
    dilation: c.dilation,
    isCausal: c.isCausal,
    batch: c.batch,
    heads: c.heads,
    dim: c.dim,
    dtype,
    backward: pass === 'forward+backward',
  }));
}
