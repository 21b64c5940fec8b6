import { compareTensors, type DType, randn, type Tensor, zeros } from '@natten-web/core';
import { expect } from 'vitest';

let seed = 100;
/** A fresh seeded normal tensor (seeds advance, so every call differs but runs are reproducible). */
export function rnd<D extends DType = 'float32'>(shape: readonly number[], dtype: D = 'float32' as D, scale = 1): Tensor<D> {
  seed += 1;
  return randn(shape, dtype, seed, scale);
}

export function like(t: Tensor): Tensor {
  return zeros(t.shape, t.dtype);
}

/** Same shape and every value within atol. */
export function expectClose(actual: Tensor, expected: Tensor, atol: number): void {
  expect([...actual.shape]).toEqual([...expected.shape]);
  const c = compareTensors(actual, expected);
  expect(c.nonFiniteMismatches).toBe(0);
  expect(c.maxAbs).toBeLessThanOrEqual(atol);
}

/** Bit-identical data and shape. */
export function expectSame(actual: Tensor, expected: Tensor): void {
  expect([...actual.shape]).toEqual([...expected.shape]);
  expect(actual.dtype).toBe(expected.dtype);
  expect(Array.from(actual.data)).toEqual(Array.from(expected.data));
}
