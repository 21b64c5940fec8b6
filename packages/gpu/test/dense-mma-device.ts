/**
 * Device script (not a test): dense attention (`denseForward` / `denseBackward`) on the plain kernels against the
 * tensor-core kernels, float16: GPU time (median of `ctx.profile` runs, clock held up) and TFLOP/s (forward
 * 4 Sq Skv D H, halved when causal; backward 2.5x that, FlashAttention's counts), and the largest difference between
 * the two paths' outputs, lse and gradients (the plain kernels compute in f32, so this bounds the tensor cores' error).
 * `bench/baselines/torch_dense.py` times torch's `scaled_dot_product_attention` on the same problems.
 * Bundle with `tools/device/bundle.sh packages/gpu/test/dense-mma-device.ts` and run there.
 */
import { randn, toFloat64Values } from '@natten-web/core';
import { type DenseOptions, denseBackward, denseBackwardPlan, denseForward, denseForwardPlan, type GpuTensor, timeDispatch } from '../src/index.ts';
import { cumulative, referenceVarlen } from '@natten-web/testkit';
import { openDevice } from './device-forward-problems.ts';

const { ctx, warmer } = await openDevice();
// `--f32`: float32 tensors (the split on the tensor cores).
const dtype = process.argv.includes('--f32') ? 'float32' : 'float16';

// ---- Checks: both paths against the f64 reference (per sequence with varlen) on problems small enough for it.
const checks = [
  { name: 'varlen 8 x 64 causal H=2 D=64', seqQ: [64, 64, 64, 64, 64, 64, 64, 64], seqKv: [64, 64, 64, 64, 64, 64, 64, 64], H: 2, Hkv: 2, D: 64, Dv: 64, causal: true },
  { name: 'varlen 8 x 64 H=2 D=64', seqQ: [64, 64, 64, 64, 64, 64, 64, 64], seqKv: [64, 64, 64, 64, 64, 64, 64, 64], H: 2, Hkv: 2, D: 64, Dv: 64, causal: false },
  { name: 'varlen mixed causal GQA D=32/16', seqQ: [5, 0, 70, 1, 33], seqKv: [7, 3, 40, 1, 20], H: 4, Hkv: 2, D: 32, Dv: 16, causal: true },
  { name: 'one sequence 300 causal D=64', seqQ: [300], seqKv: [300], H: 2, Hkv: 1, D: 64, Dv: 64, causal: true },
  { name: 'one sequence 200 x 700 D=128', seqQ: [200], seqKv: [700], H: 2, Hkv: 2, D: 128, Dv: 128, causal: false },
];
for (const c of process.argv.includes('--no-check') ? [] : checks) {
  const S = cumulative(c.seqQ).at(-1) as number;
  const N = cumulative(c.seqKv).at(-1) as number;
  const { H, Hkv, D, Dv } = c;
  const t = [randn([1, S, H, D], dtype, 1), randn([1, N, Hkv, D], dtype, 2), randn([1, N, Hkv, Dv], dtype, 3), randn([1, S, H, Dv], dtype, 4)];
  const [qv, kv, vv, gv] = t.map((x) => toFloat64Values(x)) as [Float64Array, Float64Array, Float64Array, Float64Array];
  const scale = 0.3;
  const ref = referenceVarlen(c, qv, kv, vv, gv, scale);
  const { cuQ, cuKv } = ref;
  const want = [ref.out, ref.dq, ref.dk, ref.dv];
  const [gq, gk, gvv, gdO] = t.map((x) => ctx.upload(x)) as [GpuTensor, GpuTensor, GpuTensor, GpuTensor];
  const varlen = c.seqQ.length > 1 ? { cumulativeSeqlenQ: cuQ, cumulativeSeqlenKv: cuKv } : {};
  for (const path of ['plain', 'mma'] as const) {
    const output = ctx.createTensor([1, S, H, Dv], dtype);
    const lse = ctx.createTensor([1, S, H], 'float32');
    const grads = { gradQuery: ctx.createTensor([1, S, H, D], dtype), gradKey: ctx.createTensor([1, N, Hkv, D], dtype), gradValue: ctx.createTensor([1, N, Hkv, Dv], dtype) };
    await denseForward(ctx, { query: gq, key: gk, value: gvv, output, lse, scale, isCausal: c.causal, ...varlen }, { path });
    await denseBackward(ctx, { query: gq, key: gk, value: gvv, output, lse, gradOutput: gdO, ...grads, scale, isCausal: c.causal, ...varlen }, { path });
    const got = await Promise.all([output, grads.gradQuery, grads.gradKey, grads.gradValue].map(async (x) => toFloat64Values(await ctx.read(x))));
    const parts = ['out', 'dq', 'dk', 'dv'].map((n, i) => {
      const g = got[i] as Float64Array;
      const w = want[i] as Float64Array;
      const nan = g.reduce((a, x) => a + (Number.isFinite(x) ? 0 : 1), 0);
      const big = w.reduce((m, x) => Math.max(m, Math.abs(x)), 0);
      return `${n} ${maxDiff(g, w).toExponential(1)} (of ${big.toFixed(2)}${nan ? `, ${nan} not finite` : ''})`;
    });
    console.log(`check ${c.name.padEnd(34)} ${path.padEnd(6)} max |GPU - f64|: ${parts.join(', ')}`);
    for (const x of [output, lse, grads.gradQuery, grads.gradKey, grads.gradValue]) x.buffer.destroy();
  }
  for (const x of [gq, gk, gvv, gdO]) x.buffer.destroy();
}
const problems = [
  { name: 'self 4096 H=8 D=64', B: 1, S: 4096, N: 4096, H: 8, D: 64, causal: false },
  { name: 'causal 4096 H=8 D=64', B: 1, S: 4096, N: 4096, H: 8, D: 64, causal: true },
  { name: 'cross 4096 x 1024 B=2 H=8 D=64', B: 2, S: 4096, N: 1024, H: 8, D: 64, causal: false },
  { name: 'extra 4096 x 64 H=8 D=64', B: 1, S: 4096, N: 64, H: 8, D: 64, causal: false },
  { name: 'self 4096 H=8 D=128', B: 1, S: 4096, N: 4096, H: 8, D: 128, causal: false },
  { name: 'varlen 8 x 512 causal H=8 D=64', B: 1, S: 4096, N: 4096, H: 8, D: 64, causal: true, seqs: 8 },
];
const only = process.argv.slice(2).find((a) => !a.startsWith('--'));
function maxDiff(a: Float64Array, b: Float64Array): number {
  return a.reduce((m, x, i) => Math.max(m, Math.abs(x - (b[i] as number))), 0);
}
for (const p of problems.filter((x) => !only || x.name.includes(only))) {
  const up = (shape: number[], seed: number): GpuTensor => ctx.upload(randn(shape, dtype, seed));
  const q = up([p.B, p.S, p.H, p.D], 1);
  const k = up([p.B, p.N, p.H, p.D], 2);
  const v = up([p.B, p.N, p.H, p.D], 3);
  const dO = up([p.B, p.S, p.H, p.D], 4);
  const cu = p.seqs ? Array.from({ length: p.seqs + 1 }, (_, i) => (i * p.S) / p.seqs) : undefined;
  const varlen = cu ? { cumulativeSeqlenQ: cu, cumulativeSeqlenKv: cu } : {};
  const scale = 1 / Math.sqrt(p.D);
  const keysPerQuery = p.seqs ? p.N / p.seqs : p.N;
  const flops = 4 * p.B * p.S * keysPerQuery * p.D * p.H * (p.causal ? 0.5 : 1);
  const results: Record<string, Float64Array[]> = {};
  // The plain kernels take seconds here: timed with `--plain` only. `--sweep`: the tensor-core kernels' chunks
  // and scratch layouts, each variant twice in turn (no per-kernel lines).
  const sweep = process.argv.includes('--sweep');
  const variants: [string, DenseOptions][] = sweep
    ? (['16', '32', '64', '16 tight', '32 tight'] as const).flatMap((v): [string, DenseOptions][] => {
        const c = Number(v.split(' ')[0]) as 16 | 32 | 64;
        const o: DenseOptions = { path: 'mma', chunk: { forward: c, dq: c === 64 ? 32 : c, dkv: c === 64 ? 32 : c }, ...(v.endsWith('tight') ? { tight: true } : {}) };
        return [[`mma ${v}`, o]];
      })
    : [...(process.argv.includes('--plain') ? [['plain', { path: 'plain' }] as [string, DenseOptions]] : []), ['mma', { path: 'mma' }]];
  for (const [label, options] of sweep ? [...variants, ...variants] : variants) {
    const output = ctx.createTensor([p.B, p.S, p.H, p.D], dtype);
    const lse = ctx.createTensor([p.B, p.S, p.H], 'float32');
    const grads = { gradQuery: ctx.createTensor(q.shape, dtype), gradKey: ctx.createTensor(k.shape, dtype), gradValue: ctx.createTensor(v.shape, dtype) };
    const fargs = { query: q, key: k, value: v, output, lse, scale, isCausal: p.causal, ...varlen };
    const bargs = { ...fargs, gradOutput: dO, ...grads };
    try {
      const reps = label === 'plain' ? 3 : 10;
      const time = async (commands: Parameters<typeof timeDispatch>[1]): Promise<number> => (await timeDispatch(ctx, commands, { warmup: 2, iterations: reps, ...(warmer ? { warmer } : {}) })).medianNs / 1e6;
      // GPU time of each direction's recorded dispatches together.
      const fplan = denseForwardPlan(ctx, fargs, options);
      const f = await time(fplan.commands);
      fplan.release();
      await denseForward(ctx, fargs, options);
      const plan = denseBackwardPlan(ctx, bargs, options);
      const b = await time(plan.commands);
      console.log(
        `${p.name.padEnd(32)} ${label.padEnd(13)} forward ${(f * 1e3).toFixed(1).padStart(9)} us ${(flops / (f * 1e-3) / 1e12).toFixed(1).padStart(6)} TFLOP/s   backward ${(b * 1e3).toFixed(1).padStart(9)} us ${((2.5 * flops) / (b * 1e-3) / 1e12).toFixed(1).padStart(6)} TFLOP/s`,
      );
      if (!sweep) {
        const each: string[] = [];
        for (const c of plan.commands) each.push(`${c.kernel.key.split('/')[0]} ${((await time([c])) * 1e3).toFixed(1)} us (grid ${c.workgroups.join('x')})`);
        console.log(`${''.padEnd(32)} ${label.padEnd(13)} alone: ${each.join(', ')}`);
      }
      plan.release();
      await denseBackward(ctx, bargs, options);
      results[label] = await Promise.all([output, lse, grads.gradQuery, grads.gradKey, grads.gradValue].map(async (t) => toFloat64Values(await ctx.read(t))));
    } catch (e) {
      console.log(`${p.name.padEnd(32)} ${label.padEnd(13)} ${(e as Error).message}`);
    }
    for (const t of [output, lse, grads.gradQuery, grads.gradKey, grads.gradValue]) t.buffer.destroy();
  }
  const [a, b] = [results.plain, results.mma];
  if (a && b) {
    const names = ['out', 'lse', 'dq', 'dk', 'dv'];
    const scaleOf = (x: Float64Array): number => x.reduce((m, y) => Math.max(m, Math.abs(y)), 0);
    console.log(`${p.name.padEnd(32)} max |mma - plain|: ${names.map((n, i) => `${n} ${maxDiff(a[i] as Float64Array, b[i] as Float64Array).toExponential(1)} (of ${scaleOf(a[i] as Float64Array).toFixed(2)})`).join(', ')}`);
  }
  for (const t of [q, k, v, dO]) t.buffer.destroy();
}
ctx.destroy();
setTimeout(() => process.exit(0), 2000).unref();
