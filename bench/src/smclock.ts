/**
 * SM clock sampling through `nvidia-smi` while our kernels are timed (NVIDIA machines only; absent elsewhere).
 *
 * Session 4 found that the GPU's clock governor can run short kernels at a fraction of the boost clock when the GPU
 * idles between submissions; the harness now keeps the clock up (ClockWarmer), and this sampler records what the
 * clock actually was during each row's timing, so a results file shows it instead of leaving it to be inferred.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';

/** SM clock (MHz) seen during one measurement: nvidia-smi samples between its start and end. */
export interface ClockWindow {
  readonly minMHz: number;
  readonly medianMHz: number;
  readonly maxMHz: number;
  readonly samples: number;
}

/** A timestamped clock sample (ms since the epoch, MHz). */
export interface ClockSample {
  readonly t: number;
  readonly mhz: number;
}

/** Parse one line of `nvidia-smi --query-gpu=clocks.sm --format=csv,noheader,nounits` (first GPU only). */
export function parseClockLine(line: string): number | undefined {
  const v = Number(line.split(',')[0]?.trim());
  return Number.isFinite(v) && v > 0 ? v : undefined;
}

/** The samples that fall in [t0, t1], summarized; undefined when there are none. */
export function clockWindow(samples: readonly ClockSample[], t0: number, t1: number): ClockWindow | undefined {
  const xs = samples.filter((s) => s.t >= t0 && s.t <= t1).map((s) => s.mhz).sort((a, b) => a - b);
  if (xs.length === 0) return undefined;
  const m = xs.length >> 1;
  const median = xs.length % 2 ? (xs[m] as number) : ((xs[m - 1] as number) + (xs[m] as number)) / 2;
  return { minMHz: xs[0] as number, medianMHz: median, maxMHz: xs[xs.length - 1] as number, samples: xs.length };
}

export interface ClockSampler {
  /** The clock during [t0, t1] (ms since the epoch, `Date.now()`), if any sample fell in it. */
  window(t0: number, t1: number): ClockWindow | undefined;
  stop(): void;
}

/** Start sampling every `periodMs` when `nvidia-smi` can report the SM clock; undefined otherwise. */
export function startClockSampler(periodMs = 100): ClockSampler | undefined {
  const probe = spawnSync('nvidia-smi', ['--query-gpu=clocks.sm', '--format=csv,noheader,nounits'], { encoding: 'utf8', timeout: 5000 });
  if (probe.status !== 0 || parseClockLine(probe.stdout ?? '') === undefined) return undefined;
  const samples: ClockSample[] = [];
  let child: ChildProcess | undefined = spawn('nvidia-smi', ['--query-gpu=clocks.sm', '--format=csv,noheader,nounits', `-lms`, String(periodMs)], {
    stdio: ['ignore', 'pipe', 'ignore'],
  });
  let pending = '';
  child.stdout?.setEncoding('utf8');
  child.stdout?.on('data', (chunk: string) => {
    const lines = (pending + chunk).split('\n');
    pending = lines.pop() ?? '';
    const t = Date.now();
    for (const l of lines) {
      const mhz = parseClockLine(l);
      if (mhz !== undefined) samples.push({ t, mhz });
    }
  });
  child.on('error', () => {
    child = undefined;
  });
  return {
    window: (t0, t1) => clockWindow(samples, t0, t1),
    stop() {
      child?.kill();
      child = undefined;
    },
  };
}
