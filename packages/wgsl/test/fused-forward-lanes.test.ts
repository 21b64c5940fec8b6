/**
 * Lane-split fused forward (`lanes` = T > 1) without a GPU: T = 1 stays byte-identical to a spec / config
 * without the field, T > 1 emits the subgroup kernel, every invalid T is rejected with its reason, and the
 * enumerator / heuristic default change only when the caller says the device has subgroups.
 */
import { NattenArgumentError, type NaRank } from '@natten-web/core';
import { describe, expect, it } from 'vitest';
import { plainSpec, problem as forwardProblem } from './forward-fixtures.ts';
import {
  DEFAULT_FORWARD_LANES_MIN_DIM,
  defaultFusedForwardConfig,
  enumerateFusedForwardConfigs,
  type FusedForwardConfig,
  type FusedForwardSpec,
  type FusedKernelLimits,
  fusedForwardConfigProblem,
  fusedForwardSpec,
  generateFusedForward,
  withDefaultForwardUnroll,
} from '../src/index.ts';

const LIMITS: FusedKernelLimits = { maxComputeWorkgroupStorageSize: 32768, maxComputeInvocationsPerWorkgroup: 1024, maxComputeWorkgroupSizeX: 1024 };
const SG8: FusedKernelLimits = { ...LIMITS, subgroupMinSize: 8 };

// Head dim 16 unless given.
const problem = (rank: NaRank, spatial: number[], kernelSize: number[], opts: Parameters<typeof forwardProblem>[3] = {}) =>
  forwardProblem(rank, spatial, kernelSize, { dim: 16, ...opts });

const base = plainSpec({ kernelSize: [3, 3] });

describe('lanes = 1 is the single-lane kernel, byte for byte', () => {
  const specs: FusedForwardSpec[] = [
    base,
    { ...base, rank: 1, kernelSize: [4], causal: [true], queryTile: [16], hasRpb: false, dim: 6, dimV: 5 },
    { ...base, dtype: 'float16', stage: 'f16', dim: 96, dimV: 96, qHalf: true, hasLse: false },
    { ...base, rank: 3, kernelSize: [3, 2, 3], causal: [false, true, false], queryTile: [2, 2, 8], hasRpb: false },
  ];
  it('a spec with lanes: 1 gives the same key and code as one without the field', () => {
    for (const s of specs) {
      const plain = generateFusedForward(s);
      const one = generateFusedForward({ ...s, lanes: 1 });
      expect(one.key).toBe(plain.key);
      expect(one.code).toBe(plain.code);
      expect(one.workgroupSize).toEqual(plain.workgroupSize);
      expect(one.features).toEqual(plain.features);
      expect(plain.key).not.toContain('lanes');
      expect(plain.code).not.toMatch(/subgroup|LANES|\blane\b/);
    }
  });
  it('fusedForwardSpec leaves the field out for lanes 1 and absent', () => {
    const p = problem(2, [9, 9], [3, 3]);
    const c: FusedForwardConfig = { path: 'plain', queryTile: [4, 4], keyTile: [4, 4], stage: 'f32' };
    expect(fusedForwardSpec(p, { ...c, lanes: 1 })).toEqual(fusedForwardSpec(p, c));
    expect('lanes' in fusedForwardSpec(p, { ...c, lanes: 1 })).toBe(false);
    expect(fusedForwardSpec(p, { ...c, lanes: 4 }).lanes).toBe(4);
  });
});

describe('lanes > 1 emits the subgroup kernel', () => {
  for (const T of [2, 4, 8]) {
    it(`T=${T}`, () => {
      const k = generateFusedForward({ ...base, dimV: 64, lanes: T });
      expect(k.code).toContain('enable subgroups;');
      expect(k.code).toContain('diagnostic(off, subgroup_uniformity);');
      expect(k.code).toContain(`const LANES: u32 = ${T}u;`);
      expect(k.workgroupSize).toEqual([32 * T, 1, 1]);
      expect(k.features).toEqual(['subgroups']);
      expect(k.key).toContain(`"lanes":${T}`);
      const masks = [...k.code.matchAll(/subgroupShuffleXor\(sc, (\d+)u\)/g)].map((m) => Number(m[1]));
      expect(masks).toEqual(Array.from({ length: Math.log2(T) }, (_, i) => 2 ** i));
      // D=32: 8 vec4 columns, 8/T per lane; Dv=64: 16/T per lane (register j holds column j*T + lane)
      expect(k.code.match(/^ {2}var q_\d+ = /gm)?.length).toBe(8 / T);
      expect(k.code.match(/^ {2}var o_\d+ = /gm)?.length).toBe(16 / T);
      expect(k.code).toContain('output[obase / 4u + (0u + lane)] = vec4<f32>(o_0 * inv_l);');
      expect(k.code).toContain(`q_${8 / T - 1} = load_q(qbase, (${(8 / T - 1) * T}u + lane))`);
      expect(k.code).toContain('if (lane == 0u) { logsumexp[qrow] =');
    });
  }
  it('float16 with q in f16 registers scales the reduced logit; features list both', () => {
    const k = generateFusedForward({ ...base, dtype: 'float16', stage: 'f16', dim: 96, dimV: 32, qHalf: true, lanes: 4 });
    expect(k.features).toEqual(['shader-f16', 'subgroups']);
    expect(k.code).toMatch(/subgroupShuffleXor\(sc, 2u\);\n\s+sc = sc \* params\.scale_log2;/);
    expect(k.code.indexOf('enable f16;')).toBeLessThan(k.code.indexOf('enable subgroups;'));
  });
});

describe('invalid lanes give the reason', () => {
  it('the generator rejects lane counts outside {1, 2, 4, 8} and head dims it cannot split', () => {
    expect(() => generateFusedForward({ ...base, lanes: 3 })).toThrow(NattenArgumentError);
    expect(() => generateFusedForward({ ...base, lanes: 3 })).toThrow(/generateFusedForward: lanes 3 is not one of 1, 2, 4, 8/);
    expect(() => generateFusedForward({ ...base, lanes: 16 })).toThrow(/lanes 16 is not one of 1, 2, 4, 8/);
    expect(() => generateFusedForward({ ...base, dimV: 32, lanes: 8 })).not.toThrow();
    expect(() => generateFusedForward({ ...base, dimV: 8, lanes: 4 })).toThrow(
      /generateFusedForward: lanes=4 gives each lane whole vec4 columns, so head dims must be multiples of 16; got head_dim=32, value head_dim=8/,
    );
    expect(() => generateFusedForward({ ...base, dim: 6, dimV: 8, lanes: 2 })).toThrow(/multiples of 8; got head_dim=6/);
  });

  it('config validation names every rule', () => {
    const p = problem(2, [16, 16], [3, 3], { dim: 16, dimV: 8 });
    const c = (queryTile: number[], lanes: number): FusedForwardConfig => ({ path: 'plain', queryTile, keyTile: [4, 4], stage: 'f32', lanes });
    expect(fusedForwardConfigProblem(p, c([4, 4], 2), SG8)).toBeUndefined();
    expect(fusedForwardConfigProblem(p, c([4, 4], 1), LIMITS)).toBeUndefined();
    expect(fusedForwardConfigProblem(p, c([4, 4], 2), LIMITS)).toBe("lanes=2 needs the WebGPU feature 'subgroups', which this adapter does not offer");
    expect(fusedForwardConfigProblem(p, c([4, 4], 2), { ...LIMITS, subgroupMinSize: 1 })).toBe(
      "lanes=2 exceeds this adapter's minimum subgroup size 1 (the lanes of a query must share one subgroup)",
    );
    expect(fusedForwardConfigProblem(p, c([4, 4], 2), { ...LIMITS, subgroupMinSize: 64 })).toBe(
      "lanes=2 with a query tile of 16 gives 32 invocations per workgroup, not a multiple of this adapter's minimum subgroup size 64",
    );
    expect(fusedForwardConfigProblem(p, c([4, 4], 4), SG8)).toBe('lanes=4 gives each lane whole vec4 columns, so head dims must be multiples of 16; got head_dim=16, value head_dim=8');
    expect(fusedForwardConfigProblem(p, c([4, 4], 5), SG8)).toBe('lanes 5 is not one of 1, 2, 4, 8');
    expect(fusedForwardConfigProblem(p, c([8, 16], 2), { ...SG8, maxComputeInvocationsPerWorkgroup: 128 })).toBe(
      'a query tile of 128 with 2 lanes per query needs 256 invocations per workgroup; this device allows 128',
    );
  });
});

describe('enumeration and default', () => {
  const problems = [
    problem(1, [40], [7], { dtype: 'float16', dim: 16 }),
    problem(2, [9, 13], [3, 4], { dim: 8, dimV: 16 }),
    problem(3, [5, 6, 7], [3, 3, 3], { rpb: true, dim: 32 }),
    problem(2, [12, 12], [3, 3], { dim: 6, dimV: 5 }),
  ];
  it('without subgroupMinSize: exactly the single-lane list; with it: the same list plus lanes 2 and 4 where valid', () => {
    for (const p of problems) {
      const plain = enumerateFusedForwardConfigs(p, LIMITS);
      const sg = enumerateFusedForwardConfigs(p, SG8);
      expect(plain.every((c) => c.lanes === undefined)).toBe(true);
      expect(sg.filter((c) => c.lanes === undefined)).toEqual(plain);
      for (const c of sg) expect(fusedForwardConfigProblem(p, c, SG8)).toBeUndefined();
      const lanes = new Set(sg.map((c) => c.lanes ?? 1));
      const want = [1, ...[2, 4].filter((T) => p.dim % (4 * T) === 0 && p.dimV % (4 * T) === 0)];
      expect([...lanes].sort()).toEqual(want);
      expect(defaultFusedForwardConfig(p, SG8)).toEqual(defaultFusedForwardConfig(p, LIMITS));
      expect(defaultFusedForwardConfig(p, SG8).lanes).toBeUndefined();
    }
  });
  it('the default splits queries over 4 lanes (else 2) only for head dims >= 128 on subgroups >= 16 wide', () => {
    const SG32 = { ...LIMITS, subgroupMinSize: 32 };
    expect(DEFAULT_FORWARD_LANES_MIN_DIM).toBe(128);
    // Head dim 64 (and the small problems above): single-lane even on wide subgroups.
    // (float32 problems get the hardware-class key unroll there instead: withDefaultForwardUnroll.)
    for (const p of [...problems, problem(2, [16, 16], [5, 5], { dtype: 'float16', dim: 64 })]) {
      expect(defaultFusedForwardConfig(p, SG32)).toEqual(withDefaultForwardUnroll(p, defaultFusedForwardConfig(p, LIMITS), SG32));
    }
    for (const p of [problem(2, [16, 16], [5, 5], { dtype: 'float16', dim: 128 }), problem(1, [64], [9], { dim: 32, dimV: 128 })]) {
      const single = defaultFusedForwardConfig(p, LIMITS);
      expect(single.lanes).toBeUndefined();
      expect(defaultFusedForwardConfig(p, SG8)).toEqual(single);
      const d = defaultFusedForwardConfig(p, SG32);
      expect(d).toEqual({ ...single, lanes: 4 });
      expect(fusedForwardConfigProblem(p, d, SG32)).toBeUndefined();
    }
    // D=136 splits its 34 vec4 columns over 2 lanes, not 4.
    expect(defaultFusedForwardConfig(problem(1, [64], [9], { dim: 136 }), SG32).lanes).toBe(2);
  });
  it('float32 single-lane configs unroll keys by 2 on subgroups >= 16 wide (default, enumerator); float16 never', () => {
    const SG16 = { ...LIMITS, subgroupMinSize: 16 };
    const f32 = problem(2, [16, 16], [5, 5], { dim: 64 });
    const f16 = problem(2, [16, 16], [5, 5], { dtype: 'float16', dim: 64 });
    expect(defaultFusedForwardConfig(f32, SG16).keyUnroll).toBe(2);
    for (const limits of [LIMITS, SG8]) expect(defaultFusedForwardConfig(f32, limits).keyUnroll).toBeUndefined();
    expect(defaultFusedForwardConfig(f16, SG16).keyUnroll).toBeUndefined();
    for (const c of enumerateFusedForwardConfigs(f32, SG16)) expect(c.keyUnroll).toBe((c.lanes ?? 1) === 1 ? 2 : undefined);
    for (const c of enumerateFusedForwardConfigs(f16, SG16)) expect(c.keyUnroll).toBeUndefined();
    // Explicit unrolls, lane splits and grouped rows are left as they are.
    const base = defaultFusedForwardConfig(f32, LIMITS);
    for (const c of [{ ...base, keyUnroll: 1 }, { ...base, lanes: 2 }, { ...base, queriesPerInvocation: 2 }]) expect(withDefaultForwardUnroll(f32, c, SG16)).toEqual(c);
  });
  it('lanes are dropped where the invocation limit does not allow them', () => {
    const p = problem(2, [64, 64], [3, 3], { dim: 16 });
    const small = { ...SG8, maxComputeInvocationsPerWorkgroup: 256, maxComputeWorkgroupSizeX: 256 };
    const sg = enumerateFusedForwardConfigs(p, small);
    for (const c of sg) expect(c.queryTile.reduce((a, b) => a * b, 1) * (c.lanes ?? 1)).toBeLessThanOrEqual(256);
    expect(sg.some((c) => c.lanes === 4)).toBe(true);
  });
});
