import { axisWindow, checkFusedForward, type FusedForwardArgs, type FusedProblem, NattenArgumentError, NattenUnsupportedError, randn, type TensorLike, tensor } from '@natten-web/core';
import { fusedForward as cpuFusedForward } from '@natten-web/cpu';
import { FUSED_FORWARD_TILES, type FusedForwardMmaSpec, fusedForwardDispatch, generateFusedForwardMma } from '@natten-web/wgsl';
import { afterAll, describe, expect, it } from 'vitest';
import {
  checkFusedForwardMma,
  defaultForwardMma,
  defaultMmaConfig,
  enumerateMmaConfigs,
  fusedForward,
  fusedForwardMma,
  fusedForwardMmaOnHost,
  type GpuContext,
  keyBoxRowsBound,
  MMA_LARGE_WINDOW,
  MMA_F16_MIN_WORKGROUPS,
  MMA_F16_NARROW_HEAD_DIM,
  MMA_F16_WIDE_HEAD_DIM,
  MMA_SPLIT_MIN_WORKGROUPS,
  MMA_MIN_WINDOW_USE,
  mmaAvailability,
  mmaConfigCost,
  mmaProblemFit,
  mmaWindowUse,
  packedCoordsFit,
} from '../src/index.ts';
import { fusedForwardCommand } from '../src/ops/na-fused-forward.ts';
import { axisGrid, type EmulatedProblem, emulatedKernel, emulatedSizes, emulateSubgroupMatrix, emulatingTensorCoreView, matrixViews } from '@natten-web/testkit';
import { expectClose } from './expect-close.ts';
import { fakeTensorCoreContext } from './fake-tensor-core.ts';
import { gpuContext } from './setup.ts';

interface ProblemOptions {
  readonly heads?: number;
  readonly dim?: number;
  readonly dtype?: 'float16' | 'float32' | 'float64';
  readonly dilation?: number;
  readonly causal?: boolean;
  readonly rpb?: boolean;
  readonly stride?: number | number[];
}

function problem(spatial: number[], kernelSize: number[], o: ProblemOptions = {}): FusedProblem {
  const dtype = o.dtype ?? 'float16';
  const t = tensor([1, ...spatial, o.heads ?? 8, o.dim ?? 64], dtype);
  const rank = spatial.length as 1 | 2 | 3;
  const rpb = o.rpb ? tensor([o.heads ?? 8, ...kernelSize.map((k) => 2 * k - 1)], dtype) : null;
  return checkFusedForward(
    'na_forward',
    rank,
    { output: t, query: t, key: t, value: t, rpb, kernelSize, dilation: o.dilation ?? 1, isCausal: o.causal ?? false, ...(o.stride ? { stride: o.stride } : {}) },
    FUSED_FORWARD_TILES,
  );
}

afterAll(async () => (await gpuContext()).destroy());

describe('tensor-core (mma) forward: availability, config choice and the default route', () => {
  it('says why it cannot run on this adapter, and throws before any GPU work; the default stays on the plain path', async () => {
    const ctx = await gpuContext();
    const avail = mmaAvailability(ctx);
    if (ctx.features.has('chromium-experimental-subgroup-matrix')) return;
    expect(avail).toEqual({ why: "no 'chromium-experimental-subgroup-matrix' feature" });
    expect(enumerateMmaConfigs(ctx, problem([64, 64], [15, 15]))).toEqual([]);
    const t = ctx.createTensor([1, 64, 64, 2, 64], 'float16');
    const args = { output: t, query: t, key: t, value: t, kernelSize: 15 };
    const run = fusedForwardMma(ctx, 2, args);
    await expect(run).rejects.toThrow(/na2d_forward: tensor-core \(mma\) path unavailable: no 'chromium-experimental-subgroup-matrix' feature/);
    await expect(run).rejects.toBeInstanceOf(NattenUnsupportedError);
    expect(fusedForward.route(ctx, 2, args)).toBeUndefined();
    ctx.releaseTensor(t);
  });

  it('needs a fixed 32-wide subgroup and an f16 -> f32 16x16x16 matrix config', () => {
    expect(mmaAvailability(fakeTensorCoreContext())).toEqual({ ok: true });
    expect(mmaAvailability(fakeTensorCoreContext(16))).toEqual({ why: 'the subgroup size must be fixed at 32 (adapter reports 16..16)' });
    const noF32 = { ...fakeTensorCoreContext(), subgroupMatrix: [{ componentType: 'f16', resultComponentType: 'f16', M: 16, N: 16, K: 16 }] };
    expect(mmaAvailability(noF32 as unknown as GpuContext)).toEqual({ why: 'no f16 -> f32 16x16x16 subgroup-matrix config' });
  });

  it('fits float16 and float32 problems whose head dims are multiples of 16 (with or without rpb)', () => {
    expect(mmaProblemFit(problem([32, 32], [7, 7], { dtype: 'float32' }))).toBeUndefined();
    expect(mmaProblemFit(problem([32, 32], [7, 7], { dtype: 'float64' }))).toBe('the tensor-core (mma) forward needs float16 or float32 tensors, not float64');
    expect(mmaProblemFit(problem([32, 32], [7, 7], { dim: 40 }))).toMatch(/head dims 40\/40 are not multiples of 16/);
    expect(mmaProblemFit(problem([32, 32], [7, 7], { rpb: true }))).toBeUndefined();
    expect(mmaProblemFit(problem([32, 32], [7, 7]))).toBeUndefined();
  });

  it('routes the default forward by window use, as measured on an H200', () => {
    const ctx = fakeTensorCoreContext();
    const cases: [string, FusedProblem, boolean][] = [
      ['1-D 4096 K=127', problem([4096], [127]), true],
      ['1-D 32768 K=2047 causal', problem([32768], [2047], { causal: true }), true],
      ['2-D 128x128 K=13 dilation 2', problem([128, 128], [13, 13], { dilation: 2 }), true],
      ['2-D 256x256 K=15', problem([256, 256], [15, 15], { heads: 16 }), true],
      ['FLUX-like K=80 D=128', problem([256, 256], [80, 80], { heads: 24, dim: 128 }), true],
      ['2-D 128x128 K=7', problem([128, 128], [7, 7]), true],
      ['2-D 128x128 K=3 (window use below the measured range)', problem([128, 128], [3, 3]), false],
      ['3-D 16x32x32 K=3x7x7', problem([16, 32, 32], [3, 7, 7]), true],
      ['f32 1-D 4096 K=127 (split)', problem([4096], [127], { dtype: 'float32' }), true],
      ['f32 1-D 32768 K=2047 causal', problem([32768], [2047], { causal: true, dtype: 'float32' }), true],
      ['f32 2-D 128x128 K=7', problem([128, 128], [7, 7], { dtype: 'float32' }), true],
      ['f32 3-D 16x32x32 K=3x7x7', problem([16, 32, 32], [3, 7, 7], { dtype: 'float32' }), true],
      ['f32 FLUX-like K=80 D=128 (2 subgroups fit)', problem([256, 256], [80, 80], { heads: 24, dim: 128, dtype: 'float32' }), true],
      ['f32 2-D 128x128 K=3', problem([128, 128], [3, 3], { dtype: 'float32' }), false],
      // rpb and strides since session 19 (H200: rpb 1.5-4.9x, strides 2.5-6.6x faster than the plain default).
      ['f32 rpb', problem([4096], [127], { rpb: true, dtype: 'float32' }), true],
      ['rpb', problem([4096], [127], { rpb: true }), true],
      ['rpb, 2-D head dim 32', problem([56, 56], [7, 7], { rpb: true, dim: 32, heads: 2 }), true],
      ['stride 2', problem([4096], [127], { stride: 2 }), true],
      ['f32 stride 2x3', problem([128, 128], [7, 7], { stride: [2, 3], dtype: 'float32' }), true],
      // rpb with strides since session 20 (H200: float16 2.1-3.9x, float32 1.6-2.7x).
      ['rpb with a stride', problem([4096], [127], { rpb: true, stride: 2 }), true],
      ['f32 rpb with strides', problem([128, 128], [7, 7], { rpb: true, stride: [2, 3], dtype: 'float32' }), true],
      ['head dim 256 (not yet timed)', problem([4096], [127], { dim: 256 }), false],
    ];
    for (const [name, p, routed] of cases) {
      const c = defaultForwardMma(ctx, p);
      expect(c !== undefined, name).toBe(routed);
      if (c) expect(mmaWindowUse(p, c), name).toBeGreaterThanOrEqual(MMA_MIN_WINDOW_USE);
    }
  });

  it('compiles dilation and stride 1 into the kernel where the problem has them (unitSteps), causal or not, float16 or float32, up to MMA_LARGE_WINDOW keys', () => {
    const ctx = fakeTensorCoreContext();
    const spec = (spatial: number[], kernelSize: number[], o: { dilation?: number; isCausal?: boolean; stride?: number } = {}) => {
      const t = tensor([1, ...spatial, 8, 64], 'float16');
      return checkFusedForwardMma(ctx, spatial.length as 1 | 2 | 3, { query: t, key: t, value: t, output: t, kernelSize, ...o }).spec;
    };
    expect(spec([128, 128], [7, 7]).unitSteps).toBe(true);
    expect(spec([4096], [127], { isCausal: true }).unitSteps).toBe(true);
    expect(spec([128, 128], [13, 13], { dilation: 2 }).unitSteps).toBeUndefined();
    expect(spec([4096], [127], { stride: 2 }).unitSteps).toBeUndefined();
    // Windows over MMA_LARGE_WINDOW keys keep the uniforms (H200, session 15: FLUX-like 39.8 -> 43.3 ms with them).
    expect(spec([128, 128], [67, 67]).unitSteps).toBeUndefined();
    // The float32 split too (H200, session 16: 1.03-1.08x faster).
    const t32 = tensor([1, 128, 128, 8, 64], 'float32');
    expect(checkFusedForwardMma(ctx, 2, { query: t32, key: t32, value: t32, output: t32, kernelSize: [7, 7] }).spec.unitSteps).toBe(true);
    expect(checkFusedForwardMma(ctx, 2, { query: t32, key: t32, value: t32, output: t32, kernelSize: [7, 7], dilation: 2 }).spec.unitSteps).toBeUndefined();
    // A config's `unitSteps` decides where the problem has unit steps (to time the rule's exceptions).
    const t16 = tensor([1, 128, 128, 8, 64], 'float16');
    const withConfig = (t: TensorLike, extra: object, o: { dilation?: number } = {}) =>
      checkFusedForwardMma(ctx, 2, { query: t, key: t, value: t, output: t, kernelSize: [7, 7], ...o }, { ...checkFusedForwardMma(ctx, 2, { query: t, key: t, value: t, output: t, kernelSize: [7, 7], ...o }).config, ...extra }).spec.unitSteps;
    expect(withConfig(t16, { unitSteps: false })).toBeUndefined();
    expect(withConfig(t32, { unitSteps: false })).toBeUndefined();
    expect(withConfig(t16, { unitSteps: true }, { dilation: 2 })).toBeUndefined();
  });
  it('takes 16-key chunks with unpadded scratch rows and 4 subgroups by default (2 in 3-D, with K and V in turn there), 32-key chunks for windows over MMA_LARGE_WINDOW keys (4 subgroups where 8 give too few workgroups); float32 with K and V in turn', () => {
    const ctx = fakeTensorCoreContext();
    expect(MMA_LARGE_WINDOW).toBe(4096);
    // H200, same run against 8 subgroups with padded rows: 1498 -> 1385 us, 38.5 -> 33.4 us, 146 -> 121 us.
    // S rows padded where that keeps 4 workgroups per compute unit (48 KiB: 11,024 -> 12,048 bytes in 1-D, 10,832 ->
    // 11,856 in 2-D; H200 session 13: 33.6 -> 31.9 us, 116.0 -> 112.7 us).
    // 1-D and large windows: 16-byte K/V loads (session 13: 1374 -> 1299 us, 31.3 -> 30.5 us, FLUX-like 41.2 -> 39.4 ms).
    // Session 25: P over the staged K rows, and the 2 KiB that frees spent on S rows of 24 floats (4 workgroups per
    // unit either way): 1-D 4096 26.9 -> 25.7 us, 1-D K=2047 causal 1261 -> 1161, 2-D K=7 94.2 -> 91.6, K=13 dilated
    // 158.7 -> 153.7, 256x256 K=15 1250 -> 1193.
    expect(defaultMmaConfig(ctx, problem([32768], [2047], { causal: true }))).toEqual({ path: 'mma', queryTile: [64], keyChunk: 16, subgroups: 4, tightScratch: true, pOverK: true, wideS: true, wideLoads: true });
    expect(defaultMmaConfig(ctx, problem([4096], [127]))).toEqual({ path: 'mma', queryTile: [64], keyChunk: 16, subgroups: 4, tightScratch: true, pOverK: true, wideS: true, wideLoads: true });
    expect(defaultMmaConfig(ctx, problem([128, 128], [7, 7]))).toEqual({ path: 'mma', queryTile: [8, 8], keyChunk: 16, subgroups: 4, tightScratch: true, pOverK: true, wideS: true });
    expect(defaultMmaConfig(ctx, problem([128, 128], [13, 13], { dilation: 2 }))).toMatchObject({ keyChunk: 16, subgroups: 4, tightScratch: true, pOverK: true, wideS: true });
    // 3-D: 2 subgroups (338 -> 234 us; 268 with 4), K and V in turn with padded rows (session 14: 6,480 bytes, 7
    // workgroups per unit where unpadded side by side fit 6: 211.6 -> 201.9 us; S padding there cost a workgroup
    // per unit: 7,760 -> 8,272 bytes, 6 -> 5, 222.5 -> 233.7 us); 16-byte K/V loads (session 17: 183.0 -> 170.9 us);
    // S rows of 24 floats, free there (6,480 -> 6,992 bytes, 7 per unit either way; session 25: 172.4 -> 168.7 us),
    // while the 1-D and 2-D defaults above would lose a workgroup per unit to them (1-D 4096 26.9 -> 33.6 us).
    expect(defaultMmaConfig(ctx, problem([16, 32, 32], [3, 7, 7]))).toEqual({ path: 'mma', queryTile: [2, 4, 4], keyChunk: 16, subgroups: 2, kvInTurn: true, wideLoads: true, wideS: true });
    // 2 subgroups where 4 give fewer than MMA_F16_MIN_WORKGROUPS workgroups (session 18: 2-D 56x56 K=7 4 heads, 196
    // with 4, 21.5 -> 18.0 us; 28x28 8 heads, 112, 22.0 -> 16.9); the benchmark problems have 512 or more.
    expect(MMA_F16_MIN_WORKGROUPS).toBe(256);
    expect(defaultMmaConfig(ctx, problem([56, 56], [7, 7], { heads: 4, dim: 32 }))).toMatchObject({ keyChunk: 16, subgroups: 2, tightScratch: true });
    expect(defaultMmaConfig(ctx, problem([28, 28], [7, 7], { dim: 32 }))).toMatchObject({ keyChunk: 16, subgroups: 2, tightScratch: true });
    expect(defaultMmaConfig(ctx, problem([64, 64], [13, 13], { heads: 12 }))).toMatchObject({ subgroups: 4 });
    // 2 subgroups at head dims up to MMA_F16_NARROW_HEAD_DIM at any grid size (session 19: 2-D 128x128 K=7 head dim
    // 32, 2048 workgroups with 4, 80.3 -> 67.5 us), and from MMA_F16_WIDE_HEAD_DIM, there with S unpadded (head dim
    // 128, 2-D 64x64 K=9 8 heads 75.7 -> 68.8 us); head dim 64 keeps 4.
    expect([MMA_F16_NARROW_HEAD_DIM, MMA_F16_WIDE_HEAD_DIM]).toEqual([32, 128]);
    expect(defaultMmaConfig(ctx, problem([128, 128], [7, 7], { dim: 32 }))).toMatchObject({ keyChunk: 16, subgroups: 2, tightScratch: true });
    expect(defaultMmaConfig(ctx, problem([128, 128], [7, 7]))).toMatchObject({ keyChunk: 16, subgroups: 4, tightScratch: true });
    const wide = defaultMmaConfig(ctx, problem([64, 64], [9, 9], { dim: 128 }));
    expect(wide).toMatchObject({ keyChunk: 16, subgroups: 2, tightScratch: true });
    expect(wide?.padS).toBeUndefined();
    expect(defaultMmaConfig(ctx, problem([128, 128], [7, 7], { dim: 32, dtype: 'float32' }))).toMatchObject({ subgroups: 4 });
    // Large windows: 32-key chunks (FLUX-like 45.3 vs 55.2 ms with 16), 8 subgroups; 4 where 8 give too few workgroups.
    expect(defaultMmaConfig(ctx, problem([256, 256], [80, 80], { heads: 24, dim: 128 }))).toEqual({ path: 'mma', queryTile: [16, 8], keyChunk: 32, subgroups: 8, wideLoads: true });
    expect(defaultMmaConfig(ctx, problem([8192], [4097], { heads: 2 }))).toMatchObject({ keyChunk: 32, subgroups: 4 });
    // float32 (split): 16-key chunks, K and V in turn, 4 subgroups with padded rows (H200 session 10: 2705 -> 2301
    // us, 251 -> 213 us, 3227 -> 2567 us); 2 subgroups with unpadded rows in 3-D (478 -> 368 us); 2 where 4 give
    // fewer than MMA_SPLIT_MIN_WORKGROUPS workgroups (1-D L=4096 H=8: 512 with 4; 62.4 -> 60.3 us); 8 subgroups,
    // side by side, above MMA_LARGE_WINDOW keys (FLUX-like: 139 -> 95 ms).
    expect(MMA_SPLIT_MIN_WORKGROUPS).toBe(1024);
    expect(defaultMmaConfig(ctx, problem([32768], [2047], { causal: true, dtype: 'float32' }))).toEqual({ path: 'mma', queryTile: [64], keyChunk: 16, subgroups: 4, kvInTurn: true });
    expect(defaultMmaConfig(ctx, problem([128, 128], [7, 7], { dtype: 'float32' }))).toEqual({ path: 'mma', queryTile: [8, 8], keyChunk: 16, subgroups: 4, kvInTurn: true });
    expect(defaultMmaConfig(ctx, problem([16, 32, 32], [3, 7, 7], { dtype: 'float32' }))).toEqual({ path: 'mma', queryTile: [2, 4, 4], keyChunk: 16, subgroups: 2, tightScratch: true, kvInTurn: true });
    expect(defaultMmaConfig(ctx, problem([4096], [127], { dtype: 'float32' }))).toEqual({ path: 'mma', queryTile: [32], keyChunk: 16, subgroups: 2, kvInTurn: true });
    expect(defaultMmaConfig(ctx, problem([4096], [127], { heads: 16, dtype: 'float32' }))).toMatchObject({ subgroups: 4, kvInTurn: true });
    expect(defaultMmaConfig(ctx, problem([256, 256], [80, 80], { heads: 24, dim: 128, dtype: 'float32' }))).toEqual({ path: 'mma', queryTile: [16, 8], keyChunk: 16, subgroups: 8 });
  });

  it('chooses the default config once per problem and device (the routes run on every call)', () => {
    const ctx = fakeTensorCoreContext();
    const p = problem([16, 32, 32], [3, 7, 7]);
    const first = defaultMmaConfig(ctx, p);
    expect(defaultMmaConfig(ctx, { ...p })).toBe(first);
    const other = defaultMmaConfig(fakeTensorCoreContext(), p);
    expect(other).not.toBe(first);
    expect(other).toEqual(first);
  });

  it('runs groups smaller than a query tile too (every tile pads them), and prefers tiles within the group extent', () => {
    const ctx = fakeTensorCoreContext();
    // L=9, dilation 2: groups of 5 and 4 queries, under the smallest tile (32 queries).
    const tiny = enumerateMmaConfigs(ctx, problem([9], [3], { dilation: 2 }));
    expect(tiny.length).toBeGreaterThan(0);
    // 2-D 128x128: no tile factor beyond the extent's next power of two.
    expect(enumerateMmaConfigs(ctx, problem([128, 128], [7, 7])).every((c) => c.queryTile.every((t) => t <= 128))).toBe(true);
    expect(enumerateMmaConfigs(ctx, problem([4, 128], [3, 7])).every((c) => (c.queryTile[0] as number) <= 4)).toBe(true);
  });

  it('packs key coordinates in 2-D and 3-D without rpb while every dilation group fits the packed fields', () => {
    const p = (spatial: number[], o: { dilation?: number[]; rpb?: boolean } = {}) => ({ rank: spatial.length as 1 | 2 | 3, spatial, hasRpb: o.rpb === true, params: { dilation: o.dilation ?? spatial.map(() => 1) } }) as unknown as FusedProblem;
    expect(packedCoordsFit(p([128, 128]))).toBe(true);
    expect(packedCoordsFit(p([16, 32, 32]))).toBe(true);
    expect(packedCoordsFit(p([4, 1023, 8]))).toBe(true);
    // 3-D fields are 10 bits: a group extent of 1024 does not fit, unless dilation splits it.
    expect(packedCoordsFit(p([4, 1024, 8]))).toBe(false);
    expect(packedCoordsFit(p([4, 1024, 8], { dilation: [1, 2, 1] }))).toBe(true);
    expect(packedCoordsFit(p([65535, 8]))).toBe(true);
    expect(packedCoordsFit(p([65536, 8]))).toBe(false);
    expect(packedCoordsFit(p([4096]))).toBe(false);
    expect(packedCoordsFit(p([128, 128], { rpb: true }))).toBe(false);
  });
  it('reads the emulation views (matrix kinds per workgroup array) from a kernel text', () => {
    const code = generateFusedForwardMma({ rank: 2, kernelSize: [7, 7], causal: [false, false], dim: 32, dimV: 32, queryTile: [8, 8], keyChunk: 32, subgroups: 4, hasLse: true }).code;
    const v = matrixViews(code);
    expect(new Set(v.loads.map(([k, a]) => `${k}:${a}`))).toEqual(new Set(['left:kv_sh', 'right:kv_sh', 'left:p_sh', 'result:s_sh']));
    expect(v.stores).toEqual(['s_sh']);
  });

  it('costs configs by box chunks and the chunks each subgroup’s windows span', () => {
    const k7 = problem([128, 128], [7, 7]);
    // 16 consecutive queries of a 16x8 tile are 2 rows: their windows span 8 of the box's 22 rows; of an 8x16 tile,
    // 1 row whose windows span 7 rows of 22 keys each against 14 of 14: the taller tile wastes less.
    expect(mmaConfigCost(k7, { path: 'mma', queryTile: [16, 8], keyChunk: 32, subgroups: 8 })).toBeLessThan(
      mmaConfigCost(k7, { path: 'mma', queryTile: [4, 32], keyChunk: 32, subgroups: 8 }),
    );
  });

  it('generates kernels whose non-matrix WGSL compiles on this adapter (matrix builtins emulated)', async () => {
    const ctx = await gpuContext();
    const specs: FusedForwardMmaSpec[] = [
      { rank: 1, kernelSize: [127], causal: [true], dim: 64, dimV: 64, queryTile: [128], keyChunk: 32, subgroups: 8, hasLse: true },
      { rank: 2, kernelSize: [7, 9], causal: [false, true], dim: 128, dimV: 64, queryTile: [8, 8], keyChunk: 64, subgroups: 4, hasLse: false },
      { rank: 3, kernelSize: [3, 5, 7], causal: [false, false, false], dim: 32, dimV: 48, queryTile: [2, 4, 4], keyChunk: 32, subgroups: 2, hasLse: true },
    ];
    for (const spec of specs) {
      const code = emulateSubgroupMatrix(generateFusedForwardMma(spec).code);
      const module = ctx.device.createShaderModule({ code });
      const errors = (await module.getCompilationInfo()).messages.filter((m) => m.type === 'error').map((m) => `${m.lineNum}:${m.linePos} ${m.message}`);
      expect(errors, `rank ${spec.rank}`).toEqual([]);
    }
  });
});

describe('tensor-core (mma) forward, emulated on this adapter, against the CPU reference', () => {
  interface EmuCase extends EmulatedProblem {
    readonly scale?: number;
    readonly rpb?: boolean;
    readonly config: { queryTile: number[]; keyChunk: 16 | 32 | 64; subgroups: 2 | 4 | 8; tightScratch?: boolean; kvInTurn?: boolean; pOverK?: boolean; packedCoords?: boolean; padS?: boolean; wideS?: boolean; wideLoads?: boolean; fastDivide?: boolean; earlyFetch?: boolean; batchedQGather?: boolean };
  }
  const cases: EmuCase[] = [
    { name: '1-D L=37 K=7, a partial tile', spatial: [37], kernelSize: [7], dim: 16, config: { queryTile: [64], keyChunk: 32, subgroups: 4 } },
    { name: '1-D L=100 K=9 dilation 3 causal', spatial: [100], kernelSize: [9], dim: 16, dilation: [3], causal: [true], config: { queryTile: [32], keyChunk: 64, subgroups: 2 } },
    { name: '1-D L=300 K=127 (whole chunks inside windows skip the test)', spatial: [300], kernelSize: [127], dim: 16, config: { queryTile: [32], keyChunk: 32, subgroups: 2 } },
    { name: '2-D 24x20 K=9x11 at head dim 64 (4 fragments per row)', spatial: [24, 20], kernelSize: [9, 11], dim: 64, config: { queryTile: [8, 8], keyChunk: 32, subgroups: 4 } },
    { name: '1-D L=200 K=65, logits large enough to rescale O', spatial: [200], kernelSize: [65], dim: 16, scale: 4, config: { queryTile: [32], keyChunk: 32, subgroups: 2 } },
    { name: '2-D 19x23 K=5x7 (chunk skipping per subgroup)', spatial: [19, 23], kernelSize: [5, 7], dim: 32, config: { queryTile: [8, 8], keyChunk: 32, subgroups: 4 } },
    { name: '2-D 20x17 K=4x6 dilation 2x1 causal on axis 0', spatial: [20, 17], kernelSize: [4, 6], dim: 16, dilation: [2, 1], causal: [true, false], config: { queryTile: [4, 8], keyChunk: 32, subgroups: 2 } },
    { name: "2-D 16x16 K=7 GQA 4/2 heads, Dv=16, batch 2", spatial: [16, 16], kernelSize: [7, 7], heads: 4, headsKv: 2, dim: 16, dimV: 16, batch: 2, config: { queryTile: [16, 8], keyChunk: 32, subgroups: 8 } },
    { name: '3-D 6x9x11 K=3x5x5 causal on axis 1', spatial: [6, 9, 11], kernelSize: [3, 5, 5], dim: 16, causal: [false, true, false], config: { queryTile: [2, 4, 8], keyChunk: 32, subgroups: 4 } },
    { name: '1-D L=150 K=33 with rpb', spatial: [150], kernelSize: [33], dim: 16, rpb: true, config: { queryTile: [32], keyChunk: 32, subgroups: 2 } },
    { name: '2-D 18x21 K=5x7 dilation 2x1 with rpb', spatial: [18, 21], kernelSize: [5, 7], dim: 16, dilation: [2, 1], rpb: true, config: { queryTile: [4, 8], keyChunk: 32, subgroups: 2 } },
    { name: '3-D 5x8x9 K=3x3x5 with rpb, GQA', spatial: [5, 8, 9], kernelSize: [3, 3, 5], heads: 2, headsKv: 1, dim: 16, rpb: true, config: { queryTile: [2, 2, 8], keyChunk: 32, subgroups: 2 } },
    { name: '3-D 4x10x14 K=3x5x7 dilation 1x2x2 GQA, Dv=32', spatial: [4, 10, 14], kernelSize: [3, 5, 7], heads: 2, headsKv: 1, dim: 16, dimV: 32, dilation: [1, 2, 2], config: { queryTile: [1, 4, 8], keyChunk: 64, subgroups: 2 } },
    { name: '1-D L=200 K=65 causal, rescaling O', spatial: [200], kernelSize: [65], dim: 16, causal: [true], scale: 4, config: { queryTile: [32], keyChunk: 32, subgroups: 2 } },
    // 16-key chunks (one fragment per chunk; the float32 split's way to 8 subgroups in 48 KiB).
    { name: '16-key chunks: 1-D L=200 K=65 causal, rescaling O, 8 subgroups', spatial: [200], kernelSize: [65], dim: 32, causal: [true], scale: 4, config: { queryTile: [128], keyChunk: 16, subgroups: 8 } },
    { name: '16-key chunks: 3-D 5x8x9 K=3x3x5 with rpb, GQA, Dv=32', spatial: [5, 8, 9], kernelSize: [3, 3, 5], heads: 2, headsKv: 1, dim: 16, dimV: 32, rpb: true, config: { queryTile: [2, 2, 8], keyChunk: 16, subgroups: 2 } },
    // Unpadded scratch rows (tightScratch; the float16 default): rescales, rpb, GQA, Dv 48, 2, 4 and 8 subgroups.
    { name: 'tight scratch: 2-D 19x23 K=7 at head dim 64, 4 subgroups, rescaling O', spatial: [19, 23], kernelSize: [7, 7], dim: 64, scale: 4, config: { queryTile: [8, 8], keyChunk: 16, subgroups: 4, tightScratch: true } },
    { name: 'tight scratch: 1-D L=200 K=65 causal, rescaling O, 8 subgroups', spatial: [200], kernelSize: [65], dim: 32, causal: [true], scale: 4, config: { queryTile: [128], keyChunk: 16, subgroups: 8, tightScratch: true } },
    { name: 'tight scratch: 3-D 4x10x14 K=3x5x7 dilation 1x2x2 GQA, Dv=48, 2 subgroups', spatial: [4, 10, 14], kernelSize: [3, 5, 7], heads: 2, headsKv: 1, dim: 16, dimV: 48, dilation: [1, 2, 2], config: { queryTile: [1, 4, 8], keyChunk: 16, subgroups: 2, tightScratch: true } },
    // K and V in turn through one staging area (opt-in kvInTurn): rescales, causal, rpb, GQA, Dv != D (the area is
    // as wide as the wider head dim), 32-key chunks.
    { name: 'K/V in turn: 2-D 19x23 K=7 at head dim 64, 4 subgroups, unpadded scratch, rescaling O', spatial: [19, 23], kernelSize: [7, 7], dim: 64, scale: 4, config: { queryTile: [8, 8], keyChunk: 16, subgroups: 4, tightScratch: true, kvInTurn: true } },
    { name: 'K/V in turn: 1-D L=200 K=65 causal, rescaling O, 2 subgroups, 32-key chunks', spatial: [200], kernelSize: [65], dim: 32, causal: [true], scale: 4, config: { queryTile: [32], keyChunk: 32, subgroups: 2, kvInTurn: true } },
    { name: 'K/V in turn: 3-D 5x8x9 K=3x3x5 with rpb, GQA, D=16 and Dv=48', spatial: [5, 8, 9], kernelSize: [3, 3, 5], heads: 2, headsKv: 1, dim: 16, dimV: 48, rpb: true, config: { queryTile: [2, 2, 8], keyChunk: 16, subgroups: 2, kvInTurn: true } },
    { name: 'K/V in turn: 2-D 14x17 K=5x7, D=48 and Dv=16', spatial: [14, 17], kernelSize: [5, 7], dim: 48, dimV: 16, config: { queryTile: [4, 8], keyChunk: 16, subgroups: 2, kvInTurn: true } },
    // P over the chunk's staged K rows (opt-in pOverK): rescales, causal, rpb, GQA, D != Dv, 32-key chunks.
    { name: 'P over K: 2-D 19x23 K=7 at head dim 64, 4 subgroups, unpadded scratch, rescaling O', spatial: [19, 23], kernelSize: [7, 7], dim: 64, scale: 4, config: { queryTile: [8, 8], keyChunk: 16, subgroups: 4, tightScratch: true, pOverK: true } },
    { name: 'P over K: 1-D L=200 K=65 causal, rescaling O, 2 subgroups, 32-key chunks', spatial: [200], kernelSize: [65], dim: 32, causal: [true], scale: 4, config: { queryTile: [32], keyChunk: 32, subgroups: 2, pOverK: true } },
    { name: 'P over K: 3-D 5x8x9 K=3x3x5 with rpb, GQA, D=32 and Dv=16', spatial: [5, 8, 9], kernelSize: [3, 3, 5], heads: 2, headsKv: 1, dim: 32, dimV: 16, rpb: true, config: { queryTile: [2, 2, 8], keyChunk: 16, subgroups: 2, tightScratch: true, pOverK: true } },
    { name: 'tight scratch: 2-D 18x21 K=5x7 dilation 2x1 with rpb', spatial: [18, 21], kernelSize: [5, 7], dim: 16, dilation: [2, 1], rpb: true, config: { queryTile: [4, 8], keyChunk: 16, subgroups: 2, tightScratch: true } },
    // Packed key coordinates (packedCoords, the default in 2-D and 3-D without rpb): rescales, causal, dilation, GQA,
    // Dv != D, 16- and 32-key chunks, partial tiles, chunks past the box (all-ones coordinates, out of every window).
    { name: 'packed coordinates: 2-D 19x23 K=7 at head dim 64, 4 subgroups, unpadded scratch, rescaling O', spatial: [19, 23], kernelSize: [7, 7], dim: 64, scale: 4, config: { queryTile: [8, 8], keyChunk: 16, subgroups: 4, tightScratch: true, packedCoords: true } },
    { name: 'packed coordinates: 2-D 20x17 K=4x6 dilation 2x1 causal on axis 0, 32-key chunks', spatial: [20, 17], kernelSize: [4, 6], dim: 16, dilation: [2, 1], causal: [true, false], config: { queryTile: [4, 8], keyChunk: 32, subgroups: 2, packedCoords: true } },
    { name: 'packed coordinates: 3-D 4x10x14 K=3x5x7 dilation 1x2x2 GQA, Dv=48, 2 subgroups', spatial: [4, 10, 14], kernelSize: [3, 5, 7], heads: 2, headsKv: 1, dim: 16, dimV: 48, dilation: [1, 2, 2], config: { queryTile: [1, 4, 8], keyChunk: 16, subgroups: 2, tightScratch: true, packedCoords: true } },
    { name: 'packed coordinates: 3-D 6x9x11 K=3x5x5 causal on axis 1, rescaling O', spatial: [6, 9, 11], kernelSize: [3, 5, 5], dim: 16, causal: [false, true, false], scale: 4, config: { queryTile: [2, 4, 4], keyChunk: 16, subgroups: 2, tightScratch: true, packedCoords: true } },
    // S rows padded, P rows exact (padS, the float16 default where free): rescales, causal, dilation.
    { name: 'S padded: 2-D 19x23 K=7 at head dim 64, 4 subgroups, packed, rescaling O', spatial: [19, 23], kernelSize: [7, 7], dim: 64, scale: 4, config: { queryTile: [8, 8], keyChunk: 16, subgroups: 4, tightScratch: true, padS: true, packedCoords: true } },
    { name: 'S padded: 2-D 20x17 K=4x6 dilation 2x1 causal on axis 0', spatial: [20, 17], kernelSize: [4, 6], dim: 16, dilation: [2, 1], causal: [true, false], config: { queryTile: [4, 8], keyChunk: 16, subgroups: 2, tightScratch: true, padS: true } },
    // 16-byte K/V loads (opt-in wideLoads): one and two loads per staging thread, a partial pass (Dv=48 over 4
    // threads per row), GQA, rpb, every rank.
    { name: 'wide loads: 2-D 19x23 K=7 at head dim 64, 4 subgroups, S padded, packed, rescaling O', spatial: [19, 23], kernelSize: [7, 7], dim: 64, scale: 4, config: { queryTile: [8, 8], keyChunk: 16, subgroups: 4, tightScratch: true, padS: true, packedCoords: true, wideLoads: true } },
    { name: 'wide loads: 3-D 4x10x14 K=3x5x7 dilation 1x2x2 GQA, Dv=48, 2 subgroups', spatial: [4, 10, 14], kernelSize: [3, 5, 7], heads: 2, headsKv: 1, dim: 16, dimV: 48, dilation: [1, 2, 2], config: { queryTile: [1, 4, 8], keyChunk: 16, subgroups: 2, tightScratch: true, packedCoords: true, wideLoads: true } },
    { name: 'wide loads with K/V in turn: 3-D 5x12x20 K=3x5x7 dilation 1x2x2 causal FTF, padded rows, rescaling O', spatial: [5, 12, 20], kernelSize: [3, 5, 7], dim: 64, dilation: [1, 2, 2], causal: [false, true, false], scale: 4, config: { queryTile: [2, 4, 4], keyChunk: 16, subgroups: 2, kvInTurn: true, packedCoords: true, wideLoads: true, fastDivide: true, earlyFetch: true, batchedQGather: true } },
    { name: 'wide loads: 1-D L=150 K=33 with rpb, 32-key chunks', spatial: [150], kernelSize: [33], dim: 32, rpb: true, config: { queryTile: [32], keyChunk: 32, subgroups: 2, wideLoads: true } },
    // Float-reciprocal box decoding (fastDivide: 3-D decodes per chunk) and the first fetch before the Q gather
    // (earlyFetch): partial tiles, dilation, GQA, causal, rescales.
    { name: 'fast box decoding, early fetch: 3-D 4x10x14 K=3x5x7 dilation 1x2x2 GQA, Dv=48, 2 subgroups', spatial: [4, 10, 14], kernelSize: [3, 5, 7], heads: 2, headsKv: 1, dim: 16, dimV: 48, dilation: [1, 2, 2], config: { queryTile: [1, 4, 8], keyChunk: 16, subgroups: 2, tightScratch: true, packedCoords: true, fastDivide: true, earlyFetch: true } },
    { name: 'fast box decoding: 3-D 6x9x11 K=3x5x5 causal on axis 1, rescaling O, vec4 coordinates', spatial: [6, 9, 11], kernelSize: [3, 5, 5], dim: 16, causal: [false, true, false], scale: 4, config: { queryTile: [2, 4, 4], keyChunk: 16, subgroups: 2, tightScratch: true, fastDivide: true } },
    { name: 'early fetch: 2-D 19x23 K=7 at head dim 64, 4 subgroups, S padded, packed, rescaling O', spatial: [19, 23], kernelSize: [7, 7], dim: 64, scale: 4, config: { queryTile: [8, 8], keyChunk: 16, subgroups: 4, tightScratch: true, padS: true, packedCoords: true, earlyFetch: true } },
    // The 3-D float16 default's layout (K and V in turn with padded rows, packed, fast decoding, early fetch) and the
    // batched Q gather (its passes' loads issued before their stores; 1-D and 3-D float16): whole passes of the
    // workgroup, and passes of fewer vec4s than invocations (16 rows of 16 dims over 256 invocations: guarded).
    { name: "batched Q gather, 3-D default's layout: 6x9x11 K=3x5x5 causal on axis 1, K/V in turn, rescaling O", spatial: [6, 9, 11], kernelSize: [3, 5, 5], dim: 32, causal: [false, true, false], scale: 4, config: { queryTile: [2, 4, 4], keyChunk: 16, subgroups: 2, kvInTurn: true, packedCoords: true, fastDivide: true, earlyFetch: true, batchedQGather: true } },
    // S rows of 24 floats (wideS; the 3-D float16 default where free): in the padded layout with K and V in turn (the
    // 3-D default's), and over unpadded P rows with rpb and rescales.
    { name: 'S rows of 24 floats with P over K, the 1-D default: L=300 K=127 at head dim 64, 16-byte loads, rescaling O', spatial: [300], kernelSize: [127], dim: 64, scale: 4, config: { queryTile: [64], keyChunk: 16, subgroups: 4, tightScratch: true, pOverK: true, wideS: true, wideLoads: true, earlyFetch: true, batchedQGather: true } },
    { name: 'S rows of 24 floats with P over K, the 2-D default: 19x23 K=7 at head dim 64, packed, causal on axis 1', spatial: [19, 23], kernelSize: [7, 7], dim: 64, causal: [false, true], config: { queryTile: [8, 8], keyChunk: 16, subgroups: 4, tightScratch: true, pOverK: true, wideS: true, packedCoords: true, earlyFetch: true } },
    { name: "S rows of 24 floats, 3-D default's layout: 6x9x11 K=3x5x5 causal on axis 1, K/V in turn, rescaling O", spatial: [6, 9, 11], kernelSize: [3, 5, 5], dim: 32, causal: [false, true, false], scale: 4, config: { queryTile: [2, 4, 4], keyChunk: 16, subgroups: 2, kvInTurn: true, packedCoords: true, wideS: true, wideLoads: true, fastDivide: true, earlyFetch: true, batchedQGather: true } },
    { name: 'S rows of 24 floats: 1-D L=150 K=33 with rpb, unpadded P rows, 4 subgroups, rescaling O', spatial: [150], kernelSize: [33], dim: 32, rpb: true, scale: 4, config: { queryTile: [64], keyChunk: 16, subgroups: 4, tightScratch: true, wideS: true } },
    { name: 'batched Q gather: 1-D L=200 K=65 causal, rescaling O, 8 subgroups (passes shorter than the workgroup)', spatial: [200], kernelSize: [65], dim: 16, causal: [true], scale: 4, config: { queryTile: [128], keyChunk: 16, subgroups: 8, tightScratch: true, padS: true, wideLoads: true, earlyFetch: true, batchedQGather: true } },
  ];

  for (const c of cases) {
    it(c.name, async () => {
      const ctx = await gpuContext();
      const { rank, B, H, Hk, Dv } = emulatedSizes(c);
      const q = randn([B, ...c.spatial, H, c.dim], 'float16', 21);
      const k = randn([B, ...c.spatial, Hk, c.dim], 'float16', 22);
      const v = randn([B, ...c.spatial, Hk, Dv], 'float16', 23);
      const params = { kernelSize: c.kernelSize, dilation: c.dilation ?? 1, isCausal: c.causal ?? false, ...(c.scale ? { attnScale: c.scale } : {}) };
      const rpb = c.rpb ? randn([H, ...c.kernelSize.map((x) => 2 * x - 1)], 'float16', 24) : null;
      const ref = { out: tensor([B, ...c.spatial, H, Dv], 'float16'), lse: tensor([B, ...c.spatial, H], 'float32') };
      cpuFusedForward(rank, { ...params, query: q, key: k, value: v, output: ref.out, logsumexp: ref.lse, rpb });
      const g = { ...params, query: ctx.upload(q), key: ctx.upload(k), value: ctx.upload(v), output: ctx.createTensor(ref.out.shape, 'float16'), logsumexp: ctx.createTensor(ref.lse.shape, 'float32'), rpb: rpb ? ctx.upload(rpb) : null };
      const problem = checkFusedForward('na_forward', rank, g as FusedForwardArgs<TensorLike>, FUSED_FORWARD_TILES);
      const spec: FusedForwardMmaSpec = { rank, kernelSize: [...problem.params.kernelSize], causal: [...problem.params.isCausal], dim: c.dim, dimV: Dv, hasLse: true, ...(c.rpb ? { hasRpb: true } : {}), ...c.config };
      const emulated = emulatedKernel(generateFusedForwardMma(spec));
      if (emulated.workgroupBytes > ctx.limits.maxComputeWorkgroupStorageSize) throw new Error(`case needs ${emulated.workgroupBytes} bytes of workgroup memory`);
      await ctx.dispatch([fusedForwardCommand(ctx, emulated, problem, g, fusedForwardDispatch(problem, c.config.queryTile))], 'mma emulated');
      expectClose(await ctx.read(g.output), ref.out, 1e-2, 'output');
      expectClose(await ctx.read(g.logsumexp), ref.lse, 1e-3, 'logsumexp');
      for (const t of [g.query, g.key, g.value, g.output, g.logsumexp, g.rpb]) if (t) ctx.releaseTensor(t);
    });
  }
});

describe('tensor-core (mma) forward on host tensors with a given config (the umbrella\'s tuned configs)', () => {
  it('uploads, runs the config, reads back: matches the CPU reference (emulated on this adapter)', async () => {
    const ctx = emulatingTensorCoreView(await gpuContext());
    const q = randn([1, 12, 14, 2, 16], 'float16', 31);
    const k = randn([1, 12, 14, 2, 16], 'float16', 32);
    const v = randn([1, 12, 14, 2, 16], 'float16', 33);
    const ref = { out: tensor([1, 12, 14, 2, 16], 'float16'), lse: tensor([1, 12, 14, 2], 'float32') };
    cpuFusedForward(2, { query: q, key: k, value: v, output: ref.out, logsumexp: ref.lse, kernelSize: [5, 7] });
    const out = tensor([1, 12, 14, 2, 16], 'float16');
    const lse = tensor([1, 12, 14, 2], 'float32');
    // Not the default (16-key chunks, 4 subgroups): 32-key chunks with 2 subgroups.
    await fusedForwardMmaOnHost(ctx, 2, { query: q, key: k, value: v, output: out, logsumexp: lse, kernelSize: [5, 7] }, { path: 'mma', queryTile: [4, 8], keyChunk: 32, subgroups: 2 });
    expectClose(out, ref.out, 1e-2, 'output');
    expectClose(lse, ref.lse, 1e-3, 'logsumexp');
  });
  it('refuses a config that cannot run before uploading anything, naming the rule', async () => {
    const ctx = emulatingTensorCoreView(await gpuContext());
    const t = tensor([1, 12, 14, 2, 16], 'float16');
    const run = fusedForwardMmaOnHost(ctx, 2, { query: t, key: t, value: t, output: tensor([1, 12, 14, 2, 16], 'float16'), kernelSize: 5 }, { path: 'mma', queryTile: [8, 8], keyChunk: 32, subgroups: 2 });
    await expect(run).rejects.toThrow(/na2d_forward: tensor-core \(mma\) config cannot run: query tile \[8, 8\] must have 32 queries \(16 per subgroup\)/);
    await expect(run).rejects.toBeInstanceOf(NattenArgumentError);
  });
});

describe('keyBoxRowsBound (where the kernels may decode box indices by float reciprocal)', () => {
  it('is at least every query tile\'s union key box, for every 1-D length to 40, window, dilation, stride and causal choice', () => {
    let checked = 0;
    for (const p of axisGrid({ maxLength: 40, minKernel: 1 })) {
      const { length: L, kernelSize: K, dilation: d, stride: st, causal } = p;
      for (const t of [16, 32]) {
        let widest = 0;
        for (let g = 0; g < d; g++) {
          const n = Math.ceil((L - g) / d);
          for (let qf = 0; qf < n; qf += t) {
            let lo = Number.POSITIVE_INFINITY;
            let hi = 0;
            for (let i = qf; i < Math.min(qf + t, n); i++) {
              const w = axisWindow(i * d + g, p);
              lo = Math.min(lo, (w.start - g) / d);
              hi = Math.max(hi, (w.start - g) / d + w.count);
            }
            widest = Math.max(widest, hi - lo);
          }
        }
        const bound = keyBoxRowsBound({ spatial: [L], params: { kernelSize: [K], dilation: [d], stride: [st], isCausal: [causal] } } as unknown as FusedProblem, [t]);
        expect(bound, `L=${L} K=${K} d=${d} stride=${st} causal=${causal} tile=${t}`).toBeGreaterThanOrEqual(widest);
        checked++;
      }
    }
    expect(checked).toBeGreaterThan(10000);
  });
});
