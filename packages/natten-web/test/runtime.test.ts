import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import {
  configure,
  dispose,
  fromGpuBuffer,
  getBackend,
  info,
  na2d,
  NattenUnsupportedError,
  setBackend,
  toGpu,
  VERSION,
} from '../src/index.ts';
import { expectSame, rnd } from './helpers.ts';

// An environment with WebGPU but no adapter (e.g. a browser with WebGPU disabled, or Node without a driver).
const notices: string[] = [];
let adapterRequests = 0;
const adapterless = {
  requestAdapter: async () => {
    adapterRequests++;
    return null;
  },
} as unknown as GPU;
configure({ gpu: adapterless, notice: (m) => notices.push(m) });

describe('backend selection without a WebGPU adapter', () => {
  it("'auto' (the default) runs on the CPU and says so once", async () => {
    expect(getBackend()).toBe('auto');
    const q = rnd([1, 6, 6, 2, 4]);
    const a = await na2d(q, q, q, { kernelSize: 3 });
    const b = await na2d(q, q, q, { kernelSize: 3, backend: 'auto' });
    const cpu = await na2d(q, q, q, { kernelSize: 3, backend: 'cpu' });
    expectSame(a, cpu);
    expectSame(b, cpu);
    expect(notices).toHaveLength(1);
    expect(notices[0]).toMatch(/^natten-web: WebGPU is not available \(WebGPU found no adapter\..*\); using the CPU backend$/);
    expect(adapterRequests).toBe(1); // the failed probe is remembered
  });

  it('info() reports the CPU backend, no adapter, and the version', async () => {
    const i = await info();
    expect(i).toEqual({ backend: 'cpu', selected: 'auto', features: [], limits: {}, version: VERSION });
  });

  it("explicit 'webgpu' fails with NattenUnsupportedError instead of falling back", async () => {
    const q = rnd([1, 6, 6, 2, 4]);
    const run = na2d(q, q, q, { kernelSize: 3, backend: 'webgpu' });
    await expect(run).rejects.toBeInstanceOf(NattenUnsupportedError);
    await expect(na2d(q, q, q, { kernelSize: 3, backend: 'webgpu' })).rejects.toThrow(/^na2d: the webgpu backend is not available: WebGPU found no adapter/);
    await expect(toGpu(q)).rejects.toThrow(/^toGpu: the webgpu backend is not available/);
    setBackend('webgpu');
    await expect(info()).rejects.toThrow(/^info: the webgpu backend is not available/);
    setBackend('cpu');
    expect(getBackend()).toBe('cpu');
    expect((await info()).backend).toBe('cpu');
    setBackend('auto');
  });

  it('dispose() forgets the failed probe; the next op probes again', async () => {
    await dispose();
    const q = rnd([1, 6, 6, 1, 4]);
    await na2d(q, q, q, { kernelSize: 3 });
    expect(adapterRequests).toBe(2);
    expect(notices).toHaveLength(1); // still one notice per process
  });
});

describe('fromGpuBuffer validation (no device needed)', () => {
  const buffer = (size: number, usage: number) => ({ size, usage }) as unknown as GPUBuffer;
  it('adopts a large-enough storage buffer without copying', () => {
    const b = buffer(64, 0x80 | 0x4);
    const t = fromGpuBuffer(b, [2, 2, 4], 'float32');
    expect(t.buffer).toBe(b);
    expect(t).toMatchObject({ shape: [2, 2, 4], dtype: 'float32', numel: 16, byteLength: 64 });
  });
  it('rejects short buffers, missing STORAGE usage, bad dtypes and shapes', () => {
    expect(() => fromGpuBuffer(buffer(60, 0x80), [2, 2, 4], 'float32')).toThrow('fromGpuBuffer: buffer has 60 bytes but shape [2, 2, 4] float32 needs 64');
    expect(() => fromGpuBuffer(buffer(64, 0x4), [16], 'float32')).toThrow('fromGpuBuffer: buffer usage 4 lacks GPUBufferUsage.STORAGE (0x80)');
    expect(() => fromGpuBuffer(buffer(64, 0x80), [16], 'float64' as 'float32')).toThrow("fromGpuBuffer: dtype 'float64' is not a GPU dtype");
    expect(() => fromGpuBuffer(buffer(64, 0x80), [2.5], 'float32')).toThrow('fromGpuBuffer: shape[0]=2.5 must be a non-negative integer');
  });
});

describe('version', () => {
  it('VERSION equals package.json', () => {
    const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };
    expect(VERSION).toBe(pkg.version);
  });
});
