/**
 * Pure rendering of results: the table cells (shared by the harness's console table and the markdown report),
 * a plain-text aligned table, and the `docs/benchmarks.md` page.
 */
import { CASE_SETS, expandCases } from './cases.ts';
import { type BenchResults, type BenchRow, isSoftwareAdapter, type Timing } from './results.ts';

export const TABLE_HEADER = [
  'case',
  'dtype',
  'pass',
  'ours ms',
  'NA TFLOP/s',
  'GB/s (floor)',
  'naive ms',
  'vs naive',
  'CPU ms',
  'flex ms',
  'vs flex',
  'SDPA ms',
  'vs SDPA',
  'max err vs CPU',
] as const;

/** Milliseconds with 3 significant digits (at least 3 decimals below 1 ms). */
export function fmtMs(ms: number): string {
  if (ms >= 100) return ms.toFixed(0);
  if (ms >= 10) return ms.toFixed(1);
  if (ms >= 1) return ms.toFixed(2);
  return ms.toFixed(3);
}

/** A rate with 3 significant digits. */
export function fmtRate(x: number): string {
  if (x >= 100) return x.toFixed(0);
  if (x >= 10) return x.toFixed(1);
  if (x >= 1) return x.toFixed(2);
  if (x >= 0.01) return x.toFixed(3);
  return x.toExponential(1);
}

/** `baseline / ours` as `12.3x` (above 1: ours is faster). */
export function fmtRatio(baselineMs: number | undefined, oursMs: number | undefined): string {
  if (baselineMs === undefined || oursMs === undefined || !(oursMs > 0)) return '';
  const r = baselineMs / oursMs;
  // Two decimals below 2x, so that a row just above or below level (1.02x, 0.98x) does not read as 1.0x.
  return `${r >= 10 ? r.toFixed(0) : r >= 2 ? r.toFixed(1) : r.toFixed(2)}x`;
}

/** Useful TFLOP/s of a row's flops in `ms`. */
export function tflops(flops: number, ms: number): number {
  return flops / (ms * 1e-3) / 1e12;
}

/** GB/s of the byte floor in `ms`. */
export function gbps(bytes: number, ms: number): number {
  return bytes / (ms * 1e-3) / 1e9;
}

function timingCell(t: Timing | undefined, note: string | undefined): string {
  if (t) return `${fmtMs(t.ms)}${t.method === 'wall' ? ' (wall)' : ''}`;
  return note ? `- (${note})` : '-';
}

/** The cells of one row, in `TABLE_HEADER` order. Notes go in parentheses where a value is missing. */
export function rowCells(r: BenchRow): string[] {
  const ours = r.ours?.ms;
  return [
    r.case,
    r.dtype === 'float16' ? 'f16' : 'f32',
    r.pass === 'forward' ? 'fwd' : 'fwd+bwd',
    r.ours ? `${fmtMs(r.ours.ms)}${r.ours.method === 'wall' ? ' (wall)' : ''}` : `error: ${r.oursError ?? 'not run'}`,
    ours !== undefined ? fmtRate(tflops(r.flops, ours)) : '',
    ours !== undefined ? fmtRate(gbps(r.byteFloor, ours)) : '',
    timingCell(r.naive, r.naiveNote),
    fmtRatio(r.naive?.ms, ours),
    timingCell(r.cpu, r.cpuNote),
    r.flexMs !== undefined ? fmtMs(r.flexMs) : r.torchNote ? `- (${r.torchNote})` : '-',
    fmtRatio(r.flexMs, ours),
    r.sdpaMs !== undefined ? fmtMs(r.sdpaMs) : '-',
    fmtRatio(r.sdpaMs, ours),
    r.maxAbsErrVsCpu !== undefined ? r.maxAbsErrVsCpu.toExponential(1) : '',
  ];
}

/** Columns every row leaves empty (or `-`) are dropped, so a run without torch has no torch columns. */
function usedColumns(rows: readonly string[][]): number[] {
  const n = TABLE_HEADER.length;
  return Array.from({ length: n }, (_, i) => i).filter((i) => i < 4 || rows.some((r) => (r[i] ?? '') !== '' && r[i] !== '-'));
}

/** Aligned plain-text table for the console. */
export function renderText(results: Pick<BenchResults, 'rows'>): string {
  const rows = results.rows.map(rowCells);
  const cols = usedColumns(rows);
  const table = [cols.map((i) => TABLE_HEADER[i] as string), ...rows.map((r) => cols.map((i) => r[i] ?? ''))];
  const widths = cols.map((_, j) => Math.max(...table.map((r) => (r[j] ?? '').length)));
  return table.map((r) => r.map((c, j) => c.padEnd(widths[j] ?? 0)).join('  ').trimEnd()).join('\n');
}

function mdEscape(s: string): string {
  return s.replace(/\|/g, '\\|');
}

/** Markdown table of the rows. */
export function renderMarkdownTable(results: Pick<BenchResults, 'rows'>): string {
  const rows = results.rows.map(rowCells);
  const cols = usedColumns(rows);
  const head = `| ${cols.map((i) => TABLE_HEADER[i]).join(' | ')} |`;
  const sep = `| ${cols.map((i) => (i < 3 ? '---' : '---:')).join(' | ')} |`;
  const body = rows.map((r) => `| ${cols.map((i) => mdEscape(r[i] ?? '')).join(' | ')} |`);
  return [head, sep, ...body].join('\n');
}

/** Geometric mean of `baseline / ours` over rows where both exist. */
export function geomeanRatio(rows: readonly BenchRow[], pick: (r: BenchRow) => number | undefined): { ratio: number; n: number } | undefined {
  let sum = 0;
  let n = 0;
  for (const r of rows) {
    const b = pick(r);
    if (b === undefined || r.ours === undefined || !(r.ours.ms > 0) || !(b > 0)) continue;
    sum += Math.log(b / r.ours.ms);
    n++;
  }
  return n === 0 ? undefined : { ratio: Math.exp(sum / n), n };
}

export interface ReportOptions {
  /** Path of the results JSON the page was rendered from (shown on the page). */
  readonly source?: string;
}

/** The whole `docs/benchmarks.md` page for one results file. */
export function renderReport(results: BenchResults, options: ReportOptions = {}): string {
  const env = results.env;
  const a = env.adapter;
  const software = isSoftwareAdapter(env);
  const gpu = [a.description || a.device, a.vendor && `vendor ${a.vendor}`, a.architecture && `architecture ${a.architecture}`].filter(Boolean).join(', ');
  const lines: string[] = [];
  lines.push('# Benchmarks', '');
  lines.push('<!-- Generated by `pnpm bench:report <results.json ...>` (bench/src/report.ts) from a results file of `pnpm bench`; do not edit by hand. -->', '');
  if (software) {
    lines.push(
      `> **Software adapter (${a.device || a.description || 'fallback'}): these numbers are NOT a performance claim.** They come from a CPU-emulated`,
      '> Vulkan device and only show that the harness runs end to end and what the report looks like. GPU numbers come from',
      '> `bench/device/README.md` on the NVIDIA machine.',
      '',
    );
  }
  const runs = results.runs;
  lines.push(runs && runs.length > 1 ? `- **Dates:** ${runs.map((r) => r.date).join(', ')} (${runs.length} runs on the same adapter, merged)` : `- **Date:** ${env.date}`);
  lines.push(`- **Adapter:** ${gpu}${a.isFallbackAdapter ? ' (fallback adapter)' : ''}`);
  if (a.subgroupMinSize !== undefined) lines.push(`- **Subgroups:** ${a.subgroupMinSize}..${a.subgroupMaxSize ?? a.subgroupMinSize}`);
  lines.push(`- **Features:** ${env.features.length ? env.features.join(', ') : 'none'}`);
  if (env.subgroupMatrix.length) lines.push(`- **Subgroup matrix configs:** ${env.subgroupMatrix.join('; ')}`);
  lines.push(`- **Versions:** node ${env.node}, webgpu (Dawn) ${env.webgpu}, natten-web commit ${runs && runs.length > 1 ? runs.map((r) => `\`${r.commit}\``).join(', ') : `\`${env.commit}\``}, ${env.platform}`);
  if (env.dawnToggles) lines.push(`- **Dawn toggles:** \`${env.dawnToggles}\` (\`NATTEN_WEB_DAWN_TOGGLES\`: Dawn's safety features off for this run; docs/performance.md)`);
  lines.push(`- **Torch:** ${env.torch ? `torch ${env.torch.torch} on ${env.torch.gpu}` : `not run${env.torchNote ? ` (${env.torchNote})` : ''}`}`);
  lines.push(`- **Clocks:** ${clocksText(runs && runs.length > 1 ? runs.map((r) => r.clocks) : [results.clocks])}`);
  const tuning = tuningText(runs && runs.length > 1 ? runs : [results]);
  if (tuning !== undefined) lines.push(`- **Tuning:** ${tuning}`);
  const sm = results.rows.flatMap((r) => (r.oursClock ? [r.oursClock] : []));
  if (sm.length > 0) {
    lines.push(
      `- **SM clock while our kernels were timed (nvidia-smi):** ${Math.min(...sm.map((c) => c.minMHz))}-${Math.max(...sm.map((c) => c.maxMHz))} MHz over ${sm.length} of ${results.rows.length} rows (lowest row median ${Math.min(...sm.map((c) => c.medianMHz))} MHz)`,
    );
  }
  if (runs && runs.length > 1) {
    lines.push(`- **Set:** \`${results.set}\`${options.source ? `; sources \`${options.source}\`` : ''}`);
    for (const r of runs) {
      lines.push(`  - ${r.date}: ${r.rows} rows${r.filter ? ` (filter \`${r.filter}\`)` : ''}, commit \`${r.commit}\`, median of up to ${r.reps} runs after ${r.warmup} warm-up runs; fwd+bwd ${spanText(r.fwdBwdSpan)}`);
    }
  } else {
    lines.push(`- **Set:** \`${results.set}\`${results.filter ? ` (filter \`${results.filter}\`)` : ''}; median of up to ${results.reps} runs after ${results.warmup} warm-up runs; fwd+bwd ${spanText(results.fwdBwdSpan)}${options.source ? `; source \`${options.source}\`` : ''}`);
  }
  lines.push('');
  lines.push('## Results', '');
  lines.push(renderMarkdownTable(results), '');
  lines.push('## Summary', '');
  const summary: [string, (r: BenchRow) => number | undefined][] = [
    ['naive kernel (forward)', (r) => r.naive?.ms],
    ['CPU reference', (r) => r.cpu?.ms],
    ['torch flex_attention', (r) => r.flexMs],
    ['torch SDPA (dense)', (r) => r.sdpaMs],
  ];
  let any = false;
  for (const [name, pick] of summary) {
    const g = geomeanRatio(results.rows, pick);
    if (!g) continue;
    any = true;
    lines.push(`- vs ${name}: geometric mean ${fmtRatio(g.ratio, 1)} over ${g.n} rows (above 1x: ours is faster)`);
  }
  if (!any) lines.push('- no baseline rows to compare');
  lines.push('');
  lines.push('## How to read this', '');
  lines.push(
    ...(tuning === undefined
      ? ['- **ours ms**: our fused kernels at their default configuration (`fusedForward`, plus `fusedBackward` for fwd+bwd),']
      : [
          '- **ours ms**: our fused kernels (`fusedForward`, plus `fusedBackward` for fwd+bwd) at the configuration the autotuner',
          `  picked for the row (\`pnpm bench --tuned\`, see Tuning above; tuning is not timed; the row's \`config\` in the results`,
          `  JSON starts with \`tuned\`)${tuning.startsWith('mixed') ? ' in the tuned runs, else at their default configuration' : ''},`,
        ]),
    '  median GPU time of every dispatch the op makes (`GpuContext.profile`, timestamp queries), or host wall time marked `(wall)`',
    '  when the adapter has no `timestamp-query`. fwd+bwd is one span from the forward\'s first pass to the backward\'s last,',
    '  the two ops submitted together (`batch`), as torch\'s CUDA events time flex; runs marked "two spans summed" timed',
    '  each op submitted alone and added their spans (each span carries about 5 us of timestamp floor on the H200).',
    '- **NA TFLOP/s**: useful FLOPs as NATTEN counts them (core `fnaFlops` = 4·B·N·H·prod(K)·d for the forward;',
    '  the backward is 2.5x the forward, so fwd+bwd is 3.5x) over our time.',
    '- **GB/s (floor)**: the byte floor (q, k, v read and o written once; fwd+bwd adds q, k, v, o, dO read and',
    '  dq, dk, dv written) over our time.',
    '- **naive**: our deliberately simple kernel (`naiveFusedForward`: one invocation per query and head, window',
    '  re-read from global memory, f32 math), forward only; the regression baseline. Skipped when its estimated time',
    '  (from FLOPs at the slowest naive rate seen so far) is too long.',
    '- **CPU**: the reference backend (`@natten-web/cpu`, f64 accumulation), wall time, small problems only; `max err vs CPU`',
    '  is max |ours - CPU| over o (fwd) or dq, dk, dv (fwd+bwd).',
    '- **flex / SDPA**: `bench/baselines/torch_na.py` in the same run on the same machine: compiled `flex_attention`',
    '  with a neighborhood `mask_mod`, and dense `scaled_dot_product_attention` (not neighborhood attention; a reference',
    '  point). `vs X` = X time / our time: above 1x ours is faster.',
  );
  lines.push('');
  lines.push('## Reproduce', '');
  lines.push(
    '- Here: `pnpm bench --set quick` (lavapipe-sized) or `pnpm bench --set standard [--filter 2d-128] [--no-torch]`;',
    '  results go to `bench/results/<date>-<adapter>.json`, then `pnpm bench:report <results.json ...>` writes this page.',
    '- The standard set (B=1, H=8, d=64 unless stated; f16 and f32; fwd and fwd+bwd): 1-D L=4096 K=127; 1-D L=32768',
    '  K=2047 causal; 2-D 128x128 K=7; 2-D 128x128 K=13 dilation 2; 2-D 256x256 K=15 H=16; 3-D 16x32x32 K=(3,7,7);',
    "  NATTEN's FLUX-like 2-D 256x256 K=80 H=24 d=128 (f16 only). Cases live in `bench/src/cases.ts`.",
    '- On the NVIDIA machine: `bench/device/README.md` (bundle with `pnpm bench:bundle`, one command per device run).',
  );
  lines.push('');
  return lines.join('\n');
}

/** The clock line of the report: whether every merged run kept the GPU at its boost clock while timing. */
export function clocksText(clocks: readonly BenchResults['clocks'][]): string {
  if (clocks.every((c) => c?.warmed === true)) {
    const ms = clocks[0]?.dispatchMs;
    return `warmed: the GPU was kept busy around every timed run (${clocks[0]?.warmMs ?? '-'} ms of warm work before each measurement, one ${ms !== undefined ? `${ms.toFixed(2)} ms ` : ''}warm dispatch queued before each run; the torch baselines likewise, with their own burst before each run (HEAT_MS in bench/baselines/torch_na.py)), so the clock governor held the boost clock`;
  }
  if (clocks.every((c) => c?.warmed === false)) return 'not warmed (software adapter, or --warm-clocks off)';
  if (clocks.every((c) => c === undefined)) return 'not recorded (files written before clock warming existed: short kernels may have run below the boost clock)';
  return `mixed: ${clocks.map((c) => (c === undefined ? 'not recorded' : c.warmed ? 'warmed' : 'not warmed')).join(', ')} (per run, in order)`;
}

/**
 * The tuning line of the report, or undefined when no run was `--tuned` (the report then has no such line): which
 * configs our kernels ran. One entry per merged run, in order.
 */
/** How a run timed its fwd+bwd rows (`BenchResults.fwdBwdSpan`; absent in files before session 22: two spans). */
export function spanText(span: 'one' | 'sum' | undefined): string {
  return span === 'one' ? 'one span (both ops in one submission)' : 'two spans summed';
}

export function tuningText(runs: readonly Pick<BenchResults, 'tuned' | 'tuneCache' | 'tuneBudgetMs'>[]): string | undefined {
  const tuned = runs.filter((r) => r.tuned === true);
  if (tuned.length === 0) return undefined;
  const distinct = (xs: readonly (string | number | undefined)[]): string =>
    [...new Set(xs.filter((x) => x !== undefined))].map((x) => (typeof x === 'string' ? `\`${x}\`` : String(x))).join(', ') || '-';
  const how = `the config \`@natten-web/autotune\` picked for each row (mode 'tune': the tune cache, else timed within ${distinct(tuned.map((r) => r.tuneBudgetMs))} ms per op and stored; cache ${distinct(tuned.map((r) => r.tuneCache))}), tuned before each row's timing and outside it`;
  if (tuned.length === runs.length) return `tuned: ours ran ${how}, not the heuristic default`;
  return `mixed: ${runs.map((r) => (r.tuned === true ? 'tuned' : 'default configs')).join(', ')} (per run, in order); the tuned runs ran ${how}`;
}

/**
 * Merge results files of one machine (a standard set split over several device runs with `--filter`): rows in
 * the set's order, the first file's env, and each run's date, commit and sampling in `runs`. Throws if the adapters differ (numbers from different GPUs never share a table).
 */
export function mergeResults(list: readonly BenchResults[]): BenchResults {
  const first = list[0];
  if (!first) throw new Error('mergeResults: no results given');
  const id = (r: BenchResults): string => `${r.env.adapter.vendor}|${r.env.adapter.device}|${r.env.adapter.description}`;
  for (const r of list) {
    if (id(r) !== id(first)) throw new Error(`mergeResults: results from different adapters (${id(first)} vs ${id(r)}) cannot share one table`);
    if ((r.env.dawnToggles ?? '') !== (first.env.dawnToggles ?? '')) {
      throw new Error(`mergeResults: results with different Dawn toggles ('${first.env.dawnToggles ?? ''}' vs '${r.env.dawnToggles ?? ''}') cannot share one table`);
    }
  }
  if (list.length === 1) return first;
  const filters = list.map((r) => r.filter).filter((f): f is string => f !== undefined);
  // A measurement (case, dtype, pass) present in several files is taken from the last file that has it: a
  // re-measured row replaces the earlier one in place, and each run lists how many of its rows the table kept.
  const rowKey = (row: BenchRow): string => `${row.case}|${row.dtype}|${row.pass}`;
  const latest = new Map<string, BenchRow>();
  const owner = new Map<string, number>();
  list.forEach((r, i) => {
    for (const row of r.rows) {
      latest.set(rowKey(row), row);
      owner.set(rowKey(row), i);
    }
  });
  // Rows in the set's own order (case, dtype, pass, as a full run prints them) whatever order the files came in;
  // rows the set does not list keep their first-insertion place after those.
  const canonical = new Map(expandCases(CASE_SETS[first.set] ?? []).map((it, i) => [`${it.case.name}|${it.dtype}|${it.pass}`, i]));
  const place = (row: BenchRow): number => canonical.get(rowKey(row)) ?? Number.MAX_SAFE_INTEGER;
  const rows = [...latest.values()].map((row, i) => ({ row, i })).sort((a, b) => place(a.row) - place(b.row) || a.i - b.i).map((x) => x.row);
  return {
    ...first,
    filter: filters.length === list.length ? filters.join(', ') : undefined,
    rows,
    runs: list.map((r, i) => ({
      date: r.env.date,
      commit: r.env.commit,
      reps: r.reps,
      warmup: r.warmup,
      filter: r.filter,
      rows: r.rows.filter((row) => owner.get(rowKey(row)) === i).length,
      ...(r.clocks ? { clocks: r.clocks } : {}),
      ...(r.tuned ? { tuned: true, tuneCache: r.tuneCache, tuneBudgetMs: r.tuneBudgetMs } : {}),
      ...(r.fwdBwdSpan ? { fwdBwdSpan: r.fwdBwdSpan } : {}),
    })),
  };
}
