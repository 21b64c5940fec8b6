/** The results JSON the harness writes and the report renders (`bench/results/<date>-<adapter>.json`). */
import type { BenchDType, BenchPass, CaseSetName } from './cases.ts';
import type { ClockWindow } from './smclock.ts';

export const RESULTS_SCHEMA = 1;

/** A timed measurement: median and minimum over `samples` runs after warm-up. */
export interface Timing {
  readonly ms: number;
  readonly minMs: number;
  readonly samples: number;
  /** `gpu-timestamp`: summed GPU time of every dispatch (timestamp queries); `wall`: host wall clock. */
  readonly method: 'gpu-timestamp' | 'wall';
}

/** How `--tuned` chose one op's config for a row (`@natten-web/autotune` `Selection`), outside the timed region. */
export interface TuneInfo {
  /** `tuned`: timed in this run and stored in the cache; `cache`: found in the cache (an earlier row or run tuned it). */
  readonly source: 'tuned' | 'cache';
  /** Wall time of the selection (tuning or cache lookup), in ms. */
  readonly ms: number;
  /** From the cache entry: candidates timed / in the space, and whether the budget cut tuning short. */
  readonly timed?: number;
  readonly candidates?: number;
  readonly truncated?: boolean;
  /** The winner's median while tuning (ns), as the autotuner measured it. */
  readonly medianNs?: number;
}

export interface BenchRow {
  readonly case: string;
  readonly label: string;
  readonly rank: number;
  readonly dtype: BenchDType;
  readonly pass: BenchPass;
  /** Useful NA FLOPs (core's fnaFlops; forward+backward = 3.5x forward). */
  readonly flops: number;
  /** Bytes if every q/k/v/o (and dO/dq/dk/dv) tensor is read or written once. */
  readonly byteFloor: number;
  /** Our kernel configuration (default config, or `tuned ...` with `--tuned`) for the forward and, with backward, the backward. */
  readonly config?: string;
  readonly ours?: Timing;
  readonly oursError?: string;
  /** With `--tuned`: how the forward (and backward) configs were chosen, and how long it took. */
  readonly tuning?: { readonly forward: TuneInfo; readonly backward?: TuneInfo };
  /** With `--tuned`: why tuning failed for this row (ours was then not timed; `oursError` says so too). */
  readonly tuneError?: string;
  /** SM clock during our timing, from nvidia-smi where it exists (see bench/src/smclock.ts). */
  readonly oursClock?: ClockWindow;
  /** Our naive kernel (forward only). */
  readonly naive?: Timing;
  readonly naiveNote?: string;
  /** The CPU reference (@natten-web/cpu), wall time. */
  readonly cpu?: Timing;
  readonly cpuNote?: string;
  /** max |ours - CPU| over the outputs (o; or dq, dk, dv with backward) where the CPU reference ran. */
  readonly maxAbsErrVsCpu?: number;
  /** torch flex_attention (compiled, neighborhood mask) and dense SDPA, CUDA-event medians. */
  readonly flexMs?: number;
  readonly sdpaMs?: number;
  readonly torchNote?: string;
}

export interface BenchEnv {
  readonly date: string;
  readonly adapter: {
    readonly vendor: string;
    readonly architecture: string;
    readonly device: string;
    readonly description: string;
    readonly isFallbackAdapter: boolean;
    readonly subgroupMinSize?: number | undefined;
    readonly subgroupMaxSize?: number | undefined;
  };
  readonly features: readonly string[];
  readonly limits: Readonly<Record<string, number>>;
  readonly subgroupMatrix: readonly string[];
  readonly node: string;
  readonly webgpu: string;
  readonly commit: string;
  readonly platform: string;
  readonly torch?: { readonly torch: string; readonly gpu: string } | undefined;
  readonly torchNote?: string | undefined;
  /** Extra Dawn toggles the run's instance had (`NATTEN_WEB_DAWN_TOGGLES`); absent when none. */
  readonly dawnToggles?: string | undefined;
}

export interface BenchResults {
  readonly schema: number;
  readonly set: CaseSetName;
  readonly filter?: string | undefined;
  readonly reps: number;
  readonly warmup: number;
  /**
   * Whether the GPU was kept busy around our measurements so its clock governor held the boost clock (absent in
   * files written before 2026-11-28 04:00 UTC: those ran at whatever clock the governor chose, see
   * docs/device-results.md "Timing variance").
   */
  readonly clocks?: { readonly warmed: boolean; readonly warmMs?: number; readonly dispatchMs?: number };
  /**
   * `--tuned`: ours ran the config `@natten-web/autotune` picked per row (mode 'tune', cache file `tuneCache`,
   * `tuneBudgetMs` per op), not the heuristic default. Absent for default-config runs.
   */
  readonly tuned?: boolean;
  readonly tuneCache?: string;
  readonly tuneBudgetMs?: number;
  /**
   * How fwd+bwd rows were timed: `one` span from the forward's first pass to the backward's last, both submitted
   * together (`batch`), as torch's events time flex; `sum` of the two ops' spans, each submitted alone. Absent = `sum`
   * (files before session 22).
   */
  readonly fwdBwdSpan?: 'one' | 'sum';
  readonly env: BenchEnv;
  readonly rows: readonly BenchRow[];
  /** Set by `mergeResults`: each merged run's date, commit, sampling and filter, in file order. */
  readonly runs?: readonly BenchRunInfo[];
}

/** What one merged run contributed: when, from which commit, how it sampled. */
export interface BenchRunInfo {
  readonly date: string;
  readonly commit: string;
  readonly reps: number;
  readonly warmup: number;
  readonly filter?: string | undefined;
  readonly rows: number;
  readonly clocks?: BenchResults['clocks'];
  /** The run was `--tuned` (absent: default configs), with its cache and budget. */
  readonly tuned?: boolean;
  readonly tuneCache?: string;
  readonly tuneBudgetMs?: number;
  readonly fwdBwdSpan?: 'one' | 'sum';
}

/** True for software adapters (lavapipe/llvmpipe, SwiftShader, WARP): their times are no performance claim. */
export function isSoftwareAdapter(env: Pick<BenchEnv, 'adapter'>): boolean {
  const a = env.adapter;
  const text = `${a.vendor} ${a.architecture} ${a.device} ${a.description}`.toLowerCase();
  return a.isFallbackAdapter || /llvmpipe|lavapipe|swiftshader|software|warp/.test(text);
}
