/** Type tests for the rank-typed tuples (checked by `tsc` through the package typecheck, and run by vitest). */
import { describe, expect, expectTypeOf, it } from 'vitest';
import { type BoolDims, type BoolDimsOrScalar, type Dims, type DimsOrScalar, normalizeBools, normalizeDims } from '../src/index.ts';

describe('rank-typed tuples', () => {
  it('Dims<R> is a readonly tuple of R numbers; DimsOrScalar adds a plain number', () => {
    expectTypeOf<Dims<1>>().toEqualTypeOf<readonly [number]>();
    expectTypeOf<Dims<2>>().toEqualTypeOf<readonly [number, number]>();
    expectTypeOf<Dims<3>>().toEqualTypeOf<readonly [number, number, number]>();
    expectTypeOf<BoolDims<2>>().toEqualTypeOf<readonly [boolean, boolean]>();
    expectTypeOf<DimsOrScalar<2>>().toEqualTypeOf<number | readonly [number, number]>();
    expectTypeOf<BoolDimsOrScalar<3>>().toEqualTypeOf<boolean | readonly [boolean, boolean, boolean]>();
    expectTypeOf<[number, number]>().toMatchTypeOf<DimsOrScalar<2>>();
    expectTypeOf<[number, number, number]>().not.toMatchTypeOf<DimsOrScalar<2>>();
  });
  it('normalizers return the rank-typed tuple', () => {
    const k = normalizeDims('na2d', 'kernel_size', 3, 2, 2);
    expectTypeOf(k).toEqualTypeOf<Dims<2>>();
    expect(k).toEqual([3, 3]);
    const c = normalizeBools('na3d', 'is_causal', false, 3);
    expectTypeOf(c).toEqualTypeOf<BoolDims<3>>();
    expect(c).toEqual([false, false, false]);
  });
});
