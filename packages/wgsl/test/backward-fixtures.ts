/** Shared fixtures of the fused-backward generator tests (lanes, unroll): limits, problems, specs, a parse check. */
import { checkFusedBackward, type NaRank, zeros } from '@natten-web/core';
import { expect } from 'vitest';
import { WgslReflect } from 'wgsl_reflect/wgsl_reflect.module.js';
import { type BackwardLimits, FUSED_BACKWARD_TILES, type FusedBackwardDkvSpec, type FusedBackwardDqSpec, type GpuDType } from '../src/index.ts';

/** lavapipe-like limits without subgroups. */
export const LIMITS: BackwardLimits = { maxComputeWorkgroupStorageSize: 32768, maxComputeInvocationsPerWorkgroup: 256, maxComputeWorkgroupSizeX: 256 };

/** A validated backward problem (batch 1, 2 heads) as config selection sees it. */
export function problem(rank: NaRank, spatial: number[], kernelSize: number[], opts: { dim?: number; dimV?: number; dtype?: GpuDType; gradRpb?: boolean } = {}) {
  const dtype = opts.dtype ?? 'float32';
  const D = opts.dim ?? 16;
  const Dv = opts.dimV ?? D;
  const q = zeros([1, ...spatial, 2, D], dtype);
  const o = zeros([1, ...spatial, 2, Dv], dtype);
  const rpb = opts.gradRpb ? zeros([2, ...kernelSize.map((k) => 2 * k - 1)], dtype) : null;
  const p = checkFusedBackward(
    `na${rank}d_backward`,
    rank,
    { gradQuery: q, gradKey: q, gradValue: o, query: q, key: q, value: o, output: o, gradOutput: o, logsumexp: zeros([1, ...spatial, 2], 'float32'), kernelSize, rpb, gradRpb: rpb },
    FUSED_BACKWARD_TILES,
  );
  return { ...p, dtype };
}

/** A 2-D dq spec with rpb, d_rpb, fused delta and split partials; `over` replaces fields. */
export const dqSpec = (over: Partial<FusedBackwardDqSpec> = {}): FusedBackwardDqSpec => ({
  rank: 2,
  kernelSize: [3, 5],
  causal: [false, true],
  dim: 16,
  dimV: 32,
  dtype: 'float32',
  queryTile: [4, 4],
  keyTile: [4, 8],
  rpb: true,
  gradRpb: true,
  delta: 'fused',
  partial: true,
  ...over,
});

/** The dkv twin of `dqSpec()` (without its dq-only fields); `over` replaces fields. */
export const dkvSpec = (over: Partial<FusedBackwardDkvSpec> = {}): FusedBackwardDkvSpec => {
  const { gradRpb: _g, delta: _d, partial: _p, ...base } = dqSpec();
  return { ...base, ...over };
};

/** The text is valid WGSL with exactly one compute entry point. */
export function parse(code: string): void {
  expect(new WgslReflect(code).entry.compute.length).toBe(1);
}
