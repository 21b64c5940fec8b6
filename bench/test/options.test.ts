/** `pnpm bench` options: defaults, and every rejected value named with its flag and rule. */
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { defaultTuneCache, parseOptions, TUNED_CONFLICTS, USAGE } from '../src/options.ts';

describe('bench options', () => {
  it('defaults: the standard set with torch, the default kernels', () => {
    const o = parseOptions([]);
    expect(o).toMatchObject({ set: 'standard', torch: true, reps: 20, warmup: 3, forwardPath: 'default', forwardQueries: 1, backwardQueries: 1, backwardKeys: 1, forwardKeyUnroll: undefined, backwardUnroll: undefined, warmClocks: 'auto' });
    expect(o.forwardLanes).toBeUndefined();
    expect(o.backwardLanes).toBeUndefined();
    expect(o).toMatchObject({ tuned: false, tuneCache: undefined, tuneBudgetMs: 20000, separateSpans: false });
    expect(parseOptions(['--separate-spans']).separateSpans).toBe(true);
  });
  it('experiment switches parse to numbers and the tensor-core path', () => {
    const o = parseOptions(['--forward-path', 'sgmat', '--forward-lanes', '4', '--backward-lanes', '1', '--forward-queries', '2', '--backward-queries', '4', '--backward-keys', '2', '--forward-key-unroll', '4', '--backward-unroll', '2', '--warm-clocks', 'off']);
    expect(o).toMatchObject({ forwardPath: 'sgmat', forwardLanes: 4, backwardLanes: 1, forwardQueries: 2, backwardQueries: 4, backwardKeys: 2, forwardKeyUnroll: 4, backwardUnroll: 2, warmClocks: 'off' });
  });
  it('rejects invalid values with the flag, the value and the rule', () => {
    expect(() => parseOptions(['--set', 'huge'])).toThrow("--set must be quick or standard, got 'huge'");
    expect(parseOptions(['--backward-path', 'mma']).backwardPath).toBe('mma');
    expect(parseOptions([]).backwardPath).toBe('default');
    expect(parseOptions(['--backward-path', 'plain']).backwardPath).toBe('plain');
    expect(parseOptions(['--dtype', 'f16']).dtype).toBe('float16');
    expect(parseOptions([]).dtype).toBeUndefined();
    expect(() => parseOptions(['--dtype', 'bf16'])).toThrow("--dtype must be f16 or f32, got 'bf16'");
    expect(() => parseOptions(['--backward-path', 'tc'])).toThrow("--backward-path must be default, plain or mma, got 'tc'");
    expect(() => parseOptions(['--backward-path', 'mma', '--backward-lanes', '2'])).toThrow('--backward-path mma cannot be combined with --backward-lanes');
    expect(() => parseOptions(['--tuned', '--backward-path', 'mma'])).toThrow('--tuned cannot be combined with --backward-path mma');
    expect(() => parseOptions(['--forward-path', 'tensor'])).toThrow("--forward-path must be default, plain, sgmat, tile or mma, got 'tensor'");
    expect(() => parseOptions(['--forward-queries', '0'])).toThrow("--forward-queries must be a number >= 1, got '0'");
    expect(() => parseOptions(['--warm-clocks', 'yes'])).toThrow("--warm-clocks must be auto, on or off, got 'yes'");
    expect(() => parseOptions(['--forward-key-unroll', '0'])).toThrow("--forward-key-unroll must be a number >= 1, got '0'");
    expect(() => parseOptions(['--backward-unroll', 'two'])).toThrow("--backward-unroll must be a number >= 1, got 'two'");
    expect(() => parseOptions(['--backward-keys', 'x'])).toThrow("--backward-keys must be a number >= 1, got 'x'");
    expect(() => parseOptions(['--backward-lanes', '0'])).toThrow("--backward-lanes must be a number >= 1, got '0'");
    expect(() => parseOptions(['--reps', '0'])).toThrow("--reps must be a number >= 1, got '0'");
  });
});

describe('bench options: --tuned', () => {
  it('defaults: off; with --tuned a 20 s budget per op and tune-cache.json in the OS temp dir', () => {
    expect(parseOptions(['--tuned'])).toMatchObject({ tuned: true, tuneCache: join(tmpdir(), 'tune-cache.json'), tuneBudgetMs: 20000, forwardPath: 'default', forwardQueries: 1, backwardQueries: 1, backwardKeys: 1 });
  });
  it('the cache defaults to tune-cache.json beside --json; --tune-cache and --tune-budget-ms override', () => {
    expect(parseOptions(['--tuned', '--json', 'out/h200/results.json']).tuneCache).toBe(resolve('out/h200/tune-cache.json'));
    expect(parseOptions(['--json', '/data/r.json', '--tuned']).tuneCache).toBe('/data/tune-cache.json');
    expect(defaultTuneCache('/data/r.json')).toBe('/data/tune-cache.json');
    expect(defaultTuneCache(undefined)).toBe(join(tmpdir(), 'tune-cache.json'));
    const o = parseOptions(['--tuned', '--json', '/data/r.json', '--tune-cache', 'caches/t.json', '--tune-budget-ms', '5000']);
    expect(o).toMatchObject({ tuned: true, tuneCache: resolve('caches/t.json'), tuneBudgetMs: 5000, json: '/data/r.json' });
  });
  it('combines with the other switches that do not choose our config', () => {
    const o = parseOptions(['--tuned', '--set', 'quick', '--filter', 'q-2d', '--no-torch', '--warm-clocks', 'on', '--reps', '5', '--forward-path', 'default']);
    expect(o).toMatchObject({ tuned: true, set: 'quick', filter: 'q-2d', torch: false, warmClocks: 'on', reps: 5, forwardPath: 'default' });
  });
  it('rejects every hand-picked config switch with --tuned, naming both flags', () => {
    expect(TUNED_CONFLICTS).toEqual(['forward-lanes', 'backward-lanes', 'forward-queries', 'backward-queries', 'backward-keys', 'forward-key-unroll', 'backward-unroll']);
    for (const flag of TUNED_CONFLICTS) {
      // Even the neutral value 1: the flag was given, so the run would not be what it says.
      for (const args of [['--tuned', `--${flag}`, '1'], [`--${flag}`, '2', '--tuned']]) {
        expect(() => parseOptions(args)).toThrow(`--tuned cannot be combined with --${flag}: `);
      }
    }
    expect(() => parseOptions(['--tuned', '--forward-path', 'sgmat'])).toThrow('--tuned cannot be combined with --forward-path sgmat: ');
    expect(() => parseOptions(['--forward-path', 'tile', '--tuned'])).toThrow('--tuned cannot be combined with --forward-path tile: ');
  });
  it('rejects the tuning options without --tuned, and a budget below 1 ms', () => {
    expect(() => parseOptions(['--tune-cache', 'x.json'])).toThrow('--tune-cache needs --tuned');
    expect(() => parseOptions(['--tune-budget-ms', '100'])).toThrow('--tune-budget-ms needs --tuned');
    expect(() => parseOptions(['--tuned', '--tune-budget-ms', '0'])).toThrow("--tune-budget-ms must be a number >= 1, got '0'");
    expect(() => parseOptions(['--tuned', '--tune-budget-ms', 'soon'])).toThrow("--tune-budget-ms must be a number >= 1, got 'soon'");
  });
  it('is documented in the usage text', () => {
    for (const flag of ['--tuned', '--tune-cache path', '--tune-budget-ms 20000']) expect(USAGE).toContain(flag);
  });
});
