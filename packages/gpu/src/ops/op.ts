import { type DType, type NaRank, NattenArgumentError, NattenUnsupportedError, type TensorLike } from '@natten-web/core';
import type { GeneratedKernel } from '@natten-web/wgsl';
import type { DispatchCommand, GpuContext } from '../context.ts';
import { LruCache } from '../lru.ts';

/**
 * The device limits the kernels' config selection reads (a plain object, so the wgsl enumerators and the
 * autotuner take it as is). `subgroupMinSize` only when the device has the `subgroups` feature and the adapter
 * reports its minimum subgroup size: then lane-split configs (`lanes` > 1) are valid and enumerated (never the
 * heuristic default); otherwise they are rejected and not offered.
 */
export function kernelLimits(ctx: GpuContext): {
  readonly maxComputeWorkgroupStorageSize: number;
  readonly maxComputeInvocationsPerWorkgroup: number;
  readonly maxComputeWorkgroupSizeX: number;
  readonly maxComputeWorkgroupsPerDimension: number;
  readonly subgroupMinSize?: number;
} {
  const sg = ctx.adapterInfo.subgroupMinSize;
  return {
    maxComputeWorkgroupStorageSize: ctx.limits.maxComputeWorkgroupStorageSize,
    maxComputeInvocationsPerWorkgroup: ctx.limits.maxComputeInvocationsPerWorkgroup,
    maxComputeWorkgroupSizeX: ctx.limits.maxComputeWorkgroupSizeX,
    maxComputeWorkgroupsPerDimension: ctx.limits.maxComputeWorkgroupsPerDimension,
    ...(ctx.hasSubgroups && sg !== undefined && sg > 0 ? { subgroupMinSize: sg } : {}),
  };
}

/** float16 runs only where the device has the `shader-f16` feature. */
export function requireF16Feature(ctx: GpuContext, op: string, dtype: DType): void {
  if (dtype === 'float16' && !ctx.hasF16) {
    throw new NattenUnsupportedError(`${op}: float16 needs the WebGPU feature 'shader-f16', which this adapter does not offer; use float32`);
  }
}

/**
 * What to do when d_rpb's dS scratch is over the device's limit (both backward paths): it holds batch x tokens x
 * heads x prod(kernel_size) floats.
 */
export const RPB_SCRATCH_HINT = ' (d_rpb keeps batch x tokens x heads x prod(kernel_size) floats of dS); pass gradRpb = null, or run the batch in parts and sum their d_rpb';

/** Throw (before any GPU work) where an op's f32 scratch buffer of `elems` elements is over the binding limit; `hint` says what to do. */
export function checkScratchSize(ctx: GpuContext, op: string, name: string, elems: number, hint = ''): void {
  if (elems * 4 > ctx.limits.maxStorageBufferBindingSize) {
    throw new NattenArgumentError(`${op}: the ${name} scratch buffer needs ${elems * 4} bytes, over this device's maxStorageBufferBindingSize of ${ctx.limits.maxStorageBufferBindingSize}${hint}`);
  }
}

/**
 * A GPU op: runs on GPU tensors (outputs written in place) and carries `check`, which validates the
 * same arguments on shapes/dtypes alone (host or GPU tensors), throwing before any GPU work.
 */
export interface GpuOp<A> {
  (ctx: GpuContext, rank: NaRank, args: A): Promise<void>;
  check(ctx: GpuContext, rank: NaRank, args: unknown): void;
}

export function defineGpuOp<A>(
  run: (ctx: GpuContext, rank: NaRank, args: A) => Promise<void>,
  check: (ctx: GpuContext, rank: NaRank, args: unknown) => void,
): GpuOp<A> {
  const op = run as GpuOp<A>;
  op.check = check;
  return op;
}

export type { TensorLike };

/** Entries each memo keeps (the least recently used go first): generated kernels and plans, a few KiB to a few hundred each. */
const MEMO_ENTRIES = 1024;

const pureMemo = new LruCache<unknown>({ maxEntries: MEMO_ENTRIES });

/** Generate once per (generator, spec); the pipeline itself is cached by key in the context. */
export function memoKernel<S, K extends GeneratedKernel = GeneratedKernel>(name: string, spec: S, generate: (s: S) => K): K {
  return pureMemo.getOrCompute(`kernel:${name}:${JSON.stringify(spec)}`, () => generate(spec)) as K;
}

/** Compute once per (name, key) a pure function of the key (a backward's kernels and scratch sizes from its problem and config). */
export function memoPure<T>(name: string, key: unknown, compute: () => T): T {
  return pureMemo.getOrCompute(`${name}:${JSON.stringify(key)}`, compute) as T;
}

/**
 * A call's arguments as a memo key: tensors (host or GPU) by shape and dtype, every other argument as given. What an
 * op checks and chooses from its arguments depends on nothing else, so the key can stand for the call.
 */
export function callKey(rank: NaRank, args: unknown, extra?: unknown): string {
  return JSON.stringify([rank, args, extra ?? null], (_k, v: unknown) =>
    v !== null && typeof v === 'object' && 'shape' in v && 'dtype' in v ? [(v as TensorLike).shape, (v as TensorLike).dtype] : v,
  );
}

/**
 * The memo name and key of a call planned with an explicit or default config: `callKey(rank, args, config)` under
 * `name`, or, from a default route, the route's own key of the call (`defaultKey`, whose config the route chose)
 * under `${name}-default`, so a routed call's arguments are serialised once.
 */
export function configMemoKey(name: string, rank: NaRank, args: unknown, config: unknown, defaultKey: string | undefined): readonly [string, string] {
  return defaultKey === undefined ? [name, callKey(rank, args, config)] : [`${name}-default`, defaultKey];
}

const choiceMemo = new WeakMap<GpuContext, LruCache<unknown>>();

/**
 * Compute once per (context, name, key) a choice that depends only on the key and the context's adapter (a default
 * config from a problem's shapes): the default routes run on every call, and their config searches take
 * milliseconds of CPU for 2-D and 3-D problems.
 */
export function memoPerContext<T>(ctx: GpuContext, name: string, key: unknown, compute: () => T): T {
  let memo = choiceMemo.get(ctx);
  if (!memo) {
    memo = new LruCache<unknown>({ maxEntries: MEMO_ENTRIES });
    choiceMemo.set(ctx, memo);
  }
  return memo.getOrCompute(`${name}:${typeof key === 'string' ? key : JSON.stringify(key)}`, compute) as T;
}

/**
 * An op's validated dispatches plus the pooled scratch they use: run `commands` (with `ctx.dispatch`, or
 * many times with `timeDispatch`), then call `release()` once the last submission using them was made.
 */
export interface GpuOpPlan {
  readonly commands: readonly DispatchCommand[];
  release(): void;
}

/** Dispatch a plan's commands, then release its scratch (also when the dispatch throws). */
export async function runPlan(ctx: GpuContext, plan: GpuOpPlan, op: string): Promise<void> {
  try {
    await ctx.dispatch(plan.commands, op);
  } finally {
    plan.release();
  }
}
