import { type DType, type NaRank, NattenUnsupportedError, type TensorLike } from '@natten-web/core';
import type { GpuContext } from '../context.ts';

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
