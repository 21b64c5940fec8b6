/**
 * Key unroll in the fused forward (`FusedForwardConfig.keyUnroll` = U > 1: U consecutive keys of a window row
 * folded per walk step, with one shared rescale check and a one-key remainder loop; experimental, explicit configs
 * only) vs the CPU reference, with the fused-forward tolerances: ranks 1-3, causal, dilation, stride, rpb, lse
 * on/off, GQA, Dv != D, head dims that are not multiples of 4, f16 (both stagings, q in f16 registers), window rows
 * whose length is not a multiple of U (the remainder loop runs) and rows clipped by key chunks, and U combined with
 * the lane split. Each `it` compiles one kernel and runs a few shape variants through it.
 */
import { type FusedForwardConfig, fusedForwardSpec, generateFusedForward } from '@natten-web/wgsl';
import { afterAll, describe, expect, it } from 'vitest';
import { fusedForward } from '../src/index.ts';
import { checkFusedForwardGpu } from '../src/ops/na-fused-forward.ts';
import { configKernel, expectVariantsClose, type FwdCase, fwdShapes } from './fused-forward-cases.ts';
import { gpuContext } from './setup.ts';

afterAll(async () => (await gpuContext()).destroy());

const TIMEOUT = 600_000;

function cfg(queryTile: number[], keyTile: number[], keyUnroll: number, opts: { stage?: 'f32' | 'f16'; lanes?: number } = {}): FusedForwardConfig {
  return { path: 'plain', queryTile, keyTile, stage: opts.stage ?? 'f32', keyUnroll, ...(opts.lanes ? { lanes: opts.lanes } : {}) };
}

function group(name: string, base: FwdCase, config: FusedForwardConfig): void {
  it(`${name} (U=${config.keyUnroll}${config.lanes ? ` lanes=${config.lanes}` : ''}, q=${config.queryTile.join('x')})`, async () => {
    const ctx = await gpuContext();
    const kernel = configKernel(ctx, base, config);
    expect(kernel.key).toContain(`"keyUnroll":${config.keyUnroll}`);
    await expectVariantsClose(ctx, base, config, `U=${config.keyUnroll}`);
  }, TIMEOUT);
}

describe('float32', () => {
  group('1-D K=5 causal, D=16, L=21', { rank: 1, spatial: [21], kernelSize: [5], isCausal: [true], dim: 16 }, cfg([16], [16], 2));
  group('1-D K=7 rpb, D=8, L=23, chunk 16 (rows clipped)', { rank: 1, spatial: [23], kernelSize: [7], rpb: true, dim: 8 }, cfg([32], [16], 4));
  group('1-D K=4, D=6, Dv=5 (scalar rows)', { rank: 1, spatial: [19], kernelSize: [4], dim: 6, dimV: 5 }, cfg([16], [16], 4));
  group('2-D K=(3,4) causal=FT, D=8, Dv=16', { rank: 2, spatial: [9, 11], kernelSize: [3, 4], isCausal: [false, true], dim: 8, dimV: 16 }, cfg([4, 8], [4, 4], 2));
  group('2-D K=(3,5) rpb, D=16', { rank: 2, spatial: [9, 13], kernelSize: [3, 5], rpb: true, dim: 16 }, cfg([2, 16], [4, 8], 4));
  group('2-D K=(5,7) no lse, D=8', { rank: 2, spatial: [11, 12], kernelSize: [5, 7], lse: false, dim: 8 }, cfg([4, 4], [2, 8], 2));
  group('3-D K=(3,2,3) causal=FFT, D=8', { rank: 3, spatial: [7, 5, 7], kernelSize: [3, 2, 3], isCausal: [false, false, true], dim: 8 }, cfg([2, 2, 4], [2, 2, 4], 2));
  group('3-D K=(3,3,5) rpb, D=16', { rank: 3, spatial: [5, 6, 9], kernelSize: [3, 3, 5], rpb: true, dim: 16 }, cfg([1, 2, 8], [2, 2, 4], 4));
  group('2-D K=(3,5) rpb, D=16, with lanes 2', { rank: 2, spatial: [9, 11], kernelSize: [3, 5], rpb: true, dim: 16 }, cfg([4, 8], [4, 8], 2, { lanes: 2 }));
});

describe('float16 (f16 storage, f32 math, f32 lse)', () => {
  group('1-D K=5 causal, D=16, f16 staging', { rank: 1, spatial: [21], kernelSize: [5], isCausal: [true], dim: 16, dtype: 'float16' }, cfg([32], [32], 4, { stage: 'f16' }));
  group('2-D K=(3,5) D=80 Dv=48 (q in f16 registers), f16 staging', { rank: 2, spatial: [7, 9], kernelSize: [3, 5], dim: 80, dimV: 48, dtype: 'float16' }, cfg([4, 4], [4, 4], 2, { stage: 'f16' }));
  group('3-D K=(2,3,3) causal=TFF, D=16, lanes 4', { rank: 3, spatial: [4, 5, 6], kernelSize: [2, 3, 3], isCausal: [true, false, false], dim: 16, dtype: 'float16' }, cfg([2, 2, 8], [2, 2, 8], 2, { stage: 'f16', lanes: 4 }));
});

describe('validation', () => {
  // Validation and planning need shapes only: 1x8x8, 2 heads, head dim 16, float32.
  const args = fwdShapes({ rank: 2, spatial: [8, 8], kernelSize: [3, 3], dim: 16 });
  it('U must be 1, 2 or 4 and needs one query per invocation; never offered or defaulted', async () => {
    const ctx = await gpuContext();
    expect(() => checkFusedForwardGpu(ctx, 2, args, cfg([4, 4], [4, 4], 3))).toThrow(
      /na2d_forward: query_tile_size=\[4, 4\], key_tile_size=\[4, 4\], stage=f32, keyUnroll=3 cannot run here: keyUnroll 3 is not one of 1, 2, 4/,
    );
    expect(() => checkFusedForwardGpu(ctx, 2, args, { ...cfg([4, 8], [4, 4], 2), queriesPerInvocation: 2 })).toThrow(/keyUnroll=2 needs queriesPerInvocation 1 \(got 2\)/);
    expect(fusedForward.configs(ctx, 2, args).every((c) => c.keyUnroll === undefined)).toBe(true);
    expect(fusedForward.defaultConfig(ctx, 2, args).keyUnroll).toBeUndefined();
    // U = 1 is the one-key walk, byte for byte.
    const { problem } = checkFusedForwardGpu(ctx, 2, args, cfg([4, 8], [4, 8], 1));
    const base: FusedForwardConfig = { path: 'plain', queryTile: [4, 8], keyTile: [4, 8], stage: 'f32' };
    expect(generateFusedForward(fusedForwardSpec(problem, cfg([4, 8], [4, 8], 1))).code).toBe(generateFusedForward(fusedForwardSpec(problem, base)).code);
  });
});
