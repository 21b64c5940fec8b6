import { checkFusedBackward, type FusedBackwardArgs, NattenArgumentError, NattenUnsupportedError, randn, type Tensor, type TensorLike, tensor, toFloat64Values } from '@natten-web/core';
import { fusedBackward as cpuFusedBackward, fusedForward as cpuFusedForward } from '@natten-web/cpu';
import { FUSED_BACKWARD_TILES } from '@natten-web/wgsl';
import { afterAll, describe, expect, it } from 'vitest';
import { checkFusedBackwardMma, defaultBackwardMma, defaultMmaBackwardConfig, fusedBackward, fusedBackwardMma, fusedBackwardMmaOnHost, type GpuTensor, type MmaBackwardConfig, mmaBackwardProblemFit } from '../src/index.ts';
import { tensorFromValues } from '@natten-web/testkit';
import { type EmulatedProblem, emulatedSizes, emulatingTensorCoreView } from '@natten-web/testkit';
import { expectClose } from './expect-close.ts';
import { fakeTensorCoreContext } from './fake-tensor-core.ts';
import { gpuContext } from './setup.ts';

afterAll(async () => (await gpuContext()).destroy());

interface Case extends EmulatedProblem {
  /** Relative positional bias, with d_rpb unless `noGradRpb`. */
  readonly rpb?: boolean;
  readonly noGradRpb?: boolean;
  readonly stride?: number[];
  /** float32 runs the split (f16 hi and lo halves), checked at float32's tolerance; absent = float16. */
  readonly dtype?: 'float32';
  /** Q and K, V, and dO times these (the split's per-tensor scales); the tolerance is then relative to each gradient's largest entry. */
  readonly magnitudes?: readonly [number, number, number];
  /** The backward reads an output this many times the forward's (as a merged output, with extra KV tokens, can exceed V). */
  readonly outputScale?: number;
  readonly config: { queryTile: number[]; querySubgroups: 2 | 4 | 8; keyTile: number[]; keySubgroups: 2 | 4 | 8; chunk?: 16 | 32; tightScratch?: boolean; dqSharedScratch?: boolean; dqDsOverV?: boolean; dqHeadSplit?: boolean; dkvHeadSplit?: boolean; dqPadS?: boolean; dkvPadS?: boolean; dqWideS?: boolean; dkvWideS?: boolean; dkvWideFirst?: boolean; dqWideLoads?: boolean; dkvWideLoads?: boolean; dkvLeanScratch?: boolean };
}

/** `t` times `s`, rounded to the tensor's dtype. */
function scaled(t: Tensor, s: number): Tensor {
  return tensorFromValues(t.shape, t.dtype, toFloat64Values(t).map((x) => x * s));
}

describe('tensor-core (mma) backward', () => {
  it('fits float16 and float32 (the split) problems whose head dims are multiples of 16, rpb included', () => {
    const fit = (dtype: 'float16' | 'float32' | 'float64', dim: number, rpb: boolean) => {
      const t = tensor([1, 32, 2, dim], dtype);
      const l = tensor([1, 32, 2], 'float32');
      const bias = rpb ? tensor([2, 13], dtype) : null;
      const p = checkFusedBackward('na1d_backward', 1, { query: t, key: t, value: t, output: t, gradOutput: t, logsumexp: l, gradQuery: t, gradKey: t, gradValue: t, kernelSize: 7, rpb: bias }, FUSED_BACKWARD_TILES);
      return mmaBackwardProblemFit(p);
    };
    expect(fit('float32', 64, false)).toBeUndefined();
    expect(fit('float32', 64, true)).toBeUndefined();
    expect(fit('float64', 64, false)).toMatch(/the tensor-core \(mma\) backward needs float16 or float32 tensors, not float64/);
    expect(fit('float16', 40, false)).toMatch(/head dims 40\/40 are not multiples of 16/);
    expect(fit('float16', 64, true)).toBeUndefined();
    expect(fit('float16', 64, false)).toBeUndefined();
  });
  it('says why it cannot run on this adapter, before any GPU work', async () => {
    const ctx = await gpuContext();
    if (ctx.features.has('chromium-experimental-subgroup-matrix')) return;
    const t = ctx.createTensor([1, 32, 2, 16], 'float16');
    const l = ctx.createTensor([1, 32, 2], 'float32');
    const run = fusedBackwardMma(ctx, 1, { query: t, key: t, value: t, output: t, gradOutput: t, logsumexp: l, gradQuery: t, gradKey: t, gradValue: t, kernelSize: 7 });
    await expect(run).rejects.toThrow(/na1d_backward: tensor-core \(mma\) backward unavailable: no 'chromium-experimental-subgroup-matrix' feature/);
    await expect(run).rejects.toBeInstanceOf(NattenUnsupportedError);
    ctx.releaseTensor(t);
    ctx.releaseTensor(l);
  });
  it('is what fusedBackward runs without a config on a tensor-core adapter, for float16 and float32 problems it fits', () => {
    const ctx = fakeTensorCoreContext();
    const args = (o: { dtype?: 'float16' | 'float32'; dim?: number; rpb?: boolean; stride?: number } = {}): FusedBackwardArgs<TensorLike> => {
      const dtype = o.dtype ?? 'float16';
      const t = tensor([1, 64, 64, 4, o.dim ?? 64], dtype);
      const l = tensor([1, 64, 64, 4], 'float32');
      const r = o.rpb ? tensor([4, 13, 13], dtype) : null;
      return { query: t, key: t, value: t, output: t, gradOutput: t, logsumexp: l, gradQuery: t, gradKey: t, gradValue: t, gradRpb: r, rpb: r, kernelSize: 7, ...(o.stride ? { stride: o.stride } : {}) };
    };
    const routed = fusedBackward.route(ctx, 2, args());
    expect(routed).toEqual({ path: 'mma', queryTile: [8, 8], querySubgroups: 4, keyTile: [4, 8], keySubgroups: 2, chunk: 16, tightScratch: true, dqSharedScratch: true, dqDsOverV: true, dqWideS: true, dkvWideFirst: true, dkvWideLoads: true });
    const problem = checkFusedBackward('na2d_backward', 2, args(), FUSED_BACKWARD_TILES);
    expect(routed).toEqual(defaultBackwardMma(ctx, problem));
    // Strides too (session 19, H200: checked, and 3.6-6.2x faster than the plain backward), and rpb with d_rpb,
    // strided or not (session 20: 2.4-4.8x faster than the plain backward with the same d_rpb passes).
    expect(fusedBackward.route(ctx, 2, args({ stride: 2 }))).toMatchObject({ path: 'mma' });
    expect(fusedBackward.route(ctx, 2, args({ rpb: true }))).toMatchObject({ path: 'mma' });
    expect(fusedBackward.route(ctx, 2, args({ rpb: true, stride: 2 }))).toMatchObject({ path: 'mma' });
    // float32 as the split (its kernels' keys say so).
    expect(fusedBackward.route(ctx, 2, args({ dtype: 'float32' }))).toMatchObject({ path: 'mma' });
    expect(checkFusedBackwardMma(ctx, 2, args({ dtype: 'float32' })).kernels.dkv.key).toContain('"split":true');
    expect(checkFusedBackwardMma(ctx, 2, args()).kernels.dkv.key).not.toContain('split');
    const plain: [string, FusedBackwardArgs<TensorLike>][] = [
      ['head dim 256 (not timed)', args({ dim: 256 })],
      ['given tiles', { ...args(), queryTileSize: [8, 8], keyTileSize: [8, 8] }],
      ['given lanes', { ...args(), lanes: 2 }],
      ['given num_splits_key', { ...args(), numSplitsKey: 1 }],
      ['given compute_delta_with_torch', { ...args(), computeDeltaWithTorch: false }],
    ];
    for (const [name, a] of plain) expect(fusedBackward.route(ctx, 2, a), name).toBeUndefined();
    // Without subgroup matrices every call takes the plain path.
    expect(fusedBackward.route({ ...ctx, features: new Set(['shader-f16', 'subgroups']) } as unknown as typeof ctx, 2, args())).toBeUndefined();
  });
  it('chooses per kernel: 16-row chunks; small windows unpadded with dkv 2 subgroups and dq 4 with one scratch; else dq 8 (4 at head dim 128), dkv 4, 8 on the largest windows, padded, dkv lean where that raises its residency; tiles of the smallest key box', () => {
    const ctx = fakeTensorCoreContext();
    const config = (spatial: number[], kernelSize: number[], heads: number, dim: number, dtype: 'float16' | 'float32' = 'float16') => {
      const t = tensor([1, ...spatial, heads, dim], dtype);
      const l = tensor([1, ...spatial, heads], 'float32');
      const rank = spatial.length as 1 | 2 | 3;
      return defaultMmaBackwardConfig(ctx, checkFusedBackward('x', rank, { query: t, key: t, value: t, output: t, gradOutput: t, logsumexp: l, gradQuery: t, gradKey: t, gradValue: t, kernelSize }, FUSED_BACKWARD_TILES));
    };
    // As swept on an H200 (session 9, each kernel alone): 2-D K=7 dq 8x8 with 4 subgroups and dkv 4x8 with 2, both
    // with unpadded rows (dq 199 -> 194 us, dkv 418 -> 324 us); 3-D likewise (dq 354 -> 311 us, dkv 1060 -> 852 us); 2-D K=15 (225
    // keys) takes the same rule. FLUX-like (6400 keys, head dim 128): dq with 4, dkv with 8, padded.
    // Session 10: dq with S and dP through one scratch in 2-D and 3-D (the dq kernel alone: 2-D K=7 192.1 -> 155.9
    // us, 3-D 309.1 -> 299.6 us).
    // Session 25: the dq kernel's dS over the staged V rows, and the 2 KiB that frees spent on scratch rows of 24
    // floats (4 workgroups per SM either way; the dq kernel alone 2-D K=7 109.1 -> 102.3 us, 3-D 214.4 -> 196.9,
    // 1-D 4096 30.9 -> 28.5); the dkv kernel keeps its padded rows (widened it would lose a workgroup per SM).
    // Session 26: the dkv kernel's 16-byte Q/dO staging loads everywhere in float16, the dq kernel's in 3-D (each
    // kernel alone: dkv 2-D K=7 153.0 -> 148.5 us, 3-D 329.2 -> 314.8, 1-D 4096 43.1 -> 42.3; dq 3-D 199.6 -> 193.6,
    // slower in 2-D and on the 1-D causal problem); and the dkv kernel's S^T rows alone widened in place of its padded
    // rows (the same memory; 2-D K=7 149.4 -> 146.0 us, 3-D 316.1 -> 308.5, 1-D 4096 42.0 -> 40.9).
    expect(config([128, 128], [7, 7], 8, 64)).toEqual({ path: 'mma', queryTile: [8, 8], querySubgroups: 4, keyTile: [4, 8], keySubgroups: 2, chunk: 16, tightScratch: true, dqSharedScratch: true, dqDsOverV: true, dqWideS: true, dkvWideFirst: true, dkvWideLoads: true });
    expect(config([256, 256], [15, 15], 16, 64)).toMatchObject({ querySubgroups: 4, keySubgroups: 2, chunk: 16, tightScratch: true, dqSharedScratch: true });
    expect(config([256, 256], [80, 80], 24, 128)).toEqual({ path: 'mma', queryTile: [8, 8], querySubgroups: 4, keyTile: [8, 16], keySubgroups: 8, chunk: 16, dqWideS: true, dkvWideS: true, dkvWideLoads: true });
    expect(config([16, 32, 32], [3, 7, 7], 8, 64)).toEqual({ path: 'mma', queryTile: [2, 4, 8], querySubgroups: 4, keyTile: [2, 4, 4], keySubgroups: 2, chunk: 16, tightScratch: true, dqSharedScratch: true, dqDsOverV: true, dqWideS: true, dkvWideFirst: true, dkvWideLoads: true, dqWideLoads: true });
    // 1-D small windows: dkv 2, unpadded (1-D 4096, session 10: dkv 77.6 us with 4 padded, 88.4 with 2 padded, 71.8
    // with 2 unpadded); dq 4 with one scratch (session 11: 37.5 us against 46.9 with 2 and two scratches).
    expect(config([4096], [127], 8, 64)).toEqual({ path: 'mma', queryTile: [64], querySubgroups: 4, keyTile: [32], keySubgroups: 2, chunk: 16, tightScratch: true, dqSharedScratch: true, dqDsOverV: true, dqWideS: true, dkvWideFirst: true, dkvWideLoads: true });
    // Not at head dims 32 (its own defaults, untimed with this pair) and 128, nor in float32 (no dS over V there).
    expect(config([128, 128], [7, 7], 8, 32)?.dqDsOverV).toBeUndefined();
    expect(config([64, 64], [9, 9], 8, 128)?.dqDsOverV).toBeUndefined();
    // 2047 keys at head dim 64: dq with 8, dkv with 4 (8 measured slower for dkv there), padded, dq with one scratch
    // (session 11, the whole backward: 6.71 -> 6.14 ms); dkv's lean layout, which lifts it from 2 to 3 workgroups
    // per SM (session 17: 4.151 -> 3.837 ms). FLUX-like's dkv stays at 1 per SM either way, so it keeps two scratches.
    // Both kernels' scratch rows of 24 floats there, free of residency (session 25, each kernel alone with the
    // default's text so widened: dq 1490 -> 1266 us, dkv 2345 -> 2147); where the widening costs a workgroup per SM
    // (every small-window default above) the padded rows stay (1-D 4096 dq 31.0 -> 41.9 us with them widened).
    expect(config([32768], [2047], 8, 64)).toEqual({ path: 'mma', queryTile: [128], querySubgroups: 8, keyTile: [64], keySubgroups: 4, chunk: 16, dqSharedScratch: true, dkvLeanScratch: true, dqWideS: true, dkvWideS: true, dkvWideLoads: true });
    expect(config([32768], [2047], 8, 64, 'float32')).not.toHaveProperty('dqWideS');
    // Tiles ranked by the keys of all their boxes, so a tile that overruns a small extent pays for its empty rows
    // (session 18: by the box alone 3-D 8x32x32 took dq tiles of 64x1x1, 8 real queries of 64, and its backward ran
    // 628 us; with 2x4x8, 238 us). dq with 2 subgroups where 4 give fewer than MMA_F16_MIN_WORKGROUPS workgroups
    // (2-D 56x56 K=7 4 heads 35.9 -> 31.0 us, 28x28 8 heads 33.6 -> 29.1, 14x14 16 heads 33.4 -> 28.9).
    expect(config([8, 32, 32], [3, 5, 5], 8, 64)).toMatchObject({ queryTile: [2, 4, 8], querySubgroups: 4, keyTile: [2, 4, 4], keySubgroups: 2 });
    expect(config([56, 56], [7, 7], 4, 32)).toMatchObject({ queryTile: [4, 8], querySubgroups: 2, keyTile: [4, 8], keySubgroups: 2, tightScratch: true, dqSharedScratch: true });
    expect(config([28, 28], [7, 7], 8, 32)).toMatchObject({ queryTile: [4, 8], querySubgroups: 2, keyTile: [4, 8], keySubgroups: 2 });
    expect(config([14, 14], [7, 7], 16, 32)).toMatchObject({ queryTile: [2, 16], querySubgroups: 2, keyTile: [2, 16], keySubgroups: 2 });
    // Head dims up to MMA_F16_NARROW_HEAD_DIM in 1-D and 2-D, windows up to 128 keys: dkv's lean layout too (session
    // 19, head dim 32: 2-D 128x128 K=7 189.6 -> 182.0 us, 1-D L=4096 K=127 57.7 -> 54.5); not on 2-D K=13 (70.3 ->
    // 73.0) nor in 3-D (96.5 -> 100.3), nor at head dims 64 (above) and 128.
    expect(config([128, 128], [7, 7], 8, 32)).toMatchObject({ querySubgroups: 4, keySubgroups: 2, tightScratch: true, dkvLeanScratch: true });
    expect(config([4096], [127], 8, 32)).toMatchObject({ dkvLeanScratch: true });
    for (const [spatial, k, d] of [[[32, 32], [13, 13], 32], [[16, 16, 16], [5, 5, 5], 32], [[64, 64], [9, 9], 128]] as const) {
      expect(config([...spatial], [...k], 8, d)?.dkvLeanScratch).toBeUndefined();
    }
    // There dq takes 2 subgroups instead (2-D 32x32 K=13 16 heads 69.7-70.3 -> 63.4-64.7 us, 3-D 16^3 K=5 4 heads
    // 96.0-96.5 -> 87.0-91.0); with the lean layout it keeps 4 (above), and so does head dim 64.
    expect(config([32, 32], [13, 13], 16, 32)).toMatchObject({ querySubgroups: 2, keySubgroups: 2, tightScratch: true, dqSharedScratch: true });
    expect(config([16, 16, 16], [5, 5, 5], 4, 32)).toMatchObject({ querySubgroups: 2, keySubgroups: 2 });
    expect(config([32, 32], [13, 13], 16, 64)).toMatchObject({ querySubgroups: 4 });
    // Not the lean layout below MMA_F16_MIN_WORKGROUPS (2-D 28x28 K=7 8 heads 30.0 -> 31.9 us with it).
    expect(config([28, 28], [7, 7], 8, 32)?.dkvLeanScratch).toBeUndefined();
    // float32 (the split) takes float16's rules, except dq with 2 subgroups in 2-D and 3-D on windows up to 160 keys
    // (session 24, the dq kernel alone: 2-D K=7 224.6 -> 205.4 us, 3-D 420.9 -> 385.8); not on 2-D K=13 (169 keys)
    // nor in 1-D.
    expect(config([128, 128], [7, 7], 8, 64, 'float32')).toEqual({ path: 'mma', queryTile: [4, 8], querySubgroups: 2, keyTile: [4, 8], keySubgroups: 2, chunk: 16, tightScratch: true, dqSharedScratch: true, dqPadS: true, dkvPadS: true });
    expect(config([16, 32, 32], [3, 7, 7], 8, 64, 'float32')).toMatchObject({ queryTile: [2, 4, 4], querySubgroups: 2, keyTile: [2, 4, 4], keySubgroups: 2 });
    expect(config([128, 128], [13, 13], 8, 64, 'float32')).toMatchObject({ querySubgroups: 4 });
    expect(config([4096], [127], 8, 64, 'float32')).toMatchObject({ queryTile: [64], querySubgroups: 4, keyTile: [32], keySubgroups: 2 });
    // 2047 keys: as float16 (dq 8 subgroups, dkv 4 with its lean layout; dq alone 3007 us, with 4 subgroups 2919).
    expect(config([32768], [2047], 8, 64, 'float32')).toMatchObject({ querySubgroups: 8, keySubgroups: 4, dkvLeanScratch: true });
  });
  it('names the rule a given config breaks (which kernel, which rule or limit), before any GPU work', () => {
    const ctx = fakeTensorCoreContext();
    const t = tensor([1, 32, 32, 2, 128], 'float16');
    const l = tensor([1, 32, 32, 2], 'float32');
    const args: FusedBackwardArgs<TensorLike> = { query: t, key: t, value: t, output: t, gradOutput: t, logsumexp: l, gradQuery: t, gradKey: t, gradValue: t, kernelSize: 7 };
    const base: MmaBackwardConfig = { path: 'mma', queryTile: [8, 8], querySubgroups: 4, keyTile: [4, 8], keySubgroups: 2, chunk: 16 };
    const refused = (config: MmaBackwardConfig, message: RegExp): void => {
      expect(() => checkFusedBackwardMma(ctx, 2, args, config)).toThrow(message);
      expect(() => checkFusedBackwardMma(ctx, 2, args, config)).toThrow(NattenArgumentError);
    };
    refused({ ...base, queryTile: [4, 8], dqHeadSplit: true, dqSharedScratch: true }, /na2d_backward: tensor-core \(mma\) backward config cannot run: its dq kernel: headSplit does not combine with sharedScratch, dsOverV or leanScratch/);
    refused({ ...base, keyTile: [2, 8], dkvHeadSplit: true, dkvLeanScratch: true }, /its dkv kernel: headSplit does not combine with sharedScratch, dsOverV or leanScratch/);
    refused({ ...base, keyTile: [8, 8] }, /its dkv kernel: tile \[8, 8\] must have 32 rows \(16 per subgroup\)/);
    // Head dim 128 with 8 subgroups and 32-row chunks: the dkv kernel's staging, scratches and P/dS pass 48 KiB.
    refused({ ...base, keyTile: [8, 16], keySubgroups: 8, chunk: 32 }, /its dkv kernel needs \d+ bytes of workgroup memory, over this device's 49152/);
    expect(checkFusedBackwardMma(ctx, 2, args, base).config).toEqual(base);
    // d_rpb's dS scratch (1 x 1024 tokens x 2 heads x 49 slots x 4 bytes = 401408) over a device's binding limit.
    const bias = tensor([2, 13, 13], 'float16');
    const small = { ...ctx, limits: { ...ctx.limits, maxStorageBufferBindingSize: 400_000 } } as typeof ctx;
    expect(() => checkFusedBackwardMma(small, 2, { ...args, rpb: bias, gradRpb: bias }, base)).toThrow(
      /na2d_backward: the dsScratch scratch buffer needs 401408 bytes, over this device's maxStorageBufferBindingSize of 400000 \(d_rpb keeps batch x tokens x heads x prod\(kernel_size\) floats of dS\); pass gradRpb = null/,
    );
    expect(checkFusedBackwardMma(small, 2, { ...args, rpb: bias, gradRpb: null }, base).config).toEqual(base);
  });
  it('compiles dilation and stride 1 into both kernels where the problem has them, except causal problems', () => {
    const ctx = fakeTensorCoreContext();
    const kernels = (o: { dilation?: number; isCausal?: boolean }) => {
      const t = tensor([1, 64, 64, 2, 64], 'float16');
      const l = tensor([1, 64, 64, 2], 'float32');
      const args: FusedBackwardArgs<TensorLike> = { query: t, key: t, value: t, output: t, gradOutput: t, logsumexp: l, gradQuery: t, gradKey: t, gradValue: t, kernelSize: 7, ...o };
      const k = checkFusedBackwardMma(ctx, 2, args).kernels;
      return [k.dq.code, k.dkv.code];
    };
    for (const code of kernels({})) expect(code).not.toMatch(/params\.(dil|str)_\d/);
    // H200, session 15: the 1-D K=2047 causal backward ran slower with it (4.12 -> 4.24 ms).
    for (const code of kernels({ isCausal: true })) expect(code).toMatch(/params\.dil_0/);
    for (const code of kernels({ dilation: 2 })) expect(code).toMatch(/params\.dil_0/);
    // A config's dqUnitSteps / dkvUnitSteps decide per kernel (to time which kernel the causal rule is for).
    const t = tensor([1, 64, 64, 2, 64], 'float16');
    const l = tensor([1, 64, 64, 2], 'float32');
    const args: FusedBackwardArgs<TensorLike> = { query: t, key: t, value: t, output: t, gradOutput: t, logsumexp: l, gradQuery: t, gradKey: t, gradValue: t, kernelSize: 7, isCausal: true };
    const def = checkFusedBackwardMma(ctx, 2, args).config;
    const forced = checkFusedBackwardMma(ctx, 2, args, { ...def, dqUnitSteps: true }).kernels;
    expect(forced.dq.code).not.toMatch(/params\.dil_0/);
    expect(forced.dkv.code).toMatch(/params\.dil_0/);
    const off = checkFusedBackwardMma(ctx, 2, { ...args, isCausal: false }, { ...def, dkvUnitSteps: false }).kernels;
    expect(off.dq.code).not.toMatch(/params\.dil_0/);
    expect(off.dkv.code).toMatch(/params\.dil_0/);
  });
  it('routes nothing on this adapter unless it has subgroup matrices', async () => {
    const ctx = await gpuContext();
    if (ctx.features.has('chromium-experimental-subgroup-matrix')) return;
    const t = tensor([1, 32, 2, 16], 'float16');
    const l = tensor([1, 32, 2], 'float32');
    expect(fusedBackward.route(ctx, 1, { query: t, key: t, value: t, output: t, gradOutput: t, logsumexp: l, gradQuery: t, gradKey: t, gradValue: t, kernelSize: 7 })).toBeUndefined();
  });
});

describe('tensor-core (mma) backward, emulated on this adapter, against the CPU reference', () => {
  const cases: Case[] = [
    { name: '1-D L=40 K=7', spatial: [40], kernelSize: [7], dim: 16, config: { queryTile: [32], querySubgroups: 2, keyTile: [32], keySubgroups: 2 } },
    // 16-row chunks (opt-in; on the H200 8 subgroups fit 48 KiB with them): GQA across the dkv walk's heads, causal, dilation.
    { name: '16-row chunks: 1-D L=150 K=33 dilation 2 causal, GQA 2/1, 4 subgroups', spatial: [150], kernelSize: [33], heads: 2, headsKv: 1, dim: 16, dilation: [2], causal: [true], config: { queryTile: [64], querySubgroups: 4, keyTile: [64], keySubgroups: 4, chunk: 16 } },
    // The default's dq above 512 keys at head dims up to 64: 8 subgroups (128 rows), 16-row chunks.
    { name: '16-row chunks: 1-D L=300 K=33 causal, dq with 8 subgroups, dkv with 4', spatial: [300], kernelSize: [33], dim: 16, causal: [true], config: { queryTile: [128], querySubgroups: 8, keyTile: [64], keySubgroups: 4, chunk: 16 } },
    { name: '16-row chunks: 2-D 14x17 K=5x7, Dv=32, 2 subgroups', spatial: [14, 17], kernelSize: [5, 7], dim: 16, dimV: 32, config: { queryTile: [4, 8], querySubgroups: 2, keyTile: [8, 4], keySubgroups: 2, chunk: 16 } },
    // Unpadded scratch and P/dS rows (opt-in tightScratch): both kernels, GQA, Dv != D, causal, 3-D.
    { name: 'tight scratch: 2-D 14x17 K=5x7, GQA 4/2 heads, Dv=32, 16-row chunks', spatial: [14, 17], kernelSize: [5, 7], heads: 4, headsKv: 2, dim: 16, dimV: 32, config: { queryTile: [4, 8], querySubgroups: 2, keyTile: [8, 8], keySubgroups: 4, chunk: 16, tightScratch: true } },
    { name: 'tight scratch, the small-window default: 2-D 16x18 K=7x5 at head dim 64, dq 4 subgroups, dkv 2', spatial: [16, 18], kernelSize: [7, 5], dim: 64, config: { queryTile: [8, 8], querySubgroups: 4, keyTile: [4, 8], keySubgroups: 2, chunk: 16, tightScratch: true } },
    { name: 'tight scratch: 3-D 5x7x9 K=3x3x5 causal on axis 2, 32-row chunks', spatial: [5, 7, 9], kernelSize: [3, 3, 5], dim: 32, causal: [false, false, true], config: { queryTile: [2, 4, 4], querySubgroups: 2, keyTile: [2, 4, 4], keySubgroups: 2, chunk: 32, tightScratch: true } },
    // The dq kernel's S and dP through one scratch (dqSharedScratch, the small-window default in 2-D and 3-D): GQA,
    // Dv != D, causal, 3-D, 32-row chunks, padded rows. Reading S after dP is stored over it fails all three.
    { name: 'dq one scratch: 2-D 14x17 K=5x7, GQA 4/2 heads, Dv=32, 16-row chunks, unpadded', spatial: [14, 17], kernelSize: [5, 7], heads: 4, headsKv: 2, dim: 16, dimV: 32, config: { queryTile: [4, 8], querySubgroups: 2, keyTile: [8, 8], keySubgroups: 4, chunk: 16, tightScratch: true, dqSharedScratch: true } },
    { name: 'dq one scratch: 2-D 16x18 K=7x5 at head dim 64, dq 4 subgroups, dkv 2 (the small-window default)', spatial: [16, 18], kernelSize: [7, 5], dim: 64, config: { queryTile: [8, 8], querySubgroups: 4, keyTile: [4, 8], keySubgroups: 2, chunk: 16, tightScratch: true, dqSharedScratch: true } },
    { name: 'dq one scratch: 3-D 5x7x9 K=3x3x5 causal on axis 2, 32-row chunks, padded', spatial: [5, 7, 9], kernelSize: [3, 3, 5], dim: 32, causal: [false, false, true], config: { queryTile: [2, 4, 4], querySubgroups: 2, keyTile: [2, 4, 4], keySubgroups: 2, chunk: 32, dqSharedScratch: true } },
    // Scratch rows padded, P/dS rows exact (dqPadS, dkvPadS; the small-window default where free): the default's
    // shape, GQA, Dv != D, 3-D causal with 32-row chunks, each kernel alone.
    { name: 'scratch padded: 2-D 16x18 K=7x5 at head dim 64, the small-window default', spatial: [16, 18], kernelSize: [7, 5], dim: 64, config: { queryTile: [8, 8], querySubgroups: 4, keyTile: [4, 8], keySubgroups: 2, chunk: 16, tightScratch: true, dqSharedScratch: true, dqPadS: true, dkvPadS: true } },
    { name: 'scratch padded: 2-D 14x17 K=5x7, GQA 4/2 heads, Dv=32, dq two scratches, dkv only', spatial: [14, 17], kernelSize: [5, 7], heads: 4, headsKv: 2, dim: 16, dimV: 32, config: { queryTile: [4, 8], querySubgroups: 2, keyTile: [8, 8], keySubgroups: 4, chunk: 16, tightScratch: true, dkvPadS: true } },
    { name: 'scratch padded: 3-D 5x7x9 K=3x3x5 causal on axis 2, 32-row chunks, dq only', spatial: [5, 7, 9], kernelSize: [3, 3, 5], dim: 32, causal: [false, false, true], config: { queryTile: [2, 4, 4], querySubgroups: 2, keyTile: [2, 4, 4], keySubgroups: 2, chunk: 32, tightScratch: true, dqPadS: true } },
    // dq's dS over the staged V rows (opt-in dqDsOverV), with one and with two scratches; GQA, Dv != D, 3-D causal.
    // Writing dS over the K rows instead (which dQ += dS K reads) fails them.
    { name: 'dS over V: 2-D 16x18 K=7x5 at head dim 64, the small-window default plus dS over V', spatial: [16, 18], kernelSize: [7, 5], dim: 64, config: { queryTile: [8, 8], querySubgroups: 4, keyTile: [4, 8], keySubgroups: 2, chunk: 16, tightScratch: true, dqSharedScratch: true, dqDsOverV: true } },
    { name: 'dS over V: 2-D 14x17 K=5x7, GQA 4/2 heads, Dv=32, two scratches', spatial: [14, 17], kernelSize: [5, 7], heads: 4, headsKv: 2, dim: 16, dimV: 32, config: { queryTile: [4, 8], querySubgroups: 2, keyTile: [8, 8], keySubgroups: 4, chunk: 16, tightScratch: true, dqDsOverV: true } },
    { name: 'dS over V: 3-D 5x7x9 K=3x3x5 causal on axis 2, 32-row chunks, padded', spatial: [5, 7, 9], kernelSize: [3, 3, 5], dim: 32, causal: [false, false, true], config: { queryTile: [2, 4, 4], querySubgroups: 2, keyTile: [2, 4, 4], keySubgroups: 2, chunk: 32, dqDsOverV: true } },
    // Two subgroups per 16 rows, each with half the head dims (dqHeadSplit / dkvHeadSplit): GQA, Dv != D, 3-D causal,
    // 32-row chunks, head dim 64 with 4 subgroups. Summing one partial twice instead of the pair's two fails them.
    { name: 'head split, both kernels: 2-D 14x17 K=5x7, GQA 4/2 heads, D=32, Dv=64, 16-row chunks', spatial: [14, 17], kernelSize: [5, 7], heads: 4, headsKv: 2, dim: 32, dimV: 64, config: { queryTile: [4, 8], querySubgroups: 4, keyTile: [4, 8], keySubgroups: 4, chunk: 16, dqHeadSplit: true, dkvHeadSplit: true } },
    { name: 'head split, dkv: 3-D 5x7x9 K=3x3x5 causal on axis 2, head dim 32, 2 subgroups, 32-row chunks, unpadded', spatial: [5, 7, 9], kernelSize: [3, 3, 5], dim: 32, causal: [false, false, true], config: { queryTile: [2, 4, 4], querySubgroups: 2, keyTile: [2, 2, 4], keySubgroups: 2, chunk: 32, tightScratch: true, dkvHeadSplit: true } },
    { name: 'head split at head dim 64: 2-D 12x13 K=9x7, 4 subgroups (32 rows) in both kernels, unpadded', spatial: [12, 13], kernelSize: [9, 7], dim: 64, config: { queryTile: [4, 8], querySubgroups: 4, keyTile: [8, 4], keySubgroups: 4, chunk: 16, tightScratch: true, dqHeadSplit: true, dkvHeadSplit: true } },
    // The dkv walk's box cursor (advanced a chunk per step, without division): a last box width of 2 moves the
    // middle axis 8 rows a step, past its width of 6, so the carry loop runs more than once; two query heads per KV
    // head reset it.
    // The dkv kernel's lean layout (opt-in dkvLeanScratch): one f32 scratch, P^T then dS^T through one f16 array.
    { name: 'dkv lean: 1-D L=300 K=127 at head dim 64, 4 subgroups (64-key tiles), padded scratch', spatial: [300], kernelSize: [127], dim: 64, config: { queryTile: [64], querySubgroups: 4, keyTile: [64], keySubgroups: 4, chunk: 16, tightScratch: true, dqSharedScratch: true, dqPadS: true, dkvPadS: true, dkvLeanScratch: true } },
    { name: 'dkv lean, the large-window default: 1-D L=700 K=513 causal at head dim 64, dq 8 subgroups, dkv 4, padded', spatial: [700], kernelSize: [513], dim: 64, causal: [true], config: { queryTile: [128], querySubgroups: 8, keyTile: [64], keySubgroups: 4, chunk: 16, dqSharedScratch: true, dkvLeanScratch: true } },
    // Scratch rows of 24 floats (dqWideS, dkvWideS; the large-window float16 default where free): with the lean dkv
    // layout and dq's one scratch (the 1-D causal default's), and with two scratches each, 3-D, GQA, Dv != D.
    { name: 'scratch rows of 24 floats, the large-window default: 1-D L=700 K=513 causal, dq 8 subgroups, dkv 4 lean', spatial: [700], kernelSize: [513], dim: 64, causal: [true], config: { queryTile: [128], querySubgroups: 8, keyTile: [64], keySubgroups: 4, chunk: 16, dqSharedScratch: true, dkvLeanScratch: true, dqWideS: true, dkvWideS: true } },
    { name: 'scratch rows of 24 floats: 3-D 5x7x9 K=3x3x5 causal on axis 2, GQA 4/2 heads, Dv=32, unpadded P/dS rows', spatial: [5, 7, 9], kernelSize: [3, 3, 5], heads: 4, headsKv: 2, dim: 16, dimV: 32, causal: [false, false, true], config: { queryTile: [2, 4, 4], querySubgroups: 2, keyTile: [2, 4, 4], keySubgroups: 2, chunk: 16, tightScratch: true, dqWideS: true, dkvWideS: true } },
    { name: 'dS over V with rows of 24 floats, the small-window default: 2-D 16x18 K=7x5 at head dim 64', spatial: [16, 18], kernelSize: [7, 5], dim: 64, config: { queryTile: [8, 8], querySubgroups: 4, keyTile: [4, 8], keySubgroups: 2, chunk: 16, tightScratch: true, dqSharedScratch: true, dqDsOverV: true, dqWideS: true, dkvPadS: true } },
    { name: 'dS over V with rows of 24 floats: 1-D L=300 K=127 at head dim 64, dq two scratches', spatial: [300], kernelSize: [127], dim: 64, config: { queryTile: [64], querySubgroups: 4, keyTile: [32], keySubgroups: 2, chunk: 16, tightScratch: true, dqDsOverV: true, dqWideS: true } },
    { name: 'dkv lean: 2-D 14x17 K=5x7, GQA 4/2 heads, Dv=32, 2 subgroups, unpadded', spatial: [14, 17], kernelSize: [5, 7], heads: 4, headsKv: 2, dim: 16, dimV: 32, config: { queryTile: [4, 8], querySubgroups: 2, keyTile: [4, 8], keySubgroups: 2, chunk: 16, tightScratch: true, dkvLeanScratch: true } },
    { name: 'dkv lean: 3-D 5x7x9 K=3x3x5 causal on axis 2, 4 subgroups, 32-row chunks', spatial: [5, 7, 9], kernelSize: [3, 3, 5], dim: 32, causal: [false, false, true], config: { queryTile: [2, 4, 4], querySubgroups: 2, keyTile: [2, 4, 8], keySubgroups: 4, chunk: 32, dkvLeanScratch: true } },
    // The dq kernel's 16-byte K/V staging loads (opt-in dqWideLoads): one and two loads per staging thread, Dv != D.
    { name: 'dq wide loads: 3-D 5x7x9 K=3x3x5 causal on axis 2, the small-window default, head dim 64', spatial: [5, 7, 9], kernelSize: [3, 3, 5], dim: 64, causal: [false, false, true], config: { queryTile: [2, 4, 8], querySubgroups: 4, keyTile: [2, 4, 4], keySubgroups: 2, chunk: 16, tightScratch: true, dqSharedScratch: true, dqPadS: true, dkvPadS: true, dqWideLoads: true } },
    // The dkv kernel's S^T scratch widened alone (dkvWideFirst): dP^T rows exact (1-D, with wide loads, the 1-D
    // default's layout otherwise) and padded (3-D, GQA, Dv != D).
    { name: 'dkv first scratch widened: 1-D L=300 K=127 at head dim 64, dP^T rows exact, wide loads', spatial: [300], kernelSize: [127], dim: 64, config: { queryTile: [64], querySubgroups: 4, keyTile: [32], keySubgroups: 2, chunk: 16, tightScratch: true, dqSharedScratch: true, dqDsOverV: true, dqWideS: true, dkvWideFirst: true, dkvWideLoads: true } },
    { name: 'dkv first scratch widened: 3-D 5x7x9 K=3x3x5 causal on axis 2, GQA 4/2 heads, Dv=32, dP^T rows padded', spatial: [5, 7, 9], kernelSize: [3, 3, 5], heads: 4, headsKv: 2, dim: 16, dimV: 32, causal: [false, false, true], config: { queryTile: [2, 4, 4], querySubgroups: 2, keyTile: [2, 4, 4], keySubgroups: 2, chunk: 16, tightScratch: true, dkvPadS: true, dkvWideFirst: true } },
    // The dkv kernel's 16-byte Q/dO staging loads (dkvWideLoads): a guarded part, one, two and four loads per staging thread, Dv != D,
    // GQA (each query head's walk), partial last chunk; 1-D without the coordinate table, 2-D with it.
    { name: 'dkv wide loads: 1-D L=150 K=33 dilation 2, GQA 2/1, D=16 (half the staging threads load), Dv=64, 2 subgroups', spatial: [150], kernelSize: [33], heads: 2, headsKv: 1, dim: 16, dimV: 64, dilation: [2], config: { queryTile: [32], querySubgroups: 2, keyTile: [32], keySubgroups: 2, chunk: 16, tightScratch: true, dkvPadS: true, dkvWideLoads: true } },
    { name: 'dkv wide loads: 2-D 11x13 K=5x7 causal on axis 0, head dim 64, 32-row chunks (four loads per staging thread)', spatial: [11, 13], kernelSize: [5, 7], dim: 64, causal: [true, false], config: { queryTile: [4, 8], querySubgroups: 2, keyTile: [4, 8], keySubgroups: 2, chunk: 32, dkvWideLoads: true } },
    { name: 'dq wide loads: 1-D L=150 K=33 dilation 2, GQA 2/1, D=32, Dv=64, 2 subgroups', spatial: [150], kernelSize: [33], heads: 2, headsKv: 1, dim: 32, dimV: 64, dilation: [2], config: { queryTile: [32], querySubgroups: 2, keyTile: [32], keySubgroups: 2, chunk: 16, dqWideLoads: true } },
    { name: 'box cursor: 3-D 6x7x5 K=3x3x2, key tile 8x4x1, GQA 2/1', spatial: [6, 7, 5], kernelSize: [3, 3, 2], heads: 2, headsKv: 1, dim: 16, config: { queryTile: [2, 4, 4], querySubgroups: 2, keyTile: [8, 4, 1], keySubgroups: 2, chunk: 16 } },
    { name: '1-D L=90 K=17 dilation 2 causal', spatial: [90], kernelSize: [17], dim: 16, dilation: [2], causal: [true], config: { queryTile: [32], querySubgroups: 2, keyTile: [32], keySubgroups: 2 } },
    { name: '2-D 14x17 K=5x7, GQA 4/2 heads, Dv=32', spatial: [14, 17], kernelSize: [5, 7], heads: 4, headsKv: 2, dim: 16, dimV: 32, config: { queryTile: [4, 8], querySubgroups: 2, keyTile: [8, 4], keySubgroups: 2 } },
    { name: '2-D 18x13 K=4x5 dilation 2x1 causal on axis 0, batch 2', spatial: [18, 13], kernelSize: [4, 5], dim: 16, dilation: [2, 1], causal: [true, false], batch: 2, config: { queryTile: [4, 8], querySubgroups: 2, keyTile: [4, 8], keySubgroups: 2 } },
    { name: '2-D 16x18 K=7x5 at head dim 64 (4 fragments per row)', spatial: [16, 18], kernelSize: [7, 5], dim: 64, config: { queryTile: [4, 8], querySubgroups: 2, keyTile: [8, 4], keySubgroups: 2 } },
    { name: '3-D 5x7x9 K=3x3x5, dq with 4 subgroups', spatial: [5, 7, 9], kernelSize: [3, 3, 5], dim: 16, config: { queryTile: [2, 4, 8], querySubgroups: 4, keyTile: [2, 4, 4], keySubgroups: 2 } },
    { name: '1-D L=90 K=17 dilation 2 causal, GQA 3/1 heads (the dkv walk crosses query heads)', spatial: [90], kernelSize: [17], heads: 3, headsKv: 1, dim: 16, dilation: [2], causal: [true], config: { queryTile: [32], querySubgroups: 2, keyTile: [32], keySubgroups: 2 } },
    // rpb with d_rpb (session 20): the bias in both kernels' P, dS in window order from the dq kernel, the two d_rpb
    // passes (300 and 476 query rows: several blocks of partials). GQA 3/1 (the dkv walk's query head picks the
    // bias), dilation, the head splits, the lean dkv, dS over V, 3-D, rpb with a stride. A bias indexed query minus
    // key in the dkv kernel fails dK and dV; the dS slot counted from the box start fails d_rpb.
    { name: 'rpb: 1-D L=150 K=33 dilation 2, GQA 3/1, batch 2, the default', rpb: true, spatial: [150], kernelSize: [33], heads: 3, headsKv: 1, dim: 16, dilation: [2], batch: 2, config: { queryTile: [64], querySubgroups: 4, keyTile: [32], keySubgroups: 2, chunk: 16, tightScratch: true, dqSharedScratch: true } },
    { name: 'rpb: 2-D 14x17 K=5x7, GQA 4/2, D=32, Dv=64, head splits', rpb: true, spatial: [14, 17], kernelSize: [5, 7], heads: 4, headsKv: 2, dim: 32, dimV: 64, batch: 2, config: { queryTile: [4, 8], querySubgroups: 4, keyTile: [4, 8], keySubgroups: 4, chunk: 16, dqHeadSplit: true, dkvHeadSplit: true } },
    { name: 'rpb: 2-D 16x18 K=7x5, dS over V, dkv lean', rpb: true, spatial: [16, 18], kernelSize: [7, 5], dim: 32, config: { queryTile: [4, 8], querySubgroups: 2, keyTile: [4, 8], keySubgroups: 2, chunk: 16, tightScratch: true, dqSharedScratch: true, dqDsOverV: true, dkvLeanScratch: true } },
    { name: 'rpb: 3-D 5x7x9 K=3x3x5 dilation 1x2x1', rpb: true, spatial: [5, 7, 9], kernelSize: [3, 3, 5], dim: 16, dilation: [1, 2, 1], config: { queryTile: [2, 4, 4], querySubgroups: 2, keyTile: [2, 4, 4], keySubgroups: 2, chunk: 16 } },
    { name: 'rpb without d_rpb (no dS stores, no d_rpb passes): 2-D 14x17 K=5x7, GQA 4/2', rpb: true, noGradRpb: true, spatial: [14, 17], kernelSize: [5, 7], heads: 4, headsKv: 2, dim: 16, config: { queryTile: [4, 8], querySubgroups: 2, keyTile: [8, 4], keySubgroups: 2, chunk: 16 } },
    { name: 'rpb with stride: 2-D 15x16 K=5x7 stride 2x3', rpb: true, stride: [2, 3], spatial: [15, 16], kernelSize: [5, 7], dim: 16, config: { queryTile: [4, 8], querySubgroups: 2, keyTile: [8, 4], keySubgroups: 2, chunk: 16 } },
    // float32 through the split (f16 hi and lo halves, three multiplies per product; dS scaled by its bound), at
    // float32's tolerance: the small-window default's layouts in 1-D (mask by arithmetic), GQA with Dv != D and
    // dilation, the lean dkv layout, 3-D causal with packed coordinates, rpb with d_rpb and a stride. Zeroing every
    // lo half (the f16 kernel's accuracy) fails them. Head dims of 16-32 and 16-row chunks keep the emulated kernels'
    // compiles on lavapipe within the test timeout with a cold shader cache (at head dim 64 the 1-D case took 80 s).
    { name: 'float32 split: 1-D L=300 K=127, the small-window default\'s layouts', dtype: 'float32', spatial: [300], kernelSize: [127], dim: 32, config: { queryTile: [64], querySubgroups: 4, keyTile: [32], keySubgroups: 2, chunk: 16, tightScratch: true, dqSharedScratch: true, dqPadS: true, dkvPadS: true } },
    { name: 'float32 split: 2-D 14x17 K=5x7 dilation 2x1, GQA 4/2 heads, D=16, Dv=32, dkv lean, two dq scratches', dtype: 'float32', spatial: [14, 17], kernelSize: [5, 7], heads: 4, headsKv: 2, dim: 16, dimV: 32, dilation: [2, 1], config: { queryTile: [4, 8], querySubgroups: 2, keyTile: [4, 8], keySubgroups: 2, chunk: 16, tightScratch: true, dkvLeanScratch: true } },
    { name: 'float32 split: 3-D 5x7x9 K=3x3x5 causal on axis 2, padded', dtype: 'float32', spatial: [5, 7, 9], kernelSize: [3, 3, 5], dim: 16, causal: [false, false, true], config: { queryTile: [2, 4, 4], querySubgroups: 2, keyTile: [2, 4, 4], keySubgroups: 2, chunk: 16, dqSharedScratch: true } },
    { name: 'float32 split: rpb with d_rpb and stride, 2-D 15x16 K=5x7 stride 2x3, batch 2', dtype: 'float32', rpb: true, stride: [2, 3], batch: 2, spatial: [15, 16], kernelSize: [5, 7], dim: 16, config: { queryTile: [4, 8], querySubgroups: 2, keyTile: [8, 4], keySubgroups: 2, chunk: 16, tightScratch: true, dqSharedScratch: true } },
    // Per-tensor scales far from 1 (Q, K 1e-3, V 1e4, dO 1e3; and V, dO 1e-6: far below f16's normal range
    // unscaled), and an output 1e5 times the forward's: dS's bound has max |O| in it, as delta = dO . O (without
    // it dS overflows f16 and the gradients are NaN).
    { name: 'float32 split: magnitudes 1e-3 (Q, K), 1e4 (V), 1e3 (dO)', dtype: 'float32', magnitudes: [1e-3, 1e4, 1e3], spatial: [40], kernelSize: [7], dim: 16, config: { queryTile: [32], querySubgroups: 2, keyTile: [32], keySubgroups: 2, chunk: 16 } },
    { name: 'float32 split: magnitudes 1 (Q, K), 1e-6 (V, dO)', dtype: 'float32', magnitudes: [1, 1e-6, 1e-6], spatial: [40], kernelSize: [7], dim: 16, config: { queryTile: [32], querySubgroups: 2, keyTile: [32], keySubgroups: 2, chunk: 16 } },
    { name: 'float32 split: an output 1e5 times the forward\'s', dtype: 'float32', outputScale: 1e5, spatial: [40], kernelSize: [3], dim: 16, config: { queryTile: [32], querySubgroups: 2, keyTile: [32], keySubgroups: 2, chunk: 16 } },
  ];
  for (const c of cases) {
    it(c.name, async () => {
      const ctx = await gpuContext();
      const { rank, B, H, Hk, Dv } = emulatedSizes(c);
      const params = { kernelSize: c.kernelSize, dilation: c.dilation ?? 1, isCausal: c.causal ?? false, ...(c.stride ? { stride: c.stride } : {}) };
      const dt = c.dtype ?? 'float16';
      const rpb = c.rpb === true ? randn([H, ...c.kernelSize.map((x) => 2 * x - 1)], dt, 35) : null;
      const [mqk, mv, mg] = c.magnitudes ?? [1, 1, 1];
      const q = scaled(randn([B, ...c.spatial, H, c.dim], dt, 31), mqk);
      const k = scaled(randn([B, ...c.spatial, Hk, c.dim], dt, 32), mqk);
      const v = scaled(randn([B, ...c.spatial, Hk, Dv], dt, 33), mv);
      const dO = scaled(randn([B, ...c.spatial, H, Dv], dt, 34), 0.05 * mg);
      const forwardOut = tensor([B, ...c.spatial, H, Dv], dt);
      const lse = tensor([B, ...c.spatial, H], 'float32');
      cpuFusedForward(rank, { ...params, query: q, key: k, value: v, output: forwardOut, logsumexp: lse, rpb });
      const out = c.outputScale === undefined ? forwardOut : scaled(forwardOut, c.outputScale);
      const ref = { dq: tensor(q.shape, dt), dk: tensor(k.shape, dt), dv: tensor(v.shape, dt), drpb: rpb && c.noGradRpb !== true ? tensor(rpb.shape, dt) : null };
      cpuFusedBackward(rank, { ...params, query: q, key: k, value: v, output: out, gradOutput: dO, logsumexp: lse, gradQuery: ref.dq, gradKey: ref.dk, gradValue: ref.dv, rpb, gradRpb: ref.drpb });
      const g: FusedBackwardArgs<GpuTensor> = {
        ...params,
        query: ctx.upload(q),
        key: ctx.upload(k),
        value: ctx.upload(v),
        output: ctx.upload(out),
        gradOutput: ctx.upload(dO),
        logsumexp: ctx.upload(lse),
        gradQuery: ctx.createTensor(q.shape, dt),
        gradKey: ctx.createTensor(k.shape, dt),
        gradValue: ctx.createTensor(v.shape, dt),
        rpb: rpb ? ctx.upload(rpb) : null,
        gradRpb: rpb && c.noGradRpb !== true ? ctx.createTensor(rpb.shape, dt) : null,
      };
      // The config runs as `fusedBackwardMma` runs it (its own specs and dispatches), each mma kernel swapped for
      // its emulation. (Until session 10 this test built the kernels' specs itself and dropped the configs' scratch
      // layouts, so its unpadded-row cases ran padded kernels.)
      const config: MmaBackwardConfig = { path: 'mma', chunk: 32, ...c.config };
      const view = emulatingTensorCoreView(ctx);
      await fusedBackwardMma(view, rank, g, config);
      const read = async (): Promise<Tensor[]> => [await ctx.read(g.gradQuery), await ctx.read(g.gradKey), await ctx.read(g.gradValue), ...(g.gradRpb ? [await ctx.read(g.gradRpb)] : [])];
      const first = await read();
      // float16 1e-2; the float32 split float32's 1e-4 (the conformance suite's).
      const atol = dt === 'float32' ? 1e-4 : 1e-2;
      const relative = c.magnitudes !== undefined || c.outputScale !== undefined;
      const tol = (t: Tensor): number => (relative ? atol * Math.max(...toFloat64Values(t).map(Math.abs)) : atol);
      expectClose(first[0] as Tensor, ref.dq, tol(ref.dq), 'dQ');
      expectClose(first[1] as Tensor, ref.dk, tol(ref.dk), 'dK');
      expectClose(first[2] as Tensor, ref.dv, tol(ref.dv), 'dV');
      // d_rpb sums dS over every query of the batch: its tolerance scales with its largest entry.
      if (ref.drpb) expectClose(first[3] as Tensor, ref.drpb, atol * Math.max(1, ...toFloat64Values(ref.drpb).map(Math.abs)), 'dRpb');
      // Deterministic by construction (each kernel owns its output rows, no atomics; d_rpb sums in a fixed order): a
      // second run is bit-identical.
      await fusedBackwardMma(view, rank, g, config);
      const again = await read();
      const bytes = (t: Tensor): Buffer => Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength);
      again.forEach((t, i) => expect(bytes(t).equals(bytes(first[i] as Tensor)), `run 2, gradient ${['dQ', 'dK', 'dV', 'dRpb'][i]}`).toBe(true));
      for (const t of [g.query, g.key, g.value, g.output, g.gradOutput, g.logsumexp, g.gradQuery, g.gradKey, g.gradValue, g.rpb, g.gradRpb]) if (t) ctx.releaseTensor(t);
    });
  }
});

describe('tensor-core (mma) backward on host tensors with a given config (the umbrella\'s tuned configs)', () => {
  it('uploads, runs the config, reads the gradients back: matches the CPU reference (emulated on this adapter)', async () => {
    const ctx = emulatingTensorCoreView(await gpuContext());
    const shape = [1, 10, 12, 2, 16];
    const q = randn(shape, 'float16', 41);
    const k = randn(shape, 'float16', 42);
    const v = randn(shape, 'float16', 43);
    const params = { kernelSize: [5, 7] };
    const out = tensor(shape, 'float16');
    const lse = tensor([1, 10, 12, 2], 'float32');
    cpuFusedForward(2, { ...params, query: q, key: k, value: v, output: out, logsumexp: lse });
    const dO = scaled(randn(shape, 'float16', 44), 0.05);
    const ref = { dq: tensor(shape, 'float16'), dk: tensor(shape, 'float16'), dv: tensor(shape, 'float16') };
    cpuFusedBackward(2, { ...params, query: q, key: k, value: v, output: out, gradOutput: dO, logsumexp: lse, gradQuery: ref.dq, gradKey: ref.dk, gradValue: ref.dv });
    const got = { dq: tensor(shape, 'float16'), dk: tensor(shape, 'float16'), dv: tensor(shape, 'float16') };
    // Not the default: both kernels with 2 subgroups, 32-row chunks.
    const config: MmaBackwardConfig = { path: 'mma', queryTile: [4, 8], querySubgroups: 2, keyTile: [4, 8], keySubgroups: 2, chunk: 32 };
    await fusedBackwardMmaOnHost(ctx, 2, { ...params, query: q, key: k, value: v, output: out, gradOutput: dO, logsumexp: lse, gradQuery: got.dq, gradKey: got.dk, gradValue: got.dv }, config);
    expectClose(got.dq, ref.dq, 1e-2, 'dQ');
    expectClose(got.dk, ref.dk, 1e-2, 'dK');
    expectClose(got.dv, ref.dv, 1e-2, 'dV');
  });
});

