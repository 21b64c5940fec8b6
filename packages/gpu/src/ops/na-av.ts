import { type AvForwardArgs, type AvBackwardArgs, NattenNotImplementedError } from '@natten-web/core';
import type { GpuTensor } from '../context.ts';
import { defineGpuOp } from './op.ts';

export const avForward = defineGpuOp<AvForwardArgs<GpuTensor>>(
  async (_ctx, rank) => {
    throw new NattenNotImplementedError(`na${rank}d_av_forward is not implemented on WebGPU yet`);
  },
  () => {},
);

export const avBackward = defineGpuOp<AvBackwardArgs<GpuTensor>>(
  async (_ctx, rank) => {
    throw new NattenNotImplementedError(`na${rank}d_av_backward is not implemented on WebGPU yet`);
  },
  () => {},
);
