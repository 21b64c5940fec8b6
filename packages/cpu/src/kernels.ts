/**
 * NATTEN's three BMM-style kernels on f64 arrays, heads-first (`[BH, N, D]` rows, `[BH, N, P]` slot
 * weights), shared by the QK and AV ops:
 *
 * - PN ("pointwise-neighborhood"): qk_forward, and av_backward's d_attn;
 * - NN ("neighborhood-neighborhood"): av_forward, and qk_backward's dQ;
 * - IN ("inverse-neighborhood"): qk_backward's dK and av_backward's dV.
 *
 * Every output element is accumulated in the same order as a plain loop over (bh, x0, x1, x2, t0,
 * t1, t2) would, so the results do not depend on how the loops are nested here.
 */
import { axpy, dot, type Geometry, neighborList } from './common.ts';

/**
 * PN: for every row bh, query x and valid slot t, `out[bh, x, t] = a[bh, x, :] . b[bh, n_t(x), :]`, plus
 * `rpb[h, r(x, n_t(x))]` with `h = bh % heads` when `rpb` is given. Invalid slots are left untouched.
 */
export function pointwiseNeighborhood(
  geo: Geometry,
  bhCount: number,
  heads: number,
  a: Float64Array,
  b: Float64Array,
  D: number,
  rpb: Float64Array | null,
  out: Float64Array,
): void {
  const N = geo.tokens;
  const P = geo.slots;
  const win = neighborList(geo, 'window');
  const { tokens, slots, bias } = win;
  for (let xi = 0; xi < N; xi++) {
    const n = win.load(xi);
    for (let bh = 0; bh < bhCount; bh++) {
      const aOff = (bh * N + xi) * D;
      const oOff = (bh * N + xi) * P;
      const hBias = (bh % heads) * geo.biasSize;
      for (let i = 0; i < n; i++) {
        let s = dot(a, aOff, b, (bh * N + (tokens[i] as number)) * D, D);
        if (rpb) s += rpb[hBias + (bias[i] as number)] as number;
        out[oOff + (slots[i] as number)] = s;
      }
    }
  }
}

/**
 * NN: for every row bh and query x, `out[bh, x, :] += sum over valid t of w[bh, x, t] * rows[bh, n_t(x), :]`,
 * in slot order. Invalid slots of `w` are never read.
 */
export function neighborhoodNeighborhood(geo: Geometry, bhCount: number, w: Float64Array, rows: Float64Array, D: number, out: Float64Array): void {
  const N = geo.tokens;
  const P = geo.slots;
  const win = neighborList(geo, 'window');
  const { tokens, slots } = win;
  for (let xi = 0; xi < N; xi++) {
    const n = win.load(xi);
    for (let bh = 0; bh < bhCount; bh++) {
      const oOff = (bh * N + xi) * D;
      const wOff = (bh * N + xi) * P;
      for (let i = 0; i < n; i++) axpy(out, oOff, w[wOff + (slots[i] as number)] as number, rows, (bh * N + (tokens[i] as number)) * D, D);
    }
  }
}

/**
 * IN: for every row bh and key j, `out[bh, j, :] += sum over the queries x attending j of
 * w[bh, x, t(x, j)] * rows[bh, x, :]`, x in row-major order, where `t(x, j)` is j's slot in x's window.
 */
export function inverseNeighborhood(geo: Geometry, bhCount: number, w: Float64Array, rows: Float64Array, D: number, out: Float64Array): void {
  const N = geo.tokens;
  const P = geo.slots;
  const inv = neighborList(geo, 'inverse');
  const { tokens, slots } = inv;
  for (let ji = 0; ji < N; ji++) {
    const m = inv.load(ji);
    for (let bh = 0; bh < bhCount; bh++) {
      const jOff = (bh * N + ji) * D;
      for (let i = 0; i < m; i++) {
        const xRow = bh * N + (tokens[i] as number);
        axpy(out, jOff, w[xRow * P + (slots[i] as number)] as number, rows, xRow * D, D);
      }
    }
  }
}
