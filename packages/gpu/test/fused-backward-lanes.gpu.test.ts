/**
 * Lane-split fused backward (`FusedBackwardConfig.lanes` = T > 1: T invocations per query row in the dQ kernel and
 * per key row in the dK/dV kernel, head dims split over them, q.k and dO.v summed by subgroupShuffleXor) vs the
 * CPU reference gradients, with the fused-backward tolerances: ranks 1-3, causal, dilation, rpb with d_rpb, GQA,
 * Dv != D, key splits, both delta modes, extents that are not multiples of the tile, f32 and f16 (one f16 case
 * with rows too long for named registers). Also: reruns are bit-identical, the op offers lane configs only with
 * subgroups and never as its default, and rejects invalid ones (with the reason) before any GPU work.
 */
import { NattenArgumentError } from '@natten-web/core';
import { enumerateFusedBackwardConfigs, type FusedBackwardConfig, planFusedBackward } from '@natten-web/wgsl';
import { afterAll, describe, expect, it } from 'vitest';
import { backwardKernelLimits, selectFusedBackward } from '../src/index.ts';
import { bitEqual, type BwdCase, caseName, expectGradsClose, maxAbs, prepare, runGpu } from './fused-backward-cases.ts';
import { gpuContext } from './setup.ts';

afterAll(async () => (await gpuContext()).destroy());

const TIMEOUT = 600_000;

function cfg(queryTile: number[], keyTile: number[], lanes: number, numSplitsKey: number[] = queryTile.map(() => 1), computeDeltaWithTorch = false): FusedBackwardConfig {
  return { queryTile, keyTile, numSplitsKey, computeDeltaWithTorch, lanes };
}

function check(c: BwdCase): void {
  it(caseName(c), async () => {
    const ctx = await gpuContext();
    const { args, ref } = prepare(c);
    const config = c.config as FusedBackwardConfig;
    const sel = selectFusedBackward(ctx, c.rank, args);
    expect(sel.config.lanes).toBe(config.lanes);
    // The dq and dkv kernels run tile * lanes invocations and need subgroups; the other passes are unchanged.
    const plan = planFusedBackward(sel.problem, sel.config);
    const rowKernels = plan.passes.filter((p) => /^na-fused-backward-(dq|dkv)\//.test(p.kernel.key));
    expect(rowKernels).toHaveLength(2);
    for (const p of plan.passes) expect(p.kernel.features.includes('subgroups')).toBe(rowKernels.includes(p));
    const lanes = config.lanes ?? 1;
    expect(rowKernels.map((p) => p.kernel.workgroupSize[0])).toEqual([config.queryTile, config.keyTile].map((t) => t.reduce((a, b) => a * b, 1) * lanes));
    const got = await runGpu(ctx, c.rank, args);
    expectGradsClose(got, ref, c.dtype, caseName(c));
    // The reference gradients are not trivially zero (so the comparison can fail).
    expect(maxAbs(ref.gradQuery)).toBeGreaterThan(1e-3);
    expect(maxAbs(ref.gradKey)).toBeGreaterThan(1e-3);
    expect(maxAbs(ref.gradValue)).toBeGreaterThan(1e-3);
    if (ref.gradRpb) expect(maxAbs(ref.gradRpb)).toBeGreaterThan(1e-3);
  }, TIMEOUT);
}

const f32 = 'float32' as const;
const f16 = 'float16' as const;

describe('adapter', () => {
  it('has subgroups with a minimum size of at least 4 (lavapipe: 8)', async () => {
    const ctx = await gpuContext();
    expect(ctx.hasSubgroups).toBe(true);
    expect(ctx.adapterInfo.subgroupMinSize ?? 0).toBeGreaterThanOrEqual(4);
    expect(backwardKernelLimits(ctx).subgroupMinSize).toBe(ctx.adapterInfo.subgroupMinSize);
  });
});

describe('float32 lane-split backward vs the CPU reference', () => {
  check({ rank: 1, batch: 1, spatial: [21], heads: 2, dim: 16, kernelSize: [5], causal: [true], dtype: f32, config: cfg([16], [16], 2) });
  check({ rank: 1, batch: 2, spatial: [19], heads: 4, headsKv: 2, dim: 16, dimV: 32, kernelSize: [4], dtype: f32, config: cfg([32], [16], 4, [1], true) });
  check({ rank: 1, batch: 1, spatial: [37], heads: 2, dim: 32, kernelSize: [3], dilation: [2], dtype: f32, config: cfg([16], [16], 8, [2]) });
  check({ rank: 2, batch: 1, spatial: [9, 11], heads: 2, dim: 8, kernelSize: [3, 3], rpb: true, gradRpb: true, dtype: f32, config: cfg([4, 4], [4, 4], 2) });
  check({ rank: 2, batch: 1, spatial: [17, 10], heads: 2, dim: 16, dimV: 8, kernelSize: [3, 5], causal: [true, false], dilation: [2, 1], dtype: f32, config: cfg([4, 8], [4, 4], 2, [2, 1]) });
  check({ rank: 2, batch: 1, spatial: [7, 10], heads: 2, dim: 16, kernelSize: [3, 3], rpb: true, gradRpb: true, dtype: f32, config: cfg([2, 8], [4, 4], 4, [1, 1], true) });
  check({ rank: 3, batch: 1, spatial: [5, 6, 5], heads: 2, dim: 8, dimV: 16, kernelSize: [3, 3, 3], causal: [true, false, true], dtype: f32, config: cfg([2, 2, 4], [2, 2, 4], 2) });
  check({ rank: 3, batch: 1, spatial: [6, 5, 6], heads: 2, dim: 16, kernelSize: [3, 3, 3], dilation: [2, 1, 1], rpb: true, gradRpb: true, dtype: f32, config: cfg([2, 4, 4], [2, 2, 4], 4) });
});

describe('float16 lane-split backward vs the CPU reference', () => {
  check({ rank: 1, batch: 1, spatial: [40], heads: 2, dim: 16, kernelSize: [5], rpb: true, gradRpb: true, dtype: f16, config: cfg([16], [16], 2, [2]) });
  check({ rank: 2, batch: 1, spatial: [9, 9], heads: 4, headsKv: 2, dim: 32, kernelSize: [3, 3], causal: [false, true], dtype: f16, config: cfg([4, 4], [4, 8], 4, [1, 1], true) });
  check({ rank: 3, batch: 1, spatial: [4, 6, 5], heads: 2, dim: 8, kernelSize: [3, 3, 3], dilation: [1, 2, 1], dtype: f16, config: cfg([2, 2, 4], [2, 2, 4], 2) });
  // 288 / 4 / 2 = 36 vec4 registers per lane: more than the named-register limit (32), so private arrays.
  check({ rank: 1, batch: 1, spatial: [20], heads: 1, dim: 288, kernelSize: [3], dtype: f16, config: cfg([16], [16], 2) });
});

describe('lane-split backward: determinism and selection', () => {
  it('reruns are bit-identical (key splits, d_rpb, fused delta)', async () => {
    const ctx = await gpuContext();
    const c: BwdCase = { rank: 2, batch: 1, spatial: [10, 9], heads: 2, dim: 8, kernelSize: [3, 3], rpb: true, gradRpb: true, dtype: f32, config: cfg([4, 4], [4, 4], 2, [2, 1]) };
    const { args } = prepare(c);
    const a = await runGpu(ctx, c.rank, args);
    const b = await runGpu(ctx, c.rank, args);
    expect(bitEqual(a.gradQuery, b.gradQuery)).toBe(true);
    expect(bitEqual(a.gradKey, b.gradKey)).toBe(true);
    expect(bitEqual(a.gradValue, b.gradValue)).toBe(true);
    expect(a.gradRpb && b.gradRpb && bitEqual(a.gradRpb, b.gradRpb)).toBe(true);
  }, TIMEOUT);

  it('enumerates lane twins only with the subgroup size, never as the default, and rejects invalid lanes with the reason', async () => {
    const ctx = await gpuContext();
    const c: BwdCase = { rank: 2, batch: 1, spatial: [8, 8], heads: 2, dim: 16, kernelSize: [3, 3], dtype: f32 };
    const { args } = prepare(c);
    const sel = selectFusedBackward(ctx, 2, args);
    expect(sel.config.lanes).toBeUndefined();
    const plain = enumerateFusedBackwardConfigs(sel.problem, ctx.limits);
    const withLanes = enumerateFusedBackwardConfigs(sel.problem, backwardKernelLimits(ctx));
    expect(plain.every((x) => x.lanes === undefined)).toBe(true);
    expect(withLanes.filter((x) => x.lanes === undefined)).toEqual(plain);
    expect(new Set(withLanes.map((x) => x.lanes))).toEqual(new Set([undefined, 2, 4]));
    const tiles = { queryTileSize: [4, 4], keyTileSize: [4, 4] };
    expect(() => selectFusedBackward(ctx, 2, { ...args, ...tiles, lanes: 8 })).toThrow(NattenArgumentError);
    expect(() => selectFusedBackward(ctx, 2, { ...args, ...tiles, lanes: 8 })).toThrow(
      'na2d_backward: query_tile_size=[4, 4], key_tile_size=[4, 4], lanes=8 cannot run here: lanes=8 gives each lane whole vec4 columns, so head dims must be multiples of 32; got head_dim=16, value head_dim=16',
    );
    expect(() => selectFusedBackward(ctx, 2, { ...args, ...tiles, lanes: 3 })).toThrow('na2d_backward: lanes=3 is not one of 1, 2, 4, 8 (invocations per row)');
    expect(() => selectFusedBackward(ctx, 2, { ...args, lanes: 2 })).toThrow('na2d_backward: lanes=2 needs query_tile_size and key_tile_size');
    expect(selectFusedBackward(ctx, 2, { ...args, ...tiles, lanes: 4 }).config.lanes).toBe(4);
    expect(selectFusedBackward(ctx, 2, { ...args, ...tiles, lanes: 1 }).config.lanes).toBeUndefined();
  });
});
