import {
  checkFusedBackward,
  checkNumSplitsKey,
  checkTiles,
  formatShape,
  type FusedBackwardArgs,
  type FusedBackwardProblem,
  NattenArgumentError,
  NattenUnsupportedError,
  type NaRank,
  opName,
  type TensorLike,
} from '@natten-web/core';
import {
  type BackwardLimits,
  checkGpuDType,
  defaultFusedBackwardConfig,
  FUSED_BACKWARD_TILES,
  type FusedBackwardConfig,
  fusedBackwardLanesProblem,
  fusedBackwardTileProducts,
  type GpuDType,
  planFusedBackward,
  withDefaultBackwardUnroll,
} from '@natten-web/wgsl';
import type { DispatchCommand, GpuContext, GpuTensor } from '../context.ts';
import { defaultBackwardMma, fusedBackwardMma, type MmaBackwardConfig } from './na-fused-backward-mma.ts';
import { mayRouteToMma } from './na-fused-forward-mma.ts';
import { callKey, checkScratchSize, defineGpuOp, type GpuOp, kernelLimits, memoPerContext, memoPure, RPB_SCRATCH_HINT, runPlan } from './op.ts';

/** The limits backward config selection reads (`kernelLimits`). */
export function backwardKernelLimits(ctx: GpuContext): BackwardLimits {
  return kernelLimits(ctx);
}

/** A validated backward problem on this device, with the config that will run. */
export interface FusedBackwardSelection {
  readonly problem: FusedBackwardProblem & { readonly dtype: GpuDType };
  readonly config: FusedBackwardConfig;
}

/**
 * A backward's kernels, dispatches and scratch sizes on this device, generated once per (problem, config): the
 * argument check reads its scratch sizes and the run its dispatches.
 */
function backwardPlan(ctx: GpuContext, problem: FusedBackwardSelection['problem'], config: FusedBackwardConfig): ReturnType<typeof planFusedBackward> {
  const maxDim = ctx.limits.maxComputeWorkgroupsPerDimension;
  return memoPure('fused-backward-plan', [problem, config, maxDim], () => planFusedBackward(problem, config, maxDim));
}

/**
 * Validate `na{1,2,3}d_backward` arguments for WebGPU: core's rules (shapes, dtypes, params, rpb, num_splits_key)
 * with this backend's tile table (products that fit the device's workgroup memory and invocation limits for this
 * head dim and dtype), then GPU rules (float32/float16, shader-f16, scratch sizes). Returns the config to run:
 * the given tiles (with the args' `lanes`, checked against the device's subgroups), or the default config
 * (lane-split on devices with subgroups at least 16 wide: `defaultFusedBackwardConfig`).
 */
export function selectFusedBackward(ctx: GpuContext, rank: NaRank, args: FusedBackwardArgs<TensorLike>): FusedBackwardSelection {
  return memoPerContext(ctx, 'fused-backward-select', callKey(rank, args), () => {
    const op = opName(rank, 'backward');
    const base = checkFusedBackward(op, rank, args, FUSED_BACKWARD_TILES);
    const dtype = checkGpuDType(op, base.dtype);
    if (dtype === 'float16' && !ctx.hasF16) {
      throw new NattenUnsupportedError(`${op}: float16 needs the WebGPU feature 'shader-f16', which this adapter does not offer; use float32`);
    }
    const problem = { ...base, dtype };
    const products = fusedBackwardTileProducts(problem, ctx.limits);
    if (products.length === 0) {
      throw new NattenArgumentError(
        `${op}: head_dim=${problem.dim} and value head_dim=${problem.dimV} (${dtype}) are too large for every backward tile of this device (workgroup memory ${ctx.limits.maxComputeWorkgroupStorageSize} bytes); the smallest tile (16 rows) needs 16*(head_dim+value_head_dim)*bytes`,
      );
    }
    let config: FusedBackwardConfig;
    const tiles = checkTiles(op, rank, args.queryTileSize, args.keyTileSize, products, 'backward');
    if (tiles) {
      config = {
        queryTile: tiles.queryTile,
        keyTile: tiles.keyTile,
        numSplitsKey: base.numSplitsKey,
        computeDeltaWithTorch: base.computeDeltaWithTorch,
        ...(args.lanes !== undefined && args.lanes > 1 ? { lanes: args.lanes } : {}),
      };
      // The hardware-class unroll applies to given tiles as to the default and the tuner's configs (it needs lanes).
      if (config.lanes !== undefined) config = withDefaultBackwardUnroll(problem, config, backwardKernelLimits(ctx));
      // Only lane-split configs depend on the device's subgroups (lanes 1 is the single-lane config, core-validated).
      const why = config.lanes === undefined ? undefined : fusedBackwardLanesProblem(problem, config, backwardKernelLimits(ctx));
      if (why !== undefined) {
        throw new NattenArgumentError(
          `${op}: query_tile_size=${formatShape(config.queryTile)}, key_tile_size=${formatShape(config.keyTile)}, lanes=${String(config.lanes ?? 1)} cannot run here: ${why}`,
        );
      }
    } else {
      const def = defaultFusedBackwardConfig(problem, backwardKernelLimits(ctx));
      if (!def) throw new NattenArgumentError(`${op}: no backward tile configuration fits this device`);
      config = {
        ...def,
        numSplitsKey: checkNumSplitsKey(op, rank, args.numSplitsKey, problem.spatial, problem.params, def.keyTile),
      };
    }
    const plan = backwardPlan(ctx, problem, config);
    for (const [name, elems] of Object.entries(plan.scratch)) {
      checkScratchSize(ctx, op, name, elems, name === 'dqPartial' ? '; use fewer num_splits_key' : name === 'dsScratch' ? RPB_SCRATCH_HINT : '');
    }
    return { problem, config };
  });
}

/** The dispatches of one backward (bound to the given tensors) plus the scratch buffers they use. */
export interface FusedBackwardCommands {
  readonly selection: FusedBackwardSelection;
  readonly commands: readonly DispatchCommand[];
  /** Destroy the scratch buffers (delta, split partials, dS). */
  release(): void;
}

/**
 * Validate, pick the config (the args' tiles/splits/delta mode, or `config` when given, or the default) and build
 * the dispatch list; used by the op itself and by timing (bench, autotune) through `timeDispatch`.
 */
export function buildFusedBackward(ctx: GpuContext, rank: NaRank, args: FusedBackwardArgs<GpuTensor>, config?: FusedBackwardConfig): FusedBackwardCommands {
  const op = opName(rank, 'backward');
  const forced = config
    ? {
        ...args,
        queryTileSize: config.queryTile,
        keyTileSize: config.keyTile,
        numSplitsKey: config.numSplitsKey,
        computeDeltaWithTorch: config.computeDeltaWithTorch,
        lanes: config.lanes,
      }
    : args;
  const selected = selectFusedBackward(ctx, rank, forced);
  // Rows per invocation and walk unrolls (experimental) are not NATTEN arguments: they come only with an explicit
  // config, and are validated (fusedBackwardLanesProblem) before any GPU work.
  const q = config?.queriesPerInvocation ?? 1;
  const k = config?.keysPerInvocation ?? 1;
  const ku = config?.keyUnroll ?? 1;
  const qu = config?.queryUnroll ?? 1;
  let selection = selected;
  if (q > 1 || k > 1 || ku !== 1 || qu !== 1) {
    const grouped = {
      ...selected.config,
      ...(q > 1 ? { queriesPerInvocation: q } : {}),
      ...(k > 1 ? { keysPerInvocation: k } : {}),
      ...(ku !== 1 ? { keyUnroll: ku } : {}),
      ...(qu !== 1 ? { queryUnroll: qu } : {}),
    };
    const why = fusedBackwardLanesProblem(selected.problem, grouped, backwardKernelLimits(ctx));
    if (why !== undefined) {
      const knobs = [
        ...(q > 1 || k > 1 ? [`queriesPerInvocation=${q}`, `keysPerInvocation=${k}`] : []),
        ...(ku !== 1 ? [`keyUnroll=${ku}`] : []),
        ...(qu !== 1 ? [`queryUnroll=${qu}`] : []),
      ];
      throw new NattenArgumentError(`${op}: ${knobs.join(', ')} cannot run here: ${why}`);
    }
    selection = { ...selected, config: grouped };
  }
  const plan = backwardPlan(ctx, selection.problem, selection.config);
  const scratch = new Map<string, GpuTensor>();
  const release = (): void => {
    for (const t of scratch.values()) ctx.freeTensor(t);
    scratch.clear();
  };
  try {
    for (const [name, elems] of Object.entries(plan.scratch)) scratch.set(name, ctx.createTensor([elems], 'float32', `${op}.${name}`));
    const named: Record<string, GpuTensor | null | undefined> = {
      query: args.query,
      key: args.key,
      value: args.value,
      output: args.output,
      gradOutput: args.gradOutput,
      logsumexp: args.logsumexp,
      rpb: args.rpb,
      gradQuery: args.gradQuery,
      gradKey: args.gradKey,
      gradValue: args.gradValue,
      gradRpb: args.gradRpb,
    };
    const lookup = (name: string): GPUBuffer => {
      const t = scratch.get(name) ?? named[name];
      if (!t) throw new NattenArgumentError(`${op}: internal: no buffer for binding '${name}'`);
      return t.buffer;
    };
    const commands = plan.passes.map((p) => ({
      kernel: p.kernel,
      buffers: p.kernel.bufferNames.map(lookup),
      uniforms: p.uniforms,
      workgroups: p.workgroups,
    }));
    return { selection, commands, release };
  } catch (e) {
    release();
    throw e;
  }
}

async function runFusedBackward(ctx: GpuContext, rank: NaRank, args: FusedBackwardArgs<GpuTensor>, config?: FusedBackwardConfig): Promise<void> {
  await runPlan(ctx, buildFusedBackward(ctx, rank, args, config), opName(rank, 'backward'));
}

/**
 * The tensor-core (mma) backward config a call without a config runs on this device, or undefined when it runs the
 * plain path (given tiles, lanes, num_splits_key or compute_delta_with_torch always select the plain path; see
 * `defaultBackwardMma` for the rule).
 */
function defaultBackwardRoute(ctx: GpuContext, rank: NaRank, args: FusedBackwardArgs<TensorLike>, key = callKey(rank, args)): MmaBackwardConfig | undefined {
  if (!mayRouteToMma(ctx, args, ['float16', 'float32']) || args.numSplitsKey !== undefined || args.computeDeltaWithTorch !== undefined) return undefined;
  // Core's rules only: the plain path's config choice is not needed to route (a call the route leaves on the plain
  // path is validated there in full; routed calls are float16 or float32 with head dims up to 128, which every device that
  // runs the mma kernels fits).
  return memoPerContext(ctx, 'fused-backward-route', key, () =>
    defaultBackwardMma(ctx, checkFusedBackward(opName(rank, 'backward'), rank, args, FUSED_BACKWARD_TILES)),
  );
}

async function runDefaultBackward(ctx: GpuContext, rank: NaRank, args: FusedBackwardArgs<GpuTensor>): Promise<void> {
  const key = callKey(rank, args);
  const mma = defaultBackwardRoute(ctx, rank, args as FusedBackwardArgs<TensorLike>, key);
  if (mma) await fusedBackwardMma(ctx, rank, args, mma, key);
  else await runFusedBackward(ctx, rank, args);
}

export interface FusedBackwardOp extends GpuOp<FusedBackwardArgs<GpuTensor>> {
  /** The tensor-core (mma) config a call without a config runs, or undefined when it runs the plain path. */
  route(ctx: GpuContext, rank: NaRank, args: FusedBackwardArgs<TensorLike>): MmaBackwardConfig | undefined;
}

/**
 * `na{1,2,3}d_backward` on WebGPU (deterministic: no float atomics on either path). query_tile_size /
 * key_tile_size / num_splits_key / compute_delta_with_torch select the plain kernels' configuration; without them,
 * float16 calls on adapters with tensor cores run the mma backward where it measured faster (`route`).
 */
export const fusedBackward: FusedBackwardOp = Object.assign(
  defineGpuOp<FusedBackwardArgs<GpuTensor>>(
    (ctx, rank, args) => runDefaultBackward(ctx, rank, args),
    (ctx, rank, args) => {
      selectFusedBackward(ctx, rank, args as FusedBackwardArgs<TensorLike>);
    },
  ),
  { route: defaultBackwardRoute },
);

/**
 * Run the backward with a forced config (autotune, bench): overrides the tile, split, delta and lane arguments, and
 * carries the experimental knobs that are not NATTEN arguments (`queriesPerInvocation`, `keysPerInvocation`,
 * `keyUnroll`, `queryUnroll`), each validated with a NattenArgumentError naming it before any GPU work.
 */
export function fusedBackwardWithConfig(ctx: GpuContext, rank: NaRank, args: FusedBackwardArgs<GpuTensor>, config: FusedBackwardConfig): Promise<void> {
  return runFusedBackward(ctx, rank, args, config);
}
