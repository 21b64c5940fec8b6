import type { NaRank, TensorLike } from '@natten-web/core';
import type { GpuContext } from '../context.ts';

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
