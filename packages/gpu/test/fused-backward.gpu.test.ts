import { afterAll, describe, expect, it } from 'vitest';
import { bitEqual, type BwdCase, caseName, compareGrads, expectGradsClose, maxAbs, prepare, runGpu } from './fused-backward-cases.ts';
import { gpuContext } from './setup.ts';

/** Fused backward on WebGPU against the CPU reference (f64 math on f32 copies of the GPU's exact inputs). */

function causalCombos(rank: number): boolean[][] {
  const out: boolean[][] = [];
  for (let m = 0; m < 1 << rank; m++) out.push(Array.from({ length: rank }, (_, a) => ((m >> a) & 1) === 1));
  return out;
}

/** lavapipe on a shared 2-core machine compiles each new variant in 0.5-30 s depending on load. */
const TIMEOUT = 300_000;

const split = (q: number[], k: number[], s: number[], torch = false) => ({ queryTile: q, keyTile: k, numSplitsKey: s, computeDeltaWithTorch: torch });

const cases: BwdCase[] = [
  // rank 1: odd/even K, dilation, causal, stride, K*d == L, GQA, Dv != D, rpb, f16, partial tiles (13 < 16-row tiles).
  { rank: 1, batch: 2, spatial: [13], heads: 2, dim: 8, kernelSize: [3], dtype: 'float32' },
  { rank: 1, batch: 1, spatial: [13], heads: 2, dim: 8, kernelSize: [4], dtype: 'float32' },
  { rank: 1, batch: 1, spatial: [17], heads: 1, dim: 8, kernelSize: [5], dilation: [2], dtype: 'float32' },
  { rank: 1, batch: 1, spatial: [17], heads: 1, dim: 8, kernelSize: [4], dilation: [3], causal: [true], dtype: 'float32' },
  { rank: 1, batch: 1, spatial: [19], heads: 2, dim: 8, kernelSize: [5], stride: [2], dtype: 'float32' },
  { rank: 1, batch: 1, spatial: [19], heads: 2, dim: 8, kernelSize: [5], stride: [3], causal: [true], dtype: 'float32' },
  { rank: 1, batch: 1, spatial: [9], heads: 1, dim: 8, kernelSize: [3], dilation: [3], dtype: 'float32' },
  { rank: 1, batch: 1, spatial: [9], heads: 1, dim: 8, kernelSize: [9], dtype: 'float32' },
  { rank: 1, batch: 1, spatial: [15], heads: 4, headsKv: 2, dim: 8, dimV: 12, kernelSize: [5], dtype: 'float32' },
  { rank: 1, batch: 2, spatial: [15], heads: 2, dim: 8, kernelSize: [5], dilation: [2], rpb: true, gradRpb: true, dtype: 'float32' },
  { rank: 1, batch: 1, spatial: [15], heads: 2, dim: 8, kernelSize: [5], rpb: true, dtype: 'float32' },
  { rank: 1, batch: 1, spatial: [21], heads: 4, headsKv: 1, dim: 16, dimV: 8, kernelSize: [6], causal: [true], dtype: 'float16' },
  { rank: 1, batch: 1, spatial: [21], heads: 2, dim: 8, kernelSize: [5], rpb: true, gradRpb: true, dtype: 'float16' },
  // d_rpb blocks of 35 queries over a 32-invocation workgroup: the partial pass's sigma table takes two rounds.
  { rank: 1, batch: 1, spatial: [140000], heads: 1, dim: 4, kernelSize: [3], rpb: true, gradRpb: true, dtype: 'float32' },
  // rank 2: every causal combination (odd and even K), dilation, stride, rpb, GQA, Dv != D, f16, partial tiles at every border.
  ...causalCombos(2).map(
    (causal): BwdCase => ({ rank: 2, batch: 1, spatial: [7, 9], heads: 2, dim: 8, kernelSize: [3, 4], causal, dtype: 'float32', config: split([4, 4], [4, 4], [1, 1]) }),
  ),
  ...causalCombos(2).map((causal): BwdCase => ({ rank: 2, batch: 1, spatial: [9, 6], heads: 1, dim: 8, kernelSize: [5, 3], dilation: [1, 2], causal, dtype: 'float16' })),
  { rank: 2, batch: 1, spatial: [10, 11], heads: 2, dim: 8, kernelSize: [3, 5], dilation: [3, 2], dtype: 'float32', config: split([2, 8], [8, 2], [1, 1]) },
  { rank: 2, batch: 1, spatial: [10, 11], heads: 2, dim: 8, kernelSize: [4, 5], stride: [2, 5], dtype: 'float32', config: split([4, 4], [4, 4], [2, 2]) },
  { rank: 2, batch: 1, spatial: [10, 11], heads: 2, dim: 8, kernelSize: [4, 5], stride: [3, 2], causal: [true, false], dtype: 'float32' },
  { rank: 2, batch: 2, spatial: [8, 9], heads: 2, dim: 8, kernelSize: [3, 5], rpb: true, gradRpb: true, dtype: 'float32', config: split([4, 4], [4, 8], [2, 1]) },
  { rank: 2, batch: 1, spatial: [8, 9], heads: 2, dim: 8, kernelSize: [3, 3], dilation: [2, 2], rpb: true, gradRpb: true, dtype: 'float16' },
  { rank: 2, batch: 1, spatial: [8, 8], heads: 6, headsKv: 2, dim: 16, dimV: 8, kernelSize: [3, 3], dtype: 'float32', config: split([4, 4], [4, 4], [2, 2], true) },
  { rank: 2, batch: 1, spatial: [6, 6], heads: 1, dim: 4, kernelSize: [6, 3], dilation: [1, 2], dtype: 'float32' },
  { rank: 2, batch: 1, spatial: [12, 12], heads: 2, dim: 32, kernelSize: [7, 7], dtype: 'float32' },
  // 65x65 bias cells: more than the d_rpb partial pass keeps in workgroup memory, so its sums go through storage.
  { rank: 2, batch: 1, spatial: [33, 34], heads: 1, dim: 4, kernelSize: [33, 33], rpb: true, gradRpb: true, dtype: 'float32' },
  // rank 3: every causal combination, dilation, rpb, GQA, splits, f16.
  ...causalCombos(3).map(
    (causal): BwdCase => ({ rank: 3, batch: 1, spatial: [4, 5, 6], heads: 1, dim: 8, kernelSize: [3, 2, 3], causal, dtype: 'float32', config: split([2, 2, 4], [4, 2, 2], [1, 1, 1]) }),
  ),
  { rank: 3, batch: 1, spatial: [5, 6, 4], heads: 2, dim: 8, kernelSize: [3, 3, 3], dilation: [1, 2, 1], rpb: true, gradRpb: true, dtype: 'float32' },
  { rank: 3, batch: 1, spatial: [5, 6, 7], heads: 4, headsKv: 2, dim: 8, dimV: 4, kernelSize: [3, 3, 2], stride: [1, 2, 2], dtype: 'float32', config: split([2, 2, 4], [2, 2, 4], [2, 1, 2]) },
  { rank: 3, batch: 1, spatial: [4, 5, 6], heads: 1, dim: 8, kernelSize: [3, 3, 3], causal: [true, false, true], dtype: 'float16', config: split([2, 2, 4], [2, 2, 4], [1, 2, 1], true) },
];

/**
 * Random d_rpb problems (a fixed seed, so the same cases every run): rank 1-3, odd K 3-7, dilation 1-2, stride 1-K,
 * batch and heads 1-3, extents from K x dilation up, so that the partial pass's runs of one bias offset break at
 * borders, dilation groups, stride groups and batch boundaries in many patterns.
 */
function randomRpbCases(n: number, seed: number): BwdCase[] {
  let state = seed >>> 0;
  const next = (): number => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    return state / 2 ** 32;
  };
  const pick = (lo: number, hi: number): number => lo + Math.floor(next() * (hi - lo + 1));
  return Array.from({ length: n }, (_, i): BwdCase => {
    const rank = pick(1, 3) as 1 | 2 | 3;
    const kernelSize = Array.from({ length: rank }, () => 2 * pick(1, rank === 3 ? 2 : 3) + 1);
    const dilation = kernelSize.map(() => pick(1, 2));
    const stride = kernelSize.map((k) => (next() < 0.3 ? pick(2, k) : 1));
    const spatial = kernelSize.map((k, a) => k * (dilation[a] as number) + pick(0, rank === 1 ? 40 : 6));
    return { rank, batch: pick(1, 3), spatial, heads: pick(1, 3), dim: 4, kernelSize, dilation, stride, rpb: true, gradRpb: true, dtype: 'float32', seed: 1000 + i };
  });
}

describe('na{1,2,3}d_backward on WebGPU vs the CPU reference', () => {
  afterAll(async () => (await gpuContext()).destroy(), 60_000);
  for (const c of [...cases, ...randomRpbCases(10, 20)]) {
    it(caseName(c), async () => {
      const ctx = await gpuContext();
      const { args, ref } = prepare(c);
      const got = await runGpu(ctx, c.rank, args);
      expectGradsClose(got, ref, c.dtype, caseName(c));
      // The reference gradients are not trivially zero (so the comparison can fail).
      expect(maxAbs(ref.gradQuery)).toBeGreaterThan(1e-3);
      expect(maxAbs(ref.gradValue)).toBeGreaterThan(1e-3);
    }, TIMEOUT);
  }

  it('is deterministic: two runs give bit-identical gradients (splits, GQA, rpb grad, both delta modes)', async () => {
    const ctx = await gpuContext();
    for (const torch of [false, true]) {
      const c: BwdCase = {
        rank: 2,
        batch: 2,
        spatial: [9, 10],
        heads: 4,
        headsKv: 2,
        dim: 16,
        kernelSize: [5, 3],
        rpb: true,
        gradRpb: true,
        dtype: 'float32',
        config: split([4, 4], [2, 8], [3, 2], torch),
      };
      const { args } = prepare(c);
      const a = await runGpu(ctx, 2, args);
      const b = await runGpu(ctx, 2, args);
      expect(bitEqual(a.gradQuery, b.gradQuery)).toBe(true);
      expect(bitEqual(a.gradKey, b.gradKey)).toBe(true);
      expect(bitEqual(a.gradValue, b.gradValue)).toBe(true);
      expect(a.gradRpb && b.gradRpb && bitEqual(a.gradRpb, b.gradRpb)).toBe(true);
    }
  }, TIMEOUT);

  it('num_splits_key and the delta mode change the schedule, not the math (all configs agree within f32 rounding)', async () => {
    const ctx = await gpuContext();
    const base: BwdCase = { rank: 2, batch: 1, spatial: [12, 10], heads: 2, dim: 8, kernelSize: [5, 5], dtype: 'float32', config: split([4, 4], [4, 4], [1, 1]) };
    const { args, ref } = prepare(base);
    for (const cfg of [split([4, 4], [4, 4], [3, 3]), split([4, 4], [4, 4], [3, 1], true), split([4, 4], [4, 4], [1, 3])]) {
      const got = await runGpu(ctx, 2, { ...args, queryTileSize: cfg.queryTile, keyTileSize: cfg.keyTile, numSplitsKey: cfg.numSplitsKey, computeDeltaWithTorch: cfg.computeDeltaWithTorch });
      for (const g of compareGrads(got, ref)) expect(g.cmp.maxAbs, `${JSON.stringify(cfg)} ${g.name}`).toBeLessThanOrEqual(1e-4);
    }
  }, TIMEOUT);
});
