/**
 * The autotuner on a real adapter (lavapipe in CI), small problems: every enumerated config matches the CPU
 * reference; tuning stores a winner that later selections reuse; modes; time budget; dry run without GPU work;
 * deterministic choices across processes.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { ClockWarmer, GpuContext } from '@natten-web/gpu';
import { defaultFusedForwardConfig } from '@natten-web/wgsl';
import { afterAll, describe, expect, it, vi } from 'vitest';
import {
  backwardSpace,
  CANDIDATE_WARM_MS,
  createAutotuner,
  createConfigProvider,
  describeBackward,
  describeForward,
  emptyTable,
  forwardSpace,
  memoryStore,
  parseProblem,
  type ProgressEvent,
  spaceLimits,
  type TuneEntry,
  type TuneTable,
} from '../src/index.ts';
import { runCli } from '../src/cli.ts';
import { checkBackwardConfig, checkForwardConfig } from './reference.ts';

const run = promisify(execFile);
let shared: Promise<GpuContext> | undefined;
function gpuContext(): Promise<GpuContext> {
  shared ??= GpuContext.create().then((ctx) => {
    const a = ctx.adapterInfo;
    console.log(`[autotune gpu] adapter: ${a.vendor} / ${a.architecture} / ${a.device} (${a.description}) timestamps=${ctx.hasTimestamps}`);
    return ctx;
  });
  return shared;
}
afterAll(async () => (await gpuContext()).destroy());

const LONG = 900_000;
const quiet = { progress: false as const, warn: () => {} };

// Small problems: few configs each (tiles are capped by the extents), so every one can be compiled on lavapipe.
const FWD_1D = 'na1d 1x20x2x8 K=5 causal=1';
const FWD_2D = 'na2d 1x4x4x2x8 K=3 rpb';
const FWD_F16 = 'na1d 1x16x2x8 K=3 kv=1 f16'; // f32 and f16 staging
const BWD_1D = 'na1d 1x16x2x8 K=3 rpb';
const BWD_2D = 'na2d 1x4x4x2x8 K=3 causal=0,1 kv=1';

describe('every enumerated config matches the CPU reference', () => {
  for (const text of [FWD_1D, FWD_2D, FWD_F16]) {
    it(`forward ${text}`, async () => {
      const ctx = await gpuContext();
      const p = describeForward(parseProblem(text));
      const space = forwardSpace(p, spaceLimits(ctx), { maxCandidates: 1000 });
      const all = [...space.candidates, ...space.pruned];
      expect(all.length).toBe(space.enumerated);
      expect(all.length).toBeGreaterThanOrEqual(3);
      for (const c of all) await checkForwardConfig(ctx, p, c.config, `${text} ${c.label}`);
    }, LONG);
  }
  for (const text of [BWD_1D, BWD_2D]) {
    it(`backward ${text}`, async () => {
      const ctx = await gpuContext();
      const p = describeBackward(parseProblem(text));
      const space = backwardSpace(p, spaceLimits(ctx), { maxCandidates: 1000 });
      const all = [...space.candidates, ...space.pruned];
      expect(all.length).toBeGreaterThanOrEqual(2);
      // With subgroups (lavapipe has them) the lane-split twins (D=8: lanes 2) are in the space and checked too.
      expect(all.some((c) => (c.config.lanes ?? 1) > 1)).toBe(ctx.hasSubgroups);
      for (const c of all) await checkBackwardConfig(ctx, p, c.config, `${text} ${c.label}`);
    }, LONG);
  }
});

describe('tuning', () => {
  it('tuneForward times every candidate, stores the fastest, and cached mode reuses it without timing', async () => {
    const ctx = await gpuContext();
    const store = memoryStore();
    const events: ProgressEvent[] = [];
    const tuner = createAutotuner({ ctx, mode: 'tune', cache: store, maxTuneMs: 600_000, reps: 3, onProgress: (e) => events.push(e), ...quiet });
    const p = describeForward(parseProblem(FWD_1D));
    const t0 = performance.now();
    const r = await tuner.tuneForward(p);
    console.log(`[autotune gpu] tuned forward ${FWD_1D}: ${r.timed} candidates in ${(performance.now() - t0).toFixed(0)} ms (${r.method}), best ${r.label} ${(r.medianNs / 1e3).toFixed(1)} us`);
    expect(r.truncated).toBe(false);
    expect(r.timed).toBe(r.candidates);
    const finite = r.results.filter((x) => x.medianNs !== undefined).map((x) => x.medianNs as number);
    expect(r.medianNs).toBe(Math.min(...finite));
    expect(r.results.every((x) => x.samplesNs.length === 3 && x.error === undefined)).toBe(true);
    // progress: start, one event per candidate, done
    expect(events[0]?.phase).toBe('start');
    expect(events.filter((e) => e.phase === 'candidate').length).toBe(r.candidates);
    expect(events.at(-1)).toMatchObject({ phase: 'done', done: r.candidates, bestLabel: r.label });
    // stored, and a fresh autotuner in 'cached' mode on the same store returns it without any GPU work
    const stored = (await store.load()).entries;
    expect(Object.values(stored).map((e) => e.config)).toEqual([r.config]);
    const cached = createAutotuner({ ctx, mode: 'cached', cache: store, ...quiet });
    const profile = vi.spyOn(ctx, 'profile');
    const dispatch = vi.spyOn(ctx, 'dispatch');
    try {
      const sel = await cached.selectForward(p);
      expect(sel).toMatchObject({ source: 'cache', config: r.config });
      // 'tune' mode on a hit does not time either
      expect((await tuner.selectForward(p)).source).toBe('cache');
      expect(profile).not.toHaveBeenCalled();
      expect(dispatch).not.toHaveBeenCalled();
    } finally {
      profile.mockRestore();
      dispatch.mockRestore();
    }
    // 'off' ignores the cache
    const off = createAutotuner({ ctx, mode: 'off', cache: store, ...quiet });
    expect(await off.selectForward(p)).toMatchObject({ source: 'default', config: defaultFusedForwardConfig(p, spaceLimits(ctx)) });
    // a miss in 'cached' mode: heuristic default, never timed
    const other = describeForward(parseProblem('na1d 1x20x2x8 K=3'));
    expect((await cached.selectForward(other)).source).toBe('default');
  }, LONG);

  it("selectBackward in 'tune' mode tunes a miss once, stores it, then hits", async () => {
    const ctx = await gpuContext();
    const store = memoryStore();
    const tuner = createAutotuner({ ctx, mode: 'tune', cache: store, reps: 2, ...quiet });
    const p = describeBackward(parseProblem(BWD_1D));
    const t0 = performance.now();
    const first = await tuner.selectBackward(p);
    console.log(`[autotune gpu] tuned backward ${BWD_1D} in ${((performance.now() - t0) / 1000).toFixed(1)} s: ${JSON.stringify(first.config)}`);
    expect(first.source).toBe('tuned');
    expect(first.entry?.op).toBe('na-fused-backward');
    expect(backwardSpace(p, spaceLimits(ctx)).candidates.map((c) => c.config)).toContainEqual(first.config);
    const profile = vi.spyOn(ctx, 'profile');
    try {
      expect(await tuner.selectBackward(p)).toMatchObject({ source: 'cache', config: first.config });
      expect(profile).not.toHaveBeenCalled();
    } finally {
      profile.mockRestore();
    }
  }, LONG);

  it('with warmClocks on, one warm dispatch is queued before every run of every candidate, and the clock is warmed again after each candidate\'s warm-up (its compile)', async () => {
    const ctx = await gpuContext();
    const p = describeForward(parseProblem(FWD_1D));
    const queue = vi.spyOn(ClockWarmer.prototype, 'queue');
    const warm = vi.spyOn(ClockWarmer.prototype, 'warm');
    try {
      const tuner = createAutotuner({ ctx, mode: 'tune', cache: memoryStore(), maxTuneMs: 600_000, reps: 2, warmup: 1, warmClocks: true, ...quiet });
      const r = await tuner.tuneForward(p);
      expect(r.truncated).toBe(false);
      expect(r.results.every((x) => x.samplesNs.length === 2 && x.error === undefined)).toBe(true);
      // warm() queues two per round; queue() is also called once before each warm-up and timed run
      expect(queue.mock.calls.length).toBeGreaterThanOrEqual(3 * r.candidates);
      // the warmer's calibration, once before the first candidate, then once per candidate between its warm-up
      // and its timed runs
      expect(warm.mock.calls).toHaveLength(r.candidates + 2);
      expect(warm.mock.calls.slice(-r.candidates).every(([ms]) => ms === CANDIDATE_WARM_MS)).toBe(true);
    } finally {
      queue.mockRestore();
      warm.mockRestore();
    }
  }, LONG);

  it('the time budget is honoured: tuning stops and keeps the best so far', async () => {
    const ctx = await gpuContext();
    const p = describeForward(parseProblem(FWD_1D)); // pipelines compiled by the tests above
    const store = memoryStore();
    const tuner = createAutotuner({ ctx, mode: 'tune', cache: store, ...quiet });
    const budget = 400;
    const r = await tuner.tuneForward(p, { maxTuneMs: budget, reps: 100_000, warmup: 0 });
    expect(r.truncated).toBe(true);
    expect(r.timed).toBeGreaterThanOrEqual(1);
    expect(r.timed).toBeLessThan(r.candidates);
    // stops at the first check past the budget: at most one run (a few ms here) over
    expect(r.elapsedMs).toBeGreaterThanOrEqual(budget);
    expect(r.elapsedMs).toBeLessThan(budget + 1500);
    expect(r.results.map((x) => x.config)).toContainEqual(r.config);
    expect(Object.values((await store.load()).entries)[0]).toMatchObject({ truncated: true, config: r.config });
    // a zero budget times nothing: the default config, nothing stored
    const empty = memoryStore();
    const none = await createAutotuner({ ctx, mode: 'tune', cache: empty, ...quiet }).tuneForward(p, { maxTuneMs: 0 });
    expect(none).toMatchObject({ timed: 0, truncated: true, config: defaultFusedForwardConfig(p, spaceLimits(ctx)) });
    expect((await empty.load()).entries).toEqual({});
  }, LONG);
});

describe("'tune' mode falls back to the default", () => {
  it('when the budget times nothing, or tuning itself fails (with a warning)', async () => {
    const ctx = await gpuContext();
    const p = describeForward(parseProblem(FWD_1D));
    const def = defaultFusedForwardConfig(p, spaceLimits(ctx));
    const zero = createAutotuner({ ctx, mode: 'tune', cache: memoryStore(), maxTuneMs: 0, ...quiet });
    expect(await zero.selectForward(p)).toMatchObject({ source: 'default', config: def });
    const warnings: string[] = [];
    const failing = createAutotuner({ ctx, mode: 'tune', cache: memoryStore(), progress: false, warn: (m) => warnings.push(m) });
    const upload = vi.spyOn(ctx, 'upload').mockImplementation(() => {
      throw new Error('out of memory (simulated)');
    });
    try {
      expect(await failing.selectForward(p)).toMatchObject({ source: 'default', config: def });
    } finally {
      upload.mockRestore();
    }
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatch(/^natten-web autotune: tuning na1d 1x20x2x8 K=5 causal=1 f32 failed \(out of memory \(simulated\)\); using the default config for na-fused-forward\|/);
  });
});

describe('dry run', () => {
  it('lists the configs with estimates without any GPU work', async () => {
    const ctx = await gpuContext();
    const spies = (['dispatch', 'profile', 'createTensor', 'upload', 'pipeline'] as const).map((m) => vi.spyOn(ctx, m));
    const submit = vi.spyOn(ctx.device.queue, 'submit');
    try {
      const tuner = createAutotuner({ ctx, mode: 'tune', cache: memoryStore(), ...quiet });
      const p = describeForward(parseProblem('na2d 2x24x24x4x32 K=7 f16'));
      const r = tuner.dryRun(p);
      expect(r.op).toBe('forward');
      expect(r.candidates.map((c) => c.config)).toEqual(forwardSpace(p, spaceLimits(ctx)).candidates.map((c) => c.config));
      expect(r.candidates[0]?.isDefault).toBe(true);
      expect(r.enumerated).toBe(r.candidates.length + r.pruned.length);
      for (const c of r.candidates) expect(c.useful).toBeGreaterThan(0);
      const b = tuner.dryRun(describeBackward(parseProblem('na2d 2x24x24x4x32 K=7')), 'backward');
      expect(b.candidates.length).toBeGreaterThan(0);
      for (const s of [...spies, submit]) expect(s).not.toHaveBeenCalled();
    } finally {
      for (const s of [...spies, submit]) s.mockRestore();
    }
  });
});

describe('deterministic mode and shipped tables', () => {
  it('uses only the shipped table and heuristics, the same in every process', async () => {
    const ctx = await gpuContext();
    const limits = spaceLimits(ctx);
    const inTable = 'na2d 1x12x12x2x16 K=5';
    const notInTable = 'na1d 2x40x2x16 K=7';
    const p = describeForward(parseProblem(inTable));
    const pb = describeBackward(parseProblem(inTable));
    const fwd = forwardSpace(p, limits).candidates;
    const bwd = backwardSpace(pb, limits).candidates;
    const shippedFwd = fwd[fwd.length - 1]?.config;
    const cachedFwd = fwd[1]?.config;
    const shippedBwd = bwd[bwd.length - 1]?.config;
    if (!shippedFwd || !cachedFwd || !shippedBwd) throw new Error('test setup: the problem must have >= 2 candidates');
    expect(shippedFwd).not.toEqual(cachedFwd);
    // A team's table (as exported by another process) with one forward and one backward entry.
    const exporter = createAutotuner({ ctx, mode: 'tune', cache: memoryStore(), ...quiet });
    const probe = exporter.dryRun(p);
    const probeB = exporter.dryRun(pb, 'backward');
    const mk = (op: TuneEntry['op'], config: TuneEntry['config']): TuneEntry => ({
      op, problem: inTable, adapter: 'x', config, medianNs: 1, method: 'gpu-timestamps', timed: 1, candidates: 1, truncated: false, tunedAt: '2026-11-27T00:00:00.000Z',
    });
    const table: TuneTable = { ...emptyTable(), entries: { [probe.key]: mk('na-fused-forward', shippedFwd), [probeB.key]: mk('na-fused-backward', shippedBwd) } };
    // This machine's own tuning cache says something else (timing noise): deterministic mode ignores it.
    const local = memoryStore();
    await local.merge({ [probe.key]: mk('na-fused-forward', cachedFwd) });
    const det = createAutotuner({ ctx, mode: 'deterministic', cache: local, table, ...quiet });
    expect(await det.selectForward(p)).toMatchObject({ source: 'table', config: shippedFwd });
    expect(await det.selectBackward(pb)).toMatchObject({ source: 'table', config: shippedBwd });
    const miss = describeForward(parseProblem(notInTable));
    expect(await det.selectForward(miss)).toMatchObject({ source: 'default', config: defaultFusedForwardConfig(miss, limits) });
    // 'cached' prefers this machine's tuning, then the table
    const cached = createAutotuner({ ctx, mode: 'cached', cache: local, table, ...quiet });
    expect(await cached.selectForward(p)).toMatchObject({ source: 'cache', config: cachedFwd });
    expect(await cached.selectBackward(pb)).toMatchObject({ source: 'table', config: shippedBwd });
    // importTable (no persist) feeds the shipped layer
    const imported = createAutotuner({ ctx, mode: 'deterministic', cache: memoryStore(), ...quiet });
    expect(await imported.importTable(JSON.stringify(table))).toBe(2);
    expect((await imported.selectForward(p)).config).toEqual(shippedFwd);

    // Same choices in another process, and on a second run there.
    const dir = await mkdtemp(join(tmpdir(), 'natten-autotune-det-'));
    try {
      const file = join(dir, 'table.json');
      await writeFile(file, JSON.stringify(table));
      const script = fileURLToPath(new URL('./fixtures/deterministic-select.ts', import.meta.url));
      const here = [];
      for (const text of [inTable, notInTable]) {
        const d = parseProblem(text);
        here.push({ forward: await det.selectForward(describeForward(d)), backward: await det.selectBackward(describeBackward(d)) });
      }
      const cwd = fileURLToPath(new URL('..', import.meta.url));
      for (let i = 0; i < 2; i++) {
        const { stdout } = await run(process.execPath, ['--import', 'tsx', script, file, inTable, notInTable], { cwd });
        expect(JSON.parse(stdout)).toEqual(JSON.parse(JSON.stringify(here)));
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }, LONG);

  it('a cached config that no longer fits the problem is ignored with a warning', async () => {
    const ctx = await gpuContext();
    const p = describeForward(parseProblem(FWD_1D));
    const tuner = createAutotuner({ ctx, mode: 'tune', cache: memoryStore(), ...quiet });
    const key = tuner.dryRun(p).key;
    const warnings: string[] = [];
    const bad: TuneEntry = {
      op: 'na-fused-forward', problem: FWD_1D, adapter: 'x', config: { path: 'plain', queryTile: [16], keyTile: [48], stage: 'f32' }, medianNs: 1, method: 'gpu-timestamps', timed: 1, candidates: 1, truncated: false, tunedAt: 'now',
    };
    const det = createAutotuner({ ctx, mode: 'deterministic', cache: memoryStore(), table: { ...emptyTable(), entries: { [key]: bad } }, progress: false, warn: (m) => warnings.push(m) });
    expect((await det.selectForward(p)).source).toBe('default');
    expect(warnings.join('\n')).toMatch(/ignoring the table entry for na-fused-forward\|.*tile products 16x48 are not compiled/);
  });
});

describe('config provider (umbrella hook)', () => {
  it('one autotuner per context; forward/backward return configs', async () => {
    const ctx = await gpuContext();
    const provider = createConfigProvider({ mode: 'cached', cache: memoryStore(), ...quiet });
    const t = provider(ctx);
    expect(provider(ctx)).toBe(t);
    expect(t.mode).toBe('cached');
    const p = describeForward(parseProblem(FWD_2D));
    expect(await t.forward(p)).toEqual(defaultFusedForwardConfig(p, spaceLimits(ctx)));
    const pb = describeBackward(parseProblem(BWD_2D));
    expect((await t.backward(pb)).queryTile.length).toBe(2);
  });
  it('rejects unknown modes with the rule', async () => {
    const ctx = await gpuContext();
    expect(() => createAutotuner({ ctx, mode: 'fast' as 'tune' })).toThrow("createAutotuner: mode='fast' is not a mode; use 'off', 'cached', 'tune', 'deterministic'");
    expect(() => createAutotuner({ ctx, maxTuneMs: -1 })).toThrow('createAutotuner: maxTuneMs=-1 must be a number >= 0');
  });
});

describe('natten-web-tune on the device', () => {
  it('--dry-run lists without GPU work; --problem tunes into the cache file; --list shows it', async () => {
    const ctx = await gpuContext();
    const dir = await mkdtemp(join(tmpdir(), 'natten-autotune-cli-gpu-'));
    const out: string[] = [];
    const err: string[] = [];
    const io = { out: (s: string) => out.push(s), err: (s: string) => err.push(s), context: () => gpuContext() };
    const cache = join(dir, 'cache.json');
    const dispatch = vi.spyOn(ctx, 'dispatch');
    try {
      expect(await runCli(['--cache', cache, '--problem', FWD_1D, '--dry-run'], io)).toBe(0);
      expect(out[0]?.split('\n')[0]).toBe('dry run: forward na1d 1x20x2x8 K=5 causal=1 f32');
      // 6 single-lane configs, plus their lanes=2 twins (D=8) where the device has subgroups (lavapipe does)
      const valid = ctx.hasSubgroups ? 12 : 6;
      expect(out.join('\n')).toMatch(new RegExp(`${valid} valid configs, \\d+ to time`));
      out.length = 0;
      expect(await runCli(['--cache', cache, '--problem', FWD_1D, '--dry-run', '--max-candidates', '2'], io)).toBe(0);
      expect(out.join('\n')).toMatch(new RegExp(`${valid} valid configs, 2 to time, ${valid - 2} pruned`));
      expect(dispatch).not.toHaveBeenCalled();
      out.length = 0;
      expect(await runCli(['--cache', cache, '--problem', FWD_1D, '--max-ms', '60000', '--reps', '2', '--json'], io)).toBe(0);
      const res = JSON.parse(out[0] ?? '{}') as { config: unknown; timed: number; candidates: number; elapsedMs: number };
      console.log(`[autotune gpu] CLI tune ${FWD_1D}: ${res.timed}/${res.candidates} candidates in ${res.elapsedMs.toFixed(0)} ms`);
      expect(res.timed).toBeGreaterThan(0);
      out.length = 0;
      expect(await runCli(['--cache', cache, '--list'], io)).toBe(0);
      expect(out[0]).toBe(`${cache}: 1 entry`);
      expect(out[1]).toContain(`forward  na1d 1x20x2x8 K=5 causal=1 f32  ${JSON.stringify(res.config)}`);
    } finally {
      dispatch.mockRestore();
      await rm(dir, { recursive: true, force: true });
    }
    expect(err.filter((e) => !e.startsWith('autotune '))).toEqual([]);
  }, LONG);
});
