/**
 * Device script (not a test): na2d / na1d with additional keys/values, forward and backward, and dense `attention`,
 * on GPU tensors: max error against the CPU backend (f64) on the same inputs, and wall time per call (GPU tensors,
 * synchronize after a loop of calls). Run it from two bundles to compare paths (before session 22 the dense part and
 * the merge ran on the host). Bundle with `tools/device/bundle.sh packages/natten-web/test/dense-device.ts`.
 */
import { compareTensors, randn, type Tensor } from '@natten-web/core';
import { attention, attentionBackward, dispose, free, info, na1d, na1dBackward, na2d, na2dBackward, setBackend, synchronize, toGpu, toHost } from '../src/index.ts';

setBackend('webgpu');
const i = await info();
console.log(`adapter: ${i.adapter?.vendor} ${i.adapter?.device}`);
const only = process.argv[2];
const problems = [
  { name: '2-D 32x32 H=4 D=32 K=7 + 8 extra', rank: 2, spatial: [32, 32], H: 4, D: 32, K: 7, M: 8, check: true },
  { name: '2-D 64x64 H=8 D=64 K=7 + 16 extra', rank: 2, spatial: [64, 64], H: 8, D: 64, K: 7, M: 16, check: false },
  { name: '1-D 4096 H=8 D=64 K=127 + 64 extra', rank: 1, spatial: [4096], H: 8, D: 64, K: 127, M: 64, check: false },
];
const wall = async (f: () => Promise<unknown>, reps: number): Promise<number> => {
  await f();
  await synchronize();
  const t = performance.now();
  for (let r = 0; r < reps; r++) await f();
  await synchronize();
  return (performance.now() - t) / reps;
};
for (const p of problems.filter((x) => !only || x.name.includes(only))) {
  for (const dtype of ['float32', 'float16'] as const) {
    const shape = [1, ...p.spatial, p.H, p.D];
    const extra = [1, p.M, p.H, p.D];
    const [q, k, v, dO] = [1, 2, 3, 4].map((s) => randn(shape, dtype, s)) as [Tensor, Tensor, Tensor, Tensor];
    const [ak, av] = [5, 6].map((s) => randn(extra, dtype, s)) as [Tensor, Tensor];
    const [gq, gk, gv, gdO, gak, gav] = await Promise.all([q, k, v, dO, ak, av].map((t) => toGpu(t)));
    type Any = (...a: unknown[]) => Promise<unknown>;
    const fwd = (p.rank === 1 ? na1d : na2d) as unknown as Any;
    const bwd = (p.rank === 1 ? na1dBackward : na2dBackward) as unknown as Any;
    const opts = { kernelSize: p.K, additionalKeys: gak, additionalValues: gav };
    const f = (await fwd(gq as never, gk as never, gv as never, { ...opts, returnLse: true } as never)) as { output: never; lse: never };
    const fwdMs = await wall(async () => {
      const o = (await fwd(gq as never, gk as never, gv as never, { ...opts, returnLse: true } as never)) as { output: never; lse: never };
      free(o.output);
      free(o.lse);
    }, 10);
    const bwdMs = await wall(async () => {
      const g = (await bwd(gq, gk, gv, f.output, gdO, f.lse, opts)) as Record<string, never>;
      for (const t of Object.values(g)) free(t);
    }, 10);
    let errs = '';
    if (p.check) {
      const hf = (await fwd(q as never, k as never, v as never, { kernelSize: p.K, additionalKeys: ak, additionalValues: av, returnLse: true, backend: 'cpu' } as never)) as { output: Tensor; lse: Tensor };
      const ho = await toHost(f.output as never);
      const hl = await toHost(f.lse as never);
      const hb = (await bwd(q as never, k as never, v as never, ho as never, dO as never, hl as never, { kernelSize: p.K, additionalKeys: ak, additionalValues: av, backend: 'cpu' } as never)) as Record<string, Tensor>;
      const gb = (await bwd(gq, gk, gv, f.output, gdO, f.lse, opts)) as Record<string, never>;
      const parts = [`out ${compareTensors(ho, hf.output).maxAbs.toExponential(1)}`, `lse ${compareTensors(hl, hf.lse).maxAbs.toExponential(1)}`];
      for (const n of ['gradQuery', 'gradKey', 'gradValue', 'gradAdditionalKeys', 'gradAdditionalValues']) parts.push(`${n} ${compareTensors(await toHost(gb[n] as never), hb[n] as Tensor).maxAbs.toExponential(1)}`);
      errs = `; max |GPU - CPU|: ${parts.join(', ')}`;
    }
    console.log(`${p.name} ${dtype}: forward ${fwdMs.toFixed(3)} ms, backward ${bwdMs.toFixed(3)} ms per call (wall)${errs}`);
    // Dense attention of the same queries over all tokens (a dense baseline of the same size), forward only.
    if (p.rank === 1) {
      const aMs = await wall(async () => free((await attention(gq as never, gk as never, gv as never)) as never), 5);
      const flops = 4 * p.spatial[0] ** 2 * p.H * p.D;
      console.log(`  attention ${p.spatial[0]}x${p.spatial[0]} dense ${dtype}: ${aMs.toFixed(3)} ms (${(flops / aMs / 1e9).toFixed(1)} TFLOP/s)`);
    }
    for (const t of [gq, gk, gv, gdO, gak, gav]) free(t as never);
  }
}
// Variable-length attention: 8 packed sequences of 100-900 tokens, 8 heads, head dim 64, causal, forward and backward.
if (!only || only === 'varlen') {
  const lens = [412, 100, 900, 256, 640, 333, 777, 128];
  const total = lens.reduce((a, b) => a + b, 0);
  for (const dtype of ['float32', 'float16'] as const) {
    const [q, k, v, dO] = [1, 2, 3, 4].map((s) => randn([1, total, 8, 64], dtype, s)) as [Tensor, Tensor, Tensor, Tensor];
    const [gq, gk, gv, gdO] = await Promise.all([q, k, v, dO].map((t) => toGpu(t)));
    const opts = { seqlensQ: lens, seqlensKv: lens, isCausal: true };
    const g = await attention(gq, gk, gv, { ...opts, returnLse: true });
    const fMs = await wall(async () => {
      const o = await attention(gq, gk, gv, { ...opts, returnLse: true });
      free(o.output);
      free(o.lse);
    }, 5);
    const bMs = await wall(async () => {
      const r = await attentionBackward(gq, gk, gv, g.output, gdO, g.lse, opts);
      for (const t of Object.values(r)) free(t);
    }, 5);
    const h = await attention(q, k, v, { ...opts, returnLse: true });
    const gb = await attentionBackward(gq, gk, gv, g.output, gdO, g.lse, opts);
    const hb = await attentionBackward(q, k, v, await toHost(g.output), dO, await toHost(g.lse), opts);
    const errs = [`out ${compareTensors(await toHost(g.output), h.output).maxAbs.toExponential(1)}`, `lse ${compareTensors(await toHost(g.lse), h.lse).maxAbs.toExponential(1)}`];
    for (const n of ['gradQuery', 'gradKey', 'gradValue'] as const) errs.push(`${n} ${compareTensors(await toHost(gb[n]), hb[n]).maxAbs.toExponential(1)}`);
    console.log(`varlen 8 sequences (${total} tokens) H=8 D=64 causal ${dtype}: forward ${fMs.toFixed(3)} ms, backward ${bMs.toFixed(3)} ms (wall); max |GPU - CPU|: ${errs.join(', ')}`);
  }
}
await dispose();
setTimeout(() => process.exit(0), 1000).unref();
