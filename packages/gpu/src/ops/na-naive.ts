/**
 * Runner of the naive fused NA forward (`@natten-web/wgsl`'s `generateNaiveForward`): the benchmark's
 * regression baseline, forward only. Not a user path: `fusedForward` is the real op.
 */
import {
  checkFusedForward,
  type FusedForwardArgs,
  type FusedProblem,
  formatShape,
  NattenArgumentError,
  type NaRank,
  NattenUnsupportedError,
  opName,
  type TensorLike,
} from '@natten-web/core';
import { checkGpuDType, type GeneratedKernel, generateNaiveForward, NAIVE_MAX_DIM_V, naiveForwardDispatch } from '@natten-web/wgsl';
import type { DispatchCommand, GpuContext, GpuTensor } from '../context.ts';
import { checkFusedForwardBindings, fusedForwardCommand } from './na-fused-forward.ts';
import { defineGpuOp, type GpuOp } from './op.ts';

/** Validate on shapes and dtypes alone: core's forward rules plus the naive kernel's GPU rules. */
export function checkNaiveFusedForward(ctx: GpuContext, rank: NaRank, args: FusedForwardArgs<TensorLike>): FusedProblem {
  const op = `${opName(rank, 'forward')} (naive)`;
  if (args.queryTileSize !== undefined || args.keyTileSize !== undefined) {
    throw new NattenArgumentError(
      `${op}: query_tile_size/key_tile_size were given (${formatShape(args.queryTileSize ?? [])}/${formatShape(args.keyTileSize ?? [])}), but the naive kernel has no tiles; leave them unset`,
    );
  }
  const problem = checkFusedForward(op, rank, args);
  checkFusedForwardBindings(ctx, op, problem, args);
  if (problem.dimV > NAIVE_MAX_DIM_V) {
    throw new NattenUnsupportedError(`${op}: value head_dim=${problem.dimV} exceeds the naive kernel's maximum of ${NAIVE_MAX_DIM_V}`);
  }
  return problem;
}

/** Kernel and dispatch command for a call (no GPU work). */
export function planNaiveFusedForward(
  ctx: GpuContext,
  rank: NaRank,
  args: FusedForwardArgs<GpuTensor>,
): { kernel: GeneratedKernel; command: DispatchCommand; problem: FusedProblem } {
  const problem = checkNaiveFusedForward(ctx, rank, args);
  const dtype = checkGpuDType(problem.op, problem.dtype);
  const kernel = generateNaiveForward({
    rank,
    kernelSize: [...problem.params.kernelSize],
    causal: [...problem.params.isCausal],
    dim: problem.dim,
    dimV: problem.dimV,
    dtype,
    hasRpb: problem.hasRpb,
    hasLse: problem.hasLse,
  });
  const command = fusedForwardCommand(ctx, kernel, problem, args, naiveForwardDispatch(problem));
  return { kernel, command, problem };
}

/**
 * `na{1,2,3}d_forward` with the naive kernel (one invocation per query and head, window re-read from global
 * memory, f32 math): the benchmark's baseline row. Same arguments and results as `fusedForward` (no tiles).
 */
export const naiveFusedForward: GpuOp<FusedForwardArgs<GpuTensor>> = defineGpuOp<FusedForwardArgs<GpuTensor>>(
  async (ctx, rank, args) => {
    const { command, problem } = planNaiveFusedForward(ctx, rank, args);
    await ctx.dispatch([command], problem.op);
  },
  (ctx, rank, args) => {
    checkNaiveFusedForward(ctx, rank, args as FusedForwardArgs<TensorLike>);
  },
);
