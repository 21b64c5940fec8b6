import { checkFusedForward, type FusedProblem, NattenUnsupportedError, tensor } from '@natten-web/core';
import { FUSED_FORWARD_TILES } from '@natten-web/wgsl';
import { afterAll, describe, expect, it } from 'vitest';
import { enumerateSgmatConfigs, fusedForwardSgmat, sgmatAvailability, sgmatConfigCost, sgmatProblemFit } from '../src/index.ts';
import { gpuContext } from './setup.ts';

function problem(spatial: number[], kernelSize: number[], dim = 64, dtype: 'float16' | 'float32' = 'float16'): FusedProblem {
  const shape = [1, ...spatial, 4, dim];
  const t = tensor(shape, dtype);
  return checkFusedForward('na_forward', spatial.length as 1 | 2 | 3, { output: t, query: t, key: t, value: t, kernelSize }, FUSED_FORWARD_TILES);
}

describe('tensor-core forward: availability and config choice', () => {
  afterAll(async () => (await gpuContext()).destroy());
  it('says why it cannot run where the adapter lacks subgroup matrices, and throws before any GPU work', async () => {
    const ctx = await gpuContext();
    const avail = sgmatAvailability(ctx);
    if (ctx.features.has('chromium-experimental-subgroup-matrix')) {
      expect('subgroupSize' in avail || 'why' in avail).toBe(true);
      return;
    }
    expect(avail).toEqual({ why: "no 'chromium-experimental-subgroup-matrix' feature" });
    expect(enumerateSgmatConfigs(ctx, problem([32, 32], [7, 7]))).toEqual([]);
    const shape = [1, 16, 16, 2, 16];
    const t = ctx.createTensor(shape, 'float16');
    const run = fusedForwardSgmat(ctx, 2, { output: t, query: t, key: t, value: t, kernelSize: 5 });
    await expect(run).rejects.toThrow(/tensor-core path unavailable: no 'chromium-experimental-subgroup-matrix' feature/);
    await expect(run).rejects.toBeInstanceOf(NattenUnsupportedError);
  });
  it('fits only float16 problems with head dims that are multiples of 16', () => {
    expect(sgmatProblemFit(problem([32, 32], [7, 7], 64, 'float32'))).toMatch(/needs float16/);
    expect(sgmatProblemFit(problem([32, 32], [7, 7], 40))).toMatch(/head dims 40\/40 are not multiples of 16/);
    expect(sgmatProblemFit(problem([32, 32], [7, 7], 64))).toBeUndefined();
  });
  it('costs configs by matrix work, fragment loads and steps: wide patches win for large windows', () => {
    const flux = problem([256, 256], [80, 80], 128);
    const wide = sgmatConfigCost(flux, { path: 'sgmat', queryTile: [2, 16], keyChunk: 64 });
    const tall = sgmatConfigCost(flux, { path: 'sgmat', queryTile: [32, 1], keyChunk: 64 });
    expect(wide).toBeLessThan(tall);
    const k7 = problem([128, 128], [7, 7]);
    // A 7x7 window: a 2x8 block needs 8 box rows of one 16-key fragment; a 1x16 block needs 7 rows of two.
    expect(sgmatConfigCost(k7, { path: 'sgmat', queryTile: [2, 8], keyChunk: 32 })).toBeLessThan(
      sgmatConfigCost(k7, { path: 'sgmat', queryTile: [1, 16], keyChunk: 32 }),
    );
  });
});
