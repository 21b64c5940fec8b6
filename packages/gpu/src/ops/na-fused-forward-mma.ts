/**
 * Tensor-core fused NA forward, generation 3 (`@natten-web/wgsl`'s `generateFusedForwardMma`): several subgroups
 * per workgroup share each staged key chunk, through subgroup matrices (f16 -> f32, 16x16x16). Planning, config
 * choice and dispatch. Needs `chromium-experimental-subgroup-matrix` with an f16 16x16x16 config and a fixed
 * subgroup size of 32, and head dims that are multiples of 16. float16 tensors run as they are; float32 tensors run
 * "split" (each operand as f16 hi + lo after a per-tensor power-of-two scale, three multiplies per product; a small
 * abs-max dispatch first computes the scales).
 */
import {
  checkFusedForward,
  type FusedForwardArgs,
  type FusedProblem,
  NattenArgumentError,
  type NaRank,
  NattenUnsupportedError,
  opName,
  product,
  type TensorLike,
} from '@natten-web/core';
import {
  ABS_MAX_UNROLL,
  ABS_MAX_WORKGROUP,
  FUSED_FORWARD_TILES,
  forwardProblemFields,
  type FusedForwardMmaSpec,
  fusedForwardDispatch,
  fusedForwardMmaSpecProblem,
  fusedForwardMmaWorkgroupBytes,
  generateAbsMax,
  generateFusedForwardMma,
  type GeneratedKernel,
  MMA_FAST_DIVIDE_ROWS,
  MMA_FRAGMENT,
  MMA_KEY_CHUNKS,
  MMA_SUBGROUP_COUNTS,
  MMA_SUBGROUP_SIZE,
  mmaPackedMaxExtent,
  tileShapes,
} from '@natten-web/wgsl';
import type { DispatchCommand, GpuContext, GpuTensor } from '../context.ts';
import { fusedForwardCommand } from './na-fused-forward.ts';
import { subgroupMatrixF16Missing, tensorCoreHeadDimFit } from './na-fused-forward-sgmat.ts';
import { callKey, configMemoKey, memoKernel, memoPerContext, runPlan } from './op.ts';

/** A tensor-core (generation 3) forward configuration. */
export interface MmaForwardConfig {
  readonly path: 'mma';
  /** Query tile per axis; product 16 x subgroups. */
  readonly queryTile: readonly number[];
  /** Keys per staged chunk: 16, 32 or 64. */
  readonly keyChunk: 16 | 32 | 64;
  /** Subgroups per workgroup: 2, 4 or 8. */
  readonly subgroups: 2 | 4 | 8;
  /**
   * S and P scratch rows without bank-conflict padding (less workgroup memory; see `FusedForwardMmaSpec.tightScratch`).
   * The float16 default takes it with 16-key chunks up to `MMA_LARGE_WINDOW` keys, the float32 default in 3-D.
   */
  readonly tightScratch?: boolean;
  /**
   * K and V staged in turn through one chunk-sized area, half the staging's workgroup memory (see
   * `FusedForwardMmaSpec.kvInTurn`): the float32 default up to `MMA_LARGE_WINDOW` keys and in its tune space;
   * float16's in 3-D with padded rows (H200, session 14: 211.6 -> 201.9 us; 2% slower in 2-D), and in its tune
   * space beside every padded 16-key config.
   */
  readonly kvInTurn?: boolean;
  /**
   * P written over the chunk's staged K rows instead of its own array (see `FusedForwardMmaSpec.pOverK`; up to 4
   * subgroups at 16-key chunks). Alone no faster than the defaults on an H200; since session 25 the float16 default
   * takes it with `wideS` where that pair keeps the workgroups per SM (1-D and 2-D at head dim 64).
   */
  readonly pOverK?: boolean;
  /**
   * S rows padded, P rows exact (with `tightScratch`; see `FusedForwardMmaSpec.padS`). The float16 default takes it
   * wherever the padding is free (`paddingIsFree`: as many workgroups per compute unit either way), at head dims below
   * `MMA_F16_WIDE_HEAD_DIM`. H200, same call (session 13): 1-D L=4096 K=127 33.6 -> 31.9 us, 1-D K=2047 causal
   * 1402 -> 1386, 2-D 128x128 K=7 116.0 -> 112.7, K=13 dilated 169.6 -> 166.2, 256x256 K=15 1402 -> 1375; 3-D (where
   * it costs a workgroup per SM) 222.5 -> 233.7.
   */
  readonly padS?: boolean;
  /**
   * S rows of the key chunk plus 8 floats, in either layout (see `FusedForwardMmaSpec.wideS`; not with `padS`). The
   * float16 default takes it on 16-key chunks wherever it is free (`paddingIsFree` against the rows without `padS`),
   * before `padS`, and else (head dims above `MMA_F16_NARROW_HEAD_DIM`) together with `pOverK`, whose freed P array
   * pays for the wider rows. H200, session 25 (`mma-device.mjs --mode probe --probes s24`, the default's text with
   * S rows of 24 floats, same call): 3-D 16x32x32 K=3x7x7 172.4 -> 168.7 us, the one free case of the standard
   * forwards; where it cost a workgroup per SM it lost 5-25% (1-D L=4096 K=127 26.9 -> 33.6); with P over K 3-8%
   * faster on the other five (`--mode speed --pk true`).
   */
  readonly wideS?: boolean;
  /**
   * K and V loaded 16 bytes at a time (float16; see `FusedForwardMmaSpec.wideLoads`). The float16 default takes it
   * in 1-D and on windows over `MMA_LARGE_WINDOW` keys, where it timed faster (not in 2-D and 3-D small windows,
   * where it timed 2-10% slower).
   */
  readonly wideLoads?: boolean;
  /**
   * Dilation and stride 1 compiled into the kernel (`FusedForwardMmaSpec.unitSteps`) where the problem has them:
   * `true` or `false` decides; absent = the default rule (windows up to `MMA_LARGE_WINDOW` keys: float16 2-D K=7
   * 1.12x faster on an H200, the FLUX-like forward 1.09x slower; the float32 split 1.03-1.08x faster).
   */
  readonly unitSteps?: boolean;
}

/**
 * A forward config's layout and loading choices as short words, in one order, for labels (the autotuner's, the
 * benchmark's): `tight`, `padS`, `wideS`, `inturn`, `pk`, `wide`, `unit` / `no-unit`, each where set.
 */
export function mmaForwardFlags(c: MmaForwardConfig): string[] {
  return flagWords([
    [c.tightScratch, 'tight'],
    [c.padS, 'padS'],
    [c.wideS, 'wideS'],
    [c.kvInTurn, 'inturn'],
    [c.pOverK, 'pk'],
    [c.wideLoads, 'wide'],
    [c.unitSteps === true, 'unit'],
    [c.unitSteps === false, 'no-unit'],
  ]);
}

/** The words of the flags that are set, in the order given (the config flag lists for labels). */
export function flagWords(flags: readonly (readonly [boolean | undefined, string])[]): string[] {
  return flags.filter(([on]) => on === true).map(([, word]) => word);
}

/**
 * The cheap half of both default routes (forward and backward): a call given no tiles or lanes, in `dtypes`
 * (float16 for the backward; float16 and float32 for the forward), on an adapter that can run the mma kernels.
 * Everything else takes the plain path without further checks.
 */
export function mayRouteToMma(
  ctx: GpuContext,
  args: { readonly query: TensorLike; readonly queryTileSize?: unknown; readonly keyTileSize?: unknown; readonly lanes?: unknown },
  dtypes: readonly string[] = ['float16'],
): boolean {
  if (args.queryTileSize !== undefined || args.keyTileSize !== undefined || args.lanes !== undefined) return false;
  return dtypes.includes(args.query.dtype) && !('why' in mmaAvailability(ctx));
}

/** Whether this context can run the mma path, or why not. */
export function mmaAvailability(ctx: GpuContext): { ok: true } | { why: string } {
  const missing = subgroupMatrixF16Missing(ctx);
  if (missing !== undefined) return { why: missing };
  const { subgroupMinSize: lo, subgroupMaxSize: hi } = ctx.adapterInfo;
  if (lo !== MMA_SUBGROUP_SIZE || hi !== MMA_SUBGROUP_SIZE) return { why: `the subgroup size must be fixed at ${MMA_SUBGROUP_SIZE} (adapter reports ${lo}..${hi})` };
  return { ok: true };
}

/** Why the mma path cannot run this problem (dtype, head dims), or undefined. */
export function mmaProblemFit(problem: FusedProblem): string | undefined {
  if (problem.dtype !== 'float16' && problem.dtype !== 'float32') return `the tensor-core (mma) forward needs float16 or float32 tensors, not ${problem.dtype}`;
  return tensorCoreHeadDimFit(problem);
}

/** Whether every axis has dilation 1 and stride 1 (the mma kernels' `unitSteps` specialisation). */
export function unitSteps(params: { readonly dilation: readonly number[]; readonly stride: readonly number[] }): boolean {
  return params.dilation.every((d) => d === 1) && params.stride.every((s) => s === 1);
}

/** Whether a config that leaves `unitSteps` unset compiles unit steps in (where the problem has them): up to `MMA_LARGE_WINDOW` keys. */
function unitStepsByDefault(problem: FusedProblem): boolean {
  return windowKeys(problem) <= MMA_LARGE_WINDOW;
}

function mmaSpec(problem: FusedProblem, config: MmaForwardConfig): FusedForwardMmaSpec {
  const { rank, kernelSize, causal, dim, dimV } = forwardProblemFields(problem);
  return {
    rank,
    kernelSize,
    causal,
    dim,
    dimV,
    queryTile: [...config.queryTile],
    keyChunk: config.keyChunk,
    subgroups: config.subgroups,
    ...(config.tightScratch === true ? { tightScratch: true } : {}),
    ...(config.kvInTurn === true ? { kvInTurn: true } : {}),
    ...(config.pOverK === true ? { pOverK: true } : {}),
    ...(config.padS === true ? { padS: true } : {}),
    ...(config.wideS === true ? { wideS: true } : {}),
    ...(config.wideLoads === true ? { wideLoads: true } : {}),
    // Both never slower on an H200 (session 13, same call): the first fetch before the Q gather 0.5-1.3% faster on
    // every f16 problem; float-reciprocal box decoding 3-D f16 222.4 -> 213.0 us, float32 2-D K=7 211.6 -> 207.4,
    // 3-D 363.1 -> 347.7 (both: 212.0, 206.6, 344.6).
    earlyFetch: true,
    ...(keyBoxRowsBound(problem, config.queryTile) < MMA_FAST_DIVIDE_ROWS ? { fastDivide: true } : {}),
    // A Q gather pass's loads all issued before its stores: float16 in 1-D and 3-D, where it timed faster (H200,
    // session 14, same calls: 1-D L=4096 K=127 31.3 -> 30.4 us, 1-D K=2047 causal 1316 -> 1305, 3-D 202 -> 193);
    // in 2-D it timed 3-8% slower (K=7 110.5 -> 114.3, K=13 dilated 164.4 -> 177.6, 256x256 1366 -> 1467 us).
    ...(problem.dtype !== 'float32' && problem.rank !== 2 ? { batchedQGather: true } : {}),
    // Dilation and stride 1 compiled in where the problem has them, so the window math's divisions fold away (H200,
    // session 15, same call: 1-D L=4096 K=127 29.4 -> 27.8 us, K=2047 causal 1294 -> 1278, 2-D 128x128 K=7 106.0 ->
    // 94.4, 256x256 K=15 1332 -> 1264, 3-D 188.9 -> 186.2), up to MMA_LARGE_WINDOW keys: the FLUX-like forward (6,400
    // keys, 32-key chunks, 8 subgroups at head dim 128) ran slower with it (39.8 -> 43.3 ms). The float32 split too
    // (session 16, same call: 1-D L=4096 K=127 58.4 -> 56.5 us, 2-D 128x128 K=7 203.6 -> 190.7, 3-D 343.3 -> 318.7).
    ...(unitSteps(problem.params) && (config.unitSteps ?? unitStepsByDefault(problem)) ? { unitSteps: true } : {}),
    hasLse: problem.hasLse,
    ...(problem.hasRpb ? { hasRpb: true } : {}),
    ...(problem.dtype === 'float32' ? { split: true } : {}),
    ...(packedCoordsFit(problem) ? { packedCoords: true } : {}),
  };
}

/**
 * An upper bound on a query tile's union key box rows: per axis the tile plus the window (plus stride - 1: strided
 * window starts move in steps of the stride), at most the group extent.
 */
export function keyBoxRowsBound(problem: Pick<FusedProblem, 'spatial' | 'params'>, tile: readonly number[]): number {
  const ext = groupExtents(problem);
  const { kernelSize, stride } = problem.params;
  return tile.reduce((v, t, a) => v * Math.min(t + (kernelSize[a] as number) - 1 + (stride[a] as number) - 1, ext[a] as number), 1);
}

/**
 * Whether the mma kernels stage packed key coordinates for a problem (`FusedForwardMmaSpec.packedCoords`): ranks 2
 * and 3 without rpb whose dilation-group extents all fit the packed fields (`mmaPackedMaxExtent`).
 */
export function packedCoordsFit(problem: Pick<FusedProblem, 'rank' | 'spatial' | 'params' | 'hasRpb'>): boolean {
  if (problem.rank < 2 || problem.hasRpb) return false;
  const max = mmaPackedMaxExtent(problem.rank);
  return groupExtents(problem).every((n) => n <= max);
}

/** Extent of a dilation group per axis (the longest group: ceil(L / dilation)). */
function groupExtents(problem: Pick<FusedProblem, 'spatial' | 'params'>): number[] {
  return problem.spatial.map((L, a) => Math.ceil(L / (problem.params.dilation[a] as number)));
}

/**
 * Chunk counts of a config: per query tile, the chunks of its union key box (`boxChunks`); per subgroup (16
 * consecutive tile rows, last axis fastest), the chunks its rows' windows span (`subChunks`; the kernel skips the
 * others); the tile count and the real (group) query count they are spread over.
 */
function mmaChunkCounts(problem: FusedProblem, config: MmaForwardConfig): { boxChunks: number; subChunks: number; tiles: number; real: number } {
  const ext = groupExtents(problem);
  const r = problem.rank;
  const bw: number[] = [];
  const sub: number[] = [];
  let rest = MMA_FRAGMENT;
  let real = 1;
  let tiles = 1;
  for (let a = r - 1; a >= 0; a--) {
    const t = config.queryTile[a] as number;
    const n = ext[a] as number;
    const K = problem.params.kernelSize[a] as number;
    bw[a] = Math.min(t + K - 1, n);
    sub[a] = Math.min(t, rest);
    rest = Math.max(1, rest / t);
    real *= n;
    tiles *= Math.ceil(n / t);
  }
  let box = 1;
  let span = 1;
  let stride = 1;
  for (let a = r - 1; a >= 0; a--) {
    const K = problem.params.kernelSize[a] as number;
    span += (Math.min((sub[a] as number) + K - 1, bw[a] as number) - 1) * stride;
    stride *= bw[a] as number;
    box *= bw[a] as number;
  }
  const boxChunks = Math.ceil(box / config.keyChunk);
  return { boxChunks, subChunks: Math.min(boxChunks, Math.ceil(span / config.keyChunk) + 1), tiles, real };
}

/**
 * Relative cost per real query: per tile, the chunks of its union key box (staging and barriers, paid by every
 * subgroup) plus, per subgroup, the chunks its rows' windows span (matrix work and softmax).
 */
export function mmaConfigCost(problem: FusedProblem, config: MmaForwardConfig): number {
  const { boxChunks, subChunks, tiles, real } = mmaChunkCounts(problem, config);
  return (tiles * config.subgroups * (0.35 * boxChunks + subChunks) * config.keyChunk) / real;
}

/**
 * Fraction of the keys a subgroup computes (the chunks its 16 rows' windows span) that lie in a row's window:
 * prod(K_a) / (subChunks * keyChunk). The mma path multiplies and masks every key of those chunks.
 */
export function mmaWindowUse(problem: FusedProblem, config: MmaForwardConfig): number {
  return windowKeys(problem) / (mmaChunkCounts(problem, config).subChunks * config.keyChunk);
}

/** Workgroups of a config's dispatch (batch x heads x dilation groups x tiles). */
export function mmaWorkgroups(problem: FusedProblem, config: Pick<MmaForwardConfig, 'queryTile'>): number {
  let w = problem.batch * problem.heads;
  problem.spatial.forEach((L, a) => {
    const d = problem.params.dilation[a] as number;
    w *= d * Math.ceil(Math.ceil(L / d) / (config.queryTile[a] as number));
  });
  return w;
}

/** Whether a config can run a problem on this device (its spec is consistent and its workgroup memory fits). */
export function mmaConfigFits(ctx: GpuContext, problem: FusedProblem, config: MmaForwardConfig): boolean {
  if (config.subgroups * MMA_SUBGROUP_SIZE > ctx.limits.maxComputeInvocationsPerWorkgroup) return false;
  const s = mmaSpec(problem, config);
  return fusedForwardMmaSpecProblem(s) === undefined && fusedForwardMmaWorkgroupBytes(s) <= ctx.limits.maxComputeWorkgroupStorageSize;
}

/**
 * Every mma config that fits this device, for a problem (empty when the path cannot run); 16-key configs also with
 * unpadded scratch rows (`tightScratch`), each right after its padded twin.
 */
export function enumerateMmaConfigs(ctx: GpuContext, problem: FusedProblem): MmaForwardConfig[] {
  if ('why' in mmaAvailability(ctx) || mmaProblemFit(problem) !== undefined) return [];
  const ext = groupExtents(problem);
  const all: MmaForwardConfig[] = [];
  for (const subgroups of MMA_SUBGROUP_COUNTS) {
    for (const tile of tileShapes(problem.rank, MMA_FRAGMENT * subgroups)) {
      for (const keyChunk of MMA_KEY_CHUNKS) {
        const config: MmaForwardConfig = { path: 'mma', queryTile: tile, keyChunk, subgroups };
        // float16: unpadded ones also with S padded (padS, the default where free).
        const tight: MmaForwardConfig[] = keyChunk === 16 ? [{ ...config, tightScratch: true }, ...(problem.dtype === 'float32' ? [] : [{ ...config, tightScratch: true, padS: true }])] : [];
        const layouts: MmaForwardConfig[] = [config, ...tight];
        // Each also with K and V in turn: float32's default; float16's in 3-D (16-key chunks; unpadded rows and S
        // padding stay K and V side by side there, as the default).
        const twins =
          problem.dtype === 'float32'
            ? layouts.flatMap((c) => [c, { ...c, kvInTurn: true }])
            : keyChunk === 16
              ? layouts.flatMap((c) => (c.tightScratch === true ? [c] : [c, { ...c, kvInTurn: true }]))
              : layouts;
        for (const c of twins) if (mmaConfigFits(ctx, problem, c)) all.push(c);
      }
    }
  }
  // Factors beyond the next power of two of the group extent only add padded queries: such tiles are left out,
  // unless every tile has one (a group smaller than 32 queries), where they are all the path has.
  const tight = all.filter((c) => !c.queryTile.some((t, a) => t > 2 ** Math.ceil(Math.log2(Math.max(1, ext[a] as number)))));
  return tight.length > 0 ? tight : all;
}

/** Below this many workgroups with 8 subgroups, the 32-key default takes 4 (more workgroups; 1-D L=4096 K=127 on an H200). */
export const MMA_MIN_WORKGROUPS = 512;

/**
 * Below this many workgroups with 4 subgroups, the float32 default takes 2 (1-D L=4096 K=127, 512 workgroups with
 * 4: 68.8 us with 4 subgroups and K/V in turn, 60.3 with 2, on an H200).
 */
export const MMA_SPLIT_MIN_WORKGROUPS = 1024;

/**
 * Below this many workgroups with 4 subgroups, the float16 default takes 2 on windows of at most `MMA_LARGE_WINDOW`
 * keys (more workgroups than compute units; H200, session 18, autotuner runs: 2-D 56x56 K=7 4 heads head dim 32,
 * 196 workgroups with 4, 21.5 us -> 17.7-17.9 with 2; 2-D 28x28 K=7 8 heads, 112 workgroups, 22.0 -> 17.1-17.9; at
 * 256 and 768 workgroups the two tied within 3%). The benchmark problems all have 512 or more.
 */
export const MMA_F16_MIN_WORKGROUPS = 256;

/**
 * Head dims (of queries and values) up to this: the float16 forward takes 2 subgroups on windows of at most
 * `MMA_LARGE_WINDOW` keys, at any grid size (a chunk step is half the work of head dim 64, and 4 subgroups wait on
 * each other's barriers more than they share). H200, session 19, autotuner runs, the default first: 2-D 128x128 K=7
 * 8 heads head dim 32 (2048 workgroups with 4) 80.3 -> 67.5 us; 2 batches 96x96 K=7 dilation 2 6 heads 80.7 ->
 * 65.3; 64x64 8 heads 25.0 -> 23.6; 32x32 K=13 16 heads 28.7 -> 26.6; 1-D L=4096 K=127 tied (23.8 against 23.9-24.8).
 */
export const MMA_F16_NARROW_HEAD_DIM = 32;

/**
 * Head dims from this up: the float16 forward takes 2 subgroups on windows of at most `MMA_LARGE_WINDOW` keys, with
 * S unpadded (`padS` is free by workgroup memory there, but not by registers). H200, session 19, autotuner runs, the
 * default first, head dim 128 (against 4 subgroups with S padded): 2-D 64x64 K=9 8 heads 75.7 -> 68.8 us, 4 heads
 * 45.2 -> 35.2-36.9, 128x128 K=13 4 heads 191.9 -> 180.7, 1-D L=4096 K=127 4 heads 54.1 -> 35.0; one problem lost
 * (64x64 K=9 6 heads: 47.8-51.1 -> 57.5-58.8, in two runs); there the autotuner finds the 4-subgroup config.
 */
export const MMA_F16_WIDE_HEAD_DIM = 128;

/**
 * Windows of more than this many keys (FLUX-like: 6400) are "large": the float16 forward keeps 32-key chunks there,
 * and the float32 forward and both backward kernels take 8 subgroups (H200: f16 FLUX-like forward 45.3 ms with
 * 32-key chunks vs 55.2 with 16; float32 FLUX-like forward 139 -> 95 ms; f16 backward 271 -> 203 ms).
 */
export const MMA_LARGE_WINDOW = 4096;

/**
 * Heuristic default (each the query tile shape with the lowest `mmaConfigCost`):
 * - float16, windows of at most `MMA_LARGE_WINDOW` keys: 16-key chunks with unpadded scratch rows (`tightScratch`) and
 *   4 subgroups, 2 in 3-D (or the most that fit below that), 2 where 4 give fewer than `MMA_F16_MIN_WORKGROUPS`
 *   workgroups or at head dims up to `MMA_F16_NARROW_HEAD_DIM` or from `MMA_F16_WIDE_HEAD_DIM`. Timed on an H200 (same
 *   run) against the previous default (16-key chunks, padded rows, 8 subgroups): 1-D L=4096 K=127 38.5 -> 33.4 us, 1-D
 *   K=2047 causal 1498 -> 1385 us, 2-D 128x128 K=7 146 -> 121 us, K=13 dilated 211 -> 182 us, 2-D 256x256 K=15 1809 ->
 *   1525 us, 3-D 16x32x32 K=3x7x7 338 -> 234 us (4 subgroups there: 268 us; 2 subgroups were also faster than 4 on 3-D
 *   with padded rows, 243 vs 305 us). 16-key chunks had beaten 32-key chunks on all six (2-D 256x256 K=15 2265 -> 1814
 *   us). In 3-D, K and V in turn through one staging area with padded rows (6,480 bytes, 7 workgroups per SM where the
 *   unpadded side-by-side default's 7,760 fit 6): 3-D 16x32x32 K=3x7x7 211.6 -> 201.9 us, and 211.1 -> 202.3 in a
 *   second call (H200, session 14; in turn with unpadded rows 206.5 and 208.8; in 2-D in turn was 2% slower). Larger
 *   windows: 32-key chunks with 8 subgroups, 4 when 8 would give fewer than `MMA_MIN_WORKGROUPS` workgroups.
 * - float32 (split), windows of at most `MMA_LARGE_WINDOW` keys: 16-key chunks with K and V staged in turn
 *   (`kvInTurn`), 4 subgroups with padded rows; in 3-D 2 subgroups with unpadded rows; 2 where 4 give fewer than
 *   `MMA_SPLIT_MIN_WORKGROUPS` workgroups. H200, two calls, same run against session 8's default (4 subgroups,
 *   padded, K and V side by side): 1-D K=2047 causal 2705 -> 2301 us, 1-D L=4096 K=127 62.4 -> 60.3 us (2
 *   subgroups), 2-D 128x128 K=7 251 -> 213 us, K=13 dilated 380 -> 315 us, 2-D 256x256 K=15 3227 -> 2567 us, 3-D
 *   478 -> 368 us (the split stages hi and lo halves, so half the staging is 9 KiB less workgroup memory). Earlier:
 *   16-key chunks 1.23-1.36x faster than 32-key on five problems, 8 subgroups 1.1-1.4x slower on all six with head
 *   dim 64; 2-D K=31 / K=45 (961 / 2025 keys) 1074 -> 896 us and 1876 -> 1563 us with K/V in turn. Larger
 *   windows: 8 subgroups, K and V side by side (FLUX-like float32 85.9 ms, 86.7 in turn).
 */
export function defaultMmaConfig(ctx: GpuContext, problem: FusedProblem): MmaForwardConfig | undefined {
  return memoPerContext(ctx, 'mma-forward-config', problem, () => {
    const chosen = chooseMmaConfig(ctx, problem);
    if (!chosen || problem.dtype === 'float32') return chosen;
    // float16: 16-byte K/V loads in 1-D, 3-D and on large windows (H200, session 13: 1-D L=4096 K=127 31.3 -> 30.5
    // us, K=2047 causal 1374 -> 1299, FLUX-like 41.2 -> 39.4 ms; 2-D K=7 111.5 -> 121.6 slower; 3-D then 220.5 ->
    // 224.1, but session 17, same call, with the kernel as it is now: 183.0 -> 170.9 us).
    const wide = problem.rank !== 2 || windowKeys(problem) > MMA_LARGE_WINDOW;
    const c: MmaForwardConfig = wide && mmaConfigFits(ctx, problem, { ...chosen, wideLoads: true }) ? { ...chosen, wideLoads: true } : chosen;
    const headDim = Math.max(problem.dim, problem.dimV);
    if (headDim >= MMA_F16_WIDE_HEAD_DIM) return c;
    const bytes = (x: MmaForwardConfig): number => fusedForwardMmaWorkgroupBytes(mmaSpec(problem, x));
    const free = (x: MmaForwardConfig): boolean => mmaConfigFits(ctx, problem, x) && paddingIsFree(ctx, bytes(c), bytes(x));
    // S rows of 24 floats where free (16-key chunks, either layout); else, above MMA_F16_NARROW_HEAD_DIM, with P
    // over the staged K rows where the memory that frees makes them free (H200, session 25, same call: 1-D L=4096
    // K=127 26.9 -> 25.7 us, 1-D K=2047 causal 1261 -> 1161, 2-D 128x128 K=7 94.2 -> 91.6, K=13 dilated 158.7 ->
    // 153.7, 256x256 K=15 1250 -> 1193; P over K alone 0-1% faster); else S padded by 4 where free.
    if (c.keyChunk === 16) {
      const wideS: MmaForwardConfig = { ...c, wideS: true };
      if (free(wideS)) return wideS;
      const overK: MmaForwardConfig = { ...c, pOverK: true, wideS: true };
      if (headDim > MMA_F16_NARROW_HEAD_DIM && c.kvInTurn !== true && free(overK)) return overK;
    }
    if (c.tightScratch !== true) return c;
    const padded: MmaForwardConfig = { ...c, padS: true };
    return free(padded) ? padded : c;
  });
}

/** `c` with boolean flag `key` flipped: set to true where it was not, removed where it was (configs hold no `false`). */
export function flipFlag<C extends object>(c: C, key: keyof C & string): C {
  const { [key]: was, ...rest } = c as Record<string, unknown>;
  return (was === true ? rest : { ...rest, [key]: true }) as C;
}

/**
 * A forward config's codegen twins: the same tiles, chunk and layout with one compile-time choice flipped, where
 * they fit: 16-byte K/V loads (float16), dilation and stride 1 compiled in (where the problem has them; the
 * twin states the choice its config left to the default rule), and S rows of 24 floats (float16, 16-key chunks). They do the same work, so the cost model cannot
 * rank them; on an H200 such flips moved a kernel by up to 10% either way, differently per problem (the compiler
 * schedules each text anew; session 17: 16-byte loads 1.07x faster in 3-D, 1.09x slower in 2-D). The autotuner
 * times the default's twins right after it.
 */
export function mmaForwardTwins(ctx: GpuContext, problem: FusedProblem, config: MmaForwardConfig): MmaForwardConfig[] {
  const twins: MmaForwardConfig[] = [];
  if (problem.dtype !== 'float32') twins.push(flipFlag(config, 'wideLoads'));
  if (unitSteps(problem.params)) twins.push({ ...config, unitSteps: !(config.unitSteps ?? unitStepsByDefault(problem)) });
  // S rows of 24 floats flipped (float16, 16-key chunks): the default takes them only where they are free of
  // residency, and a grid of less than a wave can gain from them anyway.
  if (problem.dtype !== 'float32' && config.keyChunk === 16) {
    const { padS: _p, wideS, ...rest } = config;
    twins.push(wideS === true ? rest : { ...rest, wideS: true });
  }
  return twins.filter((c) => mmaConfigFits(ctx, problem, c));
}

/**
 * Workgroups of `bytes` workgroup memory that one compute unit holds at once, counting memory only: the device's
 * per-workgroup limit divided by `bytes`. On an H200 (Dawn/Vulkan, 48 KiB per workgroup) a kernel that only sits
 * resident showed exactly that for every size from 4 to 48 KiB and 64 to 256 invocations (session 13,
 * `mma-device.mjs --mode occupancy`): the driver gives each SM 48 KiB of shared memory for these kernels.
 */
export function residentWorkgroups(ctx: GpuContext, bytes: number): number {
  return Math.floor(ctx.limits.maxComputeWorkgroupStorageSize / Math.max(1, bytes));
}

/** Whether growing a kernel's workgroup memory from `bytes` to `padded` leaves `residentWorkgroups` unchanged. */
export function paddingIsFree(ctx: GpuContext, bytes: number, padded: number): boolean {
  return residentWorkgroups(ctx, padded) === residentWorkgroups(ctx, bytes);
}

function chooseMmaConfig(ctx: GpuContext, problem: FusedProblem): MmaForwardConfig | undefined {
  const configs = enumerateMmaConfigs(ctx, problem);
  const large = windowKeys(problem) > MMA_LARGE_WINDOW;
  const f16 = problem.dtype !== 'float32';
  // float32 up to MMA_LARGE_WINDOW keys: K and V in turn; in 3-D unpadded rows and 2 subgroups. float16: unpadded
  // rows, but in 3-D K and V in turn with padded rows (and 2 subgroups).
  const split = !f16 && !large;
  const f16Turn = f16 && problem.rank === 3;
  const inTurn = split || f16Turn;
  const tight = (f16 && !f16Turn) || (split && problem.rank === 3);
  const pick16 = (cap: number): MmaForwardConfig | undefined => {
    const c16 = configs.filter((c) => c.keyChunk === 16 && c.subgroups <= cap && (c.tightScratch === true) === tight && c.padS !== true && (c.kvInTurn === true) === inTurn);
    return c16.length > 0 ? cheapest(problem, c16, Math.max(...c16.map((c) => c.subgroups))) : undefined;
  };
  if (!f16 || !large) {
    const headDim = Math.max(problem.dim, problem.dimV);
    const twoByHeadDim = f16 && (headDim <= MMA_F16_NARROW_HEAD_DIM || headDim >= MMA_F16_WIDE_HEAD_DIM);
    const pick = pick16((problem.rank === 3 && (f16 || split)) || twoByHeadDim ? 2 : large ? 8 : 4);
    if (pick && pick.subgroups === 4 && mmaWorkgroups(problem, pick) < (split ? MMA_SPLIT_MIN_WORKGROUPS : MMA_F16_MIN_WORKGROUPS)) return pick16(2) ?? pick;
    if (pick) return pick;
  }
  const all = configs.filter((c) => c.keyChunk === 32);
  if (all.length === 0) return undefined;
  const nsg = Math.max(...all.map((c) => c.subgroups));
  const top = cheapest(problem, all, nsg);
  if (top && nsg === 8 && mmaWorkgroups(problem, top) < MMA_MIN_WORKGROUPS) return cheapest(problem, all, 4) ?? top;
  return top;
}

/** Keys in one query's window (the product of the kernel size). */
export function windowKeys(problem: Pick<FusedProblem, 'params'>): number {
  return product(problem.params.kernelSize);
}

/** The config of `nsg` subgroups with the lowest `mmaConfigCost`, or undefined. */
function cheapest(problem: FusedProblem, configs: readonly MmaForwardConfig[], nsg: number): MmaForwardConfig | undefined {
  let pick: MmaForwardConfig | undefined;
  let score = Number.POSITIVE_INFINITY;
  for (const c of configs) {
    if (c.subgroups !== nsg) continue;
    const x = mmaConfigCost(problem, c);
    if (x < score) {
      pick = c;
      score = x;
    }
  }
  return pick;
}

/**
 * Window use (`mmaWindowUse`) below which the default forward keeps the plain path. Measured on an H200 (f16, same
 * run as the plain default, with register prefetch): the lowest window use of the benchmark problems, 0.31 (2-D
 * 128x128 K=7), ran 1.5x faster than the plain path; below it (small windows such as 2-D K=3) is not measured, so
 * those stay on the plain path.
 */
export const MMA_MIN_WINDOW_USE = 0.25;

/**
 * The mma config the default forward (`fusedForward` without tiles) runs, or undefined for the plain path: where
 * the path has a default config, the problem has head dims of at most 128 (the rest is not yet measured on a
 * device), and its config's window use is at least
 * `MMA_MIN_WINDOW_USE`. Measured on an H200 against the plain default (same run): float16 2.3x (2-D K=7, window use
 * 0.38) to 10.8x (FLUX-like) faster on all seven benchmark problems; float32 (split) 1.1x (2-D K=7) to 3.0x (1-D
 * K=2047 causal) on all seven, FLUX-like at 2 subgroups 2.7x (docs/performance.md). With rpb (session 19, float16):
 * 1.5x (2-D 56x56 K=7 head dim 32, 38.9 against 58.5 us) to 4.9x (3-D 16x32x32 K=3x7x7, 201 against 992 us); with
 * strides 2.5x (2-D 128x128 K=7 stride 2) to 6.6x (1-D L=8192 K=511 stride 64 causal); with both (session 20)
 * float16 2.1x (2-D 128x128 K=7 stride 2, 124.0 against 254.5 us) and 3.9x (3-D 16x32x32 K=3x7x7 stride 1x2x2,
 * 209.7 against 808.1), float32 1.6x and 2.7x.
 */
export function defaultForwardMma(ctx: GpuContext, problem: FusedProblem): MmaForwardConfig | undefined {
  // Measured up to head dim 128; beyond it the fragments held per subgroup (q and O) grow past what was timed.
  if (problem.dim > 128 || problem.dimV > 128) return undefined;
  const config = defaultMmaConfig(ctx, problem);
  if (!config) return undefined;
  return mmaWindowUse(problem, config) >= MMA_MIN_WINDOW_USE ? config : undefined;
}

/**
 * Validate a call for the mma forward and pick its config (no GPU work): the problem, the config (the given one or
 * the device's default) and its kernel spec; throws naming the rule where it cannot run (tensors may be host
 * tensors).
 */
export function checkFusedForwardMma(
  ctx: GpuContext,
  rank: NaRank,
  args: FusedForwardArgs<TensorLike>,
  config?: MmaForwardConfig,
): { problem: FusedProblem; config: MmaForwardConfig; spec: FusedForwardMmaSpec } {
  return memoPerContext(ctx, 'mma-forward-check', callKey(rank, args, config), () => {
    const op = opName(rank, 'forward');
    const problem = checkFusedForward(op, rank, { ...args, queryTileSize: undefined, keyTileSize: undefined, lanes: undefined }, FUSED_FORWARD_TILES);
    const avail = mmaAvailability(ctx);
    if ('why' in avail) throw new NattenUnsupportedError(`${op}: tensor-core (mma) path unavailable: ${avail.why}`);
    const fit = mmaProblemFit(problem);
    if (fit !== undefined) throw new NattenArgumentError(`${op}: tensor-core (mma) path cannot run this problem: ${fit}`);
    const cfg = config ?? defaultMmaConfig(ctx, problem);
    if (!cfg) throw new NattenUnsupportedError(`${op}: no tensor-core (mma) config fits this device's limits (workgroup memory ${ctx.limits.maxComputeWorkgroupStorageSize} bytes)`);
    const s = mmaSpec(problem, cfg);
    const why = fusedForwardMmaSpecProblem(s);
    if (why !== undefined) throw new NattenArgumentError(`${op}: tensor-core (mma) config cannot run: ${why}`);
    const bytes = fusedForwardMmaWorkgroupBytes(s);
    if (bytes > ctx.limits.maxComputeWorkgroupStorageSize) {
      throw new NattenArgumentError(`${op}: tensor-core (mma) config needs ${bytes} bytes of workgroup memory, over this device's ${ctx.limits.maxComputeWorkgroupStorageSize}`);
    }
    return { problem, config: cfg, spec: s };
  });
}

/**
 * Kernel and dispatches for one call on the mma path (validated; no GPU work): `commands` is the forward alone for
 * float16, and an abs-max dispatch (the split's per-tensor scales, into a pooled scratch) then the forward for
 * float32; `release()` returns that scratch to the pool once the commands were submitted.
 */
export function planFusedForwardMma(
  ctx: GpuContext,
  rank: NaRank,
  args: FusedForwardArgs<GpuTensor>,
  config?: MmaForwardConfig,
  defaultKey?: string,
): { kernel: GeneratedKernel; commands: DispatchCommand[]; release: () => void; config: MmaForwardConfig; problem: FusedProblem } {
  // What depends on the call's shapes alone (checks, config, kernel, grid and uniforms) is worked out once per signature.
  const [memoName, memoKey] = configMemoKey('mma-forward-plan', rank, args, config, defaultKey);
  const { problem, config: cfg, spec: s, kernel, dispatch } = memoPerContext(ctx, memoName, memoKey, () => {
    const checked = checkFusedForwardMma(ctx, rank, args as FusedForwardArgs<TensorLike>, config);
    return { ...checked, kernel: memoKernel('fused-forward-mma', checked.spec, generateFusedForwardMma), dispatch: fusedForwardDispatch(checked.problem, checked.config.queryTile) };
  });
  const command = fusedForwardCommand(ctx, kernel, problem, args, dispatch);
  if (s.split !== true) return { kernel, commands: [command], release: () => {}, config: cfg, problem };
  const scales = ctx.tempTensor([4], 'float32', { label: 'mma forward split scales' });
  const commands = [absMaxCommand(ctx, [args.query, args.key, args.value], scales), { ...command, buffers: [...command.buffers, scales.buffer] }];
  return { kernel, commands, release: () => ctx.releaseTensor(scales), config: cfg, problem };
}

/**
 * Vec4s each abs-max workgroup reads at least (one loop step of each invocation; grid-stride beyond), and the most
 * workgroups per tensor. With 4096 (16 dependent loads per invocation, 96 workgroups on 1-D L=4096 K=127) the
 * dispatch took about 9 of the float32 forward's 62 us there.
 */
const ABS_MAX_UNITS_PER_WORKGROUP = ABS_MAX_WORKGROUP * ABS_MAX_UNROLL;
const ABS_MAX_MAX_WORKGROUPS = 1024;

/**
 * The abs-max dispatch of the split: max |x| of each of one to five tensors (query, key, value; the backwards' dO
 * and O too) into `scales[0..4]` (cleared before its pass); with fewer tensors only their rows of the grid run.
 * `scalar` reads single floats, for tensors whose length need not be a multiple of four (the BMM ops' attention).
 */
export function absMaxCommand(ctx: GpuContext, tensors: readonly [GpuTensor, ...GpuTensor[]], scales: GpuTensor, options: { readonly scalar?: boolean } = {}): DispatchCommand {
  const count = tensors.length > 3 ? 5 : 3;
  const scalar = options.scalar === true;
  const kernel = memoKernel(`abs-max${count}${scalar ? '-scalar' : ''}`, { tensors: count, scalar }, generateAbsMax);
  // One count uniform per tensor slot (vec4s, or floats with `scalar`), in the kernel's order; slots past the given
  // tensors bind the first and count 0 (their grid rows do not run).
  const n = kernel.uniforms.map((_, i) => (tensors[i]?.numel ?? 0) / (scalar ? 1 : 4));
  const x = Math.min(ABS_MAX_MAX_WORKGROUPS, ctx.limits.maxComputeWorkgroupsPerDimension, Math.max(1, Math.ceil(Math.max(...n) / ABS_MAX_UNITS_PER_WORKGROUP)));
  return {
    kernel,
    buffers: [...kernel.uniforms.map((_, i) => (tensors[i] ?? tensors[0]).buffer), scales.buffer],
    uniforms: Object.fromEntries(kernel.uniforms.map((u, i) => [u.name, n[i] as number])),
    workgroups: [x, tensors.length, 1],
    clear: [scales.buffer],
  };
}

/** Run the mma forward (throws when the path is unavailable for this device or problem). */
export async function fusedForwardMma(ctx: GpuContext, rank: NaRank, args: FusedForwardArgs<GpuTensor>, config?: MmaForwardConfig, defaultKey?: string): Promise<void> {
  await runPlan(ctx, planFusedForwardMma(ctx, rank, args, config, defaultKey), opName(rank, 'forward'));
}
