import { checkFusedBackward, type NaRank, zeros } from '@natten-web/core';
import { describe, expect, it } from 'vitest';
import { WgslReflect } from 'wgsl_reflect/wgsl_reflect.module.js';
import {
  balancedShape,
  type BackwardLimits,
  defaultFusedBackwardConfig,
  dkvWorkgroupBytes,
  dqWorkgroupBytes,
  enumerateFusedBackwardConfigs,
  FUSED_BACKWARD_TILES,
  fusedBackwardTileProducts,
  fusedBackwardTileShapes,
  generateFusedBackwardDelta,
  generateFusedBackwardDkv,
  generateFusedBackwardDq,
  generateFusedBackwardDqReduce,
  generateFusedBackwardRpbReduce,
  type GpuDType,
  planFusedBackward,
} from '../src/index.ts';

const LAVAPIPE: BackwardLimits = { maxComputeWorkgroupStorageSize: 32768, maxComputeInvocationsPerWorkgroup: 256, maxComputeWorkgroupSizeX: 256 };
const BROWSER: BackwardLimits = { maxComputeWorkgroupStorageSize: 16384, maxComputeInvocationsPerWorkgroup: 256, maxComputeWorkgroupSizeX: 256 };

function parse(code: string): void {
  const r = new WgslReflect(code);
  expect(r.entry.compute.length).toBe(1);
}

function problem(rank: NaRank, spatial: number[], kernelSize: number[], dim: number, dtype: GpuDType = 'float32', extra: { rpb?: boolean; gradRpb?: boolean; causal?: boolean[] } = {}) {
  const heads = 2;
  const t = (shape: number[]) => zeros(shape, dtype);
  const q = t([1, ...spatial, heads, dim]);
  const rpb = extra.rpb ? t([heads, ...kernelSize.map((k) => 2 * k - 1)]) : null;
  const p = checkFusedBackward('test', rank, {
    gradQuery: q,
    gradKey: q,
    gradValue: q,
    query: q,
    key: q,
    value: q,
    output: q,
    gradOutput: q,
    logsumexp: zeros([1, ...spatial, heads], 'float32'),
    kernelSize,
    isCausal: extra.causal ?? false,
    rpb,
    gradRpb: extra.gradRpb ? rpb : null,
  }, FUSED_BACKWARD_TILES);
  return { ...p, dtype };
}

describe('fused backward WGSL generation', () => {
  const grid: { rank: NaRank; ks: number[]; causal: boolean[]; q: number[]; k: number[] }[] = [
    { rank: 1, ks: [3], causal: [false], q: [16], k: [64] },
    { rank: 1, ks: [4], causal: [true], q: [128], k: [32] },
    { rank: 2, ks: [3, 5], causal: [false, true], q: [4, 4], k: [2, 8] },
    { rank: 2, ks: [7, 7], causal: [true, true], q: [8, 8], k: [8, 4] },
    { rank: 3, ks: [3, 2, 3], causal: [true, false, true], q: [4, 4, 4], k: [2, 2, 4] },
    { rank: 3, ks: [5, 5, 5], causal: [false, false, false], q: [2, 2, 4], k: [4, 4, 8] },
  ];
  for (const g of grid) {
    for (const dtype of ['float32', 'float16'] as const) {
      it(`every pass parses: rank ${g.rank} K=${g.ks.join('x')} causal=${g.causal.join(',')} ${dtype}`, () => {
        let parsed = 0;
        const noCausal = g.causal.every((c) => !c);
        for (const rpb of noCausal ? [false, true] : [false]) {
          for (const gradRpb of rpb ? [false, true] : [false]) {
            for (const delta of ['fused', 'read'] as const) {
              for (const partial of [false, true]) {
                const base = { rank: g.rank, kernelSize: g.ks, causal: g.causal, dim: 16, dimV: 8, dtype, queryTile: g.q, keyTile: g.k };
                const k = generateFusedBackwardDq({ ...base, rpb, gradRpb, delta, partial });
                parse(k.code);
                expect(k.code.startsWith(`// ${k.key}`)).toBe(true);
                expect(k.bufferNames.length).toBe(k.bindings.length);
                expect(k.code.includes('enable f16;')).toBe(dtype === 'float16');
                parsed++;
              }
            }
            const dkv = generateFusedBackwardDkv({ rank: g.rank, kernelSize: g.ks, causal: g.causal, dim: 16, dimV: 8, dtype, queryTile: g.q, keyTile: g.k, rpb });
            parse(dkv.code);
            expect(dkv.bufferNames.length).toBe(dkv.bindings.length);
            parsed++;
          }
        }
        parse(generateFusedBackwardDelta({ dimV: 8, dtype }).code);
        parse(generateFusedBackwardDqReduce({ dtype }).code);
        if (noCausal) parse(generateFusedBackwardRpbReduce({ rank: g.rank, kernelSize: g.ks, causal: g.causal, dtype }).code);
        expect(parsed).toBeGreaterThan(0);
      });
    }
  }

  it('rows are vec4 when both head dims are multiples of 4, scalar otherwise; both parse', () => {
    for (const dtype of ['float32', 'float16'] as const) {
      const base = { rank: 2 as const, kernelSize: [3, 3], causal: [false, false], dtype, queryTile: [4, 4], keyTile: [4, 4], rpb: true };
      const T = dtype === 'float16' ? 'f16' : 'f32';
      const vec = generateFusedBackwardDq({ ...base, dim: 16, dimV: 8, gradRpb: true, delta: 'fused', partial: true });
      expect(vec.code).toContain(`var<storage, read> k_buf: array<vec4<${T}>>;`);
      expect(vec.code).toContain('fn dotw(a: vec4<f32>, b: vec4<f32>) -> f32 { return dot(a, b); }');
      parse(vec.code);
      for (const [dim, dimV] of [[6, 8], [8, 5]] as const) {
        const dq = generateFusedBackwardDq({ ...base, dim, dimV, gradRpb: true, delta: 'fused', partial: false });
        expect(dq.code).toContain(`var<storage, read> k_buf: array<${T}>;`);
        expect(dq.code).toContain('fn dotw(a: f32, b: f32) -> f32 { return a * b; }');
        parse(dq.code);
        const dkv = generateFusedBackwardDkv({ ...base, dim, dimV });
        expect(dkv.code).toContain(`var<storage, read> q_buf: array<${T}>;`);
        parse(dkv.code);
      }
    }
  });

  it('keys: same spec gives the same code, different specs give different keys; header lists baked consts', () => {
    const spec = { rank: 2 as const, kernelSize: [3, 3], causal: [false, true], dim: 8, dimV: 8, dtype: 'float32' as const, queryTile: [4, 4], keyTile: [4, 4], rpb: false, gradRpb: false, delta: 'fused' as const, partial: false };
    const a = generateFusedBackwardDq(spec);
    const b = generateFusedBackwardDq({ ...spec });
    expect(a.code).toBe(b.code);
    expect(a.key).toBe(b.key);
    const variants = [
      { ...spec, keyTile: [2, 8] },
      { ...spec, causal: [true, true] },
      { ...spec, delta: 'read' as const },
      { ...spec, partial: true },
      { ...spec, dimV: 16 },
      { ...spec, dtype: 'float16' as const },
    ].map((s) => generateFusedBackwardDq(s).key);
    expect(new Set([a.key, ...variants]).size).toBe(variants.length + 1);
    expect(a.code).toMatch(/const QT_0 = 4u;/);
    expect(a.code).toMatch(/const KS_1 = 3i;/);
    expect(a.code).toMatch(/const CAUSAL_1 = true;/);
  });

  it('plans: problems with the same spec share kernels; per-call sizes are uniforms', () => {
    const cfg = { queryTile: [4, 4], keyTile: [4, 4], numSplitsKey: [1, 1], computeDeltaWithTorch: false };
    const p1 = planFusedBackward(problem(2, [8, 9], [3, 3], 8), cfg);
    const p2 = planFusedBackward(problem(2, [12, 30], [3, 3], 8), cfg);
    expect(p1.passes.map((p) => p.kernel.key)).toEqual(p2.passes.map((p) => p.kernel.key));
    expect(p1.passes.map((p) => p.kernel.code)).toEqual(p2.passes.map((p) => p.kernel.code));
    expect(p1.passes[0]?.uniforms.len_1).toBe(9);
    expect(p2.passes[0]?.uniforms.len_1).toBe(30);
    // dq + dkv only; the delta pass, split reduce and d_rpb reduce appear when selected.
    expect(p1.passes.length).toBe(2);
    const p3 = planFusedBackward(problem(2, [8, 9], [3, 3], 8, 'float32', { rpb: true, gradRpb: true }), { ...cfg, numSplitsKey: [2, 1], computeDeltaWithTorch: true });
    expect(p3.passes.map((p) => p.kernel.key.split('/')[0])).toEqual([
      'na-fused-backward-delta',
      'na-fused-backward-dq',
      'na-fused-backward-dkv',
      'na-fused-backward-dq-reduce',
      'na-fused-backward-rpb-partial',
      'na-fused-backward-rpb-reduce',
    ]);
    expect(p3.scratch.dqPartial).toBe(2 * 8 * 9 * 2 * 8);
    expect(p3.scratch.dsScratch).toBe(8 * 9 * 2 * 9);
    // d_rpb: 72 query rows in 3 blocks (at least 32 rows each), 2 heads x 5x5 cells of partials.
    expect(p3.scratch.rpbPartial).toBe(2 * 3 * 25);
  });

  it('tile table follows the limits: invocations, workgroup memory by head dims and dtype', () => {
    const p32 = problem(2, [16, 16], [3, 3], 32);
    // d=32 f32 on 32 KiB: every pair of 16, 32 and 64 rows.
    expect(fusedBackwardTileProducts(p32, LAVAPIPE)).toEqual(FUSED_BACKWARD_TILES.filter(([q, k]) => q <= 64 && k <= 64));
    for (const [q, k] of fusedBackwardTileProducts(p32, LAVAPIPE)) {
      expect(dqWorkgroupBytes(2, 32, 32, 'float32', k)).toBeLessThanOrEqual(32768);
      expect(dkvWorkgroupBytes(2, 32, 32, 'float32', q)).toBeLessThanOrEqual(32768);
    }
    // d=32 f32: a 128-row tile needs 128*64*4 = 32 KiB of rows alone, over lavapipe's 32 KiB.
    expect(fusedBackwardTileProducts(p32, LAVAPIPE).some(([q, k]) => q === 128 || k === 128)).toBe(false);
    // f16 halves the staged rows, so 128-row tiles fit.
    expect(fusedBackwardTileProducts(problem(2, [16, 16], [3, 3], 32, 'float16'), LAVAPIPE).some(([q]) => q === 128)).toBe(true);
    // the 16 KiB browser default still has configs at d=64.
    expect(fusedBackwardTileProducts(problem(2, [16, 16], [3, 3], 64), BROWSER).length).toBeGreaterThan(0);
    expect(fusedBackwardTileProducts(problem(2, [16, 16], [3, 3], 1024), LAVAPIPE)).toEqual([]);
    expect(fusedBackwardTileProducts(p32, { ...LAVAPIPE, maxComputeInvocationsPerWorkgroup: 32 }).every(([q, k]) => q <= 32 && k <= 32)).toBe(true);
  });

  it('default config: 32-row tiles when they fit, smaller otherwise', () => {
    expect(defaultFusedBackwardConfig(problem(1, [80], [5], 32), LAVAPIPE)?.queryTile).toEqual([32]);
    expect(defaultFusedBackwardConfig(problem(2, [16, 16], [3, 3], 32), LAVAPIPE)).toEqual({ queryTile: [4, 8], keyTile: [4, 8], numSplitsKey: [1, 1], computeDeltaWithTorch: false });
    expect(defaultFusedBackwardConfig(problem(3, [8, 8, 8], [3, 3, 3], 32), LAVAPIPE)?.keyTile).toEqual([2, 4, 4]);
    // d=64 f32 on 32 KiB: 64 key rows of K and V are exactly 32 KiB, plus coordinates: falls back to 32.
    expect(defaultFusedBackwardConfig(problem(2, [16, 16], [3, 3], 64), LAVAPIPE)?.keyTile).toEqual([4, 8]);
    expect(defaultFusedBackwardConfig(problem(2, [16, 16], [3, 3], 1024), LAVAPIPE)).toBeUndefined();
    expect(balancedShape(3, 32)).toEqual([2, 4, 4]);
  });

  it('enumerated configs: tiles x num_splits_key x delta mode, all within limits and the split bounds', () => {
    const p = problem(2, [6, 7], [3, 4], 8);
    const cs = enumerateFusedBackwardConfigs(p, LAVAPIPE);
    expect(cs.length).toBeGreaterThan(20);
    const products = fusedBackwardTileProducts(p, LAVAPIPE);
    for (const c of cs) {
      const qp = c.queryTile.reduce((a, b) => a * b, 1);
      const kp = c.keyTile.reduce((a, b) => a * b, 1);
      expect(products.some(([q, k]) => q === qp && k === kp)).toBe(true);
      c.numSplitsKey.forEach((s, a) => expect(s).toBeLessThanOrEqual(Math.ceil([6, 7][a] as number / (c.keyTile[a] as number))));
    }
    expect(cs.some((c) => c.computeDeltaWithTorch) && cs.some((c) => !c.computeDeltaWithTorch)).toBe(true);
    expect(cs.some((c) => c.numSplitsKey.some((s) => s > 1))).toBe(true);
    expect(new Set(cs.map((c) => JSON.stringify(c))).size).toBe(cs.length);
    expect(fusedBackwardTileShapes(2, 16, [8, 8], 2)).toEqual([[2, 8], [4, 4], [8, 2]]);
  });
});
