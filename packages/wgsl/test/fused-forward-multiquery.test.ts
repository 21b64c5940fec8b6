/**
 * Several queries per invocation (`queriesPerInvocation` = Q) without a GPU: Q = 1 is the single-query kernel
 * byte for byte, Q > 1 emits Q query states and a Q-times smaller workgroup, and invalid Q are rejected with
 * their reason (spec and config validation).
 */
import { NattenArgumentError } from '@natten-web/core';
import { describe, expect, it } from 'vitest';
import { plainSpec, problem as forwardProblem } from './forward-fixtures.ts';
import {
  type FusedForwardConfig,
  type FusedKernelLimits,
  fusedForwardConfigProblem,
  generateFusedForward,
  queriesPerInvocationProblem,
} from '../src/index.ts';

const base = plainSpec();
const LIMITS: FusedKernelLimits = { maxComputeWorkgroupStorageSize: 32768, maxComputeInvocationsPerWorkgroup: 256, maxComputeWorkgroupSizeX: 256, subgroupMinSize: 8 };

describe('queriesPerInvocation', () => {
  it('Q = 1 is the single-query kernel; Q = 2 and 4 shrink the workgroup and keep Q query states', () => {
    expect(generateFusedForward({ ...base, queriesPerInvocation: 1 })).toEqual(generateFusedForward(base));
    for (const Q of [2, 4]) {
      const k = generateFusedForward({ ...base, queriesPerInvocation: Q });
      expect(k.workgroupSize[0]).toBe(32 / Q);
      expect(k.key).toContain(`"queriesPerInvocation":${Q}`);
      expect(k.code).toContain(`const QUERIES_PER_INVOCATION: u32 = ${Q}u;`);
      for (let j = 0; j < Q; j++) {
        expect(k.code).toContain(`var m_run_${j}: f32`);
        expect(k.code).toContain(`logsumexp[qrow] = (m_run_${j} + log2(l_run_${j}))`);
      }
      expect(k.code).not.toContain(`var m_run_${Q}:`);
      // Each staged K vec4 is read once and feeds every query's dot product.
      expect(k.code.match(/let kv = vec4<f32>\(k_sh\[/g)?.length).toBe(8);
    }
    const lanes = generateFusedForward({ ...base, queriesPerInvocation: 2, lanes: 2 });
    expect(lanes.workgroupSize[0]).toBe(32);
    expect(lanes.code).toContain('sc_1 = sc_1 + subgroupShuffleXor(sc_1, 1u);');
  });
  it('rejects Q that is not compiled or does not divide the last query-tile entry', () => {
    expect(queriesPerInvocationProblem(3, [4, 8])).toBe('queriesPerInvocation 3 is not one of 1, 2, 4');
    expect(queriesPerInvocationProblem(4, [16, 2])).toBe("queriesPerInvocation=4 needs the query tile's last entry (2) to be a multiple of 4");
    expect(() => generateFusedForward({ ...base, queryTile: [16, 2], queriesPerInvocation: 4 })).toThrow(NattenArgumentError);
    const problem = forwardProblem(2, [16, 16], [3, 3], { dim: 16 });
    const c = (queryTile: number[], q: number, lanes?: number): FusedForwardConfig => ({ path: 'plain', queryTile, keyTile: [4, 8], stage: 'f32', queriesPerInvocation: q, ...(lanes ? { lanes } : {}) });
    expect(fusedForwardConfigProblem(problem, c([4, 8], 2), LIMITS)).toBeUndefined();
    expect(fusedForwardConfigProblem(problem, c([4, 8], 4, 2), LIMITS)).toBeUndefined();
    // 16 queries over Q=4 leave 4 invocations, x lanes 4 = 16: a multiple of the subgroup size 8.
    expect(fusedForwardConfigProblem(problem, c([2, 8], 4, 4), LIMITS)).toBeUndefined();
    expect(fusedForwardConfigProblem(problem, c([4, 4], 4), LIMITS)).toBeUndefined();
    expect(fusedForwardConfigProblem(problem, c([8, 2], 4), LIMITS)).toMatch(/last entry \(2\) to be a multiple of 4/);
    // 16 queries over Q=4 with lanes 2: 8 invocations, a multiple of the subgroup size 8.
    expect(fusedForwardConfigProblem(problem, c([4, 4], 4, 2), LIMITS)).toBeUndefined();
    // 16 queries over Q=4 with lanes 4 on a 32-wide subgroup: 16 invocations, not a multiple of 32.
    expect(fusedForwardConfigProblem(problem, c([4, 4], 4, 4), { ...LIMITS, subgroupMinSize: 32 })).toMatch(/gives 16 invocations per workgroup, not a multiple of this adapter's minimum subgroup size 32/);
  });
});
