import { axisWindow, randn, toFloat64Values } from '@natten-web/core';
import { describe, expect, it } from 'vitest';
import { axisGrid } from '../src/cases.ts';
import {
  axisKeep,
  axisKeys,
  buildMask,
  denseAttention,
  type OracleAxis,
  type OracleFusedProblem,
  oracleAvBackward,
  oracleAvForward,
  oracleFusedBackward,
  oracleFusedForward,
  oracleQkBackward,
  oracleQkForward,
  slotValidity,
} from '../src/index.ts';

const axis = (length: number, kernelSize: number, dilation = 1, causal = false, stride = 1): OracleAxis => ({
  length,
  kernelSize,
  dilation,
  stride,
  causal,
});

/** Queries that attend to key j (the inverse neighborhood), by brute force over the oracle's mask. */
const inverse = (j: number, ax: OracleAxis): number[] => Array.from({ length: ax.length }, (_, x) => x).filter((x) => axisKeep(x, j, ax));

const rpbIdx = (q: number, ax: OracleAxis): number[] => axisKeys(q, ax).map((k) => (k - q) / ax.dilation + ax.kernelSize - 1);

describe('oracle window: spec §2.5 worked examples', () => {
  it('§2.5.1 1-D L=9 K=3 d=2 non-causal: slots, rpb indices, inverse', () => {
    const ax = axis(9, 3, 2);
    const table: [number, number[], number[], number[]][] = [
      [0, [0, 2, 4], [2, 3, 4], [0, 2]],
      [1, [1, 3, 5], [2, 3, 4], [1, 3]],
      [2, [0, 2, 4], [1, 2, 3], [0, 2, 4]],
      [3, [1, 3, 5], [1, 2, 3], [1, 3, 5, 7]],
      [4, [2, 4, 6], [1, 2, 3], [0, 2, 4, 6, 8]],
      [5, [3, 5, 7], [1, 2, 3], [1, 3, 5, 7]],
      [6, [4, 6, 8], [1, 2, 3], [4, 6, 8]],
      [7, [3, 5, 7], [0, 1, 2], [5, 7]],
      [8, [4, 6, 8], [0, 1, 2], [6, 8]],
    ];
    for (const [q, slots, rpb, inv] of table) {
      expect(axisKeys(q, ax), `q=${q}`).toEqual(slots);
      expect(rpbIdx(q, ax), `rpb q=${q}`).toEqual(rpb);
      expect(inverse(q, ax), `inverse key=${q}`).toEqual(inv);
    }
  });

  it('§2.5.2 1-D L=9 K=3 d=2 causal: slots (valid prefix) and inverse', () => {
    const ax = axis(9, 3, 2, true);
    const table: [number, number[], number[]][] = [
      [0, [0], [0, 2, 4]],
      [1, [1], [1, 3, 5]],
      [2, [0, 2], [2, 4, 6]],
      [3, [1, 3], [3, 5, 7]],
      [4, [0, 2, 4], [4, 6, 8]],
      [5, [1, 3, 5], [5, 7]],
      [6, [2, 4, 6], [6, 8]],
      [7, [3, 5, 7], [7]],
      [8, [4, 6, 8], [8]],
    ];
    for (const [q, slots, inv] of table) {
      expect(axisKeys(q, ax), `q=${q}`).toEqual(slots);
      expect(inverse(q, ax), `inverse key=${q}`).toEqual(inv);
    }
  });

  it('1-D L=9 K=3 d=1 non-causal: border windows and widened inverse', () => {
    const ax = axis(9, 3);
    expect(axisKeys(0, ax)).toEqual([0, 1, 2]);
    expect(axisKeys(1, ax)).toEqual([0, 1, 2]);
    expect(axisKeys(2, ax)).toEqual([1, 2, 3]);
    expect(axisKeys(7, ax)).toEqual([6, 7, 8]);
    expect(axisKeys(8, ax)).toEqual([6, 7, 8]);
    expect(inverse(0, ax)).toEqual([0, 1]);
    expect(inverse(1, ax)).toEqual([0, 1, 2]);
    expect(inverse(2, ax)).toEqual([0, 1, 2, 3]);
    expect(inverse(3, ax)).toEqual([2, 3, 4]);
    expect(inverse(6, ax)).toEqual([5, 6, 7, 8]);
    expect(inverse(7, ax)).toEqual([6, 7, 8]);
    expect(inverse(8, ax)).toEqual([7, 8]);
    // §5 worked rpb example: q0 -> 2,3,4; q4 -> 1,2,3; q8 -> 0,1,2.
    expect(rpbIdx(0, ax)).toEqual([2, 3, 4]);
    expect(rpbIdx(4, ax)).toEqual([1, 2, 3]);
    expect(rpbIdx(8, ax)).toEqual([0, 1, 2]);
  });

  it('even K: L=8 K=4 non-causal (2 left, 1 right) and causal', () => {
    const ax = axis(8, 4);
    const expected = [[0, 1, 2, 3], [0, 1, 2, 3], [0, 1, 2, 3], [1, 2, 3, 4], [2, 3, 4, 5], [3, 4, 5, 6], [4, 5, 6, 7], [4, 5, 6, 7]];
    expected.forEach((keys, q) => expect(axisKeys(q, ax), `q=${q}`).toEqual(keys));
    expect(inverse(0, ax)).toEqual([0, 1, 2]);
    expect(inverse(3, ax)).toEqual([0, 1, 2, 3, 4, 5]);
    expect(inverse(4, ax)).toEqual([3, 4, 5, 6, 7]);
    expect(inverse(7, ax)).toEqual([6, 7]);
    const c = axis(8, 4, 1, true);
    expect(axisKeys(0, c)).toEqual([0]);
    expect(axisKeys(1, c)).toEqual([0, 1]);
    expect(axisKeys(2, c)).toEqual([0, 1, 2]);
    expect(axisKeys(3, c)).toEqual([0, 1, 2, 3]);
    expect(axisKeys(4, c)).toEqual([1, 2, 3, 4]);
    expect(axisKeys(7, c)).toEqual([4, 5, 6, 7]);
  });

  /** The 2-D slot list of query (r, c): key coordinates per slot, null for an invalid slot. */
  function slots2d(sp: [number, number], K: [number, number], d: [number, number], causal: [boolean, boolean], q: [number, number]) {
    const m = buildMask({ spatial: sp, kernelSize: K, dilation: d, stride: [1, 1], isCausal: causal });
    const N = m.tokens;
    const x = q[0] * sp[1] + q[1];
    const out: ([number, number] | null)[] = new Array(m.slots).fill(null);
    const rpb: number[] = new Array(m.slots).fill(-1);
    for (let j = 0; j < N; j++) {
      const t = m.slot[x * N + j] as number;
      if (t >= 0) {
        out[t] = [Math.floor(j / sp[1]), j % sp[1]];
        rpb[t] = m.rpb[x * N + j] as number;
      }
    }
    return { keys: out, rpb: rpb.map((r) => (r < 0 ? null : [Math.floor(r / (2 * K[1] - 1)), r % (2 * K[1] - 1)])) };
  }

  it('§2.5.3 2-D 5x5 K=3x3: slot order, rpb cells, interleaved invalid slots', () => {
    const nc: [boolean, boolean] = [false, false];
    let s = slots2d([5, 5], [3, 3], [1, 1], nc, [0, 0]);
    expect(s.keys).toEqual([[0, 0], [0, 1], [0, 2], [1, 0], [1, 1], [1, 2], [2, 0], [2, 1], [2, 2]]);
    expect(s.rpb).toEqual([[2, 2], [2, 3], [2, 4], [3, 2], [3, 3], [3, 4], [4, 2], [4, 3], [4, 4]]);
    s = slots2d([5, 5], [3, 3], [1, 1], nc, [2, 2]);
    expect(s.keys).toEqual([[1, 1], [1, 2], [1, 3], [2, 1], [2, 2], [2, 3], [3, 1], [3, 2], [3, 3]]);
    expect(s.rpb).toEqual([[1, 1], [1, 2], [1, 3], [2, 1], [2, 2], [2, 3], [3, 1], [3, 2], [3, 3]]);
    s = slots2d([5, 5], [3, 3], [1, 1], nc, [4, 3]);
    expect(s.keys).toEqual([[2, 2], [2, 3], [2, 4], [3, 2], [3, 3], [3, 4], [4, 2], [4, 3], [4, 4]]);
    expect(s.rpb).toEqual([[0, 1], [0, 2], [0, 3], [1, 1], [1, 2], [1, 3], [2, 1], [2, 2], [2, 3]]);
    s = slots2d([5, 5], [3, 3], [1, 1], [true, false], [1, 0]);
    expect(s.keys).toEqual([[0, 0], [0, 1], [0, 2], [1, 0], [1, 1], [1, 2], null, null, null]);
    s = slots2d([5, 5], [3, 3], [1, 1], [true, false], [2, 2]);
    expect(s.keys).toEqual([[0, 1], [0, 2], [0, 3], [1, 1], [1, 2], [1, 3], [2, 1], [2, 2], [2, 3]]);
    s = slots2d([5, 5], [3, 3], [1, 1], [false, true], [2, 0]);
    expect(s.keys).toEqual([[1, 0], null, null, [2, 0], null, null, [3, 0], null, null]);
    s = slots2d([5, 5], [3, 3], [1, 1], [false, true], [2, 2]);
    expect(s.keys).toEqual([[1, 0], [1, 1], [1, 2], [2, 0], [2, 1], [2, 2], [3, 0], [3, 1], [3, 2]]);
  });

  it('§2.5.3 2-D dilated 6x7 K=3x3 d=2x2', () => {
    const keysOf = (q: [number, number]) => slots2d([6, 7], [3, 3], [2, 2], [false, false], q).keys;
    const grid = (rows: number[], cols: number[]) => rows.flatMap((r) => cols.map((c) => [r, c]));
    expect(keysOf([0, 0])).toEqual(grid([0, 2, 4], [0, 2, 4]));
    expect(keysOf([5, 6])).toEqual(grid([1, 3, 5], [2, 4, 6]));
    expect(keysOf([3, 4])).toEqual(grid([1, 3, 5], [2, 4, 6]));
  });

  it('slotValidity matches the dense mask (interleaved invalid slots)', () => {
    const g = { spatial: [5, 6], kernelSize: [3, 3], dilation: [1, 2], stride: [1, 1], isCausal: [false, true] };
    const m = buildMask(g);
    const valid = slotValidity(g);
    const fromMask = new Uint8Array(m.tokens * m.slots);
    for (let x = 0; x < m.tokens; x++) {
      for (let j = 0; j < m.tokens; j++) {
        const t = m.slot[x * m.tokens + j] as number;
        if (t >= 0) fromMask[x * m.slots + t] = 1;
      }
    }
    expect(Array.from(valid)).toEqual(Array.from(fromMask));
  });
});

describe('oracle window: stride (spec §2.7 examples)', () => {
  it('L=10 K=4 s=2 non-causal', () => {
    const ax = axis(10, 4, 1, false, 2);
    const w = [[0, 1, 2, 3], [0, 1, 2, 3], [1, 2, 3, 4], [1, 2, 3, 4], [3, 4, 5, 6], [3, 4, 5, 6], [5, 6, 7, 8], [5, 6, 7, 8], [6, 7, 8, 9], [6, 7, 8, 9]];
    w.forEach((keys, q) => expect(axisKeys(q, ax), `q=${q}`).toEqual(keys));
  });

  it('L=10 K=4 s=2 causal: leader window cut at the query', () => {
    const ax = axis(10, 4, 1, true, 2);
    const w = [[0], [0, 1], [0, 1, 2], [0, 1, 2, 3], [2, 3, 4], [2, 3, 4, 5], [4, 5, 6], [4, 5, 6, 7], [6, 7, 8], [6, 7, 8, 9]];
    w.forEach((keys, q) => expect(axisKeys(q, ax), `q=${q}`).toEqual(keys));
  });

  it('L=9 K=3 s=3: blocked attention, non-causal and causal', () => {
    const nc = axis(9, 3, 1, false, 3);
    for (let q = 0; q < 9; q++) {
      const b = Math.floor(q / 3) * 3;
      expect(axisKeys(q, nc)).toEqual([b, b + 1, b + 2]);
    }
    const c = axis(9, 3, 1, true, 3);
    expect(axisKeys(3, c)).toEqual([3]);
    expect(axisKeys(4, c)).toEqual([3, 4]);
    expect(axisKeys(5, c)).toEqual([3, 4, 5]);
  });
});

describe('oracle window vs core window math (independent formulations must agree)', () => {
  it('every L <= 20, K, d with K*d <= L, s <= K, causal or not', () => {
    let checked = 0;
    for (const p of axisGrid({ minLength: 2, maxLength: 20 })) {
      const { length: L, kernelSize: K, dilation: d, stride: s, causal } = p;
      const ax = axis(L, K, d, causal, s);
      for (let q = 0; q < L; q++) {
        const w = axisWindow(q, p);
        const coreKeys = Array.from({ length: w.count }, (_, t) => w.start + t * d);
        const keys = axisKeys(q, ax);
        if (keys.join() !== coreKeys.join()) {
          throw new Error(`L=${L} K=${K} d=${d} s=${s} causal=${causal} q=${q}: oracle [${keys}] vs core [${coreKeys}]`);
        }
        checked++;
      }
    }
    expect(checked).toBeGreaterThan(10_000);
  });
});

function values(shape: number[], seed: number, scale = 1): Float64Array {
  return toFloat64Values(randn(shape, 'float64', seed, scale));
}

describe('oracle attention', () => {
  it('a full-extent, non-causal kernel equals dense attention; the lse is ln sum exp', () => {
    const p: OracleFusedProblem = {
      batch: 2,
      heads: 2,
      headsKv: 1,
      dim: 4,
      dimV: 3,
      scale: 0.7,
      geometry: { spatial: [3, 4], kernelSize: [3, 4], dilation: [1, 1], stride: [1, 1], isCausal: [false, false] },
    };
    const q = values([2, 3, 4, 2, 4], 1);
    const k = values([2, 3, 4, 1, 4], 2);
    const v = values([2, 3, 4, 1, 3], 3);
    const r = oracleFusedForward(p, q, k, v);
    const dense = denseAttention({ ...p, spatial: [3, 4] }, q, k, v, () => true);
    r.output.forEach((x, i) => expect(x).toBeCloseTo(dense[i] as number, 12));
    // lse of (b=0, token 0, head 1): ln sum_j exp(scale q.k_j) with KV head 0.
    let sum = 0;
    for (let j = 0; j < 12; j++) {
      let dot = 0;
      for (let c = 0; c < 4; c++) dot += (q[(0 * 12 + 0) * 8 + 4 + c] as number) * (k[j * 4 + c] as number);
      sum += Math.exp(0.7 * dot);
    }
    expect(r.lse[1]).toBeCloseTo(Math.log(sum), 12);
  });

  it('rpb is added after scaling at index (j - x)/d + K - 1', () => {
    // 1-D L=5 K=3 d=1, one head, D=1: q=1, k=0 -> S = rpb only; so O = softmax(rpb window) . v.
    const g = { spatial: [5], kernelSize: [3], dilation: [1], stride: [1], isCausal: [false] };
    const p: OracleFusedProblem = { batch: 1, heads: 1, headsKv: 1, dim: 1, dimV: 1, scale: 2, geometry: g };
    const q = new Float64Array([1, 1, 1, 1, 1]);
    const k = new Float64Array(5);
    const v = new Float64Array([10, 20, 30, 40, 50]);
    const rpb = new Float64Array([0.1, 0.2, 0.3, 0.4, 0.5]);
    const r = oracleFusedForward(p, q, k, v, rpb);
    // q=0: keys 0,1,2 with rpb 2,3,4 (spec §5).
    const w = [0.3, 0.4, 0.5].map(Math.exp);
    const z = w.reduce((a, b) => a + b);
    expect(r.output[0]).toBeCloseTo((10 * (w[0] as number) + 20 * (w[1] as number) + 30 * (w[2] as number)) / z, 12);
    expect(r.lse[0]).toBeCloseTo(Math.log(z), 12);
  });

  /** Scalar loss L = sum(O * dO) and its finite-difference gradient. */
  function finiteDiff(f: () => number, x: Float64Array, i: number, eps = 1e-6): number {
    const x0 = x[i] as number;
    x[i] = x0 + eps;
    const up = f();
    x[i] = x0 - eps;
    const down = f();
    x[i] = x0;
    return (up - down) / (2 * eps);
  }

  for (const [label, geometry, heads, headsKv, withRpb] of [
    ['1-D L=9 K=3 d=2 causal', { spatial: [9], kernelSize: [3], dilation: [2], stride: [1], isCausal: [true] }, 2, 2, false],
    ['1-D L=8 K=4 even', { spatial: [8], kernelSize: [4], dilation: [1], stride: [1], isCausal: [false] }, 2, 1, false],
    ['2-D 5x6 K=3x3 d=1x2 rpb', { spatial: [5, 6], kernelSize: [3, 3], dilation: [1, 2], stride: [1, 1], isCausal: [false, false] }, 2, 2, true],
    ['2-D 6x5 K=4x3 s=2x3 causal=FT GQA', { spatial: [6, 5], kernelSize: [4, 3], dilation: [1, 1], stride: [2, 3], isCausal: [false, true] }, 2, 1, false],
  ] as const) {
    it(`fused backward matches finite differences: ${label}`, () => {
      const sp = [...geometry.spatial];
      const p: OracleFusedProblem = { batch: 1, heads, headsKv, dim: 3, dimV: 2, scale: 0.8, geometry };
      const q = values([1, ...sp, heads, 3], 11);
      const k = values([1, ...sp, headsKv, 3], 12);
      const v = values([1, ...sp, headsKv, 2], 13);
      const dO = values([1, ...sp, heads, 2], 14);
      const rpb = withRpb ? values([heads, ...geometry.kernelSize.map((x) => 2 * x - 1)], 15) : undefined;
      const mask = buildMask(geometry);
      const loss = (): number => {
        const o = oracleFusedForward(p, q, k, v, rpb, mask).output;
        let s = 0;
        for (let i = 0; i < o.length; i++) s += (o[i] as number) * (dO[i] as number);
        return s;
      };
      const fwd = oracleFusedForward(p, q, k, v, rpb, mask);
      const g = oracleFusedBackward(p, q, k, v, fwd.output, dO, fwd.lse, rpb, mask);
      const pairs: [Float64Array, Float64Array][] = [
        [q, g.gradQuery],
        [k, g.gradKey],
        [v, g.gradValue],
      ];
      if (rpb && g.gradRpb) pairs.push([rpb, g.gradRpb]);
      for (const [x, gx] of pairs) {
        for (let i = 0; i < x.length; i += Math.max(1, Math.floor(x.length / 17))) {
          expect(Math.abs(finiteDiff(loss, x, i) - (gx[i] as number))).toBeLessThan(1e-7);
        }
      }
    });
  }

  it('BMM ops compose to the fused forward, and their backward is the chain rule', () => {
    const geometry = { spatial: [5, 7], kernelSize: [3, 5], dilation: [1, 1], stride: [1, 1], isCausal: [true, false] };
    const B = 1;
    const H = 2;
    const D = 4;
    const N = 35;
    const P = 15;
    const mask = buildMask(geometry);
    const q = values([B, H, 5, 7, D], 21, 0.5);
    const k = values([B, H, 5, 7, D], 22);
    const v = values([B, H, 5, 7, D], 23);
    const attn = oracleQkForward({ batch: B, heads: H, dim: D, geometry }, q, k, undefined, mask);
    // Invalid (causal) slots are -inf; the softmax over slots then gives the fused output.
    const probs = new Float64Array(attn.length);
    for (let r = 0; r < B * H * N; r++) {
      const row = attn.subarray(r * P, (r + 1) * P);
      const m = Math.max(...row);
      let z = 0;
      for (const a of row) z += Math.exp(a - m);
      row.forEach((a, t) => {
        probs[r * P + t] = Math.exp(a - m) / z;
      });
    }
    expect(attn.some((a) => a === Number.NEGATIVE_INFINITY)).toBe(true);
    const out = oracleAvForward({ batch: B, heads: H, dim: D, geometry }, probs, v, mask);
    // Fused (heads-last) with scale 1 on the same data.
    const hl = (x: Float64Array): Float64Array => {
      const y = new Float64Array(x.length);
      for (let h = 0; h < H; h++) for (let n = 0; n < N; n++) for (let c = 0; c < D; c++) y[(n * H + h) * D + c] = x[(h * N + n) * D + c] as number;
      return y;
    };
    const fused = oracleFusedForward({ batch: B, heads: H, headsKv: H, dim: D, dimV: D, scale: 1, geometry }, hl(q), hl(k), hl(v), undefined, mask);
    const outHl = hl(out);
    fused.output.forEach((x, i) => expect(x).toBeCloseTo(outHl[i] as number, 12));
    // av backward: dA[x,t] = dO.v (0 on invalid slots); qk backward on a dA equals the finite difference.
    const dO = values([B, H, 5, 7, D], 24);
    const avb = oracleAvBackward({ batch: B, heads: H, dim: D, geometry }, dO, probs, v, mask);
    attn.forEach((a, i) => {
      if (a === Number.NEGATIVE_INFINITY) expect(avb.gradAttn[i]).toBe(0);
    });
    const dA = values([B, H, 5, 7, P], 25);
    const qkb = oracleQkBackward({ batch: B, heads: H, dim: D, geometry }, dA, q, k, false, mask);
    const lossQk = (): number => {
      const a = oracleQkForward({ batch: B, heads: H, dim: D, geometry }, q, k, undefined, mask);
      let s = 0;
      a.forEach((x, i) => {
        if (Number.isFinite(x)) s += x * (dA[i] as number);
      });
      return s;
    };
    for (const i of [0, 7, 33, 101, 139]) {
      expect(finiteDiff(lossQk, q, i)).toBeCloseTo(qkb.gradQuery[i] as number, 7);
      expect(finiteDiff(lossQk, k, i)).toBeCloseTo(qkb.gradKey[i] as number, 7);
    }
    const lossAv = (): number => {
      const o = oracleAvForward({ batch: B, heads: H, dim: D, geometry }, probs, v, mask);
      let s = 0;
      o.forEach((x, i) => {
        s += x * (dO[i] as number);
      });
      return s;
    };
    for (const i of [0, 9, 50, 120, 139]) expect(finiteDiff(lossAv, v, i)).toBeCloseTo(avb.gradValue[i] as number, 7);
  });
});
