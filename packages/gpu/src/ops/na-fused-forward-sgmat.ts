/**
 * Tensor-core fused NA forward, generation 2 (one subgroup per workgroup, K/V fragments from storage): planning,
 * config choice and dispatch of `@natten-web/wgsl`'s `generateFusedForwardSgmat`. Opt-in (`fusedForwardSgmat`) and
 * superseded by the generation-3 mma path (`fusedForwardMma`), which `fusedForward` routes to; this one measured
 * 2-7x slower than the plain path. Needs `chromium-experimental-subgroup-matrix` with an f16 16x16x16 config and
 * a fixed subgroup size, float16 problems and head dims that are multiples of 16. Its adapter and problem checks
 * (`subgroupMatrixF16Missing`, `sgmatProblemFit`) are shared with the mma paths.
 */
import {
  checkFusedForward,
  NattenArgumentError,
  NattenUnsupportedError,
  type FusedForwardArgs,
  type FusedProblem,
  type NaRank,
  opName,
  product,
  type TensorLike,
} from '@natten-web/core';
import {
  FUSED_FORWARD_TILES,
  type FusedForwardSgmatSpec,
  fusedForwardDispatch,
  fusedForwardSgmatSpecProblem,
  fusedForwardSgmatWorkgroupBytes,
  generateFusedForwardSgmat,
  type GeneratedKernel,
  SGMAT_FRAGMENT,
  SGMAT_KEY_STEPS,
  SGMAT_QUERY_PATCHES,
  sgmatBlockShape,
  tileShapes,
} from '@natten-web/wgsl';
import { type DispatchCommand, type GpuContext, type GpuTensor } from '../context.ts';
import { fusedForwardCommand } from './na-fused-forward.ts';

/** A tensor-core forward configuration. */
export interface SgmatForwardConfig {
  readonly path: 'sgmat';
  /** Query patch per axis; product 16 or 32 (one or two 16-row blocks per subgroup). */
  readonly queryTile: readonly number[];
  /** Keys per softmax step: 32 or 64. */
  readonly keyChunk: 32 | 64;
  /** Diagnostic: gather K (and V) fragments through workgroup memory. */
  readonly gather?: 'k' | 'kv';
  /** Experimental, not yet measured on a device: see `FusedForwardSgmatSpec.directWalk`. */
  readonly directWalk?: boolean;
  /** Experimental, not yet measured on a device: see `FusedForwardSgmatSpec.skipRows`. */
  readonly skipRows?: boolean;
  /** Timing diagnostic only (wrong results): see `FusedForwardSgmatSpec.probe`. */
  readonly probe?: 'no-softmax' | 'no-pv' | 'fixed-kv';
}

/**
 * Why this context has no f16 -> f32 16x16x16 subgroup-matrix multiply (the feature, `shader-f16`, the config), or
 * undefined when it has one. Both tensor-core paths need it.
 */
export function subgroupMatrixF16Missing(ctx: GpuContext): string | undefined {
  if (!ctx.features.has('chromium-experimental-subgroup-matrix')) return "no 'chromium-experimental-subgroup-matrix' feature";
  if (!ctx.hasF16) return "no 'shader-f16' feature";
  const f16 = ctx.subgroupMatrix.some(
    (c) => c.componentType === 'f16' && c.resultComponentType === 'f32' && c.M === SGMAT_FRAGMENT && c.N === SGMAT_FRAGMENT && c.K === SGMAT_FRAGMENT,
  );
  return f16 ? undefined : 'no f16 -> f32 16x16x16 subgroup-matrix config';
}

/** The fixed subgroup size the tensor-core path can use on this context, or a reason it cannot run. */
export function sgmatAvailability(ctx: GpuContext): { subgroupSize: number } | { why: string } {
  const missing = subgroupMatrixF16Missing(ctx);
  if (missing !== undefined) return { why: missing };
  const { subgroupMinSize: lo, subgroupMaxSize: hi } = ctx.adapterInfo;
  if (lo === undefined || hi === undefined || lo !== hi || ![16, 32, 64].includes(hi)) {
    return { why: `subgroup size must be fixed at 16, 32 or 64 (adapter reports ${lo}..${hi})` };
  }
  return { subgroupSize: hi };
}

/** Why the tensor-core path cannot run this problem (dtype, head dims), or undefined. */
export function sgmatProblemFit(problem: FusedProblem): string | undefined {
  if (problem.dtype !== 'float16') return 'the tensor-core path needs float16 inputs';
  return tensorCoreHeadDimFit(problem);
}

/** Why the tensor-core kernels cannot take these head dims (multiples of 16, at most 256), or undefined. */
export function tensorCoreHeadDimFit(problem: Pick<FusedProblem, 'dim' | 'dimV'>): string | undefined {
  if (problem.dim % SGMAT_FRAGMENT !== 0 || problem.dimV % SGMAT_FRAGMENT !== 0) {
    return `head dims ${problem.dim}/${problem.dimV} are not multiples of ${SGMAT_FRAGMENT}`;
  }
  if (problem.dim > 256 || problem.dimV > 256) return `head dims ${problem.dim}/${problem.dimV} exceed 256`;
  return undefined;
}

function spec(problem: FusedProblem, config: SgmatForwardConfig, subgroupSize: number): FusedForwardSgmatSpec {
  return {
    rank: problem.rank,
    kernelSize: [...problem.params.kernelSize],
    causal: [...problem.params.isCausal],
    dim: problem.dim,
    dimV: problem.dimV,
    queryTile: [...config.queryTile],
    keyChunk: config.keyChunk,
    subgroupSize,
    hasRpb: problem.hasRpb,
    hasLse: problem.hasLse,
    ...(config.gather ? { gather: config.gather } : {}),
    ...(config.directWalk ? { directWalk: true } : {}),
    ...(config.skipRows ? { skipRows: true } : {}),
    ...(config.probe ? { probe: config.probe } : {}),
  };
}

/**
 * Relative cost per real query of a config: the matrix work of each row block (box rows it needs x 16-key
 * fragments along the last axis), the K/V fragment loads (shared by the row blocks of a patch), and a fixed
 * cost per softmax step (two barriers), over real queries; padded patches cost as much as full ones.
 */
export function sgmatConfigCost(problem: FusedProblem, config: SgmatForwardConfig): number {
  const r = problem.rank;
  const last = r - 1;
  const bq = product(config.queryTile);
  const mb = bq / SGMAT_FRAGMENT;
  const blk = sgmatBlockShape(config.queryTile);
  let patches = 1;
  let real = 1;
  let rowsWg = 1;
  let rowsBlk = 1;
  let frags = 1;
  for (let a = 0; a < r; a++) {
    const n = Math.ceil((problem.spatial[a] as number) / (problem.params.dilation[a] as number));
    const t = config.queryTile[a] as number;
    const K = problem.params.kernelSize[a] as number;
    patches *= Math.ceil(n / t);
    real *= n;
    if (a === last) {
      frags = Math.ceil(Math.min(t + K - 1, n) / SGMAT_FRAGMENT);
    } else {
      rowsWg *= Math.min(t + K - 1, n);
      rowsBlk *= Math.min((blk[a] as number) + K - 1, n);
    }
  }
  const steps = rowsWg * Math.ceil(frags / (config.keyChunk / SGMAT_FRAGMENT));
  const keys = frags * SGMAT_FRAGMENT;
  const d = (problem.dim + problem.dimV) / 128;
  // Per patch: MMAs (row blocks x rows x keys), fragment loads (rows x keys, shared), steps.
  const perPatch = d * (mb * rowsBlk * keys + 0.5 * rowsWg * keys) + 48 * steps;
  return (patches * perPatch) / real;
}

/** Every tensor-core config that fits this device's workgroup memory, for a problem. */
export function enumerateSgmatConfigs(ctx: GpuContext, problem: FusedProblem): SgmatForwardConfig[] {
  const avail = sgmatAvailability(ctx);
  if ('why' in avail || sgmatProblemFit(problem) !== undefined) return [];
  if (avail.subgroupSize > ctx.limits.maxComputeInvocationsPerWorkgroup) return [];
  const ext = problem.spatial.map((L, a) => Math.ceil(L / (problem.params.dilation[a] as number)));
  const out: SgmatForwardConfig[] = [];
  for (const bq of SGMAT_QUERY_PATCHES) {
    for (const tile of tileShapes(problem.rank, bq)) {
      // Factors beyond the next power of two of the group extent only add padded queries.
      if (tile.some((t, a) => t > 2 ** Math.ceil(Math.log2(Math.max(1, ext[a] as number))))) continue;
      for (const keyChunk of SGMAT_KEY_STEPS) {
        const config: SgmatForwardConfig = { path: 'sgmat', queryTile: tile, keyChunk };
        const s = spec(problem, config, avail.subgroupSize);
        if (fusedForwardSgmatSpecProblem(s) !== undefined) continue;
        if (fusedForwardSgmatWorkgroupBytes(s) > ctx.limits.maxComputeWorkgroupStorageSize) continue;
        out.push(config);
      }
    }
  }
  if (out.length === 0) {
    // Groups smaller than every patch shape filter: fall back to the unfiltered 16-query shapes.
    for (const tile of tileShapes(problem.rank, 16)) out.push({ path: 'sgmat', queryTile: tile, keyChunk: 32 });
  }
  return out;
}

/** Heuristic: the config with the lowest `sgmatConfigCost`. */
export function defaultSgmatConfig(ctx: GpuContext, problem: FusedProblem): SgmatForwardConfig | undefined {
  let best: SgmatForwardConfig | undefined;
  let bestScore = Number.POSITIVE_INFINITY;
  for (const c of enumerateSgmatConfigs(ctx, problem)) {
    const score = sgmatConfigCost(problem, c);
    if (score < bestScore) {
      best = c;
      bestScore = score;
    }
  }
  return best;
}

/** Kernel and dispatch for one call on the tensor-core path (validated; no GPU work). */
export function planFusedForwardSgmat(
  ctx: GpuContext,
  rank: NaRank,
  args: FusedForwardArgs<GpuTensor>,
  config?: SgmatForwardConfig,
): { kernel: GeneratedKernel; command: DispatchCommand; config: SgmatForwardConfig; problem: FusedProblem } {
  const op = opName(rank, 'forward');
  const problem = checkFusedForward(op, rank, { ...(args as FusedForwardArgs<TensorLike>), queryTileSize: undefined, keyTileSize: undefined, lanes: undefined }, FUSED_FORWARD_TILES);
  const avail = sgmatAvailability(ctx);
  if ('why' in avail) throw new NattenUnsupportedError(`${op}: tensor-core path unavailable: ${avail.why}`);
  const fit = sgmatProblemFit(problem);
  if (fit !== undefined) throw new NattenArgumentError(`${op}: tensor-core path cannot run this problem: ${fit}`);
  const cfg = config ?? defaultSgmatConfig(ctx, problem);
  if (!cfg) throw new NattenUnsupportedError(`${op}: no tensor-core config fits this device's limits (workgroup memory ${ctx.limits.maxComputeWorkgroupStorageSize} bytes)`);
  const kernel = generateFusedForwardSgmat(spec(problem, cfg, avail.subgroupSize));
  return { kernel, command: fusedForwardCommand(ctx, kernel, problem, args, fusedForwardDispatch(problem, cfg.queryTile)), config: cfg, problem };
}

/** Run the tensor-core forward (throws when the path is unavailable for this device or problem). */
export async function fusedForwardSgmat(
  ctx: GpuContext,
  rank: NaRank,
  args: FusedForwardArgs<GpuTensor>,
  config?: SgmatForwardConfig,
): Promise<void> {
  const { command } = planFusedForwardSgmat(ctx, rank, args, config);
  await ctx.dispatch([command], opName(rank, 'forward'));
}
