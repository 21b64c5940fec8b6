import { randn, tensor } from '@natten-web/core';
import { describe, expect, it } from 'vitest';
import { callKey, memoPure } from '../src/ops/op.ts';

describe('call keys for memoised checks and plans', () => {
  it('stand for tensors by shape and dtype only, and for every other argument as given', () => {
    const a = { query: randn([1, 8, 2, 4], 'float32', 1), kernelSize: 3, dilation: 1, rpb: null };
    const sameShapes = { query: randn([1, 8, 2, 4], 'float32', 2), kernelSize: 3, dilation: 1, rpb: null };
    expect(callKey(1, a)).toBe(callKey(1, sameShapes));
    expect(callKey(1, a)).not.toContain(String(a.query.data[0]));
    expect(callKey(1, a)).not.toBe(callKey(2, a));
    expect(callKey(1, a)).not.toBe(callKey(1, { ...a, query: tensor([1, 8, 2, 4], 'float16') }));
    expect(callKey(1, a)).not.toBe(callKey(1, { ...a, query: tensor([1, 9, 2, 4], 'float32') }));
    expect(callKey(1, a)).not.toBe(callKey(1, { ...a, kernelSize: 5 }));
    expect(callKey(1, a)).not.toBe(callKey(1, { ...a, rpb: tensor([2, 5], 'float32') }));
    expect(callKey(1, a)).not.toBe(callKey(1, a, { queryTile: [16] }));
  });

  it('memoPure computes once per key and never stores a throw', () => {
    let calls = 0;
    const f = (): number => ++calls;
    expect(memoPure('test-memo', { k: 1 }, f)).toBe(1);
    expect(memoPure('test-memo', { k: 1 }, f)).toBe(1);
    expect(memoPure('test-memo', { k: 2 }, f)).toBe(2);
    const bad = (): number => {
      throw new Error('no');
    };
    expect(() => memoPure('test-memo', { k: 3 }, bad)).toThrow('no');
    expect(memoPure('test-memo', { k: 3 }, f)).toBe(3);
  });
});
