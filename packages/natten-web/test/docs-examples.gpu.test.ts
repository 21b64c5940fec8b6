/**
 * The docs' examples run as written: every ```ts block of README.md and docs/*.md that starts with an import runs
 * as a module (its `from 'natten-web'` pointed at this package's source) on the default backend, which is WebGPU
 * where there is an adapter (lavapipe in CI). Blocks that cannot run alone, because they use the reader's own
 * device, weights or logger, or tune for seconds, are fenced ```ts fragment and are not run. A renamed option, a
 * changed signature or an example that throws fails here.
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { dispose } from '../src/index.ts';

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, '../../..');
const source = resolve(here, '../src/index.ts');

interface Example {
  readonly file: string;
  readonly index: number;
  readonly code: string;
}

/** The runnable examples of one Markdown file (relative to the repository root), numbered among its ```ts blocks. */
function examples(file: string): Example[] {
  const text = readFileSync(join(root, file), 'utf8');
  return [...text.matchAll(/```ts\n([\s\S]*?)```/g)].map((m, index) => ({ file, index: index + 1, code: m[1] as string })).filter((e) => e.code.startsWith('import'));
}

const files = ['README.md', ...readdirSync(join(root, 'docs')).filter((f) => f.endsWith('.md')).sort().map((f) => `docs/${f}`)];
const all = files.flatMap(examples);
const dir = mkdtempSync(join(tmpdir(), 'natten-web-docs-'));

describe('docs examples', () => {
  afterAll(async () => {
    rmSync(dir, { recursive: true, force: true });
    await dispose();
  });
  it('finds the examples of api.md and getting-started.md', () => {
    expect(all.filter((e) => e.file === 'docs/api.md').length).toBeGreaterThanOrEqual(5);
    expect(all.filter((e) => e.file === 'docs/getting-started.md').length).toBeGreaterThanOrEqual(2);
  });
  for (const e of all) {
    const first = e.code.split('\n').find((l) => !l.startsWith('import') && l.trim() !== '') ?? '';
    it(`${e.file} example ${e.index}: ${first.slice(0, 70)}`, async () => {
      const path = join(dir, `${e.file.replace(/[/.]/g, '-')}-${e.index}.ts`);
      writeFileSync(path, `${e.code.replaceAll("from 'natten-web'", `from ${JSON.stringify(source)}`)}\nexport {};\n`);
      await import(pathToFileURL(path).href);
    });
  }
});
