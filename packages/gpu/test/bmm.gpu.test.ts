import { type DType, type NaBackend, toFloat64Values } from '@natten-web/core';
import { cpuBackend } from '@natten-web/cpu';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createGpuBackend } from '../src/index.ts';
import { BMM_CASES, type BmmOpName, outputMismatches, runBmm } from './bmm-cases.ts';
import { gpuContext } from './setup.ts';

const OPS: readonly BmmOpName[] = ['qk_forward', 'qk_backward', 'av_forward', 'av_backward'];
const DTYPES: readonly DType[] = ['float32', 'float16'];

describe('BMM ops on WebGPU equal the CPU reference', () => {
  let gpu: NaBackend;
  beforeAll(async () => {
    gpu = createGpuBackend(await gpuContext());
  });
  afterAll(async () => (await gpuContext()).destroy());

  for (const op of OPS) {
    for (const dtype of DTYPES) {
      for (const [i, k] of BMM_CASES.entries()) {
        it(`na${k.rank}d_${op} ${dtype} ${k.name}`, async () => {
          const seed = 1000 * i + 17;
          const want = await runBmm(cpuBackend, op, k, dtype, seed);
          const got = await runBmm(gpu, op, k, dtype, seed);
          expect(outputMismatches(got, want, dtype)).toEqual([]);
          if (op === 'qk_forward' && k.causal.some((c) => c)) {
            // Invalid causal slots hold -inf exactly, as NATTEN writes them.
            const attn = got.outputs.attn;
            expect(attn).toBeDefined();
            if (attn) expect(toFloat64Values(attn).some((x) => x === Number.NEGATIVE_INFINITY)).toBe(true);
          }
        });
      }
    }
  }

  it('backward is deterministic: two runs of qk_backward (with d_rpb) and av_backward are bit-identical', async () => {
    const k = BMM_CASES[4];
    expect(k?.rpb).toBe(true);
    if (!k) return;
    for (const op of ['qk_backward', 'av_backward'] as const) {
      const a = await runBmm(gpu, op, k, 'float32', 5);
      const b = await runBmm(gpu, op, k, 'float32', 5);
      for (const [name, t] of Object.entries(a.outputs)) {
        const u = b.outputs[name];
        expect(u && Array.from(u.data), `${op} ${name}`).toEqual(Array.from(t.data));
      }
    }
  });
});
