/** `config: 'auto'` on WebGPU goes through @natten-web/autotune (here in 'tune' mode with an in-memory store). */
import { memoryStore } from '@natten-web/autotune';
import { afterAll, describe, expect, it } from 'vitest';
import { configure, dispose, na2d, na2dBackward } from '../src/index.ts';
import { expectClose, rnd } from './helpers.ts';

const store = memoryStore();
const warnings: string[] = [];
configure({ autotune: { mode: 'tune', cache: store, maxTuneMs: 60_000, warmup: 0, reps: 1, space: { maxCandidates: 2 }, progress: false, warn: (m: string) => warnings.push(m) } });
afterAll(() => dispose());

const entries = async () => Object.keys((await store.load()).entries);

describe("config: 'auto'", () => {
  it('is not consulted on the CPU or without config', async () => {
    const q = rnd([1, 8, 8, 1, 8]);
    await na2d(q, q, q, { kernelSize: 3, config: 'auto', backend: 'cpu' });
    await na2d(q, q, q, { kernelSize: 3, backend: 'webgpu' });
    expect(await entries()).toEqual([]);
  });

  it('tunes the forward and backward once on WebGPU, stores the winners, and computes the right result', async () => {
    const q = rnd([1, 8, 8, 1, 8]);
    const k = rnd([1, 8, 8, 1, 8]);
    const v = rnd([1, 8, 8, 1, 8]);
    const gpu = await na2d(q, k, v, { kernelSize: 3, config: 'auto', backend: 'webgpu', returnLse: true });
    const cpu = await na2d(q, k, v, { kernelSize: 3, backend: 'cpu', returnLse: true });
    expectClose(gpu.output, cpu.output, 1e-4);
    const afterForward = await entries();
    expect(afterForward).toHaveLength(1);
    const dO = rnd(q.shape, 'float32', 0.05);
    const g = await na2dBackward(q, k, v, cpu.output, dO, cpu.lse, { kernelSize: 3, config: 'auto', backend: 'webgpu' });
    const r = await na2dBackward(q, k, v, cpu.output, dO, cpu.lse, { kernelSize: 3, backend: 'cpu' });
    expectClose(g.gradQuery, r.gradQuery, 1e-3);
    expectClose(g.gradKey, r.gradKey, 1e-4);
    expect(await entries()).toHaveLength(2);
    // A second call hits the cache: nothing new is stored.
    await na2d(q, k, v, { kernelSize: 3, config: 'auto', backend: 'webgpu', returnLse: true });
    expect(await entries()).toHaveLength(2);
    expect(warnings).toEqual([]);
  });
});
