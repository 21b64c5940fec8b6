/**
 * The spec's worked examples (§2.5, §2.7, §5) as fixed cases through the ops.
 *
 * Tricks that make windows visible:
 * - QK forward with a scalar query 1 and key j holding its own index: attn[x, t] is the key index in
 *   slot t (-Infinity where invalid). In 2-D, q = [100, 1] and key (r, c) = [r, c] gives 100r + c.
 * - QK forward with q = 0 and rpb[h, r] = r: attn[x, t] is the rpb index of slot t.
 * - AV backward with attn = 1 and dO_x = one-hot(x): dV_j[c] = 1 exactly when query c attends key j.
 * - Fused forward with attnScale 0 and one-hot values: out_x[c] = 1/|window| for every key c in the
 *   window (works for even K, which the BMM ops reject).
 */
import { fromValues, type NaRank, tensor } from '@natten-web/core';
import { describe, expect, it } from 'vitest';
import { fusedBackward, fusedForward, na1dAvBackward, na1dQkBackward, na1dQkForward, na2dQkForward, qkForward } from '../src/index.ts';
import { empty } from './helpers.ts';

type Slots = (number | null)[];

function iota(n: number): number[] {
  return Array.from({ length: n }, (_, i) => i);
}

/** 1-D slot table through qk_forward: per query, the key index per slot or null. */
function slots1d(L: number, K: number, d: number, causal: boolean, stride = 1): Slots[] {
  const attn = empty([1, 1, L, K], 'float64');
  const q = fromValues([1, 1, L, 1], 'float64', new Array<number>(L).fill(1));
  const k = fromValues([1, 1, L, 1], 'float64', iota(L));
  qkForward(1, { attn, query: q, key: k, kernelSize: K, dilation: d, isCausal: causal, stride });
  return iota(L).map((x) => Array.from(attn.data.subarray(x * K, x * K + K), (v) => (v === Number.NEGATIVE_INFINITY ? null : v)));
}

/** 1-D rpb index table through qk_forward (q = 0, rpb[r] = r). */
function rpbSlots1d(L: number, K: number, d: number): number[][] {
  const attn = empty([1, 1, L, K], 'float64');
  const zero = empty([1, 1, L, 1], 'float64');
  const rpb = fromValues([1, 2 * K - 1], 'float64', iota(2 * K - 1));
  na1dQkForward(attn, zero, zero, rpb, K, d, false);
  return iota(L).map((x) => Array.from(attn.data.subarray(x * K, x * K + K)));
}

/** 1-D inverse neighborhoods through av_backward (attn = 1, dO = identity). */
function inverse1d(L: number, K: number, d: number, causal: boolean): number[][] {
  const attn = fromValues([1, 1, L, K], 'float64', new Array<number>(L * K).fill(1));
  const value = empty([1, 1, L, L], 'float64');
  const eye = fromValues([1, 1, L, L], 'float64', iota(L * L).map((i) => (i % (L + 1) === 0 ? 1 : 0)));
  const dA = empty(attn.shape, 'float64');
  const dV = empty(value.shape, 'float64');
  na1dAvBackward(dA, dV, eye, attn, value, K, d, causal);
  return iota(L).map((j) => iota(L).filter((c) => dV.data[j * L + c] === 1));
}

/** Window sets through the fused forward with scale 0 and one-hot values (any K, any stride). */
function windows(rank: NaRank, spatial: number[], K: number[], d: number[], causal: boolean[], stride?: number[]): number[][] {
  const N = spatial.reduce((a, b) => a * b, 1);
  const q = empty([1, ...spatial, 1, 1], 'float64');
  const v = fromValues([1, ...spatial, 1, N], 'float64', iota(N * N).map((i) => (i % (N + 1) === 0 ? 1 : 0)));
  const output = empty([1, ...spatial, 1, N], 'float64');
  fusedForward(rank, { output, query: q, key: q, value: v, kernelSize: K, dilation: d, isCausal: causal, stride, attnScale: 0 });
  return iota(N).map((x) => {
    const row = Array.from(output.data.subarray(x * N, x * N + N));
    const members = iota(N).filter((c) => (row[c] as number) > 0);
    for (const c of members) expect(row[c]).toBeCloseTo(1 / members.length, 14);
    return members;
  });
}

/** Inverse sets through the fused backward (scale 0, dO = identity): dV_j[c] != 0 iff query c attends key j. */
function fusedInverse(L: number, K: number, causal: boolean): number[][] {
  const q = empty([1, L, 1, 1], 'float64');
  const v = empty([1, L, 1, L], 'float64');
  const output = empty([1, L, 1, L], 'float64');
  const logsumexp = empty([1, L, 1], 'float32');
  fusedForward(1, { output, query: q, key: q, value: v, logsumexp, kernelSize: K, isCausal: causal, attnScale: 0 });
  const eye = fromValues([1, L, 1, L], 'float64', iota(L * L).map((i) => (i % (L + 1) === 0 ? 1 : 0)));
  const dq = empty(q.shape, 'float64');
  const dk = empty(q.shape, 'float64');
  const dv = empty(v.shape, 'float64');
  fusedBackward(1, { gradQuery: dq, gradKey: dk, gradValue: dv, query: q, key: q, value: v, output, gradOutput: eye, logsumexp, kernelSize: K, isCausal: causal, attnScale: 0 });
  return iota(L).map((j) => iota(L).filter((c) => (dv.data[j * L + c] as number) > 0));
}

describe('§2.5.1 1-D, L=9, K=3, d=2, non-causal', () => {
  it('slots', () => {
    expect(slots1d(9, 3, 2, false)).toEqual([
      [0, 2, 4],
      [1, 3, 5],
      [0, 2, 4],
      [1, 3, 5],
      [2, 4, 6],
      [3, 5, 7],
      [4, 6, 8],
      [3, 5, 7],
      [4, 6, 8],
    ]);
  });
  it('rpb index per slot', () => {
    expect(rpbSlots1d(9, 3, 2)).toEqual([
      [2, 3, 4],
      [2, 3, 4],
      [1, 2, 3],
      [1, 2, 3],
      [1, 2, 3],
      [1, 2, 3],
      [1, 2, 3],
      [0, 1, 2],
      [0, 1, 2],
    ]);
  });
  it('inverse (queries attending each key)', () => {
    expect(inverse1d(9, 3, 2, false)).toEqual([[0, 2], [1, 3], [0, 2, 4], [1, 3, 5, 7], [0, 2, 4, 6, 8], [1, 3, 5, 7], [4, 6, 8], [5, 7], [6, 8]]);
  });
});

describe('§2.5.2 1-D, L=9, K=3, d=2, causal', () => {
  it('slots, -Infinity in invalid ones', () => {
    expect(slots1d(9, 3, 2, true)).toEqual([
      [0, null, null],
      [1, null, null],
      [0, 2, null],
      [1, 3, null],
      [0, 2, 4],
      [1, 3, 5],
      [2, 4, 6],
      [3, 5, 7],
      [4, 6, 8],
    ]);
  });
  it('inverse', () => {
    expect(inverse1d(9, 3, 2, true)).toEqual([[0, 2, 4], [1, 3, 5], [2, 4, 6], [3, 5, 7], [4, 6, 8], [5, 7], [6, 8], [7], [8]]);
  });
  it('av_backward writes 0 into d_attn for invalid slots, whatever attn holds there', () => {
    const attn = fromValues([1, 1, 9, 3], 'float64', new Array<number>(27).fill(Number.NEGATIVE_INFINITY).map((x, i) => (i % 3 === 0 ? 0.5 : x)));
    const value = fromValues([1, 1, 9, 2], 'float64', iota(18).map((i) => i + 1));
    const dO = fromValues([1, 1, 9, 2], 'float64', new Array<number>(18).fill(1));
    const dA = fromValues([1, 1, 9, 3], 'float64', new Array<number>(27).fill(Number.NaN));
    const dV = empty(value.shape, 'float64');
    na1dAvBackward(dA, dV, dO, attn, value, 3, 2, true);
    const slots = slots1d(9, 3, 2, true);
    slots.forEach((row, x) =>
      row.forEach((key, t) => {
        const got = dA.data[x * 3 + t];
        if (key === null) expect(got).toBe(0);
        else expect(got).toBe((value.data[key * 2] as number) + (value.data[key * 2 + 1] as number));
      }),
    );
  });
});

describe('§2.5 other 1-D cases', () => {
  it('L=9, K=3, d=1, non-causal: slots and inverse (border keys 2 and 6 get 4 queries)', () => {
    expect(slots1d(9, 3, 1, false)).toEqual([
      [0, 1, 2],
      [0, 1, 2],
      [1, 2, 3],
      [2, 3, 4],
      [3, 4, 5],
      [4, 5, 6],
      [5, 6, 7],
      [6, 7, 8],
      [6, 7, 8],
    ]);
    expect(inverse1d(9, 3, 1, false)).toEqual([[0, 1], [0, 1, 2], [0, 1, 2, 3], [2, 3, 4], [3, 4, 5], [4, 5, 6], [5, 6, 7, 8], [6, 7, 8], [7, 8]]);
  });
  it('even K: L=8, K=4, non-causal (2 keys left, 1 right) and its inverse', () => {
    expect(windows(1, [8], [4], [1], [false])).toEqual([
      [0, 1, 2, 3],
      [0, 1, 2, 3],
      [0, 1, 2, 3],
      [1, 2, 3, 4],
      [2, 3, 4, 5],
      [3, 4, 5, 6],
      [4, 5, 6, 7],
      [4, 5, 6, 7],
    ]);
    const inv = fusedInverse(8, 4, false);
    expect(inv[0]).toEqual([0, 1, 2]);
    expect(inv[3]).toEqual([0, 1, 2, 3, 4, 5]);
    expect(inv[4]).toEqual([3, 4, 5, 6, 7]);
    expect(inv[7]).toEqual([6, 7]);
  });
  it('even K, causal: L=8, K=4', () => {
    expect(windows(1, [8], [4], [1], [true])).toEqual([[0], [0, 1], [0, 1, 2], [0, 1, 2, 3], [1, 2, 3, 4], [2, 3, 4, 5], [3, 4, 5, 6], [4, 5, 6, 7]]);
  });
});

/** 2-D slot table of one query through qk_forward: 'r,c' per slot or null. */
function slots2d(X: number, Y: number, K: [number, number], d: [number, number], causal: [boolean, boolean], x: [number, number]): (string | null)[] {
  const P = K[0] * K[1];
  const attn = empty([1, 1, X, Y, P], 'float64');
  const q = fromValues([1, 1, X, Y, 2], 'float64', iota(X * Y * 2).map((i) => (i % 2 === 0 ? 100 : 1)));
  const k = fromValues([1, 1, X, Y, 2], 'float64', iota(X * Y * 2).map((i) => (i % 2 === 0 ? Math.floor(i / 2 / Y) : (i >> 1) % Y)));
  na2dQkForward(attn, q, k, null, K, d, causal);
  const off = (x[0] * Y + x[1]) * P;
  return Array.from(attn.data.subarray(off, off + P), (v) => (v === Number.NEGATIVE_INFINITY ? null : `${Math.floor(v / 100)},${v % 100}`));
}

function rpbSlots2d(x: [number, number]): string[] {
  const attn = empty([1, 1, 5, 5, 9], 'float64');
  const zero = empty([1, 1, 5, 5, 1], 'float64');
  const rpb = fromValues([1, 5, 5], 'float64', iota(25).map((i) => 100 * Math.floor(i / 5) + (i % 5)));
  na2dQkForward(attn, zero, zero, rpb, [3, 3], [1, 1], [false, false]);
  const off = (x[0] * 5 + x[1]) * 9;
  return Array.from(attn.data.subarray(off, off + 9), (v) => `${Math.floor(v / 100)},${v % 100}`);
}

function grid(rows: number[], cols: number[]): string[] {
  return rows.flatMap((r) => cols.map((c) => `${r},${c}`));
}

describe('§2.5.3 2-D, 5x5, K=(3,3)', () => {
  it('q=(0,0) non-causal: slots and rpb indices', () => {
    expect(slots2d(5, 5, [3, 3], [1, 1], [false, false], [0, 0])).toEqual(grid([0, 1, 2], [0, 1, 2]));
    expect(rpbSlots2d([0, 0])).toEqual(grid([2, 3, 4], [2, 3, 4]));
  });
  it('q=(2,2) non-causal', () => {
    expect(slots2d(5, 5, [3, 3], [1, 1], [false, false], [2, 2])).toEqual(grid([1, 2, 3], [1, 2, 3]));
    expect(rpbSlots2d([2, 2])).toEqual(grid([1, 2, 3], [1, 2, 3]));
  });
  it('q=(4,3) non-causal', () => {
    expect(slots2d(5, 5, [3, 3], [1, 1], [false, false], [4, 3])).toEqual(grid([2, 3, 4], [2, 3, 4]));
    expect(rpbSlots2d([4, 3])).toEqual(grid([0, 1, 2], [1, 2, 3]));
  });
  it('is_causal=(T,F): q=(1,0) has trailing invalid slots 6..8; q=(2,2)', () => {
    expect(slots2d(5, 5, [3, 3], [1, 1], [true, false], [1, 0])).toEqual([...grid([0, 1], [0, 1, 2]), null, null, null]);
    expect(slots2d(5, 5, [3, 3], [1, 1], [true, false], [2, 2])).toEqual(grid([0, 1, 2], [1, 2, 3]));
  });
  it('is_causal=(F,T): q=(2,0) has interleaved invalid slots; q=(2,2)', () => {
    expect(slots2d(5, 5, [3, 3], [1, 1], [false, true], [2, 0])).toEqual(['1,0', null, null, '2,0', null, null, '3,0', null, null]);
    expect(slots2d(5, 5, [3, 3], [1, 1], [false, true], [2, 2])).toEqual(grid([1, 2, 3], [0, 1, 2]));
  });
  it('dilated 6x7, K=(3,3), d=(2,2)', () => {
    const s = (x: [number, number]) => slots2d(6, 7, [3, 3], [2, 2], [false, false], x);
    expect(s([0, 0])).toEqual(grid([0, 2, 4], [0, 2, 4]));
    expect(s([5, 6])).toEqual(grid([1, 3, 5], [2, 4, 6]));
    expect(s([3, 4])).toEqual(grid([1, 3, 5], [2, 4, 6]));
  });
});

describe('§2.7 stride', () => {
  it('L=10, K=4, s=2, non-causal', () => {
    const w = windows(1, [10], [4], [1], [false], [2]);
    const expected = [0, 0, 1, 1, 3, 3, 5, 5, 6, 6].map((s) => [s, s + 1, s + 2, s + 3]);
    expect(w).toEqual(expected);
  });
  it('L=10, K=4, s=2, causal (the end still uses the query itself)', () => {
    expect(windows(1, [10], [4], [1], [true], [2])).toEqual([
      [0],
      [0, 1],
      [0, 1, 2],
      [0, 1, 2, 3],
      [2, 3, 4],
      [2, 3, 4, 5],
      [4, 5, 6],
      [4, 5, 6, 7],
      [6, 7, 8],
      [6, 7, 8, 9],
    ]);
  });
  it('L=9, K=3, s=3: blocked attention, non-causal and causal (through qk_forward)', () => {
    expect(slots1d(9, 3, 1, false, 3)).toEqual([0, 0, 0, 3, 3, 3, 6, 6, 6].map((s) => [s, s + 1, s + 2]));
    const causal = slots1d(9, 3, 1, true, 3);
    expect(causal.slice(3, 6)).toEqual([
      [3, null, null],
      [3, 4, null],
      [3, 4, 5],
    ]);
  });
});

describe('§5 rpb worked example (L=9, K=3, d=1)', () => {
  it('q0, q4 and q8 use rpb[2..4], rpb[1..3] and rpb[0..2]', () => {
    const r = rpbSlots1d(9, 3, 1);
    expect([r[0], r[4], r[8]]).toEqual([
      [2, 3, 4],
      [1, 2, 3],
      [0, 1, 2],
    ]);
  });
  it('d_rpb[0] comes only from q8 slot 0, d_rpb[4] only from q0 slot 2; all-ones d_attn gives counts [1, 8, 9, 8, 1]', () => {
    const q = empty([1, 1, 9, 1], 'float64');
    const dRpbFor = (dAttn: number[]) => {
      const gradRpb = empty([1, 5], 'float64');
      na1dQkBackward(empty(q.shape, 'float64'), empty(q.shape, 'float64'), gradRpb, fromValues([1, 1, 9, 3], 'float64', dAttn), q, q, 3, 1, false);
      return Array.from(gradRpb.data);
    };
    const oneHot = (i: number) => iota(27).map((j) => (j === i ? 1 : 0));
    expect(dRpbFor(oneHot(8 * 3 + 0))).toEqual([1, 0, 0, 0, 0]);
    expect(dRpbFor(oneHot(0 * 3 + 2))).toEqual([0, 0, 0, 0, 1]);
    expect(dRpbFor(new Array<number>(27).fill(1))).toEqual([1, 8, 9, 8, 1]);
  });
});

describe('3-D slot order is row-major over the kernel axes', () => {
  it('every slot of an interior query of a 4x4x4 grid, K=(3,3,3)', () => {
    const attn = empty([1, 1, 4, 4, 4, 27], 'float64');
    const q = fromValues([1, 1, 4, 4, 4, 3], 'float64', iota(64 * 3).map((i) => [100, 10, 1][i % 3] as number));
    const k = tensor([1, 1, 4, 4, 4, 3], 'float64');
    for (let i = 0; i < 64; i++) {
      k.data[i * 3] = Math.floor(i / 16);
      k.data[i * 3 + 1] = Math.floor(i / 4) % 4;
      k.data[i * 3 + 2] = i % 4;
    }
    qkForward(3, { attn, query: q, key: k, kernelSize: 3 });
    const x = (1 * 4 + 2) * 4 + 1; // (1, 2, 1)
    const expected: number[] = [];
    for (const a of [0, 1, 2]) for (const b of [1, 2, 3]) for (const c of [0, 1, 2]) expected.push(100 * a + 10 * b + c);
    expect(Array.from(attn.data.subarray(x * 27, x * 27 + 27))).toEqual(expected);
  });
});
