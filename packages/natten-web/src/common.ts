/** Plumbing shared by the functional ops: tensor classification, options, host/GPU execution. */
import {
  type DType,
  fromFloat64,
  NattenArgumentError,
  NattenNotImplementedError,
  type Tensor,
  tensor,
  toFloat64Values,
} from '@natten-web/core';
import type { GpuContext, GpuTensor } from '@natten-web/gpu';
import { type BackendName, checkBackendName, getBackend, gpuContext, noticeOnce } from './runtime.ts';
import { type AnyTensor, isGpuTensor, isHostTensor } from './tensors.ts';

/** Where a call's tensors live. */
export type Placement = 'host' | 'gpu';

/**
 * Every given tensor must be a host tensor, or every one a GPU tensor. `undefined`/`null` entries
 * (optional tensors) are skipped; the first entry is required.
 */
export function placement(op: string, tensors: Readonly<Record<string, unknown>>): Placement {
  let first: [string, Placement] | undefined;
  for (const [name, t] of Object.entries(tensors)) {
    if (t === undefined || t === null) continue;
    const kind: Placement | undefined = isGpuTensor(t) ? 'gpu' : isHostTensor(t) ? 'host' : undefined;
    if (!kind) {
      throw new NattenArgumentError(`${op}: ${name} must be a tensor (a host { shape, dtype, data } or a GPU tensor), got ${t === null ? 'null' : typeof t}`);
    }
    if (!first) first = [name, kind];
    else if (first[1] !== kind) {
      throw new NattenArgumentError(
        `${op}: ${first[0]} is a ${first[1]} tensor but ${name} is a ${kind} tensor; pass all host tensors or all GPU tensors (use toGpu/toHost)`,
      );
    }
  }
  if (!first) throw new NattenArgumentError(`${op}: no input tensors given`);
  return first[1];
}

/** Reject option keys the op does not know (catches typos such as `kernel_size` or `causal`). */
export function checkOptions(op: string, options: unknown, allowed: readonly string[]): Record<string, unknown> {
  if (typeof options !== 'object' || options === null || Array.isArray(options)) {
    throw new NattenArgumentError(`${op}: options must be an object such as { kernelSize: 7 }, got ${options === null ? 'null' : typeof options}`);
  }
  for (const key of Object.keys(options)) {
    if (!allowed.includes(key)) {
      throw new NattenArgumentError(`${op}: unknown option '${key}'; allowed options are ${allowed.join(', ')}`);
    }
  }
  const o = options as Record<string, unknown>;
  if (o.backend !== undefined) checkBackendName(op, o.backend);
  return o;
}

/** `scale` defaults to head_dim^-0.5 only when absent; an explicit value (0 included) is used as given. */
export function resolveScale(op: string, scale: unknown, dim: number): number {
  if (scale === undefined || scale === null) return 1 / Math.sqrt(dim);
  if (typeof scale !== 'number' || !Number.isFinite(scale)) {
    throw new NattenArgumentError(`${op}: scale=${String(scale)} must be a finite number (or omitted for head_dim^-0.5)`);
  }
  return scale;
}

export function values(t: Tensor): Float64Array {
  return toFloat64Values(t);
}

export function hostTensor(shape: readonly number[], dtype: DType, data: ArrayLike<number>): Tensor {
  return tensor(shape, dtype, fromFloat64(data, dtype));
}

export type HostInputs = Readonly<Record<string, Tensor | undefined>>;
export type GpuInputs = Readonly<Record<string, GpuTensor | undefined>>;

/** One op call, with a host implementation (any backend) and a GPU-tensor implementation. */
export interface OpPlan {
  readonly op: string;
  readonly requested: BackendName | undefined;
  readonly inputs: Readonly<Record<string, AnyTensor | null | undefined>>;
  host(inputs: HostInputs, backend: BackendName | undefined): Promise<Record<string, Tensor>>;
  gpu(ctx: GpuContext, inputs: GpuInputs): Promise<Record<string, GpuTensor>>;
}

function clean<T>(inputs: Readonly<Record<string, T | null | undefined>>): Record<string, T | undefined> {
  const out: Record<string, T | undefined> = {};
  for (const [k, v] of Object.entries(inputs)) out[k] = v ?? undefined;
  return out;
}

/**
 * Run a plan where its tensors live. Host tensors go to the requested backend and come back as host
 * tensors. GPU tensors stay on the GPU (no readback); backend 'cpu' with GPU tensors is an error.
 * With 'auto', an op not implemented on WebGPU yet reads the inputs back, runs on the CPU and uploads
 * the results (with a one-line notice).
 */
export async function execute(plan: OpPlan): Promise<Record<string, AnyTensor>> {
  const where = placement(plan.op, plan.inputs);
  if (where === 'host') return plan.host(clean(plan.inputs) as HostInputs, plan.requested);
  const requested = plan.requested ?? getBackend();
  if (plan.requested === 'cpu') {
    throw new NattenArgumentError(`${plan.op}: backend='cpu' was requested but the inputs are GPU tensors; read them back with toHost() first`);
  }
  const ctx = await gpuContext(plan.op);
  const gpuInputs = clean(plan.inputs) as GpuInputs;
  try {
    return await plan.gpu(ctx, gpuInputs);
  } catch (e) {
    if (!(e instanceof NattenNotImplementedError) || requested !== 'auto') throw e;
    noticeOnce(`gpu-ni-${plan.op}`, `natten-web: ${plan.op} is not implemented on WebGPU yet (${e.message}); reading back and running it on the CPU backend`);
    const host: Record<string, Tensor | undefined> = {};
    for (const [k, g] of Object.entries(gpuInputs)) host[k] = g ? await ctx.read(g) : undefined;
    const result = await plan.host(host, 'cpu');
    const out: Record<string, GpuTensor> = {};
    for (const [k, t] of Object.entries(result)) out[k] = ctx.upload(t, `${plan.op}.${k}`);
    return out;
  }
}

/** Allocate GPU outputs, run, and free them if the run fails. */
export async function withGpuOutputs<K extends string>(
  ctx: GpuContext,
  op: string,
  specs: Readonly<Record<K, { shape: readonly number[]; dtype: 'float32' | 'float16' } | undefined>>,
  run: (outs: Readonly<Record<K, GpuTensor | undefined>>) => Promise<void>,
): Promise<Record<K, GpuTensor | undefined>> {
  const outs = {} as Record<K, GpuTensor | undefined>;
  try {
    for (const key of Object.keys(specs) as K[]) {
      const s = specs[key];
      outs[key] = s ? ctx.createTensor(s.shape, s.dtype, `${op}.${key}`) : undefined;
    }
    await run(outs);
    return outs;
  } catch (e) {
    for (const g of Object.values(outs) as (GpuTensor | undefined)[]) if (g) ctx.freeTensor(g);
    throw e;
  }
}

/** Keep only defined entries. */
export function defined<T>(record: Readonly<Record<string, T | undefined>>): Record<string, T> {
  const out: Record<string, T> = {};
  for (const [k, v] of Object.entries(record)) if (v !== undefined) out[k] = v;
  return out;
}
