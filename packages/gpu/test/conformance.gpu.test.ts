import { defineNaConformance } from '@natten-web/testkit';
import { createGpuBackend } from '../src/index.ts';
import { gpuContext } from './setup.ts';

// The shared conformance suite (every op x rank 1-3, quick grid) on the WebGPU backend, against the CPU
// reference run in float64 on the same dtype-rounded inputs.
defineNaConformance({
  name: 'webgpu',
  makeBackend: async () => createGpuBackend(await gpuContext()),
  dtypes: ['float32', 'float16'],
  reference: 'cpu',
  size: 'quick',
});
