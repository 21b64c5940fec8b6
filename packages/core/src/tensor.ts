import { allocate, dataMatchesDType, type DataArray, type DataArrayFor, type DType, fromFloat64, toFloat64 } from './dtype.ts';
import { NattenArgumentError } from './errors.ts';

/** A dense, contiguous, row-major host tensor. */
export interface Tensor<D extends DType = DType> {
  readonly shape: readonly number[];
  readonly dtype: D;
  readonly data: DataArrayFor<D>;
}

export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const s of shape) n *= s;
  return n;
}

export function formatShape(shape: readonly number[]): string {
  return `[${shape.join(', ')}]`;
}

function checkShape(shape: readonly number[], what: string): void {
  for (let i = 0; i < shape.length; i++) {
    const s = shape[i] as number;
    if (!Number.isInteger(s) || s < 0) {
      throw new NattenArgumentError(`${what}: shape[${i}]=${s} must be a non-negative integer (shape ${formatShape(shape)})`);
    }
  }
}

/** Wrap (or allocate) data as a tensor. Data is adopted, not copied. */
export function tensor<D extends DType>(shape: readonly number[], dtype: D, data?: DataArrayFor<D>): Tensor<D> {
  checkShape(shape, 'tensor');
  const n = numel(shape);
  if (data === undefined) return { shape: [...shape], dtype, data: allocate(dtype, n) };
  if (!dataMatchesDType(data, dtype)) {
    throw new NattenArgumentError(
      `tensor: data is a ${data.constructor.name} but dtype '${dtype}' needs a ${dtype === 'float16' ? 'Uint16Array of half bits' : dtype === 'float32' ? 'Float32Array' : 'Float64Array'}`,
    );
  }
  if (data.length !== n) {
    throw new NattenArgumentError(`tensor: data has ${data.length} elements but shape ${formatShape(shape)} needs ${n}`);
  }
  return { shape: [...shape], dtype, data };
}

export function zeros<D extends DType>(shape: readonly number[], dtype: D): Tensor<D> {
  return tensor(shape, dtype);
}

/** A tensor from plain numbers (rounded to the dtype). */
export function fromValues<D extends DType>(shape: readonly number[], dtype: D, values: ArrayLike<number>): Tensor<D> {
  return tensor(shape, dtype, fromFloat64(values, dtype));
}

/** Values of any tensor as f64. */
export function toFloat64Values(t: Tensor): Float64Array {
  return toFloat64(t.data as DataArray, t.dtype);
}

export function cast<D extends DType>(t: Tensor, dtype: D): Tensor<D> {
  if ((t.dtype as DType) === dtype) return tensor(t.shape, dtype, (t.data as DataArray).slice() as DataArrayFor<D>);
  return fromValues(t.shape, dtype, toFloat64Values(t));
}

export function cloneTensor<D extends DType>(t: Tensor<D>): Tensor<D> {
  return tensor(t.shape, t.dtype, (t.data as DataArray).slice() as DataArrayFor<D>);
}

/** mulberry32: small, fast, seedable PRNG returning floats in [0, 1). */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Standard normal samples (Box-Muller) from a seed, times `scale`. */
export function randn<D extends DType>(shape: readonly number[], dtype: D, seed = 0, scale = 1): Tensor<D> {
  const n = numel(shape);
  const rand = seededRandom(seed);
  const values = new Float64Array(n);
  for (let i = 0; i < n; i += 2) {
    const u1 = Math.max(rand(), 1e-12);
    const u2 = rand();
    const r = Math.sqrt(-2 * Math.log(u1)) * scale;
    values[i] = r * Math.cos(2 * Math.PI * u2);
    if (i + 1 < n) values[i + 1] = r * Math.sin(2 * Math.PI * u2);
  }
  return fromValues(shape, dtype, values);
}

/** Uniform samples in [lo, hi). */
export function randu<D extends DType>(shape: readonly number[], dtype: D, seed = 0, lo = -1, hi = 1): Tensor<D> {
  const n = numel(shape);
  const rand = seededRandom(seed);
  const values = new Float64Array(n);
  for (let i = 0; i < n; i++) values[i] = lo + (hi - lo) * rand();
  return fromValues(shape, dtype, values);
}

export interface Comparison {
  /** max |actual - expected| over finite pairs. */
  maxAbs: number;
  /** max |actual - expected| / max(|expected|, 1e-6). */
  maxRel: number;
  /** Normalized mean squared error: sum (a-e)^2 / sum e^2 (0 when both are all zero). */
  nmse: number;
  worstIndex: number;
  worstExpected: number;
  worstActual: number;
  /** Count of positions where exactly one side is NaN/Inf, or they are non-finite and differ. */
  nonFiniteMismatches: number;
  /** Count of NaN/Inf values in `actual`. */
  actualNonFinite: number;
}

/** Compare two equally-shaped tensors (or raw value arrays). Two NaNs compare equal. */
export function compareValues(actual: ArrayLike<number>, expected: ArrayLike<number>): Comparison {
  if (actual.length !== expected.length) {
    throw new NattenArgumentError(`compare: actual has ${actual.length} elements, expected has ${expected.length}`);
  }
  let maxAbs = 0;
  let maxRel = 0;
  let num = 0;
  let den = 0;
  let worstIndex = -1;
  let nonFiniteMismatches = 0;
  let actualNonFinite = 0;
  for (let i = 0; i < actual.length; i++) {
    const a = actual[i] as number;
    const e = expected[i] as number;
    if (!Number.isFinite(a)) actualNonFinite++;
    if (!Number.isFinite(a) || !Number.isFinite(e)) {
      const same = (Number.isNaN(a) && Number.isNaN(e)) || a === e;
      if (!same) nonFiniteMismatches++;
      continue;
    }
    const diff = Math.abs(a - e);
    num += diff * diff;
    den += e * e;
    if (diff > maxAbs || worstIndex < 0) {
      if (diff > maxAbs) maxAbs = diff;
      worstIndex = i;
    }
    const rel = diff / Math.max(Math.abs(e), 1e-6);
    if (rel > maxRel) maxRel = rel;
  }
  const nmse = den === 0 ? (num === 0 ? 0 : Number.POSITIVE_INFINITY) : num / den;
  return {
    maxAbs,
    maxRel,
    nmse,
    worstIndex,
    worstExpected: worstIndex >= 0 ? (expected[worstIndex] as number) : Number.NaN,
    worstActual: worstIndex >= 0 ? (actual[worstIndex] as number) : Number.NaN,
    nonFiniteMismatches,
    actualNonFinite,
  };
}

export function compareTensors(actual: Tensor, expected: Tensor): Comparison {
  if (actual.shape.length !== expected.shape.length || actual.shape.some((s, i) => s !== expected.shape[i])) {
    throw new NattenArgumentError(
      `compare: shape mismatch, actual ${formatShape(actual.shape)} vs expected ${formatShape(expected.shape)}`,
    );
  }
  return compareValues(toFloat64Values(actual), toFloat64Values(expected));
}
