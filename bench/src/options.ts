/**
 * Command-line options of the benchmark runner (`pnpm bench`, bench/src/run.ts).
 */
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import type { CaseSetName } from './cases.ts';

export const USAGE = `usage: pnpm bench [--set quick|standard] [--filter str[,str...]] [--dtype f16|f32] [--json path] [--no-torch]
  [--reps 20] [--warmup 3] [--budget-ms 3000] [--naive-max-ms 5000] [--cpu-max-flops 5e8]
  [--python python3] [--torch-script bench/baselines/torch_na.py] [--torch-timeout-s 420]
  [--forward-lanes 1|2|4|8]  forward with its default tiles but this many lanes per query (default: the heuristic)
  [--backward-lanes 1|2|4|8] backward with its default tiles but this many lanes per row (default: the heuristic)
  [--forward-path default|plain|sgmat|tile|mma]  default: what fusedForward runs (the mma path where its rule picks
                             it, else plain); plain: the plain path's default config; sgmat: the tensor-core forward
                             (generation 2, one subgroup per workgroup) at its default
                             config; tile: the dense register-tiled forward (experimental) at its default config;
                             mma: the multi-subgroup tensor-core forward (f16, generation 3) at its default config, wherever it can run
  [--forward-queries 1|2|4] [--backward-queries 1|2|4] [--backward-keys 1|2|4]
                             the default configs with rows grouped per invocation (experimental knobs)
  [--forward-key-unroll 1|2|4]  the default forward tiles folding this many keys per walk step (default: the
                                heuristic, 2 for float32 on subgroups >= 16 wide; 1 = one key per step)
  [--backward-path default|plain|mma]  default: what fusedBackward runs without a config (the tensor-core backward
                             where it routes there, else plain); plain: the plain backward's default config;
                             mma: the tensor-core backward (f16, f32 as the split) at its default config, wherever it can run
  [--backward-unroll 1|2|4]     the default backward tiles folding this many keys (dq) / queries (dK/dV) per
                                walk step (default: the heuristic; 1 = one row per step)
  [--warm-clocks auto|on|off]   keep the GPU busy around our timed runs so its clock stays at boost
                                (auto: on for hardware adapters, off for software ones such as lavapipe)
  [--tuned]                     time the config @natten-web/autotune picks for each row (mode 'tune': the cache,
                                else timed now and stored) instead of the heuristic default; tuning runs before
                                the row's timing, outside it. Not with the config switches above (--forward-path
                                sgmat|tile, --forward-lanes, --backward-lanes, --forward-queries, --backward-queries,
                                --backward-keys, --forward-key-unroll, --backward-unroll)
  [--tune-cache path]           the autotuner's JSON cache, reused by later --tuned runs (default: tune-cache.json
                                beside --json when given, else in the OS temp dir)
  [--tune-budget-ms 20000]      tuning time budget per op (forward; backward) of each row
  [--separate-spans]            time fwd+bwd as the sum of the two ops' GPU spans, each op submitted alone (before
                                session 22); default: one span around both, submitted together (batch()), as torch's
                                CUDA events time flex's forward and backward`;

/** The flags that choose our kernel config by hand, which `--tuned` leaves to the autotuner. */
export const TUNED_CONFLICTS = [
  'forward-lanes',
  'backward-lanes',
  'forward-queries',
  'backward-queries',
  'backward-keys',
  'forward-key-unroll',
  'backward-unroll',
] as const;

/** The default `--tune-cache`: `tune-cache.json` beside the `--json` output when given, else in the OS temp dir. */
export function defaultTuneCache(json: string | undefined): string {
  return json !== undefined ? join(dirname(resolve(json)), 'tune-cache.json') : join(tmpdir(), 'tune-cache.json');
}

export interface Options {
  readonly set: CaseSetName;
  readonly filter: string | undefined;
  /** Only this dtype's rows (and torch problems); undefined = every dtype of each case. */
  readonly dtype: 'float16' | 'float32' | undefined;
  readonly json: string | undefined;
  readonly torch: boolean;
  readonly reps: number;
  readonly warmup: number;
  readonly budgetMs: number;
  readonly naiveMaxMs: number;
  readonly cpuMaxFlops: number;
  readonly python: string;
  readonly torchScript: string;
  readonly torchTimeoutS: number;
  /** Run the backward with its default tiles but this many lanes per row (1 = single-lane), instead of the default. */
  readonly backwardLanes: number | undefined;
  /** Backward kernel path: the default (`fusedBackward`) or the tensor-core backward (`fusedBackwardMma`). */
  readonly backwardPath: 'default' | 'plain' | 'mma';
  /** Run the forward with its default tiles but this many lanes per query (1 = single-lane), instead of the default. */
  readonly forwardLanes: number | undefined;
  /** Forward kernel path: the default (`fusedForward`) or the tensor-core forward (`fusedForwardSgmat`, its default config). */
  readonly forwardPath: 'default' | 'plain' | 'sgmat' | 'tile' | 'mma';
  /** Experimental row grouping (1 = the plain kernels): queries per forward / dq invocation, keys per dkv invocation. */
  readonly forwardQueries: number;
  readonly backwardQueries: number;
  readonly backwardKeys: number;
  /** Keys per forward walk step instead of the heuristic's (1 = the one-key walk); undefined = the default. */
  readonly forwardKeyUnroll: number | undefined;
  /** Keys per dq walk step and queries per dK/dV walk step instead of the heuristic's; undefined = the default. */
  readonly backwardUnroll: number | undefined;
  /** Keep the GPU's clock up while timing (`ClockWarmer`); auto = on for hardware adapters. */
  readonly warmClocks: 'auto' | 'on' | 'off';
  /** Time the autotuner's pick per row (`--tuned`) instead of the heuristic default config. */
  readonly tuned: boolean;
  /** fwd+bwd timed as two spans (each op submitted alone) instead of one span around both (`batch`). */
  readonly separateSpans: boolean;
  /** The autotuner's cache file (absolute) with `--tuned`, else undefined. */
  readonly tuneCache: string | undefined;
  /** Tuning budget per op of each row, in ms (`--tune-budget-ms`; used with `--tuned`). */
  readonly tuneBudgetMs: number;
}

/** The command line of `pnpm bench`; an invalid value throws an Error naming the flag, the value and the rule. */
export function parseOptions(argv: readonly string[]): Options {
  const { values } = parseArgs({
    args: [...argv],
    options: {
      set: { type: 'string', default: 'standard' },
      filter: { type: 'string' },
      dtype: { type: 'string' },
      json: { type: 'string' },
      'no-torch': { type: 'boolean', default: false },
      'separate-spans': { type: 'boolean', default: false },
      reps: { type: 'string', default: '20' },
      warmup: { type: 'string', default: '3' },
      'budget-ms': { type: 'string', default: '3000' },
      'naive-max-ms': { type: 'string', default: '5000' },
      'cpu-max-flops': { type: 'string', default: '5e8' },
      python: { type: 'string', default: 'python3' },
      'torch-script': { type: 'string', default: 'bench/baselines/torch_na.py' },
      'torch-timeout-s': { type: 'string', default: '420' },
      'backward-lanes': { type: 'string' },
      'backward-path': { type: 'string', default: 'default' },
      'forward-lanes': { type: 'string' },
      'forward-path': { type: 'string', default: 'default' },
      // No parser defaults for these three (1, applied below): --tuned must see whether they were given.
      'forward-queries': { type: 'string' },
      'backward-queries': { type: 'string' },
      'backward-keys': { type: 'string' },
      'forward-key-unroll': { type: 'string' },
      'backward-unroll': { type: 'string' },
      'warm-clocks': { type: 'string', default: 'auto' },
      tuned: { type: 'boolean', default: false },
      'tune-cache': { type: 'string' },
      'tune-budget-ms': { type: 'string' },
      help: { type: 'boolean', default: false },
    },
    strict: true,
  });
  if (values.help) {
    console.log(USAGE);
    process.exit(0);
  }
  const set = values.set;
  if (set !== 'quick' && set !== 'standard') throw new Error(`--set must be quick or standard, got '${set}'\n${USAGE}`);
  const num = (name: string, v: string, min: number): number => {
    const n = Number(v);
    if (!Number.isFinite(n) || n < min) throw new Error(`--${name} must be a number >= ${min}, got '${v}'\n${USAGE}`);
    return n;
  };
  const dtypeArg = values.dtype;
  if (dtypeArg !== undefined && dtypeArg !== 'f16' && dtypeArg !== 'f32') throw new Error(`--dtype must be f16 or f32, got '${dtypeArg}'\n${USAGE}`);
  const dtype = dtypeArg === undefined ? undefined : dtypeArg === 'f16' ? 'float16' : 'float32';
  const forwardPath = values['forward-path'];
  const isPath = (x: unknown): x is Options['forwardPath'] => typeof x === 'string' && ['default', 'plain', 'sgmat', 'tile', 'mma'].includes(x);
  if (!isPath(forwardPath)) throw new Error(`--forward-path must be default, plain, sgmat, tile or mma, got '${forwardPath}'\n${USAGE}`);
  const backwardPath = values['backward-path'];
  if (backwardPath !== 'default' && backwardPath !== 'plain' && backwardPath !== 'mma') throw new Error(`--backward-path must be default, plain or mma, got '${backwardPath}'\n${USAGE}`);
  if (backwardPath === 'mma') {
    for (const flag of ['backward-lanes', 'backward-queries', 'backward-keys', 'backward-unroll'] as const) {
      if (values[flag] !== undefined) throw new Error(`--backward-path mma cannot be combined with --${flag}: that flag shapes the plain backward's kernels\n${USAGE}`);
    }
  }
  const warmClocks = values['warm-clocks'];
  if (warmClocks !== 'auto' && warmClocks !== 'on' && warmClocks !== 'off') throw new Error(`--warm-clocks must be auto, on or off, got '${warmClocks}'\n${USAGE}`);
  const tuned = values.tuned;
  if (tuned) {
    if (backwardPath !== 'default') throw new Error(`--tuned cannot be combined with --backward-path ${backwardPath}: --tuned times the autotuner's pick of the plain backward; drop one of the two\n${USAGE}`);
    if (forwardPath !== 'default') {
      throw new Error(`--tuned cannot be combined with --forward-path ${forwardPath}: --tuned times the autotuner's pick of the default (plain) forward; drop one of the two\n${USAGE}`);
    }
    for (const flag of TUNED_CONFLICTS) {
      if (values[flag] !== undefined) {
        throw new Error(`--tuned cannot be combined with --${flag}: --tuned times the config the autotuner picks (tiles, lanes, unroll), --${flag} forces part of it by hand; drop one of the two\n${USAGE}`);
      }
    }
  } else {
    for (const flag of ['tune-cache', 'tune-budget-ms'] as const) {
      if (values[flag] !== undefined) throw new Error(`--${flag} needs --tuned (it only applies to tuned runs)\n${USAGE}`);
    }
  }
  return {
    set,
    filter: values.filter,
    dtype,
    warmClocks,
    forwardPath,
    backwardPath,
    forwardQueries: Math.floor(num('forward-queries', values['forward-queries'] ?? '1', 1)),
    backwardQueries: Math.floor(num('backward-queries', values['backward-queries'] ?? '1', 1)),
    backwardKeys: Math.floor(num('backward-keys', values['backward-keys'] ?? '1', 1)),
    forwardKeyUnroll: values['forward-key-unroll'] === undefined ? undefined : Math.floor(num('forward-key-unroll', values['forward-key-unroll'], 1)),
    backwardUnroll: values['backward-unroll'] === undefined ? undefined : Math.floor(num('backward-unroll', values['backward-unroll'], 1)),
    json: values.json,
    torch: !values['no-torch'],
    separateSpans: values['separate-spans'] === true,
    reps: Math.floor(num('reps', values.reps, 1)),
    warmup: Math.floor(num('warmup', values.warmup, 0)),
    budgetMs: num('budget-ms', values['budget-ms'], 0),
    naiveMaxMs: num('naive-max-ms', values['naive-max-ms'], 0),
    cpuMaxFlops: num('cpu-max-flops', values['cpu-max-flops'], 0),
    python: values.python,
    torchScript: values['torch-script'],
    torchTimeoutS: num('torch-timeout-s', values['torch-timeout-s'], 1),
    forwardLanes: values['forward-lanes'] === undefined ? undefined : Math.floor(num('forward-lanes', values['forward-lanes'], 1)),
    backwardLanes: values['backward-lanes'] === undefined ? undefined : Math.floor(num('backward-lanes', values['backward-lanes'], 1)),
    tuned,
    tuneCache: tuned ? resolve(values['tune-cache'] ?? defaultTuneCache(values.json)) : undefined,
    tuneBudgetMs: num('tune-budget-ms', values['tune-budget-ms'] ?? '20000', 1),
  };
}
