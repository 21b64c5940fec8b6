import { type Tensor, toFloat64Values } from '@natten-web/core';
import { expect } from 'vitest';

/** Max absolute error of `got` against `want` within `atol`, naming the worst element when it is not. */
export function expectClose(got: Tensor, want: Tensor, atol: number, what: string): void {
  const g = toFloat64Values(got);
  const w = toFloat64Values(want);
  let worst = 0;
  let at = -1;
  for (let i = 0; i < w.length; i++) {
    const e = Math.abs((g[i] as number) - (w[i] as number));
    if (!(e <= worst)) {
      worst = e;
      at = i;
    }
  }
  expect(worst, `${what}: max error ${worst} at flat index ${at} (got ${g[at]}, want ${w[at]})`).toBeLessThanOrEqual(atol);
}
