/**
 * Timing candidates: seeded random inputs of the real shape (never zeros; the forward stores the LSE when the
 * problem does, the backward runs on a real forward's O and LSE), warm-up runs, then repeated runs through
 * `ctx.profile` (GPU timestamps of every dispatch the op makes; wall time when the adapter has none), median.
 * A time budget (`maxTuneMs`) is honoured: it is checked before every run (warm-up or timed); once spent, tuning
 * stops and keeps the best so far. A run already started finishes first, and the first (warm-up) run of a candidate
 * includes its pipeline compile, which cannot be interrupted (seconds on lavapipe, ~0.1 s on real GPUs).
 */
import { lseShape, type NaRank, randn, rpbShape } from '@natten-web/core';
import {
  ClockWarmer,
  fusedBackwardMma,
  fusedBackwardWithConfig,
  fusedForward,
  fusedForwardMma,
  type GpuContext,
  type GpuTensor,
  type MmaBackwardConfig,
  type MmaForwardConfig,
  median,
} from '@natten-web/gpu';
import type { FusedBackwardConfig, FusedForwardConfig, GpuDType } from '@natten-web/wgsl';
import { isNode } from './cache.ts';
import type { BackwardTuneProblem, ForwardTuneProblem } from './problem.ts';
import type { Candidate } from './space.ts';

export interface ProgressEvent {
  readonly op: 'forward' | 'backward';
  readonly problem: string;
  /** `start` (before the first candidate), `candidate` (one timed), `failed` (a candidate threw), `budget`, `done`. */
  readonly phase: 'start' | 'candidate' | 'failed' | 'budget' | 'done';
  /** Candidates finished so far / in total. */
  readonly done: number;
  readonly total: number;
  readonly label?: string | undefined;
  readonly medianNs?: number | undefined;
  readonly bestLabel?: string | undefined;
  readonly bestNs?: number | undefined;
  readonly elapsedMs: number;
  readonly budgetMs: number;
}

export interface TimingSettings {
  /** Stop timing after this many ms and keep the best so far (default 20 000). */
  readonly maxTuneMs?: number;
  /** Untimed runs per candidate (compiles the pipeline; default 1). */
  readonly warmup?: number;
  /** Timed runs per candidate (median; default 5). */
  readonly reps?: number;
  /** Seed of the random inputs (default 1). */
  readonly seed?: number;
  readonly onProgress?: ((e: ProgressEvent) => void) | undefined;
  /**
   * Progress on stderr (Node only): `true`, `false`, or `'auto'` (default: only once a tune has run 2 s). One
   * rewritten line when stderr is a TTY, plain lines otherwise.
   */
  readonly progress?: boolean | 'auto';
  /**
   * Keep the GPU busy around the timed runs so its clock governor holds the boost clock (`ClockWarmer`):
   * `true`, `false`, or `'auto'` (default: on for hardware adapters, off for software ones such as lavapipe).
   * Without it, short candidates timed one submission at a time can run at a fraction of the boost clock, and
   * the clock, not the config, decides which one wins.
   */
  readonly warmClocks?: boolean | 'auto';
}

/** Wall time of warm work before the first candidate, in ms. */
const TUNE_WARM_MS = 200;

/**
 * Wall time of warm work before each candidate's timed runs, after its warm-up runs (whose first compiles its
 * pipelines while the GPU idles), in ms. Without it (until session 18) the clock fell during each compile and one
 * 2 ms warm dispatch per run did not lift it again: on an H200 the later candidates of a 24-candidate run read 2-5x
 * their time (2-D 56x56 K=7 backward: the default 35.5 us first, the same config 143-153 us later in the run).
 */
export const CANDIDATE_WARM_MS = 100;

export interface CandidateResult<C> {
  readonly label: string;
  readonly config: C;
  readonly samplesNs: readonly number[];
  readonly medianNs: number | undefined;
  readonly error?: string | undefined;
}

export interface TuneResult<C> {
  readonly config: C;
  readonly label: string;
  readonly medianNs: number;
  readonly method: 'gpu-timestamps' | 'wall-clock';
  /** Candidates with at least one timed run. */
  readonly timed: number;
  readonly candidates: number;
  /** The budget ran out before every candidate was timed in full. */
  readonly truncated: boolean;
  readonly elapsedMs: number;
  readonly results: readonly CandidateResult<C>[];
}

const now = (): number => globalThis.performance.now();

function fmtNs(ns: number | undefined): string {
  if (ns === undefined) return '-';
  return ns >= 1e6 ? `${(ns / 1e6).toFixed(2)} ms` : `${(ns / 1e3).toFixed(1)} us`;
}

/** Where progress lines go: Node's stderr, or any stream with the same two members (tests). */
export interface ProgressStream {
  readonly isTTY?: boolean | undefined;
  write(s: string): unknown;
}

/**
 * The progress printer: one rewritten line (`\r` + erase) when the stream is a TTY, plain lines otherwise.
 * 'auto' stays silent until a tune has run 2 s (short tunes print nothing).
 */
export function progressPrinter(mode: boolean | 'auto', stream?: ProgressStream): ((e: ProgressEvent) => void) | undefined {
  if (mode === false) return undefined;
  const stderr = stream ?? (isNode() ? (globalThis as { process?: { stderr?: ProgressStream } }).process?.stderr : undefined);
  if (!stderr) return undefined;
  const tty = stderr.isTTY === true;
  let shown = false;
  return (e) => {
    if (mode === 'auto' && !shown && e.elapsedMs < 2000 && e.phase !== 'done') return;
    if (mode === 'auto' && !shown && e.phase === 'done' && e.elapsedMs < 2000) return;
    const line =
      e.phase === 'done'
        ? `autotune ${e.op} ${e.problem}: best ${e.bestLabel ?? '-'} ${fmtNs(e.bestNs)} (${e.done}/${e.total} timed, ${(e.elapsedMs / 1000).toFixed(1)} s)`
        : e.phase === 'budget'
          ? `autotune ${e.op} ${e.problem}: time budget ${e.budgetMs} ms spent after ${e.done}/${e.total}; keeping ${e.bestLabel ?? '-'} ${fmtNs(e.bestNs)}`
          : `autotune ${e.op} ${e.problem}: [${e.done}/${e.total}] ${e.label ?? ''} ${e.phase === 'failed' ? 'failed' : fmtNs(e.medianNs)} | best ${e.bestLabel ?? '-'} ${fmtNs(e.bestNs)}`;
    shown = true;
    if (tty) stderr.write(`\r\x1b[2K${line}${e.phase === 'done' ? '\n' : ''}`);
    else stderr.write(`${line}\n`);
  };
}

/** Time every candidate (in order) with `run(config)`, within the budget. */
export async function timeCandidates<C>(
  ctx: GpuContext,
  op: 'forward' | 'backward',
  problem: string,
  candidates: readonly Candidate<C>[],
  run: (config: C) => Promise<void>,
  settings: TimingSettings,
): Promise<Omit<TuneResult<C>, 'config' | 'label' | 'medianNs'> & { best: CandidateResult<C> | undefined }> {
  const budgetMs = settings.maxTuneMs ?? 20_000;
  const warmup = settings.warmup ?? 1;
  const reps = settings.reps ?? 5;
  const start = now();
  const elapsed = (): number => now() - start;
  const printer = progressPrinter(settings.progress ?? 'auto');
  const emit = (e: Omit<ProgressEvent, 'op' | 'problem' | 'elapsedMs' | 'budgetMs' | 'total'>): void => {
    const ev: ProgressEvent = { op, problem, total: candidates.length, elapsedMs: elapsed(), budgetMs, ...e };
    settings.onProgress?.(ev);
    printer?.(ev);
  };
  const results: CandidateResult<C>[] = [];
  let best: CandidateResult<C> | undefined;
  let truncated = false;
  let usedWall = !ctx.hasTimestamps;
  const warmSetting = settings.warmClocks ?? 'auto';
  const warmer = (warmSetting === 'auto' ? ClockWarmer.useful(ctx) : warmSetting) ? await ClockWarmer.create(ctx) : undefined;
  emit({ phase: 'start', done: 0 });
  try {
    if (warmer) await warmer.warm(TUNE_WARM_MS);
    for (const cand of candidates) {
      if (elapsed() >= budgetMs) {
        truncated = true;
        break;
      }
      const samples: number[] = [];
      let error: string | undefined;
      try {
        for (let i = 0; i < warmup && elapsed() < budgetMs; i++) {
          warmer?.queue();
          await run(cand.config);
        }
        if (warmer && elapsed() < budgetMs) await warmer.warm(CANDIDATE_WARM_MS);
        for (let i = 0; i < reps; i++) {
          if (elapsed() >= budgetMs) {
            truncated = true;
            break;
          }
          warmer?.queue();
          const r = await ctx.profile(() => run(cand.config));
          if (r.gpuNs !== undefined && r.dispatches > 0) samples.push(r.gpuNs);
          else {
            usedWall = true;
            samples.push(r.wallMs * 1e6);
          }
        }
      } catch (e) {
        error = e instanceof Error ? e.message : String(e);
      }
      const res: CandidateResult<C> = {
        label: cand.label,
        config: cand.config,
        samplesNs: samples,
        medianNs: samples.length ? median(samples) : undefined,
        error,
      };
      results.push(res);
      if (res.medianNs !== undefined && error === undefined && (best?.medianNs === undefined || res.medianNs < best.medianNs)) best = res;
      emit({ phase: error ? 'failed' : 'candidate', done: results.length, label: cand.label, medianNs: res.medianNs, bestLabel: best?.label, bestNs: best?.medianNs });
      if (truncated) break;
    }
  } finally {
    warmer?.release();
  }
  if (truncated) emit({ phase: 'budget', done: results.length, bestLabel: best?.label, bestNs: best?.medianNs });
  emit({ phase: 'done', done: results.length, bestLabel: best?.label, bestNs: best?.medianNs });
  return {
    best,
    method: usedWall ? 'wall-clock' : 'gpu-timestamps',
    timed: results.filter((r) => r.samplesNs.length > 0).length,
    candidates: candidates.length,
    truncated,
    elapsedMs: elapsed(),
    results,
  };
}

/** GPU tensors of a real-shaped forward call, filled from seeded normals (the LSE buffer only when the problem stores it). */
export interface ForwardInputs {
  readonly query: GpuTensor;
  readonly key: GpuTensor;
  readonly value: GpuTensor;
  readonly output: GpuTensor;
  readonly rpb: GpuTensor | undefined;
  readonly logsumexp: GpuTensor | undefined;
  release(): void;
}

function fwdShapes(p: ForwardTuneProblem) {
  return {
    q: [p.batch, ...p.spatial, p.heads, p.dim],
    k: [p.batch, ...p.spatial, p.headsKv, p.dim],
    v: [p.batch, ...p.spatial, p.headsKv, p.dimV],
    o: [p.batch, ...p.spatial, p.heads, p.dimV],
    lse: lseShape(p.batch, p.spatial, p.heads),
  };
}

export function forwardInputs(ctx: GpuContext, p: ForwardTuneProblem & { dtype: GpuDType }, seed: number, forceLse = false): ForwardInputs {
  const s = fwdShapes(p);
  const made: GpuTensor[] = [];
  const keep = (t: GpuTensor): GpuTensor => {
    made.push(t);
    return t;
  };
  const up = (shape: readonly number[], k: number, scale = 1): GpuTensor => keep(ctx.upload(randn(shape, p.dtype, seed * 16 + k, scale), 'autotune'));
  return {
    query: up(s.q, 0),
    key: up(s.k, 1),
    value: up(s.v, 2),
    output: keep(ctx.createTensor(s.o, p.dtype, 'autotune.output')),
    rpb: p.hasRpb ? up(rpbShape(p.heads, p.params), 3, 0.5) : undefined,
    logsumexp: p.hasLse || forceLse ? keep(ctx.createTensor(s.lse, 'float32', 'autotune.lse')) : undefined,
    release: () => {
      for (const t of made) t.buffer.destroy();
    },
  };
}

function paramsOf(p: ForwardTuneProblem) {
  return {
    kernelSize: p.params.kernelSize,
    dilation: p.params.dilation,
    stride: p.params.stride,
    isCausal: p.params.isCausal,
    attnScale: 1 / Math.sqrt(p.dim),
  };
}

/** A runner for forward candidates on one set of inputs. */
export function forwardRunner(ctx: GpuContext, rank: NaRank, p: ForwardTuneProblem, x: ForwardInputs): (c: FusedForwardConfig) => Promise<void> {
  const args = { ...paramsOf(p), query: x.query, key: x.key, value: x.value, output: x.output, rpb: x.rpb, logsumexp: p.hasLse ? x.logsumexp : undefined };
  return (c) => fusedForward.withConfig(ctx, rank, args, c);
}

/** A runner for tensor-core (mma) forward candidates on one set of inputs. */
export function mmaForwardRunner(ctx: GpuContext, rank: NaRank, p: ForwardTuneProblem, x: ForwardInputs): (c: MmaForwardConfig) => Promise<void> {
  const args = { ...paramsOf(p), query: x.query, key: x.key, value: x.value, output: x.output, rpb: x.rpb, logsumexp: p.hasLse ? x.logsumexp : undefined };
  return (c) => fusedForwardMma(ctx, rank, args, c);
}

export interface BackwardInputs extends ForwardInputs {
  readonly gradOutput: GpuTensor;
  readonly gradQuery: GpuTensor;
  readonly gradKey: GpuTensor;
  readonly gradValue: GpuTensor;
  readonly gradRpb: GpuTensor | undefined;
}

/** Backward inputs: a real forward (default config) gives O and the LSE; dO is seeded normals. */
export async function backwardInputs(ctx: GpuContext, p: BackwardTuneProblem & { dtype: GpuDType }, seed: number): Promise<BackwardInputs> {
  const f = forwardInputs(ctx, { ...p, hasLse: true }, seed, true);
  const s = fwdShapes(p);
  const made: GpuTensor[] = [];
  const keep = (t: GpuTensor): GpuTensor => {
    made.push(t);
    return t;
  };
  try {
    await fusedForward(ctx, p.rank, { ...paramsOf(p), query: f.query, key: f.key, value: f.value, output: f.output, rpb: f.rpb, logsumexp: f.logsumexp });
    return {
      ...f,
      gradOutput: keep(ctx.upload(randn(s.o, p.dtype, seed * 16 + 5), 'autotune.dO')),
      gradQuery: keep(ctx.createTensor(s.q, p.dtype, 'autotune.dQ')),
      gradKey: keep(ctx.createTensor(s.k, p.dtype, 'autotune.dK')),
      gradValue: keep(ctx.createTensor(s.v, p.dtype, 'autotune.dV')),
      gradRpb: p.hasGradRpb && f.rpb ? keep(ctx.createTensor(f.rpb.shape, p.dtype, 'autotune.dRpb')) : undefined,
      release: () => {
        f.release();
        for (const t of made) t.buffer.destroy();
      },
    };
  } catch (e) {
    f.release();
    for (const t of made) t.buffer.destroy();
    throw e;
  }
}

/** The backward call's arguments on one set of inputs. */
function backwardArgs(p: BackwardTuneProblem, x: BackwardInputs) {
  const lse = x.logsumexp;
  if (!lse) throw new Error('autotune: internal: backward inputs without an LSE');
  const args = {
    ...paramsOf(p),
    query: x.query,
    key: x.key,
    value: x.value,
    output: x.output,
    gradOutput: x.gradOutput,
    logsumexp: lse,
    gradQuery: x.gradQuery,
    gradKey: x.gradKey,
    gradValue: x.gradValue,
    rpb: x.rpb,
    gradRpb: x.gradRpb,
  };
  return args;
}

/** A runner for backward candidates on one set of inputs. */
export function backwardRunner(ctx: GpuContext, rank: NaRank, p: BackwardTuneProblem, x: BackwardInputs): (c: FusedBackwardConfig) => Promise<void> {
  const args = backwardArgs(p, x);
  return (c) => fusedBackwardWithConfig(ctx, rank, args, c);
}

/** A runner for tensor-core (mma) backward candidates on one set of inputs. */
export function mmaBackwardRunner(ctx: GpuContext, rank: NaRank, p: BackwardTuneProblem, x: BackwardInputs): (c: MmaBackwardConfig) => Promise<void> {
  const args = backwardArgs(p, x);
  return (c) => fusedBackwardMma(ctx, rank, args, c);
}
