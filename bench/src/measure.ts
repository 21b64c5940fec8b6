/**
 * How the benchmark harnesses time an op that submits its own work (`pnpm bench`'s rows, `pnpm bench:bmm`'s fused
 * forward): warm clocks, warm-up runs, then the median of `ctx.profile` samples.
 */
import type { ClockWarmer, GpuContext } from '@natten-web/gpu';
import type { Timing } from './results.ts';

/** Wall time of warm work before each measurement's warm-up runs (the governor ramps within a few hundred ms). */
export const WARM_MS = 300;

export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
}

/**
 * Warm-up runs (the first compiles the pipelines), then timed runs until `reps` samples, or until the budget
 * is spent once `minReps` samples exist. GPU time of every dispatch from `ctx.profile`, else wall time.
 * With a clock warmer (GPU adapters, `--warm-clocks`), the GPU is first kept busy for WARM_MS, and every run
 * is queued right behind one warm dispatch, so the clock governor holds the boost clock while short kernels
 * are timed one submission at a time (the warm passes are not in the profile).
 */
export async function measureGpu(
  ctx: GpuContext,
  run: () => Promise<void>,
  o: { warmup: number; reps: number; minReps: number; budgetMs: number; warmer: ClockWarmer | undefined },
): Promise<Timing> {
  const warmer = o.warmer;
  if (warmer) await warmer.warm(WARM_MS);
  for (let i = 0; i < o.warmup; i++) {
    warmer?.queue();
    await run();
  }
  const samples: number[] = [];
  let method: Timing['method'] = 'gpu-timestamp';
  const t0 = performance.now();
  while (samples.length < o.reps && (samples.length < o.minReps || performance.now() - t0 < o.budgetMs)) {
    warmer?.queue();
    const p = await ctx.profile(run);
    if (p.gpuNs === undefined || p.dispatches === 0) {
      method = 'wall';
      samples.push(p.wallMs);
    } else samples.push(p.gpuNs / 1e6);
  }
  return { ms: median(samples), minMs: Math.min(...samples), samples: samples.length, method };
}
