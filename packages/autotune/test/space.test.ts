import { product } from '@natten-web/core';
import { fusedBackwardLanesProblem, fusedForwardConfigProblem, withDefaultBackwardUnroll, withDefaultForwardUnroll } from '@natten-web/wgsl';
import { describe, expect, it } from 'vitest';
import { backwardLabel, backwardSpace, describeBackward, describeForward, estimateBackward, estimateForward, forwardLabel, forwardSpace, type SpaceLimits } from '../src/index.ts';

const LIMITS: SpaceLimits = {
  maxComputeWorkgroupStorageSize: 32768,
  maxComputeInvocationsPerWorkgroup: 256,
  maxComputeWorkgroupSizeX: 256,
  maxComputeWorkgroupsPerDimension: 65535,
};

describe('cost estimate', () => {
  it('useful fraction follows kernels.md §1 (2-D K=7: 4x4 tile with 16-key chunks 44%, 8x8 24%)', () => {
    const p = describeForward({ rank: 2, spatial: [64, 64], heads: 2, dim: 32, kernelSize: 7 });
    const u = (q: number[], k: number[]) => estimateForward(p, { path: 'plain', queryTile: q, keyTile: k, stage: 'f32' }).useful;
    expect(u([4, 4], [4, 4])).toBeCloseTo(49 / 112, 6);
    expect(Math.round(u([4, 4], [4, 4]) * 100)).toBe(44);
    expect(Math.round(u([8, 8], [4, 4]) * 100)).toBe(24);
    // 3-D K=7 4x4x4 with 16-key chunks: 343 of 1008 staged keys
    const p3 = describeForward({ rank: 3, spatial: [16, 16, 16], dim: 16, kernelSize: 7 });
    expect(Math.round(estimateForward(p3, { path: 'plain', queryTile: [4, 4, 4], keyTile: [1, 4, 4], stage: 'f32' }).useful * 100)).toBe(34);
  });

  it('idle fraction and workgroups count the overhang and every batch/head/dilation group', () => {
    const p = describeForward({ rank: 1, batch: 2, spatial: [20], heads: 3, dim: 8, kernelSize: 5, dilation: 2 });
    const e = estimateForward(p, { path: 'plain', queryTile: [16], keyTile: [16], stage: 'f32' });
    expect(e.idle).toBeCloseTo(1 - 10 / 16, 9); // group extent 10 in a 16-lane tile
    expect(e.workgroups).toBe(1 * 2 * 3 * 2);
  });
});

describe('forward space', () => {
  const p = describeForward({ rank: 2, spatial: [16, 16], heads: 2, dim: 16, kernelSize: 3 });
  const space = forwardSpace(p, LIMITS);

  it('candidates are valid, default first, then ordered by estimated cost; pruned ones carry a reason', () => {
    expect(space.enumerated).toBe(space.candidates.length + space.pruned.length);
    expect(space.candidates[0]?.isDefault).toBe(true);
    for (const c of space.candidates) expect(fusedForwardConfigProblem(p, c.config, LIMITS)).toBeUndefined();
    const rest = space.candidates.slice(1).map((c) => c.estimate.cost);
    expect(rest).toEqual([...rest].sort((a, b) => a - b));
    expect(space.candidates.length).toBeLessThanOrEqual(24);
    for (const c of space.pruned) expect(c.reason.length).toBeGreaterThan(10);
  });

  it('drops tiles that leave most invocations idle and tiles that starve a small problem', () => {
    const thin = describeForward({ rank: 2, spatial: [3, 40], dim: 8, kernelSize: 3 });
    const s = forwardSpace(thin, LIMITS, { maxCandidates: 1000 });
    const idle = s.pruned.filter((c) => c.reason.includes('idle'));
    expect(idle.length).toBeGreaterThan(0);
    for (const c of idle) expect(c.estimate.idle).toBeGreaterThan(0.5);
    for (const c of s.candidates) if (!c.isDefault) expect(c.estimate.idle).toBeLessThanOrEqual(0.5);
    const starve = space.pruned.filter((c) => c.reason.includes('workgroups'));
    expect(starve.length).toBeGreaterThan(0);
  });

  it('workgroup-memory and invocation limits prune before timing', () => {
    const big = describeForward({ rank: 1, spatial: [256], dim: 64, kernelSize: 7 });
    const small: SpaceLimits = { ...LIMITS, maxComputeWorkgroupStorageSize: 16384, maxComputeInvocationsPerWorkgroup: 64, maxComputeWorkgroupSizeX: 64 };
    const s = forwardSpace(big, small, { maxCandidates: 1000 });
    for (const c of s.candidates) {
      expect(product(c.config.queryTile)).toBeLessThanOrEqual(64);
      expect(product(c.config.keyTile) * (64 / 4) * 2 * 16).toBeLessThanOrEqual(16384);
    }
    expect(s.candidates.length).toBeGreaterThan(0);
    // on the default limits the 64-key chunk and 128-query tiles exist
    const all = forwardSpace(big, LIMITS, { maxCandidates: 1000 }).candidates;
    expect(Math.max(...all.map((c) => product(c.config.keyTile)))).toBe(64);
  });

  it('only offers the staging the tile arguments select (f16 for f16 inputs, f32 for f32), so a tuned config is reproducible', () => {
    const h = describeForward({ rank: 1, spatial: [64], dim: 16, kernelSize: 7, dtype: 'float16' });
    const f16 = forwardSpace(h, LIMITS, { maxCandidates: 1000 });
    expect(new Set(f16.candidates.map((c) => c.config.stage))).toEqual(new Set(['f16']));
    expect(f16.candidates.length).toBeGreaterThan(1);
    const f = describeForward({ rank: 1, spatial: [64], dim: 16, kernelSize: 7, dtype: 'float32' });
    expect(new Set(forwardSpace(f, LIMITS, { maxCandidates: 1000 }).candidates.map((c) => c.config.stage))).toEqual(new Set(['f32']));
  });

  it('with subgroups the lane-split configs join the space (never the default); without, the space is unchanged', () => {
    const q = describeForward({ rank: 2, spatial: [16, 16], heads: 2, dim: 16, kernelSize: 3 });
    const plain = forwardSpace(q, LIMITS, { maxCandidates: 1000 });
    const sg = forwardSpace(q, { ...LIMITS, subgroupMinSize: 8 }, { maxCandidates: 1000 });
    const all = (s: typeof sg) => [...s.candidates, ...s.pruned];
    expect(all(plain).every((c) => c.config.lanes === undefined)).toBe(true);
    expect(all(sg).filter((c) => c.config.lanes === undefined).map((c) => c.config)).toEqual(expect.arrayContaining(all(plain).map((c) => c.config)));
    // lanes 2 and 4 both split D=16 into whole vec4s; only a 128-query tile with 4 lanes passes 256 invocations
    const q128 = all(plain).filter((c) => product(c.config.queryTile) === 128).length;
    expect(sg.enumerated).toBe(3 * plain.enumerated - q128);
    expect(new Set(all(sg).map((c) => c.config.lanes ?? 1))).toEqual(new Set([1, 2, 4]));
    expect(sg.candidates[0]?.isDefault).toBe(true);
    expect(sg.candidates[0]?.config).toEqual(plain.candidates[0]?.config);
    const split = sg.candidates.find((c) => c.config.lanes === 4);
    expect(split?.label).toMatch(/^q=\S+ k=\S+ stage=f32 lanes=4$/);
    expect(forwardLabel({ path: 'plain', queryTile: [4, 8], keyTile: [4, 4], stage: 'f32', lanes: 2 })).toBe('q=4x8 k=4x4 stage=f32 lanes=2');
    for (const c of sg.candidates) expect(fusedForwardConfigProblem(q, c.config, { ...LIMITS, subgroupMinSize: 8 })).toBeUndefined();
  });
});

describe('backward space', () => {
  it('covers tiles, key splits and both delta modes, default first', () => {
    const p = describeBackward({ rank: 1, spatial: [64], heads: 2, dim: 8, kernelSize: 5 });
    const s = backwardSpace(p, LIMITS, { maxCandidates: 1000 });
    expect(s.candidates[0]?.isDefault).toBe(true);
    const cs = s.candidates.map((c) => c.config);
    expect(new Set(cs.map((c) => c.computeDeltaWithTorch))).toEqual(new Set([false, true]));
    expect(cs.some((c) => c.numSplitsKey[0] === 2)).toBe(true);
    expect(cs.some((c) => c.numSplitsKey[0] === 1)).toBe(true);
  });

  it('with subgroups the lane-split twins join the space (never the default, estimated like their twin); without, the space is unchanged', () => {
    const p = describeBackward({ rank: 2, spatial: [16, 16], heads: 2, dim: 16, kernelSize: 3 });
    const sgLimits = { ...LIMITS, subgroupMinSize: 8 };
    const plain = backwardSpace(p, LIMITS, { maxCandidates: 10_000 });
    const sg = backwardSpace(p, sgLimits, { maxCandidates: 10_000 });
    const all = (s: typeof sg) => [...s.candidates, ...s.pruned];
    expect(all(plain).every((c) => c.config.lanes === undefined)).toBe(true);
    expect(all(sg).filter((c) => c.config.lanes === undefined).map((c) => c.config)).toEqual(expect.arrayContaining(all(plain).map((c) => c.config)));
    expect(new Set(all(sg).map((c) => c.config.lanes ?? 1))).toEqual(new Set([1, 2, 4]));
    expect(sg.enumerated).toBeGreaterThan(2 * plain.enumerated);
    expect(sg.candidates[0]?.isDefault).toBe(true);
    expect(sg.candidates[0]?.config).toEqual(plain.candidates[0]?.config);
    for (const c of all(sg)) {
      expect(fusedBackwardLanesProblem(p, c.config, sgLimits)).toBeUndefined();
      expect(c.estimate).toEqual(estimateBackward(p, { ...c.config, lanes: undefined }));
    }
    expect(backwardLabel({ queryTile: [4, 8], keyTile: [4, 4], numSplitsKey: [1, 1], computeDeltaWithTorch: false, lanes: 2 })).toBe('q=4x8 k=4x4 splits=1,1 delta=fused lanes=2');
    expect(backwardLabel({ queryTile: [4, 8], keyTile: [4, 4], numSplitsKey: [1, 1], computeDeltaWithTorch: false })).toBe('q=4x8 k=4x4 splits=1,1 delta=fused');
  });
});

describe('unroll defaults on wide subgroups', () => {
  // natten-web hands a tuned config back to the op as tile arguments (tiles, lanes, and for the backward splits and
  // delta mode); the op re-applies the hardware-class unroll rule to them. Every candidate must come back unchanged,
  // so `config: 'auto'` runs exactly the kernel that was timed.
  const wide = { ...LIMITS, subgroupMinSize: 32 };
  it('every forward candidate is what its tile arguments select', () => {
    for (const dtype of ['float32', 'float16'] as const) {
      const p = describeForward({ rank: 2, spatial: [16, 16], heads: 2, dim: 16, kernelSize: 3, dtype });
      const space = forwardSpace(p, wide);
      for (const { config: c } of [...space.candidates, ...space.pruned]) {
        const fromArgs = withDefaultForwardUnroll(p, { path: 'plain', queryTile: c.queryTile, keyTile: c.keyTile, stage: c.stage, ...(c.lanes !== undefined ? { lanes: c.lanes } : {}) }, wide);
        expect(fromArgs).toEqual(c);
      }
      expect(space.candidates.some((x) => x.config.keyUnroll === 2)).toBe(dtype === 'float32');
    }
    expect(forwardLabel({ path: 'plain', queryTile: [4, 8], keyTile: [4, 4], stage: 'f32', keyUnroll: 2 })).toBe('q=4x8 k=4x4 stage=f32 unroll=2');
  });
  it('every backward candidate is what its tile arguments select', () => {
    const p = describeBackward({ rank: 2, spatial: [16, 16], heads: 2, dim: 16, kernelSize: 3 });
    const space = backwardSpace(p, wide);
    for (const { config: c } of [...space.candidates, ...space.pruned]) {
      const { keyUnroll: _k, queryUnroll: _q, ...args } = c;
      expect(withDefaultBackwardUnroll(p, args, wide)).toEqual(c);
    }
    expect(space.candidates.some((x) => x.config.keyUnroll === 2 && x.config.queryUnroll === 2)).toBe(true);
    expect(backwardLabel({ queryTile: [4, 8], keyTile: [4, 4], numSplitsKey: [1, 1], computeDeltaWithTorch: false, lanes: 4, keyUnroll: 2, queryUnroll: 2 })).toBe(
      'q=4x8 k=4x4 splits=1,1 delta=fused lanes=4 unroll=2',
    );
  });
});
