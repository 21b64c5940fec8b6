/**
 * Lane-split fused forward (`FusedForwardConfig.lanes` = T > 1: T invocations per query, head dims split over
 * them, logits summed by subgroupShuffleXor) vs the CPU reference, with the fused-forward tolerances: ranks 1-3,
 * causal, dilation, stride, rpb, lse on/off, GQA/MQA, Dv != D, f16 (f16 and f32 staging, q in f16 registers),
 * extents that are not multiples of the tile. Each `it` compiles one kernel (lavapipe compiles are slow) and runs
 * a few shape variants through it. Also: the op offers lane configs only with subgroups, never as its default,
 * and rejects invalid ones before any GPU work.
 */
import { lseShape, NattenArgumentError, type NaRank, zeros } from '@natten-web/core';
import type { FusedForwardConfig } from '@natten-web/wgsl';
import { afterAll, describe, expect, it } from 'vitest';
import { fusedForward, fusedKernelLimits, GpuContext } from '../src/index.ts';
import { checkFusedForwardGpu } from '../src/ops/na-fused-forward.ts';
import { caseLabel, configKernel, expectFwdClose, expectVariantsClose, type FwdCase, fwdVariants, runFwdCase } from './fused-forward-cases.ts';
import { gpuContext } from './setup.ts';

afterAll(async () => (await gpuContext()).destroy());

const TIMEOUT = 600_000;

function cfg(queryTile: number[], keyTile: number[], lanes: number, stage: 'f32' | 'f16' = 'f32'): FusedForwardConfig {
  return { path: 'plain', queryTile, keyTile, stage, lanes };
}

function group(name: string, base: FwdCase, config: FusedForwardConfig): void {
  it(`${name} (lanes=${config.lanes}, q=${config.queryTile.join('x')})`, async () => {
    const ctx = await gpuContext();
    const kernel = configKernel(ctx, base, config);
    expect(kernel.workgroupSize[0]).toBe(config.queryTile.reduce((a, b) => a * b, 1) * (config.lanes ?? 1));
    expect(kernel.features).toContain('subgroups');
    expect(kernel.key).toContain(`"lanes":${config.lanes}`);
    await expectVariantsClose(ctx, base, config, `lanes=${config.lanes}`);
  }, TIMEOUT);
}


describe('adapter', () => {
  it('has subgroups with a minimum size of at least 4 (lavapipe: 8)', async () => {
    const ctx = await gpuContext();
    expect(ctx.hasSubgroups).toBe(true);
    expect(ctx.adapterInfo.subgroupMinSize ?? 0).toBeGreaterThanOrEqual(4);
    expect(fusedKernelLimits(ctx).subgroupMinSize).toBe(ctx.adapterInfo.subgroupMinSize);
  });
});

describe('float32', () => {
  group('1-D K=5 causal, D=16, L=21 (partial tile)', { rank: 1, spatial: [21], kernelSize: [5], isCausal: [true], dim: 16 }, cfg([16], [16], 2));
  group('1-D K=4, D=16, Dv=32', { rank: 1, spatial: [19], kernelSize: [4], dim: 16, dimV: 32 }, cfg([32], [32], 4));
  group('2-D K=(3,4) causal=TF, D=8, Dv=16', { rank: 2, spatial: [9, 11], kernelSize: [3, 4], isCausal: [true, false], dim: 8, dimV: 16 }, cfg([4, 4], [4, 4], 2));
  group('2-D K=(3,5) rpb, D=16', { rank: 2, spatial: [9, 11], kernelSize: [3, 5], rpb: true, dim: 16 }, cfg([4, 8], [4, 4], 4));
  group('2-D K=(5,2) no lse, D=8', { rank: 2, spatial: [11, 7], kernelSize: [5, 2], lse: false, dim: 8 }, cfg([2, 8], [2, 8], 2));
  group('2-D K=(3,3) causal=TT, D=16, 8x8 tile (256 invocations)', { rank: 2, spatial: [10, 9], kernelSize: [3, 3], isCausal: [true, true], dim: 16 }, cfg([8, 8], [8, 8], 4));
  group('3-D K=(3,2,3) causal=FTF, D=8', { rank: 3, spatial: [7, 5, 7], kernelSize: [3, 2, 3], isCausal: [false, true, false], dim: 8 }, cfg([2, 2, 4], [2, 2, 4], 2));
  group('3-D K=(3,3,3) rpb, D=16', { rank: 3, spatial: [5, 6, 7], kernelSize: [3, 3, 3], rpb: true, dim: 16 }, cfg([2, 2, 4], [2, 2, 4], 4));
  group('3-D K=(2,3,2), D=16, Dv=8', { rank: 3, spatial: [4, 5, 6], kernelSize: [2, 3, 2], dim: 16, dimV: 8 }, cfg([1, 4, 4], [1, 2, 8], 2));

  it('1-D K=7 rpb, D=32, lanes=8 where the minimum subgroup size allows it, else rejected', async () => {
    const ctx = await gpuContext();
    const c: FwdCase = { rank: 1, spatial: [23], kernelSize: [7], rpb: true, dim: 32 };
    const config = cfg([16], [16], 8);
    const sg = ctx.adapterInfo.subgroupMinSize ?? 0;
    if (sg >= 8) {
      for (const v of fwdVariants(c)) expectFwdClose(await runFwdCase(ctx, v, config), `${caseLabel(v)} lanes=8`);
    } else {
      await expect(runFwdCase(ctx, c, config)).rejects.toThrow(/lanes=8 exceeds this adapter's minimum subgroup size/);
    }
  }, TIMEOUT);
});

describe('float16 (f16 storage, f32 math, f32 lse)', () => {
  group('1-D K=4 causal, D=16, f16 staging', { rank: 1, spatial: [21], kernelSize: [4], isCausal: [true], dim: 16, dtype: 'float16' }, cfg([16], [32], 2, 'f16'));
  group('2-D K=(3,3) rpb, D=16, f32 staging', { rank: 2, spatial: [9, 11], kernelSize: [3, 3], rpb: true, dim: 16, dtype: 'float16' }, cfg([4, 4], [4, 4], 4));
  group('2-D K=(3,3) D=80 Dv=48 (q in f16 registers), f16 staging', { rank: 2, spatial: [7, 9], kernelSize: [3, 3], dim: 80, dimV: 48, dtype: 'float16' }, cfg([4, 4], [4, 4], 4, 'f16'));
  group('3-D K=(2,3,2) causal=FTF, D=8, Dv=16', { rank: 3, spatial: [4, 5, 6], kernelSize: [2, 3, 2], isCausal: [false, true, false], dim: 8, dimV: 16, dtype: 'float16' }, cfg([2, 2, 4], [2, 2, 4], 2, 'f16'));
});

describe('selection and validation', () => {
  const host = (shape: number[], dtype: 'float32' | 'float16' = 'float32') => zeros(shape, dtype);
  const args = (D: number) => ({
    query: host([1, 8, 8, 2, D]),
    key: host([1, 8, 8, 2, D]),
    value: host([1, 8, 8, 2, D]),
    output: host([1, 8, 8, 2, D]),
    logsumexp: host(lseShape(1, [8, 8], 2)),
    kernelSize: [3, 3],
  });
  const rank: NaRank = 2;

  it('configs() adds lanes 2 and 4 with subgroups; the default config stays single-lane', async () => {
    const ctx = await gpuContext();
    const configs = fusedForward.configs(ctx, rank, args(16));
    const lanes = new Set(configs.map((c) => c.lanes ?? 1));
    expect([...lanes].sort()).toEqual([1, 2, 4]);
    const single = configs.filter((c) => c.lanes === undefined);
    for (const n of [2, 4]) expect(configs.filter((c) => c.lanes === n).length).toBe(single.length);
    expect(fusedForward.defaultConfig(ctx, rank, args(16)).lanes).toBeUndefined();
    // D=8: only lanes 2 splits it into whole vec4s
    expect(new Set(fusedForward.configs(ctx, rank, args(8)).map((c) => c.lanes ?? 1))).toEqual(new Set([1, 2]));
  });

  it('a lane count that does not split the head dims is rejected with the rule', async () => {
    const ctx = await gpuContext();
    expect(() => checkFusedForwardGpu(ctx, rank, args(8), cfg([4, 4], [4, 4], 4))).toThrow(NattenArgumentError);
    expect(() => checkFusedForwardGpu(ctx, rank, args(8), cfg([4, 4], [4, 4], 4))).toThrow(
      /na2d_forward: query_tile_size=\[4, 4\], key_tile_size=\[4, 4\], stage=f32, lanes=4 cannot run here: lanes=4 gives each lane whole vec4 columns, so head dims must be multiples of 16; got head_dim=8, value head_dim=8/,
    );
    expect(() => checkFusedForwardGpu(ctx, rank, args(16), cfg([4, 4], [4, 4], 3))).toThrow(/lanes 3 is not one of 1, 2, 4, 8/);
  });

  it('without the subgroups feature lane configs are neither offered nor accepted', async () => {
    const noSg = await GpuContext.create({ disableFeatures: ['subgroups'] });
    try {
      expect(noSg.hasSubgroups).toBe(false);
      expect(fusedKernelLimits(noSg).subgroupMinSize).toBeUndefined();
      expect(fusedForward.configs(noSg, rank, args(16)).every((c) => c.lanes === undefined)).toBe(true);
      expect(() => checkFusedForwardGpu(noSg, rank, args(16), cfg([4, 4], [4, 4], 2))).toThrow(
        /lanes=2 needs the WebGPU feature 'subgroups', which this adapter does not offer/,
      );
    } finally {
      noSg.destroy();
    }
  });
});
