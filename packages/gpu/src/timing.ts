/**
 * GPU timing of a list of dispatches (one "iteration" = every command once, in order, one compute pass each).
 *
 * - With the `timestamp-query` feature: GPU timestamps at the beginning of the first pass and the end of the
 *   last pass of every iteration; all timed iterations go in one submission, back to back.
 *   `method: 'timestamp-query'`. Dawn quantizes timestamps unless the device was created with
 *   `disable-dawn-features=timestamp_quantization` (our Node flags do that); browsers quantize to ~100 us.
 * - Without it: host wall time from `queue.submit` to `onSubmittedWorkDone`, one submission per iteration.
 *   `method: 'submit-wall'`; it includes submission and queue latency, so it over-states short kernels.
 *
 * Warm-up iterations run first (not timed): they absorb pipeline creation and first-use costs.
 */
import { NattenArgumentError } from '@natten-web/core';
import type { DispatchCommand, GpuContext } from './context.ts';
import { NattenDeviceError } from './errors.ts';

export type TimingMethod = 'timestamp-query' | 'submit-wall';

export interface TimingOptions {
  /** Untimed iterations first (default 3). */
  readonly warmup?: number;
  /** Timed iterations (default 20, at most 2048). */
  readonly iterations?: number;
  /** Use wall time even when timestamp queries exist (default false). */
  readonly forceWallClock?: boolean;
  /**
   * Keep the GPU's clock up (a `ClockWarmer`): `warm(warmMs)` before the warm-up iterations and, with timestamps,
   * one queued warm dispatch right before the timed submission (the wall-clock path would count it, so there
   * only the warm-up applies).
   */
  readonly warmer?: { warm(ms: number): Promise<void>; queue(): void };
  /** Wall time of warm work before the warm-up iterations, in ms (default 200; only with `warmer`). */
  readonly warmMs?: number;
  /** All commands as dispatches of one compute pass, each command's clears first (default false: a pass each). */
  readonly onePass?: boolean;
}

export interface TimingResult {
  /** How the samples were measured (see the module comment). */
  readonly method: TimingMethod;
  /** One sample per timed iteration, in nanoseconds, in run order. */
  readonly samplesNs: readonly number[];
  readonly medianNs: number;
  readonly minNs: number;
  readonly maxNs: number;
}

/** Median of a non-empty list (mean of the two middle values for even lengths). */
export function median(values: readonly number[]): number {
  const s = [...values].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
}

function summarize(method: TimingMethod, samplesNs: number[]): TimingResult {
  return { method, samplesNs, medianNs: median(samplesNs), minNs: Math.min(...samplesNs), maxNs: Math.max(...samplesNs) };
}

function now(): number {
  return globalThis.performance.now();
}

/** Time `commands` on the GPU: `warmup` untimed iterations, then `iterations` timed ones. */
export async function timeDispatch(ctx: GpuContext, commands: readonly DispatchCommand[], options: TimingOptions = {}): Promise<TimingResult> {
  const warmup = options.warmup ?? 3;
  const iterations = options.iterations ?? 20;
  if (!Number.isInteger(warmup) || warmup < 0) {
    throw new NattenArgumentError(`timeDispatch: warmup must be an integer >= 0, got ${warmup}`);
  }
  if (!Number.isInteger(iterations) || iterations < 1 || iterations > 2048) {
    throw new NattenArgumentError(`timeDispatch: iterations must be an integer in [1, 2048], got ${iterations}`);
  }
  const prepared = await ctx.prepare(commands, 'timeDispatch');
  if (prepared.passCount === 0) {
    prepared.release();
    throw new NattenArgumentError('timeDispatch: nothing to time (no command has any workgroups)');
  }
  const device = ctx.device;
  const useTimestamps = ctx.hasTimestamps && options.forceWallClock !== true;
  const resources: { destroy(): void }[] = [];
  device.pushErrorScope('out-of-memory');
  device.pushErrorScope('validation');
  let scopesOpen = true;
  const popScopes = async (): Promise<void> => {
    if (!scopesOpen) return;
    scopesOpen = false;
    const validation = await device.popErrorScope();
    const oom = await device.popErrorScope();
    if (validation) throw new NattenDeviceError(`timeDispatch: WebGPU validation error: ${validation.message}`);
    if (oom) throw new NattenDeviceError(`timeDispatch: GPU out of memory: ${oom.message}`);
  };
  try {
    if (options.warmer) await options.warmer.warm(options.warmMs ?? 200);
    if (warmup > 0) {
      const enc = device.createCommandEncoder({ label: 'timeDispatch warmup' });
      for (let i = 0; i < warmup; i++) prepared.encode(enc, undefined, options.onePass);
      device.queue.submit([enc.finish()]);
      await ctx.workDone('timeDispatch');
    }
    if (useTimestamps) {
      const count = 2 * iterations;
      const querySet = device.createQuerySet({ type: 'timestamp', count, label: 'timeDispatch' });
      resources.push(querySet);
      const resolve = device.createBuffer({ size: count * 8, usage: 0x200 /* QUERY_RESOLVE */ | 0x4 /* COPY_SRC */ });
      const readback = device.createBuffer({ size: count * 8, usage: 0x1 /* MAP_READ */ | 0x8 /* COPY_DST */ });
      resources.push(resolve, readback);
      const enc = device.createCommandEncoder({ label: 'timeDispatch' });
      for (let i = 0; i < iterations; i++) prepared.encode(enc, { querySet, beginIndex: 2 * i, endIndex: 2 * i + 1 }, options.onePass);
      enc.resolveQuerySet(querySet, 0, count, resolve, 0);
      enc.copyBufferToBuffer(resolve, 0, readback, 0, count * 8);
      options.warmer?.queue();
      device.queue.submit([enc.finish()]);
      await popScopes();
      await ctx.workDone('timeDispatch');
      await readback.mapAsync(0x1 /* READ */);
      const stamps = new BigInt64Array(readback.getMappedRange().slice(0));
      readback.unmap();
      const samples: number[] = [];
      for (let i = 0; i < iterations; i++) {
        samples.push(Number((stamps[2 * i + 1] as bigint) - (stamps[2 * i] as bigint)));
      }
      return summarize('timestamp-query', samples);
    }
    const samples: number[] = [];
    for (let i = 0; i < iterations; i++) {
      const enc = device.createCommandEncoder({ label: 'timeDispatch' });
      prepared.encode(enc, undefined, options.onePass);
      const cb = enc.finish();
      const t0 = now();
      device.queue.submit([cb]);
      await ctx.workDone('timeDispatch');
      samples.push(Math.round((now() - t0) * 1e6));
    }
    await popScopes();
    return summarize('submit-wall', samples);
  } finally {
    if (scopesOpen) {
      scopesOpen = false;
      await device.popErrorScope();
      await device.popErrorScope();
    }
    prepared.release();
    for (const r of resources) r.destroy();
  }
}
