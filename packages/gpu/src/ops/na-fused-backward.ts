import { type FusedBackwardArgs, NattenNotImplementedError } from '@natten-web/core';
import type { GpuTensor } from '../context.ts';
import { defineGpuOp } from './op.ts';

export const fusedBackward = defineGpuOp<FusedBackwardArgs<GpuTensor>>(
  async (_ctx, rank) => {
    throw new NattenNotImplementedError(`na${rank}d_backward is not implemented on WebGPU yet`);
  },
  () => {},
);
