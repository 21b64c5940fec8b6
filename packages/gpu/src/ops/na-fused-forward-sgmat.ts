/**
 * Tensor-core fused NA forward through subgroup matrices (f16 -> f32, 16x16x16): planning, config choice and
 * dispatch of `@natten-web/wgsl`'s `generateFusedForwardSgmat`. Used by `fusedForward` when the adapter has
 * `chromium-experimental-subgroup-matrix` with an f16 16x16x16 config and a fixed subgroup size, for float16
 * problems whose head dims are multiples of 16.
 */
import {
  checkFusedForward,
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
  tileShapes,
} from '@natten-web/wgsl';
import { type DispatchCommand, foldWorkgroups, type GpuContext, type GpuTensor } from '../context.ts';

/** A tensor-core forward configuration. */
export interface SgmatForwardConfig {
  readonly path: 'sgmat';
  /** Query tile per axis; product 16, 32 or 64. */
  readonly queryTile: readonly number[];
  /** Keys staged per chunk: 32 or 64. */
  readonly keyChunk: 32 | 64;
}

/** The fixed subgroup size the tensor-core path can use on this context, or a reason it cannot run. */
export function sgmatAvailability(ctx: GpuContext): { subgroupSize: number } | { why: string } {
  if (!ctx.features.has('chromium-experimental-subgroup-matrix')) return { why: "no 'chromium-experimental-subgroup-matrix' feature" };
  if (!ctx.hasF16) return { why: "no 'shader-f16' feature" };
  const f16 = ctx.subgroupMatrix.some(
    (c) => c.componentType === 'f16' && c.resultComponentType === 'f32' && c.M === SGMAT_FRAGMENT && c.N === SGMAT_FRAGMENT && c.K === SGMAT_FRAGMENT,
  );
  if (!f16) return { why: 'no f16 -> f32 16x16x16 subgroup-matrix config' };
  const { subgroupMinSize: lo, subgroupMaxSize: hi } = ctx.adapterInfo;
  if (lo === undefined || hi === undefined || lo !== hi || ![16, 32, 64].includes(hi)) {
    return { why: `subgroup size must be fixed at 16, 32 or 64 (adapter reports ${lo}..${hi})` };
  }
  return { subgroupSize: hi };
}

/** Why the tensor-core path cannot run this problem (dtype, head dims), or undefined. */
export function sgmatProblemFit(problem: FusedProblem): string | undefined {
  if (problem.dtype !== 'float16') return 'the tensor-core path needs float16 inputs';
  if (problem.dim % SGMAT_FRAGMENT !== 0 || problem.dimV % SGMAT_FRAGMENT !== 0) {
    return `head dims ${problem.dim}/${problem.dimV} are not multiples of ${SGMAT_FRAGMENT}`;
  }
  if (problem.dim > 256 || problem.dimV > 256) return `head dims ${problem.dim}/${problem.dimV} exceed 256`;
  return undefined;
}

function spec(problem: FusedProblem, config: SgmatForwardConfig, subgroupSize: number, subgroupIdBuiltin: boolean): FusedForwardSgmatSpec {
  return {
    rank: problem.rank,
    kernelSize: [...problem.params.kernelSize],
    causal: [...problem.params.isCausal],
    dim: problem.dim,
    dimV: problem.dimV,
    queryTile: [...config.queryTile],
    keyChunk: config.keyChunk,
    subgroupSize,
    subgroupIdBuiltin,
    hasRpb: problem.hasRpb,
    hasLse: problem.hasLse,
  };
}

/** Keys visited per query (box size over real queries), the cost the default minimizes. */
function visitsPerQuery(problem: FusedProblem, tile: readonly number[]): number {
  let visits = 1;
  let real = 1;
  for (let a = 0; a < problem.rank; a++) {
    const n = Math.ceil((problem.spatial[a] as number) / (problem.params.dilation[a] as number));
    const t = tile[a] as number;
    const K = problem.params.kernelSize[a] as number;
    const tiles = Math.ceil(n / t);
    // Padded rows cost as much as real ones: charge tiles * t rows.
    visits *= tiles * Math.min(t + K - 1, n) * (t / Math.min(t, n));
    real *= n;
  }
  return visits / real;
}

/** Every tensor-core config that fits this device's workgroup memory, for a problem. */
export function enumerateSgmatConfigs(ctx: GpuContext, problem: FusedProblem): SgmatForwardConfig[] {
  const avail = sgmatAvailability(ctx);
  if ('why' in avail || sgmatProblemFit(problem) !== undefined) return [];
  const out: SgmatForwardConfig[] = [];
  for (const bq of [16, 32, 64]) {
    for (const tile of tileShapes(problem.rank, bq)) {
      for (const keyChunk of [32, 64] as const) {
        const config: SgmatForwardConfig = { path: 'sgmat', queryTile: tile, keyChunk };
        const s = spec(problem, config, avail.subgroupSize, true);
        if (fusedForwardSgmatSpecProblem(s) !== undefined) continue;
        if (fusedForwardSgmatWorkgroupBytes(s) > ctx.limits.maxComputeWorkgroupStorageSize) continue;
        if (s.queryTile.length && product(s.queryTile) / SGMAT_FRAGMENT * avail.subgroupSize > ctx.limits.maxComputeInvocationsPerWorkgroup) continue;
        out.push(config);
      }
    }
  }
  return out;
}

/** Heuristic: the query tile (largest product that fits) with the fewest key visits per query; 64-key chunks. */
export function defaultSgmatConfig(ctx: GpuContext, problem: FusedProblem): SgmatForwardConfig | undefined {
  const all = enumerateSgmatConfigs(ctx, problem);
  let best: SgmatForwardConfig | undefined;
  let bestScore = Number.POSITIVE_INFINITY;
  for (const c of all) {
    const bq = product(c.queryTile);
    // Fewer rows per workgroup means more Q/K reloads and less work per barrier: prefer 64, then 32.
    const score = visitsPerQuery(problem, c.queryTile) * (bq === 64 ? 1 : bq === 32 ? 1.15 : 1.5) * (c.keyChunk === 64 ? 1 : 1.05);
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
  options: { subgroupIdBuiltin?: boolean } = {},
): { kernel: GeneratedKernel; command: DispatchCommand; config: SgmatForwardConfig; problem: FusedProblem } {
  const op = opName(rank, 'forward');
  const problem = checkFusedForward(op, rank, { ...(args as FusedForwardArgs<TensorLike>), queryTileSize: undefined, keyTileSize: undefined }, FUSED_FORWARD_TILES);
  const avail = sgmatAvailability(ctx);
  if ('why' in avail) throw new Error(`${op}: tensor-core path unavailable: ${avail.why}`);
  const fit = sgmatProblemFit(problem);
  if (fit !== undefined) throw new Error(`${op}: tensor-core path cannot run this problem: ${fit}`);
  const cfg = config ?? defaultSgmatConfig(ctx, problem);
  if (!cfg) throw new Error(`${op}: no tensor-core config fits this device`);
  const kernel = generateFusedForwardSgmat(spec(problem, cfg, avail.subgroupSize, options.subgroupIdBuiltin ?? true));
  const { uniforms, workgroups } = fusedForwardDispatch(problem, cfg.queryTile);
  const buffers: GPUBuffer[] = [args.query.buffer, args.key.buffer, args.value.buffer];
  if (problem.hasRpb && args.rpb) buffers.push(args.rpb.buffer);
  buffers.push(args.output.buffer);
  if (problem.hasLse && args.logsumexp) buffers.push(args.logsumexp.buffer);
  return {
    kernel,
    command: { kernel, buffers, uniforms, workgroups: foldWorkgroups(workgroups, ctx.limits.maxComputeWorkgroupsPerDimension) },
    config: cfg,
    problem,
  };
}

/** Run the tensor-core forward (throws when the path is unavailable for this device or problem). */
export async function fusedForwardSgmat(
  ctx: GpuContext,
  rank: NaRank,
  args: FusedForwardArgs<GpuTensor>,
  config?: SgmatForwardConfig,
  options: { subgroupIdBuiltin?: boolean } = {},
): Promise<void> {
  const { command } = planFusedForwardSgmat(ctx, rank, args, config, options);
  await ctx.dispatch([command], opName(rank, 'forward'));
}
