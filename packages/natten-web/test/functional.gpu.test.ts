/**
 * The functional API on the real WebGPU backend (Mesa lavapipe in CI) against the CPU backend.
 * A missing adapter fails these tests (setBackend('webgpu') never falls back).
 */
import type { Tensor } from '@natten-web/core';
import type { GpuTensor } from '@natten-web/gpu';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  attention,
  attentionBackward,
  batch,
  configure,
  dispose,
  free,
  info,
  isGpuTensor,
  mergeAttentions,
  na1d,
  na1dAv,
  na1dAvBackward,
  na1dBackward,
  na1dQk,
  na1dQkBackward,
  na2d,
  na2dAv,
  na2dAvBackward,
  na2dBackward,
  na2dQk,
  na2dQkBackward,
  na3d,
  na3dAv,
  na3dBackward,
  na3dQk,
  setBackend,
  synchronize,
  toGpu,
  toHost,
} from '../src/index.ts';
import { gpuContext } from '../src/runtime.ts';
import { expectClose, rnd } from './helpers.ts';

beforeAll(async () => {
  setBackend('webgpu');
  const i = await info();
  console.log(`[natten-web gpu] ${i.adapter?.vendor} / ${i.adapter?.architecture} / ${i.adapter?.device} features=${i.features.join(',')}`);
});
afterAll(() => dispose());

describe('when WebGPU ops finish', () => {
  it('ops queue back to back; synchronize() waits for them; configure({ blocking }) reaches the live context', async () => {
    const host = rnd([1, 16, 2, 8]);
    const q = await toGpu(host);
    let out = await na1d(q, q, q, { kernelSize: 3 });
    for (let i = 0; i < 3; i++) out = await na1d(out, q, q, { kernelSize: 3 });
    await synchronize();
    let want = await na1d(host, host, host, { kernelSize: 3, backend: 'cpu' });
    for (let i = 0; i < 3; i++) want = await na1d(want, host, host, { kernelSize: 3, backend: 'cpu' });
    expectClose(await toHost(out), want, 1e-4);
    const ctx = await gpuContext('test');
    expect(ctx.blocking).toBe(false);
    configure({ blocking: true });
    await synchronize();
    expect(ctx.blocking).toBe(true);
    configure({ blocking: false });
    await synchronize();
    expect(ctx.blocking).toBe(false);
  });
});

describe('batch()', () => {
  it('runs a chain of ops as one submission, with the results of running them one by one', async () => {
    const host = rnd([1, 16, 2, 8]);
    const q = await toGpu(host);
    const ctx = await gpuContext('test');
    const submits: number[] = [];
    const submit = ctx.device.queue.submit.bind(ctx.device.queue);
    ctx.device.queue.submit = (buffers) => {
      const list = [...buffers];
      submits.push(list.length);
      submit(list);
    };
    let out: Awaited<ReturnType<typeof na1d>>;
    try {
      out = await batch(async () => {
        let o = await na1d(q, q, q, { kernelSize: 3 });
        for (let i = 0; i < 3; i++) o = await na1d(o, q, q, { kernelSize: 3 });
        return o;
      });
    } finally {
      ctx.device.queue.submit = submit;
    }
    expect(submits).toEqual([1]);
    let want = await na1d(host, host, host, { kernelSize: 3, backend: 'cpu' });
    for (let i = 0; i < 3; i++) want = await na1d(want, host, host, { kernelSize: 3, backend: 'cpu' });
    expectClose(await toHost(out), want, 1e-4);
    // toHost inside a batch submits what was recorded, then reads.
    const inside = await batch(async () => toHost(await na1d(q, q, q, { kernelSize: 3 })));
    expectClose(inside, await na1d(host, host, host, { kernelSize: 3, backend: 'cpu' }), 1e-4);
    // free() inside a batch waits for its submission (the recorded work still uses the tensor); outside, it frees at
    // once: an op given the freed tensor then fails.
    const chain = await batch(async () => {
      const a = await na1d(q, q, q, { kernelSize: 3 });
      const b = await na1d(a, q, q, { kernelSize: 3 });
      free(a);
      return b;
    });
    expectClose(await toHost(chain), await na1d(await na1d(host, host, host, { kernelSize: 3, backend: 'cpu' }), host, host, { kernelSize: 3, backend: 'cpu' }), 1e-4);
    free(chain);
    await expect(na1d(chain, q, q, { kernelSize: 3 })).rejects.toThrow(/destroyed/);
    // A large output freed serves the next output of its size (zeroed, then written).
    const bigHost = rnd([1, 64, 64, 4, 16]);
    const big = await toGpu(bigHost);
    const o1 = await na2d(big, big, big, { kernelSize: 3 });
    free(o1);
    const o2 = await na2d(big, big, big, { kernelSize: 3 });
    expect(o2.buffer).toBe(o1.buffer);
    expectClose(await toHost(o2), await na2d(bigHost, bigHost, bigHost, { kernelSize: 3, backend: 'cpu' }), 1e-4);
    free(o2);
    free(big);
    // With the CPU backend selected it just runs its function.
    setBackend('cpu');
    try {
      expectClose(await batch(() => na1d(host, host, host, { kernelSize: 3 })), await na1d(host, host, host, { kernelSize: 3, backend: 'cpu' }), 0);
    } finally {
      setBackend('webgpu');
    }
  });
});

type Fwd = (q: Tensor, k: Tensor, v: Tensor, o: Record<string, unknown>) => Promise<{ output: Tensor; lse: Tensor }>;
type Bwd = (q: Tensor, k: Tensor, v: Tensor, o: Tensor, dO: Tensor, lse: Tensor, opts: Record<string, unknown>) => Promise<Record<string, Tensor>>;

const FUSED = [
  { name: '1-D dilated causal, GQA, Dv != D', fwd: na1d, bwd: na1dBackward, q: [2, 32, 4, 8], kv: [2, 32, 2, 8], dv: 4, opts: { kernelSize: 3, dilation: 2, isCausal: true } },
  { name: '1-D rpb, stride', fwd: na1d, bwd: na1dBackward, q: [1, 12, 2, 8], kv: [1, 12, 2, 8], dv: 8, opts: { kernelSize: 5, stride: 2 }, rpb: [2, 9] },
  { name: '2-D mixed causal, per-axis kernel', fwd: na2d, bwd: na2dBackward, q: [1, 7, 9, 2, 8], kv: [1, 7, 9, 2, 8], dv: 8, opts: { kernelSize: [3, 5], dilation: [2, 1], isCausal: [false, true] } },
  { name: '2-D rpb, explicit scale', fwd: na2d, bwd: na2dBackward, q: [1, 6, 6, 2, 8], kv: [1, 6, 6, 2, 8], dv: 8, opts: { kernelSize: 3, scale: 0.4 }, rpb: [2, 5, 5] },
  { name: '3-D even kernel', fwd: na3d, bwd: na3dBackward, q: [1, 4, 5, 6, 1, 8], kv: [1, 4, 5, 6, 1, 8], dv: 8, opts: { kernelSize: [2, 3, 4] } },
];

describe.each(FUSED)('fused $name: webgpu vs cpu', (c) => {
  const make = () => ({ q: rnd(c.q), k: rnd(c.kv), v: rnd([...c.kv.slice(0, -1), c.dv]), rpb: c.rpb ? rnd(c.rpb) : undefined });

  it('forward (host tensors in and out): output atol 1e-4, lse atol 1e-4', async () => {
    const { q, k, v, rpb } = make();
    const f = c.fwd as unknown as Fwd;
    const gpu = await f(q, k, v, { ...c.opts, rpb, returnLse: true });
    const cpu = await f(q, k, v, { ...c.opts, rpb, returnLse: true, backend: 'cpu' });
    expect(isGpuTensor(gpu.output)).toBe(false);
    expectClose(gpu.output, cpu.output, 1e-4);
    expectClose(gpu.lse, cpu.lse, 1e-4);
  });

  it('backward: dQ atol 1e-3, dK/dV atol 1e-4 (dO scaled by 0.05)', async () => {
    const { q, k, v, rpb } = make();
    const cpu = await (c.fwd as unknown as Fwd)(q, k, v, { ...c.opts, rpb, returnLse: true, backend: 'cpu' });
    const dO = rnd(cpu.output.shape, 'float32', 0.05);
    const b = c.bwd as unknown as Bwd;
    const g = await b(q, k, v, cpu.output, dO, cpu.lse, { ...c.opts, rpb });
    const r = await b(q, k, v, cpu.output, dO, cpu.lse, { ...c.opts, rpb, backend: 'cpu' });
    expectClose(g.gradQuery as Tensor, r.gradQuery as Tensor, 1e-3);
    expectClose(g.gradKey as Tensor, r.gradKey as Tensor, 1e-4);
    expectClose(g.gradValue as Tensor, r.gradValue as Tensor, 1e-4);
    if (rpb) expectClose(g.gradRpb as Tensor, r.gradRpb as Tensor, 1e-3);
  });
});

describe('GPU tensors stay on the GPU', () => {
  it('na2d on GPU tensors returns GPU tensors (forward and backward)', async () => {
    const q = rnd([1, 8, 8, 2, 8]);
    const k = rnd([1, 8, 8, 2, 8]);
    const v = rnd([1, 8, 8, 2, 8]);
    const [gq, gk, gv] = await Promise.all([toGpu(q), toGpu(k), toGpu(v)]);
    const res = await na2d(gq, gk, gv, { kernelSize: 5, dilation: [1, 1], returnLse: true });
    expect(isGpuTensor(res.output)).toBe(true);
    expect(isGpuTensor(res.lse)).toBe(true);
    const cpu = await na2d(q, k, v, { kernelSize: 5, returnLse: true, backend: 'cpu' });
    expectClose(await toHost(res.output), cpu.output, 1e-4);
    const dO = rnd(q.shape, 'float32', 0.05);
    const grads = await na2dBackward(gq, gk, gv, res.output, await toGpu(dO), res.lse, { kernelSize: 5 });
    expect(isGpuTensor(grads.gradKey)).toBe(true);
    const ref = await na2dBackward(q, k, v, cpu.output, dO, cpu.lse, { kernelSize: 5, backend: 'cpu' });
    expectClose(await toHost(grads.gradValue), ref.gradValue, 1e-4);
  });

  it("backend 'cpu' with GPU tensors is an error", async () => {
    const g = await toGpu(rnd([1, 8, 1, 4]));
    await expect(na1d(g, g, g, { kernelSize: 3, backend: 'cpu' })).rejects.toThrow(
      "na1d: backend='cpu' was requested but the inputs are GPU tensors; read them back with toHost() first",
    );
  });

  it('additional KV, attention and mergeAttentions on GPU tensors match the host results', async () => {
    const q = rnd([1, 10, 2, 8]);
    const ak = rnd([1, 3, 2, 8]);
    const av = rnd([1, 3, 2, 8]);
    const [gq, gak, gav] = await Promise.all([toGpu(q), toGpu(ak), toGpu(av)]);
    const g = await na1d(gq, gq, gq, { kernelSize: 3, additionalKeys: gak, additionalValues: gav, returnLse: true });
    const h = await na1d(q, q, q, { kernelSize: 3, additionalKeys: ak, additionalValues: av, returnLse: true, backend: 'cpu' });
    expect(isGpuTensor(g.output)).toBe(true);
    expectClose(await toHost(g.output), h.output, 1e-4);
    expectClose(await toHost(g.lse), h.lse, 1e-4);
    const ga = await attention(gq, gak, gav, { returnLse: true });
    const m = await mergeAttentions([ga.output, ga.output], [ga.lse, ga.lse]);
    expect(isGpuTensor(m.output)).toBe(true);
    expectClose(await toHost(m.output), await toHost(ga.output), 1e-6);
  });

  it.each([false, true])('self-attention on GPU tensors (as many keys as queries, GQA; run as 1-D NA over the whole sequence) matches the host, causal %s', async (causal) => {
    const q = rnd([2, 100, 4, 8]);
    const k = rnd([2, 100, 2, 8]);
    const v = rnd([2, 100, 2, 6]);
    const dO = rnd([2, 100, 4, 6]);
    const [gq, gk, gv, gdO] = await Promise.all([q, k, v, dO].map((t) => toGpu(t)));
    const g = await attention(gq, gk, gv, { isCausal: causal, scale: 0.3, returnLse: true });
    const h = await attention(q, k, v, { isCausal: causal, scale: 0.3, returnLse: true });
    expectClose(await toHost(g.output), h.output, 1e-4);
    expectClose(await toHost(g.lse), h.lse, 1e-4);
    const gb = await attentionBackward(gq, gk, gv, g.output, gdO, g.lse, { isCausal: causal, scale: 0.3 });
    const hb = await attentionBackward(q, k, v, await toHost(g.output), dO, await toHost(g.lse), { isCausal: causal, scale: 0.3 });
    for (const name of ['gradQuery', 'gradKey', 'gradValue'] as const) expectClose(await toHost(gb[name]), hb[name], 2e-4);
  });

  it.each([false, true])('variable-length attention on GPU tensors matches the host, forward and backward (causal %s)', async (causal) => {
    const varlen = { seqlensQ: [3, 0, 70, 1], seqlensKv: [4, 2, 33, 3] };
    const q = rnd([1, 74, 4, 8]);
    const k = rnd([1, 42, 2, 8]);
    const v = rnd([1, 42, 2, 6]);
    const dO = rnd([1, 74, 4, 6]);
    const [gq, gk, gv, gdO] = await Promise.all([q, k, v, dO].map((t) => toGpu(t)));
    const g = await attention(gq, gk, gv, { ...varlen, isCausal: causal, returnLse: true });
    const h = await attention(q, k, v, { ...varlen, isCausal: causal, returnLse: true });
    expectClose(await toHost(g.output), h.output, 1e-4);
    expectClose(await toHost(g.lse), h.lse, 1e-4);
    const gb = await attentionBackward(gq, gk, gv, g.output, gdO, g.lse, { ...varlen, isCausal: causal });
    const hb = await attentionBackward(q, k, v, await toHost(g.output), dO, await toHost(g.lse), { ...varlen, isCausal: causal });
    for (const name of ['gradQuery', 'gradKey', 'gradValue'] as const) expectClose(await toHost(gb[name]), hb[name], 2e-4);
  });

  it.each(['float32', 'float16'] as const)('additional KV (2-D, GQA, Dv != D), causal attention and a 3-way merge run on the GPU kernels (%s)', async (dtype) => {
    const ctx = await gpuContext('test');
    const tol = dtype === 'float32' ? 1e-4 : 3e-3;
    const q = rnd([2, 6, 7, 4, 8], dtype);
    const k = rnd([2, 6, 7, 2, 8], dtype);
    const v = rnd([2, 6, 7, 2, 4], dtype);
    const ak = rnd([2, 5, 2, 8], dtype);
    const av = rnd([2, 5, 2, 4], dtype);
    const [gq, gk, gv, gak, gav] = await Promise.all([q, k, v, ak, av].map((t) => toGpu(t)));
    // No read-back on the way: every read of the context is the test's own.
    const read = ctx.read.bind(ctx);
    let reads = 0;
    ctx.read = (t) => {
      reads++;
      return read(t);
    };
    const dO = rnd([2, 6, 7, 4, 4], dtype);
    const gdO = await toGpu(dO);
    let g: { output: Tensor | GpuTensor; lse: Tensor | GpuTensor };
    let gb: Partial<Record<string, Tensor | GpuTensor>>;
    let gab: Record<string, Tensor | GpuTensor>;
    let ga: { output: Tensor | GpuTensor; lse: Tensor | GpuTensor };
    let m: { output: Tensor | GpuTensor; lse: Tensor | GpuTensor };
    try {
      const opts = { kernelSize: [3, 5] as [number, number], isCausal: [true, false] as [boolean, boolean], scale: 0.3 };
      g = await na2d(gq, gk, gv, { ...opts, additionalKeys: gak, additionalValues: gav, returnLse: true });
      ga = await attention({ ...gq, shape: [2, 42, 4, 8] }, gak, gav, { returnLse: true, isCausal: true });
      m = await mergeAttentions([ga.output, ga.output, ga.output], [ga.lse, ga.lse, ga.lse]);
      gb = { ...(await na2dBackward(gq, gk, gv, g.output as GpuTensor, gdO, g.lse as GpuTensor, { ...opts, additionalKeys: gak, additionalValues: gav })) };
      gab = await attentionBackward({ ...gq, shape: [2, 42, 4, 8] }, gak, gav, ga.output as GpuTensor, { ...gdO, shape: [2, 42, 4, 4] }, ga.lse as GpuTensor, { isCausal: true });
      expect(reads).toBe(0);
    } finally {
      ctx.read = read;
    }
    const h = await na2d(q, k, v, { kernelSize: [3, 5], isCausal: [true, false], scale: 0.3, additionalKeys: ak, additionalValues: av, returnLse: true, backend: 'cpu' });
    expectClose(await toHost(g.output as GpuTensor), h.output, tol);
    expectClose(await toHost(g.lse as GpuTensor), h.lse, 1e-4);
    const qFlat = { ...q, shape: [2, 42, 4, 8] };
    const ha = await attention(qFlat, ak, av, { returnLse: true, isCausal: true });
    expectClose(await toHost(ga.output as GpuTensor), ha.output, tol);
    expectClose(await toHost(ga.lse as GpuTensor), ha.lse, 1e-4);
    // Backward from the GPU forward's (merged) output and lse, against the CPU backend from the same tensors.
    const [ho, hl] = [await toHost(g.output as GpuTensor), await toHost(g.lse as GpuTensor)];
    const hb = await na2dBackward(q, k, v, ho, dO, hl, { kernelSize: [3, 5], isCausal: [true, false], scale: 0.3, additionalKeys: ak, additionalValues: av, backend: 'cpu' });
    for (const name of ['gradQuery', 'gradKey', 'gradValue', 'gradAdditionalKeys', 'gradAdditionalValues'] as const) {
      expect(isGpuTensor(gb[name]), name).toBe(true);
      expectClose(await toHost(gb[name] as GpuTensor), hb[name] as Tensor, dtype === 'float32' ? 2e-4 : 2e-2);
    }
    const hab = await attentionBackward(qFlat, ak, av, await toHost(ga.output as GpuTensor), { ...dO, shape: [2, 42, 4, 4] }, await toHost(ga.lse as GpuTensor), { isCausal: true });
    for (const name of ['gradQuery', 'gradKey', 'gradValue'] as const) expectClose(await toHost(gab[name] as GpuTensor), hab[name], dtype === 'float32' ? 2e-4 : 2e-2);
    // Three equal parts: the same output, lse + log 3.
    expectClose(await toHost(m.output as GpuTensor), ha.output, tol);
    expectClose(await toHost(m.lse as GpuTensor), { ...ha.lse, data: Float32Array.from(ha.lse.data as Float32Array, (x) => x + Math.log(3)) }, 1e-4);
  });
});

describe('BMM ops: webgpu vs cpu', () => {
  it.each([
    { rank: 1, qk: na1dQk, av: na1dAv, shape: [1, 2, 11, 4], opts: { kernelSize: 5, dilation: 2 }, rpb: [2, 9] },
    { rank: 2, qk: na2dQk, av: na2dAv, shape: [1, 2, 6, 7, 4], opts: { kernelSize: 3, isCausal: [true, false] }, rpb: undefined },
    { rank: 3, qk: na3dQk, av: na3dAv, shape: [1, 1, 4, 4, 5, 4], opts: { kernelSize: 3 }, rpb: [1, 5, 5, 5] },
  ])('qk and av, rank $rank', async (c) => {
    const q = rnd(c.shape);
    const k = rnd(c.shape);
    const v = rnd(c.shape);
    const rpb = c.rpb ? rnd(c.rpb) : undefined;
    const qk = c.qk as unknown as (a: Tensor, b: Tensor, o: Record<string, unknown>) => Promise<Tensor>;
    const av = c.av as unknown as (a: Tensor, b: Tensor, o: Record<string, unknown>) => Promise<Tensor>;
    const attnG = await qk(q, k, { ...c.opts, rpb });
    const attnC = await qk(q, k, { ...c.opts, rpb, backend: 'cpu' });
    expectClose(attnG, attnC, 1e-4);
    const soft = rnd(attnC.shape, 'float32', 0.3);
    expectClose(await av(soft, v, c.opts), await av(soft, v, { ...c.opts, backend: 'cpu' }), 1e-4);
  });

  it.each([
    { rank: 1, qkB: na1dQkBackward, avB: na1dAvBackward, shape: [1, 2, 11, 4], opts: { kernelSize: 5 }, rpb: [2, 9], P: 5 },
    { rank: 2, qkB: na2dQkBackward, avB: na2dAvBackward, shape: [1, 2, 6, 7, 4], opts: { kernelSize: 3, dilation: [1, 2] }, rpb: [2, 5, 5], P: 9 },
  ])('qk and av backward, rank $rank', async (c) => {
    const q = rnd(c.shape);
    const k = rnd(c.shape);
    const rpb = rnd(c.rpb);
    const dA = rnd([...c.shape.slice(0, -1), c.P]);
    const qkB = c.qkB as unknown as (a: Tensor, b: Tensor, d: Tensor, o: Record<string, unknown>) => Promise<Record<string, Tensor>>;
    const g = await qkB(q, k, dA, { ...c.opts, rpb });
    const r = await qkB(q, k, dA, { ...c.opts, rpb, backend: 'cpu' });
    expectClose(g.gradQuery as Tensor, r.gradQuery as Tensor, 1e-4);
    expectClose(g.gradKey as Tensor, r.gradKey as Tensor, 1e-4);
    expectClose(g.gradRpb as Tensor, r.gradRpb as Tensor, 1e-3);
    const avB = c.avB as unknown as (a: Tensor, b: Tensor, d: Tensor, o: Record<string, unknown>) => Promise<Record<string, Tensor>>;
    const ga = await avB(dA, q, k, c.opts);
    const ra = await avB(dA, q, k, { ...c.opts, backend: 'cpu' });
    expectClose(ga.gradAttn as Tensor, ra.gradAttn as Tensor, 1e-4);
    expectClose(ga.gradValue as Tensor, ra.gradValue as Tensor, 1e-4);
  });
});

describe('float16 on WebGPU', () => {
  it('na2d float16 matches the CPU on the same half inputs (atol 1e-2)', async () => {
    const q = rnd([1, 6, 6, 2, 8], 'float16');
    const k = rnd([1, 6, 6, 2, 8], 'float16');
    const v = rnd([1, 6, 6, 2, 8], 'float16');
    const g = await na2d(q, k, v, { kernelSize: 3 });
    expect(g.dtype).toBe('float16');
    expectClose(g, await na2d(q, k, v, { kernelSize: 3, backend: 'cpu' }), 1e-2);
  });
});
