/**
 * Kernel configurations (NATTEN's tile sizes, KV splits) passed through to the backends, and the one
 * place where `config: 'auto'` is resolved: on WebGPU through `@natten-web/autotune`'s config
 * provider (mode `NATTEN_WEB_AUTOTUNE`, default 'cached': tuning cache, then shipped table, then the
 * op's heuristic default); on the CPU tiles never change a result, so 'auto' passes none.
 * Without `config`, the backend's heuristic default is used and the autotuner is not consulted.
 */
import { type AutotunerOptions, type ConfigProvider, createConfigProvider } from '@natten-web/autotune';
import { type FusedBackwardProblem, type FusedProblem, type NaRank, NattenArgumentError } from '@natten-web/core';
import type { GpuContext, MmaBackwardConfig, MmaForwardConfig } from '@natten-web/gpu';

/** Tiles, NATTEN's `query_tile_size` / `key_tile_size` (per-axis, product = GEMM tile). */
export interface TileConfig {
  readonly queryTileSize?: readonly number[] | undefined;
  readonly keyTileSize?: readonly number[] | undefined;
}

/**
 * Forward tiles, plus `lanes`: invocations per query of the WebGPU forward (1, 2, 4 or 8; > 1 splits the head dim
 * over subgroup lanes and needs the `subgroups` feature). The CPU validates and ignores both.
 */
export interface ForwardConfig extends TileConfig {
  readonly lanes?: number | undefined;
}

/**
 * Backward tiles plus `num_splits_key` and `compute_delta_with_torch` (spec §3.2, §3.3), plus `lanes`: invocations
 * per row of the WebGPU backward's dQ and dK/dV kernels (1, 2, 4 or 8; > 1 splits the head dims over subgroup lanes
 * and needs the `subgroups` feature). The CPU validates and ignores `lanes`.
 */
export interface BackwardConfig extends TileConfig {
  readonly numSplitsKey?: number | readonly number[] | undefined;
  readonly computeDeltaWithTorch?: boolean | undefined;
  readonly lanes?: number | undefined;
}

export interface KernelConfig {
  readonly forward?: ForwardConfig | undefined;
  readonly backward?: BackwardConfig | undefined;
}

/** What the `config` option accepts. */
export type KernelConfigOption = KernelConfig | 'auto';

const TILE_KEYS = ['queryTileSize', 'keyTileSize'];
const FORWARD_KEYS = [...TILE_KEYS, 'lanes'];
const BACKWARD_KEYS = [...TILE_KEYS, 'numSplitsKey', 'computeDeltaWithTorch', 'lanes'];

function checkKeys(op: string, where: string, value: object, allowed: readonly string[]): void {
  for (const key of Object.keys(value)) {
    if (!allowed.includes(key)) {
      throw new NattenArgumentError(`${op}: unknown key '${key}' in ${where}; allowed keys are ${allowed.join(', ')}`);
    }
  }
}

/**
 * The explicit config of one pass for one call (`{}` for absent or 'auto'); `isAuto` tells whether
 * `autoConfig` must be asked once the backend is known.
 */
export function resolveKernelConfig(op: string, _rank: NaRank, pass: 'forward', config: unknown): ForwardConfig;
export function resolveKernelConfig(op: string, _rank: NaRank, pass: 'backward', config: unknown): BackwardConfig;
export function resolveKernelConfig(op: string, _rank: NaRank, pass: 'forward' | 'backward', config: unknown): ForwardConfig & BackwardConfig {
  if (config === undefined || config === null || config === 'auto') return {};
  if (typeof config !== 'object' || Array.isArray(config)) {
    throw new NattenArgumentError(`${op}: config must be 'auto' or { forward?, backward? }, got ${typeof config === 'string' ? `'${config}'` : String(config)}`);
  }
  checkKeys(op, 'config', config, ['forward', 'backward']);
  const section = (config as Record<string, unknown>)[pass];
  if (section === undefined || section === null) return {};
  if (typeof section !== 'object' || Array.isArray(section)) {
    throw new NattenArgumentError(`${op}: config.${pass} must be an object, got ${String(section)}`);
  }
  checkKeys(op, `config.${pass}`, section, pass === 'forward' ? FORWARD_KEYS : BACKWARD_KEYS);
  return section as BackwardConfig;
}

export function isAuto(config: unknown): boolean {
  return config === 'auto';
}

let providerOptions: Omit<AutotunerOptions, 'ctx'> = {};
let provider: ((ctx: GpuContext) => ConfigProvider) | undefined;

/** Options of the autotuner behind `config: 'auto'` (mode, cache, shipped table, timing budget). */
export function setAutotuneOptions(options: Omit<AutotunerOptions, 'ctx'>): void {
  providerOptions = options;
  provider = undefined;
}

/** The autotuner's config provider for a GPU context: the single hook between natten-web and @natten-web/autotune. */
function tunerFor(ctx: GpuContext): ConfigProvider {
  provider ??= createConfigProvider(providerOptions);
  return provider(ctx);
}

/**
 * The tensor-core (mma) forward's config for `config: 'auto'` where the device's default routes the problem to
 * that path: tuned, cached, tabled or the default, as for the plain tiles; undefined where the route does not apply.
 */
export async function autoMmaConfig(ctx: GpuContext, problem: FusedProblem): Promise<MmaForwardConfig | undefined> {
  return tunerFor(ctx).forwardMma(problem);
}

/** The tensor-core (mma) backward's config for `config: 'auto'`, as `autoMmaConfig` for the forward. */
export async function autoMmaBackwardConfig(ctx: GpuContext, problem: FusedBackwardProblem): Promise<MmaBackwardConfig | undefined> {
  return tunerFor(ctx).backwardMma(problem);
}

/** The tuned (or cached / tabled / default) config for a fused problem on a GPU context, as the seed op's tile arguments. */
export async function autoConfig(ctx: GpuContext, pass: 'forward', problem: FusedProblem): Promise<ForwardConfig>;
export async function autoConfig(ctx: GpuContext, pass: 'backward', problem: FusedProblem & { hasGradRpb: boolean }): Promise<BackwardConfig>;
export async function autoConfig(ctx: GpuContext, pass: 'forward' | 'backward', problem: FusedProblem & { hasGradRpb?: boolean }): Promise<ForwardConfig | BackwardConfig> {
  const tuner = tunerFor(ctx);
  if (pass === 'forward') {
    const c = await tuner.forward(problem);
    // The tuned config runs exactly: its lane split travels with its tiles.
    return { queryTileSize: c.queryTile, keyTileSize: c.keyTile, ...(c.lanes !== undefined && c.lanes > 1 ? { lanes: c.lanes } : {}) };
  }
  const c = await tuner.backward({ ...problem, hasGradRpb: problem.hasGradRpb ?? false });
  // As in the forward: a lane-split winner's `lanes` travels with its tiles, so it runs exactly as timed.
  return {
    queryTileSize: c.queryTile,
    keyTileSize: c.keyTile,
    numSplitsKey: c.numSplitsKey,
    computeDeltaWithTorch: c.computeDeltaWithTorch,
    ...(c.lanes !== undefined && c.lanes > 1 ? { lanes: c.lanes } : {}),
  };
}
