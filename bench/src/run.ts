/**
 * The benchmark harness: `pnpm bench [--set quick|standard] [--filter str[,str...]] [--json path] [--no-torch]`.
 *
 * For each case x dtype x pass it measures our fused kernels (default config; with `--tuned`, the config
 * `@natten-web/autotune` picks for the row, tuned before and outside the timing), our naive kernel (forward only),
 * the CPU reference (small problems) and, when torch with CUDA is there, torch flex_attention and SDPA
 * (bench/baselines/torch_na.py, run once for the whole set before our kernels). Prints the device and a table,
 * writes a results JSON (bench/results/<date>-<adapter>.json by default). Progress goes to stderr.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import {
  compareTensors,
  type FusedBackwardArgs,
  type FusedForwardArgs,
  lseShape,
  type Tensor,
  zeros,
} from '@natten-web/core';
import { fusedBackward as cpuFusedBackward, fusedForward as cpuFusedForward } from '@natten-web/cpu';
import { checkFusedBackwardMma, ClockWarmer, fusedBackward, fusedBackwardMma, fusedBackwardWithConfig, fusedForward, fusedForwardMma, fusedForwardSgmat, fusedForwardTile, GpuContext, type GpuTensor, naiveFusedForward, planFusedForwardMma, planFusedForwardSgmat, planFusedForwardTile, selectFusedBackward } from '@natten-web/gpu';
import { type BenchItem, byteFloor, CASE_SETS, caseLabel, expandCases, itemFlops, torchProblems } from './cases.ts';
import { adapterSlug, collectEnv, repoRoot, runMain } from './env.ts';
import { fillRandom } from './fill.ts';
import { measureGpu, median, WARM_MS } from './measure.ts';
import { type Options, parseOptions } from './options.ts';
import { fmtMs, renderText, tuningText } from './render.ts';
import { type BenchResults, type BenchRow, isSoftwareAdapter, RESULTS_SCHEMA, type Timing } from './results.ts';
import { type ClockSampler, startClockSampler } from './smclock.ts';
import { runTorch, type TorchResult } from './torch.ts';
import { backwardConfigLabel, createRowTuner, forwardConfigLabel, mmaBackwardLabel, mmaForwardLabel, type RowTuner, type TunedPick } from './tuned.ts';

/** Progress on stderr: a live line on a TTY, else one line per finished case. */
class Progress {
  private readonly tty = process.stderr.isTTY === true;
  constructor(readonly total: number) {}
  step(i: number, item: BenchItem, what: string): void {
    if (!this.tty) return;
    const line = `[${i + 1}/${this.total}] ${item.case.name} ${item.dtype} ${item.pass}: ${what}`;
    process.stderr.write(`\r\x1b[K${line.slice(0, (process.stderr.columns || 120) - 1)}`);
  }
  done(i: number, item: BenchItem, row: BenchRow): void {
    const parts = [
      `ours ${row.ours ? `${fmtMs(row.ours.ms)} ms` : `error (${row.oursError ?? '?'})`}`,
      row.naive ? `naive ${fmtMs(row.naive.ms)} ms` : undefined,
      row.cpu ? `cpu ${fmtMs(row.cpu.ms)} ms` : undefined,
      row.flexMs !== undefined ? `flex ${fmtMs(row.flexMs)} ms` : undefined,
      row.oursClock ? `SM clock ${row.oursClock.minMHz}-${row.oursClock.maxMHz} MHz` : undefined,
    ].filter((p): p is string => p !== undefined);
    const line = `[${i + 1}/${this.total}] ${item.case.name} ${item.dtype} ${item.pass}: ${parts.join(', ')}`;
    process.stderr.write(this.tty ? `\r\x1b[K${line}\n` : `${line}\n`);
  }
  note(msg: string): void {
    process.stderr.write(this.tty ? `\r\x1b[K${msg}\n` : `${msg}\n`);
  }
}

function measureWall(run: () => void, o: { reps: number; budgetMs: number }): Timing {
  const samples: number[] = [];
  const t0 = performance.now();
  while (samples.length < o.reps && (samples.length < 1 || performance.now() - t0 < o.budgetMs)) {
    const s = performance.now();
    run();
    samples.push(performance.now() - s);
  }
  return { ms: median(samples), minMs: Math.min(...samples), samples: samples.length, method: 'wall' };
}

function errText(e: unknown): string {
  const msg = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
  return msg.split('\n')[0]?.slice(0, 300) ?? msg;
}

function maxAbsOf(pairs: readonly [Tensor, Tensor][]): number {
  let m = 0;
  for (const [a, e] of pairs) {
    const c = compareTensors(a, e);
    if (c.actualNonFinite > 0 || c.nonFiniteMismatches > 0) return Number.NaN;
    m = Math.max(m, c.maxAbs);
  }
  return m;
}

/** Thrown inside ours' block to skip it (a tuned row whose tuning failed: the row already says why). */
class SkipOurs extends Error {}

/** Slowest naive throughput seen so far (FLOP per ms), for the skip estimate. */
interface NaiveState {
  rate: number;
  measured: boolean;
}

async function measureItem(
  ctx: GpuContext,
  item: BenchItem,
  opts: Options,
  naive: NaiveState,
  torch: ReadonlyMap<string, TorchResult>,
  progress: Progress,
  index: number,
  warmer: ClockWarmer | undefined,
  clocks: ClockSampler | undefined,
  tuner: RowTuner | undefined,
): Promise<BenchRow> {
  const c = item.case;
  const rank = c.rank;
  const dt = item.dtype;
  const bwd = item.pass === 'forward+backward';
  const flops = itemFlops(c, item.pass);
  const row: {
    -readonly [K in keyof BenchRow]: BenchRow[K];
  } = { case: c.name, label: caseLabel(c), rank, dtype: dt, pass: item.pass, flops, byteFloor: byteFloor(c, dt, item.pass) };

  const t = torch.get(`${c.name}|${dt}|${bwd}`);
  if (t) {
    if (t.flexMs !== undefined) row.flexMs = t.flexMs;
    if (t.sdpaMs !== undefined) row.sdpaMs = t.sdpaMs;
    const err = t.error ?? t.flexError;
    if (err) row.torchNote = err.slice(0, 120);
  }

  if (dt === 'float16' && !ctx.hasF16) {
    row.oursError = "no 'shader-f16' on this adapter";
    return row;
  }
  const shape = [c.batch, ...c.spatial, c.heads, c.dim];
  const owned: GpuTensor[] = [];
  const make = (s: readonly number[], d: 'float16' | 'float32'): GpuTensor => {
    const g = ctx.createTensor(s, d);
    owned.push(g);
    return g;
  };
  try {
    // ---- --tuned: the autotuner's pick for this problem (cache, else timed now), before our inputs exist and
    // outside every timed region; a failure is recorded in the row and ours is not timed.
    let pick: TunedPick | undefined;
    if (tuner) {
      progress.step(index, item, 'tuning');
      try {
        pick = await tuner.pick(item, {
          onProgress: (e) => progress.step(index, item, `tuning ${e.op} [${e.done}/${e.total}]${e.bestLabel ? ` best ${e.bestLabel}` : ''}`),
          onOp: (op, problem, label, info) =>
            progress.note(
              `[${index + 1}/${progress.total}] ${item.case.name} ${item.dtype} ${item.pass}: ${op} ${info.source === 'tuned' ? `tuned in ${(info.ms / 1000).toFixed(1)} s (${info.timed ?? '?'}/${info.candidates ?? '?'} candidates${info.truncated ? ', budget cut' : ''})` : `from the tune cache (${info.ms.toFixed(0)} ms)`}: ${label} [${problem}]`,
            ),
        });
        row.tuning = pick.tuning;
      } catch (e) {
        row.tuneError = errText(e);
        row.oursError = `tuning failed: ${row.tuneError}`;
      }
    }
    progress.step(index, item, 'allocating inputs');
    const query = make(shape, dt);
    const key = make(shape, dt);
    const value = make(shape, dt);
    const output = make(shape, dt);
    const logsumexp = make(lseShape(c.batch, c.spatial, c.heads), 'float32');
    await fillRandom(ctx, query, 1);
    await fillRandom(ctx, key, 2);
    await fillRandom(ctx, value, 3);
    const params = { kernelSize: c.kernelSize, dilation: c.dilation, isCausal: c.isCausal };
    const fwdArgs: FusedForwardArgs<GpuTensor> = { query, key, value, output, logsumexp, ...params };
    // What our kernel runs: the default, or its tiles with forced lanes (--forward-lanes); baselines take fwdArgs.
    let oursFwd = fwdArgs;
    let bwdArgs: FusedBackwardArgs<GpuTensor> | undefined;
    if (bwd) {
      const gradOutput = make(shape, dt);
      await fillRandom(ctx, gradOutput, 4, 0.05);
      bwdArgs = { query, key, value, output, logsumexp, gradOutput, gradQuery: make(shape, dt), gradKey: make(shape, dt), gradValue: make(shape, dt), ...params };
    }

    // ---- ours (default config, or the tuned pick)
    progress.step(index, item, 'ours (compile + warm-up)');
    try {
      if (tuner && !pick) throw new SkipOurs();
      if (opts.forwardLanes !== undefined) {
        const d = fusedForward.defaultConfig(ctx, rank, fwdArgs);
        oursFwd = { ...fwdArgs, queryTileSize: d.queryTile, keyTileSize: d.keyTile, lanes: opts.forwardLanes };
      }
      let cfg: string;
      let forward: () => Promise<void>;
      if (pick) {
        // Exactly the config the autotuner timed (its runner calls the same explicit-config entry).
        const f = pick.forward;
        cfg = pick.label;
        forward = f.path === 'mma' ? () => fusedForwardMma(ctx, rank, fwdArgs, f) : () => fusedForward.withConfig(ctx, rank, fwdArgs, f);
      } else if (opts.forwardPath === 'sgmat') {
        const f = planFusedForwardSgmat(ctx, rank, fwdArgs).config;
        cfg = `fwd sgmat q${f.queryTile.join('x')}/bk${f.keyChunk}`;
        forward = () => fusedForwardSgmat(ctx, rank, fwdArgs, f);
      } else if (opts.forwardPath === 'mma') {
        const f = planFusedForwardMma(ctx, rank, fwdArgs).config;
        cfg = mmaForwardLabel(f, dt);
        forward = () => fusedForwardMma(ctx, rank, fwdArgs, f);
      } else if (opts.forwardPath === 'tile') {
        const f = planFusedForwardTile(ctx, rank, fwdArgs).config;
        cfg = `fwd tile q${f.queryTile.join('x')}/bk${f.keyChunk}`;
        forward = () => fusedForwardTile(ctx, rank, fwdArgs, f);
      } else {
        const planned = fusedForward.plan(ctx, rank, oursFwd).config;
        // --forward-queries / --forward-key-unroll: the same config with experimental knobs (an explicit config).
        const explicit = opts.forwardQueries > 1 || opts.forwardKeyUnroll !== undefined;
        const f = explicit
          ? {
              ...planned,
              ...(opts.forwardQueries > 1 ? { queriesPerInvocation: opts.forwardQueries } : {}),
              ...(opts.forwardKeyUnroll !== undefined ? { keyUnroll: opts.forwardKeyUnroll } : opts.forwardQueries > 1 ? { keyUnroll: 1 } : {}),
            }
          : planned;
        // The default may route to the tensor-core (mma) path; --forward-path plain forces the plain default.
        const route = explicit || opts.forwardPath === 'plain' ? undefined : fusedForward.route(ctx, rank, oursFwd);
        if (route) {
          cfg = mmaForwardLabel(route, dt);
          forward = () => fusedForward(ctx, rank, oursFwd);
        } else {
          cfg = forwardConfigLabel(f);
          forward = explicit || opts.forwardPath === 'plain' ? () => fusedForward.withConfig(ctx, rank, fwdArgs, f) : () => fusedForward(ctx, rank, oursFwd);
        }
      }
      let backward: ((a: FusedBackwardArgs<GpuTensor>) => Promise<void>) | undefined;
      if (bwdArgs && pick) {
        const b = pick.backward;
        if (!b) throw new Error('internal: a tuned fwd+bwd row without a backward config');
        backward = 'querySubgroups' in b ? (a) => fusedBackwardMma(ctx, rank, a, b) : (a) => fusedBackwardWithConfig(ctx, rank, a, b);
      } else if (bwdArgs && opts.backwardPath === 'mma') {
        const m = checkFusedBackwardMma(ctx, rank, bwdArgs).config;
        cfg += `; ${mmaBackwardLabel(m)}`;
        backward = (a) => fusedBackwardMma(ctx, rank, a, m);
      } else if (bwdArgs) {
        const def = selectFusedBackward(ctx, rank, bwdArgs).config;
        if (opts.backwardLanes !== undefined) {
          bwdArgs = { ...bwdArgs, queryTileSize: def.queryTile, keyTileSize: def.keyTile, lanes: opts.backwardLanes };
        }
        const sel = selectFusedBackward(ctx, rank, bwdArgs).config;
        // --backward-queries / --backward-keys: the same config with rows grouped per invocation (an explicit config).
        // --backward-unroll: the same config with U rows per dq / dK-dV walk step (an explicit config).
        const grouped = opts.backwardQueries > 1 || opts.backwardKeys > 1;
        const explicit = grouped || opts.backwardUnroll !== undefined;
        // Grouped rows do not combine with the unroll: they run it at 1 unless --backward-unroll says otherwise.
        const u = opts.backwardUnroll ?? (grouped ? 1 : undefined);
        const b = explicit
          ? {
              ...sel,
              ...(opts.backwardQueries > 1 ? { queriesPerInvocation: opts.backwardQueries } : {}),
              ...(opts.backwardKeys > 1 ? { keysPerInvocation: opts.backwardKeys } : {}),
              ...(u !== undefined ? { keyUnroll: u, queryUnroll: u } : {}),
            }
          : sel;
        // The default may route to the tensor-core (mma) backward; --backward-path plain forces the plain default.
        const route = explicit || opts.backwardPath === 'plain' ? undefined : fusedBackward.route(ctx, rank, bwdArgs);
        if (route) {
          cfg += `; ${mmaBackwardLabel(route)}`;
          backward = (a) => fusedBackward(ctx, rank, a);
        } else {
          cfg += `; ${backwardConfigLabel(b)}`;
          backward = explicit || opts.backwardPath === 'plain' ? (a) => fusedBackwardWithConfig(ctx, rank, a, b) : (a) => fusedBackward(ctx, rank, a);
        }
      }
      row.config = cfg;
      const b = bwdArgs;
      const runBackward = backward;
      let run = forward;
      if (b && runBackward) {
        // fwd+bwd: both ops submitted together and timed as one span (as torch's events time flex), or with
        // --separate-spans each submitted alone and their spans summed.
        const both = async (): Promise<void> => {
          await forward();
          await runBackward(b);
        };
        run = opts.separateSpans ? both : () => ctx.batch(both, 'fwd+bwd');
      }
      const t0 = Date.now();
      row.ours = await measureGpu(ctx, run, { warmup: Math.max(1, opts.warmup), reps: opts.reps, minReps: 3, budgetMs: opts.budgetMs, warmer });
      const clock = clocks?.window(t0, Date.now());
      if (clock) row.oursClock = clock;
    } catch (e) {
      if (!(e instanceof SkipOurs)) row.oursError = errText(e);
    }

    // ---- CPU reference (small problems), and our outputs checked against it
    if (flops > opts.cpuMaxFlops) {
      row.cpuNote = `skipped: ${flops.toExponential(1)} FLOP > --cpu-max-flops`;
    } else {
      progress.step(index, item, 'CPU reference');
      try {
        const hq = await ctx.read(query);
        const hk = await ctx.read(key);
        const hv = await ctx.read(value);
        const ho = zeros(shape, dt);
        const hl = zeros(lseShape(c.batch, c.spatial, c.heads), 'float32');
        const fwdHost: FusedForwardArgs<Tensor> = { query: hq, key: hk, value: hv, output: ho, logsumexp: hl, ...params };
        if (bwdArgs) {
          const hdo = await ctx.read(bwdArgs.gradOutput);
          const bwdHost: FusedBackwardArgs<Tensor> = {
            query: hq,
            key: hk,
            value: hv,
            output: ho,
            logsumexp: hl,
            gradOutput: hdo,
            gradQuery: zeros(shape, dt),
            gradKey: zeros(shape, dt),
            gradValue: zeros(shape, dt),
            ...params,
          };
          row.cpu = measureWall(
            () => {
              cpuFusedForward(rank, fwdHost);
              cpuFusedBackward(rank, bwdHost);
            },
            { reps: 3, budgetMs: opts.budgetMs },
          );
          if (row.ours) {
            row.maxAbsErrVsCpu = maxAbsOf([
              [await ctx.read(bwdArgs.gradQuery), bwdHost.gradQuery],
              [await ctx.read(bwdArgs.gradKey), bwdHost.gradKey],
              [await ctx.read(bwdArgs.gradValue), bwdHost.gradValue],
            ]);
          }
        } else {
          row.cpu = measureWall(() => cpuFusedForward(rank, fwdHost), { reps: 3, budgetMs: opts.budgetMs });
          if (row.ours) row.maxAbsErrVsCpu = maxAbsOf([[await ctx.read(output), ho]]);
        }
      } catch (e) {
        row.cpuNote = errText(e);
      }
    }

    // ---- our naive kernel (forward only)
    if (bwd) {
      row.naiveNote = 'forward only';
    } else {
      const estMs = flops / naive.rate;
      if (estMs > opts.naiveMaxMs) {
        row.naiveNote = `skipped: est. ${fmtMs(estMs)} ms${naive.measured ? '' : ' (assumed rate)'} > --naive-max-ms`;
      } else {
        progress.step(index, item, `naive (est. ${fmtMs(estMs)} ms)`);
        try {
          row.naive = await measureGpu(ctx, () => naiveFusedForward(ctx, rank, fwdArgs), {
            warmup: 1,
            reps: opts.reps,
            minReps: 1,
            budgetMs: opts.budgetMs,
            warmer,
          });
          const rate = flops / row.naive.ms;
          naive.rate = naive.measured ? Math.min(naive.rate, rate) : rate;
          naive.measured = true;
        } catch (e) {
          row.naiveNote = errText(e);
        }
      }
    }
  } catch (e) {
    row.oursError ??= errText(e);
  } finally {
    for (const g of owned) g.buffer.destroy();
  }
  progress.done(index, item, row);
  return row;
}

function defaultJsonPath(date: Date, slug: string): string {
  return resolve(repoRoot(), 'bench', 'results', `${date.toISOString().slice(0, 10)}-${slug}.json`);
}

async function main(): Promise<void> {
  const opts = parseOptions(process.argv.slice(2));
  const items = expandCases(CASE_SETS[opts.set], opts.filter, opts.dtype);
  if (items.length === 0) throw new Error(`no case of set '${opts.set}' matches --filter '${opts.filter ?? ''}'${opts.dtype ? ` and --dtype ${opts.dtype}` : ''}`);
  const progress = new Progress(items.length);
  const date = new Date();

  // Torch first, alone on the GPU.
  const torchMap = new Map<string, TorchResult>();
  let torchEnv: { torch: string; gpu: string } | undefined;
  let torchNote: string | undefined;
  if (opts.torch) {
    progress.note(`torch baselines: ${opts.python} ${opts.torchScript} (${items.length} problems)`);
    const tr = await runTorch(opts.python, resolve(repoRoot(), opts.torchScript), torchProblems(items), opts.torchTimeoutS * 1000, (r) => {
      progress.note(`  torch ${r.name} ${r.dtype} ${r.backward ? 'fwd+bwd' : 'fwd'}: flex ${r.flexMs?.toFixed(3) ?? r.flexError ?? r.error ?? '-'} ms, sdpa ${r.sdpaMs?.toFixed(3) ?? '-'} ms`);
    });
    for (const r of tr.results) torchMap.set(`${r.name}|${r.dtype}|${r.backward}`, r);
    torchEnv = tr.env;
    torchNote = tr.note;
    if (tr.note) progress.note(`torch: ${tr.note}`);
  } else {
    torchNote = 'disabled with --no-torch';
  }

  const ctx = await GpuContext.create({ powerPreference: 'high-performance' });
  try {
    const env = { ...collectEnv(ctx, date), torch: torchEnv, torchNote };
    const a = env.adapter;
    console.log(`WebGPU adapter: ${a.description || a.device} (vendor=${a.vendor} architecture=${a.architecture} device=${a.device}${a.isFallbackAdapter ? ', fallback' : ''})`);
    console.log(`features: ${env.features.join(', ') || 'none'}`);
    console.log(`limits: ${Object.entries(env.limits).map(([k, v]) => `${k}=${v}`).join(' ')}`);
    if (env.subgroupMatrix.length) console.log(`subgroup matrix: ${env.subgroupMatrix.join('; ')}`);
    console.log(`node ${env.node}, webgpu ${env.webgpu}, commit ${env.commit}; torch: ${torchEnv ? `${torchEnv.torch} on ${torchEnv.gpu}` : (torchNote ?? 'no')}`);
    if (env.dawnToggles) console.log(`Dawn toggles (NATTEN_WEB_DAWN_TOGGLES): ${env.dawnToggles}`);
    console.log(`timing: ${ctx.hasTimestamps ? 'GPU timestamps (all dispatches of an op)' : 'wall clock (no timestamp-query)'}; set ${opts.set}, ${items.length} measurements`);
    if (isSoftwareAdapter(env)) console.log('NOTE: software adapter: times are not a performance claim');

    const warm = opts.warmClocks === 'on' || (opts.warmClocks === 'auto' && ClockWarmer.useful(ctx));
    const warmer = warm ? await ClockWarmer.create(ctx) : undefined;
    console.log(
      warmer
        ? `clocks: warmed (${WARM_MS} ms of busy work before each measurement, one ${warmer.dispatchMs.toFixed(2)} ms warm dispatch queued before every run)`
        : `clocks: not warmed (${opts.warmClocks === 'off' ? '--warm-clocks off' : 'software adapter'})`,
    );
    // nvidia-smi, where present, records the SM clock during each row's timing (results JSON `oursClock`).
    const clocks = startClockSampler();
    if (clocks) console.log('clocks: sampling the SM clock with nvidia-smi during our timing (oursClock in the JSON)');
    // --tuned: one autotuner for the run, with the bench's clock-warming decision and a persistent cache.
    const tuneCache = opts.tuneCache;
    const tuner = opts.tuned && tuneCache !== undefined ? createRowTuner({ ctx, cache: { path: tuneCache }, budgetMs: opts.tuneBudgetMs, warmClocks: warm }) : undefined;
    if (tuner && tuneCache !== undefined) console.log(`configs: ${tuningText([{ tuned: true, tuneCache, tuneBudgetMs: opts.tuneBudgetMs }])}`);
    const naive = { rate: isSoftwareAdapter(env) ? 1e6 : 1e8, measured: false };
    const rows: BenchRow[] = [];
    try {
      for (const [i, item] of items.entries()) rows.push(await measureItem(ctx, item, opts, naive, torchMap, progress, i, warmer, clocks, tuner));
    } finally {
      warmer?.release();
      clocks?.stop();
    }
    const results: BenchResults = {
      schema: RESULTS_SCHEMA,
      set: opts.set,
      filter: opts.filter,
      reps: opts.reps,
      warmup: opts.warmup,
      clocks: warmer ? { warmed: true, warmMs: WARM_MS, dispatchMs: warmer.dispatchMs } : { warmed: false },
      ...(tuner ? { tuned: true, tuneCache, tuneBudgetMs: opts.tuneBudgetMs } : {}),
      fwdBwdSpan: opts.separateSpans ? 'sum' : 'one',
      env,
      rows,
    };
    console.log('');
    console.log(renderText(results));
    const path = opts.json !== undefined ? resolve(opts.json) : defaultJsonPath(date, adapterSlug(env));
    mkdirSync(dirname(path), { recursive: true });
    writeFileSync(path, `${JSON.stringify(results, null, 1)}\n`);
    console.log(`\nresults: ${path}`);
  } finally {
    ctx.destroy();
  }
}

await runMain(main);
