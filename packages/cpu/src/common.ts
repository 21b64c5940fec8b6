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
 * The inverse-neighborhood gather (NATTEN's "IN" kernel) shared by the BMM backwards: for every key j,
 * `out[bh, j, :] += sum over the queries x attending j of weights[bh, x, t(x, j)] * rows[bh, x, :]`, where
 * `t(x, j)` is j's slot in x's window (per axis `(j - start(x)) / d`, row-major). `weights` is [BH, N, P];
 * `rows` and `out` are [BH, N, D]. The inverse ranges are exact, so no membership test is needed.
 */
export function gatherInverse(geo: Geometry, bhCount: number, weights: Float64Array, rows: Float64Array, out: Float64Array, D: number): void {
  const [A0, A1, A2] = geo.axes;
  const L0 = A0.length;
  const L1 = A1.length;
  const L2 = A2.length;
  const K1 = A1.kernel;
  const K2 = A2.kernel;
  const d0 = A0.dilation;
  const d1 = A1.dilation;
  const d2 = A2.dilation;
  const N = geo.tokens;
  const P = geo.slots;
  for (let bh = 0; bh < bhCount; bh++) {
    for (let j0 = 0; j0 < L0; j0++) {
      const f0 = A0.invFirst[j0] as number;
      const e0 = A0.invEnd[j0] as number;
      for (let j1 = 0; j1 < L1; j1++) {
        const f1 = A1.invFirst[j1] as number;
        const e1 = A1.invEnd[j1] as number;
        for (let j2 = 0; j2 < L2; j2++) {
          const f2 = A2.invFirst[j2] as number;
          const e2 = A2.invEnd[j2] as number;
          const jOff = (bh * N + (j0 * L1 + j1) * L2 + j2) * D;
          for (let x0 = f0; x0 < e0; x0 += d0) {
            const t0 = (j0 - (A0.start[x0] as number)) / d0;
            for (let x1 = f1; x1 < e1; x1 += d1) {
              const t01 = t0 * K1 + (j1 - (A1.start[x1] as number)) / d1;
              for (let x2 = f2; x2 < e2; x2 += d2) {
                const t = t01 * K2 + (j2 - (A2.start[x2] as number)) / d2;
                const xi = (x0 * L1 + x1) * L2 + x2;
                const w = weights[(bh * N + xi) * P + t] as number;
                const xOff = (bh * N + xi) * D;
                for (let c = 0; c < D; c++) out[jOff + c] = (out[jOff + c] as number) + w * (rows[xOff + c] as number);
              }
            }
          }
        }
      }
    }
  }
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
