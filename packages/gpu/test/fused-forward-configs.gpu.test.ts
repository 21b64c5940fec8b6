/**
 * Every enumerated kernel configuration of a few small problems runs and matches the CPU reference; tile
 * arguments select real configs; bad input is rejected (with the op, argument, value and rule) before any
 * GPU work.
 */
import { lseShape, NattenArgumentError, NattenUnsupportedError, type NaRank, randn, zeros } from '@natten-web/core';
import { afterAll, describe, expect, it } from 'vitest';
import { createGpuBackend, fusedForward, GpuContext } from '../src/index.ts';
import { checkFusedForwardGpu } from '../src/ops/na-fused-forward.ts';
import { caseLabel, expectFwdClose, type FwdCase, runFwdCase } from './fused-forward-cases.ts';
import { EXTENDED, gpuContext } from './setup.ts';

afterAll(async () => (await gpuContext()).destroy());

const TIMEOUT = 900_000;

const PROBLEMS: FwdCase[] = [
  // 1-D f32, group extents 20 (d=1): query tiles 16 and 32
  { rank: 1, spatial: [20], kernelSize: [5], isCausal: [true], dim: 8, heads: 2 },
  // 2-D f16 (f32 and f16 staging), extents 3x5
  { rank: 2, spatial: [3, 5], kernelSize: [3, 4], isCausal: [false, true], dim: 8, dtype: 'float16' },
  // 3-D f32, GQA, Dv != D, extents 2x2x5
  { rank: 3, spatial: [2, 2, 5], kernelSize: [2, 2, 3], isCausal: [false, false, false], dim: 4, dimV: 8, heads: 4, headsKv: 2 },
];

describe('every enumerated config', () => {
  // Default tier: the 1-D problem's configs; NATTEN_WEB_EXTENDED=1 adds the 2-D and 3-D problems.
  for (const c of EXTENDED ? PROBLEMS : PROBLEMS.slice(0, 1)) {
    it(caseLabel(c), async () => {
      const ctx = await gpuContext();
      const probe = {
        query: { shape: [c.batch ?? 1, ...c.spatial, c.heads ?? 2, c.dim ?? 8], dtype: c.dtype ?? 'float32' },
        key: { shape: [c.batch ?? 1, ...c.spatial, c.headsKv ?? c.heads ?? 2, c.dim ?? 8], dtype: c.dtype ?? 'float32' },
        value: { shape: [c.batch ?? 1, ...c.spatial, c.headsKv ?? c.heads ?? 2, c.dimV ?? c.dim ?? 8], dtype: c.dtype ?? 'float32' },
        output: { shape: [c.batch ?? 1, ...c.spatial, c.heads ?? 2, c.dimV ?? c.dim ?? 8], dtype: c.dtype ?? 'float32' },
        kernelSize: c.kernelSize,
        isCausal: c.isCausal,
      } as const;
      const configs = fusedForward.configs(ctx, c.rank, probe);
      expect(configs.length).toBeGreaterThanOrEqual(c.rank === 2 ? 18 : 6);
      for (const config of configs) {
        expectFwdClose(await runFwdCase(ctx, c, config), `${caseLabel(c)} ${JSON.stringify(config)}`);
      }
    }, TIMEOUT);
  }
});

describe('default config when dilation groups are smaller than every tile', () => {
  it('1-D L=9 d=2 and 2-D 12x8 d=(3,4) run with the default config', async () => {
    const ctx = await gpuContext();
    const cases: FwdCase[] = [
      { rank: 1, spatial: [9], kernelSize: [3], dilation: [2], dim: 4 },
      { rank: 1, spatial: [9], kernelSize: [3], dilation: [2], isCausal: [true], dim: 4, dtype: 'float16' },
      { rank: 2, spatial: [12, 8], kernelSize: [4, 2], dilation: [3, 4], isCausal: [false, true], dim: 8 },
    ];
    for (const c of cases) expectFwdClose(await runFwdCase(ctx, c), caseLabel(c));
  }, TIMEOUT);
});

describe('tile arguments select real configs', () => {
  it('query_tile_size / key_tile_size pick the kernel (key shows the tile) and give the same result', async () => {
    const ctx = await gpuContext();
    const rank: NaRank = 2;
    const shape = [1, 6, 7, 2, 8];
    const q = ctx.upload(randn(shape, 'float32', 1));
    const o = ctx.createTensor(shape, 'float32');
    const args = { query: q, key: q, value: q, output: o, kernelSize: [3, 3], queryTileSize: [2, 8], keyTileSize: [2, 8] };
    const plan = fusedForward.plan(ctx, rank, args);
    expect(plan.config).toEqual({ path: 'plain', queryTile: [2, 8], keyTile: [2, 8], stage: 'f32' });
    expect(plan.kernel.key).toContain('"queryTile":[2,8]');
    expect(plan.kernel.key).toContain('"keyChunk":16');
    expect(plan.kernel.workgroupSize).toEqual([16, 1, 1]);
    for (const b of [q, o]) b.buffer.destroy();
    // the backend path with tiles matches the reference too
    expectFwdClose(await runFwdCase(ctx, { rank: 2, spatial: [6, 7], kernelSize: [3, 3] }, plan.config), 'forced [2,8]x16');
  }, TIMEOUT);
});

describe('validation (before any GPU work)', () => {
  const host = (shape: number[], dtype: 'float32' | 'float16' | 'float64' = 'float32') => zeros(shape, dtype);
  const base = () => ({
    query: host([1, 8, 8, 2, 16]),
    key: host([1, 8, 8, 2, 16]),
    value: host([1, 8, 8, 2, 16]),
    output: host([1, 8, 8, 2, 16]),
    logsumexp: host(lseShape(1, [8, 8], 2)),
    kernelSize: [3, 3],
  });

  it('tile products that are not compiled list the valid products for this rank and dtype', async () => {
    const ctx = await gpuContext();
    const gpu = createGpuBackend(ctx);
    const bad = { ...base(), queryTileSize: [8, 3], keyTileSize: [8, 8] };
    await expect(gpu.fusedForward(2, bad)).rejects.toThrow(NattenArgumentError);
    await expect(gpu.fusedForward(2, bad)).rejects.toThrow(
      /na2d_forward: query_tile_size=\[8, 3\] and key_tile_size=\[8, 8\] multiply to 24x64, which is not a forward tile of this backend; valid products \(query x key\) are 16x16, 16x32, 16x64, 32x16, 32x32, 32x64, 64x16, 64x32, 64x64, 128x16, 128x32, 128x64/,
    );
  });

  it('a tile whose workgroup memory does not fit names the device limit and the valid products', async () => {
    const ctx = await gpuContext();
    const big = { ...base(), query: host([1, 8, 8, 2, 256]), key: host([1, 8, 8, 2, 256]), value: host([1, 8, 8, 2, 256]), output: host([1, 8, 8, 2, 256]) };
    expect(() => fusedForward.check(ctx, 2, { ...big, queryTileSize: [8, 8], keyTileSize: [8, 8] })).toThrow(
      /na2d_forward: query_tile_size=\[8, 8\], key_tile_size=\[8, 8\], stage=f32 cannot run here: key chunk 64 with head dims 256\/256 \(f32 staging\) needs 131072 bytes of workgroup memory; this device allows 32768; valid tile products \(query x key\) for this rank-2 float32 problem on this device are 16x16, 32x16, 64x16/,
    );
    // f16 inputs stage K/V in f16 when tiles are given (64 keys of D=256 still do not fit 32 KiB)
    const big16 = Object.fromEntries(Object.entries(big).map(([k, v]) => [k, typeof v === 'object' && 'dtype' in v && k !== 'logsumexp' ? host([...v.shape], 'float16') : v]));
    expect(checkFusedForwardGpu(ctx, 2, { ...(big16 as typeof big), queryTileSize: [8, 8], keyTileSize: [4, 8] }).config.stage).toBe('f16');
    expect(checkFusedForwardGpu(ctx, 2, { ...big, queryTileSize: [8, 8], keyTileSize: [4, 4] }).config.stage).toBe('f32');
    expect(() => fusedForward.check(ctx, 2, { ...(big16 as typeof big), queryTileSize: [8, 8], keyTileSize: [8, 8] })).toThrow(/key chunk 64 with head dims 256\/256 \(f16 staging\) needs 65536 bytes/);
  });

  it('a head dim no config fits is rejected with the bytes it needs', async () => {
    const ctx = await gpuContext();
    const d = 2048;
    const huge = { ...base(), query: host([1, 4, 4, 1, d]), key: host([1, 4, 4, 1, d]), value: host([1, 4, 4, 1, d]), output: host([1, 4, 4, 1, d]), logsumexp: host([1, 4, 4, 1]) };
    expect(() => fusedForward.check(ctx, 2, huge)).toThrow(/na2d_forward: no WebGPU kernel configuration fits head_dim=2048, value head_dim=2048 in this device's 32768 bytes of workgroup memory/);
  });

  it('float64 is unsupported on WebGPU; core rules (odd K with rpb) still apply', async () => {
    const ctx = await gpuContext();
    const f64 = Object.fromEntries(Object.entries(base()).map(([k, v]) => [k, typeof v === 'object' && 'dtype' in v && k !== 'logsumexp' ? host([...v.shape], 'float64') : v]));
    expect(() => fusedForward.check(ctx, 2, f64)).toThrow(NattenUnsupportedError);
    expect(() => fusedForward.check(ctx, 2, f64)).toThrow(/na2d_forward: dtype float64 is not supported on WebGPU/);
    expect(() => fusedForward.check(ctx, 2, { ...base(), kernelSize: [4, 3], rpb: host([2, 7, 5]) })).toThrow(/rel_pos_bias needs odd kernel sizes, got kernel_size\[0\]=4/);
  });

  it('tensors over maxStorageBufferBindingSize are rejected on shapes alone', async () => {
    const ctx = await gpuContext();
    const n = Math.ceil(ctx.limits.maxStorageBufferBindingSize / 4 / 16) + 16;
    const t = { shape: [1, n, 1, 16], dtype: 'float32' as const };
    expect(() => fusedForward.check(ctx, 1, { query: t, key: t, value: t, output: t, kernelSize: 3 })).toThrow(
      new RegExp(`na1d_forward: query \\[1, ${n}, 1, 16\\] float32 needs ${n * 64} bytes, over this device's maxStorageBufferBindingSize of ${ctx.limits.maxStorageBufferBindingSize}`),
    );
  });

  it('float16 without shader-f16 is unsupported', async () => {
    const noF16 = await GpuContext.create({ disableFeatures: ['shader-f16'] });
    try {
      const f16 = Object.fromEntries(Object.entries(base()).map(([k, v]) => [k, typeof v === 'object' && 'dtype' in v && k !== 'logsumexp' ? host([...v.shape], 'float16') : v]));
      expect(() => fusedForward.check(noF16, 2, f16)).toThrow(NattenUnsupportedError);
      expect(() => fusedForward.check(noF16, 2, f16)).toThrow(/na2d_forward: float16 needs the WebGPU feature 'shader-f16', which this adapter does not offer; use float32/);
    } finally {
      noF16.destroy();
    }
  });
});
