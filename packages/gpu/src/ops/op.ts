import { type DType, type NaRank, NattenUnsupportedError, type TensorLike } from '@natten-web/core';
import type { GpuContext } from '../context.ts';

/**
 * The device limits the kernels' config selection reads (a plain object, so the wgsl enumerators and the
 * autotuner take it as is). `subgroupMinSize` only when the device has the `subgroups` feature and the adapter
 * reports its minimum subgroup size: then lane-split configs (`lanes` > 1) are valid and enumerated (never the
 * heuristic default); otherwise they are rejected and not offered.
 */
export function kernelLimits(ctx: GpuContext): {
  readonly maxComputeWorkgroupStorageSize: number;
  readonly maxComputeInvocationsPerWorkgroup: number;
  readonly maxComputeWorkgroupSizeX: number;
  readonly maxComputeWorkgroupsPerDimension: number;
  readonly subgroupMinSize?: number;
} {
  const sg = ctx.adapterInfo.subgroupMinSize;
  return {
    maxComputeWorkgroupStorageSize: ctx.limits.maxComputeWorkgroupStorageSize,
    maxComputeInvocationsPerWorkgroup: ctx.limits.maxComputeInvocationsPerWorkgroup,
    maxComputeWorkgroupSizeX: ctx.limits.maxComputeWorkgroupSizeX,
    maxComputeWorkgroupsPerDimension: ctx.limits.maxComputeWorkgroupsPerDimension,
    ...(ctx.hasSubgroups && sg !== undefined && sg > 0 ? { subgroupMinSize: sg } : {}),
  };
}

/** float16 runs only where the device has the `shader-f16` feature. */
export function requireF16Feature(ctx: GpuContext, op: string, dtype: DType): void {
  if (dtype === 'float16' && !ctx.hasF16) {
    throw new NattenUnsupportedError(`${op}: float16 needs the WebGPU feature 'shader-f16', which this adapter does not offer; use float32`);
  }
}

/**
 * A GPU op: runs on GPU tensors (outputs written in place) and carries `check`, which validates the
 * same arguments on shapes/dtypes alone (host or GPU tensors), throwing before any GPU work.
 */
export interface GpuOp<A> {
  (ctx: GpuContext, rank: NaRank, args: A): Promise<void>;
  check(ctx: GpuContext, rank: NaRank, args: unknown): void;
}

export function defineGpuOp<A>(
  run: (ctx: GpuContext, rank: NaRank, args: A) => Promise<void>,
  check: (ctx: GpuContext, rank: NaRank, args: unknown) => void,
): GpuOp<A> {
  const op = run as GpuOp<A>;
  op.check = check;
  return op;
}

export type { TensorLike };
