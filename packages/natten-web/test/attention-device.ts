/**
 * Device script (not a test): GPU time (median of `ctx.profile` runs, clock held up) of the umbrella's dense
 * `attention` / `attentionBackward` on self-attention problems, which route to 1-D NA with the whole sequence as
 * the window, against `@natten-web/gpu`'s dense tensor-core kernels on the same tensors; and of `na2d` with and
 * without additional keys/values. float16. Bundle with `tools/device/bundle.sh packages/natten-web/test/attention-device.ts`.
 */
import { randn } from '@natten-web/core';
import { ClockWarmer, denseBackward, denseForward, type GpuContext, type GpuTensor } from '@natten-web/gpu';
import { attention, attentionBackward, dispose, free, na2d, na2dBackward, setBackend, toGpu } from '../src/index.ts';
import { gpuContext } from '../src/runtime.ts';

setBackend('webgpu');
const ctx: GpuContext = await gpuContext('attention-device');
const warmer = ClockWarmer.useful(ctx) ? await ClockWarmer.create(ctx) : undefined;
console.log(`adapter: ${ctx.adapterInfo.vendor} ${ctx.adapterInfo.device}`);

async function gpuMs(run: () => Promise<unknown>, reps = 10): Promise<number> {
  if (warmer) await warmer.warm(300);
  await run();
  const s: number[] = [];
  for (let i = 0; i < reps; i++) {
    warmer?.queue();
    const p = await ctx.profile(run);
    s.push(p.gpuNs === undefined ? p.wallMs : p.gpuNs / 1e6);
  }
  return s.sort((a, b) => a - b)[Math.floor(reps / 2)] as number;
}
const us = (ms: number): string => `${(ms * 1e3).toFixed(1).padStart(8)} us`;

for (const p of [
  { name: 'self 4096 H=8 D=64', S: 4096, H: 8, D: 64, causal: false },
  { name: 'causal 4096 H=8 D=64', S: 4096, H: 8, D: 64, causal: true },
  { name: 'self 4096 H=8 D=128', S: 4096, H: 8, D: 128, causal: false },
  { name: 'self 1024 H=8 D=64 B=8', S: 1024, H: 8, D: 64, causal: false, B: 8 },
]) {
  const B = p.B ?? 1;
  const [q, k, v, dO] = (await Promise.all([1, 2, 3, 4].map((s) => toGpu(randn([B, p.S, p.H, p.D], 'float16', s))))) as GpuTensor[] as [GpuTensor, GpuTensor, GpuTensor, GpuTensor];
  const opts = { isCausal: p.causal };
  const f = await attention(q, k, v, { ...opts, returnLse: true });
  const naF = await gpuMs(async () => {
    const o = await attention(q, k, v, { ...opts, returnLse: true });
    free(o.output);
    free(o.lse);
  });
  const naB = await gpuMs(async () => {
    const g = await attentionBackward(q, k, v, f.output, dO, f.lse, opts);
    for (const t of Object.values(g)) free(t);
  });
  const output = ctx.createTensor(f.output.shape, 'float16');
  const lse = ctx.createTensor(f.lse.shape, 'float32');
  const grads = { gradQuery: ctx.createTensor(q.shape, 'float16'), gradKey: ctx.createTensor(k.shape, 'float16'), gradValue: ctx.createTensor(v.shape, 'float16') };
  const args = { query: q, key: k, value: v, output, lse, scale: 1 / Math.sqrt(p.D), isCausal: p.causal };
  const dF = await gpuMs(() => denseForward(ctx, args, { path: 'mma' }));
  const dB = await gpuMs(() => denseBackward(ctx, { ...args, gradOutput: dO, ...grads }, { path: 'mma' }));
  console.log(`${p.name.padEnd(24)} forward: NA route ${us(naF)}, dense tensor cores ${us(dF)}   backward: NA route ${us(naB)}, dense tensor cores ${us(dB)}`);
  for (const t of [q, k, v, dO, f.output, f.lse, output, lse, ...Object.values(grads)]) free(t);
}

// na2d with additional keys/values (NA + dense + merge) against na2d alone.
for (const M of [0, 16, 256]) {
  const shape = [1, 64, 64, 8, 64];
  const [q, k, v, dO] = (await Promise.all([1, 2, 3, 4].map((s) => toGpu(randn(shape, 'float16', s))))) as GpuTensor[] as [GpuTensor, GpuTensor, GpuTensor, GpuTensor];
  const extra = M > 0 ? { additionalKeys: await toGpu(randn([1, M, 8, 64], 'float16', 5)), additionalValues: await toGpu(randn([1, M, 8, 64], 'float16', 6)) } : {};
  const opts = { kernelSize: 7, ...extra };
  const f = await na2d(q, k, v, { ...opts, returnLse: true });
  const fMs = await gpuMs(async () => {
    const o = await na2d(q, k, v, { ...opts, returnLse: true });
    free(o.output);
    free(o.lse);
  });
  const bMs = await gpuMs(async () => {
    const g = await na2dBackward(q, k, v, f.output, dO, f.lse, opts);
    for (const t of Object.values(g)) free(t as GpuTensor);
  });
  console.log(`na2d 64x64 K=7 H=8 D=64 + ${String(M).padStart(3)} extra tokens: forward ${us(fMs)}, backward ${us(bMs)}`);
}
await dispose();
setTimeout(() => process.exit(0), 1000).unref();
