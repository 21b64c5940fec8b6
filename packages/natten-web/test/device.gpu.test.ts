/**
 * Zero-copy interop: adopt GPUBuffers of a device the application owns (as with TensorFlow.js' or
 * ONNX Runtime Web's WebGPU backends) through useDevice + fromGpuBuffer.
 */
import { create } from 'webgpu';
import { afterAll, describe, expect, it } from 'vitest';
import { dispose, fromGpuBuffer, info, isGpuTensor, na2d, setBackend, toHost, useDevice } from '../src/index.ts';
import { expectClose, rnd } from './helpers.ts';

// Dawn's instance must stay reachable while its devices live (toolchain notes): module level.
const dawn = create([]);
const STORAGE = 0x80;
const COPY_SRC = 0x4;
const COPY_DST = 0x8;
let device: GPUDevice | undefined;

afterAll(async () => {
  await dispose();
  device?.destroy();
});

describe('useDevice + fromGpuBuffer', () => {
  it("runs na2d on the application's own buffers and leaves its device alive after dispose()", async () => {
    const adapter = await dawn.requestAdapter();
    expect(adapter).not.toBeNull();
    if (!adapter) return;
    device = await adapter.requestDevice();
    useDevice(device, adapter);
    setBackend('webgpu');
    const i = await info();
    expect(i.backend).toBe('webgpu');
    expect(i.adapter?.vendor).toBe(adapter.info.vendor);

    const shape = [1, 6, 6, 2, 8];
    const host = [rnd(shape), rnd(shape), rnd(shape)];
    const buffers = host.map((t) => {
      const b = (device as GPUDevice).createBuffer({ size: t.data.byteLength, usage: STORAGE | COPY_SRC | COPY_DST });
      (device as GPUDevice).queue.writeBuffer(b, 0, t.data as Float32Array);
      return b;
    });
    const [q, k, v] = buffers.map((b) => fromGpuBuffer(b, shape, 'float32')) as [ReturnType<typeof fromGpuBuffer>, ReturnType<typeof fromGpuBuffer>, ReturnType<typeof fromGpuBuffer>];
    expect(q.buffer).toBe(buffers[0]);
    const out = await na2d(q, k, v, { kernelSize: 3 });
    expect(isGpuTensor(out)).toBe(true);
    const [hq, hk, hv] = host as [typeof host[0], typeof host[0], typeof host[0]];
    expectClose(await toHost(out), await na2d(hq, hk, hv, { kernelSize: 3, backend: 'cpu' }), 1e-4);

    await dispose();
    // The application's device is still usable.
    const probe = device.createBuffer({ size: 16, usage: STORAGE });
    expect(probe.size).toBe(16);
    probe.destroy();
  });
});
