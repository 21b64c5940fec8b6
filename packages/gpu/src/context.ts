import { bytesPerElement, formatShape, NattenArgumentError, numel, type Tensor, tensor } from '@natten-web/core';
import { type GeneratedKernel, type GpuDType, isGpuDType, packUniforms } from '@natten-web/wgsl';
import { type AcquiredDevice, type AcquireOptions, type AdapterReport, acquireDevice, type SubgroupMatrixConfig } from './device.ts';
import { NattenDeviceError, NattenShaderError } from './errors.ts';
import { LruCache } from './lru.ts';
import { BufferPool } from './pool.ts';

/** A tensor living in a GPU storage buffer (dense, row-major). */
export interface GpuTensor {
  readonly shape: readonly number[];
  readonly dtype: GpuDType;
  readonly buffer: GPUBuffer;
  /** Elements (product of shape). */
  readonly numel: number;
  /** Bytes of data (the buffer may be padded to a multiple of 4). */
  readonly byteLength: number;
}

/** One compute dispatch: a kernel, its storage buffers in binding order, uniform values, and workgroup counts. */
export interface DispatchCommand {
  readonly kernel: GeneratedKernel;
  readonly buffers: readonly GPUBuffer[];
  readonly uniforms?: Readonly<Record<string, number>>;
  readonly workgroups: readonly [number, number, number];
  /**
   * Buffers zeroed (`clearBuffer`) right before this command's pass, each time the command is encoded: scratch that
   * the kernel accumulates into (atomics) stays correct when prepared commands are encoded many times. A
   * `ClearRange` zeroes only a buffer's first bytes (the device script's `--mode bconcurrent` uses 4 of them to make
   * a buffer's last write a transfer, so Dawn owes no compute barrier before the next dispatch that writes it).
   */
  readonly clear?: readonly (GPUBuffer | ClearRange)[];
}

/** Commands that passed `checkAndCompile`: their pipelines and packed uniforms. */
interface CheckedCommands {
  readonly pipelines: readonly GPUComputePipeline[];
  readonly uniformData: readonly (ArrayBuffer | undefined)[];
}

/** Dispatches recorded by `GpuContext.batch`, submitted together at its end (or before a read inside it). */
interface Recording {
  readonly commands: DispatchCommand[];
  readonly pipelines: GPUComputePipeline[];
  readonly uniformData: (ArrayBuffer | undefined)[];
  /** The ops that recorded, for error messages. */
  readonly ops: Set<string>;
  /** Buffers zeroed (`zero`) after the last recorded dispatch with workgroups: cleared at the submission's end. */
  clears: GPUBuffer[];
  /** Buffers to destroy once the recorded work is submitted (`retire`). */
  readonly retired: GPUBuffer[];
}

const newRecording = (): Recording => ({ commands: [], pipelines: [], uniformData: [], ops: new Set(), clears: [], retired: [] });

/** The first `size` bytes of a buffer, to zero before a pass (`DispatchCommand.clear`). */
export interface ClearRange {
  readonly buffer: GPUBuffer;
  readonly size: number;
}

/** Where a prepared dispatch writes its GPU timestamps: begin of the first pass, end of the last. */
export interface PassTimestamps {
  readonly querySet: GPUQuerySet;
  readonly beginIndex: number;
  readonly endIndex: number;
}

/** Dispatches compiled and bound once, encodable many times (see `GpuContext.prepare`). */
export interface PreparedDispatch {
  /** Compute passes per `encode` (commands with zero workgroups are skipped). */
  readonly passCount: number;
  /**
   * Encode the dispatches, a compute pass each; with `onePass`, every command's clears first and then all dispatches
   * in one compute pass (the timestamps then bracket that pass).
   */
  encode(enc: GPUCommandEncoder, timestamps?: PassTimestamps, onePass?: boolean): void;
  /** Return the uniform buffers to the pool (idempotent). */
  release(): void;
}

const UNIFORM_USAGE = 0x40 /* UNIFORM */ | 0x8; /* COPY_DST */

/** Distinct uniform contents a context keeps a buffer for (each 16-256 bytes). */
const UNIFORM_CACHE_ENTRIES = 512;
/** Distinct contents of `constantBuffer` kept (varlen offsets: a training loop repeats a few batches' layouts). */
const CONSTANT_CACHE_ENTRIES = 64;
/** Bind groups a context keeps for reuse (each holds its buffers alive until dropped), and the bytes they may bind. */
const BIND_GROUP_CACHE_ENTRIES = 64;
const BIND_GROUP_CACHE_BYTES = 256 * 1024 * 1024;
const STAGING_USAGE = 0x1 /* MAP_READ */ | 0x8; /* COPY_DST */

/** Tensors from this size up are recycled through the pool by `freeTensor` (below it, creating a buffer is cheap). */
const RECYCLE_MIN_BYTES = 1 << 20;

/** Buffer usage for every tensor buffer. */
const TENSOR_USAGE = 0x80 /* STORAGE */ | 0x4 /* COPY_SRC */ | 0x8; /* COPY_DST */

function envFlag(name: string): string | undefined {
  const env = (globalThis as { process?: { env?: Record<string, string | undefined> } }).process?.env;
  return env?.[name];
}

/**
 * A WebGPU device with everything the ops need: pipeline cache keyed by kernel key, tensor upload/download,
 * dispatch inside error scopes, device-loss detection.
 */
export class GpuContext {
  readonly adapter: GPUAdapter;
  readonly device: GPUDevice;
  readonly adapterInfo: AdapterReport;
  readonly features: ReadonlySet<string>;
  readonly subgroupMatrix: readonly SubgroupMatrixConfig[];
  readonly limits: GPUSupportedLimits;
  private readonly pipelines = new Map<string, Promise<GPUComputePipeline>>();
  private compileChain: Promise<void> = Promise.resolve();
  /** Pool for temporaries: uniform and staging buffers, scratch tensors (`tempTensor`). */
  readonly pool: BufferPool;
  private lostReason: string | undefined;
  private destroyed = false;
  /** Set while `batch()` runs: dispatches are recorded and submitted together at its end. */
  private recording: Recording | undefined;
  /** Set while `profile()` runs: every dispatch then records its GPU time. */
  private profiling: { querySet: GPUQuerySet; resolve: GPUBuffer; gpuNs: number; dispatches: number } | undefined;
  /** Resolves when the device is lost or destroyed (never rejects). */
  private readonly lostPromise: Promise<void>;
  private readonly layouts = new WeakMap<GPUComputePipeline, GPUBindGroupLayout>();
  /** Uniform buffers by content (`uniformBuffer`); a dropped one is destroyed (WebGPU frees it after the work already queued). */
  private readonly uniforms = new LruCache<GPUBuffer>({ maxEntries: UNIFORM_CACHE_ENTRIES, onEvict: (b) => this.retire(b) });
  /** Read-only storage buffers by content (`constantBuffer`), dropped as the uniforms are. */
  private readonly constants = new LruCache<GPUBuffer>({ maxEntries: CONSTANT_CACHE_ENTRIES, onEvict: (b) => this.retire(b) });
  /** Bind groups by (layout, buffers), weighed by the bytes they bind (`sharedBindGroup`). */
  private readonly bindGroups = new LruCache<GPUBindGroup>({ maxEntries: BIND_GROUP_CACHE_ENTRIES, maxWeight: BIND_GROUP_CACHE_BYTES });
  private readonly objectIds = new WeakMap<object, number>();
  /** Large buffers `createTensor` made that `freeTensor` may give to the pool (weakly held: dropped ones are collected). */
  private readonly recyclable = new WeakSet<GPUBuffer>();
  private nextObjectId = 1;
  /**
   * Make every op wait until the GPU has finished its work (false: an op resolves once its work is submitted and
   * its error scopes have settled; `read`, `workDone` and later ops see the results in queue order). Turn it on to
   * time single ops by wall clock or to pin a GPU fault on the op that caused it; it costs a host round trip per op.
   */
  blocking: boolean;

  private constructor(acquired: Awaited<ReturnType<typeof acquireDevice>>, blocking: boolean) {
    this.blocking = blocking;
    this.adapter = acquired.adapter;
    this.device = acquired.device;
    this.adapterInfo = acquired.adapterInfo;
    this.features = acquired.features;
    this.subgroupMatrix = acquired.subgroupMatrix;
    this.limits = acquired.device.limits;
    this.pool = new BufferPool(acquired.device, { destroy: (b) => this.retire(b) });
    this.lostPromise = this.device.lost.then((info) => {
      if (!this.destroyed) this.lostReason = `${info.reason === 'destroyed' ? 'destroyed' : info.reason}: ${info.message || 'no message'}`;
    });
    this.device.onuncapturederror = (ev: GPUUncapturedErrorEvent) => {
      // Every op runs inside error scopes, so this only fires on a bug in natten-web.
      console.error(`natten-web: uncaptured WebGPU error: ${ev.error.message}`);
    };
  }

  static async create(options: AcquireOptions & { readonly blocking?: boolean } = {}): Promise<GpuContext> {
    return new GpuContext(await acquireDevice(options), options.blocking === true);
  }

  /**
   * A context over a device the caller already has (an application's own `GPUDevice`, with its adapter report and
   * the features it was created with). `destroy()` destroys that device: callers that keep it just drop the context.
   */
  static wrap(acquired: AcquiredDevice, options: { readonly blocking?: boolean } = {}): GpuContext {
    return new GpuContext(acquired, options.blocking === true);
  }

  get hasF16(): boolean {
    return this.features.has('shader-f16');
  }

  get hasSubgroups(): boolean {
    return this.features.has('subgroups');
  }

  get hasTimestamps(): boolean {
    return this.features.has('timestamp-query');
  }

  /** Throw if the device was lost or destroyed. */
  assertAlive(op = 'natten-web'): void {
    if (this.destroyed) throw new NattenDeviceError(`${op}: the GPU context was destroyed`);
    if (this.lostReason !== undefined) {
      throw new NattenDeviceError(`${op}: the GPU device was lost (${this.lostReason}); create a new context`);
    }
  }

  /** Keys of the kernels whose pipelines are cached (compiled or compiling), in first-use order. */
  cachedKernelKeys(): string[] {
    return [...this.pipelines.keys()];
  }

  /** Compiled pipeline for a kernel, cached by key; concurrent misses share one compile. */
  pipeline(kernel: GeneratedKernel): Promise<GPUComputePipeline> {
    let p = this.pipelines.get(kernel.key);
    if (!p) {
      // Compiles run one after another: error scopes are a per-device stack, so overlapping
      // push/pop pairs of concurrent compiles would swap each other's errors.
      p = this.compileChain.then(() => this.compile(kernel));
      this.compileChain = p.then(
        () => undefined,
        () => undefined,
      );
      this.pipelines.set(kernel.key, p);
      p.catch(() => this.pipelines.delete(kernel.key));
    }
    return p;
  }

  private async compile(kernel: GeneratedKernel): Promise<GPUComputePipeline> {
    this.assertAlive();
    for (const f of kernel.features) {
      if (!this.features.has(f)) {
        throw new NattenDeviceError(`kernel ${kernel.key} needs the WebGPU feature '${f}', which this device does not have`);
      }
    }
    if (kernel.workgroupBytes > this.limits.maxComputeWorkgroupStorageSize) {
      throw new NattenDeviceError(
        `kernel ${kernel.key} needs ${kernel.workgroupBytes} bytes of workgroup memory; this device allows ${this.limits.maxComputeWorkgroupStorageSize}`,
      );
    }
    const printFilter = envFlag('NATTEN_WEB_PRINT_SHADER');
    if (printFilter !== undefined && kernel.key.includes(printFilter)) {
      console.log(`// ---- ${kernel.key}\n${kernel.code}`);
    }
    const device = this.device;
    device.pushErrorScope('validation');
    const module = device.createShaderModule({ code: kernel.code, label: kernel.key });
    const info = await module.getCompilationInfo();
    const errors = info.messages.filter((m) => m.type === 'error');
    const moduleError = await device.popErrorScope();
    if (errors.length > 0 || moduleError) {
      const msgs = errors.map((m) => `${m.lineNum}:${m.linePos} ${m.message}`);
      if (moduleError) msgs.push(moduleError.message);
      throw new NattenShaderError(kernel.key, msgs, kernel.code);
    }
    device.pushErrorScope('validation');
    let pipeline: GPUComputePipeline;
    try {
      pipeline = await device.createComputePipelineAsync({
        label: kernel.key,
        layout: 'auto',
        compute: { module, entryPoint: kernel.entryPoint },
      });
    } catch (cause) {
      await device.popErrorScope();
      throw new NattenShaderError(kernel.key, [String((cause as Error).message ?? cause)], kernel.code, { cause });
    }
    const pipeError = await device.popErrorScope();
    if (pipeError) throw new NattenShaderError(kernel.key, [pipeError.message], kernel.code);
    return pipeline;
  }

  /** Allocate a zeroed GPU tensor. */
  createTensor(shape: readonly number[], dtype: GpuDType, label?: string): GpuTensor {
    return this.allocTensor(shape, dtype, label, true);
  }

  /**
   * A new tensor's buffer: a large one freed with `freeTensor` if the pool has one of its size (zeroed when `zero`),
   * else a new buffer (WebGPU zeroes those).
   */
  private allocTensor(shape: readonly number[], dtype: GpuDType, label: string | undefined, zero: boolean): GpuTensor {
    this.assertAlive();
    if (!isGpuDType(dtype)) throw new NattenArgumentError(`createTensor: dtype ${String(dtype)} is not a GPU dtype (float32 or float16)`);
    if (dtype === 'float16' && !this.hasF16) {
      throw new NattenDeviceError("float16 needs the WebGPU feature 'shader-f16', which this adapter does not offer; use float32");
    }
    const n = numel(shape);
    const byteLength = n * bytesPerElement(dtype);
    if (byteLength > this.limits.maxStorageBufferBindingSize) {
      throw new NattenArgumentError(
        `tensor ${formatShape(shape)} ${dtype} needs ${byteLength} bytes, over this device's maxStorageBufferBindingSize of ${this.limits.maxStorageBufferBindingSize}`,
      );
    }
    const size = Math.max(4, Math.ceil(byteLength / 4) * 4);
    // A large buffer freed with `freeTensor` serves again (creating one costs 0.1-0.2 ms of host time). Not for an
    // upload inside `batch`: its write would land before recorded work that may still use the buffer. An upload takes
    // only a buffer of its exact size, so that no old data lies past its end (zeroed buffers may be larger).
    if (size >= RECYCLE_MIN_BYTES && (zero || !this.recording)) {
      const reused = this.pool.take(size, TENSOR_USAGE, !zero);
      if (reused) {
        const t: GpuTensor = { shape: [...shape], dtype, buffer: reused, numel: n, byteLength };
        if (label) reused.label = label;
        this.recyclable.add(reused);
        if (zero) this.zero(t);
        return t;
      }
    }
    const buffer = this.device.createBuffer({ size, usage: TENSOR_USAGE, ...(label ? { label } : {}) });
    if (size >= RECYCLE_MIN_BYTES) this.recyclable.add(buffer);
    return { shape: [...shape], dtype, buffer, numel: n, byteLength };
  }

  /**
   * Free a tensor this context made with `createTensor` or `upload` (the ops' outputs): a large one goes to the pool
   * and serves a later `createTensor` of its size (zeroed again); others, and buffers made elsewhere, are destroyed
   * (`retire`: inside `batch`, after its submission). Safe as soon as the work using the tensor is queued or
   * recorded. Freeing one twice is harmless; use the tensor no more afterwards.
   */
  freeTensor(t: GpuTensor): void {
    const b = t.buffer;
    if (this.recyclable.delete(b)) this.pool.adopt(b);
    else if (!this.pool.owns(b)) this.retire(b);
  }

  /**
   * A scratch tensor from the pool (contents undefined unless `zero` is set). Give it back with
   * `releaseTensor` once the work using it was submitted; never hand it to a caller.
   */
  tempTensor(shape: readonly number[], dtype: GpuDType, options: { zero?: boolean; label?: string } = {}): GpuTensor {
    this.assertAlive('tempTensor');
    const n = numel(shape);
    const byteLength = n * bytesPerElement(dtype);
    if (byteLength > this.limits.maxStorageBufferBindingSize) {
      throw new NattenArgumentError(
        `tempTensor: ${formatShape(shape)} ${dtype} needs ${byteLength} bytes, over this device's maxStorageBufferBindingSize of ${this.limits.maxStorageBufferBindingSize}`,
      );
    }
    const buffer = this.pool.acquire(Math.max(4, Math.ceil(byteLength / 4) * 4), TENSOR_USAGE, options.label);
    const t: GpuTensor = { shape: [...shape], dtype, buffer, numel: n, byteLength };
    if (options.zero === true) this.zero(t);
    return t;
  }

  /** Return a `tempTensor` to the pool. */
  releaseTensor(t: GpuTensor): void {
    this.pool.release(t.buffer);
  }

  /** Copy a host tensor to a new GPU tensor. */
  upload(t: Tensor, label?: string): GpuTensor {
    if (!isGpuDType(t.dtype)) {
      throw new NattenArgumentError(`upload: dtype ${t.dtype} cannot live on the GPU (WGSL has no f64); cast to float32 first`);
    }
    const g = this.allocTensor(t.shape, t.dtype, label, false);
    const src = t.data as Float32Array | Uint16Array;
    const bytes = new Uint8Array(src.buffer, src.byteOffset, src.byteLength);
    if (bytes.byteLength % 4 === 0) this.device.queue.writeBuffer(g.buffer, 0, bytes);
    else {
      const padded = new Uint8Array(Math.ceil(bytes.byteLength / 4) * 4);
      padded.set(bytes);
      this.device.queue.writeBuffer(g.buffer, 0, padded);
    }
    return g;
  }

  /** Read a GPU tensor back into a new host tensor. */
  async read(g: GpuTensor): Promise<Tensor> {
    this.assertAlive('read');
    if (this.recording) await this.flushRecording('read');
    const size = Math.max(4, Math.ceil(g.byteLength / 4) * 4);
    const staging = this.pool.acquire(size, STAGING_USAGE, 'natten-web staging');
    const enc = this.device.createCommandEncoder();
    enc.copyBufferToBuffer(g.buffer, 0, staging, 0, size);
    this.device.queue.submit([enc.finish()]);
    let mapped = false;
    try {
      await Promise.race([
        staging.mapAsync(0x1 /* READ */, 0, size),
        this.lostPromise.then(() => {
          throw new NattenDeviceError('read: the GPU device was lost while reading');
        }),
      ]);
      mapped = true;
    } catch (cause) {
      this.assertAlive('read');
      throw new NattenDeviceError('read: mapping the staging buffer failed', { cause });
    }
    try {
      const copy = staging.getMappedRange(0, size).slice(0, g.byteLength);
      const data = g.dtype === 'float16' ? new Uint16Array(copy) : new Float32Array(copy);
      return tensor(g.shape, g.dtype, data);
    } finally {
      if (mapped) staging.unmap();
      this.pool.release(staging);
    }
  }

  /** Read into an existing host tensor's data (same shape and dtype). */
  async readInto(g: GpuTensor, out: Tensor): Promise<void> {
    const t = await this.read(g);
    (out.data as Float32Array | Uint16Array).set(t.data as Float32Array | Uint16Array);
  }

  /** Fill a tensor's buffer with zeros (in queue order: inside `batch`, after the work recorded before it). */
  zero(g: GpuTensor): void {
    if (this.recording) {
      this.recording.clears.push(g.buffer);
      return;
    }
    const enc = this.device.createCommandEncoder();
    enc.clearBuffer(g.buffer);
    this.device.queue.submit([enc.finish()]);
  }

  /**
   * Check, compile and bind a list of dispatches once, so they can be encoded into any number of command
   * encoders (`dispatch` encodes them once; `timeDispatch` in timing.ts many times). Bad commands throw a
   * `NattenDeviceError` here, before any error scope is open. Call `release()` after the last submission
   * that uses them completed.
   */
  async prepare(commands: readonly DispatchCommand[], op = 'dispatch'): Promise<PreparedDispatch> {
    // Its encodings are submitted by the caller, in its own order: submit a batch's recorded work first.
    if (this.recording) await this.flushRecording(op);
    const checked = await this.checkAndCompile(commands, op);
    this.device.pushErrorScope('validation');
    // Its own uniform buffers (not the shared cache, which may drop them): a prepared dispatch can live long (the
    // clock warmer's) and be encoded again and again.
    const prepared = this.bind(commands, checked, false);
    const bindError = await this.device.popErrorScope();
    if (bindError) {
      prepared.release();
      throw new NattenDeviceError(`${op}: WebGPU validation error while binding: ${bindError.message}`);
    }
    return prepared;
  }

  /** Check the commands' bindings, grids and uniforms (throws), then get their pipelines. */
  private async checkAndCompile(commands: readonly DispatchCommand[], op: string): Promise<CheckedCommands> {
    this.assertAlive(op);
    const maxDim = this.limits.maxComputeWorkgroupsPerDimension;
    for (const c of commands) {
      if (c.buffers.length !== c.kernel.bindings.length) {
        throw new NattenDeviceError(
          `${op}: kernel ${c.kernel.key} has ${c.kernel.bindings.length} storage bindings but ${c.buffers.length} buffers were given`,
        );
      }
      for (const w of c.workgroups) {
        if (!Number.isInteger(w) || w < 0 || w > maxDim) {
          throw new NattenDeviceError(
            `${op}: dispatch of ${c.workgroups.join('x')} workgroups is not within 0..maxComputeWorkgroupsPerDimension=${maxDim} per axis (kernel ${c.kernel.key})`,
          );
        }
      }
    }
    // Pack uniforms before any error scope opens: a missing value throws here.
    const uniformData = commands.map((c) => (c.kernel.uniforms.length > 0 ? packUniforms(c.kernel.uniforms, c.uniforms ?? {}) : undefined));
    const pipelines = await Promise.all(commands.map((c) => this.pipeline(c.kernel)));
    this.assertAlive(op);
    return { pipelines, uniformData };
  }

  /** A pipeline's bind group layout (Dawn makes a new layout object on every `getBindGroupLayout` call). */
  private layoutOf(pipeline: GPUComputePipeline): GPUBindGroupLayout {
    let layout = this.layouts.get(pipeline);
    if (!layout) {
      layout = pipeline.getBindGroupLayout(0);
      this.layouts.set(pipeline, layout);
    }
    return layout;
  }

  /** What the context's caches hold (diagnostics): uniform buffers, bind groups and the bytes those bind. */
  cacheStats(): { uniformBuffers: number; bindGroups: number; bindGroupBytes: number } {
    return { uniformBuffers: this.uniforms.size, bindGroups: this.bindGroups.size, bindGroupBytes: this.bindGroups.weight };
  }

  /** A small number per object (buffer, layout), for bind group keys. */
  private idOf(obj: object): number {
    let id = this.objectIds.get(obj);
    if (id === undefined) {
      id = this.nextObjectId++;
      this.objectIds.set(obj, id);
    }
    return id;
  }

  /**
   * The bind group of a pipeline over these buffers, made once and reused while it is among the most recently used
   * (a model's loop binds the same buffers call after call, and making a bind group took 30-43 us of host time on the
   * H200's host). An entry keeps its buffers alive until it is dropped, so the cache holds at most
   * `BIND_GROUP_CACHE_ENTRIES` entries and `BIND_GROUP_CACHE_BYTES` of the buffers they bind (counted per entry):
   * tensors a caller drops without destroying them are held back by at most that much. A buffer destroyed meanwhile
   * is never bound again through the cache (a new buffer is a new key).
   */
  private sharedBindGroup(pipeline: GPUComputePipeline, entries: GPUBindGroupEntry[], label: string): GPUBindGroup {
    const layout = this.layoutOf(pipeline);
    const buffers = entries.map((e) => (e.resource as GPUBufferBinding).buffer);
    const key = `${this.idOf(layout)}:${buffers.map((b) => this.idOf(b)).join(',')}`;
    const cached = this.bindGroups.get(key);
    if (cached) return cached;
    const group = this.device.createBindGroup({ layout, entries, label });
    this.bindGroups.set(key, group, buffers.reduce((sum, b) => sum + b.size, 0));
    return group;
  }

  /**
   * A uniform buffer holding exactly `data`, written once and shared by every dispatch with the same values (a
   * model's calls repeat their shapes), so a call writes no uniforms. The oldest of more than
   * `UNIFORM_CACHE_ENTRIES` distinct contents is destroyed (WebGPU frees it after the work already submitted).
   */
  private uniformBuffer(data: ArrayBuffer): GPUBuffer {
    const key = Array.from(new Uint32Array(data)).join(',');
    const cached = this.uniforms.get(key);
    if (cached) return cached;
    const buffer = this.device.createBuffer({ size: data.byteLength, usage: UNIFORM_USAGE, label: 'natten-web uniforms' });
    this.device.queue.writeBuffer(buffer, 0, data);
    this.uniforms.set(key, buffer);
    return buffer;
  }

  /**
   * A read-only storage buffer holding `data` (small u32 constants a kernel reads, such as varlen offsets), written
   * once and shared by every call with the same values, so a loop over the same layouts uploads nothing and its bind
   * groups stay cached. The oldest of more than 64 distinct contents is destroyed (WebGPU frees it after the work
   * already submitted); do not destroy one yourself.
   */
  constantBuffer(data: Uint32Array, label = 'natten-web constants'): GPUBuffer {
    this.assertAlive('constantBuffer');
    const key = Array.prototype.join.call(data, ',');
    const cached = this.constants.get(key);
    if (cached) return cached;
    const buffer = this.device.createBuffer({ size: Math.max(16, Math.ceil(data.byteLength / 4) * 4), usage: 0x80 /* STORAGE */ | 0x8 /* COPY_DST */ | 0x4 /* COPY_SRC: readable for checks */, label });
    this.device.queue.writeBuffer(buffer, 0, data);
    this.constants.set(key, buffer);
    return buffer;
  }

  /**
   * Uniform buffers and bind groups of checked commands (inside the caller's error scope): uniforms from the shared
   * cache (`shared`, one submission right after), or in pooled buffers of their own that `release` gives back.
   */
  private bind(commands: readonly DispatchCommand[], { pipelines, uniformData }: CheckedCommands, shared: boolean): PreparedDispatch {
    const device = this.device;
    const own: GPUBuffer[] = [];
    const passes: { pipeline: GPUComputePipeline; bindGroup: GPUBindGroup; workgroups: readonly [number, number, number]; label: string; clear: readonly (GPUBuffer | ClearRange)[] }[] = [];
    commands.forEach((c, i) => {
      const pipeline = pipelines[i] as GPUComputePipeline;
      const entries: GPUBindGroupEntry[] = c.buffers.map((buffer, binding) => ({ binding, resource: { buffer } }));
      const data = uniformData[i];
      if (data !== undefined) {
        let ub: GPUBuffer;
        if (shared) ub = this.uniformBuffer(data);
        else {
          ub = this.pool.acquire(data.byteLength, UNIFORM_USAGE, 'natten-web uniforms');
          device.queue.writeBuffer(ub, 0, data);
          own.push(ub);
        }
        entries.push({ binding: c.buffers.length, resource: { buffer: ub, size: data.byteLength } });
      }
      if (c.workgroups.some((w) => w === 0)) return;
      const bindGroup = shared ? this.sharedBindGroup(pipeline, entries, c.kernel.key) : device.createBindGroup({ layout: this.layoutOf(pipeline), entries, label: c.kernel.key });
      passes.push({ pipeline, bindGroup, workgroups: c.workgroups, label: c.kernel.key, clear: c.clear ?? [] });
    });
    let released = false;
    const release = (): void => {
      if (released) return;
      released = true;
      for (const b of own) this.pool.release(b);
    };
    return {
      passCount: passes.length,
      encode(enc: GPUCommandEncoder, timestamps?: PassTimestamps, onePass = false): void {
        // Timestamps at the beginning of the first pass and the end of the last.
        const passDescriptor = (label: string, first: boolean, last: boolean): GPUComputePassDescriptor =>
          timestamps === undefined || !(first || last)
            ? { label }
            : {
                label,
                timestampWrites: {
                  querySet: timestamps.querySet,
                  ...(first ? { beginningOfPassWriteIndex: timestamps.beginIndex } : {}),
                  ...(last ? { endOfPassWriteIndex: timestamps.endIndex } : {}),
                },
              };
        const clear = (p: (typeof passes)[number]): void => {
          for (const b of p.clear) {
            if ('buffer' in b) enc.clearBuffer(b.buffer, 0, b.size);
            else enc.clearBuffer(b);
          }
        };
        const dispatch = (pass: GPUComputePassEncoder, p: (typeof passes)[number]): void => {
          pass.setPipeline(p.pipeline);
          pass.setBindGroup(0, p.bindGroup);
          pass.dispatchWorkgroups(p.workgroups[0], p.workgroups[1], p.workgroups[2]);
        };
        if (onePass && passes.length > 0) {
          passes.forEach(clear);
          const pass = enc.beginComputePass(passDescriptor(passes.map((p) => p.label).join(' + '), true, true));
          for (const p of passes) dispatch(pass, p);
          pass.end();
          return;
        }
        passes.forEach((p, i) => {
          clear(p);
          const pass = enc.beginComputePass(passDescriptor(p.label, i === 0, i === passes.length - 1));
          dispatch(pass, p);
          pass.end();
        });
      },
      release,
    };
  }

  /**
   * Run dispatches in order, one compute pass each, in one submission, inside validation and OOM error scopes.
   * Resolves once the work is submitted and its error scopes have settled (a validation or out-of-memory error is
   * thrown as `NattenDeviceError`), without waiting for the GPU to finish it: WebGPU runs a queue's work in order,
   * so later ops and `read` see its results. `blocking` contexts, and `profile()`, wait for the GPU as well.
   */
  async dispatch(commands: readonly DispatchCommand[], op = 'dispatch'): Promise<void> {
    const checked = await this.checkAndCompile(commands, op);
    const rec = this.recording;
    if (rec) {
      // Zeroings recorded since the last dispatch with workgroups clear before this one's first pass that runs.
      const runs = commands.findIndex((c) => c.workgroups.every((w) => w > 0));
      commands.forEach((c, i) => {
        rec.commands.push(i === runs && rec.clears.length > 0 ? { ...c, clear: [...rec.clears, ...(c.clear ?? [])] } : c);
      });
      if (runs >= 0) rec.clears = [];
      rec.pipelines.push(...checked.pipelines);
      rec.uniformData.push(...checked.uniformData);
      rec.ops.add(op);
      return;
    }
    await this.submitChecked(commands, checked, op, []);
  }

  /**
   * Run `fn` (any sequence of ops on this context) with its dispatches recorded, then submit them all in one command
   * buffer under one pair of error scopes: one submission and one host round trip instead of one per op (the
   * modules' forward runs its three ops this way). The ops see each other's results in order, as when submitted one
   * by one. Inside it, `read` and `workDone` first submit what was recorded; a validation or out-of-memory error is
   * thrown at the end, naming the ops that recorded. Temporaries released inside it are reused or destroyed only in
   * queue order (`retire`). A nested `batch` joins the outer one. While it runs, every op on this context records
   * into it, also ones started by other code at the same time.
   */
  async batch<T>(fn: () => Promise<T>, op = 'batch'): Promise<T> {
    if (this.recording) return fn();
    this.assertAlive(op);
    const rec = newRecording();
    this.recording = rec;
    let result: T;
    try {
      result = await fn();
    } catch (error) {
      // What was recorded since the last flush (reads inside the batch flush into a new recording).
      const current = this.recording ?? rec;
      this.recording = undefined;
      // The ops before the failing one did their work; submit it, and report the op's error rather than the batch's.
      await this.submitRecording(current, op).catch(() => undefined);
      throw error;
    }
    const last = this.recording ?? rec;
    this.recording = undefined;
    await this.submitRecording(last, op);
    return result;
  }

  /** Destroy `buffer` once the work recorded so far is submitted: at once outside `batch`, after its submission inside. */
  retire(buffer: GPUBuffer): void {
    if (this.recording) this.recording.retired.push(buffer);
    else buffer.destroy();
  }

  /** Inside `batch`: submit what was recorded so far (a read or wait needs it) and go on recording. */
  private async flushRecording(op: string): Promise<void> {
    const rec = this.recording;
    if (!rec) return;
    this.recording = newRecording();
    await this.submitRecording(rec, op);
  }

  private async submitRecording(rec: Recording, op: string): Promise<void> {
    try {
      if (rec.commands.length > 0 || rec.clears.length > 0) {
        await this.submitChecked(rec.commands, { pipelines: rec.pipelines, uniformData: rec.uniformData }, `${op} (${[...rec.ops].join(', ') || 'zeroing'})`, rec.clears);
      }
    } finally {
      for (const b of rec.retired) b.destroy();
    }
  }

  /** Bind, encode and submit checked commands (then `clears`), under one pair of error scopes. */
  private async submitChecked(commands: readonly DispatchCommand[], checked: CheckedCommands, op: string, clears: readonly GPUBuffer[]): Promise<void> {
    const device = this.device;
    device.pushErrorScope('out-of-memory');
    device.pushErrorScope('validation');
    let prepared: PreparedDispatch | undefined;
    let readback: GPUBuffer | undefined;
    let prof: typeof this.profiling;
    try {
      prepared = this.bind(commands, checked, true);
      const enc = device.createCommandEncoder({ label: op });
      prof = prepared.passCount > 0 ? this.profiling : undefined;
      if (prof) {
        prepared.encode(enc, { querySet: prof.querySet, beginIndex: 0, endIndex: 1 });
        enc.resolveQuerySet(prof.querySet, 0, 2, prof.resolve, 0);
        readback = device.createBuffer({ size: 16, usage: 0x1 /* MAP_READ */ | 0x8 /* COPY_DST */ });
        enc.copyBufferToBuffer(prof.resolve, 0, readback, 0, 16);
      } else {
        prepared.encode(enc);
      }
      for (const b of clears) enc.clearBuffer(b);
      device.queue.submit([enc.finish()]);
    } finally {
      prepared?.release();
      // Both scopes settle together (one wait on Dawn's events instead of two).
      const [validation, oom] = await Promise.all([device.popErrorScope(), device.popErrorScope()]);
      if (validation) throw new NattenDeviceError(`${op}: WebGPU validation error: ${validation.message}`);
      if (oom) throw new NattenDeviceError(`${op}: GPU out of memory: ${oom.message}`);
    }
    if (prof && readback) {
      await this.drain(op);
      await readback.mapAsync(0x1 /* READ */);
      const t = new BigInt64Array(readback.getMappedRange());
      prof.gpuNs += Number((t[1] as bigint) - (t[0] as bigint));
      prof.dispatches++;
      readback.unmap();
      readback.destroy();
    } else if (this.blocking) {
      await this.drain(op);
    }
    this.assertAlive(op);
  }

  /**
   * Run `fn` (any sequence of ops on this context) and measure the GPU time of every dispatch it makes, with
   * timestamp queries around each submission's passes (ns, excluding host gaps between submissions).
   * Needs the `timestamp-query` feature; without it `gpuNs` is undefined and only `wallMs` is reported.
   * Profiling adds a small readback per dispatch, so use it for benchmarks and tuning, not in production.
   */
  async profile<T>(fn: () => Promise<T>): Promise<{ result: T; gpuNs: number | undefined; wallMs: number; dispatches: number }> {
    if (this.recording) throw new NattenDeviceError('profile: not inside batch() (its work is submitted at the batch\'s end); profile the batch instead');
    if (this.profiling) throw new NattenDeviceError('profile: already profiling (nested profile() calls are not supported)');
    const start = globalThis.performance.now();
    if (!this.hasTimestamps) {
      // Ops resolve once their work is queued: the wall time includes the GPU's only once the queue has drained.
      const result = await fn();
      await this.drain('profile');
      return { result, gpuNs: undefined, wallMs: globalThis.performance.now() - start, dispatches: 0 };
    }
    const querySet = this.device.createQuerySet({ type: 'timestamp', count: 2 });
    const resolve = this.device.createBuffer({ size: 16, usage: 0x200 /* QUERY_RESOLVE */ | 0x4 /* COPY_SRC */ });
    const prof = { querySet, resolve, gpuNs: 0, dispatches: 0 };
    this.profiling = prof;
    try {
      const result = await fn();
      return { result, gpuNs: prof.gpuNs, wallMs: globalThis.performance.now() - start, dispatches: prof.dispatches };
    } finally {
      this.profiling = undefined;
      querySet.destroy();
      resolve.destroy();
    }
  }

  /**
   * Wait for the queue to drain, or for the device to be lost, whichever comes first (a lost device may
   * never report its work done). Throws `NattenDeviceError` when the device is gone.
   */
  async workDone(op = 'natten-web'): Promise<void> {
    if (this.recording) await this.flushRecording(op);
    await this.drain(op);
  }

  /** Wait for the queue to drain (what is submitted; `workDone` also submits a batch's recorded work first). */
  private async drain(op: string): Promise<void> {
    await Promise.race([this.device.queue.onSubmittedWorkDone(), this.lostPromise]);
    this.assertAlive(op);
  }

  /** Free the device. Tensors created by this context become invalid. */
  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    this.pipelines.clear();
    this.pool.dispose();
    this.uniforms.clear();
    this.constants.clear();
    this.bindGroups.clear();
    this.device.destroy();
  }
}

/** Split a 1-D count of workgroups into (x, y) with x <= max, for kernels that linearize `wid.x + wid.y * nwg.x`. */
export function foldWorkgroups(total: number, max = 65535): [number, number, number] {
  if (total <= max) return [total, 1, 1];
  const y = Math.ceil(total / max);
  return [Math.ceil(total / y), y, 1];
}
