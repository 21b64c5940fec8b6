/**
 * The autotuner on the tensor-core (mma) forward: its config space and selections by the device's rules (a context
 * shaped like the H200, no GPU work), and a real tune on this adapter through the subgroup-matrix emulation (the mma
 * kernels rewritten to plain WGSL, as the gpu package's emulated tests run them).
 */
import { defaultBackwardMma, defaultForwardMma, GpuContext, type MmaBackwardConfig, mmaBackwardTwins, type MmaForwardConfig, mmaConfigCost, mmaForwardTwins } from '@natten-web/gpu';
import { afterAll, describe, expect, it } from 'vitest';
import { checkBackwardConfig, checkForwardConfig } from './reference.ts';
import { emulatingTensorCoreView, fakeTensorCoreContext as fakeContext } from '@natten-web/testkit';
import {
  backwardHelperProblem,
  createAutotuner,
  describeBackward,
  describeForward,
  emptyTable,
  memoryStore,
  mmaBackwardSpace,
  mmaForwardSpace,
  mmaHelperProblem,
  parseProblem,
  type TuneEntry,
} from '../src/index.ts';

const quiet = { progress: false as const, warn: () => {} };
const fakeTensorCoreContext = (): GpuContext => fakeContext() as GpuContext;
const K7 = describeForward(parseProblem('na2d 1x128x128x8x64 K=7 f16'));
const K3 = describeForward(parseProblem('na2d 1x128x128x8x64 K=3 f16'));

describe('tensor-core (mma) forward configs in the autotuner', () => {
  it('spaces hold the mma configs where the default takes that path: the default first, then by estimate', () => {
    const ctx = fakeTensorCoreContext();
    const space = mmaForwardSpace(ctx, K7, { maxCandidates: 6 });
    const def = defaultForwardMma(ctx, mmaHelperProblem(K7)) as MmaForwardConfig;
    expect(space.candidates[0]?.config).toEqual(def);
    expect(space.candidates[0]?.isDefault).toBe(true);
    // Then the default's codegen twins (16-byte loads flipped, unit steps flipped, S rows of 24 floats flipped: the
    // same work), then by estimate.
    const twins = mmaForwardTwins(ctx, mmaHelperProblem(K7), def);
    const { wideS: _wideS, ...narrowS } = def;
    expect(def).toMatchObject({ tightScratch: true, pOverK: true, wideS: true });
    expect(twins).toEqual([{ ...def, wideLoads: true }, { ...def, unitSteps: false }, narrowS]);
    expect(space.candidates.slice(1, 4).map((c) => c.config)).toEqual(twins);
    expect(space.candidates.slice(1, 3).map((c) => c.label)).toEqual([`${space.candidates[0]?.label} wide`, `${space.candidates[0]?.label} no-unit`]);
    expect(space.candidates[3]?.label).toMatch(/ tight pk$/);
    const costs = space.candidates.slice(4).map((c) => c.estimate.cost);
    expect(costs).toEqual([...costs].sort((a, b) => a - b));
    expect(costs[0]).toBe(mmaConfigCost(mmaHelperProblem(K7), space.candidates[4]?.config as MmaForwardConfig));
    // They count against maxCandidates, after the default.
    expect(mmaForwardSpace(ctx, K7, { maxCandidates: 2 }).candidates.map((c) => c.config)).toEqual([def, twins[0]]);
    const isTwin = (c: MmaForwardConfig): boolean => twins.some((t) => JSON.stringify(t) === JSON.stringify(c));
    // The float16 default has unpadded scratch rows; its padded twin is a candidate too, and so is every 16-key
    // config's other layout.
    expect(def.tightScratch).toBe(true);
    expect(space.candidates[0]?.label).toBe(`mma q=${def.queryTile.join('x')} bk=${def.keyChunk} sg=${def.subgroups} tight wideS pk`);
    const all = mmaForwardSpace(ctx, K7, { maxCandidates: 1000 }).candidates;
    const { tightScratch: _t, pOverK: _pk, wideS: _ws, ...padded } = def;
    expect(all.filter((c) => JSON.stringify(c.config) === JSON.stringify(padded))).toHaveLength(1);
    // Every subgroup count the H200 timed on sparse windows is a candidate.
    expect(new Set(all.map((c) => c.config.subgroups))).toEqual(new Set([2, 4, 8]));
    // (the default itself, P over K with S rows of 24 floats, is a layout the enumeration does not repeat)
    const c16 = all.filter((c) => c.config.keyChunk === 16 && !isTwin(c.config) && c.isDefault !== true);
    // (each unpadded one also with S padded: padS; each padded one also with K and V in turn, float16's 3-D default)
    const padded16 = c16.filter((c) => c.config.tightScratch !== true && c.config.kvInTurn !== true);
    expect(c16.filter((c) => c.config.tightScratch === true && c.config.padS !== true).length).toBe(padded16.length);
    expect(c16.filter((c) => c.config.padS === true).length).toBe(padded16.length);
    expect(c16.filter((c) => c.config.kvInTurn === true).length).toBe(padded16.length);
    expect(c16.some((c) => c.config.kvInTurn === true && c.config.tightScratch === true)).toBe(false);
    // float16's K/V-in-turn twins are 16-key padded ones only; float32 offers one for every config (its default).
    expect(all.some((c) => c.config.kvInTurn === true && c.config.keyChunk !== 16)).toBe(false);
    const split = mmaForwardSpace(ctx, describeForward(parseProblem('na2d 1x128x128x8x64 K=7')), { maxCandidates: 1000 }).candidates;
    expect(split[0]?.config).toMatchObject({ kvInTurn: true, subgroups: 4 });
    // float32 has no 16-byte loads: its one twin is unit steps flipped.
    expect(split[1]?.config).toEqual({ ...split[0]?.config, unitSteps: false });
    const { kvInTurn: _k, ...sideBySide } = split[0]?.config as MmaForwardConfig;
    expect(split.filter((c) => JSON.stringify(c.config) === JSON.stringify(sideBySide))).toHaveLength(1);
    expect(split.filter((c) => c.config.kvInTurn === true).length).toBeGreaterThan(split.length / 4);
    expect(new Set(split.map((c) => c.label)).size).toBe(split.length);
    expect(split[0]?.label).toMatch(/ inturn$/);
    // K=3 stays on the plain path (window use below the measured range): nothing to tune here.
    expect(mmaForwardSpace(ctx, K3).candidates).toEqual([]);
    // A dry run shows what a tune would time: the mma configs here, the plain tiles for K=3.
    const tuner = createAutotuner({ ctx, mode: 'cached', cache: memoryStore(), ...quiet });
    const dry = tuner.dryRun(K7);
    expect(dry.op).toBe('forward-mma');
    expect(dry.candidates[0]).toMatchObject({ config: def, isDefault: true });
    expect(dry.key.startsWith('na-fused-forward-mma|')).toBe(true);
    expect(tuner.dryRun(K3).op).toBe('forward');
  });

  it('selects a stored config, refuses one the device cannot run, and gives the default otherwise', async () => {
    const ctx = fakeTensorCoreContext();
    const warnings: string[] = [];
    const def = defaultForwardMma(ctx, mmaHelperProblem(K7)) as MmaForwardConfig;
    const other = mmaForwardSpace(ctx, K7).candidates[1]?.config as MmaForwardConfig;
    const probe = createAutotuner({ ctx, mode: 'cached', cache: memoryStore(), ...quiet });
    const first = await probe.selectForwardMma(K7);
    expect(first).toMatchObject({ config: def, source: 'default' });
    const key = first?.key as string;
    expect(key.startsWith('na-fused-forward-mma|')).toBe(true);
    const entry = (config: unknown): TuneEntry => ({ op: 'na-fused-forward-mma', problem: 'p', adapter: 'a', config, medianNs: 1, method: 'gpu-timestamps', timed: 1, candidates: 1, truncated: false, tunedAt: '' }) as TuneEntry;
    const table = { ...emptyTable(), entries: { [key]: entry(other) } };
    const tabled = createAutotuner({ ctx, mode: 'deterministic', table, ...quiet, warn: (m) => warnings.push(m) });
    expect(await tabled.selectForwardMma(K7)).toMatchObject({ config: other, source: 'table' });
    expect(await tabled.forwardMma(K7)).toEqual(other);
    // A stored padded-scratch config (the default's layout twin) runs as stored.
    const { tightScratch: _t, pOverK: _k, wideS: _w, ...padded } = def;
    const twin = createAutotuner({ ctx, mode: 'deterministic', table: { ...emptyTable(), entries: { [key]: entry(padded) } }, ...quiet });
    expect(await twin.forwardMma(K7)).toEqual(padded);
    // 16 subgroups do not exist on this path: warned about and skipped.
    const bad = { ...emptyTable(), entries: { [key]: entry({ ...other, subgroups: 16 }) } };
    const refused = createAutotuner({ ctx, mode: 'deterministic', table: bad, ...quiet, warn: (m) => warnings.push(m) });
    expect(await refused.selectForwardMma(K7)).toMatchObject({ config: def, source: 'default' });
    expect(warnings.some((w) => w.includes('does not fit this device and problem'))).toBe(true);
    // Problems the default leaves on the plain path: no mma selection (the plain tiles are tuned there).
    expect(await probe.selectForwardMma(K3)).toBeUndefined();
    expect(await probe.forwardMma(K3)).toBeUndefined();
  });
});

describe('tensor-core (mma) backward configs in the autotuner', () => {
  const B7 = describeBackward(parseProblem('na2d 1x128x128x8x64 K=7 f16'));
  it('spaces hold both kernels per subgroup count and chunk size where the default takes that path', () => {
    const ctx = fakeTensorCoreContext();
    const def = defaultBackwardMma(ctx, backwardHelperProblem(B7)) as MmaBackwardConfig;
    const space = mmaBackwardSpace(ctx, B7, { maxCandidates: 1000 });
    expect(space.candidates[0]).toMatchObject({ config: def, isDefault: true });
    // 16- and 32-row chunks, and each kernel with 2, 4 and 8 subgroups (8 with 32-row chunks does not fit 48 KiB).
    expect(new Set(space.candidates.map((c) => c.config.chunk))).toEqual(new Set([16, 32]));
    expect(new Set(space.candidates.map((c) => c.config.querySubgroups))).toEqual(new Set([2, 4, 8]));
    expect(new Set(space.candidates.map((c) => c.config.keySubgroups))).toEqual(new Set([2, 4, 8]));
    expect(space.candidates.filter((c) => c.config.chunk === 32).every((c) => c.config.querySubgroups < 8)).toBe(true);
    // Every config with padded and with unpadded scratch rows: here the default is unpadded (2-D K=7), its padded
    // twin a candidate.
    expect(def.tightScratch).toBe(true);
    // (Since session 25 the default's dq kernel takes dS over V with rows of 24 floats, and since session 26 its dkv
    // kernel 16-byte loads, choices the enumeration does not repeat; the enumerated layouts are those of the
    // padded-row default before them.)
    expect(def).toMatchObject({ dqDsOverV: true, dqWideS: true, dkvWideFirst: true });
    const { tightScratch: _t, dqSharedScratch: _d, dqDsOverV: _o, dqWideS: _w, dkvWideFirst: _kp, dkvWideLoads: _kw, ...padded } = def;
    expect(space.candidates.filter((c) => JSON.stringify(c.config) === JSON.stringify(padded))).toHaveLength(1);
    // Every config also with the dq kernel's S and dP in one scratch (the default has one here; on windows over 512
    // keys at head dims up to 64 the default is padded with one scratch): every padded config has its unpadded twin,
    // and every config its one-scratch twin, among all the space enumerates.
    const { dqSharedScratch: _s, dqDsOverV: _o2, dqWideS: _w2, dkvWideLoads: _kw2, dkvWideFirst: _kf2, ...twoScratches0 } = def;
    const twoScratches = { ...twoScratches0, dqPadS: true, dkvPadS: true };
    const sameConfig = (a: object, b: object): boolean => JSON.stringify(a, Object.keys(a).sort()) === JSON.stringify(b, Object.keys(b).sort());
    expect(space.candidates.filter((c) => sameConfig(c.config, twoScratches))).toHaveLength(1);
    // After the default, its codegen twins: dq's and dkv's 16-byte loads, dkv's lean layout, each kernel's unit steps flipped,
    // its rows of 24 floats flipped (here dq's, back to dS over V alone), and dkv's widened S^T rows back to padded rows.
    const twins = mmaBackwardTwins(ctx, backwardHelperProblem(B7), def);
    const { dqWideS: _dqw, ...narrowRows } = def;
    const { dkvWideLoads: _dkvWide, ...narrowLoads } = def;
    const { dkvWideFirst: _dkvFirst, ...firstAlike } = def;
    expect(twins).toEqual([{ ...def, dqWideLoads: true }, narrowLoads, { ...firstAlike, dkvPadS: true, dkvLeanScratch: true }, { ...def, dqUnitSteps: false }, { ...def, dkvUnitSteps: false }, narrowRows, { ...firstAlike, dkvPadS: true }]);
    expect(space.candidates.slice(1, 8).map((c) => c.config)).toEqual(twins);
    const isTwin = (c: MmaBackwardConfig): boolean => twins.some((t) => JSON.stringify(t) === JSON.stringify(c));
    // (What the space enumerates: the default, whose layout it does not repeat, and its twins aside.)
    const every = [...space.candidates, ...space.pruned].filter((c) => c.isDefault !== true).map((c) => c.config).filter((c) => !isTwin(c));
    const count = (f: (c: MmaBackwardConfig) => boolean): number => every.filter(f).length;
    expect(count((c) => c.dqSharedScratch === true)).toBe(count((c) => c.dqSharedScratch !== true));
    expect(count((c) => c.tightScratch !== true)).toBe(count((c) => c.tightScratch === true && c.dqPadS !== true));
    expect(count((c) => c.dqPadS === true && c.dkvPadS === true)).toBeGreaterThan(0);
    // Every candidate has its own label (the padded twins included: they once read the same as their unpadded ones).
    expect(new Set(space.candidates.map((c) => c.label)).size).toBe(space.candidates.length);
    expect(count((c) => c.dqSharedScratch === true && c.tightScratch !== true)).toBeGreaterThan(0);
    // No head splits (timed slower everywhere on the H200).
    expect(count((c) => c.dqHeadSplit === true || c.dkvHeadSplit === true)).toBe(0);
    // float32 backwards take the tensor cores too since session 24 (the split), without the f16-only 16-byte loads;
    // rpb ones (with d_rpb) since session 20.
    const f32 = describeBackward(parseProblem('na2d 1x128x128x8x64 K=7'));
    const f32Space = mmaBackwardSpace(ctx, f32, { maxCandidates: 1000 }).candidates;
    expect(f32Space[0]).toMatchObject({ config: defaultBackwardMma(ctx, backwardHelperProblem(f32)), isDefault: true });
    expect(f32Space.some((c) => c.config.dqWideLoads === true)).toBe(false);
    const rpb = describeBackward(parseProblem('na2d 1x128x128x8x64 K=7 f16 rpb'));
    expect(mmaBackwardSpace(ctx, rpb).candidates[0]).toMatchObject({ config: defaultBackwardMma(ctx, backwardHelperProblem(rpb)), isDefault: true });
  });

  it('selects a stored config, refuses one outside the space, and gives the default otherwise', async () => {
    const ctx = fakeTensorCoreContext();
    const warnings: string[] = [];
    const def = defaultBackwardMma(ctx, backwardHelperProblem(B7)) as MmaBackwardConfig;
    const other = mmaBackwardSpace(ctx, B7).candidates[1]?.config as MmaBackwardConfig;
    const first = await createAutotuner({ ctx, mode: 'cached', cache: memoryStore(), ...quiet }).selectBackwardMma(B7);
    expect(first).toMatchObject({ config: def, source: 'default' });
    const key = first?.key as string;
    expect(key.startsWith('na-fused-backward-mma|')).toBe(true);
    const entry = (config: unknown): TuneEntry => ({ op: 'na-fused-backward-mma', problem: 'p', adapter: 'a', config, medianNs: 1, method: 'gpu-timestamps', timed: 1, candidates: 1, truncated: false, tunedAt: '' }) as TuneEntry;
    const tabled = createAutotuner({ ctx, mode: 'deterministic', table: { ...emptyTable(), entries: { [key]: entry(other) } }, ...quiet });
    expect(await tabled.backwardMma(B7)).toEqual(other);
    // Both scratch layouts and both dq scratch counts of a space config run as stored (both are part of what is
    // compared).
    const { tightScratch: _t, dqSharedScratch: _d, dqDsOverV: _o, dqWideS: _w, dkvWideFirst: _kp, dkvWideLoads: _kw, ...padded } = def;
    const { dqSharedScratch: _s, dqDsOverV: _o2, dqWideS: _w2, dkvWideLoads: _kw2, dkvWideFirst: _kf2, ...twoScratches0 } = def;
    const twoScratches = { ...twoScratches0, dqPadS: true, dkvPadS: true };
    expect(def.dqSharedScratch).toBe(true);
    // So do the default's codegen twins (the lean dkv layout here, with padded rows: one scratch, none to widen alone).
    const { dkvWideFirst: _kf3, ...leanBase } = def;
    const lean = { ...leanBase, dkvPadS: true, dkvLeanScratch: true };
    for (const stored of [def, padded, twoScratches, lean]) {
      const t = createAutotuner({ ctx, mode: 'deterministic', table: { ...emptyTable(), entries: { [key]: entry(stored) } }, ...quiet });
      expect(await t.selectBackwardMma(B7)).toMatchObject({ config: stored, source: 'table' });
    }
    // The opt-in dS over V is in no space: a stored config with it is refused, not matched to its twin.
    // (The default itself takes dS over V with its wider rows since session 25; dS over V with padded rows is opt-in.)
    const { dqDsOverV: _over, dqWideS: _wide, ...noOverV } = def;
    expect(def).toMatchObject({ dqDsOverV: true, dqWideS: true });
    const overV = createAutotuner({ ctx, mode: 'deterministic', table: { ...emptyTable(), entries: { [key]: entry({ ...noOverV, dqDsOverV: true, dqPadS: true }) } }, ...quiet, warn: (m) => warnings.push(m) });
    expect(await overV.selectBackwardMma(B7)).toMatchObject({ config: def, source: 'default' });
    expect(warnings.filter((w) => w.includes('ds-over-v'))).toHaveLength(1);
    // A dK/dV tile with the wrong row count for its subgroups is outside the space: warned about and skipped.
    const bad = { ...emptyTable(), entries: { [key]: entry({ ...other, keyTile: [3, 5] }) } };
    const refused = createAutotuner({ ctx, mode: 'deterministic', table: bad, ...quiet, warn: (m) => warnings.push(m) });
    expect(await refused.selectBackwardMma(B7)).toMatchObject({ config: def, source: 'default' });
    expect(warnings.some((w) => w.includes('does not fit this device and problem'))).toBe(true);

    expect(refused.dryRun(B7, 'backward').op).toBe('backward-mma');
  });
});

describe('the mma configs a tune may pick match the CPU reference (emulated subgroup matrices)', () => {
  // Every config `config: 'auto'` may now run must be correct, not only the default: the best estimates of each
  // space (the order a budget-cut tune times them), on small problems that leave partial tiles.
  let real: GpuContext | undefined;
  afterAll(() => real?.destroy());
  const cases = [
    { text: 'na1d 1x150x2x16 K=33 causal=1 f16', top: 4 },
    { text: 'na2d 1x12x14x2x16 K=5,7 f16', top: 3 },
    { text: 'na2d 1x12x14x2x16 K=5,7', top: 2 }, // float32: the split
  ];
  for (const c of cases) {
    it(`forward ${c.text}: the ${c.top} best configs`, async () => {
      real ??= await GpuContext.create();
      const ctx = emulatingTensorCoreView(real);
      const p = describeForward(parseProblem(c.text));
      const space = mmaForwardSpace(ctx, p, { maxCandidates: c.top });
      expect(space.candidates.length).toBe(c.top);
      for (const x of space.candidates) await checkForwardConfig(ctx, p, x.config, x.label);
    }, 300_000);
  }
  it('backward na2d 1x12x14x2x16 K=5,7 f16: the 3 best configs', async () => {
    real ??= await GpuContext.create();
    const ctx = emulatingTensorCoreView(real);
    const p = describeBackward(parseProblem('na2d 1x12x14x2x16 K=5,7 f16'));
    const space = mmaBackwardSpace(ctx, p, { maxCandidates: 3 });
    expect(space.candidates.length).toBe(3);
    for (const x of space.candidates) await checkBackwardConfig(ctx, p, x.config, x.label);
  }, 300_000);
});

describe('tuning the mma forward and backward on this adapter (emulated subgroup matrices)', () => {
  let real: GpuContext | undefined;
  afterAll(() => real?.destroy());
  it('times the candidates, stores the winner, and later selections reuse it', async () => {
    real = await GpuContext.create();
    // Every mma kernel the tuner dispatches runs through the emulation (plain WGSL with the same results).
    const ctx = emulatingTensorCoreView(real);
    const p = describeForward(parseProblem('na1d 1x160x1x16 K=33 f16'));
    const store = memoryStore();
    const tuner = createAutotuner({ ctx, mode: 'tune', cache: store, space: { maxCandidates: 2 }, reps: 2, warmClocks: false, ...quiet });
    const space = tuner.mmaForwardSpace(p);
    expect(space.candidates.length).toBe(2);
    const tuned = await tuner.selectForwardMma(p);
    expect(tuned?.source).toBe('tuned');
    expect(space.candidates.map((c) => c.config)).toContainEqual(tuned?.config);
    expect(tuned?.entry).toMatchObject({ op: 'na-fused-forward-mma', timed: 2, candidates: 2 });
    const again = createAutotuner({ ctx, mode: 'cached', cache: store, ...quiet });
    expect(await again.selectForwardMma(p)).toMatchObject({ config: tuned?.config, source: 'cache' });
  }, 300_000);

  it('tunes the backward the same way', async () => {
    real ??= await GpuContext.create();
    const ctx = emulatingTensorCoreView(real);
    const p = describeBackward(parseProblem('na1d 1x96x1x16 K=17 f16'));
    const store = memoryStore();
    const tuner = createAutotuner({ ctx, mode: 'tune', cache: store, space: { maxCandidates: 2 }, reps: 2, warmClocks: false, ...quiet });
    const tuned = await tuner.selectBackwardMma(p);
    expect(tuned?.source).toBe('tuned');
    expect(tuner.mmaBackwardSpace(p).candidates.map((c) => c.config)).toContainEqual(tuned?.config);
    expect(tuned?.entry).toMatchObject({ op: 'na-fused-backward-mma', timed: 2, candidates: 2 });
    expect(await createAutotuner({ ctx, mode: 'cached', cache: store, ...quiet }).selectBackwardMma(p)).toMatchObject({ config: tuned?.config, source: 'cache' });
  }, 300_000);
});
