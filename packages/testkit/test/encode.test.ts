import { fromValues, randn, toFloat64Values } from '@natten-web/core';
import { describe, expect, it } from 'vitest';
import { roundValues, tensorFromValues } from '../src/index.ts';

describe('tensorFromValues / roundValues', () => {
  it('encode exactly like core fromValues (f16 bits incl. NaN, +-inf, subnormals, overflow, ties; f32)', () => {
    const special = [0, -0, 1, -1, 65504, 65520, 1e6, -1e6, 6e-8, 3e-8, 1e-10, 2049, 2051, 0.1, Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY];
    const values = Float64Array.from([...special, ...toFloat64Values(randn([4000], 'float64', 3, 30))]);
    for (const dtype of ['float16', 'float32', 'float64'] as const) {
      const fast = tensorFromValues([values.length], dtype, values);
      const core = fromValues([values.length], dtype, values);
      expect(fast.dtype).toBe(dtype);
      expect(Array.from(fast.data)).toEqual(Array.from(core.data));
    }
  });

  it('roundValues rounds to the storage dtype and is idempotent', () => {
    const v = Float64Array.from([0.1, 1 / 3, 1000.7]);
    const h = roundValues(v, 'float16');
    expect(h[0]).toBe(0.0999755859375);
    expect(Array.from(roundValues(h, 'float16'))).toEqual(Array.from(h));
    expect(roundValues(v, 'float32')[1]).toBe(Math.fround(1 / 3));
    expect(roundValues(v, 'float64')).toBe(v);
  });
});
