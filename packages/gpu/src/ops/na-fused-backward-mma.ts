/**
 * Tensor-core fused NA backward (`@natten-web/wgsl`'s `generateFusedBackwardMmaDq` and `generateFusedBackwardMmaDkv`):
 * planning and dispatch. Needs what the mma forward needs (subgroup matrices with an f16 -> f32 16x16x16 config, a
 * fixed 32-wide subgroup), float16 or float32 tensors and head dims that are multiples of 16. float32 runs as the
 * split (since session 24): an abs-max dispatch (max |Q|, |K|, |V|, |dO|, |O|) gives per-tensor power-of-two
 * scales, every operand is staged as f16 hi and lo halves, three multiplies per product (H200: the float32
 * fwd+bwd 2.1-4.3x faster than with the plain backward, gradients within 2e-7 to 2e-6 of the f64 reference on 19
 * problems). With relative positional bias
 * both kernels add it to the recomputed logits and, for d_rpb, the dq kernel writes dS in window order for the plain
 * backward's fixed-order d_rpb passes (`planRpbReducePasses`). Checked against the CPU reference through an emulation on lavapipe and on an H200, where it measured 1.02-2.6x
 * faster than the plain backward on every benchmark problem: `fusedBackward` without a config runs it there
 * (`defaultBackwardMma`).
 */
import { checkFusedBackward, type FusedBackwardArgs, type FusedBackwardProblem, NattenArgumentError, NattenUnsupportedError, type NaRank, opName, type TensorLike } from '@natten-web/core';
import {
  FUSED_BACKWARD_TILES,
  forwardProblemFields,
  type FusedBackwardMmaSpec,
  fusedBackwardMmaSpecProblem,
  fusedBackwardMmaWorkgroupBytes,
  fusedForwardDispatch,
  generateFusedBackwardMmaDkv,
  generateFusedBackwardMmaDq,
  checkGpuDType,
  type GeneratedKernel,
  type GpuDType,
  MMA_FAST_DIVIDE_ROWS,
  MMA_FRAGMENT,
  MMA_SUBGROUP_SIZE,
  generateFusedBackwardRpbPartial,
  generateFusedBackwardRpbReduce,
  rpbDsScratchElements,
  rpbReduceLayout,
  tileShapes,
} from '@natten-web/wgsl';
import { type DispatchCommand, foldWorkgroups, type GpuContext, type GpuTensor } from '../context.ts';
import { absMaxCommand, flagWords, flipFlag, keyBoxRowsBound, MMA_F16_MIN_WORKGROUPS, MMA_F16_NARROW_HEAD_DIM, MMA_F16_WIDE_HEAD_DIM, MMA_LARGE_WINDOW, mmaAvailability, mmaWorkgroups, packedCoordsFit, paddingIsFree, residentWorkgroups, unitSteps, windowKeys } from './na-fused-forward-mma.ts';
import { tensorCoreHeadDimFit } from './na-fused-forward-sgmat.ts';
import { checkScratchSize, configMemoKey, memoKernel, memoPerContext, RPB_SCRATCH_HINT } from './op.ts';

/**
 * A tensor-core backward configuration: the dq kernel's query tile and subgroup count, the dkv kernel's key tile and
 * subgroup count (16 rows per subgroup in both, or per pair of subgroups with a head split), and the rows staged per
 * step.
 */
export interface MmaBackwardConfig {
  readonly path: 'mma';
  readonly queryTile: readonly number[];
  readonly querySubgroups: 2 | 4 | 8;
  readonly keyTile: readonly number[];
  readonly keySubgroups: 2 | 4 | 8;
  /**
   * Keys (dq) and queries (dkv) staged per step: 16 (the default: half the workgroup memory per chunk, room for 8
   * subgroups, and 1.3-2.3x faster per kernel on an H200) or 32.
   */
  readonly chunk: 16 | 32;
  /**
   * Both kernels' scratch and P/dS rows without bank-conflict padding (less workgroup memory; see
   * `FusedBackwardMmaSpec.tightScratch`). The default takes it on windows of at most `MMA_BACKWARD_SMALL_WINDOW`
   * keys (timed there); the autotuner's space offers every config with it.
   */
  readonly tightScratch?: boolean;
  /**
   * The dq kernel's S and dP through one f32 scratch (`FusedBackwardMmaSpec.sharedScratch`: S read into registers
   * first, two more barriers per chunk, one scratch less workgroup memory). The default takes it on windows of at
   * most `MMA_BACKWARD_SMALL_WINDOW` keys and on larger windows at head dims up to 64 (timed there); the autotuner's
   * space offers every config with it.
   */
  readonly dqSharedScratch?: boolean;
  /**
   * The dq kernel's dS written over the chunk's staged V rows once dP is formed (`FusedBackwardMmaSpec.dsOverV`):
   * no dS array. Alone timed no faster on an H200 (session 11, and session 25: 0-1% slower); since session 25 the
   * float16 default takes it with `dqWideS` where that pair keeps the dq kernel's workgroups per SM (`dqWideS`).
   * No tune space takes it otherwise (a stored config with it, other than the default, is refused).
   */
  readonly dqDsOverV?: boolean;
  /**
   * The dq kernel with two subgroups per 16 query rows, each owning half of the head dims
   * (`FusedBackwardMmaSpec.headSplit`): the query tile then has 8 x `querySubgroups` rows. Half the fragments and
   * accumulators per subgroup for the same matrix work; head dims multiples of 32; not with `dqSharedScratch` or
   * `dqDsOverV`. Opt-in: 1.1-1.7x slower per kernel on an H200 (session 11); no default or tune space takes it (a
   * stored config with it is refused).
   */
  readonly dqHeadSplit?: boolean;
  /** The dkv kernel with two subgroups per 16 key rows, each owning half of the head dims (as `dqHeadSplit`). */
  readonly dkvHeadSplit?: boolean;
  /**
   * The dq / dkv kernel's f32 scratch rows padded, its P/dS rows exact (with `tightScratch`; see
   * `FusedBackwardMmaSpec.padS`). The default takes each wherever the padding is free (`paddingIsFree`).
   */
  readonly dqPadS?: boolean;
  readonly dkvPadS?: boolean;
  /**
   * The dq / dkv kernel's f32 scratch rows of the chunk plus 8 floats, in either layout (`FusedBackwardMmaSpec.wideS`;
   * not with its `PadS`). The float16 default takes each on 16-row chunks wherever it is free (`paddingIsFree`),
   * before `PadS`, and dq's else with `dqDsOverV` where that pair is free (head dim 64: the small-window problems). H200, session 25 (`mma-device.mjs --mode bprobe --probes s24`, each default kernel's text with
   * scratch rows of 24 floats, same call): 1-D L=32768 K=2047 causal dq 1490 -> 1266 us, dkv 2345 -> 2147; where it
   * cost a workgroup per SM it lost up to 35% (1-D L=4096 K=127 dq 31.0 -> 41.9).
   */
  readonly dqWideS?: boolean;
  readonly dkvWideS?: boolean;
  /**
   * The dkv kernel's S^T scratch rows of the chunk plus 8 floats and its dP^T rows as the layout says
   * (`FusedBackwardMmaSpec.wideFirst`; not with `dkvWideS` or the lean layout; with `dkvPadS` the dP^T rows are padded).
   */
  readonly dkvWideFirst?: boolean;
  /**
   * Dilation and stride 1 compiled into one kernel (`FusedBackwardMmaSpec.unitSteps`) where the problem has them:
   * `true` or `false` decides for that kernel; absent = the default rule (non-causal problems: 1.06-1.11x faster on
   * an H200; the 1-D K=2047 causal backward ran 1.03x slower with both kernels specialised).
   */
  readonly dqUnitSteps?: boolean;
  readonly dkvUnitSteps?: boolean;
  /** The dq kernel stages K and V with 16-byte loads (`FusedBackwardMmaSpec.wideLoads`). */
  readonly dqWideLoads?: boolean;
  /** The dkv kernel stages Q and dO with 16-byte loads (`FusedBackwardMmaSpec.wideLoads`). */
  readonly dkvWideLoads?: boolean;
  /**
   * The dkv kernel's lean layout (`FusedBackwardMmaSpec.leanScratch`): one f32 scratch and one f16 P/dS array, so
   * 4 subgroups (64-key tiles) hold as little workgroup memory as 2 do without it.
   */
  readonly dkvLeanScratch?: boolean;
}

/**
 * A backward config's scratch choices as short words, in one order, for labels (the autotuner's, the benchmark's):
 * `tight`, `dq-shared`, `ds-over-v`, `dq-padS`, `dkv-padS`, `dq-wideS`, `dkv-wideS`, `dkv-wideFirst`, `dq-unit` / `dq-no-unit`, `dkv-unit` / `dkv-no-unit`,
 * `dq-wide`, `dkv-wide`, `dkv-lean`, each where set (the head splits are labelled with the tiles they change).
 */
export function mmaBackwardFlags(c: MmaBackwardConfig): string[] {
  return flagWords([
    [c.tightScratch, 'tight'],
    [c.dqSharedScratch, 'dq-shared'],
    [c.dqDsOverV, 'ds-over-v'],
    [c.dqPadS, 'dq-padS'],
    [c.dkvPadS, 'dkv-padS'],
    [c.dqWideS, 'dq-wideS'],
    [c.dkvWideS, 'dkv-wideS'],
    [c.dkvWideFirst, 'dkv-wideFirst'],
    [c.dqUnitSteps === true, 'dq-unit'],
    [c.dqUnitSteps === false, 'dq-no-unit'],
    [c.dkvUnitSteps === true, 'dkv-unit'],
    [c.dkvUnitSteps === false, 'dkv-no-unit'],
    [c.dqWideLoads, 'dq-wide'],
    [c.dkvWideLoads, 'dkv-wide'],
    [c.dkvLeanScratch, 'dkv-lean'],
  ]);
}

/**
 * Why the mma backward cannot run this problem (dtype, head dims), or undefined: float16 tensors run as they are,
 * float32 as the split (f16 hi and lo halves, three multiplies per product, `FusedBackwardMmaSpec.split`).
 */
export function mmaBackwardProblemFit(problem: FusedBackwardProblem): string | undefined {
  if (problem.dtype !== 'float16' && problem.dtype !== 'float32') return `the tensor-core (mma) backward needs float16 or float32 tensors, not ${problem.dtype}`;
  return tensorCoreHeadDimFit(problem);
}

/** Whether a kernel whose config leaves its unit steps unset compiles them in (where the problem has them): non-causal problems. */
function unitStepsByDefault(problem: FusedBackwardProblem): boolean {
  return !problem.params.isCausal.some((c) => c);
}

function specOf(problem: FusedBackwardProblem, config: MmaBackwardConfig, kernel: 'dq' | 'dkv'): FusedBackwardMmaSpec {
  const { rank, kernelSize, causal, dim, dimV } = forwardProblemFields(problem);
  return {
    rank,
    kernelSize,
    causal,
    dim,
    dimV,
    tile: [...(kernel === 'dq' ? config.queryTile : config.keyTile)],
    chunk: config.chunk,
    subgroups: kernel === 'dq' ? config.querySubgroups : config.keySubgroups,
    ...(config.tightScratch === true ? { tightScratch: true } : {}),
    ...(kernel === 'dq' && config.dqSharedScratch === true ? { sharedScratch: true } : {}),
    ...(kernel === 'dq' && config.dqDsOverV === true ? { dsOverV: true } : {}),
    ...((kernel === 'dq' ? config.dqHeadSplit : config.dkvHeadSplit) === true ? { headSplit: true } : {}),
    ...((kernel === 'dq' ? config.dqPadS : config.dkvPadS) === true ? { padS: true } : {}),
    ...((kernel === 'dq' ? config.dqWideS : config.dkvWideS) === true ? { wideS: true } : {}),
    ...(kernel === 'dkv' && config.dkvWideFirst === true ? { wideFirst: true } : {}),
    ...((kernel === 'dq' ? config.dqWideLoads : config.dkvWideLoads) === true ? { wideLoads: true } : {}),
    ...(kernel === 'dkv' && config.dkvLeanScratch === true ? { leanScratch: true } : {}),
    // The dq kernel's 3-D key-box decoding by float reciprocal, as the forward's (3-D forward 222.4 -> 213.0 us).
    ...(kernel === 'dq' && rank === 3 && keyBoxRowsBound(problem, config.queryTile) < MMA_FAST_DIVIDE_ROWS ? { fastDivide: true } : {}),
    // Packed coordinates carry offsets in the box, and the bias needs each staged row's coordinates.
    ...(packedCoordsFit(problem) && !problem.hasRpb ? { packedCoords: true } : {}),
    ...(problem.hasRpb ? { hasRpb: true } : {}),
    ...(kernel === 'dq' && problem.hasGradRpb ? { gradRpb: true } : {}),
    ...(problem.dtype === 'float32' ? { split: true } : {}),
    // Dilation and stride 1 compiled in (H200, session 15, same call: 1-D L=4096 K=127 0.083 -> 0.078 ms, 2-D 128x128
    // K=7 0.296 -> 0.266, 3-D 0.593 -> 0.548), except on causal problems, where the 1-D K=2047 causal backward ran
    // slower with it (4.12 -> 4.24 ms).
    ...(unitSteps(problem.params) && ((kernel === 'dq' ? config.dqUnitSteps : config.dkvUnitSteps) ?? unitStepsByDefault(problem)) ? { unitSteps: true } : {}),
  };
}

/**
 * Why one kernel of a backward config cannot run a problem on this device (its spec's rule, its workgroup memory or
 * its invocations against the device's limits), worded for an error message; undefined where it can.
 */
function kernelProblem(ctx: GpuContext, problem: FusedBackwardProblem, config: MmaBackwardConfig, kernel: 'dq' | 'dkv'): string | undefined {
  const s = specOf(problem, config, kernel);
  const why = fusedBackwardMmaSpecProblem(s);
  if (why !== undefined) return `its ${kernel} kernel: ${why}`;
  const bytes = fusedBackwardMmaWorkgroupBytes(s, kernel);
  if (bytes > ctx.limits.maxComputeWorkgroupStorageSize) return `its ${kernel} kernel needs ${bytes} bytes of workgroup memory, over this device's ${ctx.limits.maxComputeWorkgroupStorageSize}`;
  const invocations = s.subgroups * MMA_SUBGROUP_SIZE;
  if (invocations > ctx.limits.maxComputeInvocationsPerWorkgroup) return `its ${kernel} kernel needs ${invocations} invocations per workgroup, over this device's ${ctx.limits.maxComputeInvocationsPerWorkgroup}`;
  return undefined;
}

function kernelFits(ctx: GpuContext, problem: FusedBackwardProblem, config: MmaBackwardConfig, kernel: 'dq' | 'dkv'): boolean {
  return kernelProblem(ctx, problem, config, kernel) === undefined;
}

/** Whether both kernels of a backward config can run a problem on this device (spec and workgroup memory). */
export function mmaBackwardConfigFits(ctx: GpuContext, problem: FusedBackwardProblem, config: MmaBackwardConfig): boolean {
  return kernelFits(ctx, problem, config, 'dq') && kernelFits(ctx, problem, config, 'dkv');
}

/** Windows of at most this many keys run the dq kernel with 2 subgroups by default (more workgroups), else 8 or 4. */
export const MMA_BACKWARD_SMALL_WINDOW = 512;

/** float32 (split) backwards in 2-D and 3-D on windows of at most this many keys run the dq kernel with 2 subgroups. */
export const MMA_SPLIT_DQ_TWO_WINDOW = 160;

/**
 * Heuristic default, per kernel, with 16-row chunks: the subgroup count (windows of at most
 * `MMA_BACKWARD_SMALL_WINDOW` keys: unpadded scratch rows (`tightScratch`), dq 4 with S and dP through one scratch
 * (2 where 4 give fewer than `MMA_F16_MIN_WORKGROUPS` workgroups), dkv 2; at head dims up to
 * `MMA_F16_NARROW_HEAD_DIM`, dkv with its lean layout in 1-D and 2-D on windows up to 128 keys, dq with 2 elsewhere;
 * H200, each kernel alone, same run:
 * session 9 2-D 128x128 K=7 dq 199 -> 194 us, dkv 418 -> 324 us; 3-D 16x32x32 K=3x7x7 dq 354 -> 311 us, dkv 1060
 * -> 852 us; session 10 1-D L=4096 K=127 dq 45.6 -> 46.9 us, dkv 77.6 (4 subgroups, padded) -> 71.8 us, 2-D K=13
 * dilated both already best; larger windows: dq 8 at head dims up to 64 and 4 above, dkv 8 above
 * `MMA_LARGE_WINDOW` keys, else 4, padded rows (unpadded rows timed there in session 10: FLUX-like 189.8 -> 192.0
 * ms, 1-D K=2047 causal 6.72 -> 6.80 ms); the next count that fits where one does not;
 * with small windows the dq kernel's S and dP through one scratch (`dqSharedScratch`; session 10, the dq kernel
 * alone, same run: 2-D K=7 192.1 -> 155.9 us, 3-D 309.1 -> 299.6 us; 6/6 device checks; session 11, 1-D L=4096
 * K=127 with 4 subgroups: 46.9 (2, two scratches) -> 37.5 us), and on larger windows at head dims up to 64 (session
 * 11, the whole backward of 1-D K=2047 causal: 6.71 -> 6.14 ms; FLUX-like at head dim 128 191.3 -> 193.7 ms, so
 * not there))
 * and the tile whose union box
 * (prod(min(t_a + K_a - 1, group extent))) is smallest, ties to the longer last axis (a subgroup's 16 rows then span
 * fewer rows). Chosen from sweeps of both kernels alone on an H200 (f16, benchmark problems): 16-row chunks made
 * each kernel 1.3-2.3x faster than 32-row chunks at the same tile (2-D K=7: dq 329 -> 198 us, dkv 927 -> 401 us);
 * per kernel at 16 rows, 1-D K=2047 causal dq 2.16 ms with 8 subgroups vs 2.30 with 4, dkv 4.56 ms with 4 vs 5.26
 * with 8; FLUX-like (head dim 128) dq 57.7 ms with 4 vs 69.0 with 8, dkv 131 ms with 8 vs 213 with 4; smaller
 * windows dq 2 (2-D K=7 197 us vs 205 with 4, 3-D 352 vs 434) and dkv 4 (1-D 4096 78 us vs 89 with 2), both padded.
 */
export function defaultMmaBackwardConfig(ctx: GpuContext, problem: FusedBackwardProblem): MmaBackwardConfig | undefined {
  return memoPerContext(ctx, 'mma-backward-config', problem, () => {
    const chosen = chooseMmaBackwardConfig(ctx, problem);
    if (!chosen || problem.dtype === 'float32') return chosen;
    // float16: 16-byte staging loads in the dkv kernel everywhere and in the dq kernel in 3-D (H200, session 26, each
    // kernel alone, same call: dkv 1-D L=4096 K=127 43.1 -> 42.3 us, K=2047 causal 2088 -> 1972, 2-D 128x128 K=7
    // 153.0 -> 148.5, K=13 dilated 303.4 -> 295.9, 3-D 16x32x32 K=3x7x7 329.2 -> 314.8; dq 3-D 199.6 -> 193.6, but
    // dq slower in 2-D (102.1 -> 108.6, 164.1 -> 172.7) and on the causal 1-D problem (1387 -> 1559 us)).
    const wide: MmaBackwardConfig = { ...chosen, dkvWideLoads: true, ...(problem.rank === 3 ? { dqWideLoads: true } : {}) };
    return mmaBackwardConfigFits(ctx, problem, wide) ? wide : chosen;
  });
}

/**
 * The tile of `subgroups` x 16 rows (x 8 with `headSplit`) whose union boxes (prod(min(t_a + K_a - 1, group extent))
 * per tile) hold the fewest keys over a dilation group's tiles, for one kernel of the mma backward at a chunk size,
 * ties to the longer last axis; undefined where none fits this device. Counting every tile charges a tile that
 * overruns a small extent for its empty rows: by the box alone (until session 18), a 3-D 8x32x32 problem took dq
 * tiles of 64x1x1 (8 real queries of 64) and a 2-D 28x28 one 1x64.
 */
export function mmaBackwardTile(ctx: GpuContext, problem: FusedBackwardProblem, kernel: 'dq' | 'dkv', subgroups: 2 | 4 | 8, chunk: 16 | 32, headSplit = false): number[] | undefined {
  // Keys of the union boxes of a group's tiles, in dilation-group coordinates.
  const box = (tile: readonly number[]): number =>
    tile.reduce((v, t, a) => {
      const group = Math.ceil((problem.spatial[a] as number) / (problem.params.dilation[a] as number));
      return v * Math.ceil(group / t) * Math.min(t + (problem.params.kernelSize[a] as number) - 1, group);
    }, 1);
  let best: number[] | undefined;
  const split = headSplit ? (kernel === 'dq' ? { dqHeadSplit: true } : { dkvHeadSplit: true }) : {};
  for (const tile of tileShapes(problem.rank, (headSplit ? MMA_FRAGMENT / 2 : MMA_FRAGMENT) * subgroups)) {
    const probe: MmaBackwardConfig = { path: 'mma', queryTile: tile, querySubgroups: subgroups, keyTile: tile, keySubgroups: subgroups, chunk, ...split };
    if (!kernelFits(ctx, problem, probe, kernel)) continue;
    const last = problem.rank - 1;
    if (!best || box(tile) < box(best) || (box(tile) === box(best) && (tile[last] as number) > (best[last] as number))) best = tile;
  }
  return best;
}

function chooseMmaBackwardConfig(ctx: GpuContext, problem: FusedBackwardProblem): MmaBackwardConfig | undefined {
  if ('why' in mmaAvailability(ctx) || mmaBackwardProblemFit(problem) !== undefined) return undefined;
  const keys = windowKeys(problem);
  const pick = (kernel: 'dq' | 'dkv', counts: readonly (2 | 4 | 8)[]): { tile: number[]; subgroups: 2 | 4 | 8 } | undefined => {
    for (const subgroups of counts) {
      const tile = mmaBackwardTile(ctx, problem, kernel, subgroups, 16);
      if (tile) return { tile, subgroups };
    }
    return undefined;
  };
  const large = keys > MMA_LARGE_WINDOW;
  const small = keys <= MMA_BACKWARD_SMALL_WINDOW;
  // Small windows: unpadded scratch rows, dkv with 2 subgroups, dq with 4. The dq kernel's S and dP through one
  // scratch at head dims up to 64 (at 128, FLUX-like, it timed 1% slower).
  const headDim = Math.max(problem.dim, problem.dimV);
  const wide = headDim > 64;
  const dq0 = pick('dq', small ? [4, 2, 8] : wide ? [4, 8, 2] : [8, 4, 2]);
  // Small windows: dq with 2 subgroups where 4 give fewer than MMA_F16_MIN_WORKGROUPS workgroups (H200, session
  // 18, autotuner runs, the whole backward: 2-D 56x56 K=7 4 heads 35.9 -> 31.0 us, 28x28 8 heads 33.6 -> 29.1,
  // 14x14 16 heads 33.4 -> 28.9; at 1024 workgroups, 3-D 8x32x32, the two tied within 2%).
  // Head dims up to MMA_F16_NARROW_HEAD_DIM: in 1-D and 2-D on windows up to 128 keys the dkv kernel's lean layout
  // (below); elsewhere on small windows dq with 2 subgroups (H200, session 19, autotuner runs, head dim 32, whole
  // backward: 2-D 32x32 K=13 16 heads 69.7-70.3 -> 63.4-64.7 us in three runs, 3-D 16^3 K=5 4 heads 96.0-96.5 ->
  // 87.0-91.0 in two; where the lean layout applies, dq with 2 tied or lost: 2-D 128x128 K=7 178.4-179.8 against
  // 180.7, 1-D L=4096 K=127 59.1 against 54.0).
  // Below MMA_F16_MIN_WORKGROUPS no lean layout (2-D 28x28 K=7 8 heads 30.0 -> 31.9 us with it, 56x56 4 heads
  // 33.8 -> 34.0).
  const fewWorkgroups = small && dq0?.subgroups === 4 && mmaWorkgroups(problem, { queryTile: dq0.tile }) < MMA_F16_MIN_WORKGROUPS;
  const narrow = headDim <= MMA_F16_NARROW_HEAD_DIM;
  const leanNarrow = narrow && problem.rank < 3 && keys <= 128 && !fewWorkgroups;
  // float32 (the split: hi and lo halves, about twice the workgroup memory) in 2-D and 3-D on windows up to
  // MMA_SPLIT_DQ_TWO_WINDOW keys: dq with 2 subgroups (H200, session 24, the dq kernel alone, same run: 2-D 128x128
  // K=7 224.6 -> 205.4 us, 3-D 16x32x32 K=3x7x7 420.9 -> 385.8; not on 2-D K=13 dilated, 169 keys, 354.2 against
  // 358.8-371.4, nor in 1-D, L=4096 K=127, 69.2 against 72.0-73.3).
  const splitTwo = problem.dtype === 'float32' && problem.rank > 1 && keys <= MMA_SPLIT_DQ_TWO_WINDOW;
  const few = fewWorkgroups || splitTwo || (small && dq0?.subgroups === 4 && narrow && !leanNarrow);
  const dq = few ? (pick('dq', [2]) ?? dq0) : dq0;
  const dkv = pick('dkv', large ? [8, 4, 2] : small ? [2, 4, 8] : [4, 2, 8]);
  if (!dq || !dkv) return undefined;
  const config: MmaBackwardConfig = {
    path: 'mma',
    queryTile: dq.tile,
    querySubgroups: dq.subgroups,
    keyTile: dkv.tile,
    keySubgroups: dkv.subgroups,
    chunk: 16,
    ...(small ? { tightScratch: true } : {}),
    ...(small || !wide ? { dqSharedScratch: true } : {}),
  };
  const bytes = (c: MmaBackwardConfig, kernel: 'dq' | 'dkv'): number => fusedBackwardMmaWorkgroupBytes(specOf(problem, c, kernel), kernel);
  if (!small) {
    // Larger windows: the dkv kernel's lean layout where it lets a compute unit hold more of its workgroups (H200,
    // session 17, the whole backward of 1-D L=32768 K=2047 causal, same call: 4.151 -> 3.837 ms, 4 subgroups at 2
    // -> 3 per SM). Not on small windows, where it timed slower although it raised residency too (1-D L=4096 K=127
    // 0.077 -> 0.081 ms, 2-D 128x128 K=7 0.261 -> 0.272, 3-D 0.540 -> 0.572), nor where residency stays (its
    // extra barriers, and twice the epilogue rounds, are then all it changes).
    const lean: MmaBackwardConfig = { ...config, dkvLeanScratch: true };
    const more = kernelFits(ctx, problem, lean, 'dkv') && residentWorkgroups(ctx, bytes(lean, 'dkv')) > residentWorkgroups(ctx, bytes(config, 'dkv'));
    return scratchRows(more ? lean : config, false, true);
  }
  // Each kernel's scratch rows widened (wideS) or else padded (padS) where that keeps its workgroups per compute unit.
  const chosen = scratchRows(config, true, true);
  // Head dims up to MMA_F16_NARROW_HEAD_DIM in 1-D and 2-D, windows up to 128 keys: the dkv kernel's lean layout too
  // (H200, session 19, autotuner runs, the default and its lean twin in the same run, head dim 32: 2-D 128x128 K=7 8
  // heads 189.6 -> 182.0, 186.3 -> 182.1 and 188.4 -> 180.7 us; 64x64 54.5 -> 51.2 and 53.4 -> 51.9; 2 batches
  // 96x96 K=7 dilation 2 188.6 -> 179.5 and 186.8 -> 178.8; 1-D L=4096 K=127 57.7 -> 54.5, 56.9 -> 54.2 and 58.0 ->
  // 54.0). Larger windows and 3-D lost (2-D 32x32 K=13 16 heads 70.3 -> 73.0 and 69.7 -> 72.3; 3-D 16^3 K=5 4 heads
  // 96.5 -> 100.3); head dim 64 lost too (above), and 128 much (1-D L=4096 94.8 -> 176.7 us).
  // (The lean dkv kernel's rows stay as session 19 timed them: padded where free, not widened.)
  const lean: MmaBackwardConfig = { ...scratchRows(config, true, false), dkvLeanScratch: true };
  return leanNarrow && kernelFits(ctx, problem, lean, 'dkv') ? lean : chosen;

  /**
   * `base` with each kernel's f32 scratch rows of 24 floats (float16, 16-row chunks; `dkvWide` false keeps the dkv
   * kernel's) where that leaves its workgroups per compute unit unchanged, or for dq together with dS over V where
   * that pair does, for dkv its S^T rows alone where that does, else (with `pad`) padded by 4 where that does (H200,
   * session 25: `MmaBackwardConfig.dqWideS`; session 26: `dkvWideFirst`; session 13: `dqPadS`).
   */
  function scratchRows(base: MmaBackwardConfig, pad: boolean, dkvWide: boolean): MmaBackwardConfig {
    // Rows of 24 floats as measured: float16, 16-row chunks; with dS over V, head dims between the narrow and wide ones.
    const widens = problem.dtype !== 'float32' && base.chunk === 16;
    const midHead = headDim > MMA_F16_NARROW_HEAD_DIM && headDim < MMA_F16_WIDE_HEAD_DIM;
    let out = base;
    for (const kernel of ['dq', 'dkv'] as const) {
      const free = (x: MmaBackwardConfig): boolean => kernelFits(ctx, problem, x, kernel) && paddingIsFree(ctx, bytes(base, kernel), bytes(x, kernel));
      const widened: MmaBackwardConfig = { ...out, ...(kernel === 'dq' ? { dqWideS: true } : { dkvWideS: true }) };
      if (widens && (kernel === 'dq' || dkvWide) && free(widened)) {
        out = widened;
        continue;
      }
      // The dq kernel's dS over the staged V rows where the memory that frees makes its wider rows free (head dims
      // between MMA_F16_NARROW_HEAD_DIM and MMA_F16_WIDE_HEAD_DIM; H200, session 25, the dq kernel alone, same call:
      // 1-D L=4096 K=127 30.9 -> 28.5 us, 2-D 128x128 K=7 109.1 -> 102.3, K=13 dilated 180.4 -> 164.8, 3-D 214.4 ->
      // 196.9; dS over V alone 0-1% slower).
      const overV: MmaBackwardConfig = { ...out, dqDsOverV: true, dqWideS: true };
      if (widens && kernel === 'dq' && midHead && free(overV)) {
        out = overV;
        continue;
      }
      // The dkv kernel's S^T rows alone widened, its dP^T rows exact, where that is free (with unpadded rows the
      // memory of both padded by 4; H200, session 26, the dkv kernel alone against its padded rows, same call: 1-D
      // L=4096 K=127 42.0 -> 40.9 us, 2-D 128x128 K=7 149.4 -> 146.0, K=13 dilated 296.8 -> 289.4, 256x256 K=15 2412
      // -> 2335, 3-D 316.1 -> 308.5; with dP^T padded too it lost a workgroup per SM and 12-30%).
      const first: MmaBackwardConfig = { ...out, dkvWideFirst: true };
      if (widens && kernel === 'dkv' && dkvWide && free(first)) {
        out = first;
        continue;
      }
      const padded: MmaBackwardConfig = { ...out, ...(kernel === 'dq' ? { dqPadS: true } : { dkvPadS: true }) };
      if (pad && free(padded)) out = padded;
    }
    return out;
  }
}

/**
 * A backward config's codegen twins (as `mmaForwardTwins`): the same tiles and layouts with one compile-time choice
 * flipped, where they fit: the dq kernel's 16-byte K/V loads, the dkv kernel's 16-byte Q/dO loads, its lean layout (not with its head
 * split), each kernel's unit steps (where the problem has dilation and stride 1; the twin states the choice its
 * config left to the default rule), both kernels' scratch rows of 24 floats (float16, 16-row chunks), and the dkv
 * kernel's S^T rows alone widened (`dkvWideFirst`) flipped to padded rows. The
 * autotuner times the default's twins right after it.
 */
export function mmaBackwardTwins(ctx: GpuContext, problem: FusedBackwardProblem, config: MmaBackwardConfig): MmaBackwardConfig[] {
  const twins: MmaBackwardConfig[] = [flipFlag(config, 'dqWideLoads'), flipFlag(config, 'dkvWideLoads')];
  // The dkv kernel's widened S^T rows alone (two scratches) as padded rows, for the twins with one scratch.
  const { dkvWideFirst: first, ...alike } = config;
  const padded: MmaBackwardConfig = first === true ? { ...alike, dkvPadS: true } : config;
  if (config.dkvHeadSplit !== true) twins.push(flipFlag(padded, 'dkvLeanScratch'));
  if (unitSteps(problem.params)) {
    const rule = unitStepsByDefault(problem);
    twins.push({ ...config, dqUnitSteps: !(config.dqUnitSteps ?? rule) }, { ...config, dkvUnitSteps: !(config.dkvUnitSteps ?? rule) });
  }
  // Both kernels' scratch rows of 24 floats flipped (float16, 16-row chunks; as the forward's twin).
  if (problem.dtype !== 'float32' && config.chunk === 16) {
    const { dqWideS, dkvWideS, ...narrow } = config;
    const { dqPadS: _q, dkvPadS: _k, ...unpadded } = narrow;
    twins.push(dqWideS === true || dkvWideS === true ? narrow : { ...unpadded, dqWideS: true, dkvWideS: true });
    // The dkv kernel's S^T rows alone widened, flipped to both its rows padded (its default before session 26).
    if (first === true) twins.push(padded);
  }
  return twins.filter((c) => mmaBackwardConfigFits(ctx, problem, c));
}

/**
 * The mma backward config the default backward (`fusedBackward` without tiles, lanes, splits or a delta choice)
 * runs, or undefined for the plain path: where the path can run (float16, or float32 as the split; head dims
 * multiples of 16) and head dims up to 128 (as measured; float32 since session 24: fwd+bwd on the standard problems
 * 0.504 -> 0.244 ms (1-D L=4096 K=127) to 45.7 -> 11.3 ms (2-D 256x256 K=15), flex 10-65x slower in the same run). Measured on an H200 against the plain default backward (f16, same run): 1.02x (2-D K=7)
 * to 2.6x (FLUX-like) faster on all seven benchmark problems; with strides (session 19) 3.6x (1-D L=4096 K=127
 * stride 16, 0.084 against 0.298 ms) to 6.2x (2-D 128x128 K=13 stride 4x2, 0.470 against 2.891 ms); with rpb and
 * d_rpb (session 20; both paths with the same d_rpb passes) 2.4x (2-D 14x14 K=7 head dim 32 batch 8, 0.072 against
 * 0.173 ms) to 4.8x (3-D 16x32x32 K=3x7x7, 1.010 against 4.862 ms), with rpb and strides 3.3x and 4.0x.
 */
export function defaultBackwardMma(ctx: GpuContext, problem: FusedBackwardProblem): MmaBackwardConfig | undefined {
  if (problem.dim > 128 || problem.dimV > 128) return undefined;
  return defaultMmaBackwardConfig(ctx, problem);
}

/** The mma backward's kernels: dq, dkv, and with gradRpb the two d_rpb passes (block partials, then their sum). */
export interface MmaBackwardKernels {
  readonly dq: GeneratedKernel;
  readonly dkv: GeneratedKernel;
  readonly rpbPasses?: readonly [GeneratedKernel, GeneratedKernel];
}

/**
 * The float32 scratches a call needs: delta (shaped like the logsumexp) and, with gradRpb, dS in window order and
 * the d_rpb block partials.
 */
export interface MmaBackwardScratch {
  readonly delta: GpuTensor;
  readonly ds?: GpuTensor;
  readonly rpbPartial?: GpuTensor;
  /** The float32 split's maxima: |Q|, |K|, |V|, |dO|, |O| (one abs-max dispatch before the kernels). */
  readonly scales?: GpuTensor;
}

/** Allocate a call's scratches (`release` them after the dispatch). */
export function mmaBackwardScratch(ctx: GpuContext, problem: FusedBackwardProblem, logsumexpShape: readonly number[]): MmaBackwardScratch & { release(): void } {
  const delta = ctx.tempTensor(logsumexpShape, 'float32', { label: 'mma backward delta' });
  const ds = problem.hasGradRpb ? ctx.tempTensor([rpbDsScratchElements(problem)], 'float32', { label: 'mma backward dS (d_rpb)' }) : undefined;
  const rpbPartial = problem.hasGradRpb ? ctx.tempTensor([rpbReduceLayout(problem, gpuDType(problem)).partialElements], 'float32', { label: 'mma backward d_rpb partials' }) : undefined;
  const scales = problem.dtype === 'float32' ? ctx.tempTensor([8], 'float32', { label: 'mma backward split scales' }) : undefined;
  return {
    delta,
    ...(ds ? { ds } : {}),
    ...(rpbPartial ? { rpbPartial } : {}),
    ...(scales ? { scales } : {}),
    release: () => {
      for (const t of [delta, ds, rpbPartial, scales]) if (t) ctx.releaseTensor(t);
    },
  };
}

/**
 * The dispatches (dq, dkv, and with gradRpb the d_rpb pass) for given kernels and scratches. For tests that
 * substitute emulated kernels; `fusedBackwardMma` runs the real ones.
 */
export function mmaBackwardCommands(
  ctx: GpuContext,
  kernels: MmaBackwardKernels,
  problem: FusedBackwardProblem,
  args: FusedBackwardArgs<GpuTensor>,
  config: MmaBackwardConfig,
  scratch: MmaBackwardScratch,
): DispatchCommand[] {
  const max = ctx.limits.maxComputeWorkgroupsPerDimension;
  const dq = fusedForwardDispatch(problem, config.queryTile);
  const kv = fusedForwardDispatch(problem, config.keyTile);
  const kvTotal = (kv.workgroups / problem.heads) * problem.headsKv;
  const rpb = problem.hasRpb && args.rpb ? [args.rpb.buffer] : [];
  const wantsDs = problem.hasGradRpb && args.gradRpb;
  if (wantsDs && (!scratch.ds || !scratch.rpbPartial || !kernels.rpbPasses)) throw new NattenArgumentError('mmaBackwardCommands: gradRpb needs the dS and partial scratches and the d_rpb kernels');
  // The split's scales: max |Q|, |K|, |V|, |dO|, |O| (O bounds delta, and may be a merged output).
  const scales = problem.dtype === 'float32' ? scratch.scales : undefined;
  if (problem.dtype === 'float32' && !scales) throw new NattenArgumentError('mmaBackwardCommands: float32 (the split) needs the scales scratch');
  const scaleBuffers = scales ? [scales.buffer] : [];
  const commands: DispatchCommand[] = [
    ...(scales ? [absMaxCommand(ctx, [args.query, args.key, args.value, args.gradOutput, args.output], scales)] : []),
    {
      kernel: kernels.dq,
      buffers: [args.query.buffer, args.key.buffer, args.value.buffer, args.output.buffer, args.gradOutput.buffer, args.logsumexp.buffer, args.gradQuery.buffer, scratch.delta.buffer, ...rpb, ...(wantsDs && scratch.ds ? [scratch.ds.buffer] : []), ...scaleBuffers],
      uniforms: dq.uniforms,
      workgroups: foldWorkgroups(dq.workgroups, max),
    },
    {
      kernel: kernels.dkv,
      buffers: [args.query.buffer, args.key.buffer, args.value.buffer, args.gradOutput.buffer, args.logsumexp.buffer, scratch.delta.buffer, args.gradKey.buffer, args.gradValue.buffer, ...rpb, ...scaleBuffers],
      uniforms: { ...kv.uniforms, total_wg: kvTotal },
      workgroups: foldWorkgroups(kvTotal, max),
    },
  ];
  if (wantsDs && scratch.ds && scratch.rpbPartial && kernels.rpbPasses && args.gradRpb) {
    const { partial, reduce } = rpbReduceLayout(problem, gpuDType(problem), max);
    commands.push(
      { kernel: kernels.rpbPasses[0], buffers: [scratch.ds.buffer, scratch.rpbPartial.buffer], uniforms: partial.uniforms, workgroups: partial.workgroups },
      { kernel: kernels.rpbPasses[1], buffers: [scratch.rpbPartial.buffer, args.gradRpb.buffer], uniforms: reduce.uniforms, workgroups: reduce.workgroups },
    );
  }
  return commands;
}

/** A problem's dtype as the kernels' (the fit admits float16 and float32 only). */
const gpuDType = (problem: FusedBackwardProblem): GpuDType => checkGpuDType(opName(problem.rank, 'backward'), problem.dtype);

/** The d_rpb passes' kernels of a problem (they do not depend on the config), generated once per spec. */
function rpbKernels(problem: FusedBackwardProblem): readonly [GeneratedKernel, GeneratedKernel] {
  const { spec } = rpbReduceLayout(problem, gpuDType(problem));
  return [memoKernel('fused-backward-rpb-partial', spec, generateFusedBackwardRpbPartial), memoKernel('fused-backward-rpb-reduce', spec, generateFusedBackwardRpbReduce)];
}

/** Validate a call for the mma backward and pick its config (no GPU work). */
export function checkFusedBackwardMma(
  ctx: GpuContext,
  rank: NaRank,
  args: FusedBackwardArgs<TensorLike>,
  config?: MmaBackwardConfig,
  defaultKey?: string,
): { problem: FusedBackwardProblem; config: MmaBackwardConfig; kernels: MmaBackwardKernels } {
  const [memoName, memoKey] = configMemoKey('mma-backward-check', rank, args, config, defaultKey);
  return memoPerContext(ctx, memoName, memoKey, () => {
    const op = opName(rank, 'backward');
    const problem = checkFusedBackward(op, rank, { ...args, queryTileSize: undefined, keyTileSize: undefined, lanes: undefined }, FUSED_BACKWARD_TILES);
    const avail = mmaAvailability(ctx);
    if ('why' in avail) throw new NattenUnsupportedError(`${op}: tensor-core (mma) backward unavailable: ${avail.why}`);
    const fit = mmaBackwardProblemFit(problem);
    if (fit !== undefined) throw new NattenArgumentError(`${op}: tensor-core (mma) backward cannot run this problem: ${fit}`);
    const cfg = config ?? defaultMmaBackwardConfig(ctx, problem);
    if (!cfg) throw new NattenUnsupportedError(`${op}: no tensor-core (mma) backward config fits this device's limits (workgroup memory ${ctx.limits.maxComputeWorkgroupStorageSize} bytes)`);
    const why = kernelProblem(ctx, problem, cfg, 'dq') ?? kernelProblem(ctx, problem, cfg, 'dkv');
    if (why !== undefined) throw new NattenArgumentError(`${op}: tensor-core (mma) backward config cannot run: ${why}`);
    if (problem.hasGradRpb) {
      checkScratchSize(ctx, op, 'dsScratch', rpbDsScratchElements(problem), RPB_SCRATCH_HINT);
      checkScratchSize(ctx, op, 'rpbPartial', rpbReduceLayout(problem, gpuDType(problem)).partialElements, RPB_SCRATCH_HINT);
    }
    return {
      problem,
      config: cfg,
      kernels: {
        dq: memoKernel('fused-backward-mma-dq', specOf(problem, cfg, 'dq'), generateFusedBackwardMmaDq),
        dkv: memoKernel('fused-backward-mma-dkv', specOf(problem, cfg, 'dkv'), generateFusedBackwardMmaDkv),
        ...(problem.hasGradRpb ? { rpbPasses: rpbKernels(problem) } : {}),
      },
    };
  });
}

/** Run the mma backward: gradQuery, gradKey, gradValue written in place (throws where it cannot run). */
export async function fusedBackwardMma(ctx: GpuContext, rank: NaRank, args: FusedBackwardArgs<GpuTensor>, config?: MmaBackwardConfig, defaultKey?: string): Promise<void> {
  const { problem, config: cfg, kernels } = checkFusedBackwardMma(ctx, rank, args, config, defaultKey);
  const scratch = mmaBackwardScratch(ctx, problem, args.logsumexp.shape);
  try {
    await ctx.dispatch(mmaBackwardCommands(ctx, kernels, problem, args, cfg, scratch), opName(rank, 'backward'));
  } finally {
    scratch.release();
  }
}
