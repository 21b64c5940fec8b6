import { invariant } from '@natten-web/core';
import { NattenDeviceError } from './errors.ts';

/**
 * Size-bucketed reuse of GPU buffers for temporaries (uniform buffers, staging buffers, scratch tensors).
 *
 * `acquire(size, usage)` returns a buffer of at least `size` bytes with exactly `usage`, taken from the free
 * list of its bucket or newly created; `release(buffer)` puts it back. Buckets are quarter powers of two
 * (at most 25 % slack). Reuse is safe as soon as the work that used a buffer has been *submitted*:
 * WebGPU orders queue operations, so a later write or dispatch runs after it. Release a mapped buffer only
 * after `unmap()`. `dispose()` destroys every buffer the pool created, free or still acquired.
 */

export interface BufferPoolStats {
  /** Buffers waiting in free lists. */
  readonly free: number;
  /** Buffers handed out and not yet released. */
  readonly inUse: number;
  /** Bytes held by all buffers the pool owns (free + in use). */
  readonly bytes: number;
  /** `acquire` calls served from a free list. */
  readonly hits: number;
  /** `acquire` calls that created a buffer. */
  readonly misses: number;
}

export interface BufferPoolOptions {
  /** Free buffers beyond this many bytes are destroyed on release instead of kept (default 256 MiB). */
  readonly maxFreeBytes?: number;
  /**
   * Destroys a buffer the pool drops (over `maxFreeBytes`, or `trim`); default `buffer.destroy()`. A context hands
   * its `retire`, which waits for a batch's submission (`GpuContext.batch`): work recorded before the release may still
   * use the buffer.
   */
  readonly destroy?: (buffer: GPUBuffer) => void;
}

/** The bucket size for a request: the smallest 2^k * {1, 1.25, 1.5, 1.75} >= size, at least 16 bytes. */
export function bucketSize(size: number): number {
  const s = Math.max(16, Math.ceil(size));
  const p = 2 ** Math.floor(Math.log2(s));
  for (const f of [1, 1.25, 1.5, 1.75, 2]) {
    const b = Math.ceil((p * f) / 4) * 4;
    if (b >= s) return b;
  }
  return 2 * p;
}

export class BufferPool {
  private readonly device: GPUDevice;
  private readonly maxFreeBytes: number;
  private readonly freeLists = new Map<string, GPUBuffer[]>();
  private readonly owned = new Set<GPUBuffer>();
  private readonly acquired = new Set<GPUBuffer>();
  private freeBytes = 0;
  private ownedBytes = 0;
  private hits = 0;
  private misses = 0;
  private disposed = false;

  private readonly destroyBuffer: (buffer: GPUBuffer) => void;
  constructor(device: GPUDevice, options: BufferPoolOptions = {}) {
    this.device = device;
    this.maxFreeBytes = options.maxFreeBytes ?? 256 * 1024 * 1024;
    this.destroyBuffer = options.destroy ?? ((b) => b.destroy());
  }

  private static keyOf(size: number, usage: number): string {
    return `${usage}:${size}`;
  }

  /** A buffer of at least `size` bytes with exactly `usage`. Its contents are whatever the last user left. */
  acquire(size: number, usage: GPUBufferUsageFlags, label?: string): GPUBuffer {
    if (this.disposed) throw new NattenDeviceError('BufferPool.acquire: the pool was disposed (its GPU context was destroyed)');
    const bucket = bucketSize(size);
    const list = this.freeLists.get(BufferPool.keyOf(bucket, usage));
    const reused = list?.pop();
    if (reused) {
      this.hits++;
      this.freeBytes -= reused.size;
      this.acquired.add(reused);
      return reused;
    }
    this.misses++;
    const buffer = this.device.createBuffer({ size: bucket, usage, ...(label !== undefined ? { label } : {}) });
    this.owned.add(buffer);
    this.ownedBytes += bucket;
    this.acquired.add(buffer);
    return buffer;
  }

  /**
   * A free buffer of exactly `size` bytes, else (unless `exact`) of `size`'s bucket, with exactly `usage`, handed over
   * for good: the pool forgets it (a caller that drops it leaves it to the garbage collector), or undefined when none
   * is free.
   */
  take(size: number, usage: GPUBufferUsageFlags, exact = false): GPUBuffer | undefined {
    if (this.disposed) return undefined;
    for (const s of exact ? [size] : [size, bucketSize(size)]) {
      const buffer = this.freeLists.get(BufferPool.keyOf(s, usage))?.pop();
      if (buffer) {
        this.hits++;
        this.freeBytes -= buffer.size;
        this.owned.delete(buffer);
        this.ownedBytes -= buffer.size;
        return buffer;
      }
    }
    return undefined;
  }

  /**
   * Take in a buffer the pool did not make (one `take` handed out, or any the caller owns and will not use again), as
   * a free buffer for later `acquire` / `take` calls; destroyed instead past `maxFreeBytes`. A buffer the pool already
   * owns is left as it is (so a second `adopt` of one is harmless).
   */
  adopt(buffer: GPUBuffer): void {
    if (this.disposed) {
      this.destroyBuffer(buffer);
      return;
    }
    if (this.owned.has(buffer)) return;
    this.owned.add(buffer);
    this.ownedBytes += buffer.size;
    this.acquired.add(buffer);
    this.release(buffer);
  }

  /** Whether the pool owns `buffer` (free or handed out by `acquire`). */
  owns(buffer: GPUBuffer): boolean {
    return this.owned.has(buffer);
  }

  /** Give a buffer back. Buffers the pool does not own are ignored; releasing twice is an error. */
  release(buffer: GPUBuffer): void {
    if (this.disposed || !this.owned.has(buffer)) return;
    invariant(this.acquired.delete(buffer), 'BufferPool.release: buffer released twice');
    if (this.freeBytes + buffer.size > this.maxFreeBytes) {
      this.owned.delete(buffer);
      this.ownedBytes -= buffer.size;
      this.destroyBuffer(buffer);
      return;
    }
    const key = BufferPool.keyOf(buffer.size, buffer.usage);
    let list = this.freeLists.get(key);
    if (!list) {
      list = [];
      this.freeLists.set(key, list);
    }
    list.push(buffer);
    this.freeBytes += buffer.size;
  }

  /** Destroy the free buffers, keeping those still acquired. */
  trim(): void {
    for (const list of this.freeLists.values()) {
      for (const b of list) {
        this.owned.delete(b);
        this.ownedBytes -= b.size;
        this.destroyBuffer(b);
      }
    }
    this.freeLists.clear();
    this.freeBytes = 0;
  }

  stats(): BufferPoolStats {
    let free = 0;
    for (const list of this.freeLists.values()) free += list.length;
    return { free, inUse: this.acquired.size, bytes: this.ownedBytes, hits: this.hits, misses: this.misses };
  }

  /** Destroy every buffer the pool created (free or acquired). The pool cannot be used afterwards. */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    for (const b of this.owned) b.destroy();
    this.owned.clear();
    this.acquired.clear();
    this.freeLists.clear();
    this.freeBytes = 0;
    this.ownedBytes = 0;
  }
}
