import { normalizeParams, OP_FAMILIES, type NaRank } from '@natten-web/core';
import { describe, expect, it } from 'vitest';
import { buildCases, causalCombos, conformanceCases, countCases, cross, crossAll, filter, findExclusion, type NaCase, seedOf } from '../src/index.ts';

const quick = buildCases({ size: 'quick', dtypes: ['float64', 'float32', 'float16'] });
const large = buildCases({ size: 'large', dtypes: ['float32', 'float16'] });
const RANKS: NaRank[] = [1, 2, 3];
const BMM = new Set(['qk_forward', 'qk_backward', 'av_forward', 'av_backward']);

const some = (cases: readonly NaCase[], pred: (c: NaCase) => boolean): boolean => cases.some(pred);

describe('combine/filter helpers', () => {
  it('cross, crossAll, filter, causalCombos', () => {
    expect(cross([{ a: 1 }, { a: 2 }], [{ b: 'x' }, { b: 'y' }])).toEqual([
      { a: 1, b: 'x' },
      { a: 1, b: 'y' },
      { a: 2, b: 'x' },
      { a: 2, b: 'y' },
    ]);
    expect(crossAll<{ a: number; b: number; c: number }>([{ a: 1 }, { a: 2 }], [{ b: 3 }], [{ c: 4 }, { c: 5 }])).toHaveLength(4);
    expect(filter([1, 2, 3, 4], (x) => x % 2 === 0)).toEqual([2, 4]);
    expect(causalCombos(1)).toEqual([[false], [true]]);
    expect(causalCombos(2)).toEqual([[false, false], [false, true], [true, false], [true, true]]);
    expect(causalCombos(3)).toHaveLength(8);
  });
});

describe('quick grid', () => {
  it('keys are unique, readable and seed the inputs deterministically', () => {
    expect(new Set(quick.map((c) => c.key)).size).toBe(quick.length);
    expect(quick[0]?.key).toBe('na1d_forward f64 sp=9 K=3 d=2 causal=F lse B=1 H=2 D=4');
    expect(quick.some((c) => /^na2d_forward f16 sp=\d+x\d+ K=3x5 d=1x2 causal=TF lse B=1 H=2 D=8$/.test(c.key))).toBe(true);
    for (const c of quick) expect(c.seed).toBe(seedOf(c.key));
  });

  it('every case is valid for core (K*d <= L, s <= K) and respects the op rules (odd K for BMM and rpb; rpb non-causal; GQA/dimV fused only)', () => {
    for (const c of quick) {
      expect(() => normalizeParams(c.key, c.rank, c, c.spatial)).not.toThrow();
      const oddK = c.kernelSize.every((k) => k % 2 === 1);
      if (BMM.has(c.op)) {
        expect(oddK, c.key).toBe(true);
        expect(c.headsKv, c.key).toBe(c.heads);
        expect(c.dimV, c.key).toBe(c.dim);
      }
      if (c.rpb) {
        expect(oddK && !c.isCausal.some(Boolean), c.key).toBe(true);
        expect(c.op.startsWith('av'), c.key).toBe(false);
      }
      if (c.lse) expect(c.op).toBe('forward');
      expect(c.heads % c.headsKv).toBe(0);
    }
  });

  it('stays small: 1-D extents <= 70, 2-D <= 12, 3-D <= 6, heads <= 2, dims 4..16; 150..300 GPU cases (f32 + f16)', () => {
    for (const c of quick) {
      const max = c.rank === 3 ? 6 : c.rank === 2 ? 12 : 70;
      for (const L of c.spatial) expect(L, c.key).toBeLessThanOrEqual(max);
      expect(c.heads).toBeLessThanOrEqual(2);
      for (const d of [c.dim, c.dimV]) {
        expect(d).toBeGreaterThanOrEqual(4);
        expect(d).toBeLessThanOrEqual(16);
      }
    }
    const gpu = quick.filter((c) => c.dtype !== 'float64').length;
    expect(gpu).toBeGreaterThanOrEqual(150);
    expect(gpu).toBeLessThanOrEqual(300);
  });

  it('covers every op x rank x dtype, and per rank every causal combination, even K, rpb, lse on/off, stride, GQA, dimV != dim, K*d == L, partial tiles', () => {
    const counts = countCases(quick);
    for (const rank of RANKS) {
      for (const op of OP_FAMILIES) {
        for (const dt of ['float64', 'float32', 'float16'] as const) expect(counts[`na${rank}d_${op}`]?.[dt] ?? 0).toBeGreaterThan(0);
      }
      const r = quick.filter((c) => c.rank === rank && c.dtype === 'float32');
      for (const combo of causalCombos(rank)) {
        for (const op of OP_FAMILIES) {
          expect(some(r, (c) => c.op === op && c.isCausal.join() === combo.join()), `${op} rank ${rank} causal ${combo}`).toBe(true);
        }
      }
      for (const op of ['forward', 'backward'] as const) {
        expect(some(r, (c) => c.op === op && c.kernelSize.some((k) => k % 2 === 0)), `even K ${op} ${rank}`).toBe(true);
        expect(some(r, (c) => c.op === op && c.headsKv < c.heads), `GQA ${op} ${rank}`).toBe(true);
        expect(some(r, (c) => c.op === op && c.dimV !== c.dim), `dimV ${op} ${rank}`).toBe(true);
      }
      for (const op of ['forward', 'backward', 'qk_forward', 'qk_backward'] as const) {
        expect(some(r, (c) => c.op === op && c.rpb), `rpb ${op} ${rank}`).toBe(true);
        expect(some(r, (c) => c.op === op && !c.rpb), `no rpb ${op} ${rank}`).toBe(true);
      }
      expect(some(r, (c) => c.op === 'forward' && c.lse)).toBe(true);
      expect(some(r, (c) => c.op === 'forward' && !c.lse)).toBe(true);
      for (const op of OP_FAMILIES) {
        expect(some(r, (c) => c.op === op && c.stride.some((s) => s > 1)), `stride ${op} ${rank}`).toBe(true);
        expect(some(r, (c) => c.op === op && c.spatial.some((L, a) => (c.kernelSize[a] as number) * (c.dilation[a] as number) === L)), `K*d == L ${op} ${rank}`).toBe(true);
        expect(some(r, (c) => c.op === op && c.spatial.some((L) => L % 8 !== 0)), `partial tile ${op} ${rank}`).toBe(true);
      }
      expect(some(r, (c) => c.spatial.length > 1 && new Set(c.spatial).size > 1) || rank === 1).toBe(true);
      expect(some(r, (c) => c.batch > 1)).toBe(true);
    }
    const dilations = new Set(quick.flatMap((c) => c.dilation));
    expect([...dilations].sort()).toEqual([1, 2, 3, 4]);
    expect(some(quick, (c) => c.kernelSize.every((k, a) => k === c.spatial[a]))).toBe(true);
  });
});

describe('large grid', () => {
  it('uses the NVIDIA sizes: 1-D 4096, 2-D 128x128, 3-D 16x32x32, head dim 64', () => {
    expect(new Set(large.map((c) => c.key)).size).toBe(large.length);
    for (const c of large) {
      const expected = c.rank === 1 ? [4096] : c.rank === 2 ? [128, 128] : [16, 32, 32];
      expect(c.spatial).toEqual(expected);
      expect(c.op.startsWith('av') ? c.dim : Math.max(c.dim, c.dimV)).toBe(64);
      expect(() => normalizeParams(c.key, c.rank, c, c.spatial)).not.toThrow();
    }
    const counts = countCases(large);
    for (const rank of RANKS) for (const op of OP_FAMILIES) expect(counts[`na${rank}d_${op}`]?.float32 ?? 0).toBeGreaterThan(0);
  });
});

describe('conformanceCases and exclusions', () => {
  it('filters by dtype, op and rank; exclusions match keys', () => {
    const cs = conformanceCases({ dtypes: ['float16'], ops: ['qk_forward'], ranks: [2] });
    expect(cs.length).toBeGreaterThan(0);
    for (const c of cs) expect([c.dtype, c.op, c.rank]).toEqual(['float16', 'qk_forward', 2]);
    const ex = [{ pattern: /^na3d_\w+ f16 /, reason: 'no 3-D f16 kernels' }];
    expect(findExclusion('na3d_forward f16 sp=5x6x4 K=3x3x3', ex)?.reason).toBe('no 3-D f16 kernels');
    expect(findExclusion('na2d_forward f16 sp=5x6 K=3x3', ex)).toBeUndefined();
  });
});

describe('defineNaConformance arguments', () => {
  it("refuses size 'large' with the dense oracle (O(N^2) at 16k tokens) before registering anything", async () => {
    const { defineNaConformance, createOracleBackend } = await import('../src/index.ts');
    expect(() =>
      defineNaConformance({ name: 'x', makeBackend: async () => createOracleBackend(), dtypes: ['float32'], size: 'large', reference: 'oracle' }),
    ).toThrow(/size 'large' cannot use the dense O\(N\^2\) oracle; pass reference: 'cpu'/);
  });
});
