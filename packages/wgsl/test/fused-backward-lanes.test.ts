/**
 * Lane-split fused backward (`lanes` = T > 1 in the dq and dkv kernels) without a GPU: T = 1 stays byte-identical
 * to a spec / config without the field, T > 1 emits the subgroup kernels (and leaves delta / reductions alone),
 * every invalid T is rejected with its reason, and the enumerator and the default config split lanes only when the
 * caller says the device has subgroups (the default only where they are at least 16 wide).
 */
import { describe, expect, it } from 'vitest';
import { dqSpec, LIMITS, parse, problem } from './backward-fixtures.ts';
import {
  type BackwardLimits,
  defaultFusedBackwardConfig,
  DEFAULT_LANES_MIN_SUBGROUP,
  enumerateFusedBackwardConfigs,
  type FusedBackwardConfig,
  fusedBackwardLanesProblem,
  generateFusedBackwardDkv,
  generateFusedBackwardDq,
  planFusedBackward,
} from '../src/index.ts';

const SG8: BackwardLimits = { ...LIMITS, subgroupMinSize: 8 };

const count = (s: string, sub: string): number => s.split(sub).length - 1;

describe('T = 1 is the single-lane kernel', () => {
  it('lanes 1 emits the same text and key as a spec without the field (dq in every mode, dkv)', () => {
    for (const over of [{}, { delta: 'read' as const, partial: false, gradRpb: false }, { dtype: 'float16' as const }, { dim: 300, dimV: 300, rpb: false, gradRpb: false }]) {
      const a = generateFusedBackwardDq(dqSpec(over));
      const b = generateFusedBackwardDq({ ...dqSpec(over), lanes: 1 });
      expect(b.code).toBe(a.code);
      expect(b.key).toBe(a.key);
      const { gradRpb: _g, delta: _d, partial: _p, ...base } = dqSpec(over);
      expect(generateFusedBackwardDkv({ ...base, lanes: 1 }).code).toBe(generateFusedBackwardDkv(base).code);
      expect(a.code).not.toContain('subgroup');
      expect(a.code).not.toContain('LANES');
    }
  });

  it('a config with lanes 1 plans exactly the passes of one without', () => {
    const p = problem(2, [9, 9], [3, 3], { gradRpb: true });
    const config: FusedBackwardConfig = { queryTile: [4, 4], keyTile: [4, 4], numSplitsKey: [2, 1], computeDeltaWithTorch: true };
    const a = planFusedBackward(p, config);
    const b = planFusedBackward(p, { ...config, lanes: 1 });
    expect(b.passes.map((x) => [x.kernel.key, x.kernel.code, x.workgroups])).toEqual(a.passes.map((x) => [x.kernel.key, x.kernel.code, x.workgroups]));
  });
});

describe('T > 1 text', () => {
  it('dq: subgroup enables, LANES, T rows per workgroup, shuffle sums of q.k, dO.v and the fused delta, lane-0 scalar writes', () => {
    const k = generateFusedBackwardDq(dqSpec({ lanes: 4 }));
    parse(k.code);
    expect(k.workgroupSize).toEqual([16 * 4, 1, 1]);
    expect(k.features).toEqual(['subgroups']);
    expect(k.key).toContain('"lanes":4');
    expect(k.code).toContain('enable subgroups;\ndiagnostic(off, subgroup_uniformity);');
    expect(k.code).toContain('const LANES = 4u;');
    expect(k.code).toContain('let lane = lid % LANES;');
    // Butterfly over masks 1, 2 for each of sdot, dp and the fused delta.
    for (const v of ['sdot', 'dp', 'dl']) {
      expect(count(k.code, `${v} = ${v} + subgroupShuffleXor(${v}, 1u);`)).toBe(1);
      expect(count(k.code, `${v} = ${v} + subgroupShuffleXor(${v}, 2u);`)).toBe(1);
    }
    expect(k.code).toContain('if (split == 0u && lane == 0u) { delta_buf[row] = dl; }');
    expect(k.code).toMatch(/if \(lane == 0u\) \{ ds_buf\[/);
    // Staging strides over the whole workgroup.
    expect(k.code).toContain('e += (BQ * LANES)');
    // D = 16: 4 vec4 columns, 1 register per lane; Dv = 32: 8 columns, 2 registers per lane.
    expect(k.code).toContain('var qv_0 = vec4<f32>();\n');
    expect(k.code).not.toContain('qv_1');
    expect(k.code).toContain('var dov_0 = vec4<f32>(); var dov_1 = vec4<f32>();');
    expect(k.code).toContain('dov_1 = vec4<f32>(do_buf[row * DVW + (4u + lane)]);');
  });

  it('dkv: the same split over key rows; f16 keeps its enable; long rows use private arrays', () => {
    const { gradRpb: _g, delta: _d, partial: _p, ...base } = dqSpec({ dtype: 'float16' });
    const k = generateFusedBackwardDkv({ ...base, lanes: 2 });
    parse(k.code);
    expect(k.workgroupSize).toEqual([32 * 2, 1, 1]);
    expect(k.features).toEqual(['shader-f16', 'subgroups']);
    expect(k.code.startsWith(`// ${k.key}\nenable f16;\nenable subgroups;\ndiagnostic(off, subgroup_uniformity);\n`)).toBe(true);
    expect(count(k.code, 'subgroupShuffleXor(')).toBe(2);
    expect(k.code).toContain('e += (BK * LANES)');
    const long = generateFusedBackwardDkv({ ...base, dim: 288, dimV: 288, rpb: false, lanes: 2 });
    parse(long.code);
    expect(long.code).toContain('var kv: array<vec4<f32>, 36>;');
    expect(long.code).toContain('let cc = c * LANES + lane;');
  });

  it('the plan gives lanes to dq and dkv only', () => {
    const p = problem(2, [9, 9], [3, 3], { gradRpb: true });
    const plan = planFusedBackward(p, { queryTile: [4, 4], keyTile: [4, 4], numSplitsKey: [2, 1], computeDeltaWithTorch: true, lanes: 2 });
    expect(plan.passes.map((x) => [x.kernel.key.split('/')[0], x.kernel.workgroupSize[0], x.kernel.features.includes('subgroups')])).toEqual([
      ['na-fused-backward-delta', 64, false],
      ['na-fused-backward-dq', 32, true],
      ['na-fused-backward-dkv', 32, true],
      ['na-fused-backward-dq-reduce', 64, false],
      ['na-fused-backward-rpb-partial', 32, false],
      ['na-fused-backward-rpb-reduce', 256, false],
    ]);
  });
});

describe('validity', () => {
  const p = problem(2, [16, 16], [3, 3]);
  const c = (lanes: number, queryTile = [4, 4], keyTile = [4, 4]): FusedBackwardConfig => ({ queryTile, keyTile, numSplitsKey: [1, 1], computeDeltaWithTorch: false, lanes });
  it('valid lane configs', () => {
    for (const T of [1, 2, 4]) expect(fusedBackwardLanesProblem(p, c(T), SG8)).toBeUndefined();
    expect(fusedBackwardLanesProblem(p, c(1), LIMITS)).toBeUndefined();
  });
  it('each rule with its reason', () => {
    expect(fusedBackwardLanesProblem(p, c(3), SG8)).toBe('lanes 3 is not one of 1, 2, 4, 8');
    expect(fusedBackwardLanesProblem(p, c(8), SG8)).toBe('lanes=8 gives each lane whole vec4 columns, so head dims must be multiples of 32; got head_dim=16, value head_dim=16');
    expect(fusedBackwardLanesProblem({ dim: 16, dimV: 4 }, c(2), SG8)).toContain('multiples of 8; got head_dim=16, value head_dim=4');
    expect(fusedBackwardLanesProblem(p, c(2), LIMITS)).toBe("lanes=2 needs the WebGPU feature 'subgroups', which this adapter does not offer");
    expect(fusedBackwardLanesProblem(p, c(4), { ...LIMITS, subgroupMinSize: 2 })).toBe("lanes=4 exceeds this adapter's minimum subgroup size 2 (the lanes of a row must share one subgroup)");
    expect(fusedBackwardLanesProblem(p, c(2, [4, 4], [8, 8]), { ...LIMITS, subgroupMinSize: 64 })).toBe(
      "lanes=2 with a query tile of 16 gives 32 invocations per workgroup, not a multiple of this adapter's minimum subgroup size 64",
    );
    expect(fusedBackwardLanesProblem(p, c(4, [4, 4], [8, 16]), SG8)).toBe('a key tile of 128 with 4 lanes per row needs 512 invocations per workgroup; this device allows 256');
  });
  it('the generators refuse a spec whose head dims the lanes cannot split', () => {
    expect(() => generateFusedBackwardDq(dqSpec({ dimV: 8, lanes: 4 }))).toThrow('head dims must be multiples of 16; got head_dim=16, value head_dim=8');
  });
});

describe('enumeration and default', () => {
  it('lane twins (2 and 4) only with subgroupMinSize, each valid; the single-lane list is unchanged', () => {
    const p = problem(2, [16, 16], [3, 3], { dim: 16 });
    const plain = enumerateFusedBackwardConfigs(p, LIMITS);
    const all = enumerateFusedBackwardConfigs(p, SG8);
    expect(plain.some((x) => x.lanes !== undefined)).toBe(false);
    expect(all.filter((x) => x.lanes === undefined)).toEqual(plain);
    expect(new Set(all.map((x) => x.lanes))).toEqual(new Set([undefined, 2, 4]));
    for (const x of all) expect(fusedBackwardLanesProblem(p, x, SG8)).toBeUndefined();
    // 128-row tiles x 4 lanes exceed 256 invocations: no such twin.
    expect(all.some((x) => x.lanes === 4 && x.keyTile.reduce((a, b) => a * b, 1) === 128)).toBe(false);
    // Head dim 8 splits over 2 lanes only.
    expect(new Set(enumerateFusedBackwardConfigs(problem(1, [40], [5], { dim: 8 }), SG8).map((x) => x.lanes))).toEqual(new Set([undefined, 2]));
  });
  it('queries per dq invocation: Q must divide the last query-tile entry and shrinks the dq workgroup the lane rule sees', () => {
    const p = problem(2, [16, 16], [3, 3]);
    const c = (queryTile: number[], q: number, lanes?: number) => ({ queryTile, keyTile: [4, 8], queriesPerInvocation: q, ...(lanes ? { lanes } : {}) });
    expect(fusedBackwardLanesProblem(p, c([4, 8], 2), LIMITS)).toBeUndefined();
    expect(fusedBackwardLanesProblem(p, c([8, 2], 4), LIMITS)).toBe("queriesPerInvocation=4 needs the query tile's last entry (2) to be a multiple of 4");
    expect(fusedBackwardLanesProblem(p, c([4, 8], 3), LIMITS)).toBe('queriesPerInvocation 3 is not one of 1, 2, 4');
    // 32 query rows over Q=4 leave 8 invocations, x 2 lanes = 16: fine on 8-wide subgroups, not on 32-wide ones.
    expect(fusedBackwardLanesProblem(p, c([4, 8], 4, 2), SG8)).toBeUndefined();
    expect(fusedBackwardLanesProblem(p, c([4, 8], 4, 2), { ...LIMITS, subgroupMinSize: 32 })).toMatch(/gives 16 invocations per workgroup, not a multiple of this adapter's minimum subgroup size 32/);
    // Keys per dkv invocation: the same rules on the key tile.
    expect(fusedBackwardLanesProblem(p, { queryTile: [4, 8], keyTile: [8, 2], keysPerInvocation: 4 }, LIMITS)).toBe("keysPerInvocation=4 needs the key tile's last entry (2) to be a multiple of 4");
    expect(fusedBackwardLanesProblem(p, { queryTile: [4, 8], keyTile: [4, 8], keysPerInvocation: 4, lanes: 2 }, { ...LIMITS, subgroupMinSize: 32 })).toMatch(/a key tile of 8 with 2 lanes per row needs|gives 16 invocations per workgroup/);
  });
  it('the default config is single-lane without subgroups or with subgroups narrower than 16', () => {
    for (const p of [problem(1, [40], [5]), problem(2, [16, 16], [3, 3], { dtype: 'float16' }), problem(3, [6, 6, 6], [3, 3, 3], { dim: 32 })]) {
      const d = defaultFusedBackwardConfig(p, SG8);
      expect(d).toEqual(defaultFusedBackwardConfig(p, LIMITS));
      expect(d?.lanes).toBeUndefined();
    }
  });
  it('the default config splits rows over 4 lanes (else 2) where subgroups are at least 16 wide, same tiles', () => {
    const wide = (sg: number) => ({ ...LIMITS, subgroupMinSize: sg });
    expect(DEFAULT_LANES_MIN_SUBGROUP).toBe(16);
    for (const p of [problem(1, [40], [5]), problem(2, [16, 16], [3, 3], { dtype: 'float16' }), problem(3, [6, 6, 6], [3, 3, 3], { dim: 32 })]) {
      const single = defaultFusedBackwardConfig(p, LIMITS);
      for (const sg of [16, 32, 64]) {
        const d = defaultFusedBackwardConfig(p, wide(sg));
        // With the lanes comes the unrolled walk (withDefaultBackwardUnroll; none of these is float16 at rank 3).
        expect(d).toEqual({ ...single, lanes: 4, keyUnroll: 2, queryUnroll: 2 });
        expect(fusedBackwardLanesProblem(p, d!, wide(sg))).toBeUndefined();
      }
    }
    // Head dim 8: 4 lanes would leave 2 columns each, so 2 lanes (the same rule as the enumerator's).
    const p8 = problem(1, [40], [5], { dim: 8 });
    expect(defaultFusedBackwardConfig(p8, wide(32))?.lanes).toBe(2);
  });
});
