import { describe, expect, it } from 'vitest';
import { LruCache } from '../src/lru.ts';

describe('LruCache', () => {
  it('drops the least recently used entry past maxEntries, through onEvict', () => {
    const evicted: number[] = [];
    const c = new LruCache<number>({ maxEntries: 2, onEvict: (v) => evicted.push(v) });
    c.set('a', 1);
    c.set('b', 2);
    expect(c.get('a')).toBe(1); // a is now the most recent
    c.set('c', 3);
    expect(evicted).toEqual([2]);
    expect(c.get('b')).toBeUndefined();
    expect([c.get('a'), c.get('c'), c.size]).toEqual([1, 3, 2]);
  });

  it('keeps the summed weights within maxWeight and refuses an entry heavier than that alone', () => {
    const c = new LruCache<string>({ maxEntries: 10, maxWeight: 100 });
    c.set('x', 'x', 60);
    c.set('y', 'y', 30);
    c.set('z', 'z', 30);
    expect([c.get('x'), c.get('y'), c.get('z'), c.weight]).toEqual([undefined, 'y', 'z', 60]);
    c.set('huge', 'huge', 101);
    expect([c.get('huge'), c.size, c.weight]).toEqual([undefined, 2, 60]);
  });

  it('getOrCompute keeps undefined results, keeps nothing for a throw, and clear evicts everything', () => {
    const evicted: (string | undefined)[] = [];
    const c = new LruCache<string | undefined>({ maxEntries: 4, onEvict: (v) => evicted.push(v) });
    let calls = 0;
    const none = (): undefined => {
      calls++;
      return undefined;
    };
    expect(c.getOrCompute('u', none)).toBeUndefined();
    expect(c.getOrCompute('u', none)).toBeUndefined();
    expect(calls).toBe(1);
    expect(() =>
      c.getOrCompute('t', () => {
        throw new Error('no');
      }),
    ).toThrow('no');
    expect(c.getOrCompute('t', () => 'ok')).toBe('ok');
    c.clear();
    expect([c.size, c.weight, evicted]).toEqual([0, 0, [undefined, 'ok']]);
  });
});
