/**
 * The modules on a GPU tensor (Mesa lavapipe in CI): qkv projection, attention and output projection all on the
 * GPU, against the same module on the host tensor (linear layers on the host in f64, attention on the CPU).
 */
import { randn, randu, type Tensor } from '@natten-web/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dispose, isGpuTensor, NeighborhoodAttention1D, NeighborhoodAttention2D, NeighborhoodAttention3D, setBackend, toGpu, toHost } from '../src/index.ts';
import { expectClose } from './helpers.ts';

beforeAll(() => setBackend('webgpu'));
afterAll(() => dispose());

/** Random weights for every parameter (rpb included, which starts at zero), so each of them matters. */
function randomWeights(m: { parameterShapes: Record<string, readonly number[]> }, seed: number): Record<string, Tensor> {
  const out: Record<string, Tensor> = {};
  let s = seed;
  for (const [k, shape] of Object.entries(m.parameterShapes)) out[k] = randu(shape, 'float32', s++, -0.3, 0.3);
  return out;
}

const CASES = [
  { name: '1-D causal, dilation 2', make: () => new NeighborhoodAttention1D({ dim: 16, numHeads: 2, kernelSize: 5, dilation: 2, isCausal: true }), shape: [2, 23, 16] },
  { name: '2-D rpb', make: () => new NeighborhoodAttention2D({ dim: 24, numHeads: 3, kernelSize: 3, relPosBias: true }), shape: [1, 7, 9, 24] },
  { name: '2-D no qkv bias, stride 2', make: () => new NeighborhoodAttention2D({ dim: 16, numHeads: 2, kernelSize: [3, 5], stride: 2, qkvBias: false }), shape: [1, 8, 10, 16] },
  { name: '3-D', make: () => new NeighborhoodAttention3D({ dim: 16, numHeads: 2, kernelSize: 3, qkScale: 0.3 }), shape: [1, 4, 5, 6, 16] },
];

describe.each(CASES)('$name on a GPU tensor', (c) => {
  it('float32: the same as the host forward (atol 1e-4), a GPU tensor out', async () => {
    const m = c.make();
    m.loadWeights(randomWeights(m, 10));
    const x = randn(c.shape, 'float32', 1);
    const gy = await m.forward(await toGpu(x));
    expect(isGpuTensor(gy)).toBe(true);
    expectClose(await toHost(gy), await m.forward(x), 1e-4);
  });

  it('float16: within half-precision rounding of the host forward', async () => {
    const m = c.make();
    m.loadWeights(randomWeights(m, 20));
    const x = randn(c.shape, 'float16', 2);
    const gy = await m.forward(await toGpu(x));
    expect(gy.dtype).toBe('float16');
    expectClose(await toHost(gy), await m.forward(x), 1e-2);
  });
});

describe('module weights on the GPU', () => {
  it('loadWeights after a GPU forward: the next GPU forward uses the new weights', async () => {
    const m = new NeighborhoodAttention2D({ dim: 8, numHeads: 2, kernelSize: 3, relPosBias: true });
    const x = randn([1, 5, 5, 8], 'float32', 3);
    const gx = await toGpu(x);
    const first = await toHost(await m.forward(gx));
    m.loadWeights(randomWeights(m, 30));
    const second = await toHost(await m.forward(gx));
    expectClose(second, await m.forward(x), 1e-4);
    expect(Math.max(...Array.from(second.data as Float32Array, (v, i) => Math.abs(v - (first.data[i] as number))))).toBeGreaterThan(1e-3);
  });

  it('a GPU tensor into a module built for the CPU is refused with a clear error', async () => {
    const m = new NeighborhoodAttention1D({ dim: 8, numHeads: 2, kernelSize: 3, backend: 'cpu' });
    const gx = await toGpu(randn([1, 6, 8], 'float32', 4));
    await expect(m.forward(gx)).rejects.toThrow("NeighborhoodAttention1D.forward: x is a GPU tensor but this module was built with backend 'cpu'");
    await expect(m.forward(await toGpu(randn([1, 6, 9], 'float32', 4)))).rejects.toThrow('NeighborhoodAttention1D.forward: x must have shape [batch, length, 8], got [1, 6, 9]');
  });
});
