import { type QkForwardArgs, type QkBackwardArgs, NattenNotImplementedError } from '@natten-web/core';
import type { GpuTensor } from '../context.ts';
import { defineGpuOp } from './op.ts';

export const qkForward = defineGpuOp<QkForwardArgs<GpuTensor>>(
  async (_ctx, rank) => {
    throw new NattenNotImplementedError(`na${rank}d_qk_forward is not implemented on WebGPU yet`);
  },
  () => {},
);

export const qkBackward = defineGpuOp<QkBackwardArgs<GpuTensor>>(
  async (_ctx, rank) => {
    throw new NattenNotImplementedError(`na${rank}d_qk_backward is not implemented on WebGPU yet`);
  },
  () => {},
);
