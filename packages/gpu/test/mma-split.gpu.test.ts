/**
 * The float32 ("split") tensor-core forward: the abs-max dispatch that gives its per-tensor scales, its plan (abs-max,
 * then the forward with the scales bound), and inputs whose magnitudes are outside f16's range, through the
 * subgroup-matrix emulation on this adapter against the CPU reference. The conformance suite
 * (conformance-mma.gpu.test.ts) runs the quick grid's float32 forwards on it at float32's tolerance.
 */
import { type FusedForwardArgs, type Tensor, toFloat64Values, randn } from '@natten-web/core';
import { tensorFromValues } from '@natten-web/testkit';
import { fusedForward as cpuFusedForward } from '@natten-web/cpu';
import { generateAbsMax } from '@natten-web/wgsl';
import { afterAll, describe, expect, it } from 'vitest';
import { type GpuTensor, planFusedForwardMma } from '../src/index.ts';
import { tensorCoreView } from './fake-tensor-core.ts';
import { emulatedKernel } from '@natten-web/testkit';
import { gpuContext } from './setup.ts';

afterAll(async () => (await gpuContext()).destroy());

/** randn times `scale`, as float32. */
function scaled(shape: number[], seed: number, scale: number): Tensor {
  return tensorFromValues(shape, 'float32', toFloat64Values(randn(shape, 'float32', seed)).map((x) => x * scale));
}

const maxAbs = (t: Tensor): number => toFloat64Values(t).reduce((m, x) => Math.max(m, Math.abs(x)), 0);

describe('split forward (float32 on f16 tensor cores)', () => {
  it('abs-max: max |x| of query, key and value, exactly, in one dispatch', async () => {
    const ctx = await gpuContext();
    // Sizes that leave partial workgroups and need the grid-stride loop; the largest magnitude is negative in one.
    const q = scaled([3, 1000, 4], 1, 2.5);
    const k = scaled([70000, 4], 2, 1e-3);
    const vals = toFloat64Values(randn([5, 8], 'float32', 3));
    vals[17] = -123456.75;
    const v = tensorFromValues([5, 8], 'float32', vals);
    const g = [q, k, v].map((t) => ctx.upload(t)) as [GpuTensor, GpuTensor, GpuTensor];
    // The scratch starts with larger values: the command's `clear` zeroes it before the pass, at every encode.
    const scales = ctx.upload(tensorFromValues([4], 'float32', [1e30, 1e30, 1e30, 1e30]));
    const command = { kernel: generateAbsMax(), buffers: [...g.map((t) => t.buffer), scales.buffer], uniforms: { n_q: q.data.length / 4, n_k: k.data.length / 4, n_v: v.data.length / 4 }, workgroups: [7, 3, 1] as [number, number, number], clear: [scales.buffer] };
    for (let run = 0; run < 2; run++) {
      await ctx.dispatch([command], 'abs-max');
      const got = Array.from((await ctx.read(scales)).data as Float32Array);
      expect(got.slice(0, 3)).toEqual([maxAbs(q), maxAbs(k), 123456.75]);
    }
    // The largest |x| of key planted where each of an invocation's four loads of a loop step reads it (7
    // workgroups of 256: a stride of 1792 vec4s), in a later step, and in the last vec4 (a partial step).
    const kv = toFloat64Values(k);
    for (const at of [5, 5 + 1792, 5 + 2 * 1792, 5 + 3 * 1792, 5 + 9 * 1792 + 300, 69999]) {
      const planted = kv.slice();
      planted[at * 4 + 2] = -777.5;
      const gk = ctx.upload(tensorFromValues(k.shape, 'float32', planted));
      await ctx.dispatch([{ ...command, buffers: [g[0].buffer, gk.buffer, g[2].buffer, scales.buffer] }], 'abs-max');
      expect(((await ctx.read(scales)).data as Float32Array)[1], `planted at vec4 ${at}`).toBe(777.5);
      gk.buffer.destroy();
    }
    for (const t of [...g, scales]) t.buffer.destroy();
  });

  it('abs-max, scalar: any length (the BMM ops attention tensors), finite values only, the largest in the last element', async () => {
    const ctx = await gpuContext();
    const a = scaled([3, 7, 5], 4, 0.5);
    const b = scaled([4097], 5, 1e-3);
    const bv = toFloat64Values(b);
    bv[4096] = -9.25;
    // -inf (NATTEN's invalid attention slots) and NaN do not count.
    bv[17] = Number.NEGATIVE_INFINITY;
    bv[2000] = Number.NaN;
    bv[3001] = Number.POSITIVE_INFINITY;
    const g = [a, tensorFromValues([4097], 'float32', bv)].map((t) => ctx.upload(t)) as [GpuTensor, GpuTensor];
    const scales = ctx.upload(tensorFromValues([4], 'float32', [1e30, 1e30, 1e30, 1e30]));
    const kernel = generateAbsMax({ scalar: true });
    expect(kernel.key.startsWith('abs-max3-scalar')).toBe(true);
    // Three slots: the third binds the first tensor again and counts 0 (its grid row does not run).
    const command = { kernel, buffers: [g[0].buffer, g[1].buffer, g[0].buffer, scales.buffer], uniforms: { n_q: 105, n_k: 4097, n_v: 0 }, workgroups: [2, 2, 1] as [number, number, number], clear: [scales.buffer] };
    await ctx.dispatch([command], 'abs-max scalar');
    expect(Array.from((await ctx.read(scales)).data as Float32Array).slice(0, 2)).toEqual([maxAbs(a), 9.25]);
    for (const t of [...g, scales]) t.buffer.destroy();
  });

  it('plans the abs-max dispatch first and binds its scales to the forward', async () => {
    const ctx = tensorCoreView(await gpuContext());
    const t = ctx.createTensor([1, 64, 2, 16], 'float32');
    const lse = ctx.createTensor([1, 64, 2], 'float32');
    const plan = planFusedForwardMma(ctx, 1, { query: t, key: t, value: t, output: t, logsumexp: lse, kernelSize: 7 });
    expect(plan.commands.map((c) => c.kernel.key.split(':')[0])).toEqual(['abs-max3/v3', 'na-fused-forward-mma/v10']);
    expect(plan.kernel.bindings.map((b) => b.name)).toEqual(['query', 'key', 'value', 'output', 'logsumexp', 'scales']);
    expect(plan.commands[1]?.buffers.length).toBe(plan.kernel.bindings.length);
    expect(plan.commands[0]?.buffers[3]).toBe(plan.commands[1]?.buffers[5]);
    plan.release();
    for (const x of [t, lse]) x.buffer.destroy();
    const f16 = ctx.createTensor([1, 64, 2, 16], 'float16');
    const single = planFusedForwardMma(ctx, 1, { query: f16, key: f16, value: f16, output: f16, kernelSize: 7 });
    expect(single.commands).toHaveLength(1);
    f16.buffer.destroy();
  });

  // Magnitudes f16 cannot hold (values to 5e6, 1e-7) or hold only as subnormals: the per-tensor scales bring each
  // tensor to max |x| in (2^13, 2^14] before the split. Checked relative to the output's largest magnitude.
  const cases = [
    { name: '1-D L=90 K=13: V to 5e6, Q to 3e4, K to 1e-4', spatial: [90], kernelSize: [13], q: 3e4, k: 1e-4, v: 5e6, attnScale: 0.02 },
    { name: '2-D 12x14 K=5x7 causal on axis 1: Q and K to 1e-7, V to 1e-6', spatial: [12, 14], kernelSize: [5, 7], q: 1e-7, k: 1e-7, v: 1e-6, attnScale: 1e13, isCausal: [false, true] },
    { name: '2-D 12x14 K=5x7, 16-key chunks and 8 subgroups: V to 5e6', spatial: [12, 14], kernelSize: [5, 7], q: 1, k: 1, v: 5e6, attnScale: 0.25, config: { path: 'mma' as const, queryTile: [8, 16], keyChunk: 16 as const, subgroups: 8 as const } },
    { name: '2-D 12x14 K=5x7, unpadded scratch rows (16-key chunks, 2 subgroups): V to 5e6', spatial: [12, 14], kernelSize: [5, 7], q: 1, k: 1, v: 5e6, attnScale: 0.25, config: { path: 'mma' as const, queryTile: [8, 4], keyChunk: 16 as const, subgroups: 2 as const, tightScratch: true } },
    { name: '2-D 12x14 K=5x7, K and V in turn (16-key chunks, 4 subgroups): V to 5e6', spatial: [12, 14], kernelSize: [5, 7], q: 1, k: 1, v: 5e6, attnScale: 0.25, config: { path: 'mma' as const, queryTile: [8, 8], keyChunk: 16 as const, subgroups: 4 as const, kvInTurn: true } },
    { name: '2-D 12x14 K=5x7 at head dim 64, P over the staged K rows (16-key chunks, 4 subgroups): V to 5e6', spatial: [12, 14], kernelSize: [5, 7], dim: 64, q: 1, k: 1, v: 5e6, attnScale: 0.25, config: { path: 'mma' as const, queryTile: [8, 8], keyChunk: 16 as const, subgroups: 4 as const, tightScratch: true, pOverK: true } },
    { name: '2-D 12x14 K=5x7, S padded and K and V in turn (16-key chunks, 4 subgroups): V to 5e6', spatial: [12, 14], kernelSize: [5, 7], q: 1, k: 1, v: 5e6, attnScale: 0.25, config: { path: 'mma' as const, queryTile: [8, 8], keyChunk: 16 as const, subgroups: 4 as const, tightScratch: true, padS: true, kvInTurn: true } },
    // One outlier: the scale follows it, so typical values sit 2^20 lower, still normal f16 halves.
    { name: '1-D L=90 K=13: one value of V at 1e6, the rest about 1', spatial: [90], kernelSize: [13], q: 1, k: 1, v: 1, attnScale: 0.25, outlier: 1e6 },
  ];
  for (const c of cases) {
    it(c.name, async () => {
      const real = await gpuContext();
      const ctx = tensorCoreView(real);
      const rank = c.spatial.length as 1 | 2;
      const [H, D] = [2, 'dim' in c ? (c.dim as number) : 16];
      const q = scaled([1, ...c.spatial, H, D], 41, c.q);
      const k = scaled([1, ...c.spatial, H, D], 42, c.k);
      const v0 = scaled([1, ...c.spatial, H, D], 43, c.v);
      const v = 'outlier' in c ? tensorFromValues(v0.shape, 'float32', toFloat64Values(v0).map((x, i) => (i === 77 ? (c.outlier as number) : x))) : v0;
      const params = { kernelSize: c.kernelSize, attnScale: c.attnScale, isCausal: c.isCausal ?? false };
      const ref = { output: tensorFromValues(v.shape, 'float32', new Array(v.data.length).fill(0)), logsumexp: tensorFromValues([1, ...c.spatial, H], 'float32', new Array(q.data.length / D).fill(0)) };
      cpuFusedForward(rank, { ...params, query: q, key: k, value: v, ...ref });
      const g = { ...params, query: real.upload(q), key: real.upload(k), value: real.upload(v), output: real.createTensor(v.shape, 'float32'), logsumexp: real.createTensor(ref.logsumexp.shape, 'float32') };
      const { kernel, commands, release } = planFusedForwardMma(ctx, rank, g as FusedForwardArgs<GpuTensor>, 'config' in c ? c.config : undefined);
      try {
        await real.dispatch(commands.map((x) => (x.kernel === kernel ? { ...x, kernel: emulatedKernel(kernel) } : x)), 'split forward (emulated)');
      } finally {
        release();
      }
      const out = toFloat64Values(await real.read(g.output));
      const want = toFloat64Values(ref.output);
      if ('outlier' in c) {
        // Every output within float32's 1e-4 plus 1e-6 relative (the outputs that attend the outlier are near 1e6,
        // where one float32 step is 0.06): the outputs that do not attend it keep their full precision.
        const bad = Array.from(out).filter((x, i) => !(Math.abs(x - (want[i] as number)) <= 1e-4 + 1e-6 * Math.abs(want[i] as number)));
        expect(bad).toEqual([]);
      } else {
        const worst = out.reduce((m, x, i) => Math.max(m, Math.abs(x - (want[i] as number))), 0);
        expect(worst / maxAbs(ref.output)).toBeLessThan(1e-5);
      }
      const lse = toFloat64Values(await real.read(g.logsumexp));
      const lseWant = toFloat64Values(ref.logsumexp);
      expect(lse.reduce((m, x, i) => Math.max(m, Math.abs(x - (lseWant[i] as number))), 0)).toBeLessThan(1e-4);
      for (const t of [g.query, g.key, g.value, g.output, g.logsumexp]) t.buffer.destroy();
    });
  }
});
