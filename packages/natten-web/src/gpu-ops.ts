/**
 * The GPU seed ops of `@natten-web/gpu` on GPU tensors (outputs pre-allocated, written in place):
 * `fusedForward(ctx, rank, args)`, `fusedBackward`, `qkForward`, `qkBackward`, `avForward`, `avBackward`.
 * `context()` gives natten-web's GPU context to allocate tensors with (`ctx.createTensor`, `ctx.upload`).
 */
import type { GpuContext } from '@natten-web/gpu';
import { gpuContext } from './runtime.ts';

export { avBackward, avForward, fusedBackward, fusedForward, qkBackward, qkForward } from '@natten-web/gpu';

/** natten-web's GPU context (created on first use; throws NattenUnsupportedError without WebGPU). */
export function context(): Promise<GpuContext> {
  return gpuContext('ops.gpu.context');
}
