/**
 * Tensor helpers of the umbrella: host tensors come from core; GPU tensors are `GpuTensor`s of
 * `@natten-web/gpu` (a `GPUBuffer` plus shape and dtype).
 */
import {
  bytesPerElement,
  formatShape,
  NattenArgumentError,
  numel,
  type Tensor,
} from '@natten-web/core';
import type { GpuTensor } from '@natten-web/gpu';
import { gpuContext } from './runtime.ts';

/** A host tensor or a GPU tensor. */
export type AnyTensor = Tensor | GpuTensor;

/** The result tensor type for inputs of type T: GPU inputs give GPU tensors, host inputs host tensors. */
export type OutputOf<T extends AnyTensor> = T extends GpuTensor ? GpuTensor : Tensor;

/** Parameters after the first: same placement as the first, any dtype (the first argument alone drives inference). */
export type SameAs<T extends AnyTensor> = NoInfer<OutputOf<T>>;

const STORAGE_USAGE = 0x80;

export function isGpuTensor(t: unknown): t is GpuTensor {
  const v = t as Partial<GpuTensor> | null | undefined;
  return typeof v === 'object' && v !== null && Array.isArray(v.shape) && typeof v.dtype === 'string' && typeof v.buffer === 'object' && v.buffer !== null && !('data' in v);
}

export function isHostTensor(t: unknown): t is Tensor {
  const v = t as Partial<Tensor> | null | undefined;
  return typeof v === 'object' && v !== null && Array.isArray(v.shape) && typeof v.dtype === 'string' && typeof v.data === 'object' && v.data !== null;
}

/**
 * Adopt a `GPUBuffer` as a GPU tensor without copying (e.g. a TensorFlow.js WebGPU tensor's buffer
 * or an ONNX Runtime Web GPU tensor's `gpuBuffer`). The buffer must belong to the device natten-web
 * uses: call `useDevice(thatDevice)` first. It needs STORAGE usage (and COPY_SRC to be read back
 * with `toHost`), and at least `numel * bytesPerElement` bytes; data is dense row-major.
 */
export function fromGpuBuffer(buffer: GPUBuffer, shape: readonly number[], dtype: 'float32' | 'float16'): GpuTensor {
  if (dtype !== 'float32' && dtype !== 'float16') {
    throw new NattenArgumentError(`fromGpuBuffer: dtype '${String(dtype)}' is not a GPU dtype; use 'float32' or 'float16'`);
  }
  shape.forEach((s, i) => {
    if (!Number.isInteger(s) || s < 0) {
      throw new NattenArgumentError(`fromGpuBuffer: shape[${i}]=${s} must be a non-negative integer (shape ${formatShape(shape)})`);
    }
  });
  const n = numel(shape);
  const byteLength = n * bytesPerElement(dtype);
  if (buffer.size < byteLength) {
    throw new NattenArgumentError(
      `fromGpuBuffer: buffer has ${buffer.size} bytes but shape ${formatShape(shape)} ${dtype} needs ${byteLength}`,
    );
  }
  if ((buffer.usage & STORAGE_USAGE) === 0) {
    throw new NattenArgumentError(`fromGpuBuffer: buffer usage ${buffer.usage} lacks GPUBufferUsage.STORAGE (0x80); compute shaders cannot bind it`);
  }
  return { shape: [...shape], dtype, buffer, numel: n, byteLength };
}

/** Upload a host tensor to natten-web's GPU context (float32/float16 only). */
export async function toGpu(t: Tensor): Promise<GpuTensor> {
  if (!isHostTensor(t)) throw new NattenArgumentError('toGpu: expected a host tensor ({ shape, dtype, data })');
  const ctx = await gpuContext('toGpu');
  return ctx.upload(t);
}

/** Read a GPU tensor back to a new host tensor (a host tensor is returned as is). */
export async function toHost(t: AnyTensor): Promise<Tensor> {
  if (isHostTensor(t)) return t;
  if (!isGpuTensor(t)) throw new NattenArgumentError('toHost: expected a GPU tensor or a host tensor');
  const ctx = await gpuContext('toHost');
  return ctx.read(t);
}
