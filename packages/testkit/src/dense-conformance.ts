/**
 * The dense-attention conformance suite, registered with vitest: per dtype and case (dense-cases.ts), the forward
 * (output, lse) and the backward from the backend's own forward against the testkit's f64 oracle.
 */
import { describe, expect, it } from 'vitest';
import { DENSE_CASES, type DenseBackend, type DenseCase, runDenseCase } from './dense-cases.ts';

export interface DenseConformanceOptions {
  readonly name: string;
  readonly makeBackend: () => Promise<DenseBackend>;
  readonly dtypes: readonly ('float32' | 'float16')[];
  readonly cases?: readonly DenseCase[];
  /** Per-test timeout in ms (default: the vitest config's). */
  readonly timeoutMs?: number;
}

/** Register the suite for one backend. */
export function defineDenseConformance(o: DenseConformanceOptions): void {
  describe(`dense attention conformance: ${o.name}`, () => {
    let backend: DenseBackend | undefined;
    const get = async (): Promise<DenseBackend> => {
      backend ??= await o.makeBackend();
      return backend;
    };
    for (const dtype of o.dtypes) {
      for (const c of o.cases ?? DENSE_CASES) {
        it(
          `${dtype === 'float32' ? 'f32' : 'f16'} ${c.name}`,
          async () => {
            for (const r of await runDenseCase(await get(), c, dtype)) expect(r.ok, r.message).toBe(true);
          },
          o.timeoutMs,
        );
      }
    }
  });
}
