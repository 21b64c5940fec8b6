/**
 * Neighborhood (window) math, one spatial axis at a time (spec §2, §7.5).
 *
 * Coordinates come in two systems: original token coordinates `x` in [0, L), and dilation-group
 * coordinates `x' = floor(x / d)` inside group `g = x mod d`, whose length is `n = ceil((L - g) / d)`.
 * Inside a group, NA is plain and undilated.
 */

/** The parameters of one spatial axis. */
export interface AxisParams {
  /** Token extent L along the axis. */
  readonly length: number;
  /** Kernel (window) size K >= 2. */
  readonly kernelSize: number;
  /** Dilation d >= 1. */
  readonly dilation: number;
  /** Causal along this axis: keys with coordinate <= the query's. */
  readonly causal: boolean;
  /** Stride s, 1 <= s <= K (post-v0.17 "generalized NA"); 1 gives seed semantics. */
  readonly stride: number;
}

/** Length of dilation group `g`: ceil((L - g) / d). */
export function groupLength(length: number, dilation: number, group: number): number {
  return Math.ceil((length - group) / dilation);
}

/** Left radius rl = floor(K/2). */
export function leftRadius(kernelSize: number): number {
  return Math.floor(kernelSize / 2);
}

/** Right radius rr = K - 1 - rl (odd K: rl; even K = 2r: r - 1). */
export function rightRadius(kernelSize: number): number {
  return kernelSize - 1 - Math.floor(kernelSize / 2);
}

/** Window start in group coordinates for query `i` of a group of length `n`. */
export function windowStartInGroup(i: number, n: number, kernelSize: number, causal: boolean, stride = 1): number {
  if (causal) {
    const leader = Math.min(Math.floor(i / stride) * stride + stride - 1, n - 1);
    return Math.max(leader - kernelSize + 1, 0);
  }
  const leader = Math.min(Math.floor(i / stride) * stride + Math.floor(stride / 2), n - 1);
  return Math.min(Math.max(leader - leftRadius(kernelSize), 0), n - kernelSize);
}

/** Number of valid slots (a prefix of the K slots) for query `i` whose window starts at `start`. */
export function validSlotsInGroup(i: number, start: number, kernelSize: number, causal: boolean): number {
  return causal ? Math.min(i - start + 1, kernelSize) : kernelSize;
}

/** The window of one query along one axis, in original coordinates. */
export interface AxisWindow {
  /** Original coordinate of the key in slot 0. Slot t holds key `start + t * dilation`. */
  readonly start: number;
  /** Valid slots are 0 .. count-1 (count < K only for causal axes near the start). */
  readonly count: number;
}

export function axisWindow(x: number, p: AxisParams): AxisWindow {
  const d = p.dilation;
  const g = x % d;
  const i = Math.floor(x / d);
  const n = groupLength(p.length, d, g);
  const s = windowStartInGroup(i, n, p.kernelSize, p.causal, p.stride);
  return { start: s * d + g, count: validSlotsInGroup(i, s, p.kernelSize, p.causal) };
}

/** The queries that attend to key `j` along one axis: `first, first + d, ... < end` (exact, no false members). */
export interface AxisInverse {
  readonly first: number;
  /** Exclusive end in original coordinates (the next member would be >= end). */
  readonly end: number;
}

export function inverseGroupRange(j: number, n: number, kernelSize: number, causal: boolean, stride = 1): [number, number] {
  const K = kernelSize;
  const s = stride;
  if (causal) {
    const endCausal = Math.min((Math.floor((j + K) / s) + (j + K >= n ? 1 : 0)) * s, n);
    return [j, endCausal];
  }
  const rl = leftRadius(K);
  const rr = rightRadius(K);
  const c = s - Math.floor(s / 2) - 1;
  const first = Math.floor(((j >= K ? 1 : 0) * (j - rr + c)) / s) * s;
  const end = j >= n - K ? n : Math.floor((j + rl + c + 1) / s) * s;
  return [first, Math.min(end, n)];
}

export function axisInverse(j: number, p: AxisParams): AxisInverse {
  const d = p.dilation;
  const g = j % d;
  const jj = Math.floor(j / d);
  const n = groupLength(p.length, d, g);
  const [first, end] = inverseGroupRange(jj, n, p.kernelSize, p.causal, p.stride);
  return { first: first * d + g, end: end * d + g };
}

/** Per-axis tables for every coordinate: window start/count and inverse first/end (original coordinates). */
export interface AxisTables {
  readonly params: AxisParams;
  readonly start: Int32Array;
  readonly count: Int32Array;
  readonly invFirst: Int32Array;
  readonly invEnd: Int32Array;
}

export function buildAxisTables(p: AxisParams): AxisTables {
  const L = p.length;
  const start = new Int32Array(L);
  const count = new Int32Array(L);
  const invFirst = new Int32Array(L);
  const invEnd = new Int32Array(L);
  for (let x = 0; x < L; x++) {
    const w = axisWindow(x, p);
    start[x] = w.start;
    count[x] = w.count;
    const inv = axisInverse(x, p);
    invFirst[x] = inv.first;
    invEnd[x] = inv.end;
  }
  return { params: p, start, count, invFirst, invEnd };
}

/**
 * Slot index of key `j` in query `x`'s window along one axis, or -1 if `j` is not a valid neighbor.
 */
export function slotOf(x: number, j: number, p: AxisParams): number {
  const d = p.dilation;
  if (((j - x) % d + d) % d !== 0) return -1;
  const w = axisWindow(x, p);
  const t = (j - w.start) / d;
  return t >= 0 && t < w.count ? t : -1;
}

/** Relative-position-bias index along one axis: (j - x) / d + K - 1, in [0, 2K - 2]. */
export function rpbIndex(x: number, j: number, dilation: number, kernelSize: number): number {
  return (j - x) / dilation + kernelSize - 1;
}
