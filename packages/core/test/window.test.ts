/**
 * Window math (spec §2, §5, §7.5): the worked tables, then exhaustive checks of every per-axis
 * function against brute force and against independent formulations of the spec.
 */
import { describe, expect, it } from 'vitest';
import {
  type AxisParams,
  axisInverse,
  axisWindow,
  buildAxisTables,
  buildTables,
  groupLength,
  inverseGroupRange,
  leftRadius,
  normalizeParams,
  rightRadius,
  rpbIndex,
  slotOf,
  validSlotsInGroup,
  windowStartInGroup,
} from '../src/index.ts';

function ax(length: number, kernelSize: number, dilation = 1, causal = false, stride = 1): AxisParams {
  return { length, kernelSize, dilation, causal, stride };
}

/** Keys of query x in slot order, null for invalid slots (padded to K). */
function slots(x: number, p: AxisParams): (number | null)[] {
  const w = axisWindow(x, p);
  return Array.from({ length: p.kernelSize }, (_, t) => (t < w.count ? w.start + t * p.dilation : null));
}

function inverseList(j: number, p: AxisParams): number[] {
  const r = axisInverse(j, p);
  const out: number[] = [];
  for (let x = r.first; x < r.end; x += p.dilation) out.push(x);
  return out;
}

function all<T>(L: number, f: (i: number) => T): T[] {
  return Array.from({ length: L }, (_, i) => f(i));
}

describe('helpers', () => {
  it('group length, radii', () => {
    expect(all(2, (g) => groupLength(9, 2, g))).toEqual([5, 4]);
    expect(all(3, (g) => groupLength(10, 3, g))).toEqual([4, 3, 3]);
    expect([leftRadius(3), rightRadius(3)]).toEqual([1, 1]);
    expect([leftRadius(4), rightRadius(4)]).toEqual([2, 1]);
    expect([leftRadius(7), rightRadius(7)]).toEqual([3, 3]);
    expect([leftRadius(2), rightRadius(2)]).toEqual([1, 0]);
  });
  it('validSlotsInGroup is K when non-causal and min(i - start + 1, K) when causal', () => {
    expect(validSlotsInGroup(0, 0, 3, false)).toBe(3);
    expect(validSlotsInGroup(1, 0, 3, true)).toBe(2);
    expect(validSlotsInGroup(5, 3, 3, true)).toBe(3);
  });
});

describe('§2.5.1 1-D, L=9, K=3, d=2, non-causal', () => {
  const p = ax(9, 3, 2);
  it('slots', () => {
    expect(all(9, (x) => slots(x, p))).toEqual([
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
    expect(all(9, (x) => slots(x, p).map((j) => rpbIndex(x, j as number, 2, 3)))).toEqual([
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
  it('inverse', () => {
    expect(all(9, (j) => inverseList(j, p))).toEqual([[0, 2], [1, 3], [0, 2, 4], [1, 3, 5, 7], [0, 2, 4, 6, 8], [1, 3, 5, 7], [4, 6, 8], [5, 7], [6, 8]]);
  });
  it('slotOf finds each key in its slot and rejects other groups and non-members', () => {
    expect(slotOf(7, 3, p)).toBe(0);
    expect(slotOf(7, 7, p)).toBe(2);
    expect(slotOf(7, 1, p)).toBe(-1);
    expect(slotOf(7, 4, p)).toBe(-1);
  });
});

describe('§2.5.2 1-D, L=9, K=3, d=2, causal', () => {
  const p = ax(9, 3, 2, true);
  it('slots', () => {
    expect(all(9, (x) => slots(x, p))).toEqual([
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
    expect(all(9, (j) => inverseList(j, p))).toEqual([[0, 2, 4], [1, 3, 5], [2, 4, 6], [3, 5, 7], [4, 6, 8], [5, 7], [6, 8], [7], [8]]);
  });
  it('slotOf rejects a key in an invalid (future) slot', () => {
    expect(slotOf(2, 4, p)).toBe(-1);
    expect(slotOf(2, 2, p)).toBe(1);
  });
});

describe('§2.5 other 1-D cases', () => {
  it('L=9, K=3, d=1, non-causal', () => {
    const p = ax(9, 3);
    expect(all(9, (x) => slots(x, p))).toEqual([
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
    expect(all(9, (j) => inverseList(j, p))).toEqual([[0, 1], [0, 1, 2], [0, 1, 2, 3], [2, 3, 4], [3, 4, 5], [4, 5, 6], [5, 6, 7, 8], [6, 7, 8], [7, 8]]);
  });
  it('even K: L=8, K=4, non-causal', () => {
    const p = ax(8, 4);
    expect(all(8, (x) => slots(x, p))).toEqual([
      [0, 1, 2, 3],
      [0, 1, 2, 3],
      [0, 1, 2, 3],
      [1, 2, 3, 4],
      [2, 3, 4, 5],
      [3, 4, 5, 6],
      [4, 5, 6, 7],
      [4, 5, 6, 7],
    ]);
    expect(inverseList(0, p)).toEqual([0, 1, 2]);
    expect(inverseList(3, p)).toEqual([0, 1, 2, 3, 4, 5]);
    expect(inverseList(4, p)).toEqual([3, 4, 5, 6, 7]);
    expect(inverseList(7, p)).toEqual([6, 7]);
  });
  it('even K, causal: L=8, K=4', () => {
    const p = ax(8, 4, 1, true);
    expect(all(8, (x) => slots(x, p))).toEqual([
      [0, null, null, null],
      [0, 1, null, null],
      [0, 1, 2, null],
      [0, 1, 2, 3],
      [1, 2, 3, 4],
      [2, 3, 4, 5],
      [3, 4, 5, 6],
      [4, 5, 6, 7],
    ]);
  });
});

/** 2-D slots of one query, composed row-major from the per-axis windows: 'r,c' or null. */
function slots2d(X: number, Y: number, K: [number, number], d: [number, number], causal: [boolean, boolean], x: [number, number]): (string | null)[] {
  const params = normalizeParams('test', 2, { kernelSize: K, dilation: d, isCausal: causal }, [X, Y]);
  const [t0, t1] = buildTables(params, [X, Y]);
  if (!t0 || !t1) throw new Error('expected two tables');
  const out: (string | null)[] = [];
  for (let a = 0; a < K[0]; a++) {
    for (let b = 0; b < K[1]; b++) {
      const ok = a < (t0.count[x[0]] as number) && b < (t1.count[x[1]] as number);
      out.push(ok ? `${(t0.start[x[0]] as number) + a * d[0]},${(t1.start[x[1]] as number) + b * d[1]}` : null);
    }
  }
  return out;
}

function grid(rows: number[], cols: number[]): string[] {
  return rows.flatMap((r) => cols.map((c) => `${r},${c}`));
}

describe('§2.5.3 2-D, 5x5, K=(3,3)', () => {
  const s = (causal: [boolean, boolean], x: [number, number]) => slots2d(5, 5, [3, 3], [1, 1], causal, x);
  const rpb = (x: [number, number]) =>
    (s([false, false], x) as string[]).map((key) => {
      const [r, c] = key.split(',').map(Number) as [number, number];
      return `${rpbIndex(x[0], r, 1, 3)},${rpbIndex(x[1], c, 1, 3)}`;
    });
  it('q=(0,0), (2,2), (4,3) non-causal, with rpb indices', () => {
    expect(s([false, false], [0, 0])).toEqual(grid([0, 1, 2], [0, 1, 2]));
    expect(rpb([0, 0])).toEqual(grid([2, 3, 4], [2, 3, 4]));
    expect(s([false, false], [2, 2])).toEqual(grid([1, 2, 3], [1, 2, 3]));
    expect(rpb([2, 2])).toEqual(grid([1, 2, 3], [1, 2, 3]));
    expect(s([false, false], [4, 3])).toEqual(grid([2, 3, 4], [2, 3, 4]));
    expect(rpb([4, 3])).toEqual(grid([0, 1, 2], [1, 2, 3]));
  });
  it('is_causal=(T,F): trailing invalid slots', () => {
    expect(s([true, false], [1, 0])).toEqual([...grid([0, 1], [0, 1, 2]), null, null, null]);
    expect(s([true, false], [2, 2])).toEqual(grid([0, 1, 2], [1, 2, 3]));
  });
  it('is_causal=(F,T): interleaved invalid slots', () => {
    expect(s([false, true], [2, 0])).toEqual(['1,0', null, null, '2,0', null, null, '3,0', null, null]);
    expect(s([false, true], [2, 2])).toEqual(grid([1, 2, 3], [0, 1, 2]));
  });
  it('dilated 6x7, K=(3,3), d=(2,2)', () => {
    const sd = (x: [number, number]) => slots2d(6, 7, [3, 3], [2, 2], [false, false], x);
    expect(sd([0, 0])).toEqual(grid([0, 2, 4], [0, 2, 4]));
    expect(sd([5, 6])).toEqual(grid([1, 3, 5], [2, 4, 6]));
    expect(sd([3, 4])).toEqual(grid([1, 3, 5], [2, 4, 6]));
  });
});

describe('§2.7 stride', () => {
  it('L=10, K=4, s=2, non-causal', () => {
    const p = ax(10, 4, 1, false, 2);
    expect(all(10, (x) => axisWindow(x, p).start)).toEqual([0, 0, 1, 1, 3, 3, 5, 5, 6, 6]);
    expect(all(10, (x) => axisWindow(x, p).count)).toEqual(new Array(10).fill(4));
  });
  it('L=10, K=4, s=2, causal', () => {
    const p = ax(10, 4, 1, true, 2);
    expect(all(10, (x) => slots(x, p))).toEqual([
      [0, null, null, null],
      [0, 1, null, null],
      [0, 1, 2, null],
      [0, 1, 2, 3],
      [2, 3, 4, null],
      [2, 3, 4, 5],
      [4, 5, 6, null],
      [4, 5, 6, 7],
      [6, 7, 8, null],
      [6, 7, 8, 9],
    ]);
  });
  it('L=9, K=3, s=3: blocked, non-causal and causal', () => {
    expect(all(9, (x) => axisWindow(x, ax(9, 3, 1, false, 3)).start)).toEqual([0, 0, 0, 3, 3, 3, 6, 6, 6]);
    const pc = ax(9, 3, 1, true, 3);
    expect([3, 4, 5].map((x) => slots(x, pc))).toEqual([
      [3, null, null],
      [3, 4, null],
      [3, 4, 5],
    ]);
  });
  it('stride 1 reduces to the seed windows', () => {
    for (let x = 0; x < 9; x++) expect(axisWindow(x, ax(9, 3, 2, false, 1))).toEqual(axisWindow(x, ax(9, 3, 2, false)));
  });
});

describe('§5 rpb index', () => {
  it('(j - x)/d + K - 1; the own position maps to K - 1', () => {
    expect(rpbIndex(4, 4, 1, 3)).toBe(2);
    expect(rpbIndex(8, 6, 1, 3)).toBe(0);
    expect(rpbIndex(0, 2, 1, 3)).toBe(4);
    expect(rpbIndex(5, 1, 2, 5)).toBe(2);
    expect(rpbIndex(6, 6, 3, 7)).toBe(6);
  });
  it('stays in [0, 2K-2] for every window member, and d=1 matches v0.17.5 pb_start(x) + t', () => {
    const bad: string[] = [];
    for (let L = 2; L <= 30; L++) {
      for (let K = 2; K <= L; K++) {
        for (let d = 1; K * d <= L; d++) {
          const p = ax(L, K, d);
          for (let x = 0; x < L; x++) {
            const w = axisWindow(x, p);
            for (let t = 0; t < w.count; t++) {
              const r = rpbIndex(x, w.start + t * d, d, K);
              if (!(r >= 0 && r <= 2 * K - 2 && Number.isInteger(r))) bad.push(`L=${L} K=${K} d=${d} x=${x} t=${t}: ${r}`);
            }
            if (d === 1 && K % 2 === 1) {
              const rl = leftRadius(K);
              const pbStart = rl + (x < rl ? rl - x : 0) + (x + rl >= L ? L - x - 1 - rl : 0);
              if (rpbIndex(x, w.start, 1, K) !== pbStart) bad.push(`pb_start L=${L} K=${K} x=${x}`);
            }
          }
        }
      }
    }
    expect(bad.slice(0, 5)).toEqual([]);
  });
});

/** Brute-force membership: key j is valid for query x iff it appears among x's valid slots. */
function members(x: number, p: AxisParams): Set<number> {
  const w = axisWindow(x, p);
  const s = new Set<number>();
  for (let t = 0; t < w.count; t++) s.add(w.start + t * p.dilation);
  return s;
}

/** Independent §2.8 (v0.17.5 Flex) description of the stride-1 windows, in original coordinates. */
function flexMember(q: number, k: number, L: number, K: number, d: number, causal: boolean): boolean {
  if (((q - k) % d + d) % d !== 0) return false;
  if (causal) return q - k >= 0 && q - k < K * d;
  // Work inside the dilation group, where the Flex rule reads: center = clamp(q', rl, n-1-rr).
  const g = q % d;
  const n = Math.ceil((L - g) / d);
  const qq = (q - g) / d;
  const kk = (k - g) / d;
  const left = Math.floor(K / 2);
  const right = Math.floor(K / 2) + (K % 2) - 1;
  const center = Math.min(Math.max(qq, left), n - 1 - right);
  return center - left <= kk && kk <= center + right;
}

describe('exhaustive: every L <= 30, K, d with K*d <= L, causal or not, stride 1..K', () => {
  it('windows lie in the query dilation group, have K slots (count valid), and causal windows end at the query', () => {
    const bad: string[] = [];
    for (let L = 2; L <= 30; L++) {
      for (let K = 2; K <= L; K++) {
        for (let d = 1; K * d <= L; d++) {
          for (const causal of [false, true]) {
            for (let s = 1; s <= K; s++) {
              const p = ax(L, K, d, causal, s);
              for (let x = 0; x < L; x++) {
                const w = axisWindow(x, p);
                const ok =
                  w.start >= 0 &&
                  w.start % d === x % d &&
                  w.start + (K - 1) * d < L &&
                  (causal ? w.count >= 1 && w.start + (w.count - 1) * d === x : w.count === K);
                if (!ok) bad.push(`L=${L} K=${K} d=${d} causal=${causal} s=${s} x=${x}: ${JSON.stringify(w)}`);
              }
            }
          }
        }
      }
    }
    expect(bad.slice(0, 5)).toEqual([]);
  });

  it('inverse ranges are exact against brute force (no missing and no false candidates)', () => {
    let checked = 0;
    const bad: string[] = [];
    for (let L = 2; L <= 30; L++) {
      for (let K = 2; K <= L; K++) {
        for (let d = 1; K * d <= L; d++) {
          for (const causal of [false, true]) {
            for (let s = 1; s <= K; s++) {
              const p = ax(L, K, d, causal, s);
              // membership matrix: m[x * L + j] = 1 when query x attends key j
              const m = new Uint8Array(L * L);
              for (let x = 0; x < L; x++) {
                const w = axisWindow(x, p);
                for (let t = 0; t < w.count; t++) m[x * L + w.start + t * d] = 1;
              }
              const tables = buildAxisTables(p);
              for (let j = 0; j < L; j++) {
                const brute: number[] = [];
                for (let x = 0; x < L; x++) if (m[x * L + j]) brute.push(x);
                const got = inverseList(j, p);
                const inv = axisInverse(j, p);
                if (got.length !== brute.length || got.some((x, i) => x !== brute[i]) || tables.invFirst[j] !== inv.first || tables.invEnd[j] !== inv.end) {
                  bad.push(`L=${L} K=${K} d=${d} causal=${causal} s=${s} key ${j}: inverse ${JSON.stringify(got)} vs brute force ${JSON.stringify(brute)}`);
                }
                checked++;
              }
            }
          }
        }
      }
    }
    expect(bad.slice(0, 5)).toEqual([]);
    expect(checked).toBeGreaterThan(100_000);
  });

  it('stride-1 windows equal the independent v0.17.5 Flex-mask description (§2.8)', () => {
    const bad: string[] = [];
    for (let L = 2; L <= 30; L++) {
      for (let K = 2; K <= L; K++) {
        for (let d = 1; K * d <= L; d++) {
          for (const causal of [false, true]) {
            const p = ax(L, K, d, causal);
            for (let q = 0; q < L; q++) {
              const set = members(q, p);
              for (let k = 0; k < L; k++) {
                if (set.has(k) !== flexMember(q, k, L, K, d, causal)) {
                  bad.push(`L=${L} K=${K} d=${d} causal=${causal}: query ${q}, key ${k}: core ${set.has(k)}, flex ${!set.has(k)}`);
                }
              }
            }
          }
        }
      }
    }
    expect(bad.slice(0, 5)).toEqual([]);
  });

  it('non-causal stride: every member of a stride group shares the leader window; s = K and K | n gives disjoint blocks', () => {
    const bad: string[] = [];
    for (let L = 2; L <= 30; L++) {
      for (let K = 2; K <= L; K++) {
        for (let s = 1; s <= K; s++) {
          for (let i = 0; i < L; i++) {
            if (windowStartInGroup(i, L, K, false, s) !== windowStartInGroup(Math.floor(i / s) * s, L, K, false, s)) bad.push(`n=${L} K=${K} s=${s} i=${i}`);
            if (s === K && L % K === 0 && windowStartInGroup(i, L, K, false, K) !== Math.floor(i / K) * K) bad.push(`blocked n=${L} K=${K} i=${i}`);
          }
        }
      }
    }
    expect(bad).toEqual([]);
  });

  it('inverseGroupRange agrees with axisInverse in group coordinates', () => {
    expect(inverseGroupRange(2, 5, 3, false)).toEqual([0, 5]);
    expect(inverseGroupRange(3, 4, 3, true)).toEqual([3, 4]);
    const p = ax(9, 3, 2);
    expect(axisInverse(3, p)).toEqual({ first: 1, end: 9 });
  });
});
