/**
 * Render a results JSON into docs/benchmarks.md:
 *   pnpm --filter @natten-web/bench bench:report <results.json> [out.md]     (default out: docs/benchmarks.md)
 * Paths are relative to the repository root.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { renderReport } from './render.ts';
import { type BenchResults, RESULTS_SCHEMA } from './results.ts';

const root = resolve(fileURLToPath(new URL('../..', import.meta.url)));
const [input, output = 'docs/benchmarks.md'] = process.argv.slice(2);
if (input === undefined) {
  console.error('usage: pnpm --filter @natten-web/bench bench:report <results.json> [out.md]');
  process.exitCode = 2;
} else {
  const inPath = resolve(root, input);
  const results = JSON.parse(readFileSync(inPath, 'utf8')) as BenchResults;
  if (results.schema !== RESULTS_SCHEMA) throw new Error(`${input}: results schema ${String(results.schema)}, this renderer reads ${RESULTS_SCHEMA}`);
  const outPath = resolve(root, output);
  writeFileSync(outPath, renderReport(results, { source: relative(root, inPath) }));
  console.log(`wrote ${relative(root, outPath)} from ${relative(root, inPath)} (${results.rows.length} rows)`);
}
