/**
 * Render one or more results JSON files (one machine; e.g. a standard set split over several device runs) into
 * docs/benchmarks.md:
 *   pnpm bench:report [--out docs/benchmarks.md] <results.json> [more.json ...]
 * Paths are relative to the repository root.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { mergeResults, renderReport } from './render.ts';
import { type BenchResults, RESULTS_SCHEMA } from './results.ts';

const root = resolve(fileURLToPath(new URL('../..', import.meta.url)));
const { values, positionals } = parseArgs({ options: { out: { type: 'string', default: 'docs/benchmarks.md' } }, allowPositionals: true });
if (positionals.length === 0) {
  console.error('usage: pnpm bench:report [--out docs/benchmarks.md] <results.json> [more.json ...]');
  process.exitCode = 2;
} else {
  const inPaths = positionals.map((p) => resolve(root, p));
  const list = inPaths.map((p) => {
    const r = JSON.parse(readFileSync(p, 'utf8')) as BenchResults;
    if (r.schema !== RESULTS_SCHEMA) throw new Error(`${p}: results schema ${String(r.schema)}, this renderer reads ${RESULTS_SCHEMA}`);
    return r;
  });
  const outPath = resolve(root, values.out);
  const source = inPaths.map((p) => relative(root, p)).join('`, `');
  const merged = mergeResults(list);
  writeFileSync(outPath, renderReport(merged, { source }));
  console.log(`wrote ${relative(root, outPath)} from ${source} (${merged.rows.length} rows)`);
}
