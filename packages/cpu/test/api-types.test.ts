/** The per-rank entry points are typed by rank: tuples of the wrong length do not compile. */
import type { DimsOrScalar, Tensor } from '@natten-web/core';
import { describe, expect, expectTypeOf, it } from 'vitest';
import { na1dQkForward, na2dForward, na3dAvBackward, type NaForwardFn } from '../src/index.ts';
import { empty, rand } from './helpers.ts';

describe('rank-typed API', () => {
  it('kernel_size / dilation / is_causal are typed per rank', () => {
    expectTypeOf(na2dForward).parameter(6).toEqualTypeOf<DimsOrScalar<2>>();
    expectTypeOf(na3dAvBackward).parameter(5).toEqualTypeOf<DimsOrScalar<3>>();
    expectTypeOf<NaForwardFn<1>>().parameter(0).toEqualTypeOf<Tensor>();
    const q = rand([1, 1, 9, 2], 'float64', 1);
    const attn = empty([1, 1, 9, 3], 'float64');
    na1dQkForward(attn, q, q, null, [3], [1], [false]);
    // @ts-expect-error a 2-tuple is not a 1-D kernel size
    expect(() => na1dQkForward(attn, q, q, null, [3, 3], 1, false)).toThrow('kernel_size has 2 entries');
  });
});
