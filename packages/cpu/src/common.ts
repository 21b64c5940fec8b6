/**
 * Shared plumbing of the CPU kernels: the rank-3 padded geometry and its neighbour lists (one walker
 * for every kernel's window and inverse-window loops), the f64 `dot`/`axpy` inner loops, and
 * reading/writing tensors as f64.
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

/**
 * Per-coordinate neighbour lists of one axis, stored flat: coordinate i owns entries
 * `first[i] .. first[i+1]-1`, each naming the other coordinate, the slot index along the axis and the
 * rpb index along the axis, `(j - x) / d + K - 1`.
 */
interface AxisLists {
  readonly first: Int32Array;
  readonly token: Int32Array;
  readonly slot: Int32Array;
  readonly bias: Int32Array;
  /** Length of the longest list. */
  readonly longest: number;
}

/** One spatial axis: its extents and its window and inverse-window lists (original coordinates). */
interface Axis {
  /** Extent L. */
  readonly length: number;
  /** Kernel size K (1 on padding axes). */
  readonly kernel: number;
  /** Extent of the rpb along this axis, 2K-1. */
  readonly rpbExtent: number;
  /** For query x: its valid slots t in increasing order, holding keys `start(x) + t*d`. */
  readonly window: AxisLists;
  /** For key j: the queries attending j (`invFirst(j)`, stepping by d, below `invEnd(j)`), with j's slot in each one's window. */
  readonly inverse: AxisLists;
}

/** The three (padded) axes of a problem. */
export interface Geometry {
  readonly axes: readonly [Axis, Axis, Axis];
  /** Number of tokens N = L0*L1*L2. */
  readonly tokens: number;
  /** Number of slots per query P = K0*K1*K2. */
  readonly slots: number;
  /** Number of rpb entries per head, (2K0-1)(2K1-1)(2K2-1). */
  readonly biasSize: number;
}

type AddEntry = (other: number, slot: number, bias: number) => void;

/** Collect the lists of coordinates `0..L-1`, each filled by `fill(i, add)` in list order. */
function collectLists(L: number, fill: (i: number, add: AddEntry) => void): AxisLists {
  const first = new Int32Array(L + 1);
  const token: number[] = [];
  const slot: number[] = [];
  const bias: number[] = [];
  const add: AddEntry = (other, t, r) => {
    token.push(other);
    slot.push(t);
    bias.push(r);
  };
  let longest = 0;
  for (let i = 0; i < L; i++) {
    first[i] = token.length;
    fill(i, add);
    longest = Math.max(longest, token.length - (first[i] as number));
  }
  first[L] = token.length;
  return { first, token: Int32Array.from(token), slot: Int32Array.from(slot), bias: Int32Array.from(bias), longest };
}

function toAxis(t: AxisTables): Axis {
  const { length, kernelSize: K, dilation: d } = t.params;
  const window = collectLists(length, (x, add) => {
    const s = t.start[x] as number;
    const c = t.count[x] as number;
    for (let u = 0; u < c; u++) {
      const j = s + u * d;
      add(j, u, (j - x) / d + K - 1);
    }
  });
  // The inverse ranges are exact: every x listed has j in its window, so no membership test is needed.
  const inverse = collectLists(length, (j, add) => {
    const e = t.invEnd[j] as number;
    for (let x = t.invFirst[j] as number; x < e; x += d) add(x, (j - (t.start[x] as number)) / d, (j - x) / d + K - 1);
  });
  return { length, kernel: K, rpbExtent: 2 * K - 1, window, inverse };
}

const UNIT_LISTS: AxisLists = {
  first: Int32Array.of(0, 1),
  token: Int32Array.of(0),
  slot: Int32Array.of(0),
  bias: Int32Array.of(0),
  longest: 1,
};
const UNIT_AXIS: Axis = { length: 1, kernel: 1, rpbExtent: 1, window: UNIT_LISTS, inverse: UNIT_LISTS };

/** Build the padded three-axis geometry from validated parameters and spatial extents. */
export function buildGeometry(params: NaParams, spatial: readonly number[]): Geometry {
  const tables = buildTables(params, spatial).map(toAxis);
  while (tables.length < 3) tables.unshift(UNIT_AXIS);
  const [a0, a1, a2] = tables as [Axis, Axis, Axis];
  return {
    axes: [a0, a1, a2],
    tokens: a0.length * a1.length * a2.length,
    slots: a0.kernel * a1.kernel * a2.kernel,
    biasSize: a0.rpbExtent * a1.rpbExtent * a2.rpbExtent,
  };
}

/**
 * The neighbours of one token at a time, flattened over the three axes in row-major order (the order
 * every kernel accumulates in). `load(i)` fills the first `n` entries and returns `n`; the arrays are
 * reused by the next `load`.
 */
export interface NeighborList {
  /** The other token: the key `n_t(x)` of a query's slot, or a query x attending a key. */
  readonly tokens: Int32Array;
  /** The slot t of the pair in the query's window, `(t0*K1 + t1)*K2 + t2`. */
  readonly slots: Int32Array;
  /** The pair's rpb index within one head, `(r0*R1 + r1)*R2 + r2` with `r = (j - x)/d + K - 1`. */
  readonly bias: Int32Array;
  load(i: number): number;
}

/**
 * Neighbour lists of a geometry: `'window'` lists a query's valid slots (NATTEN's PN/NN side),
 * `'inverse'` lists the queries attending a key (the IN side).
 */
export function neighborList(geo: Geometry, side: 'window' | 'inverse'): NeighborList {
  const [A0, A1, A2] = geo.axes;
  const [l0, l1, l2] = [A0[side], A1[side], A2[side]];
  const [L1, L2] = [A1.length, A2.length];
  const [K1, K2] = [A1.kernel, A2.kernel];
  const [R1, R2] = [A1.rpbExtent, A2.rpbExtent];
  const capacity = l0.longest * l1.longest * l2.longest;
  const tokens = new Int32Array(capacity);
  const slots = new Int32Array(capacity);
  const bias = new Int32Array(capacity);
  const load = (i: number): number => {
    const i2 = i % L2;
    const i01 = (i - i2) / L2;
    const i1 = i01 % L1;
    const i0 = (i01 - i1) / L1;
    const e0 = l0.first[i0 + 1] as number;
    const e1 = l1.first[i1 + 1] as number;
    const e2 = l2.first[i2 + 1] as number;
    let n = 0;
    for (let u0 = l0.first[i0] as number; u0 < e0; u0++) {
      const tok0 = (l0.token[u0] as number) * L1;
      const slot0 = (l0.slot[u0] as number) * K1;
      const bias0 = (l0.bias[u0] as number) * R1;
      for (let u1 = l1.first[i1] as number; u1 < e1; u1++) {
        const tok01 = (tok0 + (l1.token[u1] as number)) * L2;
        const slot01 = (slot0 + (l1.slot[u1] as number)) * K2;
        const bias01 = (bias0 + (l1.bias[u1] as number)) * R2;
        for (let u2 = l2.first[i2] as number; u2 < e2; u2++) {
          tokens[n] = tok01 + (l2.token[u2] as number);
          slots[n] = slot01 + (l2.slot[u2] as number);
          bias[n] = bias01 + (l2.bias[u2] as number);
          n++;
        }
      }
    }
    return n;
  };
  return { tokens, slots, bias, load };
}

/** `sum_c a[aOff + c] * b[bOff + c]` over c < n, accumulated in order in f64. */
export function dot(a: Float64Array, aOff: number, b: Float64Array, bOff: number, n: number): number {
  let acc = 0;
  for (let c = 0; c < n; c++) acc += (a[aOff + c] as number) * (b[bOff + c] as number);
  return acc;
}

/** `out[oOff + c] += w * x[xOff + c]` over c < n. */
export function axpy(out: Float64Array, oOff: number, w: number, x: Float64Array, xOff: number, n: number): void {
  for (let c = 0; c < n; c++) out[oOff + c] = (out[oOff + c] as number) + w * (x[xOff + c] as number);
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
