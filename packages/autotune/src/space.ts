/**
 * Config spaces: the valid kernel configurations of a fused forward / backward problem on a device (from the
 * wgsl enumerators), each with a cost estimate, pruned with cheap rules before anything is timed.
 *
 * Cost model (kernels.md §1): a query tile of T_a queries per axis stages the key box `min(T_a + K_a - 1, n_a)`
 * per axis (n_a = dilation-group extent), in linear chunks of BK keys. Useful fraction = prod(K) / keys visited
 * per query (the staged box, rounded up to whole chunks). The estimate, in "key steps per real query", charges
 * every lane of a tile (idle ones hold their SIMD slot) prod(K) steps, plus STAGE_WEIGHT per staged key
 * amortized over the tile's real queries, plus a barrier cost per chunk. It orders candidates (the likely best
 * first, so a time budget cut keeps good ones) and is what a dry run shows; only timing decides.
 */
import { type FusedProblem, product } from '@natten-web/core';
import {
  defaultBackwardMma,
  defaultForwardMma,
  enumerateMmaConfigs,
  type GpuContext,
  type MmaBackwardConfig,
  mmaBackwardConfigFits,
  mmaBackwardFlags,
  type MmaForwardConfig,
  mmaBackwardTile,
  mmaBackwardTwins,
  mmaForwardFlags,
  mmaForwardTwins,
  mmaConfigCost,
  mmaWindowUse,
  mmaWorkgroups,
} from '@natten-web/gpu';
import {
  type BackwardLimits,
  defaultFusedBackwardConfig,
  defaultFusedForwardConfig,
  enumerateFusedBackwardConfigs,
  enumerateFusedForwardConfigs,
  type FusedBackwardConfig,
  type FusedForwardConfig,
  type FusedKernelLimits,
  fusedBackwardTilesPerAxis,
  type GpuDType,
} from '@natten-web/wgsl';
import type { BackwardTuneProblem, ForwardTuneProblem } from './problem.ts';

/** Device limits config spaces read (a plain subset of GPUSupportedLimits). */
export type SpaceLimits = FusedKernelLimits & BackwardLimits;

export interface CostEstimate {
  /** Relative cost (key steps per real query); lower is better. Comparable within one problem only. */
  readonly cost: number;
  /** prod(K) / keys visited per query (the staged box, whole chunks): 1 = no wasted key. */
  readonly useful: number;
  /** Fraction of invocations that hold no query (tile overhang past the extents). */
  readonly idle: number;
  /** Workgroups of the main kernel (all batches, heads, dilation groups). */
  readonly workgroups: number;
}

export interface Candidate<C> {
  readonly config: C;
  readonly estimate: CostEstimate;
  /** Short human label: `q=8x8 k=32 stage=f32`. */
  readonly label: string;
  /** True for the heuristic default of the op (always kept, timed first). */
  readonly isDefault: boolean;
}

export interface PrunedCandidate<C> extends Candidate<C> {
  readonly reason: string;
}

export interface ConfigSpace<C> {
  /** Candidates to time, best estimate first, the default config first of all. */
  readonly candidates: readonly Candidate<C>[];
  /** Valid configs dropped by the cheap rules, with the rule. */
  readonly pruned: readonly PrunedCandidate<C>[];
  /** Number of valid configs the wgsl enumerator produced. */
  readonly enumerated: number;
}

export interface SpaceOptions {
  /** Keep at most this many candidates after pruning (default 24; the default config always stays). */
  readonly maxCandidates?: number;
  /** Drop tiles whose idle-invocation fraction exceeds this (default 0.5) when a tile below it exists. */
  readonly maxIdle?: number;
}

const STAGE_WEIGHT = 2;
const CHUNK_BARRIER = 4;

function groupExtents(p: ForwardTuneProblem): number[] {
  return p.spatial.map((L, a) => Math.ceil(L / (p.params.dilation[a] as number)));
}

function dilationGroups(p: ForwardTuneProblem): number {
  return product(p.params.dilation.map((d, a) => Math.min(d, p.spatial[a] as number)));
}

/** Estimate for one kernel that runs `tile` invocations per workgroup and stages the `window`-wide box in chunks. */
function tileEstimate(p: ForwardTuneProblem, tile: readonly number[], chunk: number, heads: number): CostEstimate {
  const ext = groupExtents(p);
  const K = p.params.kernelSize;
  let tiles = 1;
  let lanes = 1;
  let box = 1;
  for (let a = 0; a < p.rank; a++) {
    const n = ext[a] as number;
    const t = tile[a] as number;
    tiles *= Math.ceil(n / t);
    lanes *= Math.ceil(n / t) * t;
    box *= Math.min(t + (K[a] as number) - 1, n);
  }
  const real = product(ext);
  const window = product(K);
  const chunks = Math.ceil(box / chunk);
  const visited = chunks * chunk;
  const realPerTile = real / tiles;
  const cost = (lanes / real) * window + (STAGE_WEIGHT * visited + CHUNK_BARRIER * chunks) / realPerTile;
  return {
    cost,
    useful: Math.min(1, window / visited),
    idle: 1 - real / lanes,
    workgroups: tiles * p.batch * heads * dilationGroups(p),
  };
}

const fmt = (xs: readonly number[]): string => xs.join('x');

export function forwardLabel(c: FusedForwardConfig): string {
  return `q=${fmt(c.queryTile)} k=${fmt(c.keyTile)} stage=${c.stage}${c.lanes !== undefined && c.lanes !== 1 ? ` lanes=${c.lanes}` : ''}${(c.keyUnroll ?? 1) > 1 ? ` unroll=${c.keyUnroll}` : ''}`;
}

export function backwardLabel(c: FusedBackwardConfig): string {
  return `q=${fmt(c.queryTile)} k=${fmt(c.keyTile)} splits=${c.numSplitsKey.join(',')} delta=${c.computeDeltaWithTorch ? 'separate' : 'fused'}${c.lanes !== undefined && c.lanes !== 1 ? ` lanes=${c.lanes}` : ''}${(c.keyUnroll ?? 1) > 1 ? ` unroll=${c.keyUnroll}` : ''}`;
}

/**
 * Forward estimate: one kernel, query tile = workgroup, key chunk = key tile product. Lane-split configs
 * (`lanes` > 1) get the estimate of their single-lane twin: no GPU has timed them yet, so the model does not
 * guess; they sort right after the twin (label order) and only timing tells them apart.
 */
export function estimateForward(p: ForwardTuneProblem, c: FusedForwardConfig): CostEstimate {
  const e = tileEstimate(p, c.queryTile, product(c.keyTile), p.heads);
  // f16 staging halves the staged bytes but converts on every use: a small per-step surcharge.
  return c.stage === 'f16' ? { ...e, cost: e.cost * 1.02 } : e;
}

/**
 * Backward estimate: the dQ kernel (query tile lanes, key tile staged) plus the dK/dV kernel (key tile lanes, query
 * tile staged; the inverse neighbourhood has the same extent K), plus the reduction passes key splits add and the
 * separate delta pass. Lane-split configs (`lanes` > 1) get the estimate of their single-lane twin, as in the
 * forward: nothing has timed them on a real GPU, so only timing tells them apart.
 */
export function estimateBackward(p: BackwardTuneProblem, c: FusedBackwardConfig): CostEstimate {
  const dq = tileEstimate(p, c.queryTile, product(c.keyTile), p.heads);
  const dkv = tileEstimate(p, c.keyTile, product(c.queryTile), p.headsKv);
  const splits = product(c.numSplitsKey);
  // Splitting keys multiplies dQ workgroups (more parallelism on small problems) and adds a reduction pass that
  // reads `splits` partial dQ rows per query.
  const reduce = splits > 1 ? (splits * p.dim) / 8 : 0;
  const delta = c.computeDeltaWithTorch ? p.dimV / 8 + 2 : 0;
  const parallel = Math.min(1, (dq.workgroups * splits) / 64) / Math.min(1, dq.workgroups / 64);
  return {
    cost: dq.cost / parallel + 1.5 * dkv.cost + reduce + delta,
    useful: (dq.useful + dkv.useful) / 2,
    idle: Math.max(dq.idle, dkv.idle),
    workgroups: dq.workgroups * splits + dkv.workgroups,
  };
}

function sameJson(a: unknown, b: unknown): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

/**
 * The candidates of a space: the default first, then `twins` (the default's codegen twins: the same work compiled
 * another way, which only timing can rank), then the rest by estimate, `maxCandidates` in all (the default always
 * stays).
 */
function buildSpace<C>(all: readonly C[], def: C | undefined, estimate: (c: C) => CostEstimate, label: (c: C) => string, options: SpaceOptions, twins: readonly C[] = []): ConfigSpace<C> {
  const maxCandidates = options.maxCandidates ?? 24;
  const maxIdle = options.maxIdle ?? 0.5;
  const scored = all.map((config) => ({ config, estimate: estimate(config), label: label(config), isDefault: def !== undefined && sameJson(config, def) }));
  // The heuristic default is always a candidate, even when its tile shape is outside the enumerated grid.
  if (def !== undefined && !scored.some((c) => c.isDefault)) scored.push({ config: def, estimate: estimate(def), label: label(def), isDefault: true });
  scored.sort((a, b) => a.estimate.cost - b.estimate.cost || a.label.localeCompare(b.label));
  const pruned: PrunedCandidate<C>[] = [];
  const anyBelowIdle = scored.some((c) => c.estimate.idle <= maxIdle);
  let kept = scored.filter((c) => {
    if (c.isDefault || !anyBelowIdle || c.estimate.idle <= maxIdle) return true;
    pruned.push({ ...c, reason: `${Math.round(c.estimate.idle * 100)}% of invocations idle (tile much larger than the extents; limit ${Math.round(maxIdle * 100)}%)` });
    return false;
  });
  // Occupancy: on a problem too small to fill the device, a tile giving fewer than a quarter of the workgroups of
  // the most parallel candidate starves it.
  const mostWg = Math.max(0, ...kept.map((c) => c.estimate.workgroups));
  if (mostWg < 256) {
    kept = kept.filter((c) => {
      if (c.isDefault || c.estimate.workgroups * 4 >= mostWg) return true;
      pruned.push({ ...c, reason: `${c.estimate.workgroups} workgroups vs ${mostWg} for the most parallel tile (under-occupies the device on a small problem)` });
      return false;
    });
  }
  const defaults = kept.filter((c) => c.isDefault);
  const pinned = twins.filter((t, i) => !defaults.some((d) => sameJson(d.config, t)) && twins.findIndex((u) => sameJson(u, t)) === i);
  const isTwin = (c: Candidate<C>): boolean => pinned.some((t) => sameJson(c.config, t));
  const twinRows = pinned.map((config) => ({ config, estimate: estimate(config), label: label(config), isDefault: false }));
  const rest = [...twinRows, ...kept.filter((c) => !c.isDefault && !isTwin(c))];
  for (let i = pruned.length - 1; i >= 0; i--) if (isTwin(pruned[i] as Candidate<C>)) pruned.splice(i, 1);
  const room = Math.max(0, maxCandidates - defaults.length);
  for (const c of rest.slice(room)) pruned.push({ ...c, reason: `beyond the ${maxCandidates} best estimates` });
  return { candidates: [...defaults, ...rest.slice(0, room)], pruned, enumerated: all.length };
}

/** Valid, pruned forward configs for a problem on a device (the wgsl enumerator + cheap rules), best first. */
export function forwardSpace(p: ForwardTuneProblem, limits: SpaceLimits, options: SpaceOptions = {}): ConfigSpace<FusedForwardConfig> {
  // Only configs the seed's tile arguments can select: given query/key tiles, the op stages K/V in the input's
  // precision, so a tuned choice is exactly what `config: 'auto'` then runs through those arguments.
  // With subgroups (`limits.subgroupMinSize`), the lane-split configs are in the space too; their `lanes` travels
  // with the tiles (core's `FusedForwardArgs.lanes`), so natten-web's `config: 'auto'` runs them as timed.
  const tileStage = p.dtype === 'float16' ? 'f16' : 'f32';
  const all = enumerateFusedForwardConfigs(p, limits).filter((c) => c.stage === tileStage);
  const def = all.length ? defaultFusedForwardConfig(p, limits) : undefined;
  return buildSpace(all, def && def.stage === tileStage ? def : all[0], (c) => estimateForward(p, c), forwardLabel, options);
}

/** The core problem the gpu package's tensor-core (mma) helpers take, from a tune problem. */
export function mmaHelperProblem(p: ForwardTuneProblem): FusedProblem {
  return { ...p, op: `na${p.rank}d_forward`, scale: 1 / Math.sqrt(p.dim) };
}

export function mmaLabel(c: MmaForwardConfig): string {
  return [`mma q=${fmt(c.queryTile)} bk=${c.keyChunk} sg=${c.subgroups}`, ...mmaForwardFlags(c)].join(' ');
}

/**
 * The tensor-core (mma) forward's configs for a problem the default routes to that path (`defaultForwardMma`),
 * best estimate first (`mmaConfigCost`: staged chunks plus the chunks each subgroup's windows span); the default
 * first of all, then its codegen twins (`mmaForwardTwins`: the same work compiled another way, which only timing can
 * rank). Empty where the default does not take the mma path (the plain space is tuned there). `useful` is
 * the window use (`mmaWindowUse`); no tile is idle beyond its padding, so `idle` is 0.
 */
export function mmaForwardSpace(ctx: GpuContext, p: ForwardTuneProblem, options: SpaceOptions = {}): ConfigSpace<MmaForwardConfig> {
  const fp = mmaHelperProblem(p);
  const def = defaultForwardMma(ctx, fp);
  if (!def) return { candidates: [], pruned: [], enumerated: 0 };
  const estimate = (c: MmaForwardConfig): CostEstimate => ({ cost: mmaConfigCost(fp, c), useful: mmaWindowUse(fp, c), idle: 0, workgroups: mmaWorkgroups(fp, c) });
  return buildSpace(enumerateMmaConfigs(ctx, fp), def, estimate, mmaLabel, options, mmaForwardTwins(ctx, fp, def));
}

/** The full core-problem shape the wgsl backward helpers take, from a tune problem. */
export function backwardHelperProblem(p: BackwardTuneProblem & { readonly dtype: GpuDType }) {
  const ones = new Array<number>(p.rank).fill(1) as unknown as readonly [number];
  return { ...p, op: `na${p.rank}d_backward`, scale: 1 / Math.sqrt(p.dim), numSplitsKey: ones, computeDeltaWithTorch: false };
}

/** The heuristic backward default (wgsl's), or undefined when nothing fits. */
export function defaultBackward(p: BackwardTuneProblem & { readonly dtype: GpuDType }, limits: SpaceLimits): FusedBackwardConfig | undefined {
  return defaultFusedBackwardConfig(backwardHelperProblem(p), limits);
}

export function mmaBackwardLabel(c: MmaBackwardConfig): string {
  return [`mma dq=${fmt(c.queryTile)}/sg${c.querySubgroups}${c.dqHeadSplit ? '-split' : ''} dkv=${fmt(c.keyTile)}/sg${c.keySubgroups}${c.dkvHeadSplit ? '-split' : ''} chunk=${c.chunk}`, ...mmaBackwardFlags(c)].join(' ');
}

/**
 * The tensor-core (mma) backward's configs for a problem the default routes to that path (`defaultBackwardMma`):
 * per chunk size (16, 32), every subgroup count of each kernel (2, 4, 8) with that kernel's smallest-box tile
 * (`mmaBackwardTile`), both scratch layouts, each also with dq's one scratch (`dqSharedScratch`), the
 * default first, then its codegen twins (`mmaBackwardTwins`), then by estimate (the forward's `mmaConfigCost` of
 * each kernel's tile, weighted by its matrix products per pair: dq 3, dK/dV 4). Empty where the default takes the plain path. The head split
 * (`dqHeadSplit`, `dkvHeadSplit`) is not in it: 1.1-1.7x slower per kernel on every problem timed (H200, session 11).
 */
export function mmaBackwardSpace(ctx: GpuContext, p: BackwardTuneProblem & { readonly dtype: GpuDType }, options: SpaceOptions = {}): ConfigSpace<MmaBackwardConfig> {
  const bp = backwardHelperProblem(p);
  const def = defaultBackwardMma(ctx, bp);
  if (!def) return { candidates: [], pruned: [], enumerated: 0 };
  const fp = mmaHelperProblem(p);
  const counts = [2, 4, 8] as const;
  const all: MmaBackwardConfig[] = [];
  for (const chunk of [16, 32] as const) {
    const tiles = (kernel: 'dq' | 'dkv') => counts.map((n) => ({ n, tile: mmaBackwardTile(ctx, bp, kernel, n, chunk) }));
    const dkv = tiles('dkv');
    for (const q of tiles('dq')) {
      for (const k of dkv) {
        if (!q.tile || !k.tile) continue;
        const c: MmaBackwardConfig = { path: 'mma', queryTile: q.tile, querySubgroups: q.n, keyTile: k.tile, keySubgroups: k.n, chunk };
        // Each config with padded and with unpadded scratch rows, each also with the dq kernel's S and dP in one
        // scratch (the default on small windows, unpadded, and on larger ones at head dims up to 64, padded), where
        // both kernels fit.
        const tight: MmaBackwardConfig = { ...c, tightScratch: true };
        all.push(c);
        // Unpadded ones also with both kernels' f32 scratch rows padded (dqPadS, dkvPadS: the default where free).
        const unpadded: MmaBackwardConfig[] = [tight, { ...tight, dqSharedScratch: true }];
        const twins = [...unpadded, ...unpadded.map((y) => ({ ...y, dqPadS: true, dkvPadS: true }))];
        for (const y of [{ ...c, dqSharedScratch: true }, ...twins]) if (mmaBackwardConfigFits(ctx, bp, y)) all.push(y);
      }
    }
  }
  const estimate = (c: MmaBackwardConfig): CostEstimate => {
    const dq = { path: 'mma' as const, queryTile: c.queryTile, keyChunk: c.chunk, subgroups: c.querySubgroups };
    const dkv = { path: 'mma' as const, queryTile: c.keyTile, keyChunk: c.chunk, subgroups: c.keySubgroups };
    return { cost: 3 * mmaConfigCost(fp, dq) + 4 * mmaConfigCost(fp, dkv), useful: mmaWindowUse(fp, dq), idle: 0, workgroups: mmaWorkgroups(fp, dq) + mmaWorkgroups(fp, dkv) };
  };
  return buildSpace(all, def, estimate, mmaBackwardLabel, options, mmaBackwardTwins(ctx, bp, def));
}

/** Valid, pruned backward configs for a problem on a device, best first. */
export function backwardSpace(p: BackwardTuneProblem & { readonly dtype: GpuDType }, limits: SpaceLimits, options: SpaceOptions = {}): ConfigSpace<FusedBackwardConfig> {
  // With subgroups (`limits.subgroupMinSize`), the lane-split twins (`lanes` 2, 4) are in the space too; their
  // `lanes` travels with the tiles (core's `FusedBackwardArgs.lanes`), so natten-web's `config: 'auto'` runs them as
  // timed. The heuristic default is lane-split where subgroups are at least 16 wide (wgsl's defaultFusedBackwardConfig).
  const helper = backwardHelperProblem(p);
  // Key splits only where every split axis has >= 2 key tiles (the enumerator's rule), re-checked here.
  const all = enumerateFusedBackwardConfigs(helper, limits).filter((c) =>
    fusedBackwardTilesPerAxis(p.spatial, p.params.dilation, c.keyTile).every((n, a) => (c.numSplitsKey[a] as number) <= n),
  );
  const def = defaultFusedBackwardConfig(helper, limits);
  return buildSpace(all, def, (c) => estimateBackward(p, c), backwardLabel, options);
}

