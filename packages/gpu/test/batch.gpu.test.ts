import { randn, type Tensor } from '@natten-web/core';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { fusedBackward, fusedForward, type GpuContext, type GpuTensor } from '../src/index.ts';
import { gpuContext } from './setup.ts';
import { FILL } from './test-kernels.ts';

afterAll(async () => (await gpuContext()).destroy());

/** out[i] = value + i for the first 64 elements (op 'fill'). */
const fill = (ctx: GpuContext, out: GpuTensor, value: number): Promise<void> =>
  ctx.dispatch([{ kernel: FILL, buffers: [out.buffer], uniforms: { n: 64, value }, workgroups: [1, 1, 1] }], 'fill');
const first3 = (t: Tensor): number[] => Array.from(t.data as Float32Array).slice(0, 3);

describe('GpuContext.batch', () => {
  it('submits the ops inside it once, at its end, in their order', async () => {
    const ctx = await gpuContext();
    const out = ctx.createTensor([64], 'float32');
    const submit = vi.spyOn(ctx.device.queue, 'submit');
    try {
      const r = await ctx.batch(async () => {
        await fill(ctx, out, 1);
        await fill(ctx, out, 5);
        expect(submit).not.toHaveBeenCalled();
        return 'done';
      });
      expect(r).toBe('done');
      expect(submit).toHaveBeenCalledTimes(1);
    } finally {
      submit.mockRestore();
    }
    expect(first3(await ctx.read(out))).toEqual([5, 6, 7]);
    out.buffer.destroy();
  });

  it('a nested batch joins the outer one', async () => {
    const ctx = await gpuContext();
    const out = ctx.createTensor([64], 'float32');
    const submit = vi.spyOn(ctx.device.queue, 'submit');
    try {
      await ctx.batch(async () => {
        await fill(ctx, out, 1);
        await ctx.batch(() => fill(ctx, out, 2));
      });
      expect(submit).toHaveBeenCalledTimes(1);
    } finally {
      submit.mockRestore();
    }
    expect(first3(await ctx.read(out))).toEqual([2, 3, 4]);
    out.buffer.destroy();
  });

  it('read and workDone inside it submit what was recorded first', async () => {
    const ctx = await gpuContext();
    const out = ctx.createTensor([64], 'float32');
    await ctx.batch(async () => {
      await fill(ctx, out, 10);
      expect(first3(await ctx.read(out))).toEqual([10, 11, 12]);
      await fill(ctx, out, 20);
      await ctx.workDone();
      await fill(ctx, out, 30);
    });
    expect(first3(await ctx.read(out))).toEqual([30, 31, 32]);
    out.buffer.destroy();
  });

  it('zeroing a pooled temporary inside it lands after the work recorded before it', async () => {
    const ctx = await gpuContext();
    const other = ctx.createTensor([64], 'float32');
    await ctx.batch(async () => {
      // The temporary is written by recorded work, released, and taken again zeroed: same buffer, zeros.
      const t = ctx.tempTensor([64], 'float32');
      await fill(ctx, t, 3);
      ctx.releaseTensor(t);
      const z = ctx.tempTensor([64], 'float32', { zero: true });
      expect(z.buffer).toBe(t.buffer);
      await fill(ctx, z, 4);
      ctx.releaseTensor(z);
      const z2 = ctx.tempTensor([64], 'float32', { zero: true });
      expect(z2.buffer).toBe(t.buffer);
      // A dispatch after the zeroing (the clear goes before its pass), then one with no zeroing behind it.
      await fill(ctx, other, 9);
      expect(first3(await ctx.read(z2))).toEqual([0, 0, 0]);
      await fill(ctx, z2, 6);
      ctx.releaseTensor(z2);
      const z3 = ctx.tempTensor([64], 'float32', { zero: true });
      expect(first3(await ctx.read(z3))).toEqual([0, 0, 0]);
      ctx.releaseTensor(z3);
    });
    expect(first3(await ctx.read(other))).toEqual([9, 10, 11]);
    other.buffer.destroy();
  });

  it('retire inside it waits for the submission; destroying a buffer the recorded work uses fails the batch, naming its ops', async () => {
    const ctx = await gpuContext();
    const kept = ctx.createTensor([64], 'float32');
    await expect(
      ctx.batch(async () => {
        await fill(ctx, kept, 1);
        ctx.retire(kept.buffer);
      }),
    ).resolves.toBeUndefined();
    const gone = ctx.createTensor([64], 'float32');
    await expect(
      ctx.batch(async () => {
        await fill(ctx, gone, 1);
        gone.buffer.destroy();
      }, 'layer'),
    ).rejects.toThrow(/^layer \(fill\): WebGPU validation error/);
  });

  it('an op that throws inside it: the work recorded before it is submitted and its error propagates', async () => {
    const ctx = await gpuContext();
    const out = ctx.createTensor([64], 'float32');
    await expect(
      ctx.batch(async () => {
        await fill(ctx, out, 7);
        await ctx.dispatch([{ kernel: FILL, buffers: [], uniforms: { n: 64, value: 0 }, workgroups: [1, 1, 1] }], 'broken');
      }),
    ).rejects.toThrow('broken: kernel test/fill/v1 has 1 storage bindings but 0 buffers were given');
    expect(first3(await ctx.read(out))).toEqual([7, 8, 9]);
    out.buffer.destroy();
  });

  it('an error after a read inside it: the work recorded since the read is submitted, and recording ends', async () => {
    const ctx = await gpuContext();
    const out = ctx.createTensor([64], 'float32');
    await expect(
      ctx.batch(async () => {
        await fill(ctx, out, 1);
        await ctx.read(out);
        await fill(ctx, out, 40);
        throw new Error('model bug');
      }),
    ).rejects.toThrow('model bug');
    expect(first3(await ctx.read(out))).toEqual([40, 41, 42]);
    const submit = vi.spyOn(ctx.device.queue, 'submit');
    try {
      await fill(ctx, out, 2);
      expect(submit).toHaveBeenCalledTimes(1);
    } finally {
      submit.mockRestore();
    }
    out.buffer.destroy();
  });

  it('profile inside it is refused; a batch inside profile is one timed submission', async () => {
    const ctx = await gpuContext();
    const out = ctx.createTensor([64], 'float32');
    await expect(ctx.batch(() => ctx.profile(() => fill(ctx, out, 1)))).rejects.toThrow('profile: not inside batch()');
    const p = await ctx.profile(() =>
      ctx.batch(async () => {
        await fill(ctx, out, 1);
        await fill(ctx, out, 2);
      }),
    );
    if (ctx.hasTimestamps) expect(p.dispatches).toBe(1);
    expect(first3(await ctx.read(out))).toEqual([2, 3, 4]);
    out.buffer.destroy();
  });

  it('fused forward and backward in one batch give the bits they give one op at a time', async () => {
    const ctx = await gpuContext();
    const shape = [1, 9, 10, 2, 16];
    const up = (seed: number): GpuTensor => ctx.upload(randn(shape, 'float32', seed));
    const [query, key, value, gradOutput] = [up(1), up(2), up(3), up(4)];
    const run = async (batched: boolean): Promise<number[][]> => {
      const output = ctx.createTensor(shape, 'float32');
      const logsumexp = ctx.createTensor(shape.slice(0, 4), 'float32');
      const grads = [0, 1, 2].map(() => ctx.createTensor(shape, 'float32'));
      const params = { kernelSize: [3, 5], dilation: [2, 1], isCausal: [false, true] };
      const ops = async (): Promise<void> => {
        await fusedForward(ctx, 2, { query, key, value, output, logsumexp, ...params });
        await fusedBackward(ctx, 2, { query, key, value, output, logsumexp, gradOutput, gradQuery: grads[0] as GpuTensor, gradKey: grads[1] as GpuTensor, gradValue: grads[2] as GpuTensor, ...params });
      };
      if (batched) await ctx.batch(ops);
      else await ops();
      const all = [output, logsumexp, ...grads];
      const values = await Promise.all(all.map(async (t) => Array.from((await ctx.read(t)).data as Float32Array)));
      for (const t of all) t.buffer.destroy();
      return values;
    };
    const one = await run(false);
    const batched = await run(true);
    expect(batched).toEqual(one);
    expect(one[2]?.some((x) => x !== 0)).toBe(true);
    for (const t of [query, key, value, gradOutput]) t.buffer.destroy();
  });
});

describe('GpuContext.freeTensor', () => {
  const BIG = [1 << 18]; // 1 MiB of float32: recycled through the pool
  it('a large tensor freed serves the next tensor of its size, zeroed; freeing twice is harmless', async () => {
    const ctx = await gpuContext();
    const a = ctx.createTensor(BIG, 'float32');
    await fill(ctx, a, 5);
    ctx.freeTensor(a);
    ctx.freeTensor(a);
    const b = ctx.createTensor(BIG, 'float32');
    expect(b.buffer).toBe(a.buffer);
    expect(first3(await ctx.read(b))).toEqual([0, 0, 0]);
    const c = ctx.createTensor(BIG, 'float32');
    expect(c.buffer).not.toBe(a.buffer);
    ctx.freeTensor(b);
    ctx.freeTensor(c);
  });

  it('inside a batch: recycled in order (zeroed after the recorded work), and never to an upload', async () => {
    const ctx = await gpuContext();
    const host = randn(BIG, 'float32', 7);
    let reused: GpuTensor | undefined;
    let uploaded: GpuTensor | undefined;
    await ctx.batch(async () => {
      const a = ctx.createTensor(BIG, 'float32');
      await fill(ctx, a, 5);
      ctx.freeTensor(a);
      // An upload writes at once, before the recorded fill runs: it must not get a's buffer.
      uploaded = ctx.upload(host);
      expect(uploaded.buffer).not.toBe(a.buffer);
      reused = ctx.createTensor(BIG, 'float32');
      expect(reused.buffer).toBe(a.buffer);
      expect(first3(await ctx.read(reused))).toEqual([0, 0, 0]);
    });
    expect(Array.from((await ctx.read(uploaded as GpuTensor)).data as Float32Array).slice(0, 3)).toEqual(Array.from(host.data as Float32Array).slice(0, 3));
    // Outside a batch an upload may take a freed buffer of its exact size: its write lands after the work already
    // submitted. A larger free buffer (a bucket-sized temporary) is not taken: old data would lie past its end.
    ctx.freeTensor(reused as GpuTensor);
    const again = ctx.upload(host);
    expect(again.buffer).toBe((reused as GpuTensor).buffer);
    expect(Array.from((await ctx.read(again)).data as Float32Array).slice(0, 3)).toEqual(Array.from(host.data as Float32Array).slice(0, 3));
    ctx.freeTensor(again);
    ctx.freeTensor(uploaded as GpuTensor);
  });

  it('a small tensor is destroyed: an op given it afterwards fails', async () => {
    const ctx = await gpuContext();
    const s = ctx.createTensor([64], 'float32');
    ctx.freeTensor(s);
    await expect(fill(ctx, s, 1)).rejects.toThrow(/destroyed/);
  });
});
