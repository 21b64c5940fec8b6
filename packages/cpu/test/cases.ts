/** Case grid shared by the CPU tests: small problems that still cover every window feature. */
import type { DType, NaRank } from '@natten-web/core';

export interface Case {
  rank: NaRank;
  B: number;
  spatial: number[];
  H: number;
  Hkv: number;
  D: number;
  Dv: number;
  K: number[];
  d: number[];
  causal: boolean[];
  s: number[];
  rpb: boolean;
}

export function caseKey(c: Case, dtype?: DType): string {
  const parts = [
    `${c.rank}d`,
    `B${c.B}`,
    `sp${c.spatial.join('x')}`,
    `H${c.H}/${c.Hkv}`,
    `D${c.D}/${c.Dv}`,
    `K${c.K.join('x')}`,
    `d${c.d.join('x')}`,
    `c${c.causal.map((v) => (v ? 'T' : 'F')).join('')}`,
    `s${c.s.join('x')}`,
  ];
  if (c.rpb) parts.push('rpb');
  if (dtype) parts.push(dtype);
  return parts.join(' ');
}

function mk(rank: NaRank, spatial: number[], K: number[], extra: Partial<Case> = {}): Case {
  return {
    rank,
    B: 1,
    spatial,
    H: 2,
    Hkv: 2,
    D: 4,
    Dv: 4,
    K,
    d: spatial.map(() => 1),
    causal: spatial.map(() => false),
    s: spatial.map(() => 1),
    rpb: false,
    ...extra,
  };
}

/** Every causal combination of a rank. */
export function causalCombos(rank: NaRank): boolean[][] {
  const out: boolean[][] = [];
  for (let m = 0; m < 1 << rank; m++) out.push(Array.from({ length: rank }, (_, a) => ((m >> a) & 1) === 1));
  return out;
}

/** The fused-op grid: odd/even K, dilation up to 4, all causal combos, non-square, K*d == L, stride, GQA, Dv != D, rpb. */
export function fusedCases(): Case[] {
  const cases: Case[] = [
    // 1-D
    mk(1, [9], [3], { d: [2] }),
    mk(1, [9], [3], { d: [2], causal: [true] }),
    mk(1, [9], [3], { d: [2], rpb: true }),
    mk(1, [8], [4]),
    mk(1, [8], [4], { causal: [true] }),
    mk(1, [13], [3], { d: [4] }),
    mk(1, [12], [3], { d: [4], causal: [true] }), // K*d == L
    mk(1, [7], [7]), // K == L: full attention
    mk(1, [10], [4], { s: [2] }),
    mk(1, [10], [4], { s: [2], causal: [true] }),
    mk(1, [9], [3], { s: [3] }),
    mk(1, [11], [5], { B: 2, H: 4, Hkv: 2, D: 4, Dv: 6 }),
    mk(1, [11], [5], { H: 3, Hkv: 1, Dv: 2, causal: [true], d: [2] }),
    // 2-D
    mk(2, [5, 5], [3, 3], { rpb: true }),
    mk(2, [6, 7], [3, 3], { d: [2, 2] }),
    mk(2, [6, 7], [3, 3], { d: [2, 2], rpb: true }),
    mk(2, [7, 5], [4, 2]),
    mk(2, [6, 8], [3, 2], { d: [2, 4] }), // K*d == L on both axes
    mk(2, [6, 10], [5, 3], { d: [1, 3], s: [2, 3] }),
    mk(2, [5, 6], [3, 4], { H: 4, Hkv: 1, Dv: 3, d: [1, 1] }),
    mk(2, [5, 6], [3, 3], { B: 2, rpb: true, H: 4, Hkv: 2 }),
    // 3-D
    mk(3, [4, 5, 6], [3, 3, 3], { rpb: true }),
    mk(3, [4, 6, 5], [2, 3, 4], { d: [2, 2, 1] }),
    mk(3, [3, 4, 8], [3, 2, 2], { d: [1, 2, 4], s: [2, 1, 2], H: 2, Hkv: 1, Dv: 5 }),
  ];
  for (const causal of causalCombos(2)) {
    cases.push(mk(2, [5, 6], [3, 4], { causal, d: [1, 1] }));
    cases.push(mk(2, [7, 6], [3, 2], { causal, d: [2, 3] }));
    cases.push(mk(2, [8, 6], [4, 3], { causal, s: [3, 2] }));
  }
  for (const causal of causalCombos(3)) {
    cases.push(mk(3, [4, 5, 6], [3, 2, 3], { causal, d: [1, 2, 2] }));
  }
  return cases;
}

/** The BMM-op grid (odd K only, like NATTEN's qk/av ops). */
export function bmmCases(): Case[] {
  const cases: Case[] = [
    mk(1, [9], [3], { d: [2] }),
    mk(1, [9], [3], { d: [2], causal: [true] }),
    mk(1, [9], [3], { rpb: true }),
    mk(1, [12], [3], { d: [4] }),
    mk(1, [11], [5], { s: [3] }),
    mk(2, [5, 5], [3, 3], { rpb: true }),
    mk(2, [6, 7], [3, 3], { d: [2, 2], rpb: true }),
    mk(2, [9, 8], [3, 5], { d: [3, 1] }),
    mk(3, [4, 5, 6], [3, 3, 3], { rpb: true, d: [1, 1, 2] }),
    mk(3, [6, 5, 3], [3, 5, 3], { s: [2, 3, 1] }),
  ];
  for (const causal of causalCombos(2)) cases.push(mk(2, [6, 5], [3, 3], { causal, d: [2, 1] }));
  for (const causal of causalCombos(3)) cases.push(mk(3, [4, 5, 3], [3, 3, 3], { causal, d: [1, 1, 1] }));
  return cases;
}
