/**
 * Fused neighborhood-attention forward (`na{1,2,3}d_forward`, spec §3.1) as generated WGSL.
 *
 * Design (kernels.md §1, "non-matrix path"):
 * - One workgroup = (batch b, head h, dilation group g, one multi-D query tile over group coordinates).
 *   Workgroups are linearized tile-fastest (then group, head, batch) and folded into a 2-D dispatch.
 * - One invocation = one query; its q row lives in f32 registers, pre-multiplied by scale*log2(e).
 * - The workgroup walks the union key box of its queries, `[start(q_first), end(q_last))` per axis (both
 *   bounds are monotone in the query, also with stride), row-major, in chunks of KEY_CHUNK keys. Each chunk's
 *   K and V rows and key group coordinates are staged in workgroup memory (f32, or f16 for f16 inputs).
 * - Each invocation tests every staged key against its own exact window (per-axis coordinate test), only
 *   walking its window's rows inside the box, each row clipped to the chunk, and folds exactly its window's
 *   keys (no masking, no wasted dot products) into an online softmax (exp2, lazy
 *   rescale, f32 state; snippets/fused-softmax.ts). Masked keys cost a compare, never an exp or a dot.
 * - O (f32 registers) is written once, divided by l, with the natural-log LSE (f32).
 *
 * Lane split (`lanes` = T in {2, 4, 8}; absent or 1 emits exactly the single-lane kernel): T invocations
 * cooperate on one query. The workgroup has prod(queryTile) * T invocations; invocation `lid` serves query
 * `lid / T` and owns the vec4 columns c with c % T == lid % T of q and of O (D/4 and Dv/4 are multiples of T).
 * Per key: a partial dot over its own columns, the full logit by `subgroupShuffleXor` over the masks 1 .. T/2
 * (a butterfly: every lane ends with the bitwise-same sum, so all T lanes take the same softmax branches), the
 * same online-softmax update on every lane, then the axpy on its own O columns. The window walk depends only on
 * the query, so the T lanes of a query always take the same branches and are all active at each shuffle.
 * Staging and barriers are unchanged (every invocation stages). The shuffles sit in query-dependent control flow,
 * which WGSL's uniformity analysis cannot prove subgroup-uniform, so T > 1 kernels emit
 * `diagnostic(off, subgroup_uniformity);`: only the T lanes of one query exchange values, and they are all
 * active together. ASSUMPTION: subgroups are contiguous, aligned
 * ranges of local_invocation_index in this 1-D workgroup (true on Dawn's backends in practice; WebGPU does not
 * promise it), so with T <= the adapter's subgroupMinSize and a workgroup size that is a multiple of it, the T
 * lanes of a query (lids qT .. qT+T-1) share one subgroup. Config selection enforces both conditions.
 *
 * Several queries per invocation (`queriesPerInvocation` = Q in {2, 4}; absent or 1 emits exactly the kernel
 * above; experimental, explicit configs only): invocation i owns Q consecutive queries along the last axis of the
 * query tile (so the workgroup has prod(queryTile) / Q * T invocations). Their windows share the rows of the outer
 * axes, and along the last axis their union is at most K + (Q - 1) * stride keys, so the walk covers the union and
 * each staged K vec4 read from workgroup memory feeds Q dot products, each V vec4 Q axpys: 1/Q of the
 * workgroup-memory reads per FMA (one cost of the single-query walk on small windows, docs/performance.md). Each
 * query masks the keys outside its own window (p = 0, no rescale); q, O and the softmax state are per query, so
 * registers grow by Q (combine with `lanes` to keep them level). Measured slower than the default on an H200.
 *
 * Key unroll (`keyUnroll` = U in {2, 4}; absent or 1 emits exactly the kernel above): the innermost loop over a
 * window row's keys takes U keys per step (U independent dots and butterflies, one max and at most one rescale,
 * then the U axpys) and a one-key remainder loop. U = 2 is the default for float32 on wide-subgroup devices
 * (`withDefaultForwardUnroll`, 1-5% faster on an H200).
 *
 * Baked into the spec (and so the key): rank, K, causal, D, Dv, dtype, tile shapes, key chunk, staging type,
 * rpb/lse flags, path, lanes (T > 1 only), queries per invocation (Q > 1 only), key unroll (U > 1 only). Uniforms: batch, heads, kv heads, extents, dilation, stride, tile counts, scale.
 */
import {
  FUSED_LANE_CHOICES,
  type FusedProblem,
  NattenArgumentError,
  type NaRank,
  type TileProducts,
  formatShape,
  product,
} from '@natten-web/core';
import { dtypeFeatures, enableDirectives, type GpuDType, wgslType } from '../dtype.ts';
import { DEFAULT_UNROLL, hasWideSubgroups, laneSplitProblem, lanesDimProblem, withDefaultLanes } from '../lanes.ts';
import { type GeneratedKernel, kernelKey, type StorageBinding, type UniformField, uniformDecl } from '../kernel.ts';
import { FUSED_NEG, softmaxLse, softmaxStateDecl, softmaxUpdate, softmaxWeight, softmaxWeights } from '../snippets/fused-softmax.ts';
import { axisUniformValues, rpbIndexExpr, rpbWindowProblem, tokenOf } from '../snippets/fused-index.ts';
import { windowFunctions } from '../snippets/window.ts';

const FAMILY = 'na-fused-forward';
/** Bump when the emitted text changes for an unchanged spec. */
const GEN = 4;

/** Query-tile products (= workgroup size) this backend compiles. */
export const FUSED_FORWARD_QUERY_TILES = [16, 32, 64, 128] as const;
/** Key-chunk products (keys staged per step) this backend compiles. */
export const FUSED_FORWARD_KEY_CHUNKS = [16, 32, 64] as const;

/**
 * The forward tile products of the WebGPU backend, as (query tile product, key tile product) pairs:
 * every query tile in {16, 32, 64, 128} with every key chunk in {16, 32, 64}. A pair is usable on a device
 * only if its workgroup memory fits (`fusedForwardWorkgroupBytes`).
 */
export const FUSED_FORWARD_TILES: TileProducts = FUSED_FORWARD_QUERY_TILES.flatMap((q) =>
  FUSED_FORWARD_KEY_CHUNKS.map((k) => [q, k] as const),
);

/** Lanes per query (`FusedForwardConfig.lanes`) this backend compiles; > 1 needs subgroups. */
export const FUSED_FORWARD_LANES = FUSED_LANE_CHOICES;
/** Lane counts the enumerator offers (with subgroups); 8 is valid in explicit configs only. */
const ENUMERATED_LANES = [2, 4] as const;

/** Workgroup-memory staging type for K/V chunks. 'f16' only for float16 inputs. */
export type FusedStage = 'f32' | 'f16';

/** Kernel path. Only the plain (CUDA-core style) path exists; a subgroup-matrix path may be added later. */
export type FusedForwardPath = 'plain';

/** A kernel configuration: what the seed's `query_tile_size` / `key_tile_size` select, plus backend knobs. */
export interface FusedForwardConfig {
  readonly path: FusedForwardPath;
  /** Query tile per spatial axis, over dilation-group coordinates; its product is the workgroup size. */
  readonly queryTile: readonly number[];
  /** Key tile per axis; its product is the number of keys staged per chunk (the box is walked row-major). */
  readonly keyTile: readonly number[];
  readonly stage: FusedStage;
  /**
   * Invocations cooperating on one query (lane split of the head dims through subgroup shuffles), in
   * {1, 2, 4, 8}; absent means 1. T > 1 needs subgroups with a minimum size >= T, head dims that are multiples
   * of 4*T, and prod(queryTile) * T invocations per workgroup (a multiple of the minimum subgroup size).
   * The heuristic default takes T = 4 (else 2) at head dims >= 128 on devices with subgroups at least 16 wide
   * (`defaultFusedForwardConfig`); the autotuner times 2 and 4.
   */
  readonly lanes?: number;
  /**
   * Experimental: queries per invocation along the last axis, in {1, 2, 4}; absent means 1. Q > 1 needs the query
   * tile's last entry to be a multiple of Q and prod(queryTile) / Q * lanes invocations (a multiple of the minimum
   * subgroup size when lanes > 1). Explicit configs only: neither the default nor the enumerator picks it yet.
   */
  readonly queriesPerInvocation?: number;
  /**
   * Keys per step of the window walk, in {1, 2, 4}; absent means 1. U > 1 folds U consecutive keys of a window row
   * per loop iteration: U independent dot products (and shuffle butterflies), one max and at most one rescale for
   * the U logits, then the U axpys, with a one-key remainder loop. Needs `queriesPerInvocation` 1. The default and
   * the enumerator set 2 where `withDefaultForwardUnroll` says (float32 on wide-subgroup devices).
   */
  readonly keyUnroll?: number;
}

export interface FusedForwardSpec {
  readonly path: FusedForwardPath;
  readonly rank: NaRank;
  readonly kernelSize: readonly number[];
  readonly causal: readonly boolean[];
  readonly dim: number;
  readonly dimV: number;
  readonly dtype: GpuDType;
  readonly queryTile: readonly number[];
  readonly keyChunk: number;
  readonly stage: FusedStage;
  readonly hasRpb: boolean;
  readonly hasLse: boolean;
  /**
   * Keep q in f16 registers (the exact input values; scale applied to the dot product) instead of f32, halving
   * its registers. Set by `fusedForwardSpec` for float16 inputs with head dim > 64 (q and O in f32 would take
   * 2*D floats per invocation and spill).
   */
  readonly qHalf?: boolean;
  /** Lanes per query (see `FusedForwardConfig.lanes`); set only when > 1, so single-lane keys are unchanged. */
  readonly lanes?: number;
  /** Queries per invocation (see `FusedForwardConfig.queriesPerInvocation`); set only when > 1. */
  readonly queriesPerInvocation?: number;
  /** Keys per walk step (see `FusedForwardConfig.keyUnroll`); set only when > 1. */
  readonly keyUnroll?: number;
}

/** Keys per walk step (`FusedForwardConfig.keyUnroll`) this backend compiles. */
export const FUSED_FORWARD_KEY_UNROLLS = [1, 2, 4] as const;

/** Why `keyUnroll` cannot be used with a row grouping, or undefined. */
export function keyUnrollProblem(keyUnroll: number, queriesPerInvocation: number): string | undefined {
  if (!(FUSED_FORWARD_KEY_UNROLLS as readonly number[]).includes(keyUnroll)) {
    return `keyUnroll ${keyUnroll} is not one of ${FUSED_FORWARD_KEY_UNROLLS.join(', ')}`;
  }
  if (keyUnroll > 1 && queriesPerInvocation > 1) {
    return `keyUnroll=${keyUnroll} needs queriesPerInvocation 1 (got ${queriesPerInvocation}): the grouped walk folds one key at a time`;
  }
  return undefined;
}

/** Queries per invocation (`FusedForwardConfig.queriesPerInvocation`) this backend compiles. */
export const FUSED_FORWARD_QUERIES_PER_INVOCATION = [1, 2, 4] as const;

/** Why `queriesPerInvocation` cannot split a query tile, or undefined. */
export function queriesPerInvocationProblem(qpi: number, queryTile: readonly number[]): string | undefined {
  return rowsPerInvocationProblem('queriesPerInvocation', 'query', qpi, queryTile);
}

/**
 * Why `n` rows per invocation (field `field`, rows of the `what` tile) cannot split `tile`, or undefined: n must be
 * one of FUSED_FORWARD_QUERIES_PER_INVOCATION and divide the tile's last entry (the rows of one invocation are
 * consecutive along the last axis). Shared by the forward's and the backward's row-grouping knobs.
 */
export function rowsPerInvocationProblem(field: string, what: string, n: number, tile: readonly number[]): string | undefined {
  if (!(FUSED_FORWARD_QUERIES_PER_INVOCATION as readonly number[]).includes(n)) {
    return `${field} ${n} is not one of ${FUSED_FORWARD_QUERIES_PER_INVOCATION.join(', ')}`;
  }
  const lastT = tile[tile.length - 1] as number;
  if (lastT % n !== 0) return `${field}=${n} needs the ${what} tile's last entry (${lastT}) to be a multiple of ${n}`;
  return undefined;
}

/** The device limits config selection needs (a plain subset of GPUSupportedLimits). */
export interface FusedKernelLimits {
  readonly maxComputeWorkgroupStorageSize: number;
  readonly maxComputeInvocationsPerWorkgroup: number;
  readonly maxComputeWorkgroupSizeX: number;
  /**
   * The adapter's minimum subgroup size, present only when the device has the `subgroups` feature. When
   * absent, configs with `lanes` > 1 are invalid and the enumerator offers exactly the single-lane configs.
   */
  readonly subgroupMinSize?: number;
}

/** The problem fields config selection needs (core's `FusedProblem` satisfies it). */
export type FusedForwardProblem = Pick<FusedProblem, 'rank' | 'dtype' | 'spatial' | 'dim' | 'dimV' | 'params' | 'hasRpb' | 'hasLse'>;

const vec4Count = (n: number): number => Math.ceil(n / 4);

/** float16 inputs keep q in f16 registers above this head dim (see `FusedForwardSpec.qHalf`). */
export const Q_HALF_ABOVE = 64;

/** Bytes of workgroup memory a spec declares: staged K and V rows (vec4-padded). */
export function fusedForwardWorkgroupBytes(spec: Pick<FusedForwardSpec, 'dim' | 'dimV' | 'keyChunk' | 'stage'>): number {
  const vecBytes = spec.stage === 'f16' ? 8 : 16;
  return spec.keyChunk * (vec4Count(spec.dim) + vec4Count(spec.dimV)) * vecBytes;
}

/** Every rank-length tuple of powers of two (factors >= 1) whose product is `p`. */
export function tileShapes(rank: NaRank, p: number): number[][] {
  const e = Math.log2(p);
  if (!Number.isInteger(e)) return [];
  const out: number[][] = [];
  const rec = (prefix: number[], left: number): void => {
    if (prefix.length === rank - 1) {
      out.push([...prefix, 2 ** left]);
      return;
    }
    for (let i = left; i >= 0; i--) rec([...prefix, 2 ** i], left - i);
  };
  rec([], e);
  return out;
}

/** The canonical key tile for a chunk size: factors of two spread over the axes from the last one. */
export function canonicalKeyTile(rank: NaRank, chunk: number): number[] {
  const out = new Array<number>(rank).fill(1);
  let rest = chunk;
  let a = rank - 1;
  while (rest > 1) {
    out[a] = (out[a] as number) * 2;
    rest /= 2;
    a = a === 0 ? rank - 1 : a - 1;
  }
  return out;
}

function groupExtents(problem: FusedForwardProblem): number[] {
  return problem.spatial.map((L, a) => Math.ceil(L / (problem.params.dilation[a] as number)));
}

const nextPow2 = (n: number): number => 2 ** Math.ceil(Math.log2(Math.max(1, n)));

/** The fields of a forward kernel spec that the problem alone decides (shared by the plain and tile paths). */
export function forwardProblemFields(
  problem: FusedForwardProblem,
): Pick<FusedForwardSpec, 'rank' | 'kernelSize' | 'causal' | 'dim' | 'dimV' | 'dtype' | 'hasRpb' | 'hasLse'> {
  return {
    rank: problem.rank,
    kernelSize: [...problem.params.kernelSize],
    causal: [...problem.params.isCausal],
    dim: problem.dim,
    dimV: problem.dimV,
    dtype: problem.dtype === 'float16' ? 'float16' : 'float32',
    hasRpb: problem.hasRpb,
    hasLse: problem.hasLse,
  };
}

/** The spec a config gives for a problem. */
export function fusedForwardSpec(problem: FusedForwardProblem, config: FusedForwardConfig): FusedForwardSpec {
  return {
    path: config.path,
    ...forwardProblemFields(problem),
    queryTile: [...config.queryTile],
    keyChunk: product(config.keyTile),
    stage: config.stage,
    ...(problem.dtype === 'float16' && problem.dim > Q_HALF_ABOVE ? { qHalf: true } : {}),
    ...(config.lanes !== undefined && config.lanes > 1 ? { lanes: config.lanes } : {}),
    ...(config.queriesPerInvocation !== undefined && config.queriesPerInvocation > 1 ? { queriesPerInvocation: config.queriesPerInvocation } : {}),
    ...(config.keyUnroll !== undefined && config.keyUnroll > 1 ? { keyUnroll: config.keyUnroll } : {}),
  };
}

/** Why a config cannot run a problem on a device, or undefined if it can. */
export function fusedForwardConfigProblem(problem: FusedForwardProblem, config: FusedForwardConfig, limits: FusedKernelLimits): string | undefined {
  if (config.path !== 'plain') return `path '${String(config.path)}' does not exist (only 'plain')`;
  if (config.queryTile.length !== problem.rank || config.keyTile.length !== problem.rank) {
    return `tile tuples must have ${problem.rank} entries`;
  }
  const qp = product(config.queryTile);
  const kp = product(config.keyTile);
  if (!FUSED_FORWARD_TILES.some(([a, b]) => a === qp && b === kp)) return `tile products ${qp}x${kp} are not compiled`;
  if (config.queryTile.some((t) => !Number.isInteger(t) || t < 1)) return `query tile ${formatShape(config.queryTile)} has a factor < 1`;
  if (config.stage === 'f16' && problem.dtype !== 'float16') return `stage 'f16' needs float16 inputs`;
  const lanes = config.lanes ?? 1;
  const qpi = config.queriesPerInvocation ?? 1;
  const qpiWhy = queriesPerInvocationProblem(qpi, config.queryTile);
  if (qpiWhy !== undefined) return qpiWhy;
  const unrollWhy = keyUnrollProblem(config.keyUnroll ?? 1, qpi);
  if (unrollWhy !== undefined) return unrollWhy;
  // The lane split's workgroup is the invocations that own queries: qp / Q of them, each times T lanes.
  const lanesWhy = laneSplitProblem(lanes, problem, [['query', qp / qpi]], limits, 'query');
  if (lanesWhy !== undefined) return lanesWhy;
  const inv = (qp / qpi) * lanes;
  if (inv > limits.maxComputeInvocationsPerWorkgroup || inv > limits.maxComputeWorkgroupSizeX) {
    return `a query tile of ${qp}${lanes > 1 ? ` with ${lanes} lanes per query` : ''} needs ${inv} invocations per workgroup; this device allows ${Math.min(limits.maxComputeInvocationsPerWorkgroup, limits.maxComputeWorkgroupSizeX)}`;
  }
  const bytes = fusedForwardWorkgroupBytes({ dim: problem.dim, dimV: problem.dimV, keyChunk: kp, stage: config.stage });
  if (bytes > limits.maxComputeWorkgroupStorageSize) {
    return `key chunk ${kp} with head dims ${problem.dim}/${problem.dimV} (${config.stage} staging) needs ${bytes} bytes of workgroup memory; this device allows ${limits.maxComputeWorkgroupStorageSize}`;
  }
  return undefined;
}

/**
 * Every valid configuration for a problem on a device (NATTEN profiler `--dry-run` style), for the autotuner.
 * Query tiles: every power-of-two shape of each compiled product whose factors do not exceed the next power
 * of two of the axis' dilation-group extent (larger ones only add idle invocations; when the groups are smaller
 * than every tile, the smallest tiles with the fewest idle lanes). Key tiles: one canonical
 * shape per chunk (only the product matters). Staging: f32, plus f16 for float16 inputs. Lanes: only when
 * `limits.subgroupMinSize` is given (the device has subgroups), each config also with `lanes` 2 and 4 where valid;
 * without it, exactly the single-lane list.
 */
export function enumerateFusedForwardConfigs(problem: FusedForwardProblem, limits: FusedKernelLimits): FusedForwardConfig[] {
  const ext = groupExtents(problem);
  const stages: FusedStage[] = problem.dtype === 'float16' ? ['f32', 'f16'] : ['f32'];
  const out: FusedForwardConfig[] = [];
  const shapes = FUSED_FORWARD_QUERY_TILES.flatMap((qp) => tileShapes(problem.rank, qp)).filter((shape) =>
    shape.every((t, a) => t <= nextPow2(ext[a] as number)),
  );
  if (shapes.length === 0) {
    // Dilation groups smaller than the smallest tile: keep the smallest-product shapes with the fewest lanes.
    const smallest = tileShapes(problem.rank, FUSED_FORWARD_QUERY_TILES[0]);
    const lanes = (shape: readonly number[]): number =>
      shape.reduce((acc, t, a) => acc * Math.ceil((ext[a] as number) / t) * t, 1);
    const best = Math.min(...smallest.map(lanes));
    shapes.push(...smallest.filter((shape) => lanes(shape) === best));
  }
  for (const shape of shapes) {
    for (const kp of FUSED_FORWARD_KEY_CHUNKS) {
      for (const stage of stages) {
        const config = withDefaultForwardUnroll(problem, { path: 'plain', queryTile: shape, keyTile: canonicalKeyTile(problem.rank, kp), stage }, limits);
        if (fusedForwardConfigProblem(problem, config, limits) === undefined) out.push(config);
        if (limits.subgroupMinSize === undefined) continue;
        for (const lanes of ENUMERATED_LANES) {
          const { keyUnroll: _single, ...base } = config;
          const split: FusedForwardConfig = { ...base, lanes };
          if (fusedForwardConfigProblem(problem, split, limits) === undefined) out.push(split);
        }
      }
    }
  }
  return out;
}

/**
 * Relative cost per real query of a query-tile shape: every lane of a tile (idle ones included, they hold their
 * SIMD slot) spends prod(K) key steps, and the tile stages its whole key box once (weighted by STAGE_WEIGHT key
 * steps per staged key, amortized over the tile's real queries).
 */
const STAGE_WEIGHT = 2;
function tileCost(problem: FusedForwardProblem, shape: readonly number[]): number {
  const ext = groupExtents(problem);
  let visits = 1;
  let lanes = 1;
  for (let a = 0; a < problem.rank; a++) {
    const n = ext[a] as number;
    const t = shape[a] as number;
    const K = problem.params.kernelSize[a] as number;
    const tiles = Math.ceil(n / t);
    visits *= tiles * Math.min(t + K - 1, n);
    lanes *= tiles * t;
  }
  const real = ext.reduce((x, y) => x * y, 1);
  return (lanes / real) * product(problem.params.kernelSize) + (STAGE_WEIGHT * visits) / real;
}

/**
 * Heuristic default: the query-tile shape with the lowest `tileCost`, preferring 32 invocations (one SIMD group
 * on NVIDIA: measured best on H200 for 1-D, 2-D and 3-D, see the bench), then 64; a key chunk of 32; f16
 * staging for f16 inputs (half the workgroup-memory traffic; measured faster on H200). Ties go to tiles whose
 * extents grow toward the last (memory-contiguous) axis. Lanes: head dims of at least
 * `DEFAULT_FORWARD_LANES_MIN_DIM` split each query over 4 lanes (else 2) on devices with subgroups at least 16
 * wide (`withDefaultLanes`): on an H200 the FLUX-like problem (D=128) ran 723 -> 487 ms with 4 lanes, while at
 * D=64 every lane split measured slower (2-D 128x128 K=7 0.28 -> 0.33 ms, 2-D 256x256 K=15 6.4 -> 8.3 ms, 1-D
 * 4096 K=127 0.125 -> 0.139 ms): a query's q and O registers (2 * D floats) are what limits occupancy at D=128.
 */
export function defaultFusedForwardConfig(problem: FusedForwardProblem, limits: FusedKernelLimits): FusedForwardConfig {
  const all = enumerateFusedForwardConfigs(problem, limits).filter((c) => c.lanes === undefined);
  if (all.length === 0) {
    throw new NattenArgumentError(
      `na${problem.rank}d_forward: no WebGPU kernel configuration fits head_dim=${problem.dim}, value head_dim=${problem.dimV} in this device's ${limits.maxComputeWorkgroupStorageSize} bytes of workgroup memory (the smallest key chunk, 16 keys, needs ${fusedForwardWorkgroupBytes({ dim: problem.dim, dimV: problem.dimV, keyChunk: 16, stage: problem.dtype === 'float16' ? 'f16' : 'f32' })})`,
    );
  }
  const score = (c: FusedForwardConfig): number => {
    const qp = product(c.queryTile);
    const kp = product(c.keyTile);
    const wgPenalty = qp === 32 ? 0 : qp === 64 ? 0.08 : qp === 128 ? 0.15 : 0.3;
    const chunkPenalty = kp === 32 ? 0 : kp === 16 ? 0.03 : 0.05;
    const stagePenalty = problem.dtype === 'float16' && c.stage === 'f32' ? 0.05 : 0;
    let inversions = 0;
    c.queryTile.forEach((t, a) => {
      for (let b = a + 1; b < problem.rank; b++) if (t > (c.queryTile[b] as number)) inversions++;
    });
    const tieBreak = 0.001 * inversions;
    return tileCost(problem, c.queryTile) * (1 + wgPenalty + chunkPenalty + stagePenalty + tieBreak);
  };
  let best = all[0] as FusedForwardConfig;
  let bestScore = score(best);
  for (const c of all) {
    const s = score(c);
    if (s < bestScore) {
      best = c;
      bestScore = s;
    }
  }
  if (Math.max(problem.dim, problem.dimV) < DEFAULT_FORWARD_LANES_MIN_DIM) return best;
  const { keyUnroll: _single, ...base } = best;
  const split = withDefaultLanes(base, limits, DEFAULT_FORWARD_LANES, (c) => fusedForwardConfigProblem(problem, c, limits) === undefined);
  return split.lanes === undefined ? best : split;
}

/**
 * The config with the heuristic key unroll (`keyUnroll` = DEFAULT_UNROLL) where it was measured to help: float32,
 * single-lane, one query per invocation, on devices with subgroups at least 16 wide (on an H200 it was 1-5% faster
 * on all five float32 standard problems in two runs; for float16 it was 0-9% slower). Unchanged otherwise, and
 * when the config already sets `keyUnroll`. Applied to the default, to user tiles without an explicit config,
 * and to the autotuner's configs, so a tuned config runs exactly as timed.
 */
export function withDefaultForwardUnroll(problem: Pick<FusedForwardProblem, 'dtype'>, config: FusedForwardConfig, limits: Pick<FusedKernelLimits, 'subgroupMinSize'>): FusedForwardConfig {
  if (config.keyUnroll !== undefined || problem.dtype !== 'float32' || (config.lanes ?? 1) > 1 || (config.queriesPerInvocation ?? 1) > 1) return config;
  return hasWideSubgroups(limits) ? { ...config, keyUnroll: DEFAULT_UNROLL } : config;
}

/** Smallest head dim (query/key or value) for which the default forward splits queries over lanes. */
export const DEFAULT_FORWARD_LANES_MIN_DIM = 128;
/** Lane counts the default forward tries, in order, on devices with wide subgroups. */
const DEFAULT_FORWARD_LANES = [4, 2] as const;

/** Validate a spec before generating (internal consistency, not device limits). */
export function checkFusedForwardSpec(spec: FusedForwardSpec): void {
  const r = spec.rank;
  const bad = (what: string): never => {
    throw new NattenArgumentError(`generateFusedForward: ${what}`);
  };
  if (spec.path !== 'plain') bad(`unknown path '${String(spec.path)}'`);
  if (spec.kernelSize.length !== r || spec.causal.length !== r || spec.queryTile.length !== r) bad(`kernelSize, causal and queryTile need ${r} entries`);
  if (spec.kernelSize.some((k) => !Number.isInteger(k) || k < 2)) bad(`kernel sizes must be integers >= 2, got ${formatShape(spec.kernelSize)}`);
  if (!Number.isInteger(spec.dim) || spec.dim < 1 || !Number.isInteger(spec.dimV) || spec.dimV < 1) bad(`head dims must be positive integers, got ${spec.dim}/${spec.dimV}`);
  const wg = product(spec.queryTile);
  if (!FUSED_FORWARD_QUERY_TILES.includes(wg as (typeof FUSED_FORWARD_QUERY_TILES)[number])) bad(`query tile product ${wg} is not one of ${FUSED_FORWARD_QUERY_TILES.join(', ')}`);
  if (!FUSED_FORWARD_KEY_CHUNKS.includes(spec.keyChunk as (typeof FUSED_FORWARD_KEY_CHUNKS)[number])) bad(`key chunk ${spec.keyChunk} is not one of ${FUSED_FORWARD_KEY_CHUNKS.join(', ')}`);
  if (spec.stage === 'f16' && spec.dtype !== 'float16') bad(`f16 staging needs float16 inputs`);
  if (spec.qHalf === true && spec.dtype !== 'float16') bad(`f16 q registers need float16 inputs`);
  const rpb = rpbWindowProblem(spec);
  if (rpb !== undefined) bad(rpb);
  if (spec.lanes !== undefined) {
    const why = lanesDimProblem(spec.lanes, spec.dim, spec.dimV);
    if (why !== undefined) bad(why);
  }
  if (spec.queriesPerInvocation !== undefined) {
    const why = queriesPerInvocationProblem(spec.queriesPerInvocation, spec.queryTile);
    if (why !== undefined) bad(why);
  }
  if (spec.keyUnroll !== undefined) {
    const why = keyUnrollProblem(spec.keyUnroll, spec.queriesPerInvocation ?? 1);
    if (why !== undefined) bad(why);
  }
}

/** Problem-shape uniform fields every forward kernel (fused or naive) declares; `forwardProblemUniforms` fills them. */
export const FORWARD_SHAPE_UNIFORMS: readonly UniformField[] = [
  { name: 'heads', type: 'u32' },
  { name: 'heads_kv', type: 'u32' },
  { name: 'gqa', type: 'u32' },
  { name: 'tokens', type: 'u32' },
];

/** The uniform fields of spatial axis `a` that every forward kernel (fused or naive) reads: `len_a`, `dil_a`, `str_a`. */
export function forwardAxisUniformFields(a: number): UniformField[] {
  return [
    { name: `len_${a}`, type: 'i32' },
    { name: `dil_${a}`, type: 'i32' },
    { name: `str_${a}`, type: 'i32' },
  ];
}

/**
 * The uniform values every forward kernel (fused or naive) takes for a heads-last problem: `heads`, `heads_kv`,
 * `gqa` (query heads per KV head), `tokens` and, per axis, `len_a`, `dil_a`, `str_a`.
 */
export function forwardProblemUniforms(problem: {
  readonly rank: NaRank;
  readonly spatial: readonly number[];
  readonly heads: number;
  readonly headsKv: number;
  readonly params: { readonly dilation: readonly number[]; readonly stride: readonly number[] };
}): Record<string, number> {
  const u: Record<string, number> = {
    heads: problem.heads,
    heads_kv: problem.headsKv,
    gqa: problem.heads / problem.headsKv,
    tokens: product(problem.spatial),
    ...axisUniformValues(problem),
  };
  return u;
}

/** Uniform fields, in struct order. */
export function fusedForwardUniformFields(rank: NaRank): UniformField[] {
  const f: UniformField[] = [
    { name: 'batch', type: 'u32' },
    ...FORWARD_SHAPE_UNIFORMS,
    { name: 'total_wg', type: 'u32' },
    { name: 'scale_log2', type: 'f32' },
  ];
  for (let a = 0; a < rank; a++) f.push(...forwardAxisUniformFields(a), { name: `ntile_${a}`, type: 'u32' });
  return f;
}

/** Uniform values and the workgroup count (before folding) for one call. */
export function fusedForwardDispatch(
  problem: Pick<FusedProblem, 'rank' | 'batch' | 'spatial' | 'heads' | 'headsKv' | 'params' | 'scale'>,
  queryTile: readonly number[],
): { uniforms: Record<string, number>; workgroups: number } {
  let tiles = 1;
  let groups = 1;
  const u: Record<string, number> = { batch: problem.batch, ...forwardProblemUniforms(problem), scale_log2: problem.scale * Math.LOG2E };
  for (let a = 0; a < problem.rank; a++) {
    const d = problem.params.dilation[a] as number;
    const nt = Math.ceil(Math.ceil((problem.spatial[a] as number) / d) / (queryTile[a] as number));
    u[`ntile_${a}`] = nt;
    tiles *= nt;
    groups *= d;
  }
  const total = problem.batch * problem.heads * groups * tiles;
  u.total_wg = total;
  return { uniforms: u, workgroups: total };
}

/** Storage bindings in binding order: query, key, value, [rpb], output, [logsumexp]. */
export function fusedForwardBindings(spec: Pick<FusedForwardSpec, 'hasRpb' | 'hasLse'>): StorageBinding[] {
  const b: StorageBinding[] = [
    { name: 'query', access: 'read' },
    { name: 'key', access: 'read' },
    { name: 'value', access: 'read' },
  ];
  if (spec.hasRpb) b.push({ name: 'rpb', access: 'read' });
  b.push({ name: 'output', access: 'read_write' });
  if (spec.hasLse) b.push({ name: 'logsumexp', access: 'read_write' });
  return b;
}

const AX = ['x', 'y', 'z', 'w'];

/** WGSL loader of the c-th vec4 of a row starting at element `base`, as vec4<S>, for vec4 or scalar bindings. */
export function rowLoader(name: string, buffer: string, n: number, vec: boolean, s: string): string {
  if (vec) {
    return `fn ${name}(base: u32, c: u32) -> vec4<${s}> { return vec4<${s}>(${buffer}[base / 4u + c]); }`;
  }
  const comps = [0, 1, 2, 3]
    .map((i) =>
      i === 0
        ? `  r.x = ${s}(${buffer}[e]);`
        : `  if (4u * c + ${i}u < ${n}u) { r.${AX[i] as string} = ${s}(${buffer}[e + ${i}u]); }`,
    )
    .join('\n');
  return `fn ${name}(base: u32, c: u32) -> vec4<${s}> {
  let e = base + 4u * c;
  var r = vec4<${s}>(0.0);
${comps}
  return r;
}`;
}

/**
 * WGSL of the workgroup decode every fused forward shares (inside `main`): `wid`, the (batch `b`, head `h`, kv head
 * `hk`, dilation group `g_a`, query tile) it owns, the group extents `n_a`, the first query `qf_a`, and the union key
 * box `bs_a` + `bw_a` in group coordinates. Returns (uniformly) for workgroups past the end and tiles past the group.
 */
export function forwardTileOrigin(r: NaRank): string {
  const axes = Array.from({ length: r }, (_, a) => a);
  return `${workgroupTileDecode(r, { head: 'h', heads: 'heads', after: '  let hk = h / params.gqa;\n', first: 'qf', tile: 'QUERY_TILE' })}
${axes
  .map(
    (a) => `  let ql_${a} = min(qf_${a} + i32(QUERY_TILE_${a}), n_${a}) - 1;
  let wfirst_${a} = na_window_${a}(qf_${a} * params.dil_${a} + g_${a}, params.len_${a}, params.dil_${a}, params.str_${a});
  let wlast_${a} = na_window_${a}(ql_${a} * params.dil_${a} + g_${a}, params.len_${a}, params.dil_${a}, params.str_${a});
  let bs_${a} = (wfirst_${a}.x - g_${a}) / params.dil_${a};
  let bw_${a} = (wlast_${a}.x - g_${a}) / params.dil_${a} + wlast_${a}.y - bs_${a};`,
  )
  .join('\n')}
`;
}

/**
 * WGSL (inside `main`, which has `wg_id` and `wg_num`) decoding the flat workgroup index into per-axis tiles
 * `tile_a` (over `params.ntile_a`), dilation groups `g_a`, the head `o.head` (over `params.${o.heads}`) and batch `b`,
 * then (after the `o.after` lines) the group extents `n_a` and the tile's first row `${o.first}_a` (tile constants
 * `${o.tile}_a`). Returns (uniformly) for workgroups past the end and tiles past the group. Shared by the forwards'
 * query tiles and the tensor-core backward's key tiles.
 */
export function workgroupTileDecode(r: NaRank, o: { readonly head: string; readonly heads: string; readonly after?: string; readonly first: string; readonly tile: string }): string {
  const axes = Array.from({ length: r }, (_, a) => a);
  return `  let wid = wg_id.x + wg_id.y * wg_num.x;
  if (wid >= params.total_wg) { return; }
  var rest = wid;
${axes
  .slice()
  .reverse()
  .map((a) => `  let tile_${a} = rest % params.ntile_${a};\n  rest = rest / params.ntile_${a};`)
  .join('\n')}
${axes
  .slice()
  .reverse()
  .map((a) => `  let g_${a} = i32(rest % u32(params.dil_${a}));\n  rest = rest / u32(params.dil_${a});`)
  .join('\n')}
  let ${o.head} = rest % params.${o.heads};
  let b = rest / params.${o.heads};
${o.after ?? ''}${axes
  .map(
    (a) => `  let n_${a} = na_group_len(params.len_${a}, params.dil_${a}, g_${a});
  let ${o.first}_${a} = i32(tile_${a} * ${o.tile}_${a});`,
  )
  .join('\n')}
  if (${axes.map((a) => `${o.first}_${a} >= n_${a}`).join(' || ')}) { return; }`;
}

/**
 * WGSL of the fused forwards' workgroup-uniform prologue (inside `main`, which has `wg_id`, `wg_num`): the
 * (batch, head, dilation group, query tile) this workgroup owns, its group extents `n_a`, first query `qf_a`, the
 * union key box `bs_a` + `bw_a` (group coordinates) with `box_n` keys and `n_chunks` chunks, and `tok_base`.
 * Needs the module constants QUERY_TILE_a and KEY_CHUNK, `params` (`fusedForwardUniformFields`) and the window
 * functions. Workgroups past the end and tiles past the group return (uniformly).
 */
export function forwardWorkgroupPrologue(r: NaRank): string {
  const axes = Array.from({ length: r }, (_, a) => a);
  return `  // ---- workgroup-uniform prologue: which (batch, head, dilation group, query tile) this workgroup owns
${forwardTileOrigin(r)}  let box_n = u32(${axes.map((a) => `bw_${a}`).join(' * ')});
  let n_chunks = (box_n + KEY_CHUNK - 1u) / KEY_CHUNK;
  let tok_base = b * params.tokens;
`;
}

/**
 * WGSL of one chunk's staging (inside the chunk loop, with `c0` its first box index): the K and V rows of box
 * indices c0 .. c0 + KEY_CHUNK - 1 that lie in the box, loaded with `load_k` / `load_v` into `k_sh[kIndex(rr, c)]`
 * and `v_sh[vIndex(rr, c)]` (rr the chunk row, c the vec4 column). Needs the constants KEY_CHUNK, WORKGROUP_SIZE,
 * THREADS_PER_KEY, D4, DV4, HEAD_DIM, HEAD_DIM_V and the prologue's names.
 */
export function forwardStageChunk(r: NaRank, kIndex: (rr: string, c: string) => string, vIndex: (rr: string, c: string) => string): string {
  return `    for (var rr = lid / THREADS_PER_KEY; rr < KEY_CHUNK; rr += WORKGROUP_SIZE / THREADS_PER_KEY) {
      let kbox = c0 + rr;
      if (kbox < box_n) {
${boxKeyRow(r)}
        let kbase = krow * HEAD_DIM;
        let vbase = krow * HEAD_DIM_V;
        let sub = lid % THREADS_PER_KEY;
        for (var c = sub; c < D4; c += THREADS_PER_KEY) { k_sh[${kIndex('rr', 'c')}] = load_k(kbase, c); }
        for (var c = sub; c < DV4; c += THREADS_PER_KEY) { v_sh[${vIndex('rr', 'c')}] = load_v(vbase, c); }
      }
    }
`;
}

/**
 * WGSL that decodes a staged box index `${p}box` into group coordinates `${p}g_a` (last axis fastest; the box starts
 * at `${bs}_a` with widths `${bw}_a`), the token `${p}tok` and the row `${p}row` of head `head` among `heads` heads.
 * Needs the prologue's names (`tok_base`, `g_a`, `params`). With `fastDivide` each axis past the first divides by
 * float reciprocal (`box_divmod` with `inv_${bw}_a` = 1 / f32(`${bw}_a`) in scope; the mma kernels' `BOX_DIVMOD_FN`)
 * instead of WGSL's integer division and remainder.
 */
export function boxRow(r: NaRank, o: { readonly p: string; readonly bs: string; readonly bw: string; readonly heads: string; readonly head: string; readonly ind: string; readonly fastDivide?: boolean }): string {
  const axes = Array.from({ length: r }, (_, a) => a);
  const { p, ind, bs, bw } = o;
  const decode =
    o.fastDivide === true
      ? `${ind}var ${p}rest = ${p}box;
${axes
  .slice(1)
  .reverse()
  .map((a) => `${ind}let ${p}d_${a} = box_divmod(${p}rest, u32(${bw}_${a}), inv_${bw}_${a});
${ind}let ${p}g_${a} = ${bs}_${a} + i32(${p}d_${a}.y);
${ind}${p}rest = ${p}d_${a}.x;`)
  .join('\n')}
${ind}let ${p}g_0 = ${bs}_0 + i32(${p}rest);`
      : `${ind}var ${p}rest = i32(${p}box);
${axes
  .slice()
  .reverse()
  .map((a) => (a === 0 ? `${ind}let ${p}g_0 = ${bs}_0 + ${p}rest;` : `${ind}let ${p}g_${a} = ${bs}_${a} + ${p}rest % ${bw}_${a};\n${ind}${p}rest = ${p}rest / ${bw}_${a};`))
  .join('\n')}`;
  return `${decode}
${ind}let ${p}tok = ${tokenOf(r, (a) => `${p}g_${a} * params.dil_${a} + g_${a}`)};
${ind}let ${p}row = (tok_base + ${p}tok) * params.${o.heads} + ${o.head};`;
}

/**
 * `boxRow` of a staged key (`kbox` -> `kg_a`, `ktok`, `krow` of KV head `hk`) at the staging loops' 8-space indent;
 * `fastDivide` as `boxRow`'s.
 */
export function boxKeyRow(r: NaRank, fastDivide = false): string {
  return boxRow(r, { p: 'k', bs: 'bs', bw: 'bw', heads: 'heads_kv', head: 'hk', ind: '        ', ...(fastDivide ? { fastDivide } : {}) });
}

/** Generate the kernel for a spec. Pure: same spec, same text. */
export function generateFusedForward(spec: FusedForwardSpec): GeneratedKernel {
  checkFusedForwardSpec(spec);
  const LN = spec.lanes ?? 1;
  // lanes 1 is the single-lane kernel: the same key (and text) as a spec without the field.
  const QP = spec.queriesPerInvocation ?? 1;
  // lanes 1 / one query per invocation are the plain kernel: the same key (and text) as a spec without the fields.
  const KU = spec.keyUnroll ?? 1;
  const key = kernelKey(FAMILY, GEN, {
    ...spec,
    lanes: LN === 1 ? undefined : LN,
    queriesPerInvocation: QP === 1 ? undefined : QP,
    keyUnroll: KU === 1 ? undefined : KU,
  });
  const r = spec.rank;
  const axes = Array.from({ length: r }, (_, a) => a);
  const T = wgslType(spec.dtype);
  const S = spec.stage;
  const D = spec.dim;
  const Dv = spec.dimV;
  const D4 = vec4Count(D);
  const DV4 = vec4Count(Dv);
  const vecQK = D % 4 === 0;
  const vecV = Dv % 4 === 0;
  const QH = spec.qHalf === true;
  const WG = (product(spec.queryTile) / QP) * LN;
  const BK = spec.keyChunk;
  const TPK = Math.max(1, WG / BK);
  // Bank-conflict swizzle: lanes of a SIMD group read neighbouring staged rows at the same column, so the
  // c-th vec4 of row k is stored at column c ^ (k & mask) (mask < the largest power of two dividing the row
  // length in vec4s, and < the vec4s per 128-byte bank line: 8 for f32, 16 for f16 staging).
  const swizzleMask = (n4: number): number => {
    let p = 1;
    while (n4 % (p * 2) === 0 && p * 2 <= (S === 'f16' ? 16 : 8)) p *= 2;
    return p - 1;
  };
  const KSW = swizzleMask(D4);
  const VSW = swizzleMask(DV4);
  const col = (c: string, row: string, mask: number): string => (mask === 0 ? c : `(${c} ^ (${row} & ${mask}u))`);
  // Lane split: register j of q / O holds vec4 column j*LN + lane (just j when LN == 1).
  const D4L = D4 / LN;
  const DV4L = DV4 / LN;
  const lc = (j: number): string => (LN === 1 ? `${j}u` : `(${j * LN}u + lane)`);
  const uniforms = fusedForwardUniformFields(r);
  const bindings = fusedForwardBindings(spec);
  const elem: Record<string, string> = {
    query: vecQK ? `vec4<${T}>` : T,
    key: vecQK ? `vec4<${T}>` : T,
    value: vecV ? `vec4<${T}>` : T,
    rpb: T,
    output: vecV ? `vec4<${T}>` : T,
    logsumexp: 'f32',
  };
  const decls = bindings
    .map((b, i) => `@group(0) @binding(${i}) var<storage, ${b.access}> ${b.name}: array<${elem[b.name] ?? T}>;`)
    .join('\n');

  const tokOf = (x: (a: number) => string): string => tokenOf(r, x);
  const rpbIndex = (): string => rpbIndexExpr(spec.kernelSize, (a) => `kr_${a} - qr_${a}`);

  const header = [
    `// ${key}`,
    enableDirectives(spec.dtype).trimEnd(),
    // The shuffles sit in query-dependent control flow (valid, the window walk). The uniformity analysis cannot
    // see that the LN lanes of a query always branch alike, so every lane a shuffle reads from is active.
    LN > 1 ? 'enable subgroups;\ndiagnostic(off, subgroup_uniformity);' : '',
    `const RANK: u32 = ${r}u;`,
    ...axes.map((a) => `const KERNEL_SIZE_${a}: i32 = ${spec.kernelSize[a]};`),
    ...axes.map((a) => `const IS_CAUSAL_${a}: bool = ${spec.causal[a] ? 'true' : 'false'};`),
    ...axes.map((a) => `const QUERY_TILE_${a}: u32 = ${spec.queryTile[a]}u;`),
    `const HEAD_DIM: u32 = ${D}u;`,
    `const HEAD_DIM_V: u32 = ${Dv}u;`,
    `const D4: u32 = ${D4}u;`,
    `const DV4: u32 = ${DV4}u;`,
    `const KEY_CHUNK: u32 = ${BK}u;`,
    `const WORKGROUP_SIZE: u32 = ${WG}u;`,
    LN > 1 ? `const LANES: u32 = ${LN}u;` : '',
    QP > 1 ? `const QUERIES_PER_INVOCATION: u32 = ${QP}u;` : '',
    `const THREADS_PER_KEY: u32 = ${TPK}u;`,
    `const K_SWIZZLE: u32 = ${KSW}u;`,
    `const V_SWIZZLE: u32 = ${VSW}u;`,
    `const HAS_RPB: bool = ${spec.hasRpb};`,
    `const HAS_LSE: bool = ${spec.hasLse};`,
    `const Q_HALF: bool = ${QH};`,
    `const LOG2E: f32 = 1.4426950408889634;`,
    `const NEG: f32 = ${FUSED_NEG};`,
  ]
    .filter((l) => l.length > 0)
    .join('\n');

  // Register q column c (f32), and staged K / V vec4 column c of the key row at kb{sfx} / vb{sfx} (swizzled), as f32.
  const qAt = (c: number): string => (QH ? `vec4<f32>(q_${c})` : `q_${c}`);
  const kAt = (c: number, sfx = ''): string => `vec4<f32>(k_sh[kb${sfx} + ${KSW === 0 ? lc(c) : `(${lc(c)} ^ ksw${sfx})`}])`;
  const vAt = (c: number, sfx = ''): string => `vec4<f32>(v_sh[vb${sfx} + ${VSW === 0 ? lc(c) : `(${lc(c)} ^ vsw${sfx})`}])`;
  const qDot = Array.from({ length: D4L }, (_, c) => `          acc = fma(${qAt(c)}, ${kAt(c)}, acc);`).join('\n');
  const update = softmaxUpdate(DV4L, (c) => vAt(c), '          ');
  // The logit: the lane's partial dot, then (lane split) the butterfly over the query's LN lanes.
  const shuffles: string[] = [];
  for (let m = 1; m < LN; m *= 2) shuffles.push(`            sc = sc + subgroupShuffleXor(sc, ${m}u);\n`);
  const logit =
    LN === 1
      ? `            var sc = ${QH ? '(acc.x + acc.y + acc.z + acc.w) * params.scale_log2' : 'acc.x + acc.y + acc.z + acc.w'};\n`
      : `            var sc = acc.x + acc.y + acc.z + acc.w;\n${shuffles.join('')}${QH ? '            sc = sc * params.scale_log2;\n' : ''}`;
  // Exact window walk: rows of the window (all axes but the last) in box-relative coordinates; each row is a
  // contiguous run of box-linear indices [lo, hi), clipped to the chunk [c0i, c1i).
  const last = r - 1;
  // The staged key row of walk index `k`: its offsets in k_sh / v_sh, swizzles, and (rpb) its box-relative last
  // coordinate, every name suffixed `sfx` (empty for the one-key walk, `_u` for row u of an unrolled step).
  const keyHeadFor = (k: string, sfx: string): string => `            let kl${sfx} = u32(${k} - c0i);
            let kb${sfx} = kl${sfx} * D4;
            let vb${sfx} = kl${sfx} * DV4;
${KSW === 0 ? '' : `            let ksw${sfx} = kl${sfx} & ${KSW}u;\n`}${VSW === 0 ? '' : `            let vsw${sfx} = kl${sfx} & ${VSW}u;\n`}${spec.hasRpb ? `            let kr_${last}${sfx} = ${k} - row_base;\n` : ''}`;
  const keyHead = keyHeadFor('k', '');
  // ---- several queries per invocation (QP > 1): per-query names carry a `_j` suffix
  const js = Array.from({ length: QP }, (_, j) => j);
  const qv = (j: number, c: number): string => (QH ? `vec4<f32>(q_${j}_${c})` : `q_${j}_${c}`);
  const qiLast = (j: number): string => (j === 0 ? `qi_${last}` : `(qi_${last} + ${j})`);
  const qTok = (j: number): string => tokOf((a) => `${a === last ? qiLast(j) : `qi_${a}`} * params.dil_${a} + g_${a}`);
  function multiBody(): string {
    const dot = Array.from(
      { length: D4L },
      (_, c) => `            {
              let kv = ${kAt(c)};
${js.map((j) => `              acc_${j} = fma(${qv(j, c)}, kv, acc_${j});`).join('\n')}
            }`,
    ).join('\n');
    const logits = js
      .map((j) => {
        const sum = `acc_${j}.x + acc_${j}.y + acc_${j}.z + acc_${j}.w`;
        const sh: string[] = [];
        for (let m = 1; m < LN; m *= 2) sh.push(`            sc_${j} = sc_${j} + subgroupShuffleXor(sc_${j}, ${m}u);\n`);
        return `            var sc_${j} = ${sum};\n${sh.join('')}${QH ? `            sc_${j} = sc_${j} * params.scale_log2;\n` : ''}`;
      })
      .join('');
    // Each query folds only the keys of its own window (the walk covers the union); the rest get p = 0.
    const weights = js
      .map(
        (j) => `            var p_${j} = 0.0;
            if (kc >= wl_${j}_s && kc < wl_${j}_e) {
${spec.hasRpb ? `              sc_${j} = sc_${j} + f32(rpb[${rpbIndexExpr(spec.kernelSize, (a) => (a === last ? `kr_${a} - qr_${a}_${j}` : `kr_${a} - qr_${a}`))}]) * LOG2E;\n` : ''}${softmaxWeight(DV4L, `_${j}`, '              ')}
            }`,
      )
      .join('\n');
    const axpy = Array.from(
      { length: DV4L },
      (_, c) => `            {
              let vv = ${vAt(c)};
${js.map((j) => `              o_${j}_${c} = fma(vec4<f32>(p_${j}), vv, o_${j}_${c});`).join('\n')}
            }`,
    ).join('\n');
    return `${keyHead}            let kc = k - row_base + bs_${last};
${js.map((j) => `            var acc_${j} = vec4<f32>(0.0);`).join('\n')}
${dot}
${logits}${weights}
${axpy}`;
  }
  function multiQuerySetup(): string {
    const ql = `(QUERY_TILE_${last} / QUERIES_PER_INVOCATION)`;
    const decompose = axes
      .slice()
      .reverse()
      .map((a) =>
        a === last
          ? `  let qi_${a} = qf_${a} + i32(QUERIES_PER_INVOCATION * (lrest % ${ql}));\n  lrest = lrest / ${ql};`
          : `  let qi_${a} = qf_${a} + i32(lrest % QUERY_TILE_${a});\n  lrest = lrest / QUERY_TILE_${a};`,
      )
      .join('\n');
    const outerWindows = axes
      .filter((a) => a !== last)
      .map(
        (a) => `    let w_${a} = na_window_${a}(qi_${a} * params.dil_${a} + g_${a}, params.len_${a}, params.dil_${a}, params.str_${a});
    ws_${a} = (w_${a}.x - g_${a}) / params.dil_${a};
    we_${a} = ws_${a} + w_${a}.y;`,
      )
      .join('\n');
    const perQuery = js
      .map(
        (j) => `    if (valid_${j}) {
      let wq_${j} = na_window_${last}(${qiLast(j)} * params.dil_${last} + g_${last}, params.len_${last}, params.dil_${last}, params.str_${last});
      wl_${j}_s = (wq_${j}.x - g_${last}) / params.dil_${last};
      wl_${j}_e = wl_${j}_s + wq_${j}.y;
      let qbase_${j} = ((tok_base + ${qTok(j)}) * params.heads + h) * HEAD_DIM;
${Array.from({ length: D4L }, (_, c) => `      q_${j}_${c} = load_q(qbase_${j}, ${lc(c)})${QH ? '' : ' * params.scale_log2'};`).join('\n')}
    }`,
      )
      .join('\n');
    return `  // ---- this invocation's ${QP} queries (consecutive along the last axis), their exact windows, and the union
  // of their last-axis windows [ws, we), which the walk covers (the outer axes' windows are shared)
${LN === 1 ? '  var lrest = lid;' : '  let lane = lid % LANES;\n  var lrest = lid / LANES;'}
${decompose}
  let valid = ${axes.map((a) => `qi_${a} < n_${a}`).join(' && ')};
${js.map((j) => (j === 0 ? '  let valid_0 = valid;' : `  let valid_${j} = valid && ${qiLast(j)} < n_${last};`)).join('\n')}
${axes.map((a) => `  var ws_${a} = 0;\n  var we_${a} = 0;`).join('\n')}
${js.map((j) => `  var wl_${j}_s = 0;\n  var wl_${j}_e = 0;`).join('\n')}
${js.flatMap((j) => Array.from({ length: D4L }, (_, c) => `  var q_${j}_${c} = vec4<${QH ? 'f16' : 'f32'}>(0.0);`)).join('\n')}
  if (valid) {
${outerWindows ? `${outerWindows}\n` : ''}${perQuery}
    ws_${last} = wl_0_s;
    we_${last} = wl_0_e;
${js
  .slice(1)
  .map((j) => `    if (valid_${j}) {\n      ws_${last} = min(ws_${last}, wl_${j}_s);\n      we_${last} = max(we_${last}, wl_${j}_e);\n    }`)
  .join('\n')}
  }
${axes.filter((a) => a !== last).map((a) => `  let qr_${a} = qi_${a} - bs_${a};`).join('\n')}
${js.map((j) => `  let qr_${last}_${j} = ${qiLast(j)} - bs_${last};`).join('\n')}
${js.map((j) => softmaxStateDecl(DV4L, `_${j}`)).join('\n')}`;
  }
  function multiEpilogue(): string {
    return `  // ---- epilogue, per query: O = o / l in the storage type, natural-log LSE in f32
${js
  .map((j) => {
    const write = vecV
      ? Array.from({ length: DV4L }, (_, c) => `    output[obase / 4u + ${lc(c)}] = vec4<${T}>(o_${j}_${c} * inv_l);`).join('\n')
      : Array.from({ length: Dv }, (_, e) => `    output[obase + ${e}u] = ${T}(o_${j}_${e >> 2}.${AX[e & 3] as string} * inv_l);`).join('\n');
    const lse = spec.hasLse ? `\n${LN === 1 ? `    logsumexp[qrow] = ${softmaxLse(`_${j}`)};` : `    if (lane == 0u) { logsumexp[qrow] = ${softmaxLse(`_${j}`)}; }`}` : '';
    return `  if (valid_${j}) {
    let inv_l = 1.0 / l_run_${j};
    let qrow = (tok_base + ${qTok(j)}) * params.heads + h;
    let obase = qrow * HEAD_DIM_V;
${write}${lse}
  }`;
  })
  .join('\n')}`;
  }
  const body = QP > 1 ? multiBody() : `${keyHead}            var acc = vec4<f32>(0.0);
${qDot.replace(/^ {10}/gm, '            ')}
${logit}${spec.hasRpb ? `            sc = sc + f32(rpb[${rpbIndex()}]) * LOG2E;
` : ''}${update.replace(/^ {10}/gm, '            ')}`;
  // ---- key unroll (KU > 1): KU consecutive keys of a window row per step, then a one-key remainder loop
  const us = Array.from({ length: KU }, (_, u) => u);
  function unrolledBody(): string {
    const heads = us.map((u) => `${keyHeadFor(u === 0 ? 'k' : `(k + ${u})`, `_${u}`)}            var acc_${u} = vec4<f32>(0.0);`).join('\n');
    const dot = Array.from({ length: D4L }, (_, c) => us.map((u) => `            acc_${u} = fma(${qAt(c)}, ${kAt(c, `_${u}`)}, acc_${u});`).join('\n')).join('\n');
    const sums = us.map((u) => `            var sc_${u} = acc_${u}.x + acc_${u}.y + acc_${u}.z + acc_${u}.w;`).join('\n');
    const sh: string[] = [];
    for (let m = 1; m < LN; m *= 2) for (const u of us) sh.push(`            sc_${u} = sc_${u} + subgroupShuffleXor(sc_${u}, ${m}u);`);
    const scale = QH ? us.map((u) => `            sc_${u} = sc_${u} * params.scale_log2;`).join('\n') : '';
    const bias = spec.hasRpb
      ? us.map((u) => `            sc_${u} = sc_${u} + f32(rpb[${rpbIndexExpr(spec.kernelSize, (a) => (a === last ? `kr_${a}_${u} - qr_${a}` : `kr_${a} - qr_${a}`))}]) * LOG2E;`).join('\n')
      : '';
    const axpy = Array.from({ length: DV4L }, (_, c) =>
      us.map((u) => `            o_${c} = fma(vec4<f32>(p_${u}), ${vAt(c, `_${u}`)}, o_${c});`).join('\n'),
    ).join('\n');
    return [heads, dot, sums, sh.join('\n'), scale, bias, softmaxWeights(DV4L, KU, '            '), axpy].filter((x) => x.length > 0).join('\n');
  }
  // The loop over keys [lo, hi) of one window row, at the given indent.
  const keyLoop = (pad: string): string => {
    const one = `for (var k = lo; k < hi; k++) {
${body.replace(/^/gm, pad)}
${pad}      }`;
    if (KU === 1) return `${pad}      ${one}`;
    return `${pad}      var k = lo;
${pad}      for (; k + ${KU - 1} < hi; k += ${KU}) {
${unrolledBody().replace(/^/gm, pad)}
${pad}      }
${pad}      for (; k < hi; k++) {
${body.replace(/^/gm, pad)}
${pad}      }`;
  };
  let walk: string;
  if (r === 1) {
    walk = `      let row_base = 0;
      let lo = max(ws_0 - bs_0, c0i);
      let hi = min(we_0 - bs_0, c1i);
${keyLoop('')}`;
  } else if (r === 2) {
    walk = `      let r_lo = max(ws_0 - bs_0, c0i / bw_1);
      let r_hi = min(we_0 - bs_0, (c1i - 1) / bw_1 + 1);
      for (var kr_0 = r_lo; kr_0 < r_hi; kr_0++) {
        let row_base = kr_0 * bw_1;
        let lo = max(row_base + ws_1 - bs_1, c0i);
        let hi = min(row_base + we_1 - bs_1, c1i);
${keyLoop('  ')}
      }`;
  } else {
    walk = `      let plane = bw_1 * bw_2;
      let r_lo = max(ws_0 - bs_0, c0i / plane);
      let r_hi = min(we_0 - bs_0, (c1i - 1) / plane + 1);
      for (var kr_0 = r_lo; kr_0 < r_hi; kr_0++) {
        for (var kr_1 = ws_1 - bs_1; kr_1 < we_1 - bs_1; kr_1++) {
          let row_base = (kr_0 * bw_1 + kr_1) * bw_2;
          let lo = max(row_base + ws_2 - bs_2, c0i);
          let hi = min(row_base + we_2 - bs_2, c1i);
${keyLoop('    ')}
        }
      }`;
  }

  const outWrite = vecV
    ? Array.from({ length: DV4L }, (_, c) => `    output[obase / 4u + ${lc(c)}] = vec4<${T}>(o_${c} * inv_l);`).join('\n')
    : Array.from({ length: Dv }, (_, e) => `    output[obase + ${e}u] = ${T}(o_${e >> 2}.${AX[e & 3] as string} * inv_l);`).join('\n');

  const querySetup = QP > 1 ? multiQuerySetup() : `  // ---- this invocation's query (group coordinates qi_a) and its exact window [ws, we) in group coordinates
${LN === 1 ? '  var lrest = lid;' : '  let lane = lid % LANES;\n  var lrest = lid / LANES;'}
${axes
  .slice()
  .reverse()
  .map((a) => `  let qi_${a} = qf_${a} + i32(lrest % QUERY_TILE_${a});\n  lrest = lrest / QUERY_TILE_${a};`)
  .join('\n')}
  let valid = ${axes.map((a) => `qi_${a} < n_${a}`).join(' && ')};
${axes.map((a) => `  var ws_${a} = 0;\n  var we_${a} = 0;`).join('\n')}
${Array.from({ length: D4L }, (_, c) => `  var q_${c} = vec4<${QH ? 'f16' : 'f32'}>(0.0);`).join('\n')}
  if (valid) {
${axes
  .map(
    (a) => `    let w_${a} = na_window_${a}(qi_${a} * params.dil_${a} + g_${a}, params.len_${a}, params.dil_${a}, params.str_${a});
    ws_${a} = (w_${a}.x - g_${a}) / params.dil_${a};
    we_${a} = ws_${a} + w_${a}.y;`,
  )
  .join('\n')}
    let qtok = ${tokOf((a) => `qi_${a} * params.dil_${a} + g_${a}`)};
    let qbase = ((tok_base + qtok) * params.heads + h) * HEAD_DIM;
${Array.from({ length: D4L }, (_, c) => `    q_${c} = load_q(qbase, ${lc(c)})${QH ? '' : ' * params.scale_log2'};`).join('\n')}
  }
${axes.map((a) => `  let qr_${a} = qi_${a} - bs_${a};`).join('\n')}
${softmaxStateDecl(DV4L)}`;
  const epilogue = QP > 1 ? multiEpilogue() : `  // ---- epilogue: O = o / l in the storage type, natural-log LSE in f32
  if (valid) {
    let inv_l = 1.0 / l_run;
    let qtok = ${tokOf((a) => `qi_${a} * params.dil_${a} + g_${a}`)};
    let qrow = (tok_base + qtok) * params.heads + h;
    let obase = qrow * HEAD_DIM_V;
${outWrite}
${spec.hasLse ? (LN === 1 ? `    logsumexp[qrow] = ${softmaxLse()};` : `    if (lane == 0u) { logsumexp[qrow] = ${softmaxLse()}; }`) : ''}
  }`;
  const code = `${header}

${decls}
${uniformDecl(uniforms, bindings.length)}
${windowFunctions(spec.kernelSize, spec.causal)}
${rowLoader('load_q', 'query', D, vecQK, QH ? 'f16' : 'f32')}
${rowLoader('load_k', 'key', D, vecQK, S)}
${rowLoader('load_v', 'value', Dv, vecV, S)}

var<workgroup> k_sh: array<vec4<${S}>, ${BK * D4}>;
var<workgroup> v_sh: array<vec4<${S}>, ${BK * DV4}>;

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wg_id: vec3<u32>, @builtin(num_workgroups) wg_num: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
${forwardWorkgroupPrologue(r)}
${querySetup}

  // ---- walk the union key box in chunks of KEY_CHUNK keys (row-major over the box)
  for (var ch = 0u; ch < n_chunks; ch++) {
    let c0 = ch * KEY_CHUNK;
${forwardStageChunk(r, (rr, c) => `rr * D4 + ${col(c, rr, KSW)}`, (rr, c) => `rr * DV4 + ${col(c, rr, VSW)}`)}    workgroupBarrier();
    if (valid) {
      let c0i = i32(c0);
      let c1i = i32(min(c0 + KEY_CHUNK, box_n));
${walk}
    }
    workgroupBarrier();
  }

${epilogue}
}
`;
  return {
    key,
    code,
    entryPoint: 'main',
    workgroupSize: [WG, 1, 1],
    bindings,
    uniforms,
    workgroupBytes: fusedForwardWorkgroupBytes(spec),
    features: [...dtypeFeatures(spec.dtype), ...(LN > 1 ? ['subgroups'] : [])],
  };
}
