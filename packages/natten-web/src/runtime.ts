/**
 * Backend selection and the shared GPU context: the one place where natten-web decides between
 * WebGPU and the CPU reference (the gpu package never falls back on its own, STYLE §2).
 */
import type { AutotunerOptions } from '@natten-web/autotune';
import { cpuBackend } from '@natten-web/cpu';
import {
  type DType,
  type NaBackend,
  NattenArgumentError,
  NattenNotImplementedError,
  NattenUnsupportedError,
} from '@natten-web/core';
import { type AcquiredDevice, type AdapterReport, createGpuBackend, GpuContext, type GpuTensor } from '@natten-web/gpu';
import { setAutotuneOptions } from './config.ts';
import { VERSION } from './version.ts';

/** `'auto'`: WebGPU when an adapter exists, else the CPU (with a one-line notice, once). */
export type BackendName = 'cpu' | 'webgpu' | 'auto';
export const BACKEND_NAMES: readonly BackendName[] = ['cpu', 'webgpu', 'auto'];

export interface RuntimeOptions {
  /** Options of the autotuner used by `config: 'auto'` on WebGPU (mode, cache, shipped table, budget). */
  readonly autotune?: Omit<AutotunerOptions, 'ctx'> | undefined;
  /** A `GPU` object to use instead of `navigator.gpu` (browsers) or Dawn's `webgpu` package (Node). */
  readonly gpu?: GPU | undefined;
  /** Where one-line notices go (fallbacks); default `console.warn`. */
  readonly notice?: ((message: string) => void) | undefined;
  /**
   * Make every WebGPU op wait until the GPU has finished it (default false: an op resolves once its work is
   * queued, and `toHost`, `synchronize` and later ops see its results in queue order). For timing single ops by
   * wall clock, or pinning a GPU fault on the op that caused it; it costs a host round trip per op.
   */
  readonly blocking?: boolean | undefined;
}

interface State {
  selected: BackendName;
  gpu: GPU | undefined;
  notice: (message: string) => void;
  context: Promise<GpuContext> | undefined;
  /** The context once `context` has resolved (for calls that cannot wait, such as `free`). */
  resolved: GpuContext | undefined;
  blocking: boolean;
  /** False when the context wraps a device the caller owns (`useDevice`): dispose leaves it alive. */
  ownsDevice: boolean;
  gpuBackend: { ctx: GpuContext; backend: NaBackend } | undefined;
  noticed: Set<string>;
}

const defaultNotice = (message: string): void => console.warn(message);

const state: State = {
  selected: 'auto',
  gpu: undefined,
  notice: defaultNotice,
  context: undefined,
  resolved: undefined,
  blocking: false,
  ownsDevice: true,
  gpuBackend: undefined,
  noticed: new Set(),
};

/** Throw unless `value` is a backend name. */
export function checkBackendName(op: string, value: unknown): BackendName {
  if (typeof value === 'string' && (BACKEND_NAMES as readonly string[]).includes(value)) return value as BackendName;
  const shown = typeof value === 'string' ? `'${value}'` : String(value);
  throw new NattenArgumentError(`${op}: backend=${shown} is not a backend; use 'cpu', 'webgpu' or 'auto'`);
}

/** Choose the default backend of every op that does not pass `backend`. */
export function setBackend(name: BackendName): void {
  state.selected = checkBackendName('setBackend', name);
}

export function getBackend(): BackendName {
  return state.selected;
}

/**
 * Configure where WebGPU comes from and where notices go. Changing `gpu` drops the current context
 * (call `dispose()` first to free it).
 */
export function configure(options: RuntimeOptions): void {
  if ('gpu' in options) {
    releaseContext();
    state.gpu = options.gpu;
  }
  if ('notice' in options) state.notice = options.notice ?? defaultNotice;
  if ('blocking' in options) {
    state.blocking = options.blocking === true;
    // The live context follows at once (no new device needed).
    void state.context?.then((ctx) => {
      ctx.blocking = state.blocking;
    }, () => undefined);
  }
  if ('autotune' in options) setAutotuneOptions(options.autotune ?? {});
}

/** Forget the current context, destroying it (later) if natten-web created its device. */
function releaseContext(): void {
  const pending = state.context;
  const owns = state.ownsDevice;
  state.context = undefined;
  state.resolved = undefined;
  state.gpuBackend = undefined;
  state.ownsDevice = true;
  if (pending && owns) void pending.then((ctx) => ctx.destroy(), () => undefined);
}

/** Print a one-line notice once per key. */
export function noticeOnce(key: string, message: string): void {
  if (state.noticed.has(key)) return;
  state.noticed.add(key);
  state.notice(message);
}

function contextPromise(): Promise<GpuContext> {
  if (!state.context) {
    const pending = GpuContext.create({ ...(state.gpu ? { gpu: state.gpu } : {}), blocking: state.blocking });
    state.context = pending;
    // A failure is remembered (no adapter now means no adapter later); dispose() forgets it.
    pending.then(
      (ctx) => {
        if (state.context === pending) state.resolved = ctx;
      },
      () => undefined,
    );
  }
  return state.context;
}

function reason(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** natten-web's GPU context; throws NattenUnsupportedError naming `op` when WebGPU is unavailable. */
export async function gpuContext(op: string): Promise<GpuContext> {
  try {
    return await contextPromise();
  } catch (cause) {
    throw new NattenUnsupportedError(`${op}: the webgpu backend is not available: ${reason(cause)}`, { cause });
  }
}

/** The GPU context if WebGPU works here, else undefined (never throws). */
export async function tryGpuContext(): Promise<GpuContext | undefined> {
  try {
    return await contextPromise();
  } catch {
    return undefined;
  }
}

function gpuBackendFor(ctx: GpuContext): NaBackend {
  if (state.gpuBackend?.ctx !== ctx) state.gpuBackend = { ctx, backend: createGpuBackend(ctx) };
  return state.gpuBackend.backend;
}

/**
 * Use a `GPUDevice` the application already has (TensorFlow.js' WebGPU backend, ONNX Runtime Web, ...)
 * so that `fromGpuBuffer` tensors of that device can be used without copies. natten-web will not
 * destroy this device in `dispose()`. Requests no features or limits: ops use what the device has.
 */
export function useDevice(device: GPUDevice, adapter?: GPUAdapter): void {
  const info = (adapter?.info ?? (device as GPUDevice & { adapterInfo?: GPUAdapterInfo }).adapterInfo) as
    | (GPUAdapterInfo & { isFallbackAdapter?: boolean; subgroupMinSize?: number; subgroupMaxSize?: number })
    | undefined;
  const adapterInfo: AdapterReport = {
    vendor: info?.vendor ?? '',
    architecture: info?.architecture ?? '',
    device: info?.device ?? '',
    description: info?.description ?? '',
    isFallbackAdapter: info?.isFallbackAdapter ?? false,
    subgroupMinSize: info?.subgroupMinSize,
    subgroupMaxSize: info?.subgroupMaxSize,
  };
  const acquired: AcquiredDevice = {
    adapter: adapter as GPUAdapter,
    device,
    adapterInfo,
    features: new Set([...device.features].map(String)),
    subgroupMatrix: [],
  };
  releaseContext();
  const ctx = GpuContext.wrap(acquired, { blocking: state.blocking });
  state.context = Promise.resolve(ctx);
  state.resolved = ctx;
  state.ownsDevice = false;
}

/** A backend chosen for one call on host tensors. */
export interface ResolvedBackend {
  readonly name: 'cpu' | 'webgpu';
  readonly backend: NaBackend;
  /** True when the caller asked for 'auto' (so natten-web may fall back to the CPU). */
  readonly auto: boolean;
  readonly ctx?: GpuContext | undefined;
}

/** Resolve `backend` (or the default) to a concrete backend. 'webgpu' without an adapter throws. */
export async function resolveBackend(op: string, requested: unknown): Promise<ResolvedBackend> {
  const name = requested === undefined ? state.selected : checkBackendName(op, requested);
  if (name === 'cpu') return { name: 'cpu', backend: cpuBackend, auto: false };
  if (name === 'webgpu') {
    const ctx = await gpuContext(op);
    return { name: 'webgpu', backend: gpuBackendFor(ctx), auto: false, ctx };
  }
  const ctx = await tryGpuContext();
  if (!ctx) {
    let why = 'no WebGPU adapter';
    try {
      await contextPromise();
    } catch (e) {
      why = reason(e);
    }
    noticeOnce('auto-cpu', `natten-web: WebGPU is not available (${why.split('\n')[0]}); using the CPU backend`);
    return { name: 'cpu', backend: cpuBackend, auto: true };
  }
  return { name: 'webgpu', backend: gpuBackendFor(ctx), auto: true, ctx };
}

/**
 * Run one seed op on host tensors with the requested backend. With 'auto', work the GPU cannot do
 * (float64, float16 without `shader-f16`, an op not implemented on WebGPU yet) runs on the CPU
 * instead, with a one-line notice per reason.
 */
export async function runHost(
  op: string,
  requested: unknown,
  dtype: DType,
  run: (backend: NaBackend, ctx: GpuContext | undefined) => Promise<void>,
): Promise<'cpu' | 'webgpu'> {
  const resolved = await resolveBackend(op, requested);
  if (resolved.name === 'cpu') {
    await run(cpuBackend, undefined);
    return 'cpu';
  }
  if (resolved.auto) {
    if (dtype === 'float64') {
      noticeOnce('auto-f64', `natten-web: float64 tensors run on the CPU backend (WGSL has no f64)`);
      await run(cpuBackend, undefined);
      return 'cpu';
    }
    if (dtype === 'float16' && resolved.ctx && !resolved.ctx.hasF16) {
      noticeOnce('auto-f16', `natten-web: this WebGPU adapter lacks 'shader-f16'; float16 runs on the CPU backend`);
      await run(cpuBackend, undefined);
      return 'cpu';
    }
    try {
      await run(resolved.backend, resolved.ctx);
      return 'webgpu';
    } catch (e) {
      if (!(e instanceof NattenNotImplementedError)) throw e;
      noticeOnce(`auto-ni-${op}`, `natten-web: ${op} is not implemented on WebGPU yet (${e.message}); running it on the CPU backend`);
      await run(cpuBackend, undefined);
      return 'cpu';
    }
  }
  await run(resolved.backend, resolved.ctx);
  return 'webgpu';
}

export interface AdapterSummary {
  readonly vendor: string;
  readonly architecture: string;
  readonly device: string;
  readonly description: string;
  readonly fallback: boolean;
}

export interface BackendInfo {
  /** The backend ops run on by default ('auto' resolved). */
  readonly backend: 'cpu' | 'webgpu';
  /** What `setBackend` selected. */
  readonly selected: BackendName;
  readonly adapter?: AdapterSummary | undefined;
  /** WebGPU features natten-web enabled on the device (empty on the CPU). */
  readonly features: readonly string[];
  /** The device limits that matter for these kernels (empty on the CPU). */
  readonly limits: Readonly<Record<string, number>>;
  readonly version: string;
}

const INFO_LIMITS = [
  'maxStorageBufferBindingSize',
  'maxBufferSize',
  'maxComputeWorkgroupStorageSize',
  'maxComputeInvocationsPerWorkgroup',
  'maxComputeWorkgroupSizeX',
  'maxComputeWorkgroupsPerDimension',
  'maxStorageBuffersPerShaderStage',
] as const;

/** Which backend ops run on, the adapter, its features and key limits, and the library version. */
export async function info(): Promise<BackendInfo> {
  const selected = state.selected;
  const ctx = selected === 'cpu' ? undefined : selected === 'webgpu' ? await gpuContext('info') : await tryGpuContext();
  if (!ctx) return { backend: 'cpu', selected, features: [], limits: {}, version: VERSION };
  const a = ctx.adapterInfo;
  const limits: Record<string, number> = {};
  const raw = ctx.limits as unknown as Record<string, unknown>;
  for (const name of INFO_LIMITS) {
    const v = raw[name];
    if (typeof v === 'number') limits[name] = v;
  }
  return {
    backend: 'webgpu',
    selected,
    adapter: { vendor: a.vendor, architecture: a.architecture, device: a.device, description: a.description, fallback: a.isFallbackAdapter },
    features: [...ctx.features].sort(),
    limits,
    version: VERSION,
  };
}

/**
 * Wait until the GPU has finished every op queued so far (WebGPU ops resolve once their work is queued, so time a
 * sequence of them as `t0 = performance.now(); ...ops; await synchronize()`). Resolves at once when no GPU context
 * exists; throws `NattenDeviceError` when the device was lost.
 */
export async function synchronize(): Promise<void> {
  const pending = state.context;
  if (!pending) return;
  let ctx: GpuContext;
  try {
    ctx = await pending;
  } catch {
    return;
  }
  await ctx.workDone('synchronize');
}

/**
 * Run `fn` with every WebGPU op inside it submitted together, in one command buffer with one host round trip,
 * instead of one per op (`GpuContext.batch`): for a model's layers on GPU tensors. The ops see each other's results in
 * order as usual; `toHost` / `read` inside it first submit what was recorded. An error in the batch's submission is
 * thrown when it ends, naming its ops. With the CPU backend selected, or where WebGPU is unavailable, `fn` just runs.
 */
export async function batch<T>(fn: () => Promise<T>): Promise<T> {
  const ctx = state.selected === 'cpu' ? undefined : await tryGpuContext();
  return ctx ? ctx.batch(fn) : fn();
}

/**
 * Free a GPU tensor's memory (its buffer) once the work already queued with it is done with it: at once, or inside
 * `batch` after the batch's submission (destroying the buffer directly there would fail the batch, whose recorded
 * work still uses it). A large output of natten-web's (1 MiB and up) goes to the context's pool instead and serves
 * the next output of its size, which saves 0.1-0.2 ms of allocation per call on an H200 host. Use the tensor no
 * more afterwards.
 */
export function free(t: GpuTensor): void {
  const ctx = state.resolved;
  if (ctx) ctx.freeTensor(t);
  else t.buffer.destroy();
}

/** Free the GPU context (a device given to `useDevice` is left alive). The next GPU op creates a new one. */
export async function dispose(): Promise<void> {
  const pending = state.context;
  const owns = state.ownsDevice;
  state.context = undefined;
  state.resolved = undefined;
  state.gpuBackend = undefined;
  state.ownsDevice = true;
  if (!pending) return;
  try {
    const ctx = await pending;
    if (owns) ctx.destroy();
  } catch {
    // creating it had failed: nothing to free
  }
}
