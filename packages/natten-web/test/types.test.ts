import { describe, expectTypeOf, it } from 'vitest';
import {
  attention,
  type GpuTensor,
  mergeAttentions,
  na1d,
  na2d,
  na2dBackward,
  na2dQk,
  na3d,
  type NaOptions,
  type Tensor,
} from '../src/index.ts';

// These assertions are checked by the type checker (`pnpm --filter natten-web typecheck` covers test/);
// the bodies are never executed, so no op runs on these placeholder values.
const h = {} as Tensor<'float32'>;
const h64 = {} as Tensor<'float64'>;
const g = {} as GpuTensor;
const flag = Math.random() < 2;
function typeOnly(_check: () => void): void {}

describe('return types follow the flags and the tensor placement', () => {
  it('na2d: tensor, { output, lse } with returnLse: true, union with a boolean', () => {
    typeOnly(() => {
      expectTypeOf(na2d(h, h, h, { kernelSize: 7 })).resolves.toEqualTypeOf<Tensor>();
      expectTypeOf(na2d(h, h, h, { kernelSize: 7, returnLse: false })).resolves.toEqualTypeOf<Tensor>();
      expectTypeOf(na2d(h, h, h, { kernelSize: 7, returnLse: true })).resolves.toEqualTypeOf<{ readonly output: Tensor; readonly lse: Tensor }>();
      expectTypeOf(na2d(h, h, h, { kernelSize: 7, returnLse: flag })).resolves.toEqualTypeOf<Tensor | { readonly output: Tensor; readonly lse: Tensor }>();
    });
  });

  it('GPU tensors in, GPU tensors out', () => {
    typeOnly(() => {
      expectTypeOf(na2d(g, g, g, { kernelSize: 7 })).resolves.toEqualTypeOf<GpuTensor>();
      expectTypeOf(na1d(g, g, g, { kernelSize: 7, returnLse: true })).resolves.toEqualTypeOf<{ readonly output: GpuTensor; readonly lse: GpuTensor }>();
      expectTypeOf(na2dQk(g, g, { kernelSize: 3 })).resolves.toEqualTypeOf<GpuTensor>();
      expectTypeOf(attention(g, g, g)).resolves.toEqualTypeOf<GpuTensor>();
      expectTypeOf(mergeAttentions([g, g], [g, g])).resolves.toEqualTypeOf<{ output: GpuTensor; lse: GpuTensor }>();
    });
  });

  it('per-rank tuples', () => {
    typeOnly(() => {
      expectTypeOf<NaOptions<2>['kernelSize']>().toEqualTypeOf<number | readonly [number, number]>();
      expectTypeOf<NaOptions<3>['isCausal']>().toEqualTypeOf<boolean | readonly [boolean, boolean, boolean] | undefined>();
      // @ts-expect-error a 3-tuple is not a 2-D kernel size
      void na2d(h, h, h, { kernelSize: [3, 3, 3] });
      // @ts-expect-error a 2-tuple is not a 3-D dilation
      void na3d(h, h, h, { kernelSize: 3, dilation: [1, 2] });
      // @ts-expect-error unknown backend name
      void na2d(h, h, h, { kernelSize: 3, backend: 'gpu' });
    });
  });

  it('other inputs may differ in dtype (only placement is inferred from the first argument)', () => {
    typeOnly(() => {
      expectTypeOf(na2d(h, h64, h, { kernelSize: 3, rpb: h64 })).resolves.toEqualTypeOf<Tensor>();
      // @ts-expect-error host query with a GPU key
      void na2d(h, g, h, { kernelSize: 3 });
    });
  });

  it('backward result', () => {
    typeOnly(() => {
      const r = na2dBackward(h, h, h, h, h, h, { kernelSize: 3 });
      expectTypeOf(r).resolves.toHaveProperty('gradQuery').toEqualTypeOf<Tensor>();
      expectTypeOf(r).resolves.toHaveProperty('gradRpb').toEqualTypeOf<Tensor | undefined>();
    });
  });
});
