/**
 * 'auto' on a machine WITH a WebGPU adapter: what WebGPU cannot run goes to the CPU with a one-line
 * notice; explicit 'webgpu' never falls back.
 */
import { NattenNotImplementedError, type NaBackend, type Tensor } from '@natten-web/core';
import { afterAll, describe, expect, it } from 'vitest';
import { execute } from '../src/common.ts';
import { configure, dispose, info, isGpuTensor, na2d, toGpu, toHost } from '../src/index.ts';
import { runHost } from '../src/runtime.ts';
import { expectSame, rnd } from './helpers.ts';

const notices: string[] = [];
configure({ notice: (m) => notices.push(m) });
afterAll(() => dispose());

describe("'auto' with an adapter", () => {
  it('uses WebGPU for float32', async () => {
    expect((await info()).backend).toBe('webgpu');
    const used = await runHost('probe', 'auto', 'float32', async () => {});
    expect(used).toBe('webgpu');
    expect(notices).toEqual([]);
  });

  it('runs float64 on the CPU with one notice', async () => {
    const q = rnd([1, 6, 6, 1, 4], 'float64');
    const out = await na2d(q, q, q, { kernelSize: 3, backend: 'auto' });
    expectSame(out, await na2d(q, q, q, { kernelSize: 3, backend: 'cpu' }));
    await na2d(q, q, q, { kernelSize: 3, backend: 'auto' });
    expect(notices).toEqual(['natten-web: float64 tensors run on the CPU backend (WGSL has no f64)']);
    await expect(na2d(q, q, q, { kernelSize: 3, backend: 'webgpu' })).rejects.toThrow('dtype float64 is not supported on WebGPU');
  });

  it('an op that throws NattenNotImplementedError on WebGPU reruns on the CPU (host tensors)', async () => {
    const seen: string[] = [];
    const run = async (b: NaBackend) => {
      seen.push(b.name);
      if (b.name === 'webgpu') throw new NattenNotImplementedError('na9d is not implemented on WebGPU yet');
    };
    expect(await runHost('na9d', 'auto', 'float32', run)).toBe('cpu');
    expect(seen).toEqual(['webgpu', 'cpu']);
    expect(notices.at(-1)).toBe('natten-web: na9d is not implemented on WebGPU yet (na9d is not implemented on WebGPU yet); running it on the CPU backend');
    await expect(runHost('na9d', 'webgpu', 'float32', run)).rejects.toBeInstanceOf(NattenNotImplementedError);
  });

  it('GPU tensors: an unimplemented GPU op is read back, run on the CPU and uploaded', async () => {
    const q = rnd([1, 6, 6, 1, 4]);
    const g = await toGpu(q);
    const plan = (requested: 'auto' | 'webgpu') => ({
      op: 'probeOp',
      requested,
      inputs: { query: g },
      async host(t: Readonly<Record<string, Tensor | undefined>>, backend: string | undefined) {
        expect(backend).toBe('cpu');
        const out = await na2d(t.query as Tensor, t.query as Tensor, t.query as Tensor, { kernelSize: 3, backend: 'cpu' });
        return { output: out };
      },
      async gpu(): Promise<never> {
        throw new NattenNotImplementedError('probeOp is not implemented on WebGPU yet');
      },
    });
    const res = await execute(plan('auto'));
    expect(isGpuTensor(res.output)).toBe(true);
    expectSame(await toHost(res.output as Parameters<typeof toHost>[0]), await na2d(q, q, q, { kernelSize: 3, backend: 'cpu' }));
    expect(notices.at(-1)).toMatch(/^natten-web: probeOp is not implemented on WebGPU yet .*reading back and running it on the CPU backend$/);
    await expect(execute(plan('webgpu'))).rejects.toBeInstanceOf(NattenNotImplementedError);
  });
});
