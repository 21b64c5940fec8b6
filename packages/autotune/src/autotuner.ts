/**
 * `createAutotuner`: pick the fastest kernel configuration of a fused NA forward / backward once, remember it.
 *
 * Modes:
 * - `off`: the op's heuristic default (explicit configs are the caller's business); no cache is read.
 * - `cached` (default): the persistent cache, then the shipped table, then the heuristic default; never times.
 * - `tune`: like `cached`, and a miss is timed (within `maxTuneMs`) and stored.
 * - `deterministic`: only the shipped / imported table, then the heuristic default; the same inputs give the same
 *   config in every process regardless of timing noise or what this machine tuned before.
 */
import { NattenArgumentError, type NaRank, NattenError } from '@natten-web/core';
import { defaultBackwardMma, defaultForwardMma, type GpuContext, mmaConfigFits, kernelLimits, type MmaBackwardConfig, type MmaForwardConfig } from '@natten-web/gpu';
import {
  checkGpuDType,
  defaultFusedForwardConfig,
  type FusedBackwardConfig,
  type FusedForwardConfig,
  fusedBackwardLanesProblem,
  fusedBackwardTileProducts,
  fusedBackwardTilesPerAxis,
  fusedForwardConfigProblem,
  type GpuDType,
} from '@natten-web/wgsl';
import { product } from '@natten-web/core';
import {
  type AdapterIdentity,
  adapterLabel,
  type CacheOption,
  cacheKey,
  emptyTable,
  parseTable,
  resolveStore,
  type TuneEntry,
  type TuneOp,
  type TuneStore,
  type TuneTable,
  type Warn,
} from './cache.ts';
import { type BackwardTuneProblem, type ForwardTuneProblem, formatProblem } from './problem.ts';
import {
  backwardLabel,
  backwardSpace,
  type Candidate,
  type ConfigSpace,
  defaultBackward,
  forwardLabel,
  forwardSpace,
  backwardHelperProblem,
  mmaBackwardLabel,
  mmaBackwardSpace,
  mmaForwardSpace,
  mmaHelperProblem,
  mmaLabel,
  type SpaceLimits,
  type SpaceOptions,
} from './space.ts';
import { backwardInputs, backwardRunner, forwardInputs, forwardRunner, mmaBackwardRunner, mmaForwardRunner, type TimingSettings, timeCandidates, type TuneResult } from './tune.ts';

export type AutotuneMode = 'off' | 'cached' | 'tune' | 'deterministic';
export const AUTOTUNE_MODES: readonly AutotuneMode[] = ['off', 'cached', 'tune', 'deterministic'];

export interface AutotunerOptions extends TimingSettings {
  readonly ctx: GpuContext;
  readonly mode?: AutotuneMode;
  /** Where tuned results persist (default 'persistent': a JSON file in Node, IndexedDB in browsers). */
  readonly cache?: CacheOption;
  /** A shipped table (object or JSON text): used by every mode except 'off'; the only source in 'deterministic'. */
  readonly table?: TuneTable | string;
  /** Pruning of the config space before timing. */
  readonly space?: SpaceOptions;
  /** Warnings (corrupt / stale cache, invalid cached config); default console.warn. */
  readonly warn?: Warn;
}

export type SelectionSource = 'default' | 'cache' | 'table' | 'tuned';

export interface Selection<C> {
  readonly config: C;
  readonly source: SelectionSource;
  readonly key: string;
  readonly entry?: TuneEntry | undefined;
}

export interface DryRunReport {
  /** 'forward-mma' where the default runs the forward on the tensor cores (its configs are what a tune times). */
  readonly op: 'forward' | 'backward' | 'forward-mma' | 'backward-mma';
  readonly problem: string;
  readonly key: string;
  readonly enumerated: number;
  readonly candidates: readonly DryRunRow[];
  readonly pruned: readonly (DryRunRow & { readonly reason: string })[];
}

export interface DryRunRow {
  readonly label: string;
  readonly config: FusedForwardConfig | FusedBackwardConfig | MmaForwardConfig | MmaBackwardConfig;
  readonly cost: number;
  readonly useful: number;
  readonly idle: number;
  readonly workgroups: number;
  readonly isDefault: boolean;
}

/** The config function the umbrella calls for `config: 'auto'`. */
export interface ConfigProvider {
  forward(problem: ForwardTuneProblem): Promise<FusedForwardConfig>;
  backward(problem: BackwardTuneProblem): Promise<FusedBackwardConfig>;
  /**
   * The tensor-core (mma) forward's config where the device's default routes the problem to that path
   * (`defaultForwardMma`), else undefined (then `forward` applies).
   */
  forwardMma(problem: ForwardTuneProblem): Promise<MmaForwardConfig | undefined>;
  /** The tensor-core (mma) backward's config where the default routes the problem to that path, else undefined. */
  backwardMma(problem: BackwardTuneProblem): Promise<MmaBackwardConfig | undefined>;
}

export interface Autotuner extends ConfigProvider {
  readonly mode: AutotuneMode;
  readonly adapter: AdapterIdentity;
  /** The persistent store (resolved on first use). */
  store(): Promise<TuneStore>;
  selectForward(problem: ForwardTuneProblem): Promise<Selection<FusedForwardConfig>>;
  selectBackward(problem: BackwardTuneProblem): Promise<Selection<FusedBackwardConfig>>;
  /** The mma forward's selection (as `selectForward`), or undefined where the default does not take that path. */
  selectForwardMma(problem: ForwardTuneProblem): Promise<Selection<MmaForwardConfig> | undefined>;
  /** The mma backward's selection, or undefined where the default does not take that path. */
  selectBackwardMma(problem: BackwardTuneProblem): Promise<Selection<MmaBackwardConfig> | undefined>;
  /** Time the forward candidates now (any mode) and store the winner. */
  tuneForward(problem: ForwardTuneProblem, settings?: TimingSettings): Promise<TuneResult<FusedForwardConfig>>;
  tuneBackward(problem: BackwardTuneProblem, settings?: TimingSettings): Promise<TuneResult<FusedBackwardConfig>>;
  /** Time the mma forward's candidates now (any mode) and store the winner; undefined where the default does not take that path. */
  tuneForwardMma(problem: ForwardTuneProblem, settings?: TimingSettings): Promise<TuneResult<MmaForwardConfig> | undefined>;
  /** Time the mma backward's candidates now and store the winner; undefined where the default does not take that path. */
  tuneBackwardMma(problem: BackwardTuneProblem, settings?: TimingSettings): Promise<TuneResult<MmaBackwardConfig> | undefined>;
  /** The configs a tune would time, with estimates; no GPU work. */
  dryRun(problem: ForwardTuneProblem, op?: 'forward'): DryRunReport;
  dryRun(problem: BackwardTuneProblem, op: 'backward'): DryRunReport;
  forwardSpace(problem: ForwardTuneProblem): ConfigSpace<FusedForwardConfig>;
  backwardSpace(problem: BackwardTuneProblem): ConfigSpace<FusedBackwardConfig>;
  /** The mma forward's candidates (empty where the default does not take that path). */
  mmaForwardSpace(problem: ForwardTuneProblem): ConfigSpace<MmaForwardConfig>;
  /** The mma backward's candidates (empty where the default does not take that path). */
  mmaBackwardSpace(problem: BackwardTuneProblem): ConfigSpace<MmaBackwardConfig>;
  /** The stored (persistent) table. */
  exportTable(): Promise<TuneTable>;
  /** Add a table's entries to the shipped layer (and, with persist, to the store). Returns the entry count. */
  importTable(table: TuneTable | string, options?: { readonly persist?: boolean }): Promise<number>;
}

export function adapterIdentity(ctx: GpuContext): AdapterIdentity {
  const a = ctx.adapterInfo;
  return { vendor: a.vendor, architecture: a.architecture, device: a.device, description: a.description };
}

/**
 * The device limits the config spaces read; with subgroups they also hold the lane-split configs (`lanes` 2, 4),
 * and cached entries with lanes stay valid; without, those are neither enumerated nor accepted.
 */
export function spaceLimits(ctx: GpuContext): SpaceLimits {
  return kernelLimits(ctx);
}

function gpuProblem<P extends { dtype: ForwardTuneProblem['dtype']; rank: NaRank }>(op: string, p: P): P & { dtype: GpuDType } {
  return { ...p, dtype: checkGpuDType(`autotune: na${p.rank}d_${op}`, p.dtype) };
}

function toRows(space: ConfigSpace<FusedForwardConfig> | ConfigSpace<FusedBackwardConfig> | ConfigSpace<MmaForwardConfig> | ConfigSpace<MmaBackwardConfig>) {
  const row = (c: (typeof space.candidates)[number]): DryRunRow => ({
    label: c.label,
    config: c.config,
    cost: c.estimate.cost,
    useful: c.estimate.useful,
    idle: c.estimate.idle,
    workgroups: c.estimate.workgroups,
    isDefault: c.isDefault,
  });
  return { candidates: space.candidates.map(row), pruned: space.pruned.map((c) => ({ ...row(c), reason: c.reason })) };
}

/** A dry run as text (CLI). */
export function formatDryRun(r: DryRunReport): string {
  const lines = [
    `dry run: ${r.op} ${r.problem}`,
    `key: ${r.key}`,
    `${r.enumerated} valid configs, ${r.candidates.length} to time, ${r.pruned.length} pruned`,
    `  #  est.cost  useful  idle  workgroups  config`,
  ];
  r.candidates.forEach((c, i) => {
    lines.push(
      `${String(i + 1).padStart(3)}  ${c.cost.toFixed(1).padStart(8)}  ${(c.useful * 100).toFixed(0).padStart(5)}%  ${(c.idle * 100).toFixed(0).padStart(3)}%  ${String(c.workgroups).padStart(10)}  ${c.label}${c.isDefault ? '  (default)' : ''}`,
    );
  });
  for (const c of r.pruned) lines.push(`  pruned: ${c.label}: ${c.reason}`);
  return lines.join('\n');
}

export function createAutotuner(options: AutotunerOptions): Autotuner {
  const { ctx } = options;
  const mode = options.mode ?? 'cached';
  if (!AUTOTUNE_MODES.includes(mode)) {
    throw new NattenArgumentError(`createAutotuner: mode='${String(mode)}' is not a mode; use ${AUTOTUNE_MODES.map((m) => `'${m}'`).join(', ')}`);
  }
  if (options.maxTuneMs !== undefined && !(options.maxTuneMs >= 0)) {
    throw new NattenArgumentError(`createAutotuner: maxTuneMs=${options.maxTuneMs} must be a number >= 0`);
  }
  const warn: Warn = options.warn ?? ((m) => console.warn(m));
  const adapter = adapterIdentity(ctx);
  const limits = spaceLimits(ctx);
  const shipped = new Map<string, TuneEntry>();
  if (options.table !== undefined) {
    for (const [k, e] of Object.entries((parseTable(options.table, 'the shipped table', warn) ?? emptyTable()).entries)) shipped.set(k, e);
  }
  let storePromise: Promise<TuneStore> | undefined;
  let memo: Promise<Map<string, TuneEntry>> | undefined;
  const inflight = new Map<string, Promise<unknown>>();

  const store = (): Promise<TuneStore> => (storePromise ??= resolveStore(options.cache, warn));
  const loaded = (): Promise<Map<string, TuneEntry>> =>
    (memo ??= store().then(async (s) => new Map(Object.entries((await s.load()).entries))));

  async function remember(key: string, entry: TuneEntry): Promise<void> {
    (await loaded()).set(key, entry);
    try {
      await (await store()).merge({ [key]: entry });
    } catch (e) {
      warn(`natten-web autotune: could not persist a tuning result (${(e as Error).message}); it is kept in memory for this process`);
    }
  }

  const fwdValid = (p: ForwardTuneProblem, c: FusedForwardConfig): string | undefined => fusedForwardConfigProblem(p, c, limits);
  const bwdValid = (p: BackwardTuneProblem & { dtype: GpuDType }, c: FusedBackwardConfig): string | undefined => {
    if (c.queryTile.length !== p.rank || c.keyTile.length !== p.rank || c.numSplitsKey.length !== p.rank) return `tile tuples must have ${p.rank} entries`;
    const qp = product(c.queryTile);
    const kp = product(c.keyTile);
    if (!fusedBackwardTileProducts(p, limits).some(([q, k]) => q === qp && k === kp)) return `tile products ${qp}x${kp} do not fit this device`;
    const tiles = fusedBackwardTilesPerAxis(p.spatial, p.params.dilation, c.keyTile);
    if (c.numSplitsKey.some((s, a) => s > (tiles[a] as number))) return `num_splits_key ${c.numSplitsKey.join(',')} exceeds the key tiles per axis ${tiles.join(',')}`;
    return fusedBackwardLanesProblem(p, c, limits);
  };

  async function lookup<C>(op: TuneOp, key: string, valid: (c: C) => string | undefined): Promise<Selection<C> | undefined> {
    const layers: [SelectionSource, Map<string, TuneEntry>][] =
      mode === 'deterministic' ? [['table', shipped]] : [['cache', await loaded()], ['table', shipped]];
    for (const [source, m] of layers) {
      const e = m.get(key);
      if (!e || e.op !== op) continue;
      const why = valid(e.config as C);
      if (why !== undefined) {
        warn(`natten-web autotune: ignoring the ${source} entry for ${key}: ${why}`);
        continue;
      }
      return { config: e.config as C, source, key, entry: e };
    }
    return undefined;
  }

  function settingsOf(s: TimingSettings | undefined): TimingSettings {
    return {
      maxTuneMs: s?.maxTuneMs ?? options.maxTuneMs,
      warmup: s?.warmup ?? options.warmup,
      reps: s?.reps ?? options.reps,
      seed: s?.seed ?? options.seed,
      onProgress: s?.onProgress ?? options.onProgress,
      progress: s?.progress ?? options.progress,
      warmClocks: s?.warmClocks ?? options.warmClocks,
    };
  }

  function entryOf<C extends TuneEntry['config']>(op: TuneOp, problem: string, r: TuneResult<C>): TuneEntry {
    return {
      op,
      problem,
      adapter: adapterLabel(adapter),
      config: r.config,
      medianNs: r.medianNs,
      method: r.method,
      timed: r.timed,
      candidates: r.candidates,
      truncated: r.truncated,
      tunedAt: new Date().toISOString(),
    };
  }

  /**
   * Time `candidates` on fresh seeded inputs (released after), store the winner under `op`, and return it, or
   * `fallback` (with a warning) when every candidate failed.
   */
  async function tuneSpace<C extends TuneEntry['config'], X extends { release(): void }>(
    op: TuneOp,
    p: ForwardTuneProblem,
    candidates: readonly Candidate<C>[],
    fallback: C,
    label: (c: C) => string,
    inputs: (seed: number) => X | Promise<X>,
    runner: (x: X) => (c: C) => Promise<void>,
    s: TimingSettings | undefined,
  ): Promise<TuneResult<C>> {
    const pass = op === 'na-fused-forward' || op === 'na-fused-forward-mma' ? 'forward' : 'backward';
    const settings = settingsOf(s);
    const x = await inputs(settings.seed ?? 1);
    try {
      const t = await timeCandidates(ctx, pass, formatProblem(p), candidates, runner(x), settings);
      const r: TuneResult<C> = { ...t, config: t.best?.config ?? fallback, label: t.best?.label ?? label(fallback), medianNs: t.best?.medianNs ?? Number.NaN };
      if (t.best) await remember(cacheKey(adapter, op, p), entryOf(op, formatProblem(p), r));
      else failedAll(pass, p, t.results);
      return r;
    } finally {
      x.release();
    }
  }

  async function tuneForward(problem: ForwardTuneProblem, s?: TimingSettings): Promise<TuneResult<FusedForwardConfig>> {
    const p = gpuProblem('forward', problem);
    const space = forwardSpace(p, limits, options.space);
    const fallback = defaultFusedForwardConfig(p, limits);
    return tuneSpace('na-fused-forward', p, space.candidates, fallback, forwardLabel, (seed) => forwardInputs(ctx, p, seed), (x) => forwardRunner(ctx, p.rank, p, x), s);
  }

  async function tuneBackward(problem: BackwardTuneProblem, s?: TimingSettings): Promise<TuneResult<FusedBackwardConfig>> {
    const p = gpuProblem('backward', problem);
    const space = backwardSpace(p, limits, options.space);
    const fallback = defaultBackward(p, limits);
    if (!fallback) throw new NattenArgumentError(`autotune: na${p.rank}d_backward: no backward tile configuration fits this device`);
    return tuneSpace('na-fused-backward', p, space.candidates, fallback, backwardLabel, (seed) => backwardInputs(ctx, p, seed), (x) => backwardRunner(ctx, p.rank, p, x), s);
  }

  async function tuneForwardMma(problem: ForwardTuneProblem, s?: TimingSettings): Promise<TuneResult<MmaForwardConfig> | undefined> {
    const p = gpuProblem('forward', problem);
    const space = mmaForwardSpace(ctx, p, options.space);
    const def = space.candidates.find((c) => c.isDefault)?.config;
    if (!def) return undefined;
    return tuneSpace('na-fused-forward-mma', p, space.candidates, def, mmaLabel, (seed) => forwardInputs(ctx, p, seed), (x) => mmaForwardRunner(ctx, p.rank, p, x), s);
  }

  async function tuneBackwardMma(problem: BackwardTuneProblem, s?: TimingSettings): Promise<TuneResult<MmaBackwardConfig> | undefined> {
    const p = gpuProblem('backward', problem);
    const space = mmaBackwardSpace(ctx, p, options.space);
    const def = space.candidates.find((c) => c.isDefault)?.config;
    if (!def) return undefined;
    return tuneSpace('na-fused-backward-mma', p, space.candidates, def, mmaBackwardLabel, (seed) => backwardInputs(ctx, p, seed), (x) => mmaBackwardRunner(ctx, p.rank, p, x), s);
  }

  function failedAll(op: string, p: ForwardTuneProblem, results: readonly { label: string; error?: string | undefined }[]): void {
    const errs = results.filter((r) => r.error !== undefined);
    if (errs.length) warn(`natten-web autotune: every timed ${op} candidate of ${formatProblem(p)} failed (first: ${errs[0]?.label}: ${errs[0]?.error}); using the default config`);
  }

  /**
   * A selection must not fail because tuning failed (e.g. the real-shape inputs do not fit in memory next to the
   * caller's tensors): warn and fall back to the heuristic default, which the call then runs (and reports on).
   */
  async function tuneOrWarn<T>(key: string, p: ForwardTuneProblem, fn: () => Promise<T>): Promise<T | undefined> {
    try {
      return await fn();
    } catch (e) {
      warn(`natten-web autotune: tuning ${formatProblem(p)} failed (${e instanceof Error ? e.message : String(e)}); using the default config for ${key}`);
      return undefined;
    }
  }

  /** One tune per key at a time in this process. */
  function once<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const cur = inflight.get(key) as Promise<T> | undefined;
    if (cur) return cur;
    const p = fn().finally(() => inflight.delete(key));
    inflight.set(key, p);
    return p;
  }

  /**
   * The selection flow every op shares: the default in mode 'off'; else a valid stored entry (cache, then table;
   * table only when deterministic); else in mode 'tune' a tune (once per key, warning and falling back on failure);
   * else the default.
   */
  async function selectWith<C>(
    op: TuneOp,
    key: string,
    p: ForwardTuneProblem,
    def: () => Selection<C>,
    valid: (c: C) => string | undefined,
    tune: () => Promise<TuneResult<C> | undefined>,
  ): Promise<Selection<C>> {
    if (mode === 'off') return def();
    const hit = await lookup<C>(op, key, valid);
    if (hit) return hit;
    if (mode !== 'tune') return def();
    const r = await tuneOrWarn(key, p, () => once(key, tune));
    if (!r || r.timed === 0) return def();
    return { config: r.config, source: 'tuned', key, entry: (await loaded()).get(key) };
  }

  async function selectForward(problem: ForwardTuneProblem): Promise<Selection<FusedForwardConfig>> {
    const p = gpuProblem('forward', problem);
    const key = cacheKey(adapter, 'na-fused-forward', p);
    const def = (): Selection<FusedForwardConfig> => ({ config: defaultFusedForwardConfig(p, limits), source: 'default', key });
    return selectWith('na-fused-forward', key, p, def, (c) => fwdValid(p, c), () => tuneForward(p));
  }

  async function selectBackward(problem: BackwardTuneProblem): Promise<Selection<FusedBackwardConfig>> {
    const p = gpuProblem('backward', problem);
    const key = cacheKey(adapter, 'na-fused-backward', p);
    const def = (): Selection<FusedBackwardConfig> => {
      const config = defaultBackward(p, limits);
      if (!config) throw new NattenArgumentError(`autotune: na${p.rank}d_backward: no backward tile configuration fits this device`);
      return { config, source: 'default', key };
    };
    return selectWith('na-fused-backward', key, p, def, (c) => bwdValid(p, c), () => tuneBackward(p));
  }

  /**
   * Whether a stored tensor-core config fits (`check`), remembered per key and config: `config: 'auto'` asks on
   * every call, and the answer cannot change for this context.
   */
  const fitted = new Map<string, boolean>();
  function fitsOnce(key: string, config: unknown, check: () => boolean): boolean {
    const k = `${key}#${JSON.stringify(config)}`;
    let ok = fitted.get(k);
    if (ok === undefined) {
      ok = check();
      fitted.set(k, ok);
    }
    return ok;
  }

  async function selectForwardMma(problem: ForwardTuneProblem): Promise<Selection<MmaForwardConfig> | undefined> {
    const p = gpuProblem('forward', problem);
    const fp = mmaHelperProblem(p);
    const dflt = defaultForwardMma(ctx, fp);
    if (!dflt) return undefined;
    const key = cacheKey(adapter, 'na-fused-forward-mma', p);
    const def = (): Selection<MmaForwardConfig> => ({ config: dflt, source: 'default', key });
    // A stored config must be one this device and problem can run (its spec and workgroup memory), as for the plain ops.
    const valid = (c: MmaForwardConfig): string | undefined =>
      fitsOnce(key, c, () => mmaConfigFits(ctx, fp, c)) ? undefined : `tensor-core config ${mmaLabel(c)} does not fit this device and problem`;
    return selectWith('na-fused-forward-mma', key, p, def, valid, () => tuneForwardMma(p));
  }

  async function selectBackwardMma(problem: BackwardTuneProblem): Promise<Selection<MmaBackwardConfig> | undefined> {
    const p = gpuProblem('backward', problem);
    const dflt = defaultBackwardMma(ctx, backwardHelperProblem(p));
    if (!dflt) return undefined;
    const key = cacheKey(adapter, 'na-fused-backward-mma', p);
    const def = (): Selection<MmaBackwardConfig> => ({ config: dflt, source: 'default', key });
    // A stored config must be one of the space's (the same kernels, tiles and scratch layout this device and problem
    // can run), compared on every field, an absent flag equal to false (so a new flag needs no change here).
    const fields = (x: MmaBackwardConfig): string =>
      JSON.stringify(
        Object.entries(x)
          .filter(([, v]) => v !== undefined && v !== false)
          .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)),
      );
    const valid = (c: MmaBackwardConfig): string | undefined =>
      fitsOnce(key, c, () => mmaBackwardSpace(ctx, p, { maxCandidates: Number.POSITIVE_INFINITY }).candidates.some((x) => fields(x.config) === fields(c)))
        ? undefined
        : `tensor-core backward config ${mmaBackwardLabel(c)} does not fit this device and problem`;
    return selectWith('na-fused-backward-mma', key, p, def, valid, () => tuneBackwardMma(p));
  }

  function dryRun(problem: ForwardTuneProblem | BackwardTuneProblem, op: 'forward' | 'backward' = 'forward'): DryRunReport {
    if (op === 'backward') {
      if (!('hasGradRpb' in problem)) throw new NattenArgumentError(`autotune dryRun: op='backward' needs a backward problem (with hasGradRpb)`);
      const p = gpuProblem('backward', problem);
      const mma = mmaBackwardSpace(ctx, p, options.space);
      if (mma.candidates.length > 0) {
        return { op: 'backward-mma', problem: formatProblem(p), key: cacheKey(adapter, 'na-fused-backward-mma', p), enumerated: mma.enumerated, ...toRows(mma) };
      }
      const space = backwardSpace(p, limits, options.space);
      return { op, problem: formatProblem(p), key: cacheKey(adapter, 'na-fused-backward', p), enumerated: space.enumerated, ...toRows(space) };
    }
    const p = gpuProblem('forward', problem);
    const mma = mmaForwardSpace(ctx, p, options.space);
    if (mma.candidates.length > 0) {
      return { op: 'forward-mma', problem: formatProblem(p), key: cacheKey(adapter, 'na-fused-forward-mma', p), enumerated: mma.enumerated, ...toRows(mma) };
    }
    const space = forwardSpace(p, limits, options.space);
    return { op, problem: formatProblem(p), key: cacheKey(adapter, 'na-fused-forward', p), enumerated: space.enumerated, ...toRows(space) };
  }

  return {
    mode,
    adapter,
    store,
    selectForward,
    selectBackward,
    selectForwardMma,
    selectBackwardMma,
    tuneBackwardMma: (p, s) => once(cacheKey(adapter, 'na-fused-backward-mma', gpuProblem('backward', p)), () => tuneBackwardMma(p, s)),
    tuneForwardMma: (p, s) => once(cacheKey(adapter, 'na-fused-forward-mma', gpuProblem('forward', p)), () => tuneForwardMma(p, s)),
    tuneForward: (p, s) => once(cacheKey(adapter, 'na-fused-forward', gpuProblem('forward', p)), () => tuneForward(p, s)),
    tuneBackward: (p, s) => once(cacheKey(adapter, 'na-fused-backward', gpuProblem('backward', p)), () => tuneBackward(p, s)),
    dryRun: dryRun as Autotuner['dryRun'],
    forwardSpace: (p) => forwardSpace(gpuProblem('forward', p), limits, options.space),
    backwardSpace: (p) => backwardSpace(gpuProblem('backward', p), limits, options.space),
    mmaForwardSpace: (p) => mmaForwardSpace(ctx, gpuProblem('forward', p), options.space),
    mmaBackwardSpace: (p) => mmaBackwardSpace(ctx, gpuProblem('backward', p), options.space),
    forward: async (p) => (await selectForward(p)).config,
    forwardMma: async (p) => (await selectForwardMma(p))?.config,
    backwardMma: async (p) => (await selectBackwardMma(p))?.config,
    backward: async (p) => (await selectBackward(p)).config,
    exportTable: async () => ({ ...emptyTable(), entries: Object.fromEntries(await loaded()) }),
    importTable: async (table, o) => {
      const t = parseTable(table, 'the imported table', warn);
      if (!t) throw new NattenError(`autotune importTable: the table is not a valid ${'@natten-web/autotune'} table of this version (see the warning)`);
      for (const [k, e] of Object.entries(t.entries)) shipped.set(k, e);
      if (o?.persist) {
        const m = await loaded();
        for (const [k, e] of Object.entries(t.entries)) m.set(k, e);
        await (await store()).merge(t.entries);
      }
      return Object.keys(t.entries).length;
    },
  };
}

/** Mode from `NATTEN_WEB_AUTOTUNE` (off | cached | tune | deterministic), or undefined. */
export function modeFromEnv(): AutotuneMode | undefined {
  const env = (globalThis as { process?: { env?: Record<string, string | undefined> } }).process?.env;
  const v = env?.NATTEN_WEB_AUTOTUNE;
  if (v === undefined || v === '') return undefined;
  if (!(AUTOTUNE_MODES as readonly string[]).includes(v)) {
    throw new NattenArgumentError(`NATTEN_WEB_AUTOTUNE='${v}' is not a mode; use ${AUTOTUNE_MODES.join(', ')}`);
  }
  return v as AutotuneMode;
}

/**
 * One autotuner per GPU context, created on first use: what the umbrella calls to resolve `config: 'auto'`.
 * Options apply to every context; the mode defaults to `NATTEN_WEB_AUTOTUNE`, else 'cached'.
 */
export function createConfigProvider(options: Omit<AutotunerOptions, 'ctx'> = {}): (ctx: GpuContext) => Autotuner {
  const tuners = new WeakMap<GpuContext, Autotuner>();
  return (ctx) => {
    let t = tuners.get(ctx);
    if (!t) {
      t = createAutotuner({ ...options, ctx, mode: options.mode ?? modeFromEnv() ?? 'cached' });
      tuners.set(ctx, t);
    }
    return t;
  };
}
