/**
 * `pnpm bench:bmm`: NATTEN's BMM-style ops (qk / av, forward and backward, heads-first) on the benchmark problems.
 * Each op is timed on the plain kernels (tiled, f32 math) and, for float16 where the adapter has subgroup matrices,
 * on the tensor cores: GPU time of the op's dispatches back to back (`timeDispatch`, median), with NA TFLOP/s (2 N P D
 * per head and product) and the attention tensor's bytes per second (inputs filled on the GPU); the fused forward of
 * the same problem (its default path, `ctx.profile` as `pnpm bench` times it) runs in the same pass as a reference.
 * Prints a table and writes JSON (`bench/results/<date>-<adapter>-bmm.json`), stating the adapter and versions.
 *
 * usage: pnpm bench:bmm [--set quick|standard] [--filter str[,str...]] [--dtype f16|f32] [--path plain|mma] [--reps N]
 *        [--kernels] [--json path]    (--path: time one path only, both by default; --kernels: also time each of an
 *        op's dispatches alone, printed under its row and kept in the JSON)
 */
import { type NaRank, product } from '@natten-web/core';
import {
  avBackwardPlan,
  avForwardPlan,
  type BmmPath,
  ClockWarmer,
  fusedForward,
  GpuContext,
  type GpuOpPlan,
  type GpuTensor,
  qkBackwardPlan,
  qkForwardPlan,
  timeDispatch,
} from '@natten-web/gpu';
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { type BenchCase, type BenchDType, bytesOf, CASE_SETS, type CaseSetName } from './cases.ts';
import { adapterSlug, collectEnv, repoRoot, runMain } from './env.ts';
import { fillRandom } from './fill.ts';
import { measureGpu } from './measure.ts';
import { fmtRate, fmtRatio, gbps, tflops } from './render.ts';
import { type BenchEnv, isSoftwareAdapter } from './results.ts';

export const BMM_OPS = ['qk_forward', 'av_forward', 'qk_backward', 'av_backward'] as const;
export const BMM_PATHS = ['plain', 'mma'] as const;
export type BmmTimedPath = (typeof BMM_PATHS)[number];
export type BmmOp = (typeof BMM_OPS)[number];

export interface BmmRow {
  readonly case: string;
  readonly dtype: BenchDType;
  readonly op: BmmOp;
  readonly path: BmmTimedPath;
  /** Median GPU time (ms); absent with `note` when the path cannot run the op here. */
  readonly ms?: number;
  readonly tflops?: number;
  readonly attnGBps?: number;
  readonly note?: string;
  /** With `--kernels`: each of the op's dispatches timed alone (median ms), in plan order, by kernel key. */
  readonly kernels?: readonly { readonly key: string; readonly ms: number }[];
}

export interface BmmResults {
  readonly schema: 1;
  readonly kind: 'bmm';
  readonly set: CaseSetName;
  readonly filter?: string | undefined;
  readonly reps: number;
  readonly env: BenchEnv;
  /** The fused forward of each (case, dtype), its default path, in ms. */
  readonly fused: readonly { readonly case: string; readonly dtype: BenchDType; readonly ms?: number; readonly note?: string }[];
  readonly rows: readonly BmmRow[];
}

/** One product's FLOPs (2 N P D per batch and head) and the attention tensor's bytes, for a case. */
export function bmmWork(c: BenchCase, dtype: BenchDType): { flops: number; attnBytes: number } {
  const slots = c.batch * c.heads * product(c.spatial) * product(c.kernelSize);
  return { flops: 2 * slots * c.dim, attnBytes: slots * bytesOf(dtype) };
}

function errText(e: unknown): string {
  return (e instanceof Error ? e.message : String(e)).split('\n')[0] as string;
}

/** Time every BMM op of one (case, dtype) on each path, and the fused forward, on `ctx`. */
export async function measureBmmCase(
  ctx: GpuContext,
  c: BenchCase,
  dtype: BenchDType,
  reps: number,
  warmer?: ClockWarmer,
  paths: readonly BmmTimedPath[] = BMM_PATHS,
  perKernel = false,
): Promise<{ fused: BmmResults['fused'][number]; rows: BmmRow[] }> {
  const rank = c.rank as NaRank;
  const params = { kernelSize: [...c.kernelSize], dilation: [...c.dilation], isCausal: [...c.isCausal] };
  const rowsShape = [c.batch, c.heads, ...c.spatial, c.dim];
  const attnShape = [c.batch, c.heads, ...c.spatial, product(c.kernelSize)];
  const { flops, attnBytes } = bmmWork(c, dtype);
  const made: GpuTensor[] = [];
  // Inputs filled on the GPU (the attention tensors reach gigabytes): uniform values in [-scale, scale).
  const up = async (shape: number[], seed: number, scale = 1): Promise<GpuTensor> => {
    const t = ctx.createTensor(shape, dtype);
    made.push(t);
    await fillRandom(ctx, t, seed, scale);
    return t;
  };
  const rows: BmmRow[] = [];
  let fused: BmmResults['fused'][number] = { case: c.name, dtype };
  // An attention tensor no binding can hold (the FLUX-like case: 10^10 slots) is a note, not an allocation.
  const attnElems = product(attnShape);
  const attnLimit = Math.min(2 ** 31 - 1, Math.floor(ctx.limits.maxStorageBufferBindingSize / bytesOf(dtype)));
  if (attnElems > attnLimit) {
    const note = `attn ${attnShape.join('x')} has ${attnElems} elements, over the ${attnLimit} one binding holds here`;
    return { fused: { ...fused, note: 'not timed (the BMM ops cannot run this case)' }, rows: BMM_OPS.flatMap((op) => paths.map((path) => ({ case: c.name, dtype, op, path, note }))) };
  }
  try {
    // The fused forward (token-major), timed as `pnpm bench` times it.
    const tm = [c.batch, ...c.spatial, c.heads, c.dim];
    const fa = { query: await up(tm, 11), key: await up(tm, 12), value: await up(tm, 13), output: await up(tm, 14), logsumexp: ctx.createTensor([c.batch, ...c.spatial, c.heads], 'float32'), ...params };
    made.push(fa.logsumexp);
    try {
      const timing = await measureGpu(ctx, () => fusedForward(ctx, rank, fa), { warmup: 1, reps, minReps: reps, budgetMs: Number.POSITIVE_INFINITY, warmer });
      fused = { ...fused, ms: timing.ms };
    } catch (e) {
      fused = { ...fused, note: errText(e) };
    }
    // Attention weights of softmax-like size, so float16 products stay finite.
    const t = {
      q: await up(rowsShape, 1),
      k: await up(rowsShape, 2),
      v: await up(rowsShape, 3),
      dO: await up(rowsShape, 4),
      attn: await up(attnShape, 5, 0.05),
      dAttn: await up(attnShape, 6),
      out: await up(rowsShape, 7),
      dq: await up(rowsShape, 8),
      dk: await up(rowsShape, 9),
      dv: await up(rowsShape, 10),
    };
    const plans: Record<BmmOp, (path: BmmPath) => GpuOpPlan> = {
      qk_forward: (path) => qkForwardPlan(ctx, rank, { query: t.q, key: t.k, attn: t.attn, ...params }, { path }),
      av_forward: (path) => avForwardPlan(ctx, rank, { attn: t.attn, value: t.v, output: t.out, ...params }, { path }),
      qk_backward: (path) => qkBackwardPlan(ctx, rank, { gradAttn: t.dAttn, query: t.q, key: t.k, gradQuery: t.dq, gradKey: t.dk, ...params }, { path }),
      av_backward: (path) => avBackwardPlan(ctx, rank, { gradOutput: t.dO, attn: t.attn, value: t.v, gradAttn: t.dAttn, gradValue: t.dv, ...params }, { path }),
    };
    for (const op of BMM_OPS) {
      const times = op.endsWith('backward') ? 2 : 1;
      for (const path of paths) {
        try {
          const plan = plans[op](path);
          try {
            const opts = { warmup: 2, iterations: reps, ...(warmer ? { warmer } : {}) };
            const r = await timeDispatch(ctx, plan.commands, opts);
            const ms = r.medianNs / 1e6;
            // Each dispatch alone (after the whole op ran, so the split's scales are in place).
            const kernels = [];
            for (const command of perKernel ? plan.commands : []) kernels.push({ key: command.kernel.key.split(':')[0] as string, ms: (await timeDispatch(ctx, [command], opts)).medianNs / 1e6 });
            rows.push({ case: c.name, dtype, op, path, ms, tflops: tflops(times * flops, ms), attnGBps: gbps(times * attnBytes, ms), ...(perKernel ? { kernels } : {}) });
          } finally {
            plan.release();
          }
        } catch (e) {
          rows.push({ case: c.name, dtype, op, path, note: errText(e) });
        }
      }
    }
  } finally {
    for (const x of made) ctx.freeTensor(x);
  }
  return { fused, rows };
}

const fmt = (ms: number | undefined): string => (ms === undefined ? '-' : (ms * 1e3).toFixed(1));

/** The results as a text table: one line per (case, dtype, op), plain and tensor-core times and their ratio. */
export function renderBmm(r: Pick<BmmResults, 'rows' | 'fused'>): string {
  const head = ['case', 'dtype', 'op', 'plain us', 'tensor cores us', 'vs plain', 'TFLOP/s', 'attn GB/s', 'fused fwd us'];
  const lines: string[][] = [head];
  for (const f of r.fused) {
    for (const op of BMM_OPS) {
      const plain = r.rows.find((x) => x.case === f.case && x.dtype === f.dtype && x.op === op && x.path === 'plain');
      const mma = r.rows.find((x) => x.case === f.case && x.dtype === f.dtype && x.op === op && x.path === 'mma');
      if (!plain && !mma) continue;
      const best = mma?.ms !== undefined ? mma : plain;
      lines.push([
        f.case,
        f.dtype === 'float16' ? 'f16' : 'f32',
        op,
        plain?.ms !== undefined ? fmt(plain.ms) : (plain?.note ?? '-'),
        mma?.ms !== undefined ? fmt(mma.ms) : '-',
        fmtRatio(plain?.ms, mma?.ms),
        best?.tflops !== undefined ? fmtRate(best.tflops) : '',
        best?.attnGBps !== undefined ? fmtRate(best.attnGBps) : '',
        f.ms !== undefined ? fmt(f.ms) : (f.note ?? '-'),
      ]);
      // With --kernels: each dispatch alone, under its path's column.
      for (const [col, row] of [[3, plain], [4, mma]] as const) {
        for (const k of row?.kernels ?? []) {
          const line = new Array<string>(head.length).fill('');
          line[2] = `  ${k.key}`;
          line[col] = fmt(k.ms);
          lines.push(line);
        }
      }
    }
  }
  const widths = head.map((_, i) => Math.max(...lines.map((l) => (l[i] as string).length)));
  const table = lines.map((l) => l.map((x, i) => x.padEnd(widths[i] as number)).join('  ').trimEnd()).join('\n');
  // Why the tensor cores did not run (one line per distinct reason).
  const why = [...new Set(r.rows.filter((x) => x.path === 'mma' && x.ms === undefined && x.note !== undefined).map((x) => `${x.dtype}: ${(x.note as string).replace(/^.*cannot run this call: /, '')}`))];
  return why.length ? `${table}\n\ntensor cores not run: ${why.join('; ')}` : table;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      set: { type: 'string', default: 'quick' },
      filter: { type: 'string' },
      dtype: { type: 'string' },
      path: { type: 'string' },
      kernels: { type: 'boolean', default: false },
      reps: { type: 'string', default: '20' },
      json: { type: 'string' },
    },
  });
  const set = values.set as CaseSetName;
  if (!(set in CASE_SETS)) throw new Error(`--set must be quick or standard, got ${values.set}`);
  const only = values.dtype === undefined ? undefined : values.dtype === 'f16' ? 'float16' : values.dtype === 'f32' ? 'float32' : undefined;
  if (values.dtype !== undefined && only === undefined) throw new Error(`--dtype must be f16 or f32, got ${values.dtype}`);
  const paths = values.path === undefined ? BMM_PATHS : BMM_PATHS.filter((p) => p === values.path);
  if (paths.length === 0) throw new Error(`--path must be plain or mma, got ${values.path}`);
  const reps = Number(values.reps);
  if (!Number.isInteger(reps) || reps < 1 || reps > 2048) throw new Error(`--reps must be an integer in [1, 2048], got ${values.reps}`);
  const cases = CASE_SETS[set].filter((c) => values.filter === undefined || values.filter.split(',').some((f) => c.name.includes(f)));
  const date = new Date();
  const ctx = await GpuContext.create({ powerPreference: 'high-performance' });
  try {
    const env = collectEnv(ctx, date);
    const a = env.adapter;
    console.log(`WebGPU adapter: ${a.description || a.device} (vendor=${a.vendor}${a.isFallbackAdapter ? ', fallback' : ''}); node ${env.node}, webgpu ${env.webgpu}, commit ${env.commit}`);
    console.log(`subgroup matrix: ${env.subgroupMatrix.join('; ') || 'none'}; timing: ${ctx.hasTimestamps ? 'GPU timestamps' : 'wall clock'}`);
    if (isSoftwareAdapter(env)) console.log('NOTE: software adapter: times are not a performance claim');
    const warmer = ClockWarmer.useful(ctx) ? await ClockWarmer.create(ctx) : undefined;
    const rows: BmmRow[] = [];
    const fused: BmmResults['fused'][number][] = [];
    try {
      for (const c of cases) {
        for (const dtype of c.dtypes) {
          if (only !== undefined && dtype !== only) continue;
          console.log(`[bmm] ${c.name} ${dtype}`);
          const m = await measureBmmCase(ctx, c, dtype, reps, warmer, paths, values.kernels === true);
          fused.push(m.fused);
          rows.push(...m.rows);
        }
      }
    } finally {
      warmer?.release();
    }
    const results: BmmResults = { schema: 1, kind: 'bmm', set, filter: values.filter, reps, env, fused, rows };
    console.log(`\n${renderBmm(results)}`);
    const path = values.json !== undefined ? resolve(values.json) : resolve(repoRoot(), 'bench', 'results', `${date.toISOString().slice(0, 10)}-${adapterSlug(env)}-bmm.json`);
    mkdirSync(dirname(path), { recursive: true });
    writeFileSync(path, `${JSON.stringify(results, null, 1)}\n`);
    console.log(`\nresults: ${path}`);
  } finally {
    ctx.destroy();
  }
}

// Run as a script (`pnpm bench:bmm`, or a bundle named *bmm.mjs), not when a test imports it.
if (process.argv[1]?.endsWith('bmm.ts') || process.argv[1]?.endsWith('bmm.mjs')) await runMain(main);
