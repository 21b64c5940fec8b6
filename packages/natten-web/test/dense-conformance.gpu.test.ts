/**
 * The dense conformance suite (@natten-web/testkit) on the umbrella's WebGPU path (Mesa lavapipe in CI: the plain
 * dense kernels; tensor cores where the adapter has subgroup matrices). A missing adapter fails it.
 */
import { defineDenseConformance } from '@natten-web/testkit';
import { afterAll, beforeAll } from 'vitest';
import { dispose, setBackend } from '../src/index.ts';
import { gpuDenseBackend } from './dense-backends.ts';

beforeAll(() => setBackend('webgpu'));
afterAll(() => dispose());

defineDenseConformance({ name: 'natten-web webgpu', makeBackend: async () => gpuDenseBackend, dtypes: ['float32', 'float16'] });
