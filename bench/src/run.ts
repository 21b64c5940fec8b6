/**
 * The benchmark harness: `pnpm bench [--set quick|standard] [--filter str[,str...]] [--json path] [--no-torch]`.
 *
 * For each case x dtype x pass it measures our fused kernels (default config), our naive kernel (forward only),
 * the CPU reference (small problems) and, when torch with CUDA is there, torch flex_attention and SDPA
 * (bench/baselines/torch_na.py, run once for the whole set before our kernels). Prints the device and a table,
 * writes a results JSON (bench/results/<date>-<adapter>.json by default). Progress goes to stderr.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import {
  compareTensors,
  type FusedBackwardArgs,
  type FusedForwardArgs,
  lseShape,
  type Tensor,
  zeros,
} from '@natten-web/core';
import { fusedBackward as cpuFusedBackward, fusedForward as cpuFusedForward } from '@natten-web/cpu';
import { fusedBackward, fusedBackwardWithConfig, fusedForward, fusedForwardSgmat, GpuContext, type GpuTensor, naiveFusedForward, planFusedForwardSgmat, selectFusedBackward } from '@natten-web/gpu';
import { type BenchItem, byteFloor, CASE_SETS, type CaseSetName, caseLabel, expandCases, itemFlops, torchProblems } from './cases.ts';
import { adapterSlug, collectEnv, repoRoot } from './env.ts';
import { fillRandom } from './fill.ts';
import { fmtMs, renderText } from './render.ts';
import { type BenchResults, type BenchRow, isSoftwareAdapter, RESULTS_SCHEMA, type Timing } from './results.ts';
import { runTorch, type TorchResult } from './torch.ts';

const USAGE = `usage: pnpm bench [--set quick|standard] [--filter str[,str...]] [--json path] [--no-torch]
  [--reps 20] [--warmup 3] [--budget-ms 3000] [--naive-max-ms 5000] [--cpu-max-flops 5e8]
  [--python python3] [--torch-script bench/baselines/torch_na.py] [--torch-timeout-s 420]
  [--forward-lanes 1|2|4|8]  forward with its default tiles but this many lanes per query (default: the heuristic)
  [--backward-lanes 1|2|4|8] backward with its default tiles but this many lanes per row (default: the heuristic)
  [--forward-path default|sgmat]  sgmat: the tensor-core forward (f16, subgroup matrices) at its default config
  [--forward-queries 1|2|4] [--backward-queries 1|2|4] [--backward-keys 1|2|4]
                             the default configs with rows grouped per invocation (experimental knobs)`;

interface Options {
  readonly set: CaseSetName;
  readonly filter: string | undefined;
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
  /** Run the forward with its default tiles but this many lanes per query (1 = single-lane), instead of the default. */
  readonly forwardLanes: number | undefined;
  /** Forward kernel path: the default (`fusedForward`) or the tensor-core forward (`fusedForwardSgmat`, its default config). */
  readonly forwardPath: 'default' | 'sgmat';
  /** Experimental row grouping (1 = the plain kernels): queries per forward / dq invocation, keys per dkv invocation. */
  readonly forwardQueries: number;
  readonly backwardQueries: number;
  readonly backwardKeys: number;
}

function parseOptions(argv: readonly string[]): Options {
  const { values } = parseArgs({
    args: [...argv],
    options: {
      set: { type: 'string', default: 'standard' },
      filter: { type: 'string' },
      json: { type: 'string' },
      'no-torch': { type: 'boolean', default: false },
      reps: { type: 'string', default: '20' },
      warmup: { type: 'string', default: '3' },
      'budget-ms': { type: 'string', default: '3000' },
      'naive-max-ms': { type: 'string', default: '5000' },
      'cpu-max-flops': { type: 'string', default: '5e8' },
      python: { type: 'string', default: 'python3' },
      'torch-script': { type: 'string', default: 'bench/baselines/torch_na.py' },
      'torch-timeout-s': { type: 'string', default: '420' },
      'backward-lanes': { type: 'string' },
      'forward-lanes': { type: 'string' },
      'forward-path': { type: 'string', default: 'default' },
      'forward-queries': { type: 'string', default: '1' },
      'backward-queries': { type: 'string', default: '1' },
      'backward-keys': { type: 'string', default: '1' },
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
  const forwardPath = values['forward-path'];
  if (forwardPath !== 'default' && forwardPath !== 'sgmat') throw new Error(`--forward-path must be default or sgmat, got '${forwardPath}'\n${USAGE}`);
  return {
    set,
    filter: values.filter,
    forwardPath,
    forwardQueries: Math.floor(num('forward-queries', values['forward-queries'], 1)),
    backwardQueries: Math.floor(num('backward-queries', values['backward-queries'], 1)),
    backwardKeys: Math.floor(num('backward-keys', values['backward-keys'], 1)),
    json: values.json,
    torch: !values['no-torch'],
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
  };
}

/** Progress on stderr: a live line on a TTY, else one line per finished case. */
class Progress {
  private readonly tty = process.stderr.isTTY === true;
  constructor(private readonly total: number) {}
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
    ].filter((p): p is string => p !== undefined);
    const line = `[${i + 1}/${this.total}] ${item.case.name} ${item.dtype} ${item.pass}: ${parts.join(', ')}`;
    process.stderr.write(this.tty ? `\r\x1b[K${line}\n` : `${line}\n`);
  }
  note(msg: string): void {
    process.stderr.write(this.tty ? `\r\x1b[K${msg}\n` : `${msg}\n`);
  }
}

function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
}

/**
 * Warm-up runs (the first compiles the pipelines), then timed runs until `reps` samples, or until the budget
 * is spent once `minReps` samples exist. GPU time of every dispatch from `ctx.profile`, else wall time.
 */
async function measureGpu(
  ctx: GpuContext,
  run: () => Promise<void>,
  o: { warmup: number; reps: number; minReps: number; budgetMs: number },
): Promise<Timing> {
  for (let i = 0; i < o.warmup; i++) await run();
  const samples: number[] = [];
  let method: Timing['method'] = 'gpu-timestamp';
  const t0 = performance.now();
  while (samples.length < o.reps && (samples.length < o.minReps || performance.now() - t0 < o.budgetMs)) {
    const p = await ctx.profile(run);
    if (p.gpuNs === undefined || p.dispatches === 0) {
      method = 'wall';
      samples.push(p.wallMs);
    } else samples.push(p.gpuNs / 1e6);
  }
  return { ms: median(samples), minMs: Math.min(...samples), samples: samples.length, method };
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

    // ---- ours (default config)
    progress.step(index, item, 'ours (compile + warm-up)');
    try {
      if (opts.forwardLanes !== undefined) {
        const d = fusedForward.defaultConfig(ctx, rank, fwdArgs);
        oursFwd = { ...fwdArgs, queryTileSize: d.queryTile, keyTileSize: d.keyTile, lanes: opts.forwardLanes };
      }
      let cfg: string;
      let forward: () => Promise<void>;
      if (opts.forwardPath === 'sgmat') {
        const f = planFusedForwardSgmat(ctx, rank, fwdArgs).config;
        cfg = `fwd sgmat q${f.queryTile.join('x')}/bk${f.keyChunk}`;
        forward = () => fusedForwardSgmat(ctx, rank, fwdArgs, f);
      } else {
        const planned = fusedForward.plan(ctx, rank, oursFwd).config;
        // --forward-queries: the same config with several queries per invocation (an explicit config).
        const f = opts.forwardQueries > 1 ? { ...planned, queriesPerInvocation: opts.forwardQueries } : planned;
        cfg = `fwd ${f.path} q${f.queryTile.join('x')}/k${f.keyTile.join('x')}/${f.stage}${(f.lanes ?? 1) > 1 ? ` lanes ${f.lanes}` : ''}${opts.forwardQueries > 1 ? ` Q ${opts.forwardQueries}` : ''}`;
        forward = opts.forwardQueries > 1 ? () => fusedForward.withConfig(ctx, rank, fwdArgs, f) : () => fusedForward(ctx, rank, oursFwd);
      }
      let backward: ((a: FusedBackwardArgs<GpuTensor>) => Promise<void>) | undefined;
      if (bwdArgs) {
        const def = selectFusedBackward(ctx, rank, bwdArgs).config;
        if (opts.backwardLanes !== undefined) {
          bwdArgs = { ...bwdArgs, queryTileSize: def.queryTile, keyTileSize: def.keyTile, lanes: opts.backwardLanes };
        }
        const sel = selectFusedBackward(ctx, rank, bwdArgs).config;
        // --backward-queries / --backward-keys: the same config with rows grouped per invocation (an explicit config).
        const grouped = opts.backwardQueries > 1 || opts.backwardKeys > 1;
        const b = grouped
          ? { ...sel, ...(opts.backwardQueries > 1 ? { queriesPerInvocation: opts.backwardQueries } : {}), ...(opts.backwardKeys > 1 ? { keysPerInvocation: opts.backwardKeys } : {}) }
          : sel;
        cfg += `; bwd q${b.queryTile.join('x')}/k${b.keyTile.join('x')} splits ${b.numSplitsKey.join('x')}${(b.lanes ?? 1) > 1 ? ` lanes ${b.lanes}` : ''}${grouped ? ` Q ${opts.backwardQueries} K ${opts.backwardKeys}` : ''}`;
        backward = grouped ? (a) => fusedBackwardWithConfig(ctx, rank, a, b) : (a) => fusedBackward(ctx, rank, a);
      }
      row.config = cfg;
      const b = bwdArgs;
      const runBackward = backward;
      const run =
        b && runBackward
          ? async () => {
              await forward();
              await runBackward(b);
            }
          : forward;
      row.ours = await measureGpu(ctx, run, { warmup: Math.max(1, opts.warmup), reps: opts.reps, minReps: 3, budgetMs: opts.budgetMs });
    } catch (e) {
      row.oursError = errText(e);
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
  const items = expandCases(CASE_SETS[opts.set], opts.filter);
  if (items.length === 0) throw new Error(`no case of set '${opts.set}' matches --filter '${opts.filter ?? ''}'`);
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
    console.log(`timing: ${ctx.hasTimestamps ? 'GPU timestamps (all dispatches of an op)' : 'wall clock (no timestamp-query)'}; set ${opts.set}, ${items.length} measurements`);
    if (isSoftwareAdapter(env)) console.log('NOTE: software adapter: times are not a performance claim');

    const naive = { rate: isSoftwareAdapter(env) ? 1e6 : 1e8, measured: false };
    const rows: BenchRow[] = [];
    for (const [i, item] of items.entries()) rows.push(await measureItem(ctx, item, opts, naive, torchMap, progress, i));
    const results: BenchResults = { schema: RESULTS_SCHEMA, set: opts.set, filter: opts.filter, reps: opts.reps, warmup: opts.warmup, env, rows };
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

try {
  await main();
} catch (e) {
  console.error(e instanceof Error ? (e.stack ?? e.message) : String(e));
  process.exitCode = 1;
}
// A live Dawn handle can keep the process up after destroy(); leave shortly after the work is done.
setTimeout(() => process.exit(), 2000).unref();
