/**
 * The shared conformance suite on the tensor-core (mma) kernels, through the subgroup-matrix emulation, on this
 * adapter (lavapipe in CI has no subgroup matrices; the emulation runs the kernels' own indexing, masking, softmax,
 * prefetch and chunk skipping per query row, see @natten-web/testkit's tensor-core-emulation.ts; the device scripts check the real matrices).
 *
 * The quick grid's float16 forward and backward cases and, of its float32 forward and backward cases, those that
 * add a feature not yet covered (`featureCover`: rank, rpb, GQA, Dv != D, causal, dilation, stride, no LSE, batch,
 * attention scale; the split: f16 hi + lo halves, three multiplies per product, checked at float32's tolerance; its
 * emulated kernels take up to a minute each to compile on lavapipe, so not all of them), with head dims raised to
 * multiples of 16 (the mma kernels' rule: 4, 8, 12 -> 16, 16 -> 32, so Dv != D cases stay Dv != D) and keyed anew;
 * every case the mma path can run is registered (rpb cases of the backward check d_rpb too), each run at the path's
 * default config against the CPU reference.
 */
import { type DType, type FusedBackwardArgs, type FusedForwardArgs, type NaBackend, type NaRank, type Tensor, type TensorLike, checkFusedBackward, checkFusedForward } from '@natten-web/core';
import { caseKey, conformanceCases, defineNaConformance, type NaCase, seedOf } from '@natten-web/testkit';
import { FUSED_BACKWARD_TILES, FUSED_FORWARD_TILES } from '@natten-web/wgsl';
import { checkFusedBackwardMma, type GpuContext, type GpuTensor, mmaBackwardCommands, mmaBackwardProblemFit, mmaBackwardScratch, mmaProblemFit, planFusedForwardMma } from '../src/index.ts';
import { type HostArgs, onGpu } from '../src/backend.ts';
import { tensorCoreView } from './fake-tensor-core.ts';
import { emulatedKernel } from '@natten-web/testkit';
import { gpuContext } from './setup.ts';

function mmaBackend(ctx: GpuContext): NaBackend {
  const view = tensorCoreView(ctx);
  const unsupported = (op: string) => () => {
    throw new Error(`${op}: not part of the mma conformance backend`);
  };
  return {
    name: 'webgpu-mma-emulated',
    fusedForward: (rank: NaRank, args: FusedForwardArgs) =>
      onGpu(ctx, `na${rank}d_forward`, args as unknown as HostArgs, ['output', 'logsumexp'], () => {}, async (g) => {
        const { kernel, commands, release } = planFusedForwardMma(view, rank, g as unknown as FusedForwardArgs<GpuTensor>);
        try {
          // float32 runs an abs-max dispatch first (no matrices); the forward itself is emulated.
          await ctx.dispatch(commands.map((c) => (c.kernel === kernel ? { ...c, kernel: emulatedKernel(kernel) } : c)), 'mma forward (emulated)');
        } finally {
          release();
        }
      }),
    fusedBackward: (rank: NaRank, args: FusedBackwardArgs) =>
      onGpu(ctx, `na${rank}d_backward`, args as unknown as HostArgs, ['gradQuery', 'gradKey', 'gradValue', 'gradRpb'], () => {}, async (g) => {
        const a = g as unknown as FusedBackwardArgs<GpuTensor>;
        const { problem, config, kernels } = checkFusedBackwardMma(view, rank, a);
        const scratch = mmaBackwardScratch(ctx, problem, a.logsumexp.shape);
        try {
          // The d_rpb pass has no matrices: it runs as generated.
          const emulated = { ...kernels, dq: emulatedKernel(kernels.dq), dkv: emulatedKernel(kernels.dkv) };
          await ctx.dispatch(mmaBackwardCommands(ctx, emulated, problem, a, config, scratch), 'mma backward (emulated)');
        } finally {
          scratch.release();
        }
      }),
    qkForward: unsupported('qkForward'),
    qkBackward: unsupported('qkBackward'),
    avForward: unsupported('avForward'),
    avBackward: unsupported('avBackward'),
  } as unknown as NaBackend;
}

/** A tensor of this shape and dtype, for the fit checks (no data). */
const like = (shape: readonly number[], dtype: DType): TensorLike => ({ shape, dtype }) as TensorLike;

/** The cases, in order, that each add a feature (per rank) no earlier kept case had. */
function featureCover(cases: readonly NaCase[]): NaCase[] {
  const seen = new Set<string>();
  return cases.filter((c) => {
    const tags = [
      'any',
      c.rpb && 'rpb',
      c.headsKv !== c.heads && 'gqa',
      c.dimV !== c.dim && 'dv',
      c.isCausal.some(Boolean) && 'causal',
      c.dilation.some((d) => d > 1) && 'dilation',
      c.stride.some((x) => x > 1) && 'stride',
      !c.lse && 'no-lse',
      c.batch > 1 && 'batch',
      c.attnScale !== undefined && 'scale',
    ].filter((t): t is string => typeof t === 'string').map((t) => `${c.rank}:${t}`);
    const fresh = tags.filter((t) => !seen.has(t));
    for (const t of fresh) seen.add(t);
    return fresh.length > 0;
  });
}

/** The quick grid's fused cases with head dims raised to multiples of 16, those the mma path can run. */
function mmaCases(): NaCase[] {
  const raise = (d: number): number => (d <= 16 ? (d === 16 ? 32 : 16) : 16 * Math.ceil(d / 16));
  const out: NaCase[] = [];
  const grid = [
    ...conformanceCases({ dtypes: ['float16'], ops: ['forward', 'backward'] }),
    ...featureCover(conformanceCases({ dtypes: ['float32'], ops: ['forward'] })),
    ...featureCover(conformanceCases({ dtypes: ['float32'], ops: ['backward'] })),
  ];
  for (const c of grid) {
    const g = { ...c, dim: raise(c.dim), dimV: raise(c.dimV) };
    const key = caseKey(c.op, c.dtype, g);
    const rank = c.rank;
    const dt = c.dtype;
    const q = like([g.batch, ...g.spatial, g.heads, g.dim], dt);
    const k = like([g.batch, ...g.spatial, g.headsKv, g.dim], dt);
    const v = like([g.batch, ...g.spatial, g.headsKv, g.dimV], dt);
    const o = like([g.batch, ...g.spatial, g.heads, g.dimV], dt);
    const l = like([g.batch, ...g.spatial, g.heads], 'float32');
    const rpb = g.rpb ? like([g.heads, ...g.kernelSize.map((x) => 2 * x - 1)], dt) : null;
    const params = { kernelSize: [...g.kernelSize], dilation: [...g.dilation], stride: [...g.stride], isCausal: [...g.isCausal] };
    const fit =
      c.op === 'forward'
        ? mmaProblemFit(checkFusedForward('x', rank, { ...params, query: q, key: k, value: v, output: o, rpb, logsumexp: l }, FUSED_FORWARD_TILES))
        : mmaBackwardProblemFit(checkFusedBackward('x', rank, { ...params, query: q, key: k, value: v, output: o, gradOutput: o, logsumexp: l, gradQuery: q, gradKey: k, gradValue: v, rpb, gradRpb: rpb }, FUSED_BACKWARD_TILES));
    if (fit === undefined) out.push({ ...g, key, seed: seedOf(key) });
  }
  return out;
}

defineNaConformance({
  name: 'webgpu tensor-core kernels (emulated matrices)',
  makeBackend: async () => mmaBackend(await gpuContext()),
  dtypes: ['float16', 'float32'],
  reference: 'cpu',
  cases: mmaCases(),
});
