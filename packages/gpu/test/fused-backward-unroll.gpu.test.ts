/**
 * Walk unrolls in the fused backward (experimental, explicit configs only): U consecutive staged keys per step of
 * the dQ kernel's window walk (`FusedBackwardConfig.keyUnroll`) and U consecutive staged queries per step of the
 * dK/dV kernel's inverse walk (`queryUnroll`), with independent dot chains, then a remainder loop for the last
 * < U rows. Checked against the CPU reference gradients with the fused-backward tolerances: ranks 1-3, U = 2 and 4
 * for each kernel, causal, dilation, stride, rpb with d_rpb, GQA, Dv != D, scalar and private-array head dims, key
 * splits, both delta modes, f32 and f16, the lane split, and window / inverse rows whose length is not a multiple
 * of U (K = 3 and 5 windows, causal and border rows, split tiles), so the remainder loop always runs. Also: U > 1
 * gives the U = 1 gradients bit for bit (only the instruction order changes), each knob changes only its kernel,
 * and invalid values are rejected before any GPU work.
 */
import { NattenArgumentError } from '@natten-web/core';
import { type FusedBackwardConfig, planFusedBackward } from '@natten-web/wgsl';
import { afterAll, describe, expect, it } from 'vitest';
import { selectFusedBackward } from '../src/index.ts';
import { bitEqual, type BwdCase, caseName, expectGradsClose, maxAbs, nonRowKernelCode, planPass, prepare, runGpuWithConfig } from './fused-backward-cases.ts';
import { gpuContext } from './setup.ts';

afterAll(async () => (await gpuContext()).destroy());

const TIMEOUT = 600_000;

interface Knobs {
  /** keyUnroll (dq). */
  readonly ku?: number;
  /** queryUnroll (dkv). */
  readonly qu?: number;
  readonly lanes?: number;
  readonly splits?: number[];
  readonly deltaPass?: boolean;
}

function cfg(queryTile: number[], keyTile: number[], k: Knobs): FusedBackwardConfig {
  return {
    queryTile,
    keyTile,
    numSplitsKey: k.splits ?? queryTile.map(() => 1),
    computeDeltaWithTorch: k.deltaPass ?? false,
    ...(k.lanes ? { lanes: k.lanes } : {}),
    ...(k.ku !== undefined ? { keyUnroll: k.ku } : {}),
    ...(k.qu !== undefined ? { queryUnroll: k.qu } : {}),
  };
}

/** The same config without the unrolls (what `selectFusedBackward` and the plain kernels see). */
function plainOf(c: FusedBackwardConfig): FusedBackwardConfig {
  const { keyUnroll: _k, queryUnroll: _q, ...rest } = c;
  return rest;
}

function label(c: BwdCase): string {
  const config = c.config as FusedBackwardConfig;
  return `${caseName(c)} keyUnroll=${config.keyUnroll ?? 1} queryUnroll=${config.queryUnroll ?? 1}`;
}

function check(c: BwdCase): void {
  const config = c.config as FusedBackwardConfig;
  it(label(c), async () => {
    const ctx = await gpuContext();
    // `prepare` puts the config's tiles, splits, delta mode and lanes into the args; the unrolls travel with the config.
    const { args, ref } = prepare(c);
    const sel = selectFusedBackward(ctx, c.rank, args);
    const ku = config.keyUnroll ?? 1;
    const qu = config.queryUnroll ?? 1;
    const plan = planFusedBackward(sel.problem, { ...sel.config, keyUnroll: ku, queryUnroll: qu });
    const plain = planFusedBackward(sel.problem, sel.config);
    // Each knob changes only its own kernel (text and key), never its workgroup; a value of 1 leaves it byte-identical.
    for (const [family, n, field] of [['na-fused-backward-dq', ku, 'keyUnroll'], ['na-fused-backward-dkv', qu, 'queryUnroll']] as const) {
      const [a, b] = [planPass(plan, family)?.kernel, planPass(plain, family)?.kernel];
      expect(a?.code === b?.code).toBe(n === 1);
      expect(a?.key.includes(`"${field}":${n}`)).toBe(n > 1);
      expect(a?.workgroupSize).toEqual(b?.workgroupSize);
    }
    expect(nonRowKernelCode(plan)).toEqual(nonRowKernelCode(plain));
    const got = await runGpuWithConfig(ctx, c.rank, args, config);
    expectGradsClose(got, ref, c.dtype, label(c));
    expect(maxAbs(ref.gradQuery)).toBeGreaterThan(1e-3);
    if (ref.gradRpb) expect(maxAbs(ref.gradRpb)).toBeGreaterThan(1e-3);
    // Every P, dS and accumulator sees the plain kernel's operations in the same order: the U = 1 result, bit for bit.
    const base = await runGpuWithConfig(ctx, c.rank, args, plainOf(config));
    expect(bitEqual(got.gradQuery, base.gradQuery), `${label(c)} grad_query vs U=1`).toBe(true);
    expect(bitEqual(got.gradKey, base.gradKey), `${label(c)} grad_key vs U=1`).toBe(true);
    expect(bitEqual(got.gradValue, base.gradValue), `${label(c)} grad_value vs U=1`).toBe(true);
    if (got.gradRpb && base.gradRpb) expect(bitEqual(got.gradRpb, base.gradRpb), `${label(c)} grad_rpb vs U=1`).toBe(true);
  }, TIMEOUT);
}

const f32 = 'float32' as const;
const f16 = 'float16' as const;

describe('float32 dq with the key walk unrolled vs the CPU reference', () => {
  check({ rank: 1, batch: 1, spatial: [21], heads: 2, dim: 16, kernelSize: [5], causal: [true], dtype: f32, config: cfg([16], [16], { ku: 2 }) });
  check({ rank: 1, batch: 2, spatial: [19], heads: 4, headsKv: 2, dim: 16, dimV: 32, kernelSize: [7], dtype: f32, config: cfg([16], [16], { ku: 4, deltaPass: true }) });
  check({ rank: 1, batch: 1, spatial: [37], heads: 2, dim: 6, dimV: 5, kernelSize: [5], dilation: [2], rpb: true, gradRpb: true, dtype: f32, config: cfg([16], [16], { ku: 4, splits: [2] }) });
  check({ rank: 1, batch: 1, spatial: [13], heads: 2, dim: 136, dimV: 37, kernelSize: [5], rpb: true, gradRpb: true, dtype: f32, config: cfg([16], [16], { ku: 2 }) });
  check({ rank: 2, batch: 1, spatial: [9, 11], heads: 2, dim: 8, kernelSize: [3, 3], rpb: true, gradRpb: true, dtype: f32, config: cfg([4, 4], [4, 4], { ku: 2 }) });
  check({ rank: 2, batch: 1, spatial: [17, 10], heads: 2, dim: 16, dimV: 8, kernelSize: [3, 5], causal: [false, true], dilation: [2, 1], dtype: f32, config: cfg([4, 4], [4, 8], { ku: 4, splits: [2, 1] }) });
  check({ rank: 2, batch: 1, spatial: [7, 10], heads: 2, dim: 16, kernelSize: [3, 5], stride: [1, 2], rpb: true, gradRpb: true, dtype: f32, config: cfg([2, 8], [4, 4], { ku: 2, lanes: 2 }) });
  check({ rank: 2, batch: 1, spatial: [9, 12], heads: 4, headsKv: 1, dim: 32, kernelSize: [3, 5], dtype: f32, config: cfg([4, 4], [4, 8], { ku: 4, lanes: 4, deltaPass: true }) });
  check({ rank: 3, batch: 1, spatial: [5, 6, 5], heads: 2, dim: 8, dimV: 16, kernelSize: [3, 3, 3], causal: [true, false, true], dtype: f32, config: cfg([2, 2, 4], [2, 2, 4], { ku: 2 }) });
  check({ rank: 3, batch: 1, spatial: [6, 5, 9], heads: 2, dim: 16, kernelSize: [3, 3, 5], dilation: [2, 1, 1], rpb: true, gradRpb: true, dtype: f32, config: cfg([1, 4, 8], [2, 2, 4], { ku: 4, lanes: 2, splits: [1, 1, 2] }) });
});

describe('float32 dK/dV with the query walk unrolled (and both knobs) vs the CPU reference', () => {
  check({ rank: 1, batch: 1, spatial: [21], heads: 2, dim: 16, kernelSize: [5], causal: [true], dtype: f32, config: cfg([16], [16], { qu: 2 }) });
  check({ rank: 1, batch: 2, spatial: [19], heads: 4, headsKv: 2, dim: 16, dimV: 32, kernelSize: [7], dtype: f32, config: cfg([16], [16], { qu: 4, ku: 2, deltaPass: true }) });
  check({ rank: 1, batch: 1, spatial: [37], heads: 2, dim: 6, dimV: 5, kernelSize: [5], dilation: [2], rpb: true, gradRpb: true, dtype: f32, config: cfg([16], [16], { qu: 4, splits: [2] }) });
  check({ rank: 1, batch: 1, spatial: [13], heads: 2, dim: 136, dimV: 132, kernelSize: [5], rpb: true, gradRpb: true, dtype: f32, config: cfg([16], [16], { qu: 2, ku: 4 }) });
  check({ rank: 2, batch: 1, spatial: [9, 11], heads: 2, dim: 8, kernelSize: [3, 3], rpb: true, gradRpb: true, dtype: f32, config: cfg([4, 4], [4, 4], { qu: 2 }) });
  check({ rank: 2, batch: 1, spatial: [17, 10], heads: 2, dim: 16, dimV: 8, kernelSize: [3, 5], causal: [false, true], dilation: [2, 1], dtype: f32, config: cfg([4, 8], [4, 4], { qu: 4, ku: 4, splits: [2, 1] }) });
  check({ rank: 2, batch: 1, spatial: [7, 10], heads: 2, dim: 16, kernelSize: [3, 5], stride: [1, 2], rpb: true, gradRpb: true, dtype: f32, config: cfg([2, 8], [2, 8], { qu: 2, lanes: 2 }) });
  check({ rank: 2, batch: 1, spatial: [9, 12], heads: 4, headsKv: 1, dim: 32, kernelSize: [3, 5], dtype: f32, config: cfg([4, 8], [4, 4], { qu: 4, lanes: 4, deltaPass: true }) });
  check({ rank: 3, batch: 1, spatial: [5, 6, 5], heads: 2, dim: 8, dimV: 16, kernelSize: [3, 3, 3], causal: [true, false, true], dtype: f32, config: cfg([2, 2, 4], [2, 2, 4], { qu: 2 }) });
  check({ rank: 3, batch: 1, spatial: [6, 5, 9], heads: 2, dim: 16, kernelSize: [3, 3, 5], dilation: [2, 1, 1], rpb: true, gradRpb: true, dtype: f32, config: cfg([2, 2, 4], [1, 4, 8], { qu: 4, ku: 2, lanes: 2 }) });
});

describe('float16 with the walks unrolled vs the CPU reference', () => {
  check({ rank: 1, batch: 1, spatial: [40], heads: 2, dim: 16, kernelSize: [5], rpb: true, gradRpb: true, dtype: f16, config: cfg([16], [16], { ku: 2, qu: 4, splits: [2] }) });
  check({ rank: 1, batch: 1, spatial: [20], heads: 2, dim: 288, kernelSize: [5], causal: [true], dtype: f16, config: cfg([16], [16], { ku: 4, qu: 2, lanes: 2 }) });
  check({ rank: 2, batch: 1, spatial: [9, 9], heads: 4, headsKv: 2, dim: 32, kernelSize: [3, 3], causal: [false, true], dtype: f16, config: cfg([4, 8], [4, 8], { ku: 2, qu: 2, lanes: 4, deltaPass: true }) });
  check({ rank: 2, batch: 1, spatial: [9, 12], heads: 2, dim: 16, dimV: 8, kernelSize: [3, 5], rpb: true, gradRpb: true, dtype: f16, config: cfg([4, 8], [4, 8], { ku: 4, qu: 4 }) });
  check({ rank: 3, batch: 1, spatial: [4, 5, 7], heads: 2, dim: 12, kernelSize: [3, 3, 5], dtype: f16, config: cfg([2, 2, 4], [2, 2, 4], { ku: 2, qu: 4, splits: [1, 1, 2] }) });
});

describe('validation', () => {
  it('an invalid unroll, or one combined with its kernel\'s row grouping, is rejected naming the field before any GPU work', async () => {
    const ctx = await gpuContext();
    const c: BwdCase = { rank: 2, batch: 1, spatial: [8, 8], heads: 2, dim: 8, kernelSize: [3, 3], dtype: f32, config: cfg([4, 4], [4, 4], {}) };
    const { args } = prepare(c);
    const run = (config: FusedBackwardConfig) => runGpuWithConfig(ctx, 2, args, config);
    await expect(run(cfg([4, 4], [4, 4], { ku: 3 }))).rejects.toThrow(NattenArgumentError);
    await expect(run(cfg([4, 4], [4, 4], { ku: 3 }))).rejects.toThrow(/^na2d_backward: keyUnroll=3 cannot run here: keyUnroll 3 is not one of 1, 2, 4$/);
    await expect(run(cfg([4, 4], [4, 4], { qu: 0 }))).rejects.toThrow(/^na2d_backward: queryUnroll=0 cannot run here: queryUnroll 0 is not one of 1, 2, 4$/);
    await expect(run(cfg([4, 4], [4, 4], { ku: 2, qu: 8 }))).rejects.toThrow(/keyUnroll=2, queryUnroll=8 cannot run here: queryUnroll 8 is not one of 1, 2, 4/);
    await expect(run({ ...cfg([4, 4], [4, 4], { ku: 2 }), queriesPerInvocation: 2 })).rejects.toThrow(
      /na2d_backward: queriesPerInvocation=2, keysPerInvocation=1, keyUnroll=2 cannot run here: keyUnroll=2 cannot be combined with queriesPerInvocation=2/,
    );
    await expect(run({ ...cfg([4, 4], [4, 4], { qu: 4 }), keysPerInvocation: 2 })).rejects.toThrow(
      /queryUnroll=4 cannot be combined with keysPerInvocation=2/,
    );
    // 1 is the plain config: accepted, the plain kernels.
    const sel = selectFusedBackward(ctx, 2, args);
    expect(planFusedBackward(sel.problem, { ...sel.config, keyUnroll: 1, queryUnroll: 1 }).passes.map((p) => p.kernel.code)).toEqual(
      planFusedBackward(sel.problem, sel.config).passes.map((p) => p.kernel.code),
    );
  });
});
