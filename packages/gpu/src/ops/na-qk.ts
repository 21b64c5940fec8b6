import {
  checkQkBackward,
  checkQkForward,
  type NaRank,
  opName,
  type QkBackwardArgs,
  type QkForwardArgs,
} from '@natten-web/core';
import {
  defaultBmmTile,
  generateQkBackwardKey,
  generateQkBackwardQuery,
  generateQkForward,
  generateRpbGrad,
  padAxes,
} from '@natten-web/wgsl';
import { type DispatchCommand, foldWorkgroups, type GpuContext, type GpuTensor } from '../context.ts';
import { bmmUniforms, bmmWorkgroups, checkBmmGpu, memoKernel, opSpecOf } from './na-bmm.ts';
import { defineGpuOp } from './op.ts';

function checkForward(ctx: GpuContext, rank: NaRank, args: unknown) {
  const a = args as QkForwardArgs<GpuTensor>;
  const p = checkQkForward(opName(rank, 'qk_forward'), rank, a);
  const dtype = checkBmmGpu(ctx, p, { query: a.query, key: a.key, attn: a.attn, rel_pos_bias: a.rpb });
  return { p, dtype };
}

function checkBackward(ctx: GpuContext, rank: NaRank, args: unknown) {
  const a = args as QkBackwardArgs<GpuTensor>;
  const p = checkQkBackward(opName(rank, 'qk_backward'), rank, a);
  const dtype = checkBmmGpu(ctx, p, {
    query: a.query,
    key: a.key,
    grad_attn: a.gradAttn,
    grad_query: a.gradQuery,
    grad_key: a.gradKey,
    grad_rel_pos_bias: a.gradRpb,
  });
  return { p, dtype };
}

/**
 * `na{1,2,3}d_qk_forward` (spec §3.4): `attn = q.k (+ rpb)`, no scaling, -inf in invalid causal slots.
 * One dispatch of the PN kernel.
 */
export const qkForward = defineGpuOp<QkForwardArgs<GpuTensor>>(
  async (ctx, rank, args) => {
    const { p, dtype } = checkForward(ctx, rank, args);
    const rpb = args.rpb ?? undefined;
    const spec = { ...opSpecOf(p, dtype), rpb: rpb !== undefined };
    const kernel = memoKernel('qk-forward', spec, generateQkForward);
    const tile = defaultBmmTile(rank);
    const buffers = rpb ? [args.query.buffer, args.key.buffer, rpb.buffer, args.attn.buffer] : [args.query.buffer, args.key.buffer, args.attn.buffer];
    await ctx.dispatch([{ kernel, buffers, uniforms: bmmUniforms(p, kernel, tile), workgroups: bmmWorkgroups(p, tile) }], p.op);
  },
  (ctx, rank, args) => {
    checkForward(ctx, rank, args);
  },
);

/**
 * `na{1,2,3}d_qk_backward` (spec §3.5, §7.4): dQ (NN kernel on d_attn, key), dK (IN kernel on d_attn,
 * query, inverse neighborhood) and, if given, d_rel_pos_bias ACCUMULATED (`+=`, like NATTEN: zero it
 * first) by a deterministic per-(head, cell) reduction. One submission.
 */
export const qkBackward = defineGpuOp<QkBackwardArgs<GpuTensor>>(
  async (ctx, rank, args) => {
    const { p, dtype } = checkBackward(ctx, rank, args);
    const spec = opSpecOf(p, dtype);
    const tile = defaultBmmTile(rank);
    const kq = memoKernel('qk-backward-query', spec, generateQkBackwardQuery);
    const kk = memoKernel('qk-backward-key', spec, generateQkBackwardKey);
    const workgroups = bmmWorkgroups(p, tile);
    const commands: DispatchCommand[] = [
      { kernel: kq, buffers: [args.gradAttn.buffer, args.key.buffer, args.gradQuery.buffer], uniforms: bmmUniforms(p, kq, tile), workgroups },
      { kernel: kk, buffers: [args.gradAttn.buffer, args.query.buffer, args.gradKey.buffer], uniforms: bmmUniforms(p, kk, tile), workgroups },
    ];
    const gradRpb = args.gradRpb ?? undefined;
    if (gradRpb) {
      const kr = memoKernel('rpb-grad', { rank, kernelSize: [...p.params.kernelSize], dtype }, generateRpbGrad);
      const L = padAxes(p.spatial, 1);
      const d = padAxes(p.params.dilation, 1);
      const s = padAxes(p.params.stride, 1);
      const cells = p.params.kernelSize.reduce((acc, k) => acc * (2 * k - 1), 1);
      commands.push({
        kernel: kr,
        buffers: [args.gradAttn.buffer, gradRpb.buffer],
        uniforms: { batch: p.batch, heads: p.heads, L0: L[0], L1: L[1], L2: L[2], d0: d[0], d1: d[1], d2: d[2], s0: s[0], s1: s[1], s2: s[2] },
        workgroups: foldWorkgroups(p.heads * cells),
      });
    }
    await ctx.dispatch(commands, p.op);
  },
  (ctx, rank, args) => {
    checkBackward(ctx, rank, args);
  },
);
