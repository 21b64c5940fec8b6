import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { NattenArgumentError, NattenUnsupportedError, randn, zeros } from '@natten-web/core';
import type { GeneratedKernel } from '@natten-web/wgsl';
import { generateAvForward, generateQkBackwardKey, generateQkForward, generateRpbGradPartial, generateRpbGradReduce } from '@natten-web/wgsl';
import { afterAll, describe, expect, it, vi } from 'vitest';
import {
  bucketSize,
  BufferPool,
  createGpuBackend,
  fusedForward,
  GpuContext,
  median,
  NattenDeviceError,
  NattenShaderError,
  qkBackwardPlan,
  qkForward,
  timeDispatch,
} from '../src/index.ts';
import { gpuContext } from './setup.ts';
import { FILL, SPIN } from './test-kernels.ts';

afterAll(async () => (await gpuContext()).destroy());

/** Reject after `ms` so a hang fails the test instead of the whole run. */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  return Promise.race([p, new Promise<T>((_, reject) => setTimeout(() => reject(new Error(`${what} hung for ${ms} ms`)), ms))]);
}

function qkArgs(dtype: 'float32' | 'float16' = 'float32', L = 9) {
  return {
    kernelSize: 3,
    query: randn([1, 2, L, 8], dtype, 1),
    key: randn([1, 2, L, 8], dtype, 2),
    attn: zeros([1, 2, L, 3], dtype),
  };
}

describe('queued ops', () => {
  it('an op resolves once its work is queued; later ops and read see its results in queue order', async () => {
    const ctx = await gpuContext();
    expect(ctx.blocking).toBe(false);
    const out = ctx.createTensor([64], 'float32');
    await ctx.dispatch([{ kernel: SPIN, buffers: [out.buffer], uniforms: { n: 1, value: 0 }, workgroups: [1, 1, 1] }]);
    await ctx.workDone();
    // Long work: the op resolves before the GPU has finished it.
    let done = false;
    await ctx.dispatch([{ kernel: SPIN, buffers: [out.buffer], uniforms: { n: 20_000_000, value: 0 }, workgroups: [1, 1, 1] }]);
    void ctx.device.queue.onSubmittedWorkDone().then(() => {
      done = true;
    });
    await Promise.resolve();
    expect(done).toBe(false);
    // A fill queued behind it lands after it: the read sees the fill's values, not the spin's.
    await ctx.dispatch([{ kernel: FILL, buffers: [out.buffer], uniforms: { n: 64, value: 7 }, workgroups: [1, 1, 1] }]);
    expect(Array.from((await ctx.read(out)).data).slice(0, 3)).toEqual([7, 8, 9]);
    expect(done).toBe(true);
    out.buffer.destroy();
  });

  it('a blocking context (GpuContext.wrap over the same device) waits for the GPU in every op', async () => {
    const base = await gpuContext();
    const ctx = GpuContext.wrap(
      { adapter: base.adapter, device: base.device, adapterInfo: base.adapterInfo, features: base.features, subgroupMatrix: base.subgroupMatrix },
      { blocking: true },
    );
    expect(ctx.blocking).toBe(true);
    const out = ctx.createTensor([64], 'float32');
    await ctx.dispatch([{ kernel: SPIN, buffers: [out.buffer], uniforms: { n: 1, value: 0 }, workgroups: [1, 1, 1] }]);
    // The op took the GPU's time; draining the queue after it takes next to nothing.
    const t0 = performance.now();
    await ctx.dispatch([{ kernel: SPIN, buffers: [out.buffer], uniforms: { n: 20_000_000, value: 0 }, workgroups: [1, 1, 1] }]);
    const t1 = performance.now();
    await ctx.workDone();
    const t2 = performance.now();
    expect(t2 - t1).toBeLessThan((t1 - t0) / 4);
    await ctx.dispatch([{ kernel: FILL, buffers: [out.buffer], uniforms: { n: 64, value: 1 }, workgroups: [1, 1, 1] }]);
    expect(Array.from((await ctx.read(out)).data).slice(0, 2)).toEqual([1, 2]);
    out.buffer.destroy();
    // Not destroyed: the device belongs to the shared test context.
  });
});

describe('errors', () => {
  it('a memoised check still refuses bad arguments on every call, and each problem is checked on its own', async () => {
    const ctx = await gpuContext();
    const q = ctx.upload(randn([1, 8, 2, 4], 'float32', 1));
    const out = ctx.createTensor([1, 8, 2, 4], 'float32');
    const args = { query: q, key: q, value: q, output: out, logsumexp: null, rpb: null };
    for (let i = 0; i < 2; i++) {
      await expect(fusedForward(ctx, 1, { ...args, kernelSize: 9 })).rejects.toThrow(/na1d_forward: kernel_size=9 times dilation=1 exceeds input length 8/);
    }
    await fusedForward(ctx, 1, { ...args, kernelSize: 3 });
    await fusedForward(ctx, 1, { ...args, kernelSize: 3 });
    const wrongOut = ctx.createTensor([1, 8, 2, 5], 'float32');
    await expect(fusedForward(ctx, 1, { ...args, output: wrongOut, kernelSize: 3 })).rejects.toBeInstanceOf(NattenArgumentError);
    for (const t of [q, out, wrongOut]) t.buffer.destroy();
  });

  it('an injected WGSL error gives NattenShaderError with the key and the compiler messages', async () => {
    const ctx = await gpuContext();
    const bad: GeneratedKernel = { ...FILL, key: 'test/broken/v1', code: FILL.code.replace('params.value + f32(gid.x)', 'params.value + undefined_name') };
    const err = await ctx.pipeline(bad).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(NattenShaderError);
    const se = err as NattenShaderError;
    expect(se.key).toBe('test/broken/v1');
    expect(se.messages.length).toBeGreaterThan(0);
    expect(se.messages.join('\n')).toMatch(/undefined_name/);
    expect(se.message).toContain('shader test/broken/v1 failed to compile');
    expect(se.source).toBe(bad.code);
    // A failed compile is not cached: the context still compiles good kernels.
    await expect(ctx.pipeline(FILL)).resolves.toBeDefined();
  });

  it('a dispatch validation error is thrown as NattenDeviceError, not printed', async () => {
    const ctx = await gpuContext();
    const printed = vi.spyOn(console, 'error');
    const notStorage = ctx.device.createBuffer({ size: 256, usage: 0x1 /* MAP_READ */ | 0x8 /* COPY_DST */ });
    await expect(ctx.dispatch([{ kernel: FILL, buffers: [notStorage], uniforms: { n: 4, value: 1 }, workgroups: [1, 1, 1] }], 'bad-bind')).rejects.toThrow(
      /bad-bind: WebGPU validation error/,
    );
    await expect(ctx.dispatch([{ kernel: FILL, buffers: [notStorage], uniforms: { n: 4, value: 1 }, workgroups: [1, 1, 1] }])).rejects.toBeInstanceOf(
      NattenDeviceError,
    );
    notStorage.destroy();
    // Error scopes stayed balanced: a good dispatch right after works and nothing went to the console.
    const out = ctx.createTensor([4], 'float32');
    await ctx.dispatch([{ kernel: FILL, buffers: [out.buffer], uniforms: { n: 4, value: 10 }, workgroups: [1, 1, 1] }]);
    expect(Array.from((await ctx.read(out)).data)).toEqual([10, 11, 12, 13]);
    out.buffer.destroy();
    expect(printed).not.toHaveBeenCalled();
    printed.mockRestore();
  });

  it('a wrong binding count or too many workgroups is refused before any GPU work', async () => {
    const ctx = await gpuContext();
    await expect(ctx.dispatch([{ kernel: FILL, buffers: [], uniforms: { n: 1, value: 0 }, workgroups: [1, 1, 1] }], 'x')).rejects.toThrow(
      'x: kernel test/fill/v1 has 1 storage bindings but 0 buffers were given',
    );
    const out = ctx.createTensor([4], 'float32');
    const max = ctx.limits.maxComputeWorkgroupsPerDimension;
    await expect(ctx.dispatch([{ kernel: FILL, buffers: [out.buffer], uniforms: { n: 1, value: 0 }, workgroups: [max + 1, 1, 1] }], 'y')).rejects.toThrow(
      `y: dispatch of ${max + 1}x1x1 workgroups is not within 0..maxComputeWorkgroupsPerDimension=${max} per axis`,
    );
    await expect(ctx.dispatch([{ kernel: FILL, buffers: [out.buffer], uniforms: { n: 1 }, workgroups: [1, 1, 1] }], 'z')).rejects.toThrow(
      "packUniforms: missing value for uniform 'value'",
    );
    // Nothing was left half-open: the next dispatch runs normally.
    await ctx.dispatch([{ kernel: FILL, buffers: [out.buffer], uniforms: { n: 4, value: 5 }, workgroups: [1, 1, 1] }]);
    expect(Array.from((await ctx.read(out)).data)).toEqual([5, 6, 7, 8]);
    out.buffer.destroy();
  });

  it('an op on a destroyed device throws NattenDeviceError, without hanging', async () => {
    const ctx = await GpuContext.create();
    const backend = createGpuBackend(ctx);
    await backend.qkForward(1, qkArgs()); // warm: pipelines compiled
    ctx.device.destroy();
    const err = await within(
      backend.qkForward(1, qkArgs()).then(
        () => undefined,
        (e: unknown) => e,
      ),
      20_000,
      'qkForward after device.destroy()',
    );
    expect(err).toBeInstanceOf(NattenDeviceError);
    expect(String((err as Error).message)).toMatch(/na1d_qk_forward|read|upload|createTensor/);
    expect(String((err as Error).message)).toMatch(/lost|destroyed/);
    // Every later call fails fast with the same clear message.
    await expect(within(backend.qkForward(1, qkArgs()), 20_000, 'second call')).rejects.toThrow(/the GPU device was lost \(destroyed/);
  });

  it('an op after GpuContext.destroy() throws NattenDeviceError', async () => {
    const ctx = await GpuContext.create();
    const backend = createGpuBackend(ctx);
    ctx.destroy();
    await expect(backend.qkForward(1, qkArgs())).rejects.toThrow(/the GPU context was destroyed/);
    await expect(backend.qkForward(1, qkArgs())).rejects.toBeInstanceOf(NattenDeviceError);
  });
});

describe('GPU rules of the BMM ops (checked before any GPU work)', () => {
  it('float16 without shader-f16 is refused with a clear message', async () => {
    const ctx = await GpuContext.create({ disableFeatures: ['shader-f16'] });
    try {
      expect(ctx.hasF16).toBe(false);
      expect(() => qkForward.check(ctx, 1, qkArgs('float16'))).toThrow(
        "na1d_qk_forward: float16 needs the WebGPU feature 'shader-f16', which this adapter does not offer; use float32",
      );
      expect(() => qkForward.check(ctx, 1, qkArgs('float16'))).toThrow(NattenUnsupportedError);
    } finally {
      ctx.destroy();
    }
  });

  it('float64 is refused (WGSL has no f64)', async () => {
    const ctx = await gpuContext();
    expect(() => qkForward.check(ctx, 1, qkArgs('float64' as 'float32'))).toThrow(/na1d_qk_forward: dtype float64 is not supported on WebGPU/);
  });

  it('a tensor over maxStorageBufferBindingSize is refused with its name and size', async () => {
    const ctx = await gpuContext();
    const L = Math.ceil(ctx.limits.maxStorageBufferBindingSize / (4 * 2 * 8)) + 8;
    const shape = [1, 2, L, 8];
    const like = (s: number[]) => ({ shape: s, dtype: 'float32' as const });
    const args = { kernelSize: 3, query: like(shape), key: like(shape), attn: like([1, 2, L, 3]) };
    expect(() => qkForward.check(ctx, 1, args)).toThrow(NattenArgumentError);
    expect(() => qkForward.check(ctx, 1, args)).toThrow(
      `na1d_qk_forward: query [1, 2, ${L}, 8] needs ${L * 64} bytes, over this device's maxStorageBufferBindingSize of ${ctx.limits.maxStorageBufferBindingSize}`,
    );
  });

  it("core's validation runs first (even kernel size)", async () => {
    const ctx = await gpuContext();
    expect(() => qkForward.check(ctx, 1, { ...qkArgs(), kernelSize: 4, attn: zeros([1, 2, 9, 4], 'float32') })).toThrow(NattenArgumentError);
  });
});

describe('pipelines', () => {
  it('per-call sizes (batch, heads, extents, dilation, stride) reuse one pipeline', async () => {
    const ctx = await GpuContext.create();
    try {
      const backend = createGpuBackend(ctx);
      for (const [B, H, L, d, s] of [
        [1, 2, 9, 1, 1],
        [2, 1, 17, 2, 1],
        [1, 3, 30, 3, 3],
      ] as const) {
        await backend.qkForward(1, {
          kernelSize: 3,
          dilation: d,
          stride: s,
          query: randn([B, H, L, 8], 'float32', 1),
          key: randn([B, H, L, 8], 'float32', 2),
          attn: zeros([B, H, L, 3], 'float32'),
        });
      }
      expect(ctx.cachedKernelKeys().filter((k) => k.startsWith('na-bmm-pn/'))).toHaveLength(1);
    } finally {
      ctx.destroy();
    }
  });

  it('BMM kernels compile with zero Tint messages', async () => {
    const ctx = await gpuContext();
    const kernels = [
      generateQkForward({ rank: 2, kernelSize: [3, 5], causal: [true, false], dim: 16, dtype: 'float16', rpb: false }),
      generateQkForward({ rank: 3, kernelSize: [3, 3, 3], causal: [false, false, false], dim: 6, dtype: 'float32', rpb: true }),
      generateQkBackwardKey({ rank: 1, kernelSize: [7], causal: [true], dim: 64, dtype: 'float32' }),
      generateAvForward({ rank: 2, kernelSize: [5, 5], causal: [false, true], dim: 32, dtype: 'float16' }),
      generateRpbGradPartial({ rank: 3, kernelSize: [3, 5, 3], dtype: 'float16' }),
      generateRpbGradReduce({ rank: 2, kernelSize: [3, 5], dtype: 'float16' }),
    ];
    for (const k of kernels) {
      const module = ctx.device.createShaderModule({ code: k.code, label: k.key });
      const info = await module.getCompilationInfo();
      expect(
        info.messages.map((m) => `${m.type} ${m.lineNum}:${m.linePos} ${m.message}`),
        k.key,
      ).toEqual([]);
    }
  });
});

describe('BufferPool', () => {
  it('reuses released buffers per (bucket, usage) and frees everything on dispose', async () => {
    const ctx = await gpuContext();
    const pool = new BufferPool(ctx.device);
    const usage = 0x80 | 0x8;
    const a = pool.acquire(1000, usage);
    expect(a.size).toBe(bucketSize(1000));
    expect(a.size).toBeGreaterThanOrEqual(1000);
    pool.release(a);
    const b = pool.acquire(900, usage); // same bucket
    expect(b).toBe(a);
    const c = pool.acquire(900, 0x40 | 0x8); // other usage: a new buffer
    expect(c).not.toBe(a);
    const d = pool.acquire(5000, usage); // other bucket
    expect(d).not.toBe(a);
    expect(pool.stats()).toMatchObject({ inUse: 3, free: 0, hits: 1, misses: 3 });
    pool.release(d);
    expect(() => pool.release(d)).toThrow(/released twice/);
    expect(pool.stats()).toMatchObject({ inUse: 2, free: 1 });
    pool.dispose();
    expect(pool.stats()).toMatchObject({ inUse: 0, free: 0, bytes: 0 });
    expect(() => pool.acquire(16, usage)).toThrow(/the pool was disposed/);
  });

  it('drops released buffers past maxFreeBytes', async () => {
    const ctx = await gpuContext();
    const pool = new BufferPool(ctx.device, { maxFreeBytes: 1024 });
    const a = pool.acquire(1024, 0x80);
    const b = pool.acquire(1024, 0x80);
    pool.release(a);
    pool.release(b);
    expect(pool.stats()).toMatchObject({ free: 1, bytes: 1024 });
    pool.dispose();
  });

  it('take hands a free buffer over for good (exact size first, then the bucket); adopt takes one in, once', async () => {
    const ctx = await gpuContext();
    const destroyed: GPUBuffer[] = [];
    const pool = new BufferPool(ctx.device, { maxFreeBytes: 4096, destroy: (b) => destroyed.push(b) });
    const usage = 0x80 | 0x8;
    const own = ctx.device.createBuffer({ size: 1000, usage });
    pool.adopt(own);
    pool.adopt(own);
    expect(pool.owns(own)).toBe(true);
    expect(pool.stats()).toMatchObject({ free: 1, inUse: 0, bytes: 1000 });
    expect(pool.take(1000, usage)).toBe(own);
    expect(pool.owns(own)).toBe(false);
    expect(pool.stats()).toMatchObject({ free: 0, bytes: 0 });
    const temp = pool.acquire(900, usage); // bucket-sized
    pool.release(temp);
    expect(pool.take(900, usage, true)).toBeUndefined(); // exact only: the bucket's buffer is not 900 bytes
    expect(pool.take(900, usage)).toBe(temp);
    // Past maxFreeBytes an adopted buffer is destroyed through the hook.
    const big = ctx.device.createBuffer({ size: 8192, usage });
    pool.adopt(big);
    expect(destroyed).toEqual([big]);
    for (const b of [own, temp, big]) b.destroy();
    pool.dispose();
  });

  it('buckets are quarter powers of two (<= 25% slack), multiples of 4', () => {
    for (const n of [1, 16, 17, 100, 1000, 4096, 4097, 123457]) {
      const b = bucketSize(n);
      expect(b % 4).toBe(0);
      expect(b).toBeGreaterThanOrEqual(n);
      expect(b).toBeLessThanOrEqual(Math.max(16, Math.ceil(n * 1.25) + 4));
    }
  });

  it('bind groups are reused per pipeline and buffers: each dispatch still writes its own buffer', async () => {
    const ctx = await gpuContext();
    let a = ctx.createTensor([4], 'float32');
    const b = ctx.createTensor([4], 'float32');
    const fill = (t: typeof a, value: number): Promise<void> => ctx.dispatch([{ kernel: FILL, buffers: [t.buffer], uniforms: { n: 4, value }, workgroups: [1, 1, 1] }]);
    await fill(a, 1);
    await fill(b, 10);
    await fill(a, 20);
    expect(Array.from((await ctx.read(a)).data)).toEqual([20, 21, 22, 23]);
    expect(Array.from((await ctx.read(b)).data)).toEqual([10, 11, 12, 13]);
    // A destroyed buffer's replacement is a new buffer, bound afresh.
    a.buffer.destroy();
    a = ctx.createTensor([4], 'float32');
    await fill(a, 1);
    expect(Array.from((await ctx.read(a)).data)).toEqual([1, 2, 3, 4]);
    for (const t of [a, b]) t.buffer.destroy();
  });

  it('the bind group cache is bounded by entries and by the bytes its entries bind', async () => {
    const ctx = await gpuContext();
    const fill = (buffer: GPUBuffer): Promise<void> => ctx.dispatch([{ kernel: FILL, buffers: [buffer], uniforms: { n: 4, value: 0 }, workgroups: [1, 1, 1] }]);
    const small = Array.from({ length: 70 }, () => ctx.device.createBuffer({ size: 256, usage: 0x80 /* STORAGE */ }));
    for (const b of small) await fill(b);
    expect(ctx.cacheStats().bindGroups).toBeLessThanOrEqual(64);
    // Three 90 MiB buffers: past 256 MiB the oldest entries go, so dropped tensors are not held back without bound.
    const big = Array.from({ length: 3 }, () => ctx.device.createBuffer({ size: 90 * 1024 * 1024, usage: 0x80 /* STORAGE */ }));
    for (const b of big) await fill(b);
    expect(ctx.cacheStats().bindGroupBytes).toBeLessThanOrEqual(256 * 1024 * 1024);
    expect(ctx.cacheStats().bindGroupBytes).toBeGreaterThanOrEqual(2 * 90 * 1024 * 1024);
    await ctx.workDone();
    for (const b of [...small, ...big]) b.destroy();
  });

  it('constant buffers are shared by content and outlive their eviction until queued work is done', async () => {
    const ctx = await gpuContext();
    const a = ctx.constantBuffer(Uint32Array.from([0, 5, 9]));
    expect(ctx.constantBuffer(Uint32Array.from([0, 5, 9]))).toBe(a);
    expect(ctx.constantBuffer(Uint32Array.from([0, 5, 10]))).not.toBe(a);
    expect(a.size).toBe(16);
    const copy = ctx.device.createBuffer({ size: 16, usage: 0x1 /* MAP_READ */ | 0x8 /* COPY_DST */ });
    const enc = ctx.device.createCommandEncoder();
    enc.copyBufferToBuffer(a, 0, copy, 0, 12);
    ctx.device.queue.submit([enc.finish()]);
    // More than the 64 contents the cache keeps: the first is retired, its queued copy still reads it.
    for (let i = 0; i < 70; i++) ctx.constantBuffer(Uint32Array.from([i, i + 1]));
    expect(ctx.constantBuffer(Uint32Array.from([0, 5, 9]))).not.toBe(a);
    await copy.mapAsync(0x1 /* READ */);
    expect(Array.from(new Uint32Array(copy.getMappedRange(), 0, 3))).toEqual([0, 5, 9]);
    copy.unmap();
    copy.destroy();
  });

  it('context temporaries come from the context pool; uniform buffers are shared by content', async () => {
    const ctx = await gpuContext();
    const t = ctx.tempTensor([3, 5], 'float32', { zero: true });
    expect(Array.from((await ctx.read(t)).data)).toEqual(new Array(15).fill(0));
    ctx.releaseTensor(t);
    const again = ctx.tempTensor([15], 'float32');
    expect(again.buffer).toBe(t.buffer);
    ctx.releaseTensor(again);
    const out = ctx.createTensor([4], 'float32');
    const fill = (value: number): Promise<void> => ctx.dispatch([{ kernel: FILL, buffers: [out.buffer], uniforms: { n: 4, value }, workgroups: [1, 1, 1] }]);
    const read = async (): Promise<number[]> => Array.from((await ctx.read(out)).data);
    await fill(0);
    await fill(5);
    expect(await read()).toEqual([5, 6, 7, 8]);
    // The first call's uniforms were not overwritten by the second's.
    await fill(0);
    expect(await read()).toEqual([0, 1, 2, 3]);
    // A prepared dispatch (encoded again and again, as the clock warmer's) keeps uniforms of its own.
    const prepared = await ctx.prepare([{ kernel: FILL, buffers: [out.buffer], uniforms: { n: 4, value: -3 }, workgroups: [1, 1, 1] }]);
    // More distinct contents than the cache keeps: the oldest buffers are destroyed, queued work still reads its own.
    for (let v = 1; v <= 600; v++) await fill(v);
    expect(await read()).toEqual([600, 601, 602, 603]);
    const enc = ctx.device.createCommandEncoder();
    prepared.encode(enc);
    ctx.device.queue.submit([enc.finish()]);
    expect(await read()).toEqual([-3, -2, -1, 0]);
    prepared.release();
    await fill(0);
    expect(await read()).toEqual([0, 1, 2, 3]);
    out.buffer.destroy();
  });
});

describe('timeDispatch', () => {
  it('times with timestamp queries when available: one sample per iteration, median within [min, max]', async () => {
    const ctx = await gpuContext();
    expect(ctx.hasTimestamps).toBe(true); // lavapipe offers timestamp-query
    const out = ctx.createTensor([4096], 'float32');
    const cmd = { kernel: FILL, buffers: [out.buffer], uniforms: { n: 4096, value: 1 }, workgroups: [64, 1, 1] as [number, number, number] };
    const r = await timeDispatch(ctx, [cmd, cmd], { warmup: 1, iterations: 5 });
    expect(r.method).toBe('timestamp-query');
    expect(r.samplesNs).toHaveLength(5);
    for (const s of r.samplesNs) expect(s).toBeGreaterThan(0);
    expect(r.minNs).toBeLessThanOrEqual(r.medianNs);
    expect(r.medianNs).toBeLessThanOrEqual(r.maxNs);
    expect(r.medianNs).toBe(median(r.samplesNs));
    const w = await timeDispatch(ctx, [cmd], { warmup: 0, iterations: 3, forceWallClock: true });
    expect(w.method).toBe('submit-wall');
    expect(w.samplesNs).toHaveLength(3);
    for (const s of w.samplesNs) expect(s).toBeGreaterThan(0);
    // The timed commands really ran.
    expect(Array.from((await ctx.read(out)).data).slice(0, 3)).toEqual([1, 2, 3]);
    out.buffer.destroy();
  });

  it('times commands in one compute pass with onePass, and a ClearRange zeroes only its first bytes', async () => {
    const ctx = await gpuContext();
    const a = ctx.createTensor([64], 'float32');
    const b = ctx.createTensor([64], 'float32');
    const fill = (out: typeof a, value: number) => ({ kernel: FILL, buffers: [out.buffer], uniforms: { n: 64, value }, workgroups: [1, 1, 1] as [number, number, number] });
    // b filled, then a filled with b's first 8 bytes zeroed before a's pass.
    const cmds = [fill(b, 10), { ...fill(a, 1), clear: [{ buffer: b.buffer, size: 8 }] }];
    await ctx.dispatch(cmds);
    expect(Array.from((await ctx.read(b)).data).slice(0, 4)).toEqual([0, 0, 12, 13]);
    expect(Array.from((await ctx.read(a)).data).slice(0, 2)).toEqual([1, 2]);
    ctx.zero(a);
    const r = await timeDispatch(ctx, cmds, { warmup: 1, iterations: 3, onePass: true });
    expect(r.method).toBe('timestamp-query');
    expect(r.samplesNs).toHaveLength(3);
    for (const x of r.samplesNs) expect(x).toBeGreaterThan(0);
    // In one pass every clear comes first, so b's refill (the pass's first dispatch) overwrites its cleared bytes.
    expect(Array.from((await ctx.read(b)).data).slice(0, 2)).toEqual([10, 11]);
    expect(Array.from((await ctx.read(a)).data).slice(0, 2)).toEqual([1, 2]);
    for (const t of [a, b]) t.buffer.destroy();
  });

  it('times an op plan; release() returns its pooled scratch', async () => {
    const ctx = await gpuContext();
    const L = 20;
    const rows = [1, 2, L, 8];
    const args = {
      kernelSize: 5,
      query: ctx.upload(randn(rows, 'float32', 1)),
      key: ctx.upload(randn(rows, 'float32', 2)),
      gradAttn: ctx.upload(randn([1, 2, L, 5], 'float32', 3)),
      gradQuery: ctx.createTensor(rows, 'float32'),
      gradKey: ctx.createTensor(rows, 'float32'),
      gradRpb: ctx.createTensor([2, 9], 'float32'),
    };
    const inUse = ctx.pool.stats().inUse;
    const plan = qkBackwardPlan(ctx, 1, args);
    expect(plan.commands.map((c) => c.kernel.key.split('/')[0])).toEqual(['na-bmm-nn', 'na-bmm-in', 'na-rpb-partial', 'na-rpb-reduce']);
    expect(ctx.pool.stats().inUse).toBe(inUse + 1);
    const r = await timeDispatch(ctx, plan.commands, { warmup: 1, iterations: 3 });
    expect(r.samplesNs).toHaveLength(3);
    plan.release();
    expect(ctx.pool.stats().inUse).toBe(inUse);
    for (const t of Object.values(args)) if (typeof t === 'object') t.buffer.destroy();
  });

  it('rejects bad options with a clear message', async () => {
    const ctx = await gpuContext();
    const out = ctx.createTensor([4], 'float32');
    const cmd = { kernel: FILL, buffers: [out.buffer], uniforms: { n: 4, value: 1 }, workgroups: [1, 1, 1] as [number, number, number] };
    await expect(timeDispatch(ctx, [cmd], { iterations: 0 })).rejects.toThrow('timeDispatch: iterations must be an integer in [1, 2048], got 0');
    await expect(timeDispatch(ctx, [cmd], { warmup: -1 })).rejects.toThrow('timeDispatch: warmup must be an integer >= 0, got -1');
    await expect(timeDispatch(ctx, [{ ...cmd, workgroups: [0, 1, 1] }])).rejects.toThrow('timeDispatch: nothing to time');
    out.buffer.destroy();
  });

  it('median of even and odd lists', () => {
    expect(median([3, 1, 2])).toBe(2);
    expect(median([4, 1, 3, 2])).toBe(2.5);
  });
});

describe('browser acquisition path', () => {
  it('no gpu source file imports Node-only modules at top level (Dawn is imported lazily in Node)', () => {
    const root = fileURLToPath(new URL('../src', import.meta.url));
    const files: string[] = [];
    const walk = (dir: string): void => {
      for (const f of readdirSync(dir)) {
        const p = join(dir, f);
        if (statSync(p).isDirectory()) walk(p);
        else if (p.endsWith('.ts')) files.push(p);
      }
    };
    walk(root);
    expect(files.length).toBeGreaterThan(5);
    for (const f of files) {
      const text = readFileSync(f, 'utf8');
      const imports = [...text.matchAll(/^\s*import\s[^;]*?from\s+['"]([^'"]+)['"]/gm)].map((m) => m[1] as string);
      for (const spec of imports) {
        expect(spec === 'webgpu' || spec.startsWith('node:') || ['fs', 'path', 'os', 'module', 'url'].includes(spec), `${f} imports ${spec}`).toBe(false);
      }
    }
    const device = readFileSync(join(root, 'device.ts'), 'utf8');
    expect(device).toMatch(/navigator/);
    expect(device).toMatch(/await import\(/);
  });
});
