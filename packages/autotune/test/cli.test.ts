import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { emptyTable, fileStore, type TuneEntry } from '../src/index.ts';
import { runCli } from '../src/cli.ts';

let dir = '';
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'natten-autotune-cli-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

function io() {
  const out: string[] = [];
  const err: string[] = [];
  let contexts = 0;
  return {
    out,
    err,
    contexts: () => contexts,
    io: {
      out: (s: string) => out.push(s),
      err: (s: string) => err.push(s),
      context: () => {
        contexts++;
        return Promise.reject(new Error('no GPU in this test'));
      },
    },
  };
}

const ENTRY: TuneEntry = {
  op: 'na-fused-forward',
  problem: 'na1d 1x20x2x8 K=5,5 f32',
  adapter: 'mesa/software/llvmpipe/x',
  config: { path: 'plain', queryTile: [16], keyTile: [32], stage: 'f32' },
  medianNs: 12_345,
  method: 'gpu-timestamps',
  timed: 6,
  candidates: 6,
  truncated: false,
  tunedAt: '2026-11-27T00:00:00.000Z',
};

describe('natten-web-tune (no GPU)', () => {
  it('--import, --list, --export, --clear work on the cache file without a device', async () => {
    const cache = join(dir, 'cache.json');
    const table = join(dir, 'team.json');
    await writeFile(table, JSON.stringify({ ...emptyTable(), entries: { 'na-fused-forward|k1': ENTRY } }));
    const a = io();
    expect(await runCli(['--cache', cache, '--import', table], a.io)).toBe(0);
    expect(a.out[0]).toBe(`imported 1 entries from ${table} into ${cache}`);
    const b = io();
    expect(await runCli(['--', '--cache', cache, '--list'], b.io)).toBe(0);
    expect(b.out[0]).toBe(`${cache}: 1 entry`);
    expect(b.out[1]).toContain('forward  na1d 1x20x2x8 K=5,5 f32  {"path":"plain","queryTile":[16],"keyTile":[32],"stage":"f32"}  12.3 us');
    const exported = join(dir, 'out.json');
    const c = io();
    expect(await runCli(['--cache', cache, '--export', exported], c.io)).toBe(0);
    expect(JSON.parse(await readFile(exported, 'utf8')).entries).toEqual({ 'na-fused-forward|k1': ENTRY });
    const d = io();
    expect(await runCli(['--cache', cache, '--clear'], d.io)).toBe(0);
    expect((await fileStore(cache).load()).entries).toEqual({});
    for (const x of [a, b, c, d]) expect(x.contexts()).toBe(0);
  });

  it('--import of a stale or corrupt table fails with the reason, the cache is untouched', async () => {
    const cache = join(dir, 'cache.json');
    const table = join(dir, 'old.json');
    await writeFile(table, JSON.stringify({ ...emptyTable(), version: '0.0.1' }));
    const a = io();
    expect(await runCli(['--cache', cache, '--import', table], a.io)).toBe(1);
    expect(a.err.join('\n')).toMatch(/written by @natten-web\/autotune 0\.0\.1/);
    await writeFile(table, 'not json');
    const b = io();
    expect(await runCli(['--cache', cache, '--import', table], b.io)).toBe(1);
    expect(b.err.join('\n')).toMatch(/not valid JSON/);
  });

  it('bad arguments: usage and exit code 2; a bad problem: the rule and exit code 1', async () => {
    const a = io();
    expect(await runCli(['--frobnicate'], a.io)).toBe(2);
    expect(a.err[0]).toMatch(/Unknown option '--frobnicate'[\s\S]*usage: natten-web-tune/);
    const b = io();
    expect(await runCli([], b.io)).toBe(2);
    const c = io();
    expect(await runCli(['--cache', join(dir, 'c.json'), '--problem', 'na2d 1x8x8x1 K=3'], c.io)).toBe(1);
    expect(c.err[0]).toMatch(/--problem 'na2d 1x8x8x1 K=3': the shape must be batch x 2 spatial/);
    expect(c.contexts()).toBe(0);
    const d = io();
    expect(await runCli(['--cache', join(dir, 'c.json'), '--mode', 'fast', '--problem', 'na1d 1x8x1x8 K=3'], d.io)).toBe(1);
    expect(d.err[0]).toMatch(/--mode fast is not one of off, cached, tune, deterministic/);
    const e = io();
    expect(await runCli(['--cache', join(dir, 'c.json'), '--warm-clocks', 'yes', '--problem', 'na1d 1x8x1x8 K=3'], e.io)).toBe(1);
    expect(e.err[0]).toMatch(/--warm-clocks yes is not one of auto, on, off/);
    expect(e.contexts()).toBe(0);
  });
});
