/**
 * The tensor-core BMM kernels (`generateBmmMmaKernel`: qk / av forward and backward in float16) against the CPU
 * reference, through the subgroup-matrix emulation on this adapter (lavapipe in CI has no subgroup matrices; the
 * device script `bmm-device.ts --check` runs the real ones). The BMM cases of `bmm-cases.ts` with head dims raised to
 * multiples of 16 (the kernels' rule), so every rank, causal mix, dilation, stride, rpb, partial tile and batch/head
 * count runs on them; plus the routing rules: `auto` takes them only where they can run, `mma` says why it cannot.
 */
import { type NaBackend, type NaRank, tensor } from '@natten-web/core';
import { cpuBackend } from '@natten-web/cpu';
import { emulatedKernel } from '@natten-web/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type HostArgs, onGpu } from '../src/backend.ts';
import { avBackwardPlan, avForwardPlan, type GpuContext, type GpuOpPlan, type GpuTensor, qkBackwardPlan, qkForwardPlan } from '../src/index.ts';
import { BMM_CASES, type BmmCase, type BmmOpName, mismatch, runBmm } from './bmm-cases.ts';
import { fakeTensorCoreContext, tensorCoreView } from './fake-tensor-core.ts';
import { gpuContext } from './setup.ts';

const OPS: readonly BmmOpName[] = ['qk_forward', 'qk_backward', 'av_forward', 'av_backward'];

/** A backend whose BMM ops plan on the tensor-core view (so `auto` takes the mma kernels) and run them emulated. */
function mmaBmmBackend(ctx: GpuContext): NaBackend {
  const view = tensorCoreView(ctx);
  const run = (op: string, outputs: readonly string[], plan: (g: never) => GpuOpPlan) => (rank: NaRank, args: HostArgs) =>
    onGpu(ctx, `na${rank}d_${op}`, args, outputs, () => {}, async (g) => {
      const p = plan(g as never);
      try {
        const kernels = p.commands.map((c) => c.kernel.key);
        // Every product of the op runs on the tensor cores (the d_rpb passes have no matrices).
        expect(kernels.filter((k) => k.startsWith('na-bmm-mma-')).length, kernels.join(', ')).toBe(op === 'qk_forward' || op === 'av_forward' ? 1 : 2);
        await ctx.dispatch(
          p.commands.map((c) => (c.kernel.key.startsWith('na-bmm-mma-') ? { ...c, kernel: emulatedKernel(c.kernel) } : c)),
          `${op} (emulated mma)`,
        );
      } finally {
        p.release();
      }
    });
  return {
    name: 'webgpu-bmm-mma-emulated',
    qkForward: (rank: NaRank, a: HostArgs) => run('qk_forward', ['attn'], (g) => qkForwardPlan(view, rank, g))(rank, a),
    qkBackward: (rank: NaRank, a: HostArgs) => run('qk_backward', ['gradQuery', 'gradKey', 'gradRpb'], (g) => qkBackwardPlan(view, rank, g))(rank, a),
    avForward: (rank: NaRank, a: HostArgs) => run('av_forward', ['output'], (g) => avForwardPlan(view, rank, g))(rank, a),
    avBackward: (rank: NaRank, a: HostArgs) => run('av_backward', ['gradAttn', 'gradValue'], (g) => avBackwardPlan(view, rank, g))(rank, a),
  } as unknown as NaBackend;
}

/** The case with its head dim raised to a multiple of 16 (4, 5, 6, 8, 12 -> 16; 16 -> 32, so one case runs two fragments). */
function mmaCase(k: BmmCase): BmmCase {
  const D = k.D < 16 ? 16 : 2 * k.D;
  return { ...k, D, name: k.name.replace(/D=\d+$/, `D=${D}`) };
}

describe('tensor-core BMM kernels (emulated) equal the CPU reference in float16', () => {
  let gpu: NaBackend;
  beforeAll(async () => {
    gpu = mmaBmmBackend(await gpuContext());
  });
  afterAll(async () => (await gpuContext()).destroy());

  for (const op of OPS) {
    for (const [i, base] of BMM_CASES.entries()) {
      const k = mmaCase(base);
      it(`na${k.rank}d_${op} float16 ${k.name}`, async () => {
        const seed = 1000 * i + 29;
        const want = await runBmm(cpuBackend, op, k, 'float16', seed);
        const got = await runBmm(gpu, op, k, 'float16', seed);
        for (const [name, t] of Object.entries(want.outputs)) {
          const g = got.outputs[name];
          expect(g, name).toBeDefined();
          if (g) expect(mismatch(g, t, 'float16'), name).toBeUndefined();
        }
      });
    }
  }
});

describe('BMM routing', () => {
  const rows = (D: number, dtype: 'float16' | 'float32' = 'float16') => tensor([1, 2, 20, D], dtype) as unknown as GpuTensor;
  const attn = (dtype: 'float16' | 'float32' = 'float16') => tensor([1, 2, 20, 5], dtype) as unknown as GpuTensor;
  const fake = fakeTensorCoreContext();
  const args = (D: number, dtype: 'float16' | 'float32' = 'float16') => ({ query: rows(D, dtype), key: rows(D, dtype), attn: attn(dtype), kernelSize: [5] });

  it('auto takes the tensor cores for float16 with head dims that are multiples of 16, else the plain kernels', () => {
    expect(qkForwardPlan(fake, 1, args(32)).commands[0]?.kernel.key.startsWith('na-bmm-mma-pn')).toBe(true);
    expect(qkForwardPlan(fake, 1, args(24)).commands[0]?.kernel.key.startsWith('na-bmm-pn')).toBe(true);
    expect(qkForwardPlan(fake, 1, args(32, 'float32')).commands[0]?.kernel.key.startsWith('na-bmm-pn')).toBe(true);
    expect(qkForwardPlan(fake, 1, args(256)).commands[0]?.kernel.key.startsWith('na-bmm-pn')).toBe(true);
    expect(qkForwardPlan(fake, 1, args(32), { path: 'plain' }).commands[0]?.kernel.key.startsWith('na-bmm-pn')).toBe(true);
  });

  it("path 'mma' names why it cannot run a call", () => {
    expect(() => qkForwardPlan(fake, 1, args(24), { path: 'mma' })).toThrow("na1d_qk_forward: path 'mma' (tensor cores) cannot run this call: head_dim=24 must be a multiple of 16 in [16, 128]");
    expect(() => qkForwardPlan(fake, 1, args(32, 'float32'), { path: 'mma' })).toThrow('the tensor-core BMM kernels need float16 tensors, not float32');
  });
});
