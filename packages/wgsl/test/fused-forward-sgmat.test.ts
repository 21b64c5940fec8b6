import { describe, expect, it } from 'vitest';
import { type FusedForwardSgmatSpec, fusedForwardSgmatSpecProblem, fusedForwardSgmatWorkgroupBytes, generateFusedForwardSgmat } from '../src/index.ts';
import { workgroupVars } from './workgroup-vars.ts';

const base: FusedForwardSgmatSpec = {
  rank: 2,
  kernelSize: [7, 7],
  causal: [false, false],
  dim: 64,
  dimV: 64,
  queryTile: [2, 16],
  keyChunk: 32,
  subgroupSize: 32,
  hasRpb: false,
  hasLse: true,
};

describe('tensor-core fused forward generator', () => {
  it('emits the subgroup-matrix enables, one subgroup per workgroup, and the baked constants', () => {
    const k = generateFusedForwardSgmat(base);
    expect(k.code).toContain('enable chromium_experimental_subgroup_matrix;');
    expect(k.code).toContain('subgroup_matrix_left<f16, 16, 16>');
    expect(k.workgroupSize).toEqual([32, 1, 1]);
    expect(k.code).toContain('subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>, col_major>(&key,');
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
    expect(fusedForwardSgmatSpecProblem({ ...base, queryTile: [4, 16] })).toMatch(/query tile product 64/);
    expect(fusedForwardSgmatSpecProblem({ ...base, keyChunk: 16 })).toMatch(/key chunk 16/);
    expect(() => generateFusedForwardSgmat({ ...base, subgroupSize: 8 })).toThrow(/subgroup size 8/);
  });
  it('keeps every workgroup variable a multiple of 16 bytes (matrix stores misplace data otherwise)', () => {
    for (const dim of [16, 64, 128]) {
      for (const queryTile of [[16, 1], [2, 16]]) {
        for (const keyChunk of [32, 64]) {
          const code = generateFusedForwardSgmat({ ...base, dim, dimV: dim, queryTile, keyChunk }).code;
          const vars = workgroupVars(code);
          expect(vars.length).toBeGreaterThanOrEqual(6);
          for (const v of vars) expect(v.bytes % 16, `${v.name} (${v.bytes} bytes) for D=${dim} q=${queryTile.join('x')} bk=${keyChunk}`).toBe(0);
        }
      }
    }
  });
  it('loads K^T and V fragments straight from storage, with a gathered fallback at the end of the buffer', () => {
    const code = generateFusedForwardSgmat(base).code;
    expect(code).toContain('subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>, col_major>(&key, base, stride)');
    expect(code).toContain('subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>, row_major>(&value, base, stride)');
    expect(code).toMatch(/if \(base \+ 15u \* stride \+ 16u <= n\)/);
    expect(generateFusedForwardSgmat({ ...base, gather: 'kv' }).code).toMatch(/if \(false && base/);
  });
  it('experimental walks: a workgroup-uniform direct-load walk beside the guarded one, optional row skipping', () => {
    const plain = generateFusedForwardSgmat(base);
    expect(plain.code).not.toContain('if (direct)');
    const direct = generateFusedForwardSgmat({ ...base, directWalk: true });
    expect(direct.code).toContain('if (direct) {');
    expect(direct.code).toContain('subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>, col_major>(&key, kbase + 0u, kstride)');
    expect(direct.code).toContain('load_kt(kbase + 0u, kstride, lane)');
    const skip = generateFusedForwardSgmat({ ...base, directWalk: true, skipRows: true });
    expect(skip.code).toMatch(/let need_1 = bvalid_1 && kr_0 >= blo_1_0 && kr_0 < bhi_1_0;/);
    expect(skip.code).toContain('if (need_0) { s_0 = subgroupMatrixMultiplyAccumulate(q_0_0, kt, s_0); }');
    expect(new Set([plain.key, direct.key, skip.key]).size).toBe(3);
  });
});
