import {
  type AvBackwardArgs,
  type AvForwardArgs,
  checkAvBackward,
  checkAvForward,
  type NaRank,
} from '@natten-web/core';
import { generateAvBackwardAttn, generateAvBackwardValue, generateAvForward } from '@natten-web/wgsl';
import type { DispatchCommand, GpuContext, GpuTensor } from '../context.ts';
import { bmmCheck, type BmmOptions, bmmCommand, bmmSplitScales, defineBmmOp, opSpecOf } from './na-bmm.ts';
import { type GpuOpPlan, memoKernel } from './op.ts';

const checkForward = bmmCheck<AvForwardArgs<GpuTensor>>('av_forward', checkAvForward, (a) => ({ attn: a.attn, value: a.value, output: a.output }));

const checkBackward = bmmCheck<AvBackwardArgs<GpuTensor>>('av_backward', checkAvBackward, (a) => ({
  attn: a.attn,
  value: a.value,
  grad_output: a.gradOutput,
  grad_attn: a.gradAttn,
  grad_value: a.gradValue,
}));

/** The dispatches of `avForward` (validated), for timing or batching. */
export function avForwardPlan(ctx: GpuContext, rank: NaRank, args: AvForwardArgs<GpuTensor>, options: BmmOptions = {}): GpuOpPlan {
  const { p, dtype } = checkForward(ctx, rank, args);
  const spec = opSpecOf(ctx, p, dtype, options);
  const kernel = memoKernel('av-forward', spec, generateAvForward);
  const split = bmmSplitScales(ctx, spec, 'av_forward', { attn: args.attn, value: args.value });
  return { commands: [...split.commands, bmmCommand(p, kernel, [args.attn.buffer, args.value.buffer, args.output.buffer, ...split.buffers])], release: split.release };
}

/** `na{1,2,3}d_av_forward` (spec §3.6): `out = sum_{valid t} attn[x,t] v_{n_t(x)}`; invalid slots never read. */
export const avForward = defineBmmOp('av_forward', avForwardPlan, checkForward);

/** The dispatches of `avBackward` (validated): d_attn, then d_value. */
export function avBackwardPlan(ctx: GpuContext, rank: NaRank, args: AvBackwardArgs<GpuTensor>, options: BmmOptions = {}): GpuOpPlan {
  const { p, dtype } = checkBackward(ctx, rank, args);
  const spec = opSpecOf(ctx, p, dtype, options);
  const split = bmmSplitScales(ctx, spec, 'av_backward', { grad_output: args.gradOutput, value: args.value, attn: args.attn });
  const commands: DispatchCommand[] = [
    ...split.commands,
    bmmCommand(p, memoKernel('av-backward-attn', spec, generateAvBackwardAttn), [args.gradOutput.buffer, args.value.buffer, args.gradAttn.buffer, ...split.buffers]),
    bmmCommand(p, memoKernel('av-backward-value', spec, generateAvBackwardValue), [args.attn.buffer, args.gradOutput.buffer, args.gradValue.buffer, ...split.buffers]),
  ];
  return { commands, release: split.release };
}

/**
 * `na{1,2,3}d_av_backward` (spec §3.7, §7.4): d_attn (PN kernel in gradient mode on d_out, value; 0 in
 * invalid slots) and d_value (IN kernel on attn, d_out over the inverse neighborhood). One submission.
 */
export const avBackward = defineBmmOp('av_backward', avBackwardPlan, checkBackward);
