/**
 * Device script (not a test): a NeighborhoodAttention2D layer on GPU tensors against the same layer on host tensors
 * (linear layers on the host, attention on the GPU), on the device's adapter: max error and wall time per forward.
 * Bundle with `tools/device/bundle.sh packages/natten-web/test/module-device.ts` and run there.
 */
import { compareTensors, randn } from '@natten-web/core';
import { ClockWarmer, linear } from '@natten-web/gpu';
import { batch, dispose, free, info, na2d, NeighborhoodAttention2D, setBackend, synchronize, toGpu, toHost } from '../src/index.ts';
import { gpuContext } from '../src/runtime.ts';

setBackend('webgpu');
const i = await info();
console.log(`adapter: ${i.adapter?.vendor} ${i.adapter?.device} (${i.adapter?.description})`);
const tiny = process.argv[2] === 'tiny';
const layers = tiny
  ? [{ name: 'tiny 2-D 8x8 C=16 H=2 K=3', dim: 16, heads: 2, k: 3, shape: [1, 8, 8, 16] }]
  : [
      { name: 'NAT stage 1: 56x56 C=64 H=2 K=7 batch 8', dim: 64, heads: 2, k: 7, shape: [8, 56, 56, 64] },
      { name: 'NAT stage 3: 14x14 C=256 H=8 K=7 batch 8', dim: 256, heads: 8, k: 7, shape: [8, 14, 14, 256] },
    ];
for (const l of layers) {
  for (const dtype of ['float32', 'float16'] as const) {
    const m = new NeighborhoodAttention2D({ dim: l.dim, numHeads: l.heads, kernelSize: l.k, relPosBias: true, seed: 1 });
    const x = randn(l.shape, dtype, 3);
    const gx = await toGpu(x);
    const t0 = performance.now();
    const host = await m.forward(x);
    const hostMs = performance.now() - t0;
    const gpu = await toHost(await m.forward(gx));
    const err = compareTensors(gpu, host);
    const n = tiny ? 3 : 50;
    for (let r = 0; r < 3; r++) await m.forward(gx);
    await synchronize();
    const t1 = performance.now();
    for (let r = 0; r < n; r++) await m.forward(gx);
    await synchronize();
    const gpuMs = (performance.now() - t1) / n;
    // A stack of 8 such layers, each output freed once the next layer has used it: one batch per stack, or each
    // layer submitted on its own; wall time per layer.
    const stack = async (batched: boolean): Promise<number> => {
      const once = async (): Promise<void> => {
        let h = gx;
        for (let j = 0; j < 8; j++) {
          const y = await m.forward(h);
          if (h !== gx) free(h);
          h = y;
        }
        free(h);
      };
      const go = () => (batched ? batch(once) : once());
      await go();
      await synchronize();
      const reps = tiny ? 2 : 10;
      const t = performance.now();
      for (let r = 0; r < reps; r++) await go();
      await synchronize();
      return (performance.now() - t) / reps / 8;
    };
    const stackMs = await stack(false);
    const stackBatchMs = await stack(true);
    // Output allocation alone: a tensor of the layer's output size created and destroyed, per call (host time).
    const ctx0 = await gpuContext('module-device');
    const ta = performance.now();
    for (let r = 0; r < 100; r++) ctx0.createTensor(l.shape, dtype).buffer.destroy();
    const allocUs = ((performance.now() - ta) / 100) * 1e3;
    const tr = performance.now();
    for (let r = 0; r < 100; r++) ctx0.freeTensor(ctx0.createTensor(l.shape, dtype));
    const recycledUs = ((performance.now() - tr) / 100) * 1e3;
    console.log(`${l.name} ${dtype}: stack of 8 layers, ms per layer (wall): one submission per layer ${stackMs.toFixed(3)}, the stack in one batch ${stackBatchMs.toFixed(3)}; output allocation ${allocUs.toFixed(1)} us per call, recycled (createTensor + freeTensor) ${recycledUs.toFixed(1)} us`);
    // The layer's parts alone, GPU time (ctx.profile): the qkv projection, the attention, the output projection.
    const ctx = await gpuContext('module-device');
    const H = l.heads;
    const D = l.dim / H;
    const q = await toGpu(randn([...l.shape.slice(0, 3), H, D], dtype, 4));
    const w = await toGpu(randn([3 * l.dim, l.dim], dtype, 5, 0.1));
    const wp = await toGpu(randn([l.dim, l.dim], dtype, 6, 0.1));
    const outs = [0, 1, 2].map(() => ctx.createTensor(q.shape, dtype));
    const y = ctx.createTensor(l.shape, dtype);
    const warmer = ClockWarmer.useful(ctx) ? await ClockWarmer.create(ctx) : undefined;
    const gpuUs = async (f: () => Promise<unknown>): Promise<string> => {
      await f();
      if (warmer) await warmer.warm(200);
      const t: number[] = [];
      for (let r = 0; r < 7; r++) {
        warmer?.queue();
        t.push(((await ctx.profile(f)).gpuNs ?? Number.NaN) / 1e3);
      }
      return t.sort((a, b) => a - b)[3]?.toFixed(1) ?? '-';
    };
    const qkvUs = await gpuUs(() => linear(ctx, { input: gx as never, weight: w, bias: null, outputs: outs }));
    const naUs = await gpuUs(() => na2d(q, q, q, { kernelSize: l.k }));
    const projUs = await gpuUs(() => linear(ctx, { input: q, weight: wp, bias: null, outputs: [y] }));
    console.log(`${l.name} ${dtype}: GPU layer ${gpuMs.toFixed(3)} ms per forward (wall), host-linear layer ${hostMs.toFixed(1)} ms; max |GPU - host| ${err.maxAbs.toExponential(2)}; GPU us: qkv ${qkvUs}, NA ${naUs}, proj ${projUs}`);
  }
}
await dispose();
setTimeout(() => process.exit(0), 1000).unref();
