/** Device diagnostic for the tensor-core forward: tiny problems, rows printed next to the CPU reference. */
import { type FusedForwardArgs, randn, tensor, toFloat64Values, type Tensor } from '@natten-web/core';
import { fusedForward as cpuFusedForward } from '@natten-web/cpu';
import { fusedForwardSgmat, GpuContext, type GpuTensor } from '../src/index.ts';

const ctx = await GpuContext.create({ powerPreference: 'high-performance' });
async function run(name: string, L: number, K: number, D: number, zeroQ: boolean, ones: boolean) {
  const q = randn([1, L, 1, D], 'float16', 3);
  const k = randn([1, L, 1, D], 'float16', 4);
  const v = randn([1, L, 1, D], 'float16', 5);
  const qv = q.data as Uint16Array;
  if (zeroQ) qv.fill(0);
  if (ones) (v.data as Uint16Array).fill(0x3c00);
  const out = tensor([1, L, 1, D], 'float16');
  const lse = tensor([1, L, 1], 'float32');
  const host: FusedForwardArgs = { output: out, query: q, key: k, value: v, rpb: null, logsumexp: lse, kernelSize: [K], dilation: 1, isCausal: false };
  cpuFusedForward(1, host);
  const g: FusedForwardArgs<GpuTensor> = { ...host, output: ctx.createTensor(out.shape, 'float16'), query: ctx.upload(q), key: ctx.upload(k), value: ctx.upload(v), logsumexp: ctx.createTensor(lse.shape, 'float32') } as FusedForwardArgs<GpuTensor>;
  await fusedForwardSgmat(ctx, 1, g, { path: 'sgmat', queryTile: [16], keyChunk: 32 });
  const go = toFloat64Values(await ctx.read(g.output));
  const gl = toFloat64Values(await ctx.read(g.logsumexp as GpuTensor));
  const co = toFloat64Values(out as Tensor);
  const cl = toFloat64Values(lse as Tensor);
  console.log(`== ${name}`);
  for (const r of [0, 1, 5, L - 1]) {
    console.log(`row ${r}: lse gpu ${gl[r]?.toFixed(4)} cpu ${cl[r]?.toFixed(4)} | out gpu ${Array.from(go.slice(r * D, r * D + 4), (x) => x.toFixed(3)).join(' ')} cpu ${Array.from(co.slice(r * D, r * D + 4), (x) => x.toFixed(3)).join(' ')}`);
  }
}
await run('zero Q, V=1 (lse = ln K, out = 1)', 16, 3, 16, true, true);
await run('zero Q, random V', 16, 3, 16, true, false);
await run('random, K=3 D=16', 16, 3, 16, false, false);
await run('random, K=7 L=40 D=32', 40, 7, 32, false, false);
ctx.destroy();
