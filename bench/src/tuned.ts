/**
 * `pnpm bench --tuned`: the configs `@natten-web/autotune` picks for a row's problem (mode 'tune' with a
 * persistent JSON cache: a cached pick is reused, a miss is timed within the budget and stored), and the config
 * labels the default and the tuned rows share, so both show tiles, lanes and unroll the same way.
 */
import {
  type Autotuner,
  type BackwardTuneProblem,
  type CacheOption,
  createAutotuner,
  describeBackward,
  describeForward,
  type ForwardTuneProblem,
  formatProblem,
  type ProgressEvent,
  type Selection,
} from '@natten-web/autotune';
import { type GpuContext, type MmaBackwardConfig, type MmaForwardConfig, mmaBackwardFlags, mmaForwardFlags } from '@natten-web/gpu';
import type { FusedBackwardConfig, FusedForwardConfig } from '@natten-web/wgsl';
import type { BenchItem } from './cases.ts';
import type { TuneInfo } from './results.ts';

/** `fwd plain q8x8/k8x8/f32 lanes 4 Q 2 U 2`: tiles, staging, lanes, queries per invocation, key unroll (1s omitted). */
export function forwardConfigLabel(f: FusedForwardConfig): string {
  const q = f.queriesPerInvocation ?? 1;
  const u = f.keyUnroll ?? 1;
  return `fwd ${f.path} q${f.queryTile.join('x')}/k${f.keyTile.join('x')}/${f.stage}${(f.lanes ?? 1) > 1 ? ` lanes ${f.lanes}` : ''}${q > 1 ? ` Q ${q}` : ''}${u > 1 ? ` U ${u}` : ''}`;
}

/**
 * `bwd q8x8/k8x8 splits 1x1 lanes 4 Q 2 K 1 U 2`: tiles, key splits, lanes, rows per invocation (dq / dK-dV),
 * walk unroll (`U 2`, or `U 2/1` when the dq and dK/dV unrolls differ), and `delta separate` when the delta is
 * its own pass. Parts at their neutral value are omitted.
 */
export function backwardConfigLabel(b: FusedBackwardConfig): string {
  const q = b.queriesPerInvocation ?? 1;
  const k = b.keysPerInvocation ?? 1;
  const ku = b.keyUnroll ?? 1;
  const qu = b.queryUnroll ?? 1;
  const unroll = ku === qu ? (ku > 1 ? ` U ${ku}` : '') : ` U ${ku}/${qu}`;
  return `bwd q${b.queryTile.join('x')}/k${b.keyTile.join('x')} splits ${b.numSplitsKey.join('x')}${(b.lanes ?? 1) > 1 ? ` lanes ${b.lanes}` : ''}${q > 1 || k > 1 ? ` Q ${q} K ${k}` : ''}${unroll}${b.computeDeltaWithTorch ? ' delta separate' : ''}`;
}

/**
 * A tensor-core forward config as a row label: `fwd mma q16x8/bk16/sg8` (`fwd mma split ...` for float32), then the
 * config's flags (`mmaForwardFlags`: ` tight`, ` padS`, ` inturn`, ` pk`, ` wide`) where set.
 */
export function mmaForwardLabel(f: MmaForwardConfig, dtype: string): string {
  return [`fwd mma${dtype === 'float32' ? ' split' : ''} q${f.queryTile.join('x')}/bk${f.keyChunk}/sg${f.subgroups}`, ...mmaForwardFlags(f)].join(' ');
}

/** A tensor-core backward config as a row label: `bwd mma q4x8/sg2 k8x8/sg4 c16` (each kernel's tile and subgroups, the chunk), then its flags (`mmaBackwardFlags`: ` tight`, ` dq-shared`, ...) where set. */
export function mmaBackwardLabel(m: MmaBackwardConfig): string {
  return [`bwd mma q${m.queryTile.join('x')}/sg${m.querySubgroups} k${m.keyTile.join('x')}/sg${m.keySubgroups} c${m.chunk}`, ...mmaBackwardFlags(m)].join(' ');
}

/** The autotuner's problems of a row: the forward (storing the LSE, as the bench's forward does) and, for fwd+bwd, the backward. */
export function rowProblems(item: BenchItem): { forward: ForwardTuneProblem; backward: BackwardTuneProblem | undefined } {
  const c = item.case;
  const d = {
    rank: c.rank,
    batch: c.batch,
    spatial: c.spatial,
    heads: c.heads,
    dim: c.dim,
    kernelSize: c.kernelSize,
    dilation: c.dilation,
    isCausal: c.isCausal,
    dtype: item.dtype,
    lse: true,
  };
  return { forward: describeForward(d), backward: item.pass === 'forward+backward' ? describeBackward(d) : undefined };
}

/**
 * What `--tuned` times for a row: as natten-web's `config: 'auto'`, the tensor-core (mma) configs where the default
 * routes the op to that path, else the plain ones.
 */
export interface TunedPick {
  readonly forward: FusedForwardConfig | MmaForwardConfig;
  readonly backward?: FusedBackwardConfig | MmaBackwardConfig | undefined;
  /** The row's `config`: `tuned fwd ...` and, for fwd+bwd, `; tuned bwd ...`. */
  readonly label: string;
  readonly tuning: { readonly forward: TuneInfo; readonly backward?: TuneInfo };
}

export interface RowTunerOptions {
  readonly ctx: GpuContext;
  /** The tune cache (run.ts: `{ path: --tune-cache }`). */
  readonly cache: CacheOption;
  /** Tuning budget per op (`maxTuneMs`). */
  readonly budgetMs: number;
  /** The bench's clock-warming decision (`--warm-clocks`), passed on as the autotuner's `warmClocks`. */
  readonly warmClocks: boolean;
  /** Timed and untimed runs per candidate (default: the autotuner's, 5 and 1). */
  readonly reps?: number;
  readonly warmup?: number;
}

export interface PickHooks {
  /** Every autotuner progress event of this row (candidate timed, budget spent, ...). */
  readonly onProgress?: (e: ProgressEvent) => void;
  /** After each op's selection: the op, the problem, what was picked and how long it took. */
  readonly onOp?: (op: 'forward' | 'backward', problem: string, label: string, info: TuneInfo) => void;
}

export interface RowTuner {
  readonly autotuner: Autotuner;
  /**
   * The tuned configs of a row. Throws (with the autotuner's warnings in the message) when tuning did not give a
   * config: the autotuner then falls back to the heuristic default, which is not what a tuned row should time.
   */
  pick(item: BenchItem, hooks?: PickHooks): Promise<TunedPick>;
}

function infoOf<C>(s: Selection<C>, ms: number): TuneInfo {
  const e = s.entry;
  return {
    source: s.source === 'tuned' ? 'tuned' : 'cache',
    ms: Math.round(ms * 10) / 10,
    ...(e ? { timed: e.timed, candidates: e.candidates, truncated: e.truncated, medianNs: e.medianNs } : {}),
  };
}

export function createRowTuner(o: RowTunerOptions): RowTuner {
  // One autotuner for the run; warnings and progress go to the row being tuned.
  let warnings: string[] = [];
  let onProgress: ((e: ProgressEvent) => void) | undefined;
  const autotuner = createAutotuner({
    ctx: o.ctx,
    mode: 'tune',
    cache: o.cache,
    maxTuneMs: o.budgetMs,
    warmClocks: o.warmClocks,
    progress: false,
    onProgress: (e) => onProgress?.(e),
    warn: (m) => warnings.push(m),
    ...(o.reps !== undefined ? { reps: o.reps } : {}),
    ...(o.warmup !== undefined ? { warmup: o.warmup } : {}),
  });

  async function select<C>(op: 'forward' | 'backward', problem: string, run: () => Promise<Selection<C>>): Promise<{ config: C; info: TuneInfo }> {
    warnings = [];
    const t0 = performance.now();
    const s = await run();
    const ms = performance.now() - t0;
    const seen = warnings;
    warnings = [];
    // 'default': tuning threw or timed nothing; 'tuned' without a stored entry: every timed candidate failed.
    if (s.source === 'default' || (s.source === 'tuned' && s.entry === undefined)) {
      const why = seen.length ? seen.join('; ') : `no candidate was timed within --tune-budget-ms ${o.budgetMs}`;
      throw new Error(`tuning the ${op} of ${problem} gave no config (${why})`);
    }
    return { config: s.config, info: infoOf(s, ms) };
  }

  return {
    autotuner,
    async pick(item, hooks = {}) {
      onProgress = hooks.onProgress;
      try {
        const p = rowProblems(item);
        const fp = formatProblem(p.forward);
        // The mma selection (a tune, where the default takes that path) runs inside `select`, so its time and
        // warnings are the row's.
        const f = await select<FusedForwardConfig | MmaForwardConfig>('forward', fp, async () => (await autotuner.selectForwardMma(p.forward)) ?? autotuner.selectForward(p.forward));
        const fLabel = `tuned ${f.config.path === 'mma' ? mmaForwardLabel(f.config, item.dtype) : forwardConfigLabel(f.config)}`;
        hooks.onOp?.('forward', fp, fLabel, f.info);
        if (!p.backward) return { forward: f.config, label: fLabel, tuning: { forward: f.info } };
        const bwdProblem = p.backward;
        const bp = formatProblem(bwdProblem);
        const b = await select<FusedBackwardConfig | MmaBackwardConfig>('backward', bp, async () => (await autotuner.selectBackwardMma(bwdProblem)) ?? autotuner.selectBackward(bwdProblem));
        const bLabel = `tuned ${'querySubgroups' in b.config ? mmaBackwardLabel(b.config) : backwardConfigLabel(b.config)}`;
        hooks.onOp?.('backward', bp, bLabel, b.info);
        return { forward: f.config, backward: b.config, label: `${fLabel}; ${bLabel}`, tuning: { forward: f.info, backward: b.info } };
      } finally {
        onProgress = undefined;
      }
    },
  };
}
