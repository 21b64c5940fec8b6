import { type FusedBackwardArgs, NattenArgumentError, NattenUnsupportedError, randn, zeros } from '@natten-web/core';
import { enumerateFusedBackwardConfigs, fusedBackwardTileProducts } from '@natten-web/wgsl';
import { afterAll, describe, expect, it } from 'vitest';
import { createGpuBackend, type GpuContext, selectFusedBackward } from '../src/index.ts';
import { gpuContext, limitsOf } from './setup.ts';

/** Validation of na{1,2,3}d_backward on WebGPU: every rule this backend adds, checked by its message, before any GPU work. */

function args2d(dim: number, extra: Partial<FusedBackwardArgs> = {}, dtype: 'float32' | 'float16' | 'float64' = 'float32'): FusedBackwardArgs {
  const sp = [16, 16];
  const t = () => zeros([1, ...sp, 2, dim], dtype);
  return {
    gradQuery: t(),
    gradKey: t(),
    gradValue: t(),
    query: randn([1, ...sp, 2, dim], dtype, 1),
    key: t(),
    value: t(),
    output: t(),
    gradOutput: t(),
    logsumexp: zeros([1, ...sp, 2], 'float32'),
    kernelSize: [3, 3],
    ...extra,
  };
}


describe('na2d_backward argument checks (WebGPU)', () => {
  afterAll(async () => (await gpuContext()).destroy(), 60_000);

  it('a tile product outside the table names the op, the tiles and the valid products', async () => {
    const ctx = await gpuContext();
    const bad = args2d(32, { queryTileSize: [3, 4], keyTileSize: [8, 8] });
    expect(() => selectFusedBackward(ctx, 2, bad)).toThrow(NattenArgumentError);
    expect(() => selectFusedBackward(ctx, 2, bad)).toThrow(/na2d_backward: query_tile_size=\[3, 4\] and key_tile_size=\[8, 8\] multiply to 12x64, which is not a backward tile of this backend; valid products \(query x key\) are 16x16, 16x32/);
  });

  it('a tile product that does not fit this device for the head dim is rejected with the device-specific list', async () => {
    const ctx = await gpuContext();
    const products = fusedBackwardTileProducts({ rank: 2, dim: 64, dimV: 64, dtype: 'float32' }, ctx.limits);
    const tooBig = [128, 128] as const;
    expect(products.some(([q, k]) => q === tooBig[0] && k === tooBig[1])).toBe(false);
    const bad = args2d(64, { queryTileSize: [8, 16], keyTileSize: [16, 8] });
    const listed = products.map(([q, k]) => `${q}x${k}`).join(', ');
    expect(() => selectFusedBackward(ctx, 2, bad)).toThrow(`valid products (query x key) are ${listed}`);
  });

  it('num_splits_key above the number of key tiles is rejected (core rule, with this backend tile)', async () => {
    const ctx = await gpuContext();
    const bad = args2d(16, { queryTileSize: [4, 4], keyTileSize: [4, 8], numSplitsKey: [1, 3] });
    expect(() => selectFusedBackward(ctx, 2, bad)).toThrow(
      'na2d_backward: num_splits_key[1]=3 exceeds the number of key tiles along axis 1, ceil(ceil(length 16 / dilation 1) / key_tile 8) = 2',
    );
    expect(selectFusedBackward(ctx, 2, { ...bad, numSplitsKey: [4, 2] }).config.numSplitsKey).toEqual([4, 2]);
  });

  it('a head dim too large for every tile is an argument error naming the head dims and the memory limit', async () => {
    const ctx = await gpuContext();
    expect(() => selectFusedBackward(ctx, 2, args2d(4096))).toThrow(
      new RegExp(`na2d_backward: head_dim=4096 and value head_dim=4096 \\(float32\\) are too large for every backward tile of this device \\(workgroup memory ${ctx.limits.maxComputeWorkgroupStorageSize} bytes\\)`),
    );
  });

  it('float16 on an adapter without shader-f16 is unsupported (checked before any GPU work)', async () => {
    const ctx = await gpuContext();
    const noF16 = { hasF16: false, limits: ctx.limits } as unknown as GpuContext;
    const a = args2d(8, {}, 'float16');
    expect(() => selectFusedBackward(noF16, 2, a)).toThrow(NattenUnsupportedError);
    expect(() => selectFusedBackward(noF16, 2, a)).toThrow("na2d_backward: float16 needs the WebGPU feature 'shader-f16', which this adapter does not offer; use float32");
    expect(selectFusedBackward(ctx, 2, a).problem.dtype).toBe('float16');
  });

  it('scratch buffers over maxStorageBufferBindingSize are rejected, naming the buffer and the fix', async () => {
    const ctx = await gpuContext();
    const small = { hasF16: true, limits: { ...limitsOf(ctx), maxStorageBufferBindingSize: 40_000 } } as unknown as GpuContext;
    // 2 splits x 1 x 16 x 16 x 2 heads x 32 dims x 4 bytes = 131072 bytes of dQ partials.
    const a = args2d(32, { queryTileSize: [4, 4], keyTileSize: [4, 4], numSplitsKey: [2, 1] });
    expect(() => selectFusedBackward(small, 2, a)).toThrow(
      'na2d_backward: the dqPartial scratch buffer needs 131072 bytes, over this device\'s maxStorageBufferBindingSize of 40000; use fewer num_splits_key',
    );
    expect(selectFusedBackward(small, 2, { ...a, numSplitsKey: [1, 1] }).config.numSplitsKey).toEqual([1, 1]);
    // d_rpb's dS scratch: 1 x 16 x 16 tokens x 2 heads x 9 slots x 4 bytes = 18432 bytes.
    const tiny = { hasF16: true, limits: { ...limitsOf(ctx), maxStorageBufferBindingSize: 18_000 } } as unknown as GpuContext;
    const bias = zeros([2, 5, 5], 'float32');
    expect(() => selectFusedBackward(tiny, 2, args2d(4, { queryTileSize: [4, 4], keyTileSize: [4, 4], rpb: bias, gradRpb: bias }))).toThrow(
      "na2d_backward: the dsScratch scratch buffer needs 18432 bytes, over this device's maxStorageBufferBindingSize of 18000 (d_rpb keeps batch x tokens x heads x prod(kernel_size) floats of dS); pass gradRpb = null, or run the batch in parts and sum their d_rpb",
    );
    expect(selectFusedBackward(tiny, 2, args2d(4, { queryTileSize: [4, 4], keyTileSize: [4, 4], rpb: bias, gradRpb: null })).problem.hasGradRpb).toBe(false);
  });

  it('float64 is unsupported on WebGPU', async () => {
    const ctx = await gpuContext();
    const a = args2d(8, {}, 'float64');
    expect(() => selectFusedBackward(ctx, 2, a)).toThrow(NattenUnsupportedError);
    expect(() => selectFusedBackward(ctx, 2, a)).toThrow(/na2d_backward: dtype float64 is not supported on WebGPU/);
  });

  it('grad_rel_pos_bias without rel_pos_bias, and rpb with causal masking, are rejected (core rules) before any GPU work', async () => {
    const ctx = await gpuContext();
    const gradRpb = zeros([2, 5, 5], 'float32');
    const a = args2d(8, { gradRpb });
    await expect(createGpuBackend(ctx).fusedBackward(2, a)).rejects.toThrow(/grad_rel_pos_bias was given without rel_pos_bias/);
    const b = args2d(8, { rpb: zeros([2, 5, 5], 'float32'), isCausal: [true, false] });
    await expect(createGpuBackend(ctx).fusedBackward(2, b)).rejects.toThrow(/rel_pos_bias cannot be combined with causal masking/);
    expect(Array.from(a.gradQuery.data as Float32Array).every((x) => x === 0)).toBe(true);
  });

  it('no tiles given: the default config; enumerated configs all pass validation on this device', async () => {
    const ctx = await gpuContext();
    const sel = selectFusedBackward(ctx, 2, args2d(32));
    expect(sel.config).toEqual({ queryTile: [4, 8], keyTile: [4, 8], numSplitsKey: [1, 1], computeDeltaWithTorch: false });
    const delta = selectFusedBackward(ctx, 2, args2d(32, { computeDeltaWithTorch: true }));
    expect(delta.config.computeDeltaWithTorch).toBe(true);
    const configs = enumerateFusedBackwardConfigs(sel.problem, ctx.limits);
    expect(configs.length).toBeGreaterThan(10);
    for (const c of configs) {
      const s = selectFusedBackward(ctx, 2, args2d(32, { queryTileSize: c.queryTile, keyTileSize: c.keyTile, numSplitsKey: c.numSplitsKey, computeDeltaWithTorch: c.computeDeltaWithTorch }));
      expect(s.config).toEqual(c);
    }
  });
});
