/**
 * Kernel configurations (NATTEN's tile sizes, KV splits) passed through to the backends, and the one
 * hook where `'auto'` is resolved. `@natten-web/autotune` will plug in here; until it exists, `'auto'`
 * means "the backend's heuristic default" (no tile arguments are passed).
 */
import { type NaRank, NattenArgumentError } from '@natten-web/core';

/** Forward tiles, NATTEN's `query_tile_size` / `key_tile_size` (per-axis, product = GEMM tile). */
export interface ForwardConfig {
  readonly queryTileSize?: readonly number[] | undefined;
  readonly keyTileSize?: readonly number[] | undefined;
}

/** Backward tiles plus `num_splits_key` and `compute_delta_with_torch` (spec §3.2, §3.3). */
export interface BackwardConfig extends ForwardConfig {
  readonly numSplitsKey?: number | readonly number[] | undefined;
  readonly computeDeltaWithTorch?: boolean | undefined;
}

export interface KernelConfig {
  readonly forward?: ForwardConfig | undefined;
  readonly backward?: BackwardConfig | undefined;
}

/** What the `config` option accepts. */
export type KernelConfigOption = KernelConfig | 'auto';

const FORWARD_KEYS = ['queryTileSize', 'keyTileSize'];
const BACKWARD_KEYS = [...FORWARD_KEYS, 'numSplitsKey', 'computeDeltaWithTorch'];

function checkKeys(op: string, where: string, value: object, allowed: readonly string[]): void {
  for (const key of Object.keys(value)) {
    if (!allowed.includes(key)) {
      throw new NattenArgumentError(`${op}: unknown key '${key}' in ${where}; allowed keys are ${allowed.join(', ')}`);
    }
  }
}

/**
 * The config of one pass for one call. The single place that interprets `'auto'`: today it yields the
 * backend default; with @natten-web/autotune it will return the tuned tiles for (op, rank, problem).
 */
export function resolveKernelConfig(op: string, _rank: NaRank, pass: 'forward', config: unknown): ForwardConfig;
export function resolveKernelConfig(op: string, _rank: NaRank, pass: 'backward', config: unknown): BackwardConfig;
export function resolveKernelConfig(op: string, _rank: NaRank, pass: 'forward' | 'backward', config: unknown): BackwardConfig {
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
