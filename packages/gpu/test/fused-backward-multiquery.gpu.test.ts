/**
 * Several rows per invocation in the fused backward (experimental, explicit configs only): Q consecutive query rows
 * of the dQ kernel (`FusedBackwardConfig.queriesPerInvocation`) and K consecutive key rows of the dK/dV kernel
 * (`keysPerInvocation`) along the last axis share every staged read. Checked against the CPU reference gradients
 * with the fused-backward tolerances: ranks 1-3, causal, dilation, stride, rpb with d_rpb, GQA, Dv != D, scalar
 * head dims, key splits, both delta modes, partial tiles, f32 and f16, with the lane split. Also: 1 is the plain
 * kernel byte for byte, each knob changes only its kernel, reruns are bit-identical, and invalid values are
 * rejected before any GPU work.
 */
import { NattenArgumentError } from '@natten-web/core';
import { type FusedBackwardConfig, planFusedBackward } from '@natten-web/wgsl';
import { afterAll, describe, expect, it } from 'vitest';
import { selectFusedBackward } from '../src/index.ts';
import { bitEqual, type BwdCase, caseName, expectGradsClose, maxAbs, nonRowKernelCode, planPass, prepare, runGpuWithConfig } from './fused-backward-cases.ts';
import { gpuContext } from './setup.ts';

afterAll(async () => (await gpuContext()).destroy());

const TIMEOUT = 600_000;

function cfg(queryTile: number[], keyTile: number[], q: number, opts: { keys?: number; lanes?: number; splits?: number[]; deltaPass?: boolean } = {}): FusedBackwardConfig {
  return {
    queryTile,
    keyTile,
    numSplitsKey: opts.splits ?? queryTile.map(() => 1),
    computeDeltaWithTorch: opts.deltaPass ?? false,
    queriesPerInvocation: q,
    ...(opts.keys ? { keysPerInvocation: opts.keys } : {}),
    ...(opts.lanes ? { lanes: opts.lanes } : {}),
  };
}

function check(c: BwdCase): void {
  const config = c.config as FusedBackwardConfig;
  it(`${caseName(c)} Q=${config.queriesPerInvocation} K=${config.keysPerInvocation ?? 1}${config.lanes ? ` lanes=${config.lanes}` : ''}`, async () => {
    const ctx = await gpuContext();
    // `prepare` puts the config's tiles, splits, delta mode and lanes into the args; Q travels with the config.
    const { args, ref } = prepare(c);
    const sel = selectFusedBackward(ctx, c.rank, args);
    const q = config.queriesPerInvocation ?? 1;
    const k = config.keysPerInvocation ?? 1;
    const grouped = { ...sel.config, queriesPerInvocation: q, keysPerInvocation: k };
    const plan = planFusedBackward(sel.problem, grouped);
    const plain = planFusedBackward(sel.problem, sel.config);
    const lanes = config.lanes ?? 1;
    const prod = (t: readonly number[]) => t.reduce((a, b) => a * b, 1);
    expect(planPass(plan, 'na-fused-backward-dq')?.kernel.workgroupSize[0]).toBe((prod(config.queryTile) / q) * lanes);
    expect(planPass(plan, 'na-fused-backward-dkv')?.kernel.workgroupSize[0]).toBe((prod(config.keyTile) / k) * lanes);
    // Each knob changes only its own kernel; a value of 1 leaves it byte-identical.
    for (const [family, n] of [['na-fused-backward-dq', q], ['na-fused-backward-dkv', k]] as const) {
      const same = planPass(plan, family)?.kernel.code === planPass(plain, family)?.kernel.code;
      expect(same).toBe(n === 1);
    }
    expect(nonRowKernelCode(plan)).toEqual(nonRowKernelCode(plain));
    const got = await runGpuWithConfig(ctx, c.rank, args, config);
    expectGradsClose(got, ref, c.dtype, caseName(c));
    expect(maxAbs(ref.gradQuery)).toBeGreaterThan(1e-3);
    if (ref.gradRpb) expect(maxAbs(ref.gradRpb)).toBeGreaterThan(1e-3);
  }, TIMEOUT);
}

const f32 = 'float32' as const;
const f16 = 'float16' as const;

describe('float32 dq with several queries per invocation vs the CPU reference', () => {
  check({ rank: 1, batch: 1, spatial: [21], heads: 2, dim: 16, kernelSize: [5], causal: [true], dtype: f32, config: cfg([16], [16], 2) });
  check({ rank: 1, batch: 2, spatial: [19], heads: 4, headsKv: 2, dim: 16, dimV: 32, kernelSize: [4], dtype: f32, config: cfg([32], [16], 4, { splits: [1], deltaPass: true }) });
  check({ rank: 1, batch: 1, spatial: [37], heads: 2, dim: 6, dimV: 5, kernelSize: [3], dilation: [2], dtype: f32, config: cfg([16], [16], 2, { splits: [2] }) });
  check({ rank: 2, batch: 1, spatial: [9, 11], heads: 2, dim: 8, kernelSize: [3, 3], rpb: true, gradRpb: true, dtype: f32, config: cfg([4, 4], [4, 4], 2) });
  check({ rank: 2, batch: 1, spatial: [17, 10], heads: 2, dim: 16, dimV: 8, kernelSize: [3, 5], causal: [false, true], dilation: [2, 1], dtype: f32, config: cfg([4, 8], [4, 4], 4, { splits: [2, 1] }) });
  check({ rank: 2, batch: 1, spatial: [7, 10], heads: 2, dim: 16, kernelSize: [3, 3], stride: [1, 2], rpb: false, dtype: f32, config: cfg([2, 8], [4, 4], 2, { lanes: 2 }) });
  check({ rank: 3, batch: 1, spatial: [5, 6, 5], heads: 2, dim: 8, dimV: 16, kernelSize: [3, 3, 3], causal: [true, false, true], dtype: f32, config: cfg([2, 2, 4], [2, 2, 4], 2) });
  check({ rank: 3, batch: 1, spatial: [6, 5, 9], heads: 2, dim: 16, kernelSize: [3, 3, 3], dilation: [2, 1, 1], rpb: true, gradRpb: true, dtype: f32, config: cfg([1, 4, 8], [2, 2, 4], 4) });
});

describe('float32 dK/dV with several keys per invocation (and both knobs) vs the CPU reference', () => {
  check({ rank: 1, batch: 1, spatial: [21], heads: 2, dim: 16, kernelSize: [5], causal: [true], dtype: f32, config: cfg([16], [16], 1, { keys: 2 }) });
  check({ rank: 1, batch: 2, spatial: [19], heads: 4, headsKv: 2, dim: 16, dimV: 32, kernelSize: [4], dtype: f32, config: cfg([16], [32], 2, { keys: 4, splits: [1], deltaPass: true }) });
  check({ rank: 1, batch: 1, spatial: [37], heads: 2, dim: 6, dimV: 5, kernelSize: [3], dilation: [2], dtype: f32, config: cfg([16], [16], 1, { keys: 2, splits: [2] }) });
  check({ rank: 2, batch: 1, spatial: [9, 11], heads: 2, dim: 8, kernelSize: [3, 3], rpb: true, gradRpb: true, dtype: f32, config: cfg([4, 4], [4, 4], 2, { keys: 2 }) });
  check({ rank: 2, batch: 1, spatial: [17, 10], heads: 2, dim: 16, dimV: 8, kernelSize: [3, 5], causal: [false, true], dilation: [2, 1], dtype: f32, config: cfg([4, 4], [4, 8], 1, { keys: 4 }) });
  check({ rank: 2, batch: 1, spatial: [7, 10], heads: 2, dim: 16, kernelSize: [3, 3], stride: [1, 2], dtype: f32, config: cfg([2, 8], [2, 8], 2, { keys: 2, lanes: 2 }) });
  check({ rank: 3, batch: 1, spatial: [5, 6, 5], heads: 2, dim: 8, dimV: 16, kernelSize: [3, 3, 3], causal: [true, false, true], dtype: f32, config: cfg([2, 2, 4], [2, 2, 4], 1, { keys: 2 }) });
  check({ rank: 3, batch: 1, spatial: [6, 5, 9], heads: 2, dim: 16, kernelSize: [3, 3, 3], dilation: [2, 1, 1], rpb: true, gradRpb: true, dtype: f32, config: cfg([1, 4, 8], [1, 4, 8], 2, { keys: 4 }) });
});

describe('float16 dq with several queries per invocation vs the CPU reference', () => {
  check({ rank: 1, batch: 1, spatial: [40], heads: 2, dim: 16, kernelSize: [5], rpb: true, gradRpb: true, dtype: f16, config: cfg([16], [16], 2, { splits: [2] }) });
  check({ rank: 2, batch: 1, spatial: [9, 9], heads: 4, headsKv: 2, dim: 32, kernelSize: [3, 3], causal: [false, true], dtype: f16, config: cfg([4, 8], [4, 8], 2, { lanes: 4, deltaPass: true }) });
  check({ rank: 2, batch: 1, spatial: [9, 12], heads: 2, dim: 16, kernelSize: [3, 5], rpb: true, gradRpb: true, dtype: f16, config: cfg([4, 8], [4, 8], 2, { keys: 2 }) });
});

describe('determinism and validation', () => {
  it('reruns are bit-identical', async () => {
    const ctx = await gpuContext();
    const c: BwdCase = { rank: 2, batch: 1, spatial: [9, 11], heads: 2, dim: 8, kernelSize: [3, 3], rpb: true, gradRpb: true, dtype: f32, config: cfg([4, 4], [4, 4], 2, { keys: 2 }) };
    const { args } = prepare(c);
    const a = await runGpuWithConfig(ctx, 2, args, c.config as FusedBackwardConfig);
    const b = await runGpuWithConfig(ctx, 2, args, c.config as FusedBackwardConfig);
    expect(bitEqual(a.gradQuery, b.gradQuery)).toBe(true);
    expect(bitEqual(a.gradKey, b.gradKey)).toBe(true);
    expect(bitEqual(a.gradValue, b.gradValue)).toBe(true);
    expect(a.gradRpb && b.gradRpb && bitEqual(a.gradRpb, b.gradRpb)).toBe(true);
  }, TIMEOUT);
  it('Q = 1 emits the single-query dq kernel; an invalid Q is rejected with the rule', async () => {
    const ctx = await gpuContext();
    const c: BwdCase = { rank: 2, batch: 1, spatial: [8, 8], heads: 2, dim: 8, kernelSize: [3, 3], dtype: f32, config: cfg([4, 4], [4, 4], 1) };
    const { args } = prepare(c);
    const sel = selectFusedBackward(ctx, 2, args);
    expect(planFusedBackward(sel.problem, { ...sel.config, queriesPerInvocation: 1 }).passes.map((p) => p.kernel.code)).toEqual(
      planFusedBackward(sel.problem, sel.config).passes.map((p) => p.kernel.code),
    );
    await expect(runGpuWithConfig(ctx, 2, args, cfg([4, 4], [4, 4], 3))).rejects.toThrow(NattenArgumentError);
    await expect(runGpuWithConfig(ctx, 2, args, cfg([8, 2], [4, 4], 4))).rejects.toThrow(
      /na2d_backward: queriesPerInvocation=4, keysPerInvocation=1 cannot run here: queriesPerInvocation=4 needs the query tile's last entry \(2\) to be a multiple of 4/,
    );
    await expect(runGpuWithConfig(ctx, 2, args, cfg([4, 4], [8, 2], 1, { keys: 4 }))).rejects.toThrow(
      /na2d_backward: queriesPerInvocation=1, keysPerInvocation=4 cannot run here: keysPerInvocation=4 needs the key tile's last entry \(2\) to be a multiple of 4/,
    );
  });
});
