/** `pnpm bench` options: defaults, and every rejected value named with its flag and rule. */
import { describe, expect, it } from 'vitest';
import { parseOptions } from '../src/options.ts';

describe('bench options', () => {
  it('defaults: the standard set with torch, the default kernels', () => {
    const o = parseOptions([]);
    expect(o).toMatchObject({ set: 'standard', torch: true, reps: 20, warmup: 3, forwardPath: 'default', forwardQueries: 1, backwardQueries: 1, backwardKeys: 1, forwardKeyUnroll: undefined, backwardUnroll: undefined, warmClocks: 'auto' });
    expect(o.forwardLanes).toBeUndefined();
    expect(o.backwardLanes).toBeUndefined();
  });
  it('experiment switches parse to numbers and the tensor-core path', () => {
    const o = parseOptions(['--forward-path', 'sgmat', '--forward-lanes', '4', '--backward-lanes', '1', '--forward-queries', '2', '--backward-queries', '4', '--backward-keys', '2', '--forward-key-unroll', '4', '--backward-unroll', '2', '--warm-clocks', 'off']);
    expect(o).toMatchObject({ forwardPath: 'sgmat', forwardLanes: 4, backwardLanes: 1, forwardQueries: 2, backwardQueries: 4, backwardKeys: 2, forwardKeyUnroll: 4, backwardUnroll: 2, warmClocks: 'off' });
  });
  it('rejects invalid values with the flag, the value and the rule', () => {
    expect(() => parseOptions(['--set', 'huge'])).toThrow("--set must be quick or standard, got 'huge'");
    expect(() => parseOptions(['--forward-path', 'tensor'])).toThrow("--forward-path must be default, sgmat or tile, got 'tensor'");
    expect(() => parseOptions(['--forward-queries', '0'])).toThrow("--forward-queries must be a number >= 1, got '0'");
    expect(() => parseOptions(['--warm-clocks', 'yes'])).toThrow("--warm-clocks must be auto, on or off, got 'yes'");
    expect(() => parseOptions(['--forward-key-unroll', '0'])).toThrow("--forward-key-unroll must be a number >= 1, got '0'");
    expect(() => parseOptions(['--backward-unroll', 'two'])).toThrow("--backward-unroll must be a number >= 1, got 'two'");
    expect(() => parseOptions(['--backward-keys', 'x'])).toThrow("--backward-keys must be a number >= 1, got 'x'");
    expect(() => parseOptions(['--backward-lanes', '0'])).toThrow("--backward-lanes must be a number >= 1, got '0'");
    expect(() => parseOptions(['--reps', '0'])).toThrow("--reps must be a number >= 1, got '0'");
  });
});
