import { type FusedForwardArgs, NattenNotImplementedError } from '@natten-web/core';
import type { GpuTensor } from '../context.ts';
import { defineGpuOp } from './op.ts';

export const fusedForward = defineGpuOp<FusedForwardArgs<GpuTensor>>(
  async (_ctx, rank) => {
    throw new NattenNotImplementedError(`na${rank}d_forward is not implemented on WebGPU yet`);
  },
  () => {},
);
