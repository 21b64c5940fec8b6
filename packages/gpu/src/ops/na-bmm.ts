/**
 * Shared plumbing of the BMM-style ops (qk / av, heads-first): GPU rules for `check`, kernel memo,
 * uniforms and workgroup counts of the kernels in `@natten-web/wgsl`'s `snippets/bmm.ts`.
 */
import {
  type BmmProblem,
  formatShape,
  NattenArgumentError,
  type NaRank,
  type OpFamily,
  opName,
  type TensorLike,
} from '@natten-web/core';
import {
  BMM_SPLIT_TENSORS,
  bmmMmaSpecProblem,
  type BmmOpSpec,
  checkGpuDType,
  defaultBmmTile,
  type GeneratedKernel,
  type GpuDType,
  padAxes,
} from '@natten-web/wgsl';
import { type DispatchCommand, foldWorkgroups, type GpuContext, type GpuTensor } from '../context.ts';
import { absMaxCommand, mmaAvailability } from './na-fused-forward-mma.ts';
import { defineGpuOp, type GpuOp, type GpuOpPlan, requireF16Feature, runPlan } from './op.ts';

/** GPU rules on top of core's validator: dtype, f16 feature, binding sizes, index range, dispatch size. */
export function checkBmmGpu(ctx: GpuContext, p: BmmProblem, tensors: Readonly<Record<string, TensorLike | null | undefined>>): GpuDType {
  const dtype = checkGpuDType(p.op, p.dtype);
  requireF16Feature(ctx, p.op, dtype);
  const bytes = dtype === 'float16' ? 2 : 4;
  const maxBinding = ctx.limits.maxStorageBufferBindingSize;
  for (const [name, t] of Object.entries(tensors)) {
    if (!t) continue;
    const n = t.shape.reduce((a, b) => a * b, 1);
    if (n * bytes > maxBinding) {
      throw new NattenArgumentError(
        `${p.op}: ${name} ${formatShape(t.shape)} needs ${n * bytes} bytes, over this device's maxStorageBufferBindingSize of ${maxBinding}`,
      );
    }
    if (n >= 2 ** 31) {
      throw new NattenArgumentError(`${p.op}: ${name} ${formatShape(t.shape)} has ${n} elements; WebGPU kernels index with i32 (< 2^31)`);
    }
  }
  const total = bmmWorkgroupCount(p, defaultBmmTile(p.rank));
  const maxDim = ctx.limits.maxComputeWorkgroupsPerDimension;
  if (total > maxDim * maxDim) {
    throw new NattenArgumentError(`${p.op}: the problem needs ${total} workgroups, over ${maxDim}^2; split the batch`);
  }
  return dtype;
}

/** A BMM op's validated call: core's problem and the GPU dtype it runs in. */
export interface CheckedBmm {
  readonly p: BmmProblem;
  readonly dtype: GpuDType;
}

/**
 * The `check` of a BMM op: core's validator for `family`, then `checkBmmGpu` on the tensors that `bindings`
 * names (NATTEN's argument names, for the messages).
 */
export function bmmCheck<A>(
  family: OpFamily,
  validate: (op: string, rank: NaRank, args: A) => BmmProblem,
  bindings: (args: A) => Readonly<Record<string, TensorLike | null | undefined>>,
): (ctx: GpuContext, rank: NaRank, args: unknown) => CheckedBmm {
  return (ctx, rank, args) => {
    const a = args as A;
    const p = validate(opName(rank, family), rank, a);
    return { p, dtype: checkBmmGpu(ctx, p, bindings(a)) };
  };
}

/** A BMM op that runs its plan in one submission, and whose `check` is `check`. */
export function defineBmmOp<A>(
  family: OpFamily,
  plan: (ctx: GpuContext, rank: NaRank, args: A) => GpuOpPlan,
  check: (ctx: GpuContext, rank: NaRank, args: unknown) => CheckedBmm,
): GpuOp<A> {
  return defineGpuOp<A>(
    (ctx, rank, args) => runPlan(ctx, plan(ctx, rank, args), opName(rank, family)),
    (ctx, rank, args) => {
      check(ctx, rank, args);
    },
  );
}

/** Which kernels a BMM op runs: the tensor-core ones where they can run (`auto`), or one of the two by name. */
export type BmmPath = 'auto' | 'mma' | 'plain';

export interface BmmOptions {
  /**
   * `auto` (default): the tensor-core kernels where the adapter has them and they fit the call (float32: the forward
   * ops only), else the plain ones.
   */
  readonly path?: BmmPath | undefined;
}

/** Why the tensor-core BMM kernels cannot run this call (adapter, dtype, head dim), or undefined. */
export function bmmMmaUnfit(ctx: GpuContext, p: BmmProblem, dtype: GpuDType): string | undefined {
  const available = mmaAvailability(ctx);
  if ('why' in available) return available.why;
  return bmmMmaSpecProblem({ dim: p.dim, dtype, tile: defaultBmmTile(p.rank) });
}

/** The kernels' spec of a validated call, on the path `options` asks for (a clear error when `mma` cannot run it). */
export function opSpecOf(ctx: GpuContext, p: BmmProblem, dtype: GpuDType, options: BmmOptions = {}): BmmOpSpec {
  const path = options.path ?? 'auto';
  let mma = false;
  // float32 backward ops stay on the plain kernels unless asked: with the split (an abs-max pass over the attention
  // gradient, three products per product, one workgroup less per SM) they were 0.83-1.6x the plain kernels' speed on
  // the H200 (session 28), where the float32 forwards were 1.1-2.4x.
  if (path === 'auto' && dtype === 'float32' && p.op.endsWith('_backward')) return opSpec(p, dtype, false);
  if (path !== 'plain') {
    const why = bmmMmaUnfit(ctx, p, dtype);
    if (why === undefined) mma = true;
    else if (path === 'mma') throw new NattenArgumentError(`${p.op}: path 'mma' (tensor cores) cannot run this call: ${why}`);
  }
  return opSpec(p, dtype, mma);
}

function opSpec(p: BmmProblem, dtype: GpuDType, mma: boolean): BmmOpSpec {
  return {
    rank: p.rank,
    kernelSize: [...p.params.kernelSize],
    causal: [...p.params.isCausal],
    dim: p.dim,
    dtype,
    ...(mma ? { mma: true } : {}),
  };
}

interface Padded {
  readonly L: [number, number, number];
  readonly d: [number, number, number];
  readonly s: [number, number, number];
  readonly T: [number, number, number];
}

function padded(p: BmmProblem, tile: readonly number[]): Padded {
  return {
    L: padAxes(p.spatial, 1),
    d: padAxes(p.params.dilation, 1),
    s: padAxes(p.params.stride, 1),
    T: padAxes(tile, 1),
  };
}

function tilesPerAxis(x: Padded): [number, number, number] {
  const t = (a: 0 | 1 | 2): number => Math.ceil(Math.ceil(x.L[a] / x.d[a]) / x.T[a]);
  return [t(0), t(1), t(2)];
}

export function bmmWorkgroupCount(p: BmmProblem, tile: readonly number[]): number {
  const x = padded(p, tile);
  const t = tilesPerAxis(x);
  return p.batch * p.heads * x.d[0] * x.d[1] * x.d[2] * t[0] * t[1] * t[2];
}

/** Uniform values of a BMM kernel (see `BMM_UNIFORMS`). */
export function bmmUniforms(p: BmmProblem, kernel: GeneratedKernel, tile: readonly number[]): Record<string, number> {
  const x = padded(p, tile);
  const t = tilesPerAxis(x);
  const u: Record<string, number> = {
    bh: p.batch * p.heads,
    heads: p.heads,
    L0: x.L[0],
    L1: x.L[1],
    L2: x.L[2],
    d0: x.d[0],
    d1: x.d[1],
    d2: x.d[2],
    s0: x.s[0],
    s1: x.s[1],
    s2: x.s[2],
    tiles0: t[0],
    tiles1: t[1],
    tiles2: t[2],
  };
  if (kernel.uniforms.some((f) => f.name === 'fill_bits')) {
    // -inf bit patterns: f32 0xff800000; f16 0xfc00 (both halves, read as .x of a vec2<f16>).
    u.fill_bits = p.dtype === 'float16' ? 0xfc00fc00 : 0xff800000;
  }
  return u;
}

export function bmmWorkgroups(p: BmmProblem, tile: readonly number[]): [number, number, number] {
  return foldWorkgroups(bmmWorkgroupCount(p, tile));
}

/**
 * The float32 tensor-core kernels' `scales`: one abs-max dispatch over the op's tensors in `BMM_SPLIT_TENSORS[op]`
 * order (`tensors` by NATTEN's argument names), into a pooled scratch, to run before the op's kernels, which take
 * `buffers` as their last binding. Nothing for other specs.
 */
export function bmmSplitScales<O extends keyof typeof BMM_SPLIT_TENSORS>(
  ctx: GpuContext,
  spec: BmmOpSpec,
  op: O,
  byName: Readonly<Record<(typeof BMM_SPLIT_TENSORS)[O][number], GpuTensor>>,
): { readonly commands: DispatchCommand[]; readonly buffers: GPUBuffer[]; readonly release: () => void } {
  if (spec.mma !== true || spec.dtype !== 'float32') return { commands: [], buffers: [], release: () => {} };
  const names: readonly (typeof BMM_SPLIT_TENSORS)[O][number][] = BMM_SPLIT_TENSORS[op];
  const tensors = names.map((n) => byName[n]) as [GpuTensor, ...GpuTensor[]];
  const scales = ctx.tempTensor([4], 'float32', { label: 'bmm split scales' });
  // Single floats: the attention tensors' lengths need not be multiples of four.
  return { commands: [absMaxCommand(ctx, tensors, scales, { scalar: true })], buffers: [scales.buffer], release: () => ctx.releaseTensor(scales) };
}

/** One dispatch of a BMM kernel over the problem's grid of default tiles. */
export function bmmCommand(p: BmmProblem, kernel: GeneratedKernel, buffers: readonly GPUBuffer[]): DispatchCommand {
  const tile = defaultBmmTile(p.rank);
  return { kernel, buffers, uniforms: bmmUniforms(p, kernel, tile), workgroups: bmmWorkgroups(p, tile) };
}

