/**
 * Shared plumbing of the CPU kernels: rank-3 padded window tables, and reading/writing tensors as f64.
 *
 * Every kernel works on three spatial axes. A rank-1 or rank-2 problem is padded with leading unit
 * axes (length 1, kernel 1, dilation 1). Because every layout is row-major, a padded tensor has the
 * same memory as the original: `[B, L, H, D]` is `[B, 1, 1, L, H, D]`, the rpb `[H, 2K-1]` is
 * `[H, 1, 1, 2K-1]`, and the slot index `(t0*K1 + t1)*K2 + t2` is unchanged.
 */
import {
  type AxisTables,
  buildTables,
  dataMatchesDType,
  floatToHalfBits,
  formatShape,
  isNaRank,
  type NaParams,
  type NaRank,
  NattenArgumentError,
  numel,
  type Tensor,
  toFloat64Values,
} from '@natten-web/core';

/** One spatial axis, with its per-coordinate window and inverse-window tables (original coordinates). */
export interface Axis {
  /** Extent L. */
  readonly length: number;
  /** Kernel size K (1 on padding axes). */
  readonly kernel: number;
  /** Dilation d: slot t holds key `start + t*d`, inverse queries step by d. */
  readonly dilation: number;
  /** Extent of the rpb along this axis, 2K-1. */
  readonly rpbExtent: number;
  readonly start: Int32Array;
  readonly count: Int32Array;
  readonly invFirst: Int32Array;
  readonly invEnd: Int32Array;
}

/** The three (padded) axes of a problem. */
export interface Geometry {
  readonly axes: readonly [Axis, Axis, Axis];
  /** Number of tokens N = L0*L1*L2. */
  readonly tokens: number;
  /** Number of slots per query P = K0*K1*K2. */
  readonly slots: number;
}

const UNIT_AXIS: Axis = {
  length: 1,
  kernel: 1,
  dilation: 1,
  rpbExtent: 1,
  start: Int32Array.of(0),
  count: Int32Array.of(1),
  invFirst: Int32Array.of(0),
  invEnd: Int32Array.of(1),
};

function toAxis(t: AxisTables): Axis {
  return {
    length: t.params.length,
    kernel: t.params.kernelSize,
    dilation: t.params.dilation,
    rpbExtent: 2 * t.params.kernelSize - 1,
    start: t.start,
    count: t.count,
    invFirst: t.invFirst,
    invEnd: t.invEnd,
  };
}

/** Build the padded three-axis geometry from validated parameters and spatial extents. */
export function buildGeometry(params: NaParams, spatial: readonly number[]): Geometry {
  const tables = buildTables(params, spatial).map(toAxis);
  while (tables.length < 3) tables.unshift(UNIT_AXIS);
  const [a0, a1, a2] = tables as [Axis, Axis, Axis];
  return {
    axes: [a0, a1, a2],
    tokens: a0.length * a1.length * a2.length,
    slots: a0.kernel * a1.kernel * a2.kernel,
  };
}

/**
 * Check that a tensor's data array matches its dtype and shape. Core's validators check shapes and
 * dtypes, not the data itself; a short or mistyped array would silently read `undefined` here.
 */
export function checkData(op: string, name: string, t: Tensor): void {
  if (!dataMatchesDType(t.data, t.dtype)) {
    const got = (t.data as { constructor?: { name?: string } } | undefined)?.constructor?.name ?? typeof t.data;
    throw new NattenArgumentError(
      `${op}: ${name} has dtype ${t.dtype} but its data is a ${got}; float16 data is a Uint16Array of half bits, float32 a Float32Array, float64 a Float64Array`,
    );
  }
  const n = numel(t.shape);
  if (t.data.length !== n) {
    throw new NattenArgumentError(
      `${op}: ${name} has ${t.data.length} data elements but its shape ${formatShape(t.shape)} needs ${n}`,
    );
  }
}

/** Check the data of every tensor given (undefined/null entries are skipped). */
export function checkAllData(op: string, tensors: Record<string, Tensor | null | undefined>): void {
  for (const [name, t] of Object.entries(tensors)) if (t) checkData(op, name, t);
}

/**
 * A tensor's values as f64. A float64 tensor is returned without a copy: kernels never write to an
 * input array, and they write their outputs only after all reads, so aliasing is harmless.
 */
export function readValues(t: Tensor): Float64Array {
  if (t.dtype === 'float64') return t.data as Float64Array;
  return toFloat64Values(t);
}

/** Write f64 values into a tensor's data, rounding to its dtype (f32 and f16 round to nearest even). */
export function writeValues(t: Tensor, values: Float64Array): void {
  switch (t.dtype) {
    case 'float64':
      (t.data as Float64Array).set(values);
      return;
    case 'float32':
      (t.data as Float32Array).set(values);
      return;
    case 'float16':
      (t.data as Uint16Array).set(floatToHalfBits(values));
      return;
  }
}

/** Reject a rank other than 1, 2 or 3 (a JavaScript caller can pass anything). */
export function checkRank(family: string, rank: unknown): asserts rank is NaRank {
  if (!isNaRank(rank)) {
    throw new NattenArgumentError(`cpu ${family}: rank=${String(rank)} must be 1, 2 or 3 (the number of spatial axes)`);
  }
}
