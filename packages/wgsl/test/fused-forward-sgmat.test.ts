import { describe, expect, it } from 'vitest';
import { type FusedForwardSgmatSpec, fusedForwardSgmatSpecProblem, fusedForwardSgmatWorkgroupBytes, generateFusedForwardSgmat } from '../src/index.ts';

const base: FusedForwardSgmatSpec = {
  rank: 2,
  kernelSize: [7, 7],
  causal: [false, false],
  dim: 64,
  dimV: 64,
  queryTile: [8, 8],
  keyChunk: 32,
  subgroupSize: 32,
  subgroupIdBuiltin: true,
  hasRpb: false,
  hasLse: true,
};

describe('tensor-core fused forward generator', () => {
  it('emits the subgroup-matrix enables, one subgroup per 16 query rows, and the baked constants', () => {
    const k = generateFusedForwardSgmat(base);
    expect(k.code).toContain('enable chromium_experimental_subgroup_matrix;');
    expect(k.code).toContain('subgroup_matrix_left<f16, 16, 16>');
    expect(k.workgroupSize).toEqual([128, 1, 1]);
    expect(k.features).toEqual(['shader-f16', 'subgroups', 'chromium-experimental-subgroup-matrix']);
    expect(k.workgroupBytes).toBe(fusedForwardSgmatWorkgroupBytes(base));
    expect(k.workgroupBytes).toBeLessThanOrEqual(49152);
  });
  it('is pure and keyed by every field', () => {
    expect(generateFusedForwardSgmat(base).code).toBe(generateFusedForwardSgmat({ ...base }).code);
    const keys = new Set(
      [base, { ...base, keyChunk: 64 }, { ...base, causal: [true, false] }, { ...base, hasRpb: true }, { ...base, subgroupSize: 16 }, { ...base, dimV: 32 }].map(
        (s) => generateFusedForwardSgmat(s as FusedForwardSgmatSpec).key,
      ),
    );
    expect(keys.size).toBe(6);
  });
  it('rejects specs it cannot generate, naming the rule', () => {
    expect(fusedForwardSgmatSpecProblem({ ...base, dim: 40 })).toMatch(/multiples of 16/);
    expect(fusedForwardSgmatSpecProblem({ ...base, queryTile: [4, 2] })).toMatch(/query tile product 8/);
    expect(fusedForwardSgmatSpecProblem({ ...base, keyChunk: 16 })).toMatch(/key chunk 16/);
    expect(() => generateFusedForwardSgmat({ ...base, subgroupSize: 8 })).toThrow(/subgroup size 8/);
  });
});
