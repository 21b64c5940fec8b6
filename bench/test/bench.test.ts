/**
 * The pure parts of the benchmark: case lists, FLOP and byte math, torch problem mapping, formatting and the
 * report rendered from a fixture results file. No GPU, no timing.
 */
import { readFileSync } from 'node:fs';
import { normalizeParams } from '@natten-web/core';
import { describe, expect, it } from 'vitest';
import {
  byteFloor,
  CASE_SETS,
  caseLabel,
  expandCases,
  itemFlops,
  QUICK_CASES,
  STANDARD_CASES,
  torchProblems,
} from '../src/cases.ts';
import { adapterSlug, repoRoot } from '../src/env.ts';
import { fmtMs, fmtRatio, geomeanRatio, mergeResults, renderMarkdownTable, renderReport, renderText, rowCells, TABLE_HEADER, tuningText } from '../src/render.ts';
import { type BenchResults, type BenchRow, isSoftwareAdapter } from '../src/results.ts';
import { runTorch } from '../src/torch.ts';
import { backwardConfigLabel, forwardConfigLabel, mmaBackwardLabel, mmaForwardLabel, rowProblems } from '../src/tuned.ts';

const fixture = JSON.parse(readFileSync(new URL('./fixtures/results-h100.json', import.meta.url), 'utf8')) as BenchResults;

function find(name: string) {
  const c = STANDARD_CASES.find((x) => x.name === name);
  if (!c) throw new Error(`no case ${name}`);
  return c;
}

describe('case sets', () => {
  it('standard set is the issue list: shapes, kernel sizes, dilation, causal, heads, dims, dtypes', () => {
    const summary = STANDARD_CASES.map((c) => [c.spatial.join('x'), c.kernelSize.join(','), c.dilation.join(','), c.isCausal.some((x) => x), c.batch, c.heads, c.dim, c.dtypes.join('+')]);
    expect(summary).toEqual([
      ['4096', '127', '1', false, 1, 8, 64, 'float16+float32'],
      ['32768', '2047', '1', true, 1, 8, 64, 'float16+float32'],
      ['128x128', '7,7', '1,1', false, 1, 8, 64, 'float16+float32'],
      ['128x128', '13,13', '2,2', false, 1, 8, 64, 'float16+float32'],
      ['256x256', '15,15', '1,1', false, 1, 16, 64, 'float16+float32'],
      ['16x32x32', '3,7,7', '1,1,1', false, 1, 8, 64, 'float16+float32'],
      ['256x256', '80,80', '1,1', false, 1, 24, 128, 'float16'],
    ]);
    for (const c of STANDARD_CASES) expect(c.passes).toEqual(['forward', 'forward+backward']);
  });

  it('names are unique within each set and every case is a valid NA problem (core rules)', () => {
    for (const cases of Object.values(CASE_SETS)) {
      expect(new Set(cases.map((c) => c.name)).size).toBe(cases.length);
      for (const c of cases) {
        expect(() => normalizeParams('bench', c.rank, { kernelSize: c.kernelSize, dilation: c.dilation, isCausal: c.isCausal }, c.spatial)).not.toThrow();
      }
    }
  });

  it('expands case x dtype x pass in order, and filters by name', () => {
    expect(expandCases(STANDARD_CASES)).toHaveLength(6 * 2 * 2 + 1 * 2);
    expect(expandCases(STANDARD_CASES, undefined, 'float16')).toHaveLength(6 * 2 + 1 * 2);
    expect(expandCases(STANDARD_CASES, 'flux', 'float32')).toHaveLength(0);
    const flux = expandCases(STANDARD_CASES, 'flux');
    expect(flux.map((i) => `${i.dtype} ${i.pass}`)).toEqual(['float16 forward', 'float16 forward+backward']);
    const first = expandCases(STANDARD_CASES, '2d-128x128-K7');
    expect(first.map((i) => `${i.case.name} ${i.dtype} ${i.pass}`)).toEqual([
      '2d-128x128-K7 float16 forward',
      '2d-128x128-K7 float16 forward+backward',
      '2d-128x128-K7 float32 forward',
      '2d-128x128-K7 float32 forward+backward',
    ]);
    expect(expandCases(STANDARD_CASES, 'no-such-case')).toEqual([]);
  });

  it('quick set covers every rank, causal and dilation, and stays small enough for the CPU reference', () => {
    expect(new Set(QUICK_CASES.map((c) => c.rank))).toEqual(new Set([1, 2, 3]));
    expect(QUICK_CASES.some((c) => c.isCausal.some((x) => x))).toBe(true);
    expect(QUICK_CASES.some((c) => c.dilation.some((d) => d > 1))).toBe(true);
    for (const i of expandCases(QUICK_CASES)) expect(itemFlops(i.case, i.pass)).toBeLessThan(5e8);
  });

  it('labels cases for humans', () => {
    expect(caseLabel(find('2d-128x128-K13-d2'))).toBe('2-D 128x128 K=13 dil=2 H=8 d=64');
    expect(caseLabel(find('1d-L32768-K2047-causal'))).toBe('1-D 32768 K=2047 causal H=8 d=64');
    expect(caseLabel(find('3d-16x32x32-K3x7x7'))).toBe('3-D 16x32x32 K=(3,7,7) H=8 d=64');
  });
});

describe('FLOP and byte math', () => {
  it('reference problem 2-D 128x128 K=7 H=8 d=64: 1.64 GFLOP forward, 3.5x for fwd+bwd, 67 MB f16 floor', () => {
    const c = find('2d-128x128-K7');
    expect(itemFlops(c, 'forward')).toBe(4 * 128 * 128 * 8 * 49 * 64);
    expect(itemFlops(c, 'forward')).toBe(1644167168);
    expect(itemFlops(c, 'forward+backward')).toBe(3.5 * 1644167168);
    expect(byteFloor(c, 'float16', 'forward')).toBe(4 * 128 * 128 * 8 * 64 * 2);
    expect(byteFloor(c, 'float32', 'forward')).toBe(2 * byteFloor(c, 'float16', 'forward'));
    expect(byteFloor(c, 'float16', 'forward+backward')).toBe(3 * byteFloor(c, 'float16', 'forward'));
  });

  it('FLUX-like problem: 4*N*H*K^2*d with N=65536, H=24, K=80, d=128', () => {
    expect(itemFlops(find('2d-256x256-K80-H24-d128-flux'), 'forward')).toBe(4 * 65536 * 24 * 6400 * 128);
  });

  it('3-D charges the product of the per-axis kernel sizes', () => {
    expect(itemFlops(find('3d-16x32x32-K3x7x7'), 'forward')).toBe(4 * 16 * 32 * 32 * 8 * (3 * 7 * 7) * 64);
  });
});

describe('torch problems', () => {
  it('carries the fields torch_na.py reads, with backward per pass', () => {
    const p = torchProblems(expandCases(STANDARD_CASES, '1d-L32768'));
    expect(p).toHaveLength(4);
    expect(p[0]).toEqual({
      name: '1d-L32768-K2047-causal',
      spatial: [32768],
      kernelSize: [2047],
      dilation: [1],
      isCausal: [true],
      batch: 1,
      heads: 8,
      dim: 64,
      dtype: 'float16',
      backward: false,
    });
    expect(p.map((x) => x.backward)).toEqual([false, true, false, true]);
  });
});

describe('formatting', () => {
  it('milliseconds and ratios', () => {
    expect(fmtMs(123.4)).toBe('123');
    expect(fmtMs(12.34)).toBe('12.3');
    expect(fmtMs(1.234)).toBe('1.23');
    expect(fmtMs(0.01234)).toBe('0.012');
    expect(fmtRatio(4, 0.5)).toBe('8.0x');
    expect(fmtRatio(25, 0.5)).toBe('50x');
    expect(fmtRatio(0.25, 0.5)).toBe('0.50x');
    // Two decimals below 2x: just above level is not level.
    expect(fmtRatio(0.0949, 0.093)).toBe('1.02x');
    expect(fmtRatio(0.9, 0.5)).toBe('1.80x');
    expect(fmtRatio(1, 0.5)).toBe('2.0x');
    expect(fmtRatio(undefined, 0.5)).toBe('');
    expect(fmtRatio(1, undefined)).toBe('');
  });

  it('row cells: time, TFLOP/s, GB/s, ratios vs naive/flex/SDPA', () => {
    const cells = rowCells(fixture.rows[0] as BenchResults['rows'][number]);
    const at = (h: (typeof TABLE_HEADER)[number]) => cells[TABLE_HEADER.indexOf(h)];
    expect(at('ours ms')).toBe('0.500');
    expect(at('NA TFLOP/s')).toBe('3.29'); // 1.644e9 FLOP in 0.5 ms
    expect(at('GB/s (floor)')).toBe('134'); // 67.1 MB in 0.5 ms
    expect(at('naive ms')).toBe('4.00');
    expect(at('vs naive')).toBe('8.0x');
    expect(at('flex ms')).toBe('0.250');
    expect(at('vs flex')).toBe('0.50x');
    expect(at('vs SDPA')).toBe('2.0x');
    expect(at('CPU ms')).toBe('- (skipped: 1.6e+9 FLOP > --cpu-max-flops)');
  });

  it('errors and notes show where a value is missing', () => {
    const cells = rowCells(fixture.rows[2] as BenchResults['rows'][number]);
    expect(cells[3]).toBe('error: NattenArgumentError: something | with a pipe');
    expect(cells[4]).toBe('');
    expect(cells[6]).toBe('- (skipped: est. 11700 ms > --naive-max-ms)');
    expect(cells[9]).toBe('- (OutOfMemoryError)');
  });

  it('text table drops columns no row fills', () => {
    const noTorch = { rows: fixture.rows.map(({ flexMs: _f, sdpaMs: _s, torchNote: _t, ...r }) => r) };
    const text = renderText(noTorch);
    expect(text.split('\n')[0]).not.toContain('flex');
    expect(text.split('\n')[0]).toContain('vs naive');
    expect(renderText(fixture).split('\n')[0]).toContain('vs SDPA');
    expect(text.split('\n')).toHaveLength(1 + fixture.rows.length);
  });

  it('markdown table escapes pipes', () => {
    const md = renderMarkdownTable(fixture);
    expect(md).toContain('something \\| with a pipe');
    expect(md.split('\n')[1]).toMatch(/^\| --- \| --- \| --- \| ---: /);
  });

  it('geometric mean of baseline/ours over rows with both', () => {
    const g = geomeanRatio(fixture.rows, (r) => r.flexMs);
    expect(g?.n).toBe(2);
    expect(g?.ratio).toBeCloseTo(Math.sqrt(0.5 * 0.5), 12);
    expect(geomeanRatio(fixture.rows, (r) => r.cpu?.ms)).toBeUndefined();
  });
});

describe('report page', () => {
  it('renders date, GPU, versions, torch, table and summary from a results file', () => {
    const md = renderReport(fixture, { source: 'bench/results/fixture.json' });
    expect(md).toContain('# Benchmarks');
    expect(md).toContain('- **Date:** 2026-11-27T22:00:00.000Z');
    expect(md).toContain('- **Adapter:** NVIDIA H100 80GB HBM3 (Vulkan), vendor nvidia, architecture hopper');
    expect(md).toContain('- **Versions:** node v20.20.2, webgpu (Dawn) 0.6.2, natten-web commit `abc123def456`, linux-x64');
    expect(md).toContain('- **Torch:** torch 2.11.0+cu130 on NVIDIA H100 80GB HBM3');
    expect(md).toContain('- **Subgroup matrix configs:** f16->f32 16x16x16');
    expect(md).toContain('source `bench/results/fixture.json`');
    expect(md).toContain('| 2d-128x128-K7 | f16 | fwd | 0.500 | 3.29 | 134 | 4.00 | 8.0x |');
    expect(md).toContain('- vs naive kernel (forward): geometric mean 8.0x over 1 rows');
    expect(md).toContain('- vs torch flex_attention: geometric mean 0.50x over 2 rows');
    expect(md).not.toContain('NOT a performance claim');
  });

  it('labels software adapters as no performance claim', () => {
    const soft: BenchResults = {
      ...fixture,
      env: { ...fixture.env, adapter: { ...fixture.env.adapter, vendor: 'mesa', architecture: 'software', device: 'llvmpipe', description: 'llvmpipe: Mesa', isFallbackAdapter: true }, torch: undefined, torchNote: 'disabled with --no-torch' },
    };
    expect(isSoftwareAdapter(soft.env)).toBe(true);
    expect(isSoftwareAdapter(fixture.env)).toBe(false);
    const md = renderReport(soft);
    expect(md).toContain('**Software adapter (llvmpipe): these numbers are NOT a performance claim.**');
    expect(md).toContain('- **Torch:** not run (disabled with --no-torch)');
  });
});

describe('tuned runs (--tuned)', () => {
  const tuned: BenchResults = { ...fixture, tuned: true, tuneCache: '/data/tune-cache.json', tuneBudgetMs: 20000 };
  const line =
    "- **Tuning:** tuned: ours ran the config `@natten-web/autotune` picked for each row (mode 'tune': the tune cache, else timed within 20000 ms per op and stored; cache `/data/tune-cache.json`), tuned before each row's timing and outside it, not the heuristic default";

  it('the report states it in a header line after the clocks, and says so where it explains ours', () => {
    const md = renderReport(tuned);
    expect(md).toContain(line);
    const lines = md.split('\n');
    expect(lines.indexOf(line)).toBe(lines.findIndex((l) => l.startsWith('- **Clocks:**')) + 1);
    expect(md).toContain('at the configuration the autotuner');
    expect(md).not.toContain('our fused kernels at their default configuration');
  });

  it('a default-config run has no tuning line and reads as before', () => {
    const md = renderReport(fixture);
    expect(md).not.toContain('**Tuning:**');
    expect(md).toContain('- **ours ms**: our fused kernels at their default configuration');
    expect(tuningText([fixture])).toBeUndefined();
    expect(tuningText([{ tuned: false }])).toBeUndefined();
  });

  it('merged runs: one line when every run was tuned, per-run states when some were not', () => {
    const a: BenchResults = { ...tuned, filter: '2d-128', rows: fixture.rows.slice(0, 2) };
    const b: BenchResults = { ...tuned, filter: 'flux', rows: fixture.rows.slice(2), tuneBudgetMs: 5000 };
    const m = mergeResults([a, b]);
    expect(m.runs?.map((r) => [r.tuned, r.tuneBudgetMs])).toEqual([[true, 20000], [true, 5000]]);
    expect(renderReport(m)).toContain('- **Tuning:** tuned: ours ran the config `@natten-web/autotune` picked for each row (mode \'tune\': the tune cache, else timed within 20000, 5000 ms per op and stored; cache `/data/tune-cache.json`)');
    const plain: BenchResults = { ...fixture, filter: 'flux', rows: fixture.rows.slice(2) };
    const mixed = renderReport(mergeResults([a, plain]));
    expect(mixed).toContain('- **Tuning:** mixed: tuned, default configs (per run, in order); the tuned runs ran the config `@natten-web/autotune` picked');
    expect(mixed).toContain('in the tuned runs, else at their default configuration');
    expect(mergeResults([plain, { ...plain, filter: 'x' }]).runs?.some((r) => 'tuned' in r)).toBe(false);
  });

  it('config labels: tiles, staging, lanes, grouping and unroll, neutral values omitted', () => {
    expect(forwardConfigLabel({ path: 'plain', queryTile: [8, 8], keyTile: [4, 8], stage: 'f32' })).toBe('fwd plain q8x8/k4x8/f32');
    expect(forwardConfigLabel({ path: 'plain', queryTile: [64], keyTile: [32], stage: 'f16', lanes: 4, keyUnroll: 2 })).toBe('fwd plain q64/k32/f16 lanes 4 U 2');
    expect(forwardConfigLabel({ path: 'plain', queryTile: [4, 8], keyTile: [4, 8], stage: 'f32', lanes: 1, queriesPerInvocation: 2, keyUnroll: 1 })).toBe('fwd plain q4x8/k4x8/f32 Q 2');
    const b = { queryTile: [8, 8], keyTile: [8, 8], numSplitsKey: [1, 2], computeDeltaWithTorch: false };
    expect(backwardConfigLabel(b)).toBe('bwd q8x8/k8x8 splits 1x2');
    expect(backwardConfigLabel({ ...b, lanes: 4, keyUnroll: 2, queryUnroll: 2 })).toBe('bwd q8x8/k8x8 splits 1x2 lanes 4 U 2');
    expect(backwardConfigLabel({ ...b, queriesPerInvocation: 2, keyUnroll: 1, queryUnroll: 1 })).toBe('bwd q8x8/k8x8 splits 1x2 Q 2 K 1');
    expect(backwardConfigLabel({ ...b, keyUnroll: 2, queryUnroll: 1, computeDeltaWithTorch: true })).toBe('bwd q8x8/k8x8 splits 1x2 U 2/1 delta separate');
    expect(mmaBackwardLabel({ path: 'mma', queryTile: [4, 8], querySubgroups: 2, keyTile: [8, 8], keySubgroups: 4, chunk: 32 })).toBe('bwd mma q4x8/sg2 k8x8/sg4 c32');
    expect(mmaForwardLabel({ path: 'mma', queryTile: [16, 8], keyChunk: 16, subgroups: 8 }, 'float16')).toBe('fwd mma q16x8/bk16/sg8');
    expect(mmaForwardLabel({ path: 'mma', queryTile: [64], keyChunk: 16, subgroups: 4 }, 'float32')).toBe('fwd mma split q64/bk16/sg4');
    expect(mmaForwardLabel({ path: 'mma', queryTile: [2, 4, 4], keyChunk: 16, subgroups: 2, tightScratch: true, kvInTurn: true }, 'float32')).toBe('fwd mma split q2x4x4/bk16/sg2 tight inturn');
    expect(mmaForwardLabel({ path: 'mma', queryTile: [64], keyChunk: 16, subgroups: 4, pOverK: true }, 'float16')).toBe('fwd mma q64/bk16/sg4 pk');
    expect(mmaBackwardLabel({ path: 'mma', queryTile: [8, 8], querySubgroups: 4, keyTile: [4, 8], keySubgroups: 2, chunk: 16, tightScratch: true, dqSharedScratch: true })).toBe('bwd mma q8x8/sg4 k4x8/sg2 c16 tight dq-shared');
  });

  it("a row's tune problems: the forward stores the LSE as the bench's does; fwd+bwd rows add the backward", () => {
    const [fwd, bwd] = expandCases(QUICK_CASES, 'q-2d');
    if (!fwd || !bwd) throw new Error('quick set has no q-2d rows');
    const f = rowProblems(fwd);
    expect(f.backward).toBeUndefined();
    expect(f.forward).toMatchObject({ rank: 2, dtype: 'float32', batch: 1, spatial: [24, 24], heads: 2, headsKv: 2, dim: 32, dimV: 32, hasRpb: false, hasLse: true });
    expect(f.forward.params).toMatchObject({ kernelSize: [5, 5], dilation: [2, 2], isCausal: [false, false] });
    const fb = rowProblems(bwd);
    expect(fb.forward).toEqual(f.forward);
    expect(fb.backward).toMatchObject({ spatial: [24, 24], hasLse: true, hasGradRpb: false });
  });
});

describe('merging split runs', () => {
  it('merges rows of one adapter in the set\'s order and joins the filters', () => {
    const a: BenchResults = { ...fixture, filter: '2d-128', rows: fixture.rows.slice(0, 2) };
    const b: BenchResults = { ...fixture, filter: 'flux', rows: fixture.rows.slice(2) };
    const m = mergeResults([a, b]);
    expect(m.rows.map((r) => `${r.case} ${r.pass}`)).toEqual(fixture.rows.map((r) => `${r.case} ${r.pass}`));
    expect(m.filter).toBe('2d-128, flux');
    // Files in the other order: the rows still come in the set's order (the FLUX-like case is last in it).
    expect(mergeResults([b, a]).rows.map((r) => `${r.case} ${r.pass}`)).toEqual(fixture.rows.map((r) => `${r.case} ${r.pass}`));
    expect(m.env).toBe(a.env);
    const later: BenchResults = { ...b, reps: 8, env: { ...b.env, date: '2026-11-28T00:00:00.000Z', commit: 'abc123' } };
    const m2 = mergeResults([a, later]);
    expect(m2.runs?.map((r) => [r.rows, r.reps, r.commit, r.filter])).toEqual([
      [2, a.reps, a.env.commit, '2d-128'],
      [fixture.rows.length - 2, 8, 'abc123', 'flux'],
    ]);
    const md = renderReport(m2, { source: 'x.json`, `y.json' });
    expect(md).toContain(`- **Dates:** ${a.env.date}, 2026-11-28T00:00:00.000Z (2 runs on the same adapter, merged)`);
    expect(md).toContain('median of up to 8 runs');
    // Files before session 22 timed fwd+bwd as two spans; newer ones say how.
    expect(md).toContain('warm-up runs; fwd+bwd two spans summed');
    const spans = renderReport(mergeResults([{ ...a, fwdBwdSpan: 'one' }, { ...later, fwdBwdSpan: 'sum' }]));
    expect(spans).toContain('warm-up runs; fwd+bwd one span (both ops in one submission)');
    expect(spans).toContain('warm-up runs; fwd+bwd two spans summed');
    expect(renderReport({ ...fixture, fwdBwdSpan: 'one' })).toContain('warm-up runs; fwd+bwd one span (both ops in one submission)');
    expect(md).toContain('- **Clocks:** not recorded');
    // Every run warmed: one line saying so; a mix names each run's state.
    const warm = { warmed: true, warmMs: 300, dispatchMs: 2 };
    const w = renderReport(mergeResults([{ ...a, clocks: warm }, { ...later, clocks: warm }]));
    expect(w).toContain('- **Clocks:** warmed: the GPU was kept busy around every timed run (300 ms of warm work before each measurement, one 2.00 ms warm dispatch');
    expect(renderReport(mergeResults([{ ...a, clocks: warm }, later]))).toContain('- **Clocks:** mixed: warmed, not recorded (per run, in order)');
  });
  it('takes a measurement present in several runs from the last one, in the place it first appeared', () => {
    const first: BenchResults = { ...fixture, filter: 'all', rows: fixture.rows };
    const remeasured = { ...(fixture.rows[1] as BenchRow), config: 'remeasured' };
    const again: BenchResults = { ...fixture, filter: 'one', env: { ...fixture.env, commit: 'def456' }, rows: [remeasured] };
    const m = mergeResults([first, again]);
    expect(m.rows.map((r) => `${r.case} ${r.dtype} ${r.pass}`)).toEqual(fixture.rows.map((r) => `${r.case} ${r.dtype} ${r.pass}`));
    expect(m.rows[1]).toBe(remeasured);
    expect(m.rows.filter((r) => r !== remeasured)).toEqual(fixture.rows.filter((_, i) => i !== 1));
    expect(m.runs?.map((r) => r.rows)).toEqual([fixture.rows.length - 1, 1]);
  });
  it('refuses results of different adapters', () => {
    const other: BenchResults = { ...fixture, env: { ...fixture.env, adapter: { ...fixture.env.adapter, device: 'NVIDIA H200' } } };
    expect(() => mergeResults([fixture, other])).toThrow(/results from different adapters .* cannot share one table/);
    expect(() => mergeResults([])).toThrow('mergeResults: no results given');
  });
  it("states a run's extra Dawn toggles, and keeps runs with different toggles out of one table", () => {
    const toggled: BenchResults = { ...fixture, env: { ...fixture.env, dawnToggles: 'disable_robustness' } };
    expect(renderReport(toggled)).toContain("- **Dawn toggles:** `disable_robustness` (`NATTEN_WEB_DAWN_TOGGLES`: Dawn's safety features off for this run; docs/performance.md)");
    expect(renderReport(fixture)).not.toContain('Dawn toggles');
    expect(() => mergeResults([fixture, toggled])).toThrow(/results with different Dawn toggles \('' vs 'disable_robustness'\) cannot share one table/);
    expect(mergeResults([toggled, toggled]).env.dawnToggles).toBe('disable_robustness');
  });
});

describe('env helpers', () => {
  it('adapter slugs for file names', () => {
    expect(adapterSlug(fixture.env)).toBe('nvidia-h100-80gb-hbm3');
    expect(adapterSlug({ adapter: { ...fixture.env.adapter, description: 'llvmpipe: Mesa 25.0.7 (LLVM 15.0.6)' } })).toBe('llvmpipe-mesa-25-0-7');
  });
  it('finds the repository root from a nested folder', () => {
    const root = repoRoot(new URL('.', import.meta.url).pathname);
    expect(readFileSync(`${root}/pnpm-workspace.yaml`, 'utf8')).toContain('bench');
  });
});

describe('torch runner', () => {
  it('reports why torch did not run instead of failing the benchmark', async () => {
    const seen: unknown[] = [];
    const r = await runTorch('/nonexistent/python3', 'bench/baselines/torch_na.py', torchProblems(expandCases(QUICK_CASES)), 10_000, (x) => seen.push(x));
    expect(r.results).toEqual([]);
    expect(seen).toEqual([]);
    expect(r.note).toMatch(/^\/nonexistent\/python3 could not run \(/);
  });
});
