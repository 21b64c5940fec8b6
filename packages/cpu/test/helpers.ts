/**
 * Test helpers: an independent window rule written from the spec's formulas (not core's window
 * code), a dense masked-attention oracle in f64, finite differences and comparison assertions.
 */
import { type DType, fromValues, numel, randn, seededRandom, type Tensor, tensor, toFloat64Values } from '@natten-web/core';
import { expect } from 'vitest';

export interface AxisSpec {
  L: number;
  K: number;
  d: number;
  causal: boolean;
  s: number;
}

/**
 * Spec Appendix A, group coordinates: the window of query x along one axis, as the list of key
 * coordinates in slot order, with `null` for an invalid (causal) slot.
 */
export function specWindow(x: number, a: AxisSpec): (number | null)[] {
  const g = x % a.d;
  const i = Math.floor(x / a.d);
  const n = Math.ceil((a.L - g) / a.d);
  let start: number;
  if (a.causal) {
    const lead = Math.min(Math.floor(i / a.s) * a.s + a.s - 1, n - 1);
    start = Math.max(lead - a.K + 1, 0);
  } else {
    const lead = Math.min(Math.floor(i / a.s) * a.s + Math.floor(a.s / 2), n - 1);
    start = Math.min(Math.max(lead - Math.floor(a.K / 2), 0), n - a.K);
  }
  const out: (number | null)[] = [];
  for (let t = 0; t < a.K; t++) {
    const valid = !a.causal || start + t <= i;
    out.push(valid ? (start + t) * a.d + g : null);
  }
  return out;
}

export function axes(
  spatial: readonly number[],
  K: number | readonly number[],
  d: number | readonly number[] = 1,
  causal: boolean | readonly boolean[] = false,
  s: number | readonly number[] = 1,
): AxisSpec[] {
  const pick = <T>(v: T | readonly T[], i: number): T => (Array.isArray(v) ? (v[i] as T) : (v as T));
  return spatial.map((L, i) => ({ L, K: pick(K, i), d: pick(d, i), causal: pick(causal, i), s: pick(s, i) }));
}

/** Multi-index <-> linear index helpers over a row-major extent list. */
export function unravel(i: number, dims: readonly number[]): number[] {
  const out = new Array<number>(dims.length);
  for (let a = dims.length - 1; a >= 0; a--) {
    const n = dims[a] as number;
    out[a] = i % n;
    i = Math.floor(i / n);
  }
  return out;
}

export function ravel(idx: readonly number[], dims: readonly number[]): number {
  let i = 0;
  for (let a = 0; a < dims.length; a++) i = i * (dims[a] as number) + (idx[a] as number);
  return i;
}

/** The neighborhood of query x (multi-index): per slot (row-major), the key multi-index or null. */
export function specNeighborhood(x: readonly number[], ax: readonly AxisSpec[]): (number[] | null)[] {
  const wins = ax.map((a, i) => specWindow(x[i] as number, a));
  const K = ax.map((a) => a.K);
  const P = K.reduce((p, k) => p * k, 1);
  const out: (number[] | null)[] = [];
  for (let t = 0; t < P; t++) {
    const ts = unravel(t, K);
    const j = ts.map((ta, i) => (wins[i] as (number | null)[])[ta] as number | null);
    out.push(j.some((v) => v === null) ? null : (j as number[]));
  }
  return out;
}

export interface OracleInputs {
  /** heads-last q [B, *sp, H, D], k [B, *sp, Hkv, D], v [B, *sp, Hkv, Dv] as f64. */
  q: Float64Array;
  k: Float64Array;
  v: Float64Array;
  rpb?: Float64Array | null;
  B: number;
  spatial: readonly number[];
  H: number;
  Hkv: number;
  D: number;
  Dv: number;
  scale: number;
  ax: readonly AxisSpec[];
}

/**
 * Dense masked attention in f64: for every query, every one of the N keys is tested for membership
 * of the spec neighborhood; returns out [B, *sp, H, Dv] and lse [B, *sp, H].
 */
export function denseOracle(inp: OracleInputs): { out: Float64Array; lse: Float64Array } {
  const { B, spatial, H, Hkv, D, Dv, scale, ax } = inp;
  const N = numel(spatial);
  const out = new Float64Array(B * N * H * Dv);
  const lse = new Float64Array(B * N * H);
  const rpbDims = [H, ...ax.map((a) => 2 * a.K - 1)];
  for (let xi = 0; xi < N; xi++) {
    const x = unravel(xi, spatial);
    const nb = specNeighborhood(x, ax);
    const member = new Map<number, number[]>();
    for (const j of nb) if (j) member.set(ravel(j, spatial), j);
    for (let b = 0; b < B; b++) {
      for (let h = 0; h < H; h++) {
        const hk = Math.floor(h / (H / Hkv));
        const logits: number[] = [];
        const keys: number[] = [];
        for (let ji = 0; ji < N; ji++) {
          const j = member.get(ji);
          if (!j) continue;
          let dot = 0;
          for (let c = 0; c < D; c++) dot += (inp.q[((b * N + xi) * H + h) * D + c] as number) * (inp.k[((b * N + ji) * Hkv + hk) * D + c] as number);
          let s = scale * dot;
          if (inp.rpb) {
            const r = [h, ...j.map((jj, a) => (jj - (x[a] as number)) / (ax[a] as AxisSpec).d + (ax[a] as AxisSpec).K - 1)];
            s += inp.rpb[ravel(r, rpbDims)] as number;
          }
          logits.push(s);
          keys.push(ji);
        }
        const m = Math.max(...logits);
        const e = logits.map((l) => Math.exp(l - m));
        const sum = e.reduce((p, c) => p + c, 0);
        for (let i = 0; i < keys.length; i++) {
          for (let c = 0; c < Dv; c++) {
            out[((b * N + xi) * H + h) * Dv + c] += ((e[i] as number) / sum) * (inp.v[((b * N + (keys[i] as number)) * Hkv + hk) * Dv + c] as number);
          }
        }
        lse[(b * N + xi) * H + h] = m + Math.log(sum);
      }
    }
  }
  return { out, lse };
}

/**
 * Dense masked-attention backward in f64 (spec §7.2 written directly over all N keys with the spec
 * membership test): returns dq, dk, dv (heads-last, GQA groups summed) and d_rpb.
 */
export function denseOracleBackward(inp: OracleInputs, dO: Float64Array): { dq: Float64Array; dk: Float64Array; dv: Float64Array; drpb: Float64Array } {
  const { B, spatial, H, Hkv, D, Dv, scale, ax } = inp;
  const N = numel(spatial);
  const dq = new Float64Array(inp.q.length);
  const dk = new Float64Array(inp.k.length);
  const dv = new Float64Array(inp.v.length);
  const rpbDims = [H, ...ax.map((a) => 2 * a.K - 1)];
  const drpb = new Float64Array(numel(rpbDims));
  for (let xi = 0; xi < N; xi++) {
    const x = unravel(xi, spatial);
    const keys = specNeighborhood(x, ax).filter((j): j is number[] => j !== null);
    for (let b = 0; b < B; b++) {
      for (let h = 0; h < H; h++) {
        const hk = Math.floor(h / (H / Hkv));
        const qOff = ((b * N + xi) * H + h) * D;
        const oOff = ((b * N + xi) * H + h) * Dv;
        const rows = keys.map((j) => {
          const ji = ravel(j, spatial);
          const r = ravel([h, ...j.map((jj, a) => (jj - (x[a] as number)) / (ax[a] as AxisSpec).d + (ax[a] as AxisSpec).K - 1)], rpbDims);
          let s = 0;
          for (let c = 0; c < D; c++) s += (inp.q[qOff + c] as number) * (inp.k[((b * N + ji) * Hkv + hk) * D + c] as number);
          s = scale * s + (inp.rpb ? (inp.rpb[r] as number) : 0);
          return { ji, r, s };
        });
        const m = Math.max(...rows.map((e) => e.s));
        const z = rows.reduce((acc, e) => acc + Math.exp(e.s - m), 0);
        const P = rows.map((e) => Math.exp(e.s - m) / z);
        const dP = rows.map((e) => {
          let t = 0;
          for (let c = 0; c < Dv; c++) t += (dO[oOff + c] as number) * (inp.v[((b * N + e.ji) * Hkv + hk) * Dv + c] as number);
          return t;
        });
        const delta = P.reduce((acc, p, i) => acc + p * (dP[i] as number), 0);
        rows.forEach((e, i) => {
          const p = P[i] as number;
          const ds = p * ((dP[i] as number) - delta);
          const kOff = ((b * N + e.ji) * Hkv + hk) * D;
          const vOff = ((b * N + e.ji) * Hkv + hk) * Dv;
          for (let c = 0; c < D; c++) {
            dq[qOff + c] += scale * ds * (inp.k[kOff + c] as number);
            dk[kOff + c] += scale * ds * (inp.q[qOff + c] as number);
          }
          for (let c = 0; c < Dv; c++) dv[vOff + c] += p * (dO[oOff + c] as number);
          drpb[e.r] += ds;
        });
      }
    }
  }
  return { dq, dk, dv, drpb };
}

/** Assert all |actual - expected| <= atol + rtol*|expected| (NaN == NaN, inf == inf), reporting the worst index. */
export function expectClose(actual: ArrayLike<number>, expected: ArrayLike<number>, atol: number, rtol = 0, what = ''): void {
  expect(actual.length, `${what}: length`).toBe(expected.length);
  let worst = -1;
  let worstExcess = 0;
  for (let i = 0; i < actual.length; i++) {
    const a = actual[i] as number;
    const e = expected[i] as number;
    if (Number.isNaN(a) && Number.isNaN(e)) continue;
    if (!Number.isFinite(e) || !Number.isFinite(a)) {
      if (a !== e) {
        worst = i;
        worstExcess = Number.POSITIVE_INFINITY;
        break;
      }
      continue;
    }
    const excess = Math.abs(a - e) - (atol + rtol * Math.abs(e));
    if (excess > worstExcess || Number.isNaN(excess)) {
      worstExcess = Number.isNaN(excess) ? Number.POSITIVE_INFINITY : excess;
      worst = i;
    }
  }
  if (worst >= 0) {
    expect.fail(`${what}: index ${worst}: actual ${actual[worst]} vs expected ${expected[worst]} (atol ${atol}, rtol ${rtol})`);
  }
}

/**
 * Central finite differences of `loss` with respect to the elements `indices` of `x` (all when
 * omitted); `x` is mutated and restored. Returns [index, derivative] pairs.
 */
export function numericGrad(x: Float64Array, loss: () => number, indices?: readonly number[], eps = 1e-5): [number, number][] {
  const idx = indices ?? Array.from({ length: x.length }, (_, i) => i);
  const out: [number, number][] = [];
  for (const i of idx) {
    const old = x[i] as number;
    x[i] = old + eps;
    const lp = loss();
    x[i] = old - eps;
    const lm = loss();
    x[i] = old;
    out.push([i, (lp - lm) / (2 * eps)]);
  }
  return out;
}

/** Up to `count` distinct indices in [0, n), chosen with a seeded generator (all of them when n <= count). */
export function sampleIndices(n: number, count: number, seed: number): number[] {
  if (n <= count) return Array.from({ length: n }, (_, i) => i);
  const rand = seededRandom(seed);
  const picked = new Set<number>();
  while (picked.size < count) picked.add(Math.floor(rand() * n));
  return [...picked].sort((a, b) => a - b);
}

/** Compare an analytic gradient with finite differences at the sampled indices. */
export function expectGradClose(analytic: ArrayLike<number>, numeric: readonly [number, number][], atol: number, rtol: number, what: string): void {
  const a = numeric.map(([i]) => analytic[i] as number);
  const n = numeric.map(([, g]) => g);
  expectClose(a, n, atol, rtol, what);
}

export function dot(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += (a[i] as number) * (b[i] as number);
  return s;
}

export function values(t: Tensor): Float64Array {
  return toFloat64Values(t);
}

export function rand<D extends DType>(shape: readonly number[], dtype: D, seed: number, scale = 1): Tensor<D> {
  return randn(shape, dtype, seed, scale);
}

export function empty<D extends DType>(shape: readonly number[], dtype: D): Tensor<D> {
  return tensor(shape, dtype);
}

export function f64(shape: readonly number[], vals: ArrayLike<number>): Tensor<'float64'> {
  return fromValues(shape, 'float64', vals);
}

/** Tolerances for comparing a CPU result with an f64 reference, per input dtype. */
export function tol(dtype: DType): { atol: number; rtol: number } {
  switch (dtype) {
    case 'float64':
      return { atol: 1e-10, rtol: 1e-10 };
    case 'float32':
      return { atol: 1e-5, rtol: 1e-5 };
    case 'float16':
      return { atol: 2e-3, rtol: 2e-3 };
  }
}
