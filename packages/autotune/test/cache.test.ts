import { execFile } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  type AdapterIdentity,
  AUTOTUNE_VERSION,
  browserStore,
  CACHE_SCHEMA,
  cacheKey,
  defaultCachePath,
  describeBackward,
  describeForward,
  emptyTable,
  fileStore,
  memoryStore,
  parseTable,
  type ProblemDescription,
  type TuneEntry,
} from '../src/index.ts';

const run = promisify(execFile);
const ADAPTER: AdapterIdentity = { vendor: 'mesa', architecture: 'software', device: 'llvmpipe', description: 'test' };

function entry(medianNs: number, op: TuneEntry['op'] = 'na-fused-forward'): TuneEntry {
  return {
    op,
    problem: 'p',
    adapter: 'a',
    config: op === 'na-fused-forward' ? { path: 'plain', queryTile: [4, 4], keyTile: [4, 4], stage: 'f32' } : { queryTile: [4, 4], keyTile: [4, 4], numSplitsKey: [1, 1], computeDeltaWithTorch: false },
    medianNs,
    method: 'gpu-timestamps',
    timed: 3,
    candidates: 3,
    truncated: false,
    tunedAt: '2026-11-27T00:00:00.000Z',
  };
}

let dir = '';
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'natten-autotune-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('cache key', () => {
  const base: ProblemDescription = { rank: 2, batch: 3, spatial: [16, 20], heads: 4, dim: 16, kernelSize: 5 };
  const key = (d: Partial<ProblemDescription>, a: AdapterIdentity = ADAPTER) => cacheKey(a, 'na-fused-forward', describeForward({ ...base, ...d }));

  it('holds adapter, version, op, dtype, rank, shape class and every kernel parameter', () => {
    const k = key({});
    expect(k).toBe(`na-fused-forward|adapter=mesa/software/llvmpipe/test|v${AUTOTUNE_VERSION}|float32|rank=2|batch<=4|spatial=16x20|heads=4/4|dim=16/16|K=5,5|d=1,1|s=1,1|causal=0,0|rpb=0|lse=1|gradRpb=-`);
    const variants: Partial<ProblemDescription>[] = [
      { spatial: [16, 21] },
      { heads: 8 },
      { headsKv: 2 },
      { dim: 32 },
      { dimV: 8 },
      { kernelSize: [5, 3] },
      { dilation: [1, 2] },
      { stride: [1, 2] },
      { isCausal: [false, true] },
      { rpb: true },
      { lse: false },
      { dtype: 'float16' },
      { batch: 5 },
    ];
    const keys = new Set([k, ...variants.map((v) => key(v))]);
    expect(keys.size).toBe(variants.length + 1);
    for (const field of ['vendor', 'architecture', 'device', 'description'] as const) {
      expect(key({}, { ...ADAPTER, [field]: 'other' })).not.toBe(k);
    }
    expect(cacheKey(ADAPTER, 'na-fused-backward', describeBackward(base))).toContain('gradRpb=0');
    expect(cacheKey(ADAPTER, 'na-fused-backward', describeBackward({ ...base, rpb: true }))).toContain('gradRpb=1');
  });

  it('buckets the batch to the next power of two (batch only multiplies the workgroups)', () => {
    expect(key({ batch: 3 })).toBe(key({ batch: 4 }));
    expect(key({ batch: 4 })).not.toBe(key({ batch: 5 }));
  });
});

describe('file store', () => {
  it('round trip: merge, load, merge more, load', async () => {
    const file = join(dir, 'sub', 'cache.json');
    const s = fileStore(file);
    expect((await s.load()).entries).toEqual({});
    await s.merge({ 'na-fused-forward|a': entry(1) });
    await s.merge({ 'na-fused-backward|b': entry(2, 'na-fused-backward') });
    const t = await fileStore(file).load();
    expect(Object.keys(t.entries).sort()).toEqual(['na-fused-backward|b', 'na-fused-forward|a']);
    expect(t.entries['na-fused-forward|a']).toEqual(entry(1));
    const json = JSON.parse(await readFile(file, 'utf8'));
    expect(json).toMatchObject({ schema: CACHE_SCHEMA, package: '@natten-web/autotune', version: AUTOTUNE_VERSION });
    // no temp or lock files left behind
    expect((await readdir(join(dir, 'sub'))).sort()).toEqual(['cache.json']);
    await s.clear();
    expect((await s.load()).entries).toEqual({});
  });

  it('a garbage file is ignored with a warning, never a crash, and is rewritten on the next merge', async () => {
    const file = join(dir, 'cache.json');
    await writeFile(file, '{"schema": 1, "entries": {oops');
    const warnings: string[] = [];
    const s = fileStore(file, { warn: (m) => warnings.push(m) });
    expect((await s.load()).entries).toEqual({});
    expect(warnings.join('\n')).toMatch(/ignoring .*cache\.json: not valid JSON/);
    await s.merge({ 'na-fused-forward|a': entry(1) });
    expect(Object.keys((await fileStore(file).load()).entries)).toEqual(['na-fused-forward|a']);
    await writeFile(file, '[1,2,3]');
    expect((await s.load()).entries).toEqual({});
    expect(warnings.at(-1)).toMatch(/not a @natten-web\/autotune table/);
  });

  it('a table from another package version or schema is ignored (stale), with a warning naming both versions', async () => {
    const file = join(dir, 'cache.json');
    const stale = { ...emptyTable(), version: '0.0.9', entries: { 'na-fused-forward|a': entry(1) } };
    await writeFile(file, JSON.stringify(stale));
    const warnings: string[] = [];
    expect((await fileStore(file, { warn: (m) => warnings.push(m) }).load()).entries).toEqual({});
    expect(warnings[0]).toMatch(new RegExp(`written by @natten-web/autotune 0\\.0\\.9 \\(schema ${CACHE_SCHEMA}\\), this is ${AUTOTUNE_VERSION.replaceAll('.', '\\.')}`));
    await writeFile(file, JSON.stringify({ ...stale, version: AUTOTUNE_VERSION, schema: CACHE_SCHEMA + 1 }));
    expect((await fileStore(file, { warn: (m) => warnings.push(m) }).load()).entries).toEqual({});
    expect(warnings[1]).toMatch(/stale tunings are not reused/);
  });

  it('malformed entries are dropped one by one', () => {
    const warnings: string[] = [];
    const bad = { ...entry(1), config: { path: 'plain', queryTile: [0], keyTile: [4], stage: 'f32' } };
    const t = parseTable({ ...emptyTable(), entries: { 'na-fused-forward|ok': entry(1), 'na-fused-forward|bad': bad, 'na-fused-backward|wrong-op': entry(1) } }, 'x', (m) => warnings.push(m));
    expect(Object.keys(t?.entries ?? {})).toEqual(['na-fused-forward|ok']);
    expect(warnings).toEqual(['natten-web autotune: x: ignored 2 malformed entries']);
  });

  it('two processes writing the same file at once end with both sets of entries', async () => {
    const file = join(dir, 'cache.json');
    const script = fileURLToPath(new URL('./fixtures/write-entries.ts', import.meta.url));
    const startAt = String(Date.now() + 2500);
    const child = (id: string) => run(process.execPath, ['--import', 'tsx', script, file, id, '15', startAt], { cwd: fileURLToPath(new URL('..', import.meta.url)) });
    await Promise.all([child('a'), child('b')]);
    const t = await fileStore(file).load();
    const keys = Object.keys(t.entries);
    expect(keys.length).toBe(30);
    for (const id of ['a', 'b']) for (let i = 0; i < 15; i++) expect(keys).toContain(`na-fused-forward|writer=${id}|${i}`);
    expect((await readdir(dir)).sort()).toEqual(['cache.json']);
  }, 60_000);

  it('cache path: explicit option, then NATTEN_WEB_AUTOTUNE_CACHE, then the user cache dir', async () => {
    const saved = process.env.NATTEN_WEB_AUTOTUNE_CACHE;
    try {
      process.env.NATTEN_WEB_AUTOTUNE_CACHE = join(dir, 'env.json');
      expect(await defaultCachePath(join(dir, 'opt.json'))).toBe(join(dir, 'opt.json'));
      expect(await defaultCachePath()).toBe(join(dir, 'env.json'));
      delete process.env.NATTEN_WEB_AUTOTUNE_CACHE;
      expect(await defaultCachePath()).toMatch(/natten-web[/\\]autotune\.json$/);
    } finally {
      if (saved === undefined) delete process.env.NATTEN_WEB_AUTOTUNE_CACHE;
      else process.env.NATTEN_WEB_AUTOTUNE_CACHE = saved;
    }
  });
});

describe('memory store', () => {
  it('merges and clears', async () => {
    const s = memoryStore();
    await s.merge({ 'na-fused-forward|a': entry(1) });
    await s.merge({ 'na-fused-forward|b': entry(2) });
    expect(Object.keys((await s.load()).entries)).toEqual(['na-fused-forward|a', 'na-fused-forward|b']);
    await s.clear();
    expect((await s.load()).entries).toEqual({});
  });
});

describe('version', () => {
  it('AUTOTUNE_VERSION equals package.json', async () => {
    const pkg = JSON.parse(await readFile(fileURLToPath(new URL('../package.json', import.meta.url)), 'utf8')) as { version: string };
    expect(AUTOTUNE_VERSION).toBe(pkg.version);
  });
});

describe('browser store (localStorage fallback when IndexedDB is absent)', () => {
  it('round trip, corrupt value warns and reads empty', async () => {
    const data = new Map<string, string>();
    const storage = {
      getItem: (k: string) => data.get(k) ?? null,
      setItem: (k: string, v: string) => void data.set(k, v),
      removeItem: (k: string) => void data.delete(k),
    };
    const g = globalThis as { localStorage?: unknown };
    const saved = g.localStorage;
    g.localStorage = storage;
    try {
      const warnings: string[] = [];
      const s = browserStore({ warn: (m) => warnings.push(m) });
      expect(s.location).toBe('localstorage:natten-web-autotune');
      await s.merge({ 'na-fused-forward|a': entry(1) });
      await s.merge({ 'na-fused-forward|b': entry(2) });
      expect(Object.keys((await s.load()).entries)).toEqual(['na-fused-forward|a', 'na-fused-forward|b']);
      data.set('natten-web-autotune', '{garbage');
      expect((await s.load()).entries).toEqual({});
      expect(warnings[0]).toMatch(/ignoring localstorage:natten-web-autotune: not valid JSON/);
      await s.clear();
      expect(data.size).toBe(0);
    } finally {
      if (saved === undefined) delete g.localStorage;
      else g.localStorage = saved;
    }
  });
});
