import {
  checkQkBackward,
  checkQkForward,
  type NaRank,
  type QkBackwardArgs,
  type QkForwardArgs,
} from '@natten-web/core';
import {
  defaultBmmTile,
  generateQkBackwardKey,
  generateQkBackwardQuery,
  generateQkForward,
  generateRpbGradPartial,
  generateRpbGradReduce,
  rpbCells,
} from '@natten-web/wgsl';
import { type DispatchCommand, foldWorkgroups, type GpuContext, type GpuTensor } from '../context.ts';
import { bmmCheck, type BmmOptions, bmmCommand, bmmSplitScales, bmmWorkgroupCount, defineBmmOp, opSpecOf } from './na-bmm.ts';
import { type GpuOpPlan, memoKernel } from './op.ts';

const checkForward = bmmCheck<QkForwardArgs<GpuTensor>>('qk_forward', checkQkForward, (a) => ({ query: a.query, key: a.key, attn: a.attn, rel_pos_bias: a.rpb }));

const checkBackward = bmmCheck<QkBackwardArgs<GpuTensor>>('qk_backward', checkQkBackward, (a) => ({
  query: a.query,
  key: a.key,
  grad_attn: a.gradAttn,
  grad_query: a.gradQuery,
  grad_key: a.gradKey,
  grad_rel_pos_bias: a.gradRpb,
}));

/** The dispatches of `qkForward` (validated), for timing or batching; `qkForward` runs exactly this plan. */
export function qkForwardPlan(ctx: GpuContext, rank: NaRank, args: QkForwardArgs<GpuTensor>, options: BmmOptions = {}): GpuOpPlan {
  const { p, dtype } = checkForward(ctx, rank, args);
  const rpb = args.rpb ?? undefined;
  const spec = { ...opSpecOf(ctx, p, dtype, options), rpb: rpb !== undefined };
  const kernel = memoKernel('qk-forward', spec, generateQkForward);
  const split = bmmSplitScales(ctx, spec, 'qk_forward', { query: args.query, key: args.key });
  const buffers = rpb ? [args.query.buffer, args.key.buffer, rpb.buffer, args.attn.buffer] : [args.query.buffer, args.key.buffer, args.attn.buffer];
  return { commands: [...split.commands, bmmCommand(p, kernel, [...buffers, ...split.buffers])], release: split.release };
}

/**
 * `na{1,2,3}d_qk_forward` (spec §3.4): `attn = q.k (+ rpb)`, no scaling, -inf in invalid causal slots.
 * One dispatch of the PN kernel.
 */
export const qkForward = defineBmmOp('qk_forward', qkForwardPlan, checkForward);

/** The dispatches of `qkBackward` (validated): dQ, dK and, with grad_rpb, the two d_rpb passes. */
export function qkBackwardPlan(ctx: GpuContext, rank: NaRank, args: QkBackwardArgs<GpuTensor>, options: BmmOptions = {}): GpuOpPlan {
  const { p, dtype } = checkBackward(ctx, rank, args);
  const spec = opSpecOf(ctx, p, dtype, options);
  const split = bmmSplitScales(ctx, spec, 'qk_backward', { grad_attn: args.gradAttn, key: args.key, query: args.query });
  const commands: DispatchCommand[] = [
    ...split.commands,
    bmmCommand(p, memoKernel('qk-backward-query', spec, generateQkBackwardQuery), [args.gradAttn.buffer, args.key.buffer, args.gradQuery.buffer, ...split.buffers]),
    bmmCommand(p, memoKernel('qk-backward-key', spec, generateQkBackwardKey), [args.gradAttn.buffer, args.query.buffer, args.gradKey.buffer, ...split.buffers]),
  ];
  const gradRpb = args.gradRpb ?? undefined;
  const scratch: GpuTensor[] = [];
  if (gradRpb) {
    // Two passes: per-tile partial sums over the BMM grid, then a fixed-order sum per (head, cell) that
    // accumulates into grad_rpb. The f32 scratch comes from the context pool.
    const rpbSpec = { rank, kernelSize: [...p.params.kernelSize], dtype };
    const kp = memoKernel('rpb-partial', rpbSpec, generateRpbGradPartial);
    const kr = memoKernel('rpb-reduce', rpbSpec, generateRpbGradReduce);
    const cells = rpbCells(p.params.kernelSize);
    const rowsTotal = bmmWorkgroupCount(p, defaultBmmTile(rank));
    const partial = ctx.tempTensor([rowsTotal, cells], 'float32', { label: `${p.op}.rpb_partial` });
    scratch.push(partial);
    commands.push(
      bmmCommand(p, kp, [args.gradAttn.buffer, partial.buffer]),
      {
        kernel: kr,
        buffers: [partial.buffer, gradRpb.buffer],
        uniforms: { batch: p.batch, heads: p.heads, rows: rowsTotal / (p.batch * p.heads) },
        workgroups: foldWorkgroups(p.heads * cells),
      },
    );
  }
  return {
    commands,
    release: () => {
      split.release();
      for (const t of scratch) ctx.releaseTensor(t);
    },
  };
}

/**
 * `na{1,2,3}d_qk_backward` (spec §3.5, §7.4): dQ (NN kernel on d_attn, key), dK (IN kernel on d_attn,
 * query, inverse neighborhood) and, if given, d_rel_pos_bias ACCUMULATED (`+=`, like NATTEN: zero it
 * first) by a deterministic per-(head, cell) reduction. One submission.
 */
export const qkBackward = defineBmmOp('qk_backward', qkBackwardPlan, checkBackward);
