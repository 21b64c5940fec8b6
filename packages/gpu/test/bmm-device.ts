/**
 * Device script (not a test): the BMM-style ops (`qkForward`, `avForward`, `qkBackward`, `avBackward`; heads-first)
 * on the benchmark problems, GPU time (us, `timeDispatch` over each op's plan) on the plain kernels and, in float16,
 * the tensor-core ones, against the fused forward (default path, `ctx.profile`) on the same problem, with each op's
 * TFLOP/s (2 N P D per head for each product) and the attention tensor's bytes per second. `--dtype float16|float32`,
 * `--only <name parts>`, `--reps N`; `--check` first runs every op of `bmm-cases.ts` (head dims raised to multiples of
 * 16) and some larger problems on the default path against the CPU reference. Bundle with
 * `tools/device/bundle.sh packages/gpu/test/bmm-device.ts` and run there.
 */
import { attnShape, type NaRank, randn } from '@natten-web/core';
import { parseArgs } from 'node:util';
import { cpuBackend } from '@natten-web/cpu';
import {
  avBackwardPlan,
  type BmmPath,
  createGpuBackend,
  fusedForward,
  avForwardPlan,
  type DispatchCommand,
  type GpuContext,
  type GpuTensor,
  qkBackwardPlan,
  qkForwardPlan,
} from '../src/index.ts';
import { BMM_CASES, type BmmCase, type BmmOpName, mismatch, runBmm } from './bmm-cases.ts';
import { gpuArgs, makeArgs, openDevice, speedProblems, timeCommand, timeRun, type Problem } from './device-forward-problems.ts';

const { values } = parseArgs({
  options: {
    dtype: { type: 'string', default: 'float16' },
    only: { type: 'string', default: '' },
    reps: { type: 'string', default: '20' },
    check: { type: 'boolean', default: false },
    paths: { type: 'string', default: 'plain,mma' },
  },
});
const dtype = values.dtype === 'float32' ? 'float32' : 'float16';
const reps = Number(values.reps);
const { ctx, warmer } = await openDevice();

if (values.check) {
  // The unit cases with head dims raised to multiples of 16, and larger ones (several tiles, long windows).
  const raised = BMM_CASES.map((k): BmmCase => {
    const D = k.D < 16 ? 16 : 2 * k.D;
    return { ...k, D, name: k.name.replace(/D=\d+$/, `D=${D}`) };
  });
  const larger: BmmCase[] = [
    { name: '1d 1024 K=127 causal D=64', rank: 1, sp: [1024], K: [127], d: [1], s: [1], causal: [true], rpb: false, B: 1, H: 2, D: 64 },
    { name: '2d 40x36 K=7 d=2 rpb D=32', rank: 2, sp: [40, 36], K: [7, 7], d: [2, 2], s: [1, 1], causal: [false, false], rpb: true, B: 2, H: 2, D: 32 },
    { name: '2d 33x30 K=9x5 s=2x3 causal D=128', rank: 2, sp: [33, 30], K: [9, 5], d: [1, 1], s: [2, 3], causal: [true, false], rpb: false, B: 1, H: 1, D: 128 },
    { name: '3d 8x12x16 K=3x5x7 rpb D=64', rank: 3, sp: [8, 12, 16], K: [3, 5, 7], d: [1, 1, 1], s: [1, 1, 1], causal: [false, false, false], rpb: true, B: 1, H: 2, D: 64 },
  ];
  const gpu = createGpuBackend(ctx);
  let bad = 0;
  let n = 0;
  for (const [i, k] of [...raised, ...larger].entries()) {
    for (const op of ['qk_forward', 'qk_backward', 'av_forward', 'av_backward'] as BmmOpName[]) {
      const want = await runBmm(cpuBackend, op, k, 'float16', 100 + i);
      const got = await runBmm(gpu, op, k, 'float16', 100 + i);
      const errs = Object.entries(want.outputs).map(([name, t]) => [name, got.outputs[name] ? mismatch(got.outputs[name], t, 'float16') : 'missing'] as const);
      const fails = errs.filter(([, e]) => e !== undefined);
      n++;
      if (fails.length > 0) bad++;
      console.log(`${fails.length ? 'FAIL' : 'ok  '} ${op.padEnd(12)} ${k.name}${fails.map(([nm, e]) => ` | ${nm}: ${e}`).join('')}`);
    }
  }
  console.log(`check: ${n - bad}/${n} ok (float16, default path: ${ctx.features.has('chromium-experimental-subgroup-matrix') ? 'tensor cores' : 'plain'})`);
}

interface BmmTensors {
  q: GpuTensor;
  k: GpuTensor;
  v: GpuTensor;
  dO: GpuTensor;
  attn: GpuTensor;
  dAttn: GpuTensor;
  out: GpuTensor;
  dq: GpuTensor;
  dk: GpuTensor;
  dv: GpuTensor;
}

function tensorsFor(c: GpuContext, p: Problem): BmmTensors {
  const rows = [1, p.heads, ...p.spatial, p.dim];
  const P = p.kernelSize.reduce((a, b) => a * b, 1);
  const aShape = attnShape(1, p.heads, p.spatial, P);
  const up = (shape: number[], seed: number): GpuTensor => c.upload(randn(shape, dtype, seed));
  // Attention weights of a plausible size (softmax-like magnitudes), so products stay finite in float16.
  const attnHost = randn(aShape, dtype, 5, 0.05);
  return {
    q: up(rows, 1),
    k: up(rows, 2),
    v: up(rows, 3),
    dO: up(rows, 4),
    attn: c.upload(attnHost),
    dAttn: up(aShape, 6),
    out: c.createTensor(rows, dtype),
    dq: c.createTensor(rows, dtype),
    dk: c.createTensor(rows, dtype),
    dv: c.createTensor(rows, dtype),
  };
}

const pad = (s: string, n: number): string => s.padEnd(n);
console.log(`BMM ops, ${dtype}; us (median of ${reps} back-to-back runs), TFLOP/s, attn GB/s`);
console.log(`${pad('problem', 28)} ${pad('op path', 18)} ${'us'.padStart(9)} ${'TFLOP/s'.padStart(8)} ${'attn GB/s'.padStart(10)} ${'vs fused fwd'.padStart(13)} ${'vs plain'.padStart(9)}`);
for (const p of speedProblems(values.only ?? '').filter((x) => !x.name.startsWith('flux'))) {
  const rank = p.rank as NaRank;
  const t = tensorsFor(ctx, p);
  const params = { kernelSize: p.kernelSize, dilation: p.dilation ?? 1, isCausal: p.isCausal ?? false };
  const P = p.kernelSize.reduce((a, b) => a * b, 1);
  const N = p.spatial.reduce((a, b) => a * b, 1);
  const product = 2 * N * P * p.dim * p.heads;
  const attnBytes = N * P * p.heads * (dtype === 'float16' ? 2 : 4);
  // The fused forward (default path) on the token-major layout, as the reference time.
  const fa = gpuArgs(ctx, { ...p, dtype }, makeArgs({ ...p, dtype }, 1));
  const fusedUs = 1e3 * (await timeRun(ctx, () => fusedForward(ctx, rank, fa), reps, warmer));
  const paths = (values.paths ?? '').split(',').filter((x): x is BmmPath => (x === 'plain' || x === 'mma') && (dtype === 'float16' || x === 'plain'));
  const ops: [string, (path: BmmPath) => { commands: readonly DispatchCommand[]; release: () => void }, number, number][] = [
    ['qk_forward', (path) => qkForwardPlan(ctx, rank, { query: t.q, key: t.k, attn: t.attn, ...params }, { path }), product, attnBytes],
    ['av_forward', (path) => avForwardPlan(ctx, rank, { attn: t.attn, value: t.v, output: t.out, ...params }, { path }), product, attnBytes],
    ['qk_backward', (path) => qkBackwardPlan(ctx, rank, { gradAttn: t.dAttn, query: t.q, key: t.k, gradQuery: t.dq, gradKey: t.dk, ...params }, { path }), 2 * product, 2 * attnBytes],
    ['av_backward', (path) => avBackwardPlan(ctx, rank, { gradOutput: t.dO, attn: t.attn, value: t.v, gradAttn: t.dAttn, gradValue: t.dv, ...params }, { path }), 2 * product, 2 * attnBytes],
  ];
  console.log(`${pad(p.name, 28)} ${pad('fused fwd', 18)} ${fusedUs.toFixed(1).padStart(9)}`);
  for (const [name, plan, flops, bytes] of ops) {
    let plainUs = 0;
    for (const path of paths) {
      try {
        const pl = plan(path);
        const us = await timeCommand(ctx, pl.commands, reps, warmer);
        pl.release();
        if (path === 'plain') plainUs = us;
        const vsPlain = path === 'plain' || plainUs === 0 ? '' : `${(plainUs / us).toFixed(2)}x`.padStart(10);
        console.log(
          `${pad(p.name, 28)} ${pad(`${name} ${path}`, 18)} ${us.toFixed(1).padStart(9)} ${(flops / us / 1e6).toFixed(2).padStart(8)} ${(bytes / us / 1e3).toFixed(0).padStart(10)} ${`${(us / fusedUs).toFixed(2)}x`.padStart(13)}${vsPlain}`,
        );
      } catch (e) {
        console.log(`${pad(p.name, 28)} ${pad(`${name} ${path}`, 18)} error: ${(e as Error).message.split('\n')[0]}`);
      }
    }
  }
  for (const x of Object.values(t)) x.buffer.destroy();
  for (const x of [fa.output, fa.query, fa.key, fa.value, fa.logsumexp]) x?.buffer.destroy();
}
