/**
 * The umbrella's dense attention as a backend of the dense conformance suite (@natten-web/testkit): host tensors run
 * the host path (f64 math, rounded to the dtype), GPU tensors the WebGPU kernels (tensor cores where the adapter has
 * them).
 */
import type { Tensor } from '@natten-web/core';
import type { GpuTensor } from '@natten-web/gpu';
import type { DenseBackend, DenseCall } from '@natten-web/testkit';
import { attention, attentionBackward, free, toGpu, toHost } from '../src/index.ts';

const options = (call: DenseCall) => ({ scale: call.scale, isCausal: call.case.causal, ...(call.varlen ?? {}) });

/** The host path: `attention` / `attentionBackward` on host tensors. */
export const hostDenseBackend: DenseBackend = {
  name: 'natten-web host',
  forward: async (call) => attention(call.query, call.key, call.value, { ...options(call), returnLse: true }),
  backward: async (call, output, gradOutput, lse) => attentionBackward(call.query, call.key, call.value, output, gradOutput, lse, options(call)),
};

/** The WebGPU path: inputs uploaded, results read back, every GPU tensor freed. */
export const gpuDenseBackend: DenseBackend = {
  name: 'natten-web webgpu',
  forward: async (call) => {
    const [q, k, v] = (await Promise.all([call.query, call.key, call.value].map(toGpu))) as [GpuTensor, GpuTensor, GpuTensor];
    try {
      const r = await attention(q, k, v, { ...options(call), returnLse: true });
      try {
        return { output: await toHost(r.output), lse: await toHost(r.lse) };
      } finally {
        free(r.output);
        free(r.lse);
      }
    } finally {
      for (const t of [q, k, v]) free(t);
    }
  },
  backward: async (call, output, gradOutput, lse) => {
    const inputs = (await Promise.all([call.query, call.key, call.value, output, gradOutput, lse].map((t: Tensor) => toGpu(t)))) as GpuTensor[];
    const [q, k, v, o, dO, l] = inputs as [GpuTensor, GpuTensor, GpuTensor, GpuTensor, GpuTensor, GpuTensor];
    try {
      const g = await attentionBackward(q, k, v, o, dO, l, options(call));
      try {
        return { gradQuery: await toHost(g.gradQuery), gradKey: await toHost(g.gradKey), gradValue: await toHost(g.gradValue) };
      } finally {
        for (const t of Object.values(g)) free(t);
      }
    } finally {
      for (const t of inputs) free(t);
    }
  },
};
