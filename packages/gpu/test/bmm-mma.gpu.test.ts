/**
 * The tensor-core BMM kernels (`generateBmmMmaKernel`: qk / av forward and backward in float16, and in float32
 * through the hi / lo split) against the CPU
 * reference, through the subgroup-matrix emulation on this adapter (lavapipe in CI has no subgroup matrices; the
 * device script `bmm-device.ts` runs the real ones). The BMM cases of `bmm-cases.ts` with head dims raised to
 * multiples of 16 (the kernels' rule), so every rank, causal mix, dilation, stride, rpb, partial tile and batch/head
 * count runs on them; ten random geometries (fixed seed) on top; plus the routing rules: `auto` takes them only where
 * they can run, `mma` says why it cannot.
 */
import { attnShape, type NaBackend, type NaRank, randn, seededRandom, tensor, toFloat64Values } from '@natten-web/core';
import { cpuBackend } from '@natten-web/cpu';
import { emulatingTensorCoreView, tensorFromValues } from '@natten-web/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type HostArgs, onGpu } from '../src/backend.ts';
import { avBackwardPlan, avForwardPlan, type GpuContext, type GpuOpPlan, type GpuTensor, qkBackwardPlan, qkForwardPlan } from '../src/index.ts';
import { BMM_CASES, type BmmCase, type BmmOpName, mismatch, mmaCase, outputMismatches, runBmm } from './bmm-cases.ts';
import { fakeTensorCoreContext, tensorCoreView } from './fake-tensor-core.ts';
import { gpuContext } from './setup.ts';

const OPS: readonly BmmOpName[] = ['qk_forward', 'qk_backward', 'av_forward', 'av_backward'];

const MMA = { path: 'mma' } as const;

/**
 * A backend whose BMM ops plan on the tensor-core kernels (`path: 'mma'`; float32 backwards would take the plain ones
 * under `auto`) and dispatch on testkit's emulating tensor-core view, checking that every product of the op is on them
 * (d_rpb passes have none).
 */
function mmaBmmBackend(ctx: GpuContext): NaBackend {
  const view = emulatingTensorCoreView(ctx);
  const run = (op: string, outputs: readonly string[], plan: (rank: NaRank, g: never) => GpuOpPlan) => (rank: NaRank, args: HostArgs) =>
    onGpu(ctx, `na${rank}d_${op}`, args, outputs, () => {}, async (g) => {
      const p = plan(rank, g as never);
      try {
        const kernels = p.commands.map((c) => c.kernel.key);
        expect(kernels.filter((k) => k.startsWith('na-bmm-mma-')).length, kernels.join(', ')).toBe(op === 'qk_forward' || op === 'av_forward' ? 1 : 2);
        await view.dispatch(p.commands, `${op} (emulated mma)`);
      } finally {
        p.release();
      }
    });
  return {
    name: 'webgpu-bmm-mma-emulated',
    qkForward: run('qk_forward', ['attn'], (rank, g) => qkForwardPlan(view, rank, g, MMA)),
    qkBackward: run('qk_backward', ['gradQuery', 'gradKey', 'gradRpb'], (rank, g) => qkBackwardPlan(view, rank, g, MMA)),
    avForward: run('av_forward', ['output'], (rank, g) => avForwardPlan(view, rank, g, MMA)),
    avBackward: run('av_backward', ['gradAttn', 'gradValue'], (rank, g) => avBackwardPlan(view, rank, g, MMA)),
  } as unknown as NaBackend;
}

// One shared context for the file's suites, released after the last.
afterAll(async () => (await gpuContext()).destroy());

for (const dtype of ['float16', 'float32'] as const) {
  describe(`tensor-core BMM kernels (emulated) equal the CPU reference in ${dtype}`, () => {
    let gpu: NaBackend;
    beforeAll(async () => {
      gpu = mmaBmmBackend(await gpuContext());
    });

    for (const op of OPS) {
      for (const [i, base] of BMM_CASES.entries()) {
        const k = mmaCase(base);
        it(`na${k.rank}d_${op} ${dtype} ${k.name}`, async () => {
          const seed = 1000 * i + 29;
          const want = await runBmm(cpuBackend, op, k, dtype, seed);
          const got = await runBmm(gpu, op, k, dtype, seed);
          expect(outputMismatches(got, want, dtype)).toEqual([]);
        });
      }
    }
  });
}

describe('float32 tensor-core BMM kernels (emulated) outside float16 range', () => {
  let gpu: NaBackend;
  beforeAll(async () => {
    gpu = mmaBmmBackend(await gpuContext());
  });

  // Rows far above f16's largest finite value and attention weights below its smallest normal: the split's
  // per-tensor power-of-two scales bring both into range, so every op keeps float32's tolerance, with atol taken
  // relative to the magnitude of the output's terms (rows x rows = 9e10 for qk_forward's attn and av_backward's
  // grad_attn, attn x rows = 0.3 for the rest), as the same inputs at unit scale would have it.
  const k = mmaCase(BMM_CASES[4] as BmmCase);
  const rows = 3e5;
  const attn = 1e-6;
  const termScale: Record<string, number> = { attn: rows * rows, gradAttn: rows * rows, gradQuery: attn * rows, gradKey: attn * rows, output: attn * rows, gradValue: attn * rows, gradRpb: attn };
  for (const op of OPS) {
    it(`na${k.rank}d_${op} float32 ${k.name}, rows x 3e5, attn x 1e-6`, async () => {
      const want = await runBmm(cpuBackend, op, k, 'float32', 77, { rows, attn });
      const got = await runBmm(gpu, op, k, 'float32', 77, { rows, attn });
      expect(outputMismatches(got, want, 'float32', termScale)).toEqual([]);
    });
  }
});

describe('float32 tensor-core BMM kernels (emulated): -inf in invalid slots', () => {
  let gpu: NaBackend;
  beforeAll(async () => {
    gpu = mmaBmmBackend(await gpuContext());
  });

  it('av_forward keeps its scale when attn holds -inf in its invalid (causal) slots, as qk_forward writes them', async () => {
    const k = mmaCase(BMM_CASES[1] as BmmCase);
    const P = k.K.reduce((a, b) => a * b, 1);
    const rows = [k.B, k.H, ...k.sp, k.D];
    const aShape = attnShape(k.B, k.H, k.sp, P);
    const params = { kernelSize: [...k.K], dilation: [...k.d], stride: [...k.s], isCausal: [...k.causal] };
    // The invalid slots: where the reference qk_forward writes -inf.
    const logits = { ...params, query: randn(rows, 'float32', 1), key: randn(rows, 'float32', 2), rpb: null, attn: randn(aShape, 'float32', 3) };
    await cpuBackend.qkForward(k.rank, logits);
    const invalid = Array.from(toFloat64Values(logits.attn), (x) => x === Number.NEGATIVE_INFINITY);
    expect(invalid.filter(Boolean).length).toBeGreaterThan(0);
    // Weights of 1e-6 (below f16's normals): without their own scale (an abs-max that counted -inf), they would keep
    // about 4 significant bits.
    const weights = Array.from(toFloat64Values(randn(aShape, 'float32', 4, 1e-6)), (x, i) => (invalid[i] ? Number.NEGATIVE_INFINITY : x));
    const attn = tensorFromValues(aShape, 'float32', weights);
    const args = () => ({ ...params, attn, value: randn(rows, 'float32', 5, 3e5), output: randn(rows, 'float32', 6) });
    const want = args();
    await cpuBackend.avForward(k.rank, want);
    const got = args();
    await gpu.avForward(k.rank, got);
    expect(mismatch(got.output, want.output, 'float32', 0.3)).toBeUndefined();
  });
});

/**
 * Random geometries (a fixed seed, so the same cases every run): rank 1-3, odd windows with dilation and stride,
 * causal axes (rpb only without them), extents that leave partial tiles and short dilation groups, 1-2 batches and
 * heads, head dims 16 and 32 (one and two fragments), each with one op.
 */
function randomCases(count: number, seed: number): { k: BmmCase; op: BmmOpName }[] {
  const rand = seededRandom(seed);
  const int = (lo: number, hi: number): number => lo + Math.floor(rand() * (hi - lo + 1));
  return Array.from({ length: count }, (_, i) => {
    const rank = int(1, 3) as NaRank;
    const maxL = rank === 1 ? 90 : rank === 2 ? 14 : 7;
    const K: number[] = [];
    const d: number[] = [];
    const s: number[] = [];
    const sp: number[] = [];
    const causal: boolean[] = [];
    for (let a = 0; a < rank; a++) {
      const k = [3, 5, 7][int(0, rank === 3 ? 1 : 2)] as number;
      const dil = int(1, 2);
      K.push(k);
      d.push(dil);
      s.push(int(1, k));
      sp.push(int(k * dil, Math.max(k * dil, maxL)));
      causal.push(rand() < 0.35);
    }
    const rpb = !causal.some((c) => c) && rand() < 0.5;
    const k: BmmCase = { name: `random ${i}: sp=${sp.join('x')} K=${K.join('x')} d=${d.join('x')} s=${s.join('x')} causal=${causal.map((c) => (c ? 'T' : 'F')).join('x')}${rpb ? ' rpb' : ''}`, rank, sp, K, d, s, causal, rpb, B: int(1, 2), H: int(1, 2), D: 16 * int(1, 2) };
    return { k: { ...k, name: `${k.name} B=${k.B} H=${k.H} D=${k.D}` }, op: OPS[int(0, 3)] as BmmOpName };
  });
}

describe('tensor-core BMM kernels (emulated) on random geometries', () => {
  let gpu: NaBackend;
  beforeAll(async () => {
    gpu = mmaBmmBackend(await gpuContext());
  });

  for (const [i, { k, op }] of randomCases(10, 0x424d4d).entries()) {
    it(`na${k.rank}d_${op} float16 ${k.name}`, async () => {
      const want = await runBmm(cpuBackend, op, k, 'float16', 7000 + i);
      const got = await runBmm(gpu, op, k, 'float16', 7000 + i);
      expect(outputMismatches(got, want, 'float16')).toEqual([]);
    });
  }
});

describe('BMM routing', () => {
  const rows = (D: number, dtype: 'float16' | 'float32' = 'float16') => tensor([1, 2, 20, D], dtype) as unknown as GpuTensor;
  const attn = (dtype: 'float16' | 'float32' = 'float16') => tensor([1, 2, 20, 5], dtype) as unknown as GpuTensor;
  const fake = fakeTensorCoreContext();
  let ctx: GpuContext;
  beforeAll(async () => {
    ctx = await gpuContext();
  });
  const args = (D: number, dtype: 'float16' | 'float32' = 'float16') => ({ query: rows(D, dtype), key: rows(D, dtype), attn: attn(dtype), kernelSize: [5] });

  const keys = (p: GpuOpPlan): string[] => p.commands.map((c) => c.kernel.key);

  it('auto takes the tensor cores for head dims that are multiples of 16 (float32: forward ops up to 64, after an abs-max pass), else the plain kernels', () => {
    expect(keys(qkForwardPlan(fake, 1, args(32)))).toEqual([expect.stringMatching(/^na-bmm-mma-pn/)]);
    expect(keys(qkForwardPlan(fake, 1, args(24)))).toEqual([expect.stringMatching(/^na-bmm-pn/)]);
    // float32 plans take a pooled scratch for the scales: a real context seen as the H200.
    const split = qkForwardPlan(tensorCoreView(ctx), 1, args(32, 'float32'));
    expect(keys(split)).toEqual([expect.stringMatching(/^abs-max3-scalar/), expect.stringMatching(/^na-bmm-mma-pn/)]);
    split.release();
    expect(keys(qkForwardPlan(fake, 1, args(128, 'float32')))).toEqual([expect.stringMatching(/^na-bmm-pn/)]);
    // float32 backwards: the plain kernels unless asked.
    const backward = (dtype: 'float16' | 'float32') => {
      const a = args(32, dtype);
      return { gradAttn: a.attn, query: a.query, key: a.key, gradQuery: a.query, gradKey: a.key, kernelSize: [5] };
    };
    expect(keys(qkBackwardPlan(fake, 1, backward('float16')))).toEqual([expect.stringMatching(/^na-bmm-mma-nn/), expect.stringMatching(/^na-bmm-mma-in/)]);
    expect(keys(qkBackwardPlan(fake, 1, backward('float32')))).toEqual([expect.stringMatching(/^na-bmm-nn/), expect.stringMatching(/^na-bmm-in/)]);
    const asked = qkBackwardPlan(tensorCoreView(ctx), 1, backward('float32'), MMA);
    expect(keys(asked)).toEqual([expect.stringMatching(/^abs-max3-scalar/), expect.stringMatching(/^na-bmm-mma-nn/), expect.stringMatching(/^na-bmm-mma-in/)]);
    asked.release();
    expect(keys(qkForwardPlan(fake, 1, args(256)))).toEqual([expect.stringMatching(/^na-bmm-pn/)]);
    expect(keys(qkForwardPlan(fake, 1, args(32), { path: 'plain' }))).toEqual([expect.stringMatching(/^na-bmm-pn/)]);
  });

  it("path 'mma' names why it cannot run a call", () => {
    expect(() => qkForwardPlan(fake, 1, args(24), { path: 'mma' })).toThrow("na1d_qk_forward: path 'mma' (tensor cores) cannot run this call: head_dim=24 must be a multiple of 16 in [16, 128]");
    expect(() => qkForwardPlan(fake, 1, args(128, 'float32'), { path: 'mma' })).toThrow(
      "na1d_qk_forward: path 'mma' (tensor cores) cannot run this call: head_dim=128 must be a multiple of 16 in [16, 64] for float32 (hi / lo split)",
    );
  });
});
