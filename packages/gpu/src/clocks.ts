/**
 * Keep the GPU's clock up while short kernels are timed (see `generateClockWarmer` in @natten-web/wgsl for why).
 *
 *   const warmer = await ClockWarmer.create(ctx);   // calibrated: one queued dispatch takes about 2 ms
 *   await warmer.warm(300);                          // ~300 ms of back-to-back work: the governor reaches boost
 *   warmer.queue(); const p = await ctx.profile(run); // each timed sample starts right behind a warm dispatch
 *   warmer.release();
 *
 * The warmer's passes are submitted straight to the queue, outside `ctx.profile`, so they never count in a
 * profile's GPU time; only the wall time of the sample grows. On a CPU (fallback) adapter there is no clock
 * governor to hold up, and warming only burns CPU: callers skip it there (`ClockWarmer.useful`).
 */
import { NattenArgumentError } from '@natten-web/core';
import { CLOCK_WARMER_WORKGROUP, generateClockWarmer } from '@natten-web/wgsl';
import type { GpuContext, PreparedDispatch } from './context.ts';
import { timeDispatch } from './timing.ts';

export interface ClockWarmerOptions {
  /** GPU time one queued warm dispatch should take, in ms (default 2). */
  readonly dispatchMs?: number;
  /** Workgroups per warm dispatch (default 2048 of 256 invocations: enough to fill every SM of a large GPU). */
  readonly workgroups?: number;
}

const START_ITERS = 2048;
const MAX_ITERS = 1 << 22;

export class ClockWarmer {
  private constructor(
    private readonly ctx: GpuContext,
    private readonly sink: GPUBuffer,
    private prepared: PreparedDispatch,
    /** Measured GPU time of one warm dispatch after calibration, in ms (at the clock of the calibration). */
    public dispatchMs: number,
  ) {}

  /** Whether warming helps on this context's adapter: false on CPU (fallback) adapters such as lavapipe. */
  static useful(ctx: GpuContext): boolean {
    return !ctx.adapterInfo.isFallbackAdapter;
  }

  /** Compile the warm kernel and calibrate its loop count so one dispatch takes about `dispatchMs`. */
  static async create(ctx: GpuContext, options: ClockWarmerOptions = {}): Promise<ClockWarmer> {
    const target = options.dispatchMs ?? 2;
    const workgroups = options.workgroups ?? 2048;
    if (!(target > 0 && target <= 100)) throw new NattenArgumentError(`ClockWarmer: dispatchMs must be in (0, 100], got ${target}`);
    if (!Number.isInteger(workgroups) || workgroups < 1 || workgroups > ctx.limits.maxComputeWorkgroupsPerDimension) {
      throw new NattenArgumentError(`ClockWarmer: workgroups must be an integer in [1, ${ctx.limits.maxComputeWorkgroupsPerDimension}], got ${workgroups}`);
    }
    const sink = ctx.device.createBuffer({ size: CLOCK_WARMER_WORKGROUP * 4, usage: 0x80 /* STORAGE */, label: 'natten-web clock warmer' });
    const kernel = generateClockWarmer();
    const command = (iters: number) => ({ kernel, buffers: [sink], uniforms: { iters }, workgroups: [workgroups, 1, 1] as [number, number, number] });
    const timeMs = async (iters: number): Promise<number> => (await timeDispatch(ctx, [command(iters)], { warmup: 1, iterations: 3 })).medianNs / 1e6;
    let iters = START_ITERS;
    let warmer: ClockWarmer | undefined;
    try {
      warmer = new ClockWarmer(ctx, sink, await ctx.prepare([command(iters)], 'ClockWarmer'), 0);
      // Calibrate twice: the first round may time an idle clock; the second runs right behind warm work.
      for (let round = 0; round < 2; round++) {
        if (round === 0) await warmer.warm(100);
        const ms = await timeMs(iters);
        iters = Math.max(16, Math.min(MAX_ITERS, Math.round((iters * target) / Math.max(ms, 1e-3))));
        warmer.prepared.release();
        warmer.prepared = await ctx.prepare([command(iters)], 'ClockWarmer');
      }
      warmer.dispatchMs = await timeMs(iters);
      return warmer;
    } catch (e) {
      if (warmer) warmer.release();
      else sink.destroy();
      throw e;
    }
  }

  /** Queue one warm dispatch and return at once (the next submission runs right behind it). */
  queue(): void {
    const enc = this.ctx.device.createCommandEncoder({ label: 'natten-web clock warmer' });
    this.prepared.encode(enc);
    this.ctx.device.queue.submit([enc.finish()]);
  }

  /** Keep the GPU busy with warm dispatches for about `ms` of wall time (two in flight at a time). */
  async warm(ms: number): Promise<void> {
    const end = globalThis.performance.now() + ms;
    do {
      this.queue();
      this.queue();
      await this.ctx.workDone('ClockWarmer');
    } while (globalThis.performance.now() < end);
  }

  /** Free the warm kernel's buffers. */
  release(): void {
    this.prepared.release();
    this.sink.destroy();
  }
}
