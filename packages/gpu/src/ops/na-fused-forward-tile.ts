/**
 * Dense register-tiled fused NA forward (`generateFusedForwardTile` in @natten-web/wgsl): planning, config choice
 * and dispatch. Experimental and opt-in (`fusedForwardTile`; `fusedForward` never chooses it): needs subgroups at
 * least BK/4 wide, head_dim a multiple of 4 and value head_dim a multiple of BK (4 x the invocations sharing a
 * query row). Meant for large windows, where a query tile's union key box is mostly inside every window.
 */
import { NattenArgumentError, NattenUnsupportedError, type FusedForwardArgs, type FusedProblem, type NaRank, formatShape, opName, product, type TensorLike } from '@natten-web/core';
import {
  type FusedForwardTileSpec,
  forwardProblemFields,
  fusedForwardDispatch,
  fusedForwardTileSpecProblem,
  type GeneratedKernel,
  generateFusedForwardTile,
  TILE_FORWARD_KEY_CHUNKS,
  tileDensity,
  tileForwardInvocations,
  tileForwardRowLanes,
  tileForwardWorkgroupBytes,
  tileShapes,
} from '@natten-web/wgsl';
import type { DispatchCommand, GpuContext, GpuTensor } from '../context.ts';
import { checkFusedForwardGpu, fusedForwardCommand } from './na-fused-forward.ts';

/** A configuration of the tile path. */
export interface TileForwardConfig {
  readonly path: 'tile';
  /** Query tile per axis (group coordinates); product 16, 32 or 64. */
  readonly queryTile: readonly number[];
  /** Keys per chunk: 16 or 32. */
  readonly keyChunk: 16 | 32;
  /** Workgroup-memory staging: 'f16' (float16 inputs only) or 'f32'; default f16 for float16 inputs. */
  readonly stage?: 'f16' | 'f32';
}

function spec(problem: FusedProblem, config: TileForwardConfig): FusedForwardTileSpec {
  return {
    ...forwardProblemFields(problem),
    queryTile: [...config.queryTile],
    keyChunk: config.keyChunk,
    stage: config.stage ?? (problem.dtype === 'float16' ? 'f16' : 'f32'),
  };
}

/** Why a config cannot run a problem on this device, or undefined. */
export function tileForwardConfigProblem(ctx: GpuContext, problem: FusedProblem, config: TileForwardConfig): string | undefined {
  const s = spec(problem, config);
  const why = fusedForwardTileSpecProblem(s);
  if (why !== undefined) return why;
  if (!ctx.hasSubgroups) return "the tile path needs the WebGPU feature 'subgroups'";
  const lanes = tileForwardRowLanes(s);
  const sg = ctx.adapterInfo.subgroupMinSize ?? 0;
  if (sg < lanes) return `key chunk ${config.keyChunk} shares each query row over ${lanes} invocations, more than this adapter's minimum subgroup size ${sg}`;
  const inv = tileForwardInvocations(s);
  if (inv % sg !== 0) return `${inv} invocations per workgroup are not a multiple of this adapter's minimum subgroup size ${sg}`;
  if (inv > Math.min(ctx.limits.maxComputeInvocationsPerWorkgroup, ctx.limits.maxComputeWorkgroupSizeX)) return `${inv} invocations per workgroup exceed this device's limit`;
  const bytes = tileForwardWorkgroupBytes(s);
  if (bytes > ctx.limits.maxComputeWorkgroupStorageSize) {
    return `query tile ${formatShape(config.queryTile)} with key chunk ${config.keyChunk} needs ${bytes} bytes of workgroup memory; this device allows ${ctx.limits.maxComputeWorkgroupStorageSize}`;
  }
  return undefined;
}

/** Every tile-path config that runs a problem on this device (query tiles of product 16-64, chunks 16 and 32). */
export function enumerateTileForwardConfigs(ctx: GpuContext, problem: FusedProblem): TileForwardConfig[] {
  const out: TileForwardConfig[] = [];
  for (const bq of [16, 32, 64]) {
    for (const queryTile of tileShapes(problem.rank, bq)) {
      for (const keyChunk of TILE_FORWARD_KEY_CHUNKS) {
        const c: TileForwardConfig = { path: 'tile', queryTile, keyChunk };
        if (tileForwardConfigProblem(ctx, problem, c) === undefined) out.push(c);
      }
    }
  }
  return out;
}

/**
 * Heuristic: a query tile of 32 (64 invocations with key chunks of 32, where they fit; else any valid config) of
 * the shape with the highest density (`tileDensity`: the share of the dense score work inside the windows), ties
 * to the shape whose later axes are larger (memory-contiguous rows).
 */
export function defaultTileForwardConfig(ctx: GpuContext, problem: FusedProblem): TileForwardConfig | undefined {
  const ext = problem.spatial.map((L, a) => Math.ceil(L / (problem.params.dilation[a] as number)));
  const all = enumerateTileForwardConfigs(ctx, problem);
  const preferred = all.filter((c) => product(c.queryTile) === 32 && c.keyChunk === 32);
  let best: TileForwardConfig | undefined;
  let bestScore = Number.NEGATIVE_INFINITY;
  for (const c of preferred.length > 0 ? preferred : all) {
    // tileShapes lists shapes with larger leading factors first, so '>=' keeps the last of equal densities.
    const score = tileDensity(problem.params.kernelSize, c.queryTile, ext);
    if (score >= bestScore) {
      best = c;
      bestScore = score;
    }
  }
  return best;
}

/** Kernel and dispatch for one call on the tile path (validated; no GPU work). */
export function planFusedForwardTile(
  ctx: GpuContext,
  rank: NaRank,
  args: FusedForwardArgs<GpuTensor>,
  config?: TileForwardConfig,
): { kernel: GeneratedKernel; command: DispatchCommand; config: TileForwardConfig; problem: FusedProblem } {
  const op = opName(rank, 'forward');
  const { problem } = checkFusedForwardGpu(ctx, rank, { ...(args as FusedForwardArgs<TensorLike>), queryTileSize: undefined, keyTileSize: undefined, lanes: undefined });
  const cfg = config ?? defaultTileForwardConfig(ctx, problem);
  if (!cfg) {
    const why = tileForwardConfigProblem(ctx, problem, { path: 'tile', queryTile: tileShapes(rank, 32)[0] as number[], keyChunk: 32 });
    throw new NattenUnsupportedError(`${op}: the tile path cannot run this problem here: ${why ?? 'no config fits'}`);
  }
  const why = tileForwardConfigProblem(ctx, problem, cfg);
  if (why !== undefined) throw new NattenArgumentError(`${op}: tile path query_tile=${formatShape(cfg.queryTile)}, key_chunk=${cfg.keyChunk} cannot run here: ${why}`);
  const kernel = generateFusedForwardTile(spec(problem, cfg));
  return { kernel, command: fusedForwardCommand(ctx, kernel, problem, args, fusedForwardDispatch(problem, cfg.queryTile)), config: cfg, problem };
}

/** Run the forward on the tile path (throws when it cannot run this problem on this device). */
export async function fusedForwardTile(ctx: GpuContext, rank: NaRank, args: FusedForwardArgs<GpuTensor>, config?: TileForwardConfig): Promise<void> {
  const { command } = planFusedForwardTile(ctx, rank, args, config);
  await ctx.dispatch([command], opName(rank, 'forward'));
}
