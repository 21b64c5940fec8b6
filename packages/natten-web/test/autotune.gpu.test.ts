/** `config: 'auto'` on WebGPU goes through @natten-web/autotune (here in 'tune' mode with an in-memory store). */
import { memoryStore } from '@natten-web/autotune';
import { checkFusedBackward, checkFusedForward, type FusedProblem } from '@natten-web/core';
import { afterAll, describe, expect, it } from 'vitest';
import { autoConfig, setAutotuneOptions } from '../src/config.ts';
import { configure, dispose, na2d, na2dBackward, ops } from '../src/index.ts';
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

  it('runs a lane-split winner exactly as tuned (lanes travel with the tiles)', async () => {
    const ctx = await ops.gpu.context();
    const q = rnd([1, 8, 8, 1, 8]);
    const k = rnd([1, 8, 8, 1, 8]);
    const v = rnd([1, 8, 8, 1, 8]);
    if (!ctx.hasSubgroups) {
      // Lane-split configs exist only with subgroups (lavapipe has them); elsewhere they are refused up front.
      await expect(na2d(q, k, v, { kernelSize: 3, backend: 'webgpu', config: { forward: { queryTileSize: [4, 4], keyTileSize: [4, 4], lanes: 2 } } })).rejects.toThrow(/subgroups/);
      return;
    }
    const table = await store.load();
    const [fwdKey, fwdEntry] = Object.entries(table.entries).find(([key]) => key.startsWith('na-fused-forward|')) ?? [];
    expect(fwdKey).toBeDefined();
    // The stored winner, turned into its lane-split twin (2 lanes per query; head dim 8 = 2 vec4 columns).
    const lanesStore = memoryStore({ ...table, entries: { [fwdKey as string]: { ...(fwdEntry as object), config: { path: 'plain', queryTile: [4, 4], keyTile: [4, 4], stage: 'f32', lanes: 2 } } as never } });
    setAutotuneOptions({ mode: 'cached', cache: lanesStore, progress: false });
    try {
      const problem: FusedProblem = checkFusedForward('na2d_forward', 2, { query: q, key: k, value: v, output: q, kernelSize: 3, logsumexp: { shape: [1, 8, 8, 1], dtype: 'float32' } });
      expect(await autoConfig(ctx, 'forward', problem)).toEqual({ queryTileSize: [4, 4], keyTileSize: [4, 4], lanes: 2 });
      const gpu = await na2d(q, k, v, { kernelSize: 3, config: 'auto', backend: 'webgpu', returnLse: true });
      const cpu = await na2d(q, k, v, { kernelSize: 3, backend: 'cpu', returnLse: true });
      expectClose(gpu.output, cpu.output, 1e-4);
      expectClose(gpu.lse, cpu.lse, 1e-4);
      const explicit = await na2d(q, k, v, { kernelSize: 3, backend: 'webgpu', config: { forward: { queryTileSize: [4, 4], keyTileSize: [4, 4], lanes: 2 } } });
      expectClose(explicit, cpu.output, 1e-4);
    } finally {
      setAutotuneOptions({ mode: 'tune', cache: store, maxTuneMs: 60_000, warmup: 0, reps: 1, space: { maxCandidates: 2 }, progress: false, warn: (m: string) => warnings.push(m) });
    }
  });

  it('runs a lane-split backward winner exactly as tuned (lanes travel with the tiles, splits and delta mode)', async () => {
    const ctx = await ops.gpu.context();
    const q = rnd([1, 8, 8, 1, 8]);
    const k = rnd([1, 8, 8, 1, 8]);
    const v = rnd([1, 8, 8, 1, 8]);
    const cpu = await na2d(q, k, v, { kernelSize: 3, backend: 'cpu', returnLse: true });
    const dO = rnd(q.shape, 'float32', 0.05);
    const explicitConfig = { backward: { queryTileSize: [4, 4], keyTileSize: [4, 4], lanes: 2 } };
    if (!ctx.hasSubgroups) {
      // Lane-split configs exist only with subgroups (lavapipe has them); elsewhere they are refused up front.
      await expect(na2dBackward(q, k, v, cpu.output, dO, cpu.lse, { kernelSize: 3, backend: 'webgpu', config: explicitConfig })).rejects.toThrow(/subgroups/);
      return;
    }
    const table = await store.load();
    const [bwdKey, bwdEntry] = Object.entries(table.entries).find(([key]) => key.startsWith('na-fused-backward|')) ?? [];
    expect(bwdKey).toBeDefined();
    // The stored winner, turned into a lane-split config (2 lanes per row; head dim 8 = 2 vec4 columns).
    const tuned = { queryTile: [4, 4], keyTile: [4, 4], numSplitsKey: [1, 1], computeDeltaWithTorch: false, lanes: 2 };
    const lanesStore = memoryStore({ ...table, entries: { [bwdKey as string]: { ...(bwdEntry as object), config: tuned } as never } });
    setAutotuneOptions({ mode: 'cached', cache: lanesStore, progress: false });
    try {
      const problem = checkFusedBackward('na2d_backward', 2, {
        query: q,
        key: k,
        value: v,
        output: cpu.output,
        gradOutput: dO,
        logsumexp: cpu.lse,
        gradQuery: q,
        gradKey: k,
        gradValue: v,
        kernelSize: 3,
      });
      expect(await autoConfig(ctx, 'backward', { ...problem, hasGradRpb: false })).toEqual({
        queryTileSize: [4, 4],
        keyTileSize: [4, 4],
        numSplitsKey: [1, 1],
        computeDeltaWithTorch: false,
        lanes: 2,
      });
      const r = await na2dBackward(q, k, v, cpu.output, dO, cpu.lse, { kernelSize: 3, backend: 'cpu' });
      for (const config of ['auto' as const, explicitConfig]) {
        const g = await na2dBackward(q, k, v, cpu.output, dO, cpu.lse, { kernelSize: 3, config, backend: 'webgpu' });
        expectClose(g.gradQuery, r.gradQuery, 1e-3);
        expectClose(g.gradKey, r.gradKey, 1e-4);
        expectClose(g.gradValue, r.gradValue, 1e-4);
      }
    } finally {
      setAutotuneOptions({ mode: 'tune', cache: store, maxTuneMs: 60_000, warmup: 0, reps: 1, space: { maxCandidates: 2 }, progress: false, warn: (m: string) => warnings.push(m) });
    }
  });
});
