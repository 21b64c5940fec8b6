/**
 * Walk unrolls of the fused backward (experimental `keyUnroll` for the dq kernel, `queryUnroll` for the dK/dV
 * kernel) without a GPU: U = 1 is byte-identical to a spec / config without the field, U > 1 emits a different
 * kernel (text and key, same workgroup and bindings) with U-row steps and a remainder loop, each knob changes only
 * its kernel, every invalid value (and a combination with the kernel's row grouping) is rejected with its rule,
 * and on wide subgroups the default and the lane-split configs unroll by 2 (withDefaultBackwardUnroll).
 */
import { describe, expect, it } from 'vitest';
import { dkvSpec, dqSpec, LIMITS, parse, problem } from './backward-fixtures.ts';
import {
  type BackwardLimits,
  defaultFusedBackwardConfig,
  enumerateFusedBackwardConfigs,
  type FusedBackwardConfig,
  type FusedBackwardDkvSpec,
  type FusedBackwardDqSpec,
  fusedBackwardLanesProblem,
  generateFusedBackwardDkv,
  generateFusedBackwardDq,
  planFusedBackward,
  withDefaultBackwardUnroll,
} from '../src/index.ts';
import { FUSED_BACKWARD_UNROLLS, fusedBackwardUnrollProblem } from '../src/ops/na-fused-backward.ts';

const SG16: BackwardLimits = { ...LIMITS, subgroupMinSize: 16 };

/** Spec variations: ranks, dtypes, scalar and private-array head dims, lanes, delta modes, row grouping. */
const VARIANTS: readonly Partial<FusedBackwardDqSpec & FusedBackwardDkvSpec>[] = [
  {},
  { delta: 'read', partial: false, gradRpb: false },
  { dtype: 'float16', lanes: 2 },
  { lanes: 4, dim: 16, dimV: 16, causal: [true, true] },
  { dim: 6, dimV: 5, rpb: false, gradRpb: false },
  { dim: 300, dimV: 300, rpb: false, gradRpb: false },
  { rank: 1, kernelSize: [7], causal: [false], queryTile: [16], keyTile: [32] },
  { rank: 3, kernelSize: [3, 3, 3], causal: [true, false, false], queryTile: [2, 2, 4], keyTile: [2, 4, 4], lanes: 2 },
  { queriesPerInvocation: 2, keysPerInvocation: 4 },
];

describe('U = 1 is the plain kernel', () => {
  it('keyUnroll 1 (dq) and queryUnroll 1 (dkv) emit the same text and key as a spec without the field', () => {
    for (const over of VARIANTS) {
      const { keysPerInvocation, ...dqOver } = over;
      const a = generateFusedBackwardDq(dqSpec(dqOver));
      const b = generateFusedBackwardDq({ ...dqSpec(dqOver), keyUnroll: 1 });
      expect(b).toEqual(a);
      const { gradRpb: _g, delta: _d, partial: _p, queriesPerInvocation: _q, ...dkvOver } = over;
      const c = generateFusedBackwardDkv(dkvSpec({ ...dkvOver, ...(keysPerInvocation ? { keysPerInvocation } : {}) }));
      const d = generateFusedBackwardDkv({ ...dkvSpec({ ...dkvOver, ...(keysPerInvocation ? { keysPerInvocation } : {}) }), queryUnroll: 1 });
      expect(d).toEqual(c);
      expect(a.key).not.toContain('Unroll');
      expect(c.key).not.toContain('Unroll');
    }
  });

  it('a config with both unrolls 1 plans exactly the passes of one without', () => {
    const p = problem(2, [9, 9], [3, 3], { gradRpb: true });
    const config: FusedBackwardConfig = { queryTile: [4, 4], keyTile: [4, 4], numSplitsKey: [2, 1], computeDeltaWithTorch: true };
    const a = planFusedBackward(p, config);
    const b = planFusedBackward(p, { ...config, keyUnroll: 1, queryUnroll: 1 });
    expect(b.passes.map((x) => [x.kernel.key, x.kernel.code, x.workgroups])).toEqual(a.passes.map((x) => [x.kernel.key, x.kernel.code, x.workgroups]));
  });
});

describe('U > 1 text', () => {
  it('dq: a different kernel and key, the same workgroup and bindings; U-key steps, interleaved chains, a remainder loop', () => {
    for (const over of VARIANTS.filter((o) => o.queriesPerInvocation === undefined)) {
      const plain = generateFusedBackwardDq(dqSpec(over));
      for (const U of [2, 4]) {
        const k = generateFusedBackwardDq({ ...dqSpec(over), keyUnroll: U });
        parse(k.code);
        expect(k.code).not.toBe(plain.code);
        expect(k.key).not.toBe(plain.key);
        expect(k.key).toContain(`"keyUnroll":${U}`);
        expect(k.workgroupSize).toEqual(plain.workgroupSize);
        expect(k.bindings).toEqual(plain.bindings);
        expect(k.workgroupBytes).toBe(plain.workgroupBytes);
        const L = (over.rank ?? 2) - 1;
        expect(k.code).toContain(`for (; m_${L} + ${U} <= mhi_${L}; m_${L} += ${U}) {`);
        expect(k.code).toContain(`for (; m_${L} < mhi_${L}; m_${L}++) {`);
        expect(k.code).toContain(`let mu${U - 1} = mu0 + ${U - 1}u;`);
        // The remainder loop is the plain single-key body.
        expect(k.code).toContain('let ds = p * (dp - delta_x);');
        for (let u = 0; u < U; u++) {
          expect(k.code).toContain(`let ds_u${u} = p_u${u} * (dp_u${u} - delta_x);`);
          if (over.gradRpb !== false) expect(k.code).toContain(`] = ds_u${u};`);
        }
        if ((over.lanes ?? 1) > 1) expect(k.code).toContain(`sdot_u${U - 1} = sdot_u${U - 1} + subgroupShuffleXor(sdot_u${U - 1}, 1u);`);
      }
    }
  });

  it('dkv: the same for the query walk, with per-query lse and delta', () => {
    for (const over of VARIANTS.filter((o) => o.queriesPerInvocation === undefined)) {
      const { gradRpb: _g, delta: _d, partial: _p, ...dkvOver } = over;
      const plain = generateFusedBackwardDkv(dkvSpec(dkvOver));
      for (const U of [2, 4]) {
        const k = generateFusedBackwardDkv({ ...dkvSpec(dkvOver), queryUnroll: U });
        parse(k.code);
        expect(k.code).not.toBe(plain.code);
        expect(k.key).toContain(`"queryUnroll":${U}`);
        expect(k.workgroupSize).toEqual(plain.workgroupSize);
        expect(k.bindings).toEqual(plain.bindings);
        expect(k.code).toContain(`let p_u${U - 1} = exp(s_u${U - 1} - lse_sh[mu${U - 1}]);`);
        expect(k.code).toContain('let p = exp(s - lse_sh[m]);');
      }
    }
  });

  it('each knob changes only its own kernel in the plan', () => {
    const p = problem(2, [9, 9], [3, 3], { gradRpb: true });
    const config: FusedBackwardConfig = { queryTile: [4, 4], keyTile: [4, 4], numSplitsKey: [2, 1], computeDeltaWithTorch: true };
    const codes = (c: FusedBackwardConfig) => Object.fromEntries(planFusedBackward(p, c).passes.map((x) => [x.kernel.key.split('/')[0], x.kernel.code]));
    const plain = codes(config);
    const changed = (c: FusedBackwardConfig) => Object.keys(plain).filter((f) => codes(c)[f] !== plain[f]);
    expect(changed({ ...config, keyUnroll: 2 })).toEqual(['na-fused-backward-dq']);
    expect(changed({ ...config, queryUnroll: 4 })).toEqual(['na-fused-backward-dkv']);
    expect(changed({ ...config, keyUnroll: 4, queryUnroll: 2 })).toEqual(['na-fused-backward-dq', 'na-fused-backward-dkv']);
  });
});

describe('validation', () => {
  const p = problem(2, [16, 16], [3, 3]);
  const c = (over: Partial<FusedBackwardConfig>): FusedBackwardConfig => ({ queryTile: [4, 4], keyTile: [4, 4], numSplitsKey: [1, 1], computeDeltaWithTorch: false, ...over });
  it('1, 2 and 4 are valid, alone, together and with lanes', () => {
    expect(FUSED_BACKWARD_UNROLLS).toEqual([1, 2, 4]);
    for (const U of FUSED_BACKWARD_UNROLLS) {
      expect(fusedBackwardLanesProblem(p, c({ keyUnroll: U, queryUnroll: U }), LIMITS)).toBeUndefined();
      expect(fusedBackwardLanesProblem(p, c({ keyUnroll: U, lanes: 2 }), SG16)).toBeUndefined();
    }
    // An unroll 1 combines with row grouping (it is the plain walk).
    expect(fusedBackwardLanesProblem(p, c({ keyUnroll: 1, queryUnroll: 1, queriesPerInvocation: 2, keysPerInvocation: 2 }), LIMITS)).toBeUndefined();
  });
  it('each rule with its reason, in fusedBackwardLanesProblem, the generators and the plan', () => {
    for (const bad of [3, 0, 8, -2, 1.5, Number.NaN]) {
      expect(fusedBackwardUnrollProblem({ keyUnroll: bad })).toBe(`keyUnroll ${bad} is not one of 1, 2, 4`);
      expect(fusedBackwardLanesProblem(p, c({ queryUnroll: bad }), LIMITS)).toBe(`queryUnroll ${bad} is not one of 1, 2, 4`);
    }
    expect(fusedBackwardLanesProblem(p, c({ keyUnroll: 2, queriesPerInvocation: 4 }), LIMITS)).toBe(
      'keyUnroll=2 cannot be combined with queriesPerInvocation=4 (the grouped-rows walk is not unrolled); set one of them to 1',
    );
    expect(fusedBackwardLanesProblem(p, c({ queryUnroll: 4, keysPerInvocation: 2 }), LIMITS)).toBe(
      'queryUnroll=4 cannot be combined with keysPerInvocation=2 (the grouped-rows walk is not unrolled); set one of them to 1',
    );
    // The other kernel's grouping is fine.
    expect(fusedBackwardLanesProblem(p, c({ keyUnroll: 2, keysPerInvocation: 2 }), LIMITS)).toBeUndefined();
    expect(fusedBackwardLanesProblem(p, c({ queryUnroll: 2, queriesPerInvocation: 2 }), LIMITS)).toBeUndefined();
    expect(() => generateFusedBackwardDq(dqSpec({ keyUnroll: 3 }))).toThrow('fused backward spec: keyUnroll 3 is not one of 1, 2, 4');
    expect(() => generateFusedBackwardDq(dqSpec({ keyUnroll: 2, queriesPerInvocation: 2 }))).toThrow('keyUnroll=2 cannot be combined with queriesPerInvocation=2');
    expect(() => generateFusedBackwardDkv(dkvSpec({ queryUnroll: 0 }))).toThrow('fused backward spec: queryUnroll 0 is not one of 1, 2, 4');
    expect(() => generateFusedBackwardDkv(dkvSpec({ queryUnroll: 4, keysPerInvocation: 4 }))).toThrow('queryUnroll=4 cannot be combined with keysPerInvocation=4');
    expect(() => planFusedBackward(p, c({ keyUnroll: 3 }))).toThrow('keyUnroll 3 is not one of 1, 2, 4');
  });
});

describe('enumeration and default', () => {
  it('the default and the lane-split configs of the enumerator unroll by 2 on wide subgroups, except float16 at rank 3', () => {
    const f16r3 = problem(3, [6, 6, 6], [3, 3, 3], { dim: 32, dtype: 'float16' });
    for (const p of [problem(1, [40], [5]), problem(2, [16, 16], [3, 3], { dtype: 'float16', gradRpb: true }), problem(3, [6, 6, 6], [3, 3, 3], { dim: 32 }), f16r3]) {
      const unrolls = p !== f16r3;
      // Without wide subgroups (none, or 8 wide as on lavapipe): never.
      for (const limits of [LIMITS, { ...LIMITS, subgroupMinSize: 8 }]) {
        const d = defaultFusedBackwardConfig(p, limits);
        expect(d && ('keyUnroll' in d || 'queryUnroll' in d)).toBe(false);
        for (const x of enumerateFusedBackwardConfigs(p, limits)) expect('keyUnroll' in x || 'queryUnroll' in x).toBe(false);
      }
      const d = defaultFusedBackwardConfig(p, SG16) as FusedBackwardConfig;
      expect([d.keyUnroll, d.queryUnroll]).toEqual(unrolls ? [2, 2] : [undefined, undefined]);
      for (const x of enumerateFusedBackwardConfigs(p, SG16)) {
        const expected = unrolls && (x.lanes ?? 1) > 1 ? [2, 2] : [undefined, undefined];
        expect([x.keyUnroll, x.queryUnroll]).toEqual(expected);
      }
    }
  });

  it('withDefaultBackwardUnroll keeps explicit unrolls, single-lane and grouped configs as they are', () => {
    const p = problem(2, [16, 16], [3, 3]);
    const base: FusedBackwardConfig = { queryTile: [4, 8], keyTile: [4, 8], numSplitsKey: [1, 1], computeDeltaWithTorch: false, lanes: 4 };
    expect(withDefaultBackwardUnroll(p, base, SG16)).toEqual({ ...base, keyUnroll: 2, queryUnroll: 2 });
    for (const c of [{ ...base, keyUnroll: 1 }, { ...base, queryUnroll: 4 }, { ...base, lanes: undefined }, { ...base, queriesPerInvocation: 2 }, { ...base, keysPerInvocation: 2 }]) {
      expect(withDefaultBackwardUnroll(p, c, SG16)).toEqual(c);
    }
  });
});
