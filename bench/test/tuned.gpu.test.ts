/**
 * `--tuned` plumbing on the real adapter (lavapipe here), with the quick set's smallest problem (2-D 24x24 K=5
 * dilation 2, f32, fwd+bwd): the row tuner tunes forward and backward into a JSON cache file, labels the row
 * `tuned ...` from exactly the configs the cache holds, a second tuner on the same file (a later run) reuses them
 * without timing, the picked forward runs through the explicit-config entry the harness times and matches the CPU
 * reference, and a failed tuning is an error naming the op and the autotuner's warning, not a silent default.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { memoryStore, type TuneTable } from '@natten-web/autotune';
import { compareTensors, lseShape, randn, zeros } from '@natten-web/core';
import { fusedForward as cpuFusedForward } from '@natten-web/cpu';
import { fusedForward, GpuContext } from '@natten-web/gpu';
import type { FusedBackwardConfig, FusedForwardConfig } from '@natten-web/wgsl';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { expandCases, QUICK_CASES } from '../src/cases.ts';
import { backwardConfigLabel, createRowTuner, forwardConfigLabel, type TunedPick } from '../src/tuned.ts';

const [item] = expandCases(QUICK_CASES, 'q-2d').filter((i) => i.pass === 'forward+backward');
if (!item) throw new Error('the quick set has no q-2d fwd+bwd row');
const c = item.case;

let ctx: GpuContext;
const dir = mkdtempSync(join(tmpdir(), 'bench-tuned-'));
const cachePath = join(dir, 'tune-cache.json');
// A small budget: on lavapipe the first candidate's compile already spends it, so about one candidate per op.
const settings = { budgetMs: 500, warmClocks: false, reps: 1, warmup: 0 };

beforeAll(async () => {
  ctx = await GpuContext.create();
});
afterAll(() => {
  ctx?.destroy();
  rmSync(dir, { recursive: true, force: true });
});

describe('--tuned row tuner', () => {
  let first: TunedPick;

  it('tunes forward and backward into the cache file and labels the row from those configs', async () => {
    const ops: string[] = [];
    const events: string[] = [];
    const tuner = createRowTuner({ ctx, cache: { path: cachePath }, ...settings });
    first = await tuner.pick(item, {
      onProgress: (e) => events.push(`${e.op} ${e.phase}`),
      onOp: (op, problem, label, info) => ops.push(`${op} ${info.source} ${problem} ${label}`),
    });
    // This adapter has no subgroup matrices: both picks are plain-path configs (the tensor-core ones are tuned
    // where the default routes there; packages/autotune/test/mma.gpu.test.ts).
    expect(first.forward.path).toBe('plain');
    expect(first.backward && 'querySubgroups' in first.backward).toBe(false);
    const table = JSON.parse(readFileSync(cachePath, 'utf8')) as TuneTable;
    const entries = Object.values(table.entries);
    expect(entries.map((e) => e.op).sort()).toEqual(['na-fused-backward', 'na-fused-forward']);
    expect(entries.find((e) => e.op === 'na-fused-forward')?.config).toEqual(first.forward);
    expect(entries.find((e) => e.op === 'na-fused-backward')?.config).toEqual(first.backward);
    if (!first.backward) throw new Error('no backward config');
    expect(first.label).toBe(`tuned ${forwardConfigLabel(first.forward as FusedForwardConfig)}; tuned ${backwardConfigLabel(first.backward as FusedBackwardConfig)}`);
    expect(first.label).toMatch(/^tuned fwd plain q\S+\/k\S+\/f32.*; tuned bwd q\S+\/k\S+ splits /);
    expect(first.tuning.forward).toMatchObject({ source: 'tuned', timed: expect.any(Number), candidates: expect.any(Number) });
    expect(first.tuning.backward).toMatchObject({ source: 'tuned' });
    expect(first.tuning.forward.ms).toBeGreaterThan(0);
    expect(ops).toEqual([
      `forward tuned na2d 1x24x24x2x32 K=5,5 d=2,2 f32 tuned ${forwardConfigLabel(first.forward as FusedForwardConfig)}`,
      `backward tuned na2d 1x24x24x2x32 K=5,5 d=2,2 f32 tuned ${backwardConfigLabel(first.backward as FusedBackwardConfig)}`,
    ]);
    expect(events).toContain('forward done');
    expect(events).toContain('backward done');
  });

  it('a later run on the same cache file reuses the picks without timing', async () => {
    const again = await createRowTuner({ ctx, cache: { path: cachePath }, ...settings }).pick(item, {
      onProgress: () => {
        throw new Error('a cached pick must not time anything');
      },
    });
    expect(again.forward).toEqual(first.forward);
    expect(again.backward).toEqual(first.backward);
    expect(again.label).toBe(first.label);
    expect(again.tuning.forward).toMatchObject({ source: 'cache', timed: first.tuning.forward.timed });
    expect(again.tuning.backward).toMatchObject({ source: 'cache' });
  });

  it('the picked forward, run through fusedForward.withConfig as the harness times it, matches the CPU reference', async () => {
    const shape = [c.batch, ...c.spatial, c.heads, c.dim];
    const [q, k, v] = [1, 2, 3].map((s) => randn(shape, 'float32', s));
    if (!q || !k || !v) throw new Error('inputs');
    const params = { kernelSize: c.kernelSize, dilation: c.dilation, isCausal: c.isCausal };
    const lse = lseShape(c.batch, c.spatial, c.heads);
    const g = { query: ctx.upload(q), key: ctx.upload(k), value: ctx.upload(v), output: ctx.createTensor(shape, 'float32'), logsumexp: ctx.createTensor(lse, 'float32') };
    try {
      await fusedForward.withConfig(ctx, c.rank, { ...g, ...params }, first.forward as FusedForwardConfig);
      const want = zeros(shape, 'float32');
      cpuFusedForward(c.rank, { query: q, key: k, value: v, output: want, logsumexp: zeros(lse, 'float32'), ...params });
      expect(compareTensors(await ctx.read(g.output), want).maxAbs).toBeLessThan(1e-5);
    } finally {
      for (const t of Object.values(g)) t.buffer.destroy();
    }
  });

  it('a failed tuning is an error naming the op, the problem and the autotuner warning', async () => {
    const tuner = createRowTuner({ ctx, cache: memoryStore(), ...settings });
    const upload = vi.spyOn(ctx, 'upload').mockImplementation(() => {
      throw new Error('out of memory (simulated)');
    });
    try {
      await expect(tuner.pick(item)).rejects.toThrow(
        /^tuning the forward of na2d 1x24x24x2x32 K=5,5 d=2,2 f32 gave no config \(natten-web autotune: tuning .* failed \(out of memory \(simulated\)\)/,
      );
    } finally {
      upload.mockRestore();
    }
  });
});
