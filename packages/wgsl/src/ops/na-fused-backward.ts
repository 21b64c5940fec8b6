/**
 * Fused neighborhood-attention backward (`na{1,2,3}d_backward`), deterministic by construction (kernels.md §2 "Ours").
 *
 * Passes, in order (all fixed-order reductions, no atomics):
 *  1. `delta` (only when computeDeltaWithTorch): delta_x = sum_c f32(dO_x[c]) * f32(O_x[c]), one invocation per row.
 *  2. `dq`: one workgroup per (batch, head, dilation group, query tile, key split). It walks the key tiles of its
 *     forward key box (tiles laid from the box start; with S_a splits along axis a, split s takes the box's key
 *     tiles [s*nb/S_a, (s+1)*nb/S_a), so the splits partition every query's window exactly), staging K/V rows
 *     in workgroup memory, and recomputes P = exp(scale q.k (+ rpb) - lse). In the fused-delta mode its prologue
 *     computes delta and writes it for pass 3. With num_splits_key > 1 it writes f32 partials; with gradRpb it
 *     writes dS per (query row, slot) into a scratch buffer.
 *  3. `dkv`: one workgroup per (batch, kv head, dilation group, key tile). It walks query tiles laid from the start
 *     of the exact inverse box (`na_inverse_a`), for every query head of its GQA group, staging q/dO rows, lse and
 *     delta in workgroup memory. Each key walks only the staged queries of its own exact inverse range [first, end)
 *     per axis (no membership test), so every key visits exactly the queries that attend it.
 *  4. `dq-reduce` (only with splits): dQ = sum over splits in fixed order, cast to the I/O dtype.
 *  5. `rpb-partial` and `rpb-reduce` (only with gradRpb): d_rpb[h, cell] = sum over batch, queries, slots mapping
 *     to the cell of dS, per block of queries, then over the blocks (fixed order).
 *
 * In `dq` each query likewise walks only the staged keys of its own window per axis (slot t = j - window start), so
 * it touches exactly prod(K) keys (the previous design tested every staged key of every chunk).
 *
 * One invocation owns one query row (dq) or one key row (dkv); accumulators and the owned row live in registers:
 * named vec4 variables for rows of up to 32 vectors (private arrays ran ~4x slower on NVIDIA in the forward),
 * private arrays beyond. Staged rows keep the I/O dtype (f16 staging for f16 inputs); all math is f32.
 * Rows outside the dilation group are zero-filled and masked, and P is forced to 0 with `select` for them.
 *
 * Lane split (config `lanes` = T in {2, 4, 8}; absent or 1 emits exactly the single-lane kernels): in dq
 * and dkv, T invocations share one row (invocation `lid` serves row `lid / T`, lane `lid % T`), so the workgroup has
 * T times the rows' invocations. Each lane owns the vec4 columns c with c % T == lane of the row's register vectors
 * (q, dO and the dQ accumulator in dq; k, v and the dK/dV accumulators in dkv; D/4 and Dv/4 are multiples of T).
 * Every head-dim dot (q.k for the logit, dO.v for dP, the fused-delta dO.O) is a partial dot over the lane's
 * columns plus a `subgroupShuffleXor` butterfly over the masks 1 .. T/2, so every lane holds the bitwise-same sum
 * and the same P and dS; each lane then updates only its own columns. Per-row scalar writes (the fused delta, the
 * dS scratch for d_rpb) come from lane 0 only. Staging, walks and barriers are unchanged (every invocation
 * stages, with the workgroup size as stride). The walks depend only on the row, so the T lanes of a row take the
 * same branches; WGSL's uniformity analysis cannot see that, hence `diagnostic(off, subgroup_uniformity);`.
 * ASSUMPTION (as in the lane-split forward): subgroups are contiguous, aligned ranges of local_invocation_index,
 * so with T <= the adapter's minimum subgroup size and workgroup sizes that are multiples of it, the T lanes of a
 * row share one subgroup. Config selection enforces both conditions.
 *
 * Walk unroll (`keyUnroll` for dq, `queryUnroll` for dkv, U in {2, 4}; absent or 1 emits exactly the plain kernels;
 * U = 2 is the default on wide-subgroup devices where it measured faster, `withDefaultBackwardUnroll`): the per-row
 * walks are chains (dot, butterfly, exp, dS, axpys) with few warps to hide them, so the innermost walked axis takes U consecutive staged
 * rows per step: U independent q.k and dO.v dot chains (FMAs interleaved), their butterflies interleaved, then U
 * P / dS, then the axpys, each register column still accumulating the rows in walk order; a remainder loop walks
 * the last < U rows with the plain body. Every P, dS and accumulator sees exactly the plain kernel's operations, so
 * only instruction order changes. Not combined with the row grouping (`queriesPerInvocation` /
 * `keysPerInvocation` > 1): `fusedBackwardUnrollProblem` rejects that.
 */
import { FUSED_LANE_CHOICES, type FusedBackwardProblem, type NaRank, product, type TileProducts } from '@natten-web/core';
import { dtypeFeatures, enableDirectives, type GpuDType, wgslType } from '../dtype.ts';
import { DEFAULT_UNROLL, hasWideSubgroups, laneSplitProblem, lanesDimProblem, withDefaultLanes } from '../lanes.ts';
import { type GeneratedKernel, kernelKey, type StorageBinding, storageDecls, type UniformField, uniformDecl } from '../kernel.ts';
import {
  type AxisText,
  axes,
  axisLoops,
  axisText,
  axisUniformNames,
  axisUniformValues,
  decodeRowMajor,
  decodeWorkgroup,
  groupCoord,
  naCall,
  origCoord,
  rowIndex,
  windowSlot,
} from '../snippets/fused-index.ts';
import { windowFunctions } from '../snippets/window.ts';
import { canonicalKeyTile, type FusedForwardSpec, queriesPerInvocationProblem, rowsPerInvocationProblem } from './na-fused-forward.ts';

const GEN = 5;

/** The tile products (query tile, key tile) this backend's backward kernels are written for. */
export const FUSED_BACKWARD_TILE_SIZES: readonly number[] = [16, 32, 64, 128];

/** All product pairs before limits are applied. */
export const FUSED_BACKWARD_TILES: TileProducts = FUSED_BACKWARD_TILE_SIZES.flatMap((q) =>
  FUSED_BACKWARD_TILE_SIZES.map((k) => [q, k] as const),
);

/** The device limits the backward configs depend on (a subset of GPUSupportedLimits). */
export interface BackwardLimits {
  readonly maxComputeWorkgroupStorageSize: number;
  readonly maxComputeInvocationsPerWorkgroup: number;
  readonly maxComputeWorkgroupSizeX: number;
  readonly maxComputeWorkgroupsPerDimension?: number;
  /**
   * The adapter's minimum subgroup size, present only when the device has the `subgroups` feature. When absent,
   * configs with `lanes` > 1 are invalid and the enumerator offers exactly the single-lane configs.
   */
  readonly subgroupMinSize?: number;
}

/** A complete backward configuration: what NATTEN's query_tile_size / key_tile_size / num_splits_key / compute_delta_with_torch select. */
export interface FusedBackwardConfig {
  readonly queryTile: readonly number[];
  readonly keyTile: readonly number[];
  readonly numSplitsKey: readonly number[];
  readonly computeDeltaWithTorch: boolean;
  /**
   * Invocations sharing one row in the dq and dkv kernels (lane split of the head dims through subgroup
   * shuffles), in {1, 2, 4, 8}; absent means 1. T > 1 needs subgroups with a minimum size >= T, head dims that are
   * multiples of 4*T, and both workgroups (query tile * T, key tile * T invocations) multiples of the minimum
   * subgroup size within the invocation limits. The default config takes T = 4 (else 2) on devices with subgroups
   * at least 16 wide (`defaultFusedBackwardConfig`); the autotuner times 2 and 4.
   */
  readonly lanes?: number;
  /**
   * Experimental: queries per invocation of the dq kernel along the last axis, in {1, 2, 4}; absent means 1. Q > 1
   * needs the query tile's last entry to be a multiple of Q (and, with lanes, prod(queryTile) / Q * lanes
   * invocations a multiple of the minimum subgroup size). Explicit configs only: neither the default nor the
   * enumerator picks it yet. It changes the dq kernel only (`keysPerInvocation` is the dK/dV kernel's twin).
   */
  readonly queriesPerInvocation?: number;
  /**
   * Experimental: keys per invocation of the dK/dV kernel along the last axis, in {1, 2, 4}; absent means 1: the
   * same grouping for the other kernel (the key tile's last entry a multiple of it; with lanes, prod(keyTile) / K *
   * lanes invocations a multiple of the minimum subgroup size). Explicit configs only.
   */
  readonly keysPerInvocation?: number;
  /**
   * Instruction-level parallelism of the dq kernel's walk, in {1, 2, 4} (`FUSED_BACKWARD_UNROLLS`);
   * absent means 1. U > 1: the innermost walk over the staged keys of a query's window row takes U consecutive keys
   * per step, with U independent q.k / dO.v dot chains (and lane butterflies), then their P and dS, then the dQ
   * axpys in key order; a remainder loop takes the last < U keys one at a time. Every per-key value and dQ itself
   * are computed by the same operations as with U = 1. Not combinable with `queriesPerInvocation` > 1. The default
   * and the enumerator set 2 where `withDefaultBackwardUnroll` says (measured faster on an H200).
   */
  readonly keyUnroll?: number;
  /**
   * The same unroll for the dK/dV kernel's walk over the staged queries of a key's inverse range row, in {1, 2, 4};
   * absent means 1. Not combinable with `keysPerInvocation` > 1. Set together with `keyUnroll` by
   * `withDefaultBackwardUnroll`.
   */
  readonly queryUnroll?: number;
}

/** Unroll factors (`FusedBackwardConfig.keyUnroll` / `queryUnroll`) the dq and dkv kernels compile. */
export const FUSED_BACKWARD_UNROLLS = [1, 2, 4] as const;

/** Lanes per row (`FusedBackwardConfig.lanes`) this backend compiles; > 1 needs subgroups. */
export const FUSED_BACKWARD_LANES = FUSED_LANE_CHOICES;
/** Lane counts the enumerator offers (with subgroups); 8 is valid in explicit configs only. */
const ENUMERATED_LANES = [2, 4] as const;

/** Problem facts the kernels bake (everything else is a uniform): the same as the fused forward's. */
type BakedProblem = Pick<FusedForwardSpec, 'rank' | 'kernelSize' | 'causal' | 'dim' | 'dimV' | 'dtype'>;

/** What the dq and dkv kernels both bake: the problem facts, both tile shapes, whether an rpb is added. */
interface TiledBackwardSpec extends BakedProblem {
  readonly queryTile: readonly number[];
  readonly keyTile: readonly number[];
  readonly rpb: boolean;
  /** Lanes per row (see `FusedBackwardConfig.lanes`); set only when > 1, so single-lane keys are unchanged. */
  readonly lanes?: number;
}

export interface FusedBackwardDqSpec extends TiledBackwardSpec {
  readonly gradRpb: boolean;
  /** 'fused': compute delta in the prologue and write it out; 'read': read it from the delta pass. */
  readonly delta: 'fused' | 'read';
  /** Write f32 per-split partials instead of the final dQ. */
  readonly partial: boolean;
  /** Queries per invocation along the last axis (see `FusedBackwardConfig.queriesPerInvocation`); set only when > 1. */
  readonly queriesPerInvocation?: number;
  /** Keys per step of the window walk (see `FusedBackwardConfig.keyUnroll`); set only when > 1. */
  readonly keyUnroll?: number;
}

export interface FusedBackwardDkvSpec extends TiledBackwardSpec {
  /** Keys per invocation along the last axis (see `FusedBackwardConfig.keysPerInvocation`); set only when > 1. */
  readonly keysPerInvocation?: number;
  /** Queries per step of the inverse walk (see `FusedBackwardConfig.queryUnroll`); set only when > 1. */
  readonly queryUnroll?: number;
}

const WG_1D = 64;

/** Tile product (rows per workgroup) of the default config, for both kernels. */
const DEFAULT_TILE_PRODUCT = 32;

/** Row vector width: vec4 loads/dots when both head dims are multiples of 4, scalars otherwise. */
export function fusedBackwardVecWidth(dim: number, dimV: number): 1 | 4 {
  return dim % 4 === 0 && dimV % 4 === 0 ? 4 : 1;
}

interface VecTypes {
  readonly W: 1 | 4;
  /** Storage / workgroup element type of vectorized rows. */
  readonly VT: string;
  /** f32 math type of the same width. */
  readonly VF: string;
  readonly DW: number;
  readonly DVW: number;
  /** `fn dotw` (dot product of two VF values). */
  readonly helper: string;
  /** Scalar component `idx` of a VF array. */
  at(name: string, idx: string): string;
}

function vecTypes(T: string, dim: number, dimV: number): VecTypes {
  const W = fusedBackwardVecWidth(dim, dimV);
  const VF = W === 4 ? 'vec4<f32>' : 'f32';
  return {
    W,
    VT: W === 4 ? `vec4<${T}>` : T,
    VF,
    DW: dim / W,
    DVW: dimV / W,
    helper: `fn dotw(a: ${VF}, b: ${VF}) -> f32 { return ${W === 4 ? 'dot(a, b)' : 'a * b'}; }`,
    at: (name, idx) => (W === 4 ? `${name}[${idx} / 4u][${idx} % 4u]` : `${name}[${idx}]`),
  };
}

/** Rows of at most this many vectors live in named registers (private arrays ran ~4x slower on NVIDIA). */
const MAX_NAMED_REGS = 32;

/**
 * Per-invocation row registers: `name_0 .. name_{n-1}` (statements unrolled) when both rows have at most
 * MAX_NAMED_REGS vectors, else one private array per row (statements in a `for c` loop).
 */
interface Regs {
  decl(name: string, n: number): string;
  /** Statement(s) `f(c, r)` for every vector c of a row of n vectors; `r(name)` is that vector's register. */
  each(n: number, f: (c: string, r: (name: string) => string) => string): string;
  /** Statement(s) `f(c, x)` for every scalar c of a row of n scalars; `x(name)` is that scalar of the register row. */
  eachScalar(n: number, f: (c: string, x: (name: string) => string) => string): string;
}

function regs(V: VecTypes, lanes = 1): Regs {
  if (lanes > 1) return laneRegs(V, lanes);
  const named = V.DW <= MAX_NAMED_REGS && V.DVW <= MAX_NAMED_REGS;
  if (!named) {
    return {
      decl: (name, n) => `var ${name}: array<${V.VF}, ${n}>;`,
      each: (n, f) => `for (var c = 0u; c < ${n}u; c++) { ${f('c', (name) => `${name}[c]`)} }`,
      eachScalar: (n, f) => `for (var c = 0u; c < ${n}u; c++) { ${f('c', (name) => V.at(name, 'c'))} }`,
    };
  }
  const idx = Array.from({ length: Math.max(V.DW, V.DVW) * V.W }, (_, i) => i);
  return {
    decl: (name, n) => idx.slice(0, n).map((i) => `var ${name}_${i} = ${V.VF}();`).join(' '),
    each: (n, f) => idx.slice(0, n).map((i) => f(`${i}u`, (name) => `${name}_${i}`)).join('\n    '),
    eachScalar: (n, f) =>
      idx
        .slice(0, n)
        .map((i) => f(`${i}u`, (name) => (V.W === 4 ? `${name}_${Math.floor(i / 4)}.${'xyzw'[i % 4] ?? 'x'}` : `${name}_${i}`)))
        .join('\n    '),
  };
}

/**
 * Lane-split registers (W = 4): register i of a row holds vec4 column i*LANES + lane, so a row of n vectors has
 * n / LANES registers per lane; `c` passed to the statements is that column (or, per scalar, its element index).
 */
function laneRegs(V: VecTypes, lanes: number): Regs {
  const named = V.DW / lanes <= MAX_NAMED_REGS && V.DVW / lanes <= MAX_NAMED_REGS;
  if (!named) {
    return {
      decl: (name, n) => `var ${name}: array<${V.VF}, ${n / lanes}>;`,
      each: (n, f) => `for (var c = 0u; c < ${n / lanes}u; c++) { let cc = c * LANES + lane; ${f('cc', (name) => `${name}[c]`)} }`,
      eachScalar: (n, f) =>
        `for (var c = 0u; c < ${n / lanes}u; c++) { let cc = ((c / 4u) * LANES + lane) * 4u + c % 4u; ${f('cc', (name) => `${name}[c / 4u][c % 4u]`)} }`,
    };
  }
  const idx = Array.from({ length: Math.max(V.DW, V.DVW) / lanes }, (_, i) => i);
  return {
    decl: (name, n) => idx.slice(0, n / lanes).map((i) => `var ${name}_${i} = ${V.VF}();`).join(' '),
    each: (n, f) => idx.slice(0, n / lanes).map((i) => f(`(${i * lanes}u + lane)`, (name) => `${name}_${i}`)).join('\n    '),
    eachScalar: (n, f) =>
      idx
        .slice(0, n / 4 / lanes)
        .flatMap((i) => [0, 1, 2, 3].map((k) => f(`(${i * lanes * 4 + k}u + lane * 4u)`, (name) => `${name}_${i}.${'xyzw'[k] ?? 'x'}`)))
        .join('\n    '),
  };
}

/** Statements summing the f32 `name` over the LANES lanes of a row (a butterfly: every lane ends with the same bits). */
function laneSum(name: string, lanes: number, indent: string): string {
  const out: string[] = [];
  for (let m = 1; m < lanes; m *= 2) out.push(`${name} = ${name} + subgroupShuffleXor(${name}, ${m}u);`);
  return out.map((l) => `\n${indent}${l}`).join('');
}

/**
 * Bank-conflict XOR swizzle mask for staged rows of n vectors: in the exact walks neighbouring lanes read
 * different staged rows at the same column, so vector c of staged row m is stored at column c ^ (m & mask)
 * (mask < the largest power of two dividing n and < the vec4s per 128-byte bank line: 8 f32, 16 f16).
 * Scalar rows (head dims not multiples of 4) are not swizzled.
 */
function swizzleMask(V: VecTypes, n: number, dtype: GpuDType): number {
  if (V.W !== 4) return 0;
  let p = 1;
  while (n % (p * 2) === 0 && p * 2 <= (dtype === 'float16' ? 16 : 8)) p *= 2;
  return p - 1;
}

/** Staging store index of flat element `e` of rows of n vectors under a swizzle mask. */
function swizzledStore(e: string, n: string, mask: number): string {
  return mask === 0 ? e : `(${e} - ${e} % ${n} + ((${e} % ${n}) ^ ((${e} / ${n}) & ${mask}u)))`;
}

/** Column `c` of a staged row whose swizzle variable is `sw`. */
function swizzledCol(c: string, sw: string, mask: number): string {
  return mask === 0 ? c : `(${c} ^ ${sw})`;
}

/** Dot-product statements: `out` (a new f32 `let`) = sum over vectors c of dot(a(c), b(c)), vec4 fma chains. */
function dotStmts(R: Regs, V: VecTypes, out: string, n: number, f: (c: string, r: (name: string) => string) => [string, string], lanes = 1): string {
  return `var ${out}_v = ${vecZero(V)};
        ${R.each(n, (c, r) => {
          const [a, b] = f(c, r);
          return `${out}_v = fma(${a}, ${b}, ${out}_v);`;
        })}
        ${lanes > 1 ? `var ${out} = ${vecSum(V, `${out}_v`)};${laneSum(out, lanes, '        ')}` : `let ${out} = ${vecSum(V, `${out}_v`)};`}`;
}

/** Row-major linear index (u32) of per-axis i32 coordinates `${prefix}_a` within a tile of extents `${ext}_a`. */
function tileLinear(rank: number, prefix: string, ext: string): string {
  let e = `u32(${prefix}_0)`;
  for (let a = 1; a < rank; a++) e = `(${e} * ${ext}_${a} + u32(${prefix}_${a}))`;
  return e;
}

function elemBytes(dtype: GpuDType): number {
  return dtype === 'float16' ? 2 : 4;
}

/** Workgroup bytes of `rows` staged rows of dim and dimV elements (each array padded to 4 bytes) plus `words` 4-byte values per row. */
function stagingBytes(dim: number, dimV: number, dtype: GpuDType, rows: number, words: number): number {
  const e = elemBytes(dtype);
  const pad4 = (n: number): number => Math.ceil(n / 4) * 4;
  return pad4(rows * dim * e) + pad4(rows * dimV * e) + rows * words * 4;
}

/** Workgroup bytes of the dq kernel: a key tile of K and V rows plus row offsets. */
export function dqWorkgroupBytes(rank: number, dim: number, dimV: number, dtype: GpuDType, keyTileProduct: number): number {
  return stagingBytes(dim, dimV, dtype, keyTileProduct, 1);
}

/** Workgroup bytes of the dkv kernel: a query tile of q and dO rows, lse, delta and row offsets. */
export function dkvWorkgroupBytes(rank: number, dim: number, dimV: number, dtype: GpuDType, queryTileProduct: number): number {
  return stagingBytes(dim, dimV, dtype, queryTileProduct, 3);
}

/**
 * The tile products that fit this problem on a device with these limits: the dq kernel runs one invocation per
 * query of the query tile and stages one key tile; the dkv kernel runs one invocation per key of the key tile and
 * stages one query tile.
 */
export function fusedBackwardTileProducts(
  p: Pick<FusedBackwardProblem, 'rank' | 'dim' | 'dimV'> & { readonly dtype: GpuDType },
  limits: BackwardLimits,
): TileProducts {
  const inv = Math.min(limits.maxComputeInvocationsPerWorkgroup, limits.maxComputeWorkgroupSizeX);
  return FUSED_BACKWARD_TILES.filter(
    ([q, k]) =>
      q <= inv &&
      k <= inv &&
      dqWorkgroupBytes(p.rank, p.dim, p.dimV, p.dtype, k) <= limits.maxComputeWorkgroupStorageSize &&
      dkvWorkgroupBytes(p.rank, p.dim, p.dimV, p.dtype, q) <= limits.maxComputeWorkgroupStorageSize,
  );
}

/**
 * Why a config's walk unrolls (`keyUnroll` for the dq kernel, `queryUnroll` for the dkv kernel) are invalid, or
 * undefined: each must be one of FUSED_BACKWARD_UNROLLS, and an unroll > 1 does not combine with its kernel's row
 * grouping (`queriesPerInvocation` / `keysPerInvocation` > 1, whose walk is not unrolled). Device-independent.
 */
export function fusedBackwardUnrollProblem(
  config: Pick<FusedBackwardConfig, 'keyUnroll' | 'queryUnroll' | 'queriesPerInvocation' | 'keysPerInvocation'>,
): string | undefined {
  const rules = [
    ['keyUnroll', config.keyUnroll ?? 1, 'queriesPerInvocation', config.queriesPerInvocation ?? 1],
    ['queryUnroll', config.queryUnroll ?? 1, 'keysPerInvocation', config.keysPerInvocation ?? 1],
  ] as const;
  for (const [field, n, grouped, g] of rules) {
    if (!(FUSED_BACKWARD_UNROLLS as readonly number[]).includes(n)) return `${field} ${n} is not one of ${FUSED_BACKWARD_UNROLLS.join(', ')}`;
    if (n > 1 && g > 1) return `${field}=${n} cannot be combined with ${grouped}=${g} (the grouped-rows walk is not unrolled); set one of them to 1`;
  }
  return undefined;
}

/**
 * Why a config's lane split cannot run a problem on a device, or undefined if it can (tile products, splits and
 * workgroup memory are checked elsewhere: `fusedBackwardTileProducts`, core's `checkTiles` / `checkNumSplitsKey`).
 * Both row kernels run tile * lanes invocations: the dq kernel prod(queryTile) * T, the dkv kernel prod(keyTile) * T.
 * The experimental per-invocation knobs are checked here too: row grouping (`queriesPerInvocation`,
 * `keysPerInvocation`) and the walk unrolls (`fusedBackwardUnrollProblem`).
 */
export function fusedBackwardLanesProblem(
  problem: Pick<FusedBackwardProblem, 'dim' | 'dimV'>,
  config: Pick<FusedBackwardConfig, 'queryTile' | 'keyTile' | 'lanes' | 'queriesPerInvocation' | 'keysPerInvocation' | 'keyUnroll' | 'queryUnroll'>,
  limits: BackwardLimits,
): string | undefined {
  const q = config.queriesPerInvocation ?? 1;
  const k = config.keysPerInvocation ?? 1;
  const why =
    queriesPerInvocationProblem(q, config.queryTile) ??
    rowsPerInvocationProblem('keysPerInvocation', 'key', k, config.keyTile) ??
    fusedBackwardUnrollProblem(config);
  if (why !== undefined) return why;
  return laneSplitProblem(
    config.lanes ?? 1,
    problem,
    [
      ['query', product(config.queryTile) / q],
      ['key', product(config.keyTile) / k],
    ],
    limits,
    'row',
  );
}

/** Every rank-length tuple of powers of two whose product is p (entries >= minEntry, <= maxPerAxis[a]). */
export function fusedBackwardTileShapes(rank: number, p: number, maxPerAxis: readonly number[] = [], minEntry = 1): number[][] {
  const out: number[][] = [];
  const rec = (a: number, rest: number, acc: number[]): void => {
    if (a === rank - 1) {
      if (rest >= minEntry && rest <= (maxPerAxis[a] ?? Infinity)) out.push([...acc, rest]);
      return;
    }
    for (let t = minEntry; t <= rest; t *= 2) {
      if (rest % t !== 0 || t > (maxPerAxis[a] ?? Infinity)) continue;
      rec(a + 1, rest / t, [...acc, t]);
    }
  };
  rec(0, p, []);
  return out;
}

function nextPow2(n: number): number {
  let p = 1;
  while (p < n) p *= 2;
  return p;
}

/** Number of tiles along each axis when tiles of `tile` cover the largest dilation group, ceil(ceil(L/d)/T). */
export function fusedBackwardTilesPerAxis(spatial: readonly number[], dilation: readonly number[], tile: readonly number[]): number[] {
  return spatial.map((L, a) => Math.ceil(Math.ceil(L / (dilation[a] as number)) / (tile[a] as number)));
}

/**
 * The default config: 32-row tiles (32 / 4x8 / 2x4x4) for both kernels when they fit, otherwise the largest
 * fitting smaller square-ish tiles (or the smallest larger ones); one key split (deterministic either way) and the
 * fused delta. 32 rather than NATTEN's 64: on an H100 (2-D 128x128, H=8, D=64, K=7) 4x8/4x8 ran ~20% faster than
 * 8x8/8x8, since half-size workgroups double the workgroup count and halve the rows each exact walk skips.
 * Lanes: on devices whose subgroups are at least `DEFAULT_LANES_MIN_SUBGROUP` wide (`limits.subgroupMinSize`,
 * given only when the device has subgroups) the default splits each row over 4 lanes (else 2, where valid): on an
 * H200 (f16, D=64) that ran the whole backward 2.3x faster on 2-D 128x128 K=7 and 1.9x on 1-D 4096 K=127, because
 * each invocation keeps a quarter of the row's q/k/v/dO/dq registers. Narrower (CPU-like, e.g. lavapipe's 8-wide)
 * subgroups keep the single-lane default.
 */
export function defaultFusedBackwardConfig(problem: FusedBackwardProblem & { readonly dtype: GpuDType }, limits: BackwardLimits): FusedBackwardConfig | undefined {
  const products = fusedBackwardTileProducts(problem, limits);
  const rank = problem.rank;
  const pick = (which: 0 | 1): number | undefined => {
    const fits = products.map((pq) => pq[which]);
    if (fits.includes(DEFAULT_TILE_PRODUCT)) return DEFAULT_TILE_PRODUCT;
    const smaller = fits.filter((p) => p < DEFAULT_TILE_PRODUCT);
    if (smaller.length) return Math.max(...smaller);
    return fits.length ? Math.min(...fits) : undefined;
  };
  const qp = pick(0);
  const kp = pick(1);
  if (qp === undefined || kp === undefined) return undefined;
  const pair = products.find(([q, k]) => q === qp && k === kp) ?? products[0];
  if (!pair) return undefined;
  const config: FusedBackwardConfig = {
    queryTile: balancedShape(rank, pair[0]),
    keyTile: balancedShape(rank, pair[1]),
    numSplitsKey: new Array<number>(rank).fill(1),
    computeDeltaWithTorch: problem.computeDeltaWithTorch,
  };
  const split = withDefaultLanes(config, limits, DEFAULT_BACKWARD_LANES, (c) => fusedBackwardLanesProblem(problem, c, limits) === undefined);
  return withDefaultBackwardUnroll(problem, split, limits);
}

/**
 * The config with the heuristic unroll (`keyUnroll` = `queryUnroll` = DEFAULT_UNROLL) where it was measured to
 * help: lane-split configs without grouped rows, on devices with subgroups at least 16 wide, except float16 at rank
 * 3. On an H200 (default 4-lane tiles, fwd+bwd, two runs agreeing within 1%) it was 1-17% faster on every float32
 * standard problem and 2.5-10% on the float16 1-D and 2-D ones, 5% on the FLUX-like one, and 7% slower on the float16
 * 3-D one. Unchanged otherwise, and when the config sets either field. Applied to the default, to user tiles and to
 * the autotuner's configs, so a tuned config runs exactly as timed.
 */
export function withDefaultBackwardUnroll(
  problem: { readonly rank: number; readonly dtype: GpuDType },
  config: FusedBackwardConfig,
  limits: { readonly subgroupMinSize?: number },
): FusedBackwardConfig {
  if (config.keyUnroll !== undefined || config.queryUnroll !== undefined) return config;
  if ((config.lanes ?? 1) === 1 || (config.queriesPerInvocation ?? 1) > 1 || (config.keysPerInvocation ?? 1) > 1) return config;
  if (!hasWideSubgroups(limits) || (problem.dtype === 'float16' && problem.rank === 3)) return config;
  return { ...config, keyUnroll: DEFAULT_UNROLL, queryUnroll: DEFAULT_UNROLL };
}

/** Lane counts the default backward tries, in order, on devices with wide subgroups. */
const DEFAULT_BACKWARD_LANES = [4, 2] as const;

/**
 * The most cube-like power-of-two shape of product p, larger entries on the last axes (64 -> 8x8, 4x4x4): the
 * same spread as the forward's canonical key tile.
 */
export function balancedShape(rank: NaRank, p: number): number[] {
  return canonicalKeyTile(rank, p);
}

/**
 * Configs for the autotuner: tile pairs that fit the limits (shapes: powers of two >= 2 per axis like NATTEN's
 * vetted list, or 1 where the group extent is 1; entries capped at the next power of two of the group extent, as
 * larger tiles only add masked rows), x num_splits_key in {1s, 2 on every axis that has >= 2 key tiles} x both
 * delta modes. Lanes: only when `limits.subgroupMinSize` is given (the device has subgroups), each config also with
 * `lanes` 2 and 4 where valid (`fusedBackwardLanesProblem`); without it, exactly the single-lane list.
 */
export function enumerateFusedBackwardConfigs(problem: FusedBackwardProblem & { readonly dtype: GpuDType }, limits: BackwardLimits): FusedBackwardConfig[] {
  const rank = problem.rank;
  const groupExtent = problem.spatial.map((L, a) => Math.ceil(L / (problem.params.dilation[a] as number)));
  const cap = groupExtent.map(nextPow2);
  const minEntry = (p: number): number => (rank === 1 ? 1 : Math.min(2, ...cap, p));
  const shapesFor = (p: number): number[][] => fusedBackwardTileShapes(rank, p, cap, minEntry(p));
  const out: FusedBackwardConfig[] = [];
  for (const [qp, kp] of fusedBackwardTileProducts(problem, limits)) {
    for (const qt of shapesFor(qp)) {
      for (const kt of shapesFor(kp)) {
        const nkt = fusedBackwardTilesPerAxis(problem.spatial, problem.params.dilation, kt);
        const splitOptions: number[][] = [new Array<number>(rank).fill(1)];
        const two = nkt.map((n) => (n >= 2 ? 2 : 1));
        if (two.some((s) => s > 1)) splitOptions.push(two);
        for (const numSplitsKey of splitOptions) {
          for (const computeDeltaWithTorch of [false, true]) {
            const config: FusedBackwardConfig = { queryTile: qt, keyTile: kt, numSplitsKey, computeDeltaWithTorch };
            out.push(config);
            if (limits.subgroupMinSize === undefined) continue;
            for (const lanes of ENUMERATED_LANES) {
              const split = withDefaultBackwardUnroll(problem, { ...config, lanes }, limits);
              if (fusedBackwardLanesProblem(problem, split, limits) === undefined) out.push(split);
            }
          }
        }
      }
    }
  }
  return out;
}

/** A kernel spec as the module head and kernel record see it. */
type AnySpec = object & { readonly dtype: GpuDType; readonly lanes?: number };

function specLanes(spec: AnySpec): number {
  return spec.lanes ?? 1;
}

/**
 * The kernel key; lanes 1 is the single-lane kernel, so it keys (and emits) like a spec without the field, and
 * likewise a walk unroll of 1 (`keyUnroll` / `queryUnroll`).
 */
function backwardKey(family: string, spec: AnySpec): string {
  const unit = (field: 'keyUnroll' | 'queryUnroll'): object => ((spec as Record<string, unknown>)[field] === 1 ? { [field]: undefined } : {});
  return kernelKey(family, GEN, { ...spec, ...(specLanes(spec) === 1 ? { lanes: undefined } : {}), ...unit('keyUnroll'), ...unit('queryUnroll') });
}

function header(family: string, spec: AnySpec, consts: Record<string, string | number>): string {
  const key = backwardKey(family, spec);
  const lines = [
    `// ${key}`,
    enableDirectives(spec.dtype).trimEnd(),
    // The shuffles sit in row-dependent control flow (the exact walks); the uniformity analysis cannot see that the
    // LANES lanes of a row always branch alike, so every lane a shuffle reads from is active.
    specLanes(spec) > 1 ? 'enable subgroups;\ndiagnostic(off, subgroup_uniformity);' : '',
  ].filter((l) => l.length > 0);
  for (const [name, v] of Object.entries(consts)) {
    lines.push(`const ${name} = ${v};`);
  }
  return lines.join('\n');
}

function u(n: number): string {
  return `${n}u`;
}

/** A storage binding with the element type of its array and the plan buffer (`bufferNames` entry) bound to it. */
interface KernelBinding extends StorageBinding {
  readonly elem: string;
  readonly buffer: string;
}

function bind(name: string, access: StorageBinding['access'], elem: string, buffer: string): KernelBinding {
  return { name, access, elem, buffer };
}

/** Uniform fields of one type, in order. */
function fields(type: UniformField['type'], names: readonly string[]): UniformField[] {
  return names.map((name) => ({ name, type }));
}

/** Module head of every backward kernel: key comment, enables, baked consts, storage then uniform declarations. */
function moduleHead(family: string, spec: AnySpec, consts: Record<string, string | number>, bindings: readonly KernelBinding[], uniforms: readonly UniformField[]): string {
  return `${header(family, spec, consts)}
${storageDecls(bindings)}
${uniformDecl(uniforms, bindings.length)}`;
}

/** The compute entry point's first line. */
function entryPoint(workgroupSize: number): string {
  return `@compute @workgroup_size(${workgroupSize})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {`;
}

/** One invocation per element of the 1-D passes: `name` = flat invocation index, returning at `bound`. */
function flatInvocation(name: string, bound: string): string {
  return `let ${name} = (wid.x + wid.y * nwg.x) * WG + lid;
  if (${name} >= ${bound}) { return; }`;
}

function namedKernel(
  family: string,
  spec: AnySpec,
  code: string,
  workgroupSize: number,
  bindings: readonly KernelBinding[],
  uniforms: UniformField[],
  workgroupBytes: number,
): NamedKernel {
  return {
    key: backwardKey(family, spec),
    code,
    entryPoint: 'main',
    workgroupSize: [workgroupSize, 1, 1],
    bindings: bindings.map(({ name, access }) => ({ name, access })),
    uniforms,
    workgroupBytes,
    features: [...dtypeFeatures(spec.dtype), ...(specLanes(spec) > 1 ? ['subgroups'] : [])],
    bufferNames: bindings.map((b) => b.buffer),
  };
}

function bakedConsts(s: BakedProblem & { queryTile: readonly number[]; keyTile: readonly number[]; lanes?: number }): Record<string, string | number> {
  const c: Record<string, string | number> = {
    RANK: u(s.rank),
    D: u(s.dim),
    DV: u(s.dimV),
    BQ: u(product(s.queryTile)),
    BK: u(product(s.keyTile)),
    W: u(fusedBackwardVecWidth(s.dim, s.dimV)),
    DW: u(s.dim / fusedBackwardVecWidth(s.dim, s.dimV)),
    DVW: u(s.dimV / fusedBackwardVecWidth(s.dim, s.dimV)),
  };
  for (const a of axes(s.rank)) {
    c[`QT_${a}`] = u(s.queryTile[a] as number);
    c[`KT_${a}`] = u(s.keyTile[a] as number);
    c[`KS_${a}`] = `${s.kernelSize[a] as number}i`;
    c[`CAUSAL_${a}`] = String(s.causal[a] === true);
  }
  c.NSLOTS = u(product(s.kernelSize));
  if ((s.lanes ?? 1) > 1) c.LANES = u(s.lanes ?? 1);
  return c;
}

function axisUniforms(rank: number): UniformField[] {
  return fields('i32', axisUniformNames(rank));
}

/** Decode of the workgroup's tile `${tile}_a` (from `tile_lin`). */
function tileDecode(X: AxisText, tile: string): string {
  return decodeRowMajor('tile_lin', tile, X.A.map((a) => `params.ntile_${a}`), 'tt');
}

/** Decode of the dilation group `g_a` (from `gd`) and its extents n_a. */
function groupDecode(X: AxisText): string {
  return `${decodeRowMajor('gd', 'g', X.A.map((a) => `u32(params.dil_${a})`), 'gg')}
  ${X.per((a) => `let n_${a} = na_group_len(params.len_${a}, params.dil_${a}, g_${a});`)}`;
}

/** First row `${origin}_a` of tile `${tile}_a` of extents `${T}_a` (group coordinates); the workgroup returns when it lies past the group. */
function tileOrigin(X: AxisText, tile: string, T: string, origin: string): string {
  return `${X.per((a) => `let ${origin}_${a} = ${tile}_${a} * i32(${T}_${a});`)}
  if (${X.any((a) => `${origin}_${a} >= n_${a}`)}) { return; }`;
}

/** Last in-group row of the tile starting at `${origin}_a`. */
function tileLast(a: number, origin: string, T: string): string {
  return `min(${origin}_${a} + i32(${T}_${a}), n_${a}) - 1`;
}

/** Tiles of extent `${T}_a` covering [`${start}_a`, `${end}_a`). */
function tilesOver(a: number, start: string, end: string, T: string): string {
  return `(${end}_${a} - ${start}_${a} + i32(${T}_${a}) - 1) / i32(${T}_${a})`;
}

/** This invocation's own row `${coord}_a` of the tile at `${origin}_a` (extents `${T}_a`) and whether it lies in the group. */
function ownRow(X: AxisText, T: string, origin: string, coord: string, valid: string, lanes = 1): string {
  const head = lanes > 1 ? `let lane = lid % LANES;\n  let rid = lid / LANES;\n  ` : '';
  return `${head}${decodeRowMajor(lanes > 1 ? 'rid' : 'lid', 'l', X.A.map((a) => `${T}_${a}`), 'll')}
  ${X.per((a) => `let ${coord}_${a} = ${origin}_${a} + l_${a};`)}
  let ${valid} = ${X.all((a) => `${coord}_${a} < n_${a}`)};`;
}

/**
 * The rows an invocation owns when `n` consecutive rows along the last axis share it (the experimental row
 * grouping of the dq / dkv kernels): lane decode, coordinates `${coord}_a` of its first row in the tile of extents
 * `${T}_a` from `${origin}_a`, `${valid}` (first row inside the group) and `${valid}_j` per row, and per-row
 * coordinates `${rowPrefix}${j}_a`.
 */
function groupedOwnRows(X: AxisText, T: string, origin: string, coord: string, valid: string, n: number, lanes: number, rowPrefix: string): string {
  const last = X.A.length - 1;
  const js = Array.from({ length: n }, (_, j) => j);
  const head = lanes > 1 ? `let lane = lid % LANES;\n  let rid = lid / LANES;\n  ` : '';
  return `${head}${decodeRowMajor(lanes > 1 ? 'rid' : 'lid', 'l', X.A.map((a) => (a === last ? `(${T}_${a} / ${n}u)` : `${T}_${a}`)), 'll')}
  ${X.per((a) => `let ${coord}_${a} = ${origin}_${a} + ${a === last ? `${n} * l_${a}` : `l_${a}`};`)}
  let ${valid} = ${X.all((a) => `${coord}_${a} < n_${a}`)};
  ${js.map((j) => (j === 0 ? `let ${valid}_0 = ${valid};` : `let ${valid}_${j} = ${valid} && ${coord}_${last} + ${j} < n_${last};`)).join('\n  ')}
  ${js.map((j) => X.per((a) => `let ${rowPrefix}${j}_${a} = ${coord}_${a}${a === last && j > 0 ? ` + ${j}` : ''};`)).join('\n  ')}`;
}

/** A zero f32 row vector and the sum of one's components (the grouped walks' dot accumulators). */
function vecZero(V: VecTypes): string {
  return V.W === 4 ? 'vec4<f32>(0.0)' : '0.0';
}
function vecSum(V: VecTypes, v: string): string {
  return V.W === 4 ? `${v}.x + ${v}.y + ${v}.z + ${v}.w` : v;
}

/**
 * The exact walk of a grouped-rows kernel (the dq or dkv kernel with n rows per invocation, `${valid}_j` per row):
 * over the staged rows m in [lo, hi) per axis, each staged head-dim and value-dim vector is read once and feeds
 * the n dots `sdot_j` (against head registers `head[1](j)`) and `dp_j` (against `value[1](j)`), summed over the
 * lanes; then `weight(j)` (which sets the per-row scalars) and, per `[rows, acc, scalar]` of `axpys`, the n
 * register rows acc(j) += scalar(j) * staged vector, again one read per vector.
 */
function groupedWalk(o: {
  readonly X: AxisText;
  readonly R: Regs;
  readonly V: VecTypes;
  readonly LN: number;
  readonly box: StagedBox;
  readonly n: number;
  readonly valid: string;
  readonly comment: string;
  readonly lo: (a: number) => string;
  readonly hi: (a: number) => string;
  readonly head: readonly [StagedRows, (j: number) => string];
  readonly value: readonly [StagedRows, (j: number) => string];
  readonly weight: (j: number) => string;
  readonly axpys: readonly (readonly [StagedRows, (j: number) => string, (j: number) => string])[];
}): string {
  const { X, R, V, LN, box } = o;
  const js = Array.from({ length: o.n }, (_, j) => j);
  const dots = (out: string, [rows, reg]: readonly [StagedRows, (j: number) => string]): string =>
    [
      js.map((j) => `var ${out}${j}_v = ${vecZero(V)};`).join('\n        '),
      R.each(rows.n, (c, r) => `{ let sx = ${stagedAt(V, rows, c)}; ${js.map((j) => `${out}${j}_v = fma(sx, ${r(reg(j))}, ${out}${j}_v);`).join(' ')} }`),
      js.map((j) => `var ${out}_${j} = ${vecSum(V, `${out}${j}_v`)};${laneSum(`${out}_${j}`, LN, '        ')}`).join('\n        '),
    ].join('\n        ');
  const body = [
    `let m = ${tileLinear(X.A.length, 'm', box.T)};`,
    X.per((a) => `let ${box.coord}_${a} = ${box.base}_${a} + m_${a};`, '\n        '),
    `let ${o.head[0].sw} = m & ${o.head[0].mask}u;`,
    `let ${o.value[0].sw} = m & ${o.value[0].mask}u;`,
    dots('sdot', o.head),
    dots('dp', o.value),
    js.map(o.weight).join('\n        '),
    ...o.axpys.map(([rows, acc, scalar]) =>
      R.each(rows.n, (c, r) => `{ let sx = ${stagedAt(V, rows, c)}; ${js.map((j) => `${r(acc(j))} = fma(${V.VF}(${scalar(j)}), sx, ${r(acc(j))});`).join(' ')} }`),
    ),
  ].join('\n        ');
  return `    if (${o.valid}) {
      // Exact walk of the union of ${o.comment}.
      ${walkBounds(X, box, o.lo, o.hi)}
      ${stagedWalk(X.A.length, body)}
    }`;
}

/** Register row `reg` = the f32 vectors of row `row` of `buf` (rows of `width` vectors). */
function loadRegs(R: Regs, V: VecTypes, reg: string, buf: string, row: string, width: string, n: number): string {
  return R.each(n, (c, r) => `${r(reg)} = ${V.VF}(${buf}[${row} * ${width} + ${c}]);`);
}

/**
 * The staged box of the other side: tiles `${tile}_a` of extents `${T}_a` laid from `${start}_a` over
 * [`${start}_a`, `${end}_a`) (group coordinates); staged row m sits at `${coord}_a` = `${base}_a` + m_a.
 */
interface StagedBox {
  readonly coord: string;
  readonly start: string;
  readonly end: string;
  readonly tile: string;
  readonly T: string;
  readonly base: string;
  /** Staged rows per tile and the workgroup size (the staging stride). */
  readonly rows: string;
  readonly stride: string;
}

function tileBase(a: number, box: StagedBox): string {
  return `${box.start}_${a} + ${box.tile}_${a} * i32(${box.T}_${a})`;
}

/** Opening of the row staging loop: staged row e's coordinates `${coord}_a` and `ok` (inside the box). */
function stageCoords(X: AxisText, box: StagedBox): string {
  return `for (var e = lid; e < ${box.rows}; e += ${box.stride}) {
      ${decodeRowMajor('e', 'm', X.A.map((a) => `${box.T}_${a}`), 'mm')}
      ${X.per((a) => `let ${box.coord}_${a} = ${tileBase(a, box)} + m_${a};`, '\n      ')}
      let ok = ${X.all((a) => `${box.coord}_${a} < ${box.end}_${a}`)};`;
}

/** Per-axis walk bounds [mlo_a, mhi_a) within the staged tile of the range [lo(a), hi(a)) (group coordinates). */
function walkBounds(X: AxisText, box: StagedBox, lo: (a: number) => string, hi: (a: number) => string): string {
  return X.per(
    (a) => `let ${box.base}_${a} = ${tileBase(a, box)};
      let mlo_${a} = max(${lo(a)} - ${box.base}_${a}, 0);
      let mhi_${a} = min(${hi(a)} - ${box.base}_${a}, i32(${box.T}_${a}));`,
    '\n      ',
  );
}

/** The walk over staged rows m_a in [mlo_a, mhi_a). */
function stagedWalk(rank: number, body: string): string {
  return axisLoops(rank, 'm', 'mlo', 'mhi', body, '\n        ', '\n      ');
}

/** One staged tensor: workgroup array `sh` filled from `buf` (rows of `width` = n vectors), XOR-swizzled by `mask`. */
interface StagedRows {
  readonly sh: string;
  readonly buf: string;
  /** Names of the store index (staging) and of the swizzle variable (walk). */
  readonly store: string;
  readonly sw: string;
  readonly width: 'DW' | 'DVW';
  readonly n: number;
  readonly mask: number;
}

/** Staged rows of `${tensor}_buf` in `${tensor}_sh` (store index `${short}s`, swizzle `${short}sw`), of head dim (DW) or value dim (DVW). */
function stagedRows(V: VecTypes, dtype: GpuDType, tensor: string, short: string, width: 'DW' | 'DVW'): StagedRows {
  const n = width === 'DW' ? V.DW : V.DVW;
  return { sh: `${tensor}_sh`, buf: `${tensor}_buf`, store: `${short}s`, sw: `${short}sw`, width, n, mask: swizzleMask(V, n, dtype) };
}

/** Workgroup array of `rows` staged rows. */
function stagedDecl(V: VecTypes, s: StagedRows, rows: number): string {
  return `var<workgroup> ${s.sh}: array<${V.VT}, ${rows * s.n}>;`;
}

/** Staging loop of one tensor: rows from `rowSh` (row index or -1 for zero-fill). */
function stageRows(V: VecTypes, box: StagedBox, s: StagedRows, rowSh: string): string {
  const w = s.width;
  return `for (var e = lid; e < ${box.rows} * ${w}; e += ${box.stride}) {
      let r = ${rowSh}[e / ${w}];
      let ${s.store} = ${swizzledStore('e', w, s.mask)};
      if (r >= 0) { ${s.sh}[${s.store}] = ${s.buf}[u32(r) * ${w} + e % ${w}]; } else { ${s.sh}[${s.store}] = ${V.VT}(); }
    }`;
}

/** Vector c (f32) of staged row m (or of staged row `m` under swizzle variable `sw`, in the unrolled walks). */
function stagedAt(V: VecTypes, s: StagedRows, c: string, m = 'm', sw = s.sw): string {
  return `${V.VF}(${s.sh}[${m} * ${s.width} + ${swizzledCol(c, sw, s.mask)}])`;
}

/** Register row `reg` += scalar * staged row m of `s`. */
function accumulate(R: Regs, V: VecTypes, reg: string, scalar: string, s: StagedRows): string {
  return R.each(s.n, (c, r) => `${r(reg)} = fma(${V.VF}(${scalar}), ${stagedAt(V, s, c)}, ${r(reg)});`);
}

/** Register row `reg` (n scalars) written to row `row` of `buf` (rows of `width` elements), each scalar through `value`. */
function storeRow(R: Regs, reg: string, n: number, buf: string, row: string, width: string, value: (x: string) => string): string {
  return R.eachScalar(n, (c, x) => `${buf}[${row} * ${width} + ${c}] = ${value(x(reg))};`);
}

/**
 * Head of the exact walk's body, shared by dq and dkv: staged row m, the walked coordinates, swizzle variables,
 * P = exp(scale q.k (+ rpb) - lse) and dS = P (dO.v - delta). The q.k and dO.v operands come from `qk` / `dov`
 * (one side staged, the other in registers); `qkRows` / `dovRows` are the staged tensors walked.
 */
function recomputeDs(o: {
  readonly X: AxisText;
  readonly R: Regs;
  readonly V: VecTypes;
  readonly box: StagedBox;
  readonly qkRows: StagedRows;
  readonly dovRows: StagedRows;
  readonly qk: (c: string, r: (name: string) => string) => [string, string];
  readonly dov: (c: string, r: (name: string) => string) => [string, string];
  readonly spec: TiledBackwardSpec;
  readonly lse: string;
  readonly delta: string;
}): string {
  const { X, R, V, box, spec } = o;
  const lanes = spec.lanes ?? 1;
  return [
    `let m = ${tileLinear(spec.rank, 'm', box.T)};`,
    X.per((a) => `let ${box.coord}_${a} = ${box.base}_${a} + m_${a};`, '\n        '),
    `let ${o.qkRows.sw} = m & ${o.qkRows.mask}u;`,
    `let ${o.dovRows.sw} = m & ${o.dovRows.mask}u;`,
    dotStmts(R, V, 'sdot', V.DW, o.qk, lanes),
    ...probStmts(spec, '', 'j', 'i', o.lse),
    dotStmts(R, V, 'dp', V.DVW, o.dov, lanes),
    dsStmt('', o.delta),
  ].join('\n        ');
}

/**
 * P of a (query, key) pair from its logit dot `sdot${sfx}`: s = scale * q.k (+ rpb[key, query]), p = exp(s - lse),
 * as statements (the rpb one empty without rpb). The one formula of the plain walk and the unrolled step.
 */
function probStmts(spec: TiledBackwardSpec, sfx: string, key: string, query: string, lse: string): string[] {
  return [
    `var s${sfx} = params.scale * sdot${sfx};`,
    spec.rpb ? `s${sfx} += f32(rpb_buf[${rpbIndexExpr(spec.rank, spec.kernelSize, key, query)}]);` : '',
    `let p${sfx} = exp(s${sfx} - ${lse});`,
  ];
}

/** dS of the pair from its P and its dO.v dot `dp${sfx}`: ds = p * (dp - delta). */
function dsStmt(sfx: string, delta: string): string {
  return `let ds${sfx} = p${sfx} * (dp${sfx} - ${delta});`;
}

/** Vector c of staged row `mu${u}` of `s` (row u of a step of the unrolled walk, swizzle variable `${s.sw}u${u}`). */
function unitAt(V: VecTypes, s: StagedRows, c: string, u: number): string {
  return stagedAt(V, s, c, `mu${u}`, `${s.sw}u${u}`);
}

/**
 * One step of the unrolled exact walk (experimental `keyUnroll` in dq, `queryUnroll` in dkv): the U staged rows
 * `mu0 .. mu{U-1}` = m .. m + U - 1 (consecutive along the last axis, walked coordinates `${coord}u${u}_a`, swizzle
 * variables `${sw}u${u}`). First the U q.k dot chains with their FMAs interleaved (one independent accumulator
 * per row), then the U dO.v chains likewise, then their sums and lane butterflies interleaved, then per row
 * P = `p_u${u}` and dS = `ds_u${u}` (each value by exactly the operations of `recomputeDs`), then the axpys
 * `[staged tensor, register row, 'p' | 'ds']` column by column with the U rows in walk order (so every register
 * accumulator sees the single-row sequence of FMAs), then `tail(u)` per row (the dS scratch writes).
 */
function unrolledStep(o: {
  readonly X: AxisText;
  readonly R: Regs;
  readonly V: VecTypes;
  readonly box: StagedBox;
  readonly U: number;
  readonly qkRows: StagedRows;
  readonly dovRows: StagedRows;
  readonly qk: (c: string, r: (name: string) => string, u: number) => [string, string];
  readonly dov: (c: string, r: (name: string) => string, u: number) => [string, string];
  readonly spec: TiledBackwardSpec;
  readonly lse: (u: number) => string;
  readonly delta: (u: number) => string;
  readonly axpys: readonly (readonly [StagedRows, string, 'p' | 'ds'])[];
  readonly tail: (u: number) => string;
}): string {
  const { X, R, V, box, spec, U } = o;
  const lanes = spec.lanes ?? 1;
  const last = spec.rank - 1;
  const us = Array.from({ length: U }, (_, u) => u);
  const coord = (u: number): string => `${box.coord}u${u}`;
  // rpb is indexed by (key, query): the walked side is this row's coordinates, the other the invocation's own row.
  const key = (u: number): string => (box.coord === 'j' ? coord(u) : 'j');
  const query = (u: number): string => (box.coord === 'i' ? coord(u) : 'i');
  const chains = (out: string, n: number, f: typeof o.qk): string =>
    [
      us.map((u) => `var ${out}_u${u}_v = ${vecZero(V)};`).join(' '),
      R.each(n, (c, r) =>
        us
          .map((u) => {
            const [a, b] = f(c, r, u);
            return `${out}_u${u}_v = fma(${a}, ${b}, ${out}_u${u}_v);`;
          })
          .join(' '),
      ),
    ].join('\n        ');
  const sums = ['sdot', 'dp'].flatMap((out) => us.map((u) => `${out}_u${u}`));
  const butterflies: string[] = [];
  for (let mask = 1; mask < lanes; mask *= 2) butterflies.push(sums.map((x) => `${x} = ${x} + subgroupShuffleXor(${x}, ${mask}u);`).join(' '));
  return [
    `let mu0 = ${tileLinear(spec.rank, 'm', box.T)};`,
    ...us.slice(1).map((u) => `let mu${u} = mu0 + ${u}u;`),
    ...us.map((u) => X.per((a) => `let ${coord(u)}_${a} = ${box.base}_${a} + m_${a}${a === last && u > 0 ? ` + ${u}` : ''};`, ' ')),
    ...us.map((u) => `let ${o.qkRows.sw}u${u} = mu${u} & ${o.qkRows.mask}u; let ${o.dovRows.sw}u${u} = mu${u} & ${o.dovRows.mask}u;`),
    chains('sdot', V.DW, o.qk),
    chains('dp', V.DVW, o.dov),
    sums.map((x) => `${lanes > 1 ? 'var' : 'let'} ${x} = ${vecSum(V, `${x}_v`)};`).join(' '),
    ...butterflies,
    ...us.map((u) =>
      [...probStmts(spec, `_u${u}`, key(u), query(u), o.lse(u)), dsStmt(`_u${u}`, o.delta(u))].filter((l) => l.length > 0).join(' '),
    ),
    ...o.axpys.map(([rows, acc, scalar]) =>
      R.each(rows.n, (c, r) => us.map((u) => `${r(acc)} = fma(${V.VF}(${scalar}_u${u}), ${unitAt(V, rows, c, u)}, ${r(acc)});`).join(' ')),
    ),
    ...us.map(o.tail).filter((l) => l.length > 0),
  ].join('\n        ');
}

/**
 * The exact walk with its innermost axis unrolled by U (`keyUnroll` / `queryUnroll` > 1): steps of U consecutive
 * staged rows (`step`, see `unrolledStep`), then a remainder loop over the last < U rows of the row, one at a
 * time, with the plain single-row body `single`.
 */
function unrolledStagedWalk(rank: number, U: number, step: string, single: string): string {
  const L = rank - 1;
  const inner = `var m_${L} = mlo_${L};
        for (; m_${L} + ${U} <= mhi_${L}; m_${L} += ${U}) {
        ${step}
        }
        for (; m_${L} < mhi_${L}; m_${L}++) {
        ${single}
        }`;
  return axisLoops(L, 'm', 'mlo', 'mhi', inner, '\n        ', '\n      ');
}

function rpbIndexExpr(rank: number, ks: readonly number[], key: string, query: string): string {
  let e = 'h';
  for (const a of axes(rank)) {
    const K = ks[a] as number;
    e = `(${e} * ${2 * K - 1}u + u(clamp(${key}_${a} - ${query}_${a} + ${K - 1}, 0, ${2 * K - 2})))`;
  }
  return e.replace(/\bu\(/g, 'u32(');
}

/** dq stages key tiles laid from the start of the forward key box [bs, be) of its query tile. */
const KEY_BOX: StagedBox = { coord: 'j', start: 'bs', end: 'be', tile: 'kt', T: 'KT', base: 'kb', rows: 'BK', stride: 'BQ' };

/** dkv stages query tiles laid from the start of the exact inverse box [ibs, ibe) of its key tile. */
const QUERY_BOX: StagedBox = { coord: 'i', start: 'ibs', end: 'ibe', tile: 'qt', T: 'QT', base: 'qb', rows: 'BQ', stride: 'BK' };

/**
 * What the dq and dkv generators derive from their spec: I/O type, tile products, vector types, registers, axis
 * text, and the two staged tensors (head-dim rows, value-dim rows).
 */
interface RowKernelSetup {
  readonly T: string;
  /** Lanes per row (1: the single-lane kernel). */
  readonly LN: number;
  readonly BQ: number;
  readonly BK: number;
  readonly V: VecTypes;
  readonly R: Regs;
  readonly X: AxisText;
  readonly staged: readonly [StagedRows, StagedRows];
}

/** Module text dq and dkv start with: head, window functions, `dotw` and the two staged workgroup arrays (their own arrays follow). */
function rowKernelHead(
  family: string,
  spec: TiledBackwardSpec,
  bindings: readonly KernelBinding[],
  uniforms: readonly UniformField[],
  V: VecTypes,
  staged: readonly StagedRows[],
  rows: number,
): string {
  return [
    moduleHead(family, spec, bakedConsts(spec), bindings, uniforms),
    windowFunctions(spec.kernelSize, spec.causal),
    V.helper,
    ...staged.map((s) => stagedDecl(V, s, rows)),
  ].join('\n');
}

/** `staged`: (tensor, short name) of the staged head-dim and value-dim tensors (see `stagedRows`). */
function rowKernelSetup(
  spec: TiledBackwardSpec,
  staged: readonly [readonly [string, string], readonly [string, string]],
): RowKernelSetup {
  const T = wgslType(spec.dtype);
  const V = vecTypes(T, spec.dim, spec.dimV);
  const [[dt, ds], [vt, vs]] = staged;
  const LN = spec.lanes ?? 1;
  const why = lanesDimProblem(LN, spec.dim, spec.dimV);
  if (why !== undefined) throw new Error(`fused backward spec: ${why}`);
  return {
    T,
    LN,
    BQ: product(spec.queryTile),
    BK: product(spec.keyTile),
    V,
    R: regs(V, LN),
    X: axisText(spec.rank),
    staged: [stagedRows(V, spec.dtype, dt, ds, 'DW'), stagedRows(V, spec.dtype, vt, vs, 'DVW')],
  };
}

/** The dq kernel (pass 2). */
export function generateFusedBackwardDq(spec: FusedBackwardDqSpec): NamedKernel {
  const { rank, dim: D, dimV: DV } = spec;
  const family = 'na-fused-backward-dq';
  const { T, LN, BQ, BK, V, R, X, staged } = rowKernelSetup(spec, [['k', 'k'], ['v', 'v']]);
  const [kRows, vRows] = staged;
  const { A, per } = X;
  const Q = spec.queriesPerInvocation ?? 1;
  const KU = spec.keyUnroll ?? 1;
  const unrollWhy = fusedBackwardUnrollProblem({ keyUnroll: KU, queriesPerInvocation: Q });
  if (unrollWhy !== undefined) throw new Error(`fused backward spec: ${unrollWhy}`);
  const WGQ = (BQ / Q) * LN;
  // Lane split / several queries per invocation: every invocation stages, so the staging stride is the workgroup size.
  const box: StagedBox = Q > 1 ? { ...KEY_BOX, stride: `${WGQ}u` } : LN > 1 ? { ...KEY_BOX, stride: '(BQ * LANES)' } : KEY_BOX;
  const bindings: KernelBinding[] = [bind('q_buf', 'read', V.VT, 'query'), bind('k_buf', 'read', V.VT, 'key'), bind('v_buf', 'read', V.VT, 'value')];
  if (spec.delta === 'fused') bindings.push(bind('o_buf', 'read', V.VT, 'output'));
  bindings.push(bind('do_buf', 'read', V.VT, 'gradOutput'), bind('lse_buf', 'read', 'f32', 'logsumexp'));
  if (spec.rpb) bindings.push(bind('rpb_buf', 'read', T, 'rpb'));
  bindings.push(bind('delta_buf', spec.delta === 'fused' ? 'read_write' : 'read', 'f32', 'delta'));
  bindings.push(bind('dq_buf', 'read_write', spec.partial ? 'f32' : T, spec.partial ? 'dqPartial' : 'gradQuery'));
  if (spec.gradRpb) bindings.push(bind('ds_buf', 'read_write', 'f32', 'dsScratch'));
  const uniforms: UniformField[] = [
    ...fields('u32', ['batch', 'heads', 'heads_kv', 'tokens', 'rows', 'total', 'ntile_total', 'splits', 'ngroups']),
    ...fields('f32', ['scale']),
    ...axisUniforms(rank),
    ...axes(rank).flatMap((a) => [...fields('u32', [`ntile_${a}`]), ...fields('i32', [`spl_${a}`])]),
  ];
  const deltaLoad =
    spec.delta === 'fused'
      ? `var dl = 0.0;
    ${R.each(V.DVW, (c, r) => `dl += dotw(${r('dov')}, ${V.VF}(o_buf[row * DVW + ${c}]));`)}${laneSum('dl', LN, '    ')}
    delta_x = dl;
    if (split == 0u${LN > 1 ? ' && lane == 0u' : ''}) { delta_buf[row] = dl; }`
      : `delta_x = delta_buf[row];`;
  /**
   * Q > 1 (`queriesPerInvocation`): this invocation owns queries i + (0 .. Q-1) along the last axis. The walk
   * covers the union of their windows (the outer axes' windows are shared); each staged K/V vector read feeds the
   * Q dot products and the Q dQ axpys, and each query keeps only the keys of its own window (dS = 0 elsewhere).
   */
  function dqMultiQuery(): { setup: string; walk: string; epilogue: string } {
    const last = rank - 1;
    const js = Array.from({ length: Q }, (_, j) => j);
    const perQuery = (j: number): string => {
      const deltaJ =
        spec.delta === 'fused'
          ? `var dl = 0.0;
      ${R.each(V.DVW, (c, r) => `dl += dotw(${r(`dov_${j}`)}, ${V.VF}(o_buf[row_${j} * DVW + ${c}]));`)}${laneSum('dl', LN, '      ')}
      delta_${j} = dl;
      if (split == 0u${LN > 1 ? ' && lane == 0u' : ''}) { delta_buf[row_${j}] = dl; }`
          : `delta_${j} = delta_buf[row_${j}];`;
      return `if (qvalid_${j}) {
      let wq_${j} = ${naCall('window', last, origCoord(last, `iq${j}`))};
      wsq_${j} = ${groupCoord(last, `wq_${j}.x`)};
      wcq_${j} = wq_${j}.y;
      ${per((a) => `let x${j}_${a} = ${origCoord(a, `iq${j}`)};`, '\n      ')}
      row_${j} = ${rowIndex(`x${j}`, rank, 'params.heads', 'h')};
      ${loadRegs(R, V, `qv_${j}`, 'q_buf', `row_${j}`, 'DW', V.DW)}
      ${loadRegs(R, V, `dov_${j}`, 'do_buf', `row_${j}`, 'DVW', V.DVW)}
      lse_${j} = lse_buf[row_${j}];
      ${deltaJ}
    }`;
    };
    const setup = `${groupedOwnRows(X, 'QT', 'q0', 'i', 'qvalid', Q, LN, 'iq')}
  ${per((a) => `var ws_${a} = 0;\n  var wc_${a} = 0;`)}
  ${js.map((j) => `var wsq_${j} = 0;\n  var wcq_${j} = 0;\n  var row_${j} = 0u;\n  var lse_${j} = 0.0;\n  var delta_${j} = 0.0;`).join('\n  ')}
  ${js.map((j) => `${R.decl(`qv_${j}`, V.DW)}\n  ${R.decl(`dov_${j}`, V.DVW)}\n  ${R.decl(`acc_${j}`, V.DW)}`).join('\n  ')}
  if (qvalid) {
    ${A.filter((a) => a !== last)
      .map(
        (a) => `let w_${a} = ${naCall('window', a, origCoord(a, 'i'))};
    ws_${a} = ${groupCoord(a, `w_${a}.x`)};
    wc_${a} = w_${a}.y;`,
      )
      .join('\n    ')}
    ${js.map(perQuery).join('\n    ')}
    ws_${last} = wsq_0;
    var ue = wsq_0 + wcq_0;
    ${js
      .slice(1)
      .map((j) => `if (qvalid_${j}) {\n      ws_${last} = min(ws_${last}, wsq_${j});\n      ue = max(ue, wsq_${j} + wcq_${j});\n    }`)
      .join('\n    ')}
    wc_${last} = ue - ws_${last};
  }`;
    const slot = (j: number): string => windowSlot(spec.kernelSize, (a) => `j_${a} - ${a === last ? `wsq_${j}` : `ws_${a}`}`);
    const weight = (j: number): string => `var ds_${j} = 0.0;
        if (qvalid_${j} && j_${last} >= wsq_${j} && j_${last} < wsq_${j} + wcq_${j}) {
          var s = params.scale * sdot_${j};
          ${spec.rpb ? `s += f32(rpb_buf[${rpbIndexExpr(rank, spec.kernelSize, 'j', `iq${j}`)}]);` : ''}
          ds_${j} = exp(s - lse_${j}) * (dp_${j} - delta_${j});
          ${spec.gradRpb ? `${LN > 1 ? 'if (lane == 0u) { ' : ''}ds_buf[row_${j} * NSLOTS + ${slot(j)}] = ds_${j};${LN > 1 ? ' }' : ''}` : ''}
        }`;
    const walk = groupedWalk({
      X,
      R,
      V,
      LN,
      box,
      n: Q,
      valid: 'qvalid',
      comment: "this invocation's windows; each query keeps its own window's keys",
      lo: (a) => `ws_${a}`,
      hi: (a) => `ws_${a} + wc_${a}`,
      head: [kRows, (j) => `qv_${j}`],
      value: [vRows, (j) => `dov_${j}`],
      weight,
      axpys: [[kRows, (j) => `acc_${j}`, (j) => `ds_${j}`]],
    });
    const epilogue = js
      .map(
        (j) => `  if (qvalid_${j}) {
    ${
      spec.partial
        ? `let base = split * params.rows * D + row_${j} * D;
    ${R.eachScalar(D, (c, x) => `dq_buf[base + ${c}] = params.scale * ${x(`acc_${j}`)};`)}`
        : storeRow(R, `acc_${j}`, D, 'dq_buf', `row_${j}`, 'D', (x) => `${T}(params.scale * ${x})`)
    }
  }`,
      )
      .join('\n');
    return { setup, walk, epilogue };
  }
  const multi = Q > 1 ? dqMultiQuery() : undefined;
  const setup = multi ? multi.setup : `  ${ownRow(X, 'QT', 'q0', 'i', 'qvalid', LN)}
  ${per((a) => `var ws_${a} = 0;\n  var wc_${a} = 0;`)}
  var row = 0u;
  ${R.decl('qv', V.DW)}
  ${R.decl('dov', V.DVW)}
  ${R.decl('acc', V.DW)}
  var lse_x = 0.0;
  var delta_x = 0.0;
  if (qvalid) {
    ${per(
      (a) => `let w_${a} = ${naCall('window', a, origCoord(a, 'i'))};
    ws_${a} = ${groupCoord(a, `w_${a}.x`)};
    wc_${a} = w_${a}.y;
    let x_${a} = ${origCoord(a, 'i')};`,
      '\n    ',
    )}
    row = ${rowIndex('x', rank, 'params.heads', 'h')};
    ${loadRegs(R, V, 'qv', 'q_buf', 'row', 'DW', V.DW)}
    ${loadRegs(R, V, 'dov', 'do_buf', 'row', 'DVW', V.DVW)}
    lse_x = lse_buf[row];
    ${deltaLoad}
  }
`;
  // The dS scratch write (d_rpb) of the key at coordinates `${coord}_a`: slot t = j - ws per axis.
  const dsWrite = (coord: string, ds: string): string =>
    spec.gradRpb
      ? `${LN > 1 ? 'if (lane == 0u) { ' : ''}ds_buf[row * NSLOTS + ${A.reduce((e, a) => (a === 0 ? `u32(${coord}_0 - ws_0)` : `(${e} * u32(KS_${a}) + u32(${coord}_${a} - ws_${a}))`), '')}] = ${ds};${LN > 1 ? ' }' : ''}`
      : '';
  const singleKey = `${recomputeDs({
    X,
    R,
    V,
    box,
    qkRows: kRows,
    dovRows: vRows,
    qk: (c, r) => [r('qv'), stagedAt(V, kRows, c)],
    dov: (c, r) => [r('dov'), stagedAt(V, vRows, c)],
    spec,
    lse: 'lse_x',
    delta: 'delta_x',
  })}
        ${accumulate(R, V, 'acc', 'ds', kRows)}
        ${dsWrite('j', 'ds')}`;
  const keySteps = (): string =>
    unrolledStagedWalk(
      rank,
      KU,
      unrolledStep({
        X,
        R,
        V,
        box,
        U: KU,
        qkRows: kRows,
        dovRows: vRows,
        qk: (c, r, u) => [r('qv'), unitAt(V, kRows, c, u)],
        dov: (c, r, u) => [r('dov'), unitAt(V, vRows, c, u)],
        spec,
        lse: () => 'lse_x',
        delta: () => 'delta_x',
        axpys: [[kRows, 'acc', 'ds']],
        tail: (u) => dsWrite(`ju${u}`, `ds_u${u}`),
      }),
      singleKey,
    );
  const walk = multi ? multi.walk : `    if (qvalid) {
      // Exact window walk: per axis only the staged keys of this query's own window (slot t = j - ws).
      ${walkBounds(X, box, (a) => `ws_${a}`, (a) => `ws_${a} + wc_${a}`)}
      ${KU > 1 ? keySteps() : stagedWalk(rank, singleKey)}
    }`;
  const epilogue = multi ? multi.epilogue : `  if (qvalid) {
    ${
      spec.partial
        ? `let base = split * params.rows * D + row * D;
    ${R.eachScalar(D, (c, x) => `dq_buf[base + ${c}] = params.scale * ${x('acc')};`)}`
        : storeRow(R, 'acc', D, 'dq_buf', 'row', 'D', (x) => `${T}(params.scale * ${x})`)
    }
  }`;
  const code = `${rowKernelHead(family, spec, bindings, uniforms, V, staged, BK)}
var<workgroup> krow_sh: array<i32, ${BK}>;

${entryPoint(WGQ)}
  ${decodeWorkgroup([['tile_lin', 'params.ntile_total'], ['split', 'params.splits'], ['gd', 'params.ngroups'], ['h', 'params.heads']], 'b')}
  let hk = h / (params.heads / params.heads_kv);
  ${tileDecode(X, 'tq')}
  ${decodeRowMajor('split', 'sp', A.map((a) => `u32(params.spl_${a})`), 'ss')}
  ${groupDecode(X)}
  ${tileOrigin(X, 'tq', 'QT', 'q0')}
  ${per((a) => `let q1_${a} = ${tileLast(a, 'q0', 'QT')};`)}
  ${per(
    (a) => `let wf_${a} = ${naCall('window', a, origCoord(a, 'q0'))};
  let wl_${a} = ${naCall('window', a, origCoord(a, 'q1'))};
  let bs_${a} = ${groupCoord(a, `wf_${a}.x`)};
  let be_${a} = ${groupCoord(a, `wl_${a}.x`)} + wl_${a}.y;
  let nb_${a} = ${tilesOver(a, 'bs', 'be', 'KT')};
  let klo_${a} = (sp_${a} * nb_${a}) / params.spl_${a};
  let khi_${a} = ((sp_${a} + 1) * nb_${a}) / params.spl_${a};`,
  )}
${setup}  ${axisLoops(
    rank,
    'kt',
    'klo',
    'khi',
    `    workgroupBarrier();
    ${stageCoords(X, box)}
      ${A.map((a) => `let y_${a} = ${origCoord(a, 'j')};`).join('\n      ')}
      let kvrow = ${rowIndex('y', rank, 'params.heads_kv', 'hk')};
      krow_sh[e] = select(-1, i32(kvrow), ok);
    }
    workgroupBarrier();
    ${stageRows(V, box, kRows, 'krow_sh')}
    ${stageRows(V, box, vRows, 'krow_sh')}
    workgroupBarrier();
${walk}`,
    '\n',
    '\n  ',
  )}
${epilogue}
}
`;
  return namedKernel(family, spec, code, WGQ, bindings, uniforms, dqWorkgroupBytes(rank, D, DV, spec.dtype, BK));
}

/** The dK/dV kernel (pass 3). */
export function generateFusedBackwardDkv(spec: FusedBackwardDkvSpec): NamedKernel {
  const { rank, dim: D, dimV: DV } = spec;
  const family = 'na-fused-backward-dkv';
  const { T, LN, BQ, BK, V, R, X, staged } = rowKernelSetup(spec, [['q', 'q'], ['do', 'o']]);
  const [qRows, oRows] = staged;
  const { A, per } = X;
  const K = spec.keysPerInvocation ?? 1;
  const QU = spec.queryUnroll ?? 1;
  const unrollWhy = fusedBackwardUnrollProblem({ queryUnroll: QU, keysPerInvocation: K });
  if (unrollWhy !== undefined) throw new Error(`fused backward spec: ${unrollWhy}`);
  const WGK = (BK / K) * LN;
  // Lane split / several keys per invocation: every invocation stages, so the staging stride is the workgroup size.
  const box: StagedBox = K > 1 ? { ...QUERY_BOX, stride: `${WGK}u` } : LN > 1 ? { ...QUERY_BOX, stride: '(BK * LANES)' } : QUERY_BOX;
  const bindings: KernelBinding[] = [
    bind('q_buf', 'read', V.VT, 'query'),
    bind('k_buf', 'read', V.VT, 'key'),
    bind('v_buf', 'read', V.VT, 'value'),
    bind('do_buf', 'read', V.VT, 'gradOutput'),
    bind('lse_buf', 'read', 'f32', 'logsumexp'),
    bind('delta_buf', 'read', 'f32', 'delta'),
  ];
  if (spec.rpb) bindings.push(bind('rpb_buf', 'read', T, 'rpb'));
  bindings.push(bind('dk_buf', 'read_write', T, 'gradKey'), bind('dv_buf', 'read_write', T, 'gradValue'));
  const uniforms: UniformField[] = [
    ...fields('u32', ['batch', 'heads', 'heads_kv', 'tokens', 'total', 'ntile_total', 'ngroups']),
    ...fields('f32', ['scale']),
    ...axisUniforms(rank),
    ...fields('u32', axes(rank).map((a) => `ntile_${a}`)),
  ];
  /**
   * K > 1 (`keysPerInvocation`): this invocation owns keys j + (0 .. K-1) along the last axis. The walk covers
   * the union of their exact inverse ranges (the outer axes' ranges are shared); each staged q / dO vector read
   * feeds the K q.k and dO.v dots and the K dK / dV axpys, and each key keeps only the queries of its own inverse
   * range (P = dS = 0 elsewhere).
   */
  function dkvMultiKey(): { setup: string; walk: string; epilogue: string } {
    const last = rank - 1;
    const js = Array.from({ length: K }, (_, j) => j);
    const setup = `${groupedOwnRows(X, 'KT', 'k0', 'j', 'kvalid', K, LN, 'jk')}
  ${js.map((j) => `var kvrow_${j} = 0u;\n  var ifq_${j} = 0;\n  var ieq_${j} = 0;`).join('\n  ')}
  ${js.map((j) => `${R.decl(`kv_${j}`, V.DW)}\n  ${R.decl(`vv_${j}`, V.DVW)}\n  ${R.decl(`dka_${j}`, V.DW)}\n  ${R.decl(`dva_${j}`, V.DVW)}`).join('\n  ')}
  // The union of these keys' exact inverse ranges per axis (group coordinates): queries [ifs, ife).
  ${per((a) => `var ifs_${a} = 0;
  var ife_${a} = 0;`)}
  if (kvalid) {
    ${A.filter((a) => a !== last)
      .map(
        (a) => `let inv_${a} = ${naCall('inverse', a, origCoord(a, 'j'))};
    ifs_${a} = ${groupCoord(a, `inv_${a}.x`)};
    ife_${a} = ${groupCoord(a, `inv_${a}.y`)};`,
      )
      .join('\n    ')}
    ${js
      .map(
        (j) => `if (kvalid_${j}) {
      ${per((a) => `let y${j}_${a} = ${origCoord(a, `jk${j}`)};`, '\n      ')}
      let invq_${j} = ${naCall('inverse', last, `y${j}_${last}`)};
      ifq_${j} = ${groupCoord(last, `invq_${j}.x`)};
      ieq_${j} = ${groupCoord(last, `invq_${j}.y`)};
      kvrow_${j} = ${rowIndex(`y${j}`, rank, 'params.heads_kv', 'hk')};
      ${loadRegs(R, V, `kv_${j}`, 'k_buf', `kvrow_${j}`, 'DW', V.DW)}
      ${loadRegs(R, V, `vv_${j}`, 'v_buf', `kvrow_${j}`, 'DVW', V.DVW)}
    }`,
      )
      .join('\n    ')}
    ifs_${last} = ifq_0;
    ife_${last} = ieq_0;
    ${js
      .slice(1)
      .map((j) => `if (kvalid_${j}) {\n      ifs_${last} = min(ifs_${last}, ifq_${j});\n      ife_${last} = max(ife_${last}, ieq_${j});\n    }`)
      .join('\n    ')}
  }`;
    const weight = (j: number): string => `var p_${j} = 0.0;
        var ds_${j} = 0.0;
        if (kvalid_${j} && i_${last} >= ifq_${j} && i_${last} < ieq_${j}) {
          var s = params.scale * sdot_${j};
          ${spec.rpb ? `s += f32(rpb_buf[${rpbIndexExpr(rank, spec.kernelSize, `jk${j}`, 'i')}]);` : ''}
          p_${j} = exp(s - lse_sh[m]);
          ds_${j} = p_${j} * (dp_${j} - dl_sh[m]);
        }`;
    const walk = groupedWalk({
      X,
      R,
      V,
      LN,
      box,
      n: K,
      valid: 'kvalid',
      comment: "these keys' inverse ranges; each key keeps its own range's queries",
      lo: (a) => `ifs_${a}`,
      hi: (a) => `ife_${a}`,
      head: [qRows, (j) => `kv_${j}`],
      value: [oRows, (j) => `vv_${j}`],
      weight,
      axpys: [
        [oRows, (j) => `dva_${j}`, (j) => `p_${j}`],
        [qRows, (j) => `dka_${j}`, (j) => `ds_${j}`],
      ],
    });
    const epilogue = js
      .map(
        (j) => `  if (kvalid_${j}) {
    ${storeRow(R, `dka_${j}`, D, 'dk_buf', `kvrow_${j}`, 'D', (x) => `${T}(params.scale * ${x})`)}
    ${storeRow(R, `dva_${j}`, DV, 'dv_buf', `kvrow_${j}`, 'DV', (x) => `${T}(${x})`)}
  }`,
      )
      .join('\n');
    return { setup, walk, epilogue };
  }
  const multi = K > 1 ? dkvMultiKey() : undefined;
  const setup = multi ? multi.setup : `  ${ownRow(X, 'KT', 'k0', 'j', 'kvalid', LN)}
  var kvrow = 0u;
  ${R.decl('kv', V.DW)}
  ${R.decl('vv', V.DVW)}
  ${R.decl('dka', V.DW)}
  ${R.decl('dva', V.DVW)}
  // This key's exact inverse range per axis (group coordinates): queries [ifs, ife) attend it.
  ${per((a) => `var ifs_${a} = 0;
  var ife_${a} = 0;`)}
  if (kvalid) {
    ${per(
      (a) => `let y_${a} = ${origCoord(a, 'j')};
    let inv_${a} = ${naCall('inverse', a, `y_${a}`)};
    ifs_${a} = ${groupCoord(a, `inv_${a}.x`)};
    ife_${a} = ${groupCoord(a, `inv_${a}.y`)};`,
      '\n    ',
    )}
    kvrow = ${rowIndex('y', rank, 'params.heads_kv', 'hk')};
    ${loadRegs(R, V, 'kv', 'k_buf', 'kvrow', 'DW', V.DW)}
    ${loadRegs(R, V, 'vv', 'v_buf', 'kvrow', 'DVW', V.DVW)}
  }`;
  const singleQuery = `${recomputeDs({
    X,
    R,
    V,
    box,
    qkRows: qRows,
    dovRows: oRows,
    qk: (c, r) => [stagedAt(V, qRows, c), r('kv')],
    dov: (c, r) => [stagedAt(V, oRows, c), r('vv')],
    spec,
    lse: 'lse_sh[m]',
    delta: 'dl_sh[m]',
  })}
        ${accumulate(R, V, 'dva', 'p', oRows)}
        ${accumulate(R, V, 'dka', 'ds', qRows)}`;
  const querySteps = (): string =>
    unrolledStagedWalk(
      rank,
      QU,
      unrolledStep({
        X,
        R,
        V,
        box,
        U: QU,
        qkRows: qRows,
        dovRows: oRows,
        qk: (c, r, u) => [unitAt(V, qRows, c, u), r('kv')],
        dov: (c, r, u) => [unitAt(V, oRows, c, u), r('vv')],
        spec,
        lse: (u) => `lse_sh[mu${u}]`,
        delta: (u) => `dl_sh[mu${u}]`,
        axpys: [
          [oRows, 'dva', 'p'],
          [qRows, 'dka', 'ds'],
        ],
        tail: () => '',
      }),
      singleQuery,
    );
  const walk = multi ? multi.walk : `    if (kvalid) {
      // Exact inverse walk: per axis only the staged queries in [ifs, ife) (no window membership test).
      ${walkBounds(X, box, (a) => `ifs_${a}`, (a) => `ife_${a}`)}
      ${QU > 1 ? querySteps() : stagedWalk(rank, singleQuery)}
    }`;
  const epilogue = multi ? multi.epilogue : `  if (kvalid) {
    ${storeRow(R, 'dka', D, 'dk_buf', 'kvrow', 'D', (x) => `${T}(params.scale * ${x})`)}
    ${storeRow(R, 'dva', DV, 'dv_buf', 'kvrow', 'DV', (x) => `${T}(${x})`)}
  }`;
  const code = `${rowKernelHead(family, spec, bindings, uniforms, V, staged, BQ)}
var<workgroup> lse_sh: array<f32, ${BQ}>;
var<workgroup> dl_sh: array<f32, ${BQ}>;
var<workgroup> qrow_sh: array<i32, ${BQ}>;

${entryPoint(WGK)}
  ${decodeWorkgroup([['tile_lin', 'params.ntile_total'], ['gd', 'params.ngroups'], ['hk', 'params.heads_kv']], 'b')}
  let group_heads = params.heads / params.heads_kv;
  ${tileDecode(X, 'tk')}
  ${groupDecode(X)}
  ${tileOrigin(X, 'tk', 'KT', 'k0')}
  ${per(
    (a) => `let k1_${a} = ${tileLast(a, 'k0', 'KT')};
  let if_${a} = ${naCall('inverse', a, origCoord(a, 'k0'))};
  let il_${a} = ${naCall('inverse', a, origCoord(a, 'k1'))};
  let ibs_${a} = ${groupCoord(a, `if_${a}.x`)};
  let ibe_${a} = ${groupCoord(a, `il_${a}.y`)};
  let qlo_${a} = 0;
  let qhi_${a} = ${tilesOver(a, 'ibs', 'ibe', 'QT')};`,
  )}
${setup}
  for (var hh = 0u; hh < group_heads; hh++) {
    let h = hk * group_heads + hh;
    ${axisLoops(
      rank,
      'qt',
      'qlo',
      'qhi',
      `    workgroupBarrier();
    ${stageCoords(X, box)}
      if (ok) {
        ${A.map((a) => `let x_${a} = ${origCoord(a, 'i')};`).join('\n        ')}
        let row = ${rowIndex('x', rank, 'params.heads', 'h')};
        qrow_sh[e] = i32(row);
        lse_sh[e] = lse_buf[row];
        dl_sh[e] = delta_buf[row];
      } else {
        qrow_sh[e] = -1;
        lse_sh[e] = 0.0;
        dl_sh[e] = 0.0;
      }
    }
    workgroupBarrier();
    ${stageRows(V, box, qRows, 'qrow_sh')}
    ${stageRows(V, box, oRows, 'qrow_sh')}
    workgroupBarrier();
${walk}`,
      '\n',
      '\n  ',
    )}
  }
${epilogue}
}
`;
  return namedKernel(family, spec, code, WGK, bindings, uniforms, dkvWorkgroupBytes(rank, D, DV, spec.dtype, BQ));
}

export interface FusedBackwardDeltaSpec {
  readonly dimV: number;
  readonly dtype: GpuDType;
}

/** The separate delta pass (pass 1, compute_delta_with_torch = true). */
export function generateFusedBackwardDelta(spec: FusedBackwardDeltaSpec): NamedKernel {
  const T = wgslType(spec.dtype);
  const family = 'na-fused-backward-delta';
  const bindings = [bind('o_buf', 'read', T, 'output'), bind('do_buf', 'read', T, 'gradOutput'), bind('delta_buf', 'read_write', 'f32', 'delta')];
  const uniforms = fields('u32', ['rows']);
  const code = `${moduleHead(family, spec, { DV: u(spec.dimV), WG: u(WG_1D) }, bindings, uniforms)}
${entryPoint(WG_1D)}
  ${flatInvocation('row', 'params.rows')}
  var acc = 0.0;
  for (var c = 0u; c < DV; c++) { acc += f32(do_buf[row * DV + c]) * f32(o_buf[row * DV + c]); }
  delta_buf[row] = acc;
}
`;
  return namedKernel(family, spec, code, WG_1D, bindings, uniforms, 0);
}

export interface FusedBackwardDqReduceSpec {
  readonly dtype: GpuDType;
}

/** Sum of the per-split dQ partials in split order (pass 4). */
export function generateFusedBackwardDqReduce(spec: FusedBackwardDqReduceSpec): NamedKernel {
  const T = wgslType(spec.dtype);
  const family = 'na-fused-backward-dq-reduce';
  const bindings = [bind('part_buf', 'read', 'f32', 'dqPartial'), bind('dq_buf', 'read_write', T, 'gradQuery')];
  const uniforms = fields('u32', ['count', 'splits']);
  const code = `${moduleHead(family, spec, { WG: u(WG_1D) }, bindings, uniforms)}
${entryPoint(WG_1D)}
  ${flatInvocation('i', 'params.count')}
  var acc = 0.0;
  for (var s = 0u; s < params.splits; s++) { acc += part_buf[s * params.count + i]; }
  dq_buf[i] = ${T}(acc);
}
`;
  return namedKernel(family, spec, code, WG_1D, bindings, uniforms, 0);
}

export interface FusedBackwardRpbReduceSpec {
  readonly rank: NaRank;
  readonly kernelSize: readonly number[];
  readonly causal: readonly boolean[];
  readonly dtype: GpuDType;
}

/** Invocations per workgroup of the d_rpb reduce pass (8 cells x 32 block lanes). */
export const RPB_REDUCE_WORKGROUP = 256;
const RPB_REDUCE_CELLS = 8;
const RPB_REDUCE_LANES = RPB_REDUCE_WORKGROUP / RPB_REDUCE_CELLS;

/**
 * Bias cells whose per-block sums the partial pass keeps in workgroup memory (14 KiB of WebGPU's smallest limit,
 * 16 KiB, beside its sigma table); more go through storage.
 */
export const RPB_PARTIAL_SHARED_CELLS = 3584;

/**
 * Query rows per block of the d_rpb partial pass: blocks enough for about `RPB_PARTIAL_WORKGROUPS` workgroups over
 * the heads, at least 32 rows each.
 */
export function rpbQueryBlock(rows: number, heads: number): number {
  const blocks = Math.max(1, Math.min(Math.ceil(RPB_PARTIAL_WORKGROUPS / heads), Math.ceil(rows / 32)));
  return Math.ceil(rows / blocks);
}

/** Workgroups the d_rpb partial pass aims at (its walks are latency-bound: an H200 holds about 4000 of them). */
const RPB_PARTIAL_WORKGROUPS = 4096;

/** Queries whose dS loads the partial pass issues together before adding them in order. */
const RPB_PARTIAL_UNROLL = 4;

/** The partial pass's invocations: one per window slot (a power of two from 32 to 256; more slots loop). */
function rpbPartialWorkgroup(slots: number): number {
  let wg = 32;
  while (wg < slots && wg < 256) wg *= 2;
  return wg;
}

/**
 * d_rpb, pass 5a (`rpb-partial`): one workgroup per (head, block of `qblock` query rows of the flattened (batch,
 * token) order), one invocation per window slot t (looping where the window has more slots than invocations). Along
 * each axis a query's slot t holds the key at bias cell t + sigma, where sigma = (window start - query) / dilation
 * + K - 1 depends on the query alone (interior queries share one sigma; those near a border differ). Each invocation
 * sums its slots' dS over a run of queries with the same sigma (reading each dS row whole, coalesced, four queries'
 * loads in flight together), and where sigma changes adds the run to cell t + sigma of the block's sums (distinct
 * cells for distinct slots, so no two invocations meet; a barrier between runs). The queries' sigmas are computed
 * once per query into workgroup memory, with a word of "sigma changes here" flags per 32 queries that every
 * invocation reads uniformly (`workgroupUniformLoad`), so the runs' barriers sit in uniform control flow. The block's
 * cell sums then go to the partials. Runs and blocks are in query order, so the sums are deterministic.
 * (Session 20's first versions walked bias cells, (2K-1)^d per query instead of K^d slots, or had every invocation
 * decode every query's window: 0.12-2.5 ms on NAT-sized problems.)
 */
export function generateFusedBackwardRpbPartial(spec: FusedBackwardRpbReduceSpec): NamedKernel {
  const { rank } = spec;
  const family = 'na-fused-backward-rpb-partial';
  const A = axes(rank);
  const slots = product(spec.kernelSize);
  const ext = spec.kernelSize.map((k) => 2 * k - 1);
  const cells = product(ext);
  // Cell strides (row-major over the (2K-1) extents).
  const cstride = A.map((a) => product(ext.slice(a + 1)));
  const WG = rpbPartialWorkgroup(slots);
  const SPT = Math.ceil(slots / WG);
  const SHARED = cells <= RPB_PARTIAL_SHARED_CELLS;
  const bindings = [bind('ds_buf', 'read', 'f32', 'dsScratch'), bind('part_buf', 'read_write', 'f32', 'rpbPartial')];
  const uniforms = [...fields('u32', ['batch', 'heads', 'tokens', 'cells', 'qblock', 'nblocks']), ...axisUniforms(rank)];
  const consts: Record<string, string | number> = { RANK: u(rank), WG: u(WG), NSLOTS: u(slots), NCELLS: u(cells) };
  for (const a of A) consts[`KS_${a}`] = `${spec.kernelSize[a] as number}i`;
  const J = Array.from({ length: SPT }, (_, j) => j);
  const U = RPB_PARTIAL_UNROLL;
  const Us = Array.from({ length: U }, (_, q) => q);
  // The block's cell sums: workgroup memory, or the block's own partials in storage where the cells do not fit.
  const acc = (c: string): string => (SHARED ? `cellacc[${c}]` : `part_buf[idx * NCELLS + ${c}]`);
  // Through storage, the runs' barriers order the partials (storage) and the sigma table (workgroup memory) both.
  const barrier = SHARED ? 'workgroupBarrier();' : 'storageBarrier(); workgroupBarrier();';
  const flush = J.map((j) => `if (ok${j}) { ${acc(`tcell${j} + cur`)} += run${j}; }\n            run${j} = 0.0;`).join('\n            ');
  const code = `${moduleHead(family, spec, consts, bindings, uniforms)}
${windowFunctions(spec.kernelSize, spec.causal)}
${SHARED ? `var<workgroup> cellacc: array<f32, ${cells}>;\n` : ''}var<workgroup> sig_sh: array<u32, ${WG}>;
var<workgroup> flag_sh: array<u32, ${WG / 32}>;

${entryPoint(WG)}
  let idx = wid.x + wid.y * nwg.x;
  if (idx >= params.heads * params.nblocks) { return; }
  let h = idx / params.nblocks;
  let blk = idx % params.nblocks;
  let first = blk * params.qblock;
  let last = min(first + params.qblock, params.batch * params.tokens);
  for (var c = lid; c < NCELLS; c += WG) { ${acc('c')} = 0.0; }
  ${J.map(
    (j) => `let slot${j} = lid + ${j * WG}u;
  let ok${j} = slot${j} < NSLOTS;
  ${decodeRowMajor(`min(slot${j}, NSLOTS - 1u)`, `t${j}`, A.map((a) => `u32(KS_${a})`), `tr${j}`)}
  let tcell${j} = ${A.map((a) => `u32(t${j}_${a}) * ${cstride[a] as number}u`).join(' + ')};
  var run${j} = 0.0;`,
  ).join('\n  ')}
  // The current run's sigma (as a cell offset), whether a run has started, the previous sub-block's last sigma.
  var cur = 0u;
  var started = false;
  var prevsig = 0u;
  for (var base = first; base < last; base += WG) {
    let n = min(WG, last - base);
    ${barrier}
    if (lid < n) {
      ${decodeRowMajor('(base + lid) % params.tokens', 'x', A.map((a) => `u32(params.len_${a})`), 'xr')}
      sig_sh[lid] = ${A.map((a) => `u32((${naCall('window', a, `x_${a}`)}.x - x_${a}) / params.dil_${a} + KS_${a} - 1) * ${cstride[a] as number}u`).join(' + ')};
    }
    workgroupBarrier();
    if (lid * 32u < n) {
      var f = 0u;
      for (var q = 0u; q < 32u; q++) {
        let k = lid * 32u + q;
        if (k < n) {
          let before = select(prevsig, sig_sh[max(k, 1u) - 1u], k > 0u);
          if ((k == 0u && !started) || sig_sh[k] != before) { f = f | (1u << q); }
        }
      }
      flag_sh[lid] = f;
    }
    workgroupBarrier();
    let lastsig = sig_sh[n - 1u];
    for (var g = 0u; g * 32u < n; g++) {
      let flags = workgroupUniformLoad(&flag_sh[g]);
      for (var q0 = 0u; q0 < 32u; q0 += ${U}u) {
        // The loads of ${U} queries first (in flight together), then their runs in query order.
        ${Us.map(
          (q) => `let k${q} = g * 32u + q0 + ${q}u;
        let live${q} = k${q} < n;
        let row${q} = ((base + min(k${q}, n - 1u)) * params.heads + h) * NSLOTS;
        ${J.map((j) => `let v${q}_${j} = ds_buf[row${q} + min(slot${j}, NSLOTS - 1u)];`).join('\n        ')}`,
        ).join('\n        ')}
        ${Us.map(
          (q) => `if (live${q}) {
          if (((flags >> (q0 + ${q}u)) & 1u) != 0u) {
            if (started) {
            ${flush}
            }
            ${barrier}
            cur = sig_sh[k${q}];
            started = true;
          }
          ${J.map((j) => `run${j} += v${q}_${j};`).join('\n          ')}
        }`,
        ).join('\n        ')}
      }
    }
    prevsig = lastsig;
  }
  if (started) {
            ${flush}
  }
  ${barrier}
${SHARED ? `  for (var c = lid; c < NCELLS; c += WG) { part_buf[idx * NCELLS + c] = cellacc[c]; }\n` : ''}}
`;
  return namedKernel(family, spec, code, WG, bindings, uniforms, (SHARED ? 4 * cells : 0) + 4 * WG + 4 * (WG / 32));
}

/**
 * d_rpb, pass 5b (`rpb-reduce`): one workgroup per (head, 8 bias cells); its 32 lanes per cell sum every 32nd
 * block's partial (lane l: blocks l, l + 32, ...), then lane 0 sums the 32 lane sums in lane order. Fixed order,
 * so deterministic.
 */
export function generateFusedBackwardRpbReduce(spec: FusedBackwardRpbReduceSpec): NamedKernel {
  const T = wgslType(spec.dtype);
  const family = 'na-fused-backward-rpb-reduce';
  const WG = RPB_REDUCE_WORKGROUP;
  const bindings = [bind('part_buf', 'read', 'f32', 'rpbPartial'), bind('drpb_buf', 'read_write', T, 'gradRpb')];
  const uniforms = fields('u32', ['heads', 'cells', 'nblocks']);
  const code = `${moduleHead(family, spec, { WG: u(WG), CELLS_PER_WG: u(RPB_REDUCE_CELLS), LANES: u(RPB_REDUCE_LANES) }, bindings, uniforms)}
var<workgroup> lanes: array<f32, ${WG}>;

${entryPoint(WG)}
  let groups = (params.cells + CELLS_PER_WG - 1u) / CELLS_PER_WG;
  let idx = wid.x + wid.y * nwg.x;
  if (idx >= params.heads * groups) { return; }
  let h = idx / groups;
  let c = (idx % groups) * CELLS_PER_WG + lid % CELLS_PER_WG;
  let lane = lid / CELLS_PER_WG;
  var acc = 0.0;
  if (c < params.cells) {
    for (var blk = lane; blk < params.nblocks; blk += LANES) { acc += part_buf[(h * params.nblocks + blk) * params.cells + c]; }
  }
  lanes[lid] = acc;
  workgroupBarrier();
  if (lane == 0u && c < params.cells) {
    var sum = 0.0;
    for (var l = 0u; l < LANES; l++) { sum += lanes[l * CELLS_PER_WG + lid]; }
    drpb_buf[h * params.cells + c] = ${T}(sum);
  }
}
`;
  return namedKernel(family, spec, code, WG, bindings, uniforms, 4 * WG);
}

/** A kernel plus the names of the buffers it binds, in binding order. */
export type NamedKernel = GeneratedKernel & { readonly bufferNames: readonly string[] };

/** One dispatch of the plan. */
export interface BackwardPass {
  readonly kernel: NamedKernel;
  readonly uniforms: Readonly<Record<string, number>>;
  readonly workgroups: readonly [number, number, number];
}

/** Scratch buffers (f32) the plan needs, by name, in elements. */
export interface FusedBackwardPlan {
  readonly passes: readonly BackwardPass[];
  readonly scratch: Readonly<Record<string, number>>;
}

function fold(total: number, max: number): [number, number, number] {
  if (total <= max) return [total, 1, 1];
  const y = Math.ceil(total / max);
  return [Math.ceil(total / y), y, 1];
}

/** Build every dispatch of the backward for a validated problem and a config (pure; the gpu package binds buffers). */
export function planFusedBackward(
  problem: FusedBackwardProblem & { readonly dtype: GpuDType },
  config: FusedBackwardConfig,
  maxWorkgroupsPerDimension = 65535,
): FusedBackwardPlan {
  const { rank, spatial, params } = problem;
  const dtype = problem.dtype;
  const baked: BakedProblem = {
    rank,
    kernelSize: [...params.kernelSize],
    causal: [...params.isCausal],
    dim: problem.dim,
    dimV: problem.dimV,
    dtype,
  };
  // Lane split: set only when > 1, so single-lane specs (and keys) are unchanged.
  const laneSpec = config.lanes !== undefined && config.lanes > 1 ? { lanes: config.lanes } : {};
  const tokens = product(spatial);
  const rows = problem.batch * tokens * problem.heads;
  const ngroups = product(params.dilation);
  const S = product(config.numSplitsKey);
  const partial = S > 1;
  const axisU = axisUniformValues(problem);
  const ntq = fusedBackwardTilesPerAxis(spatial, params.dilation, config.queryTile);
  const nkt = fusedBackwardTilesPerAxis(spatial, params.dilation, config.keyTile);
  const passes: BackwardPass[] = [];
  const scratch: Record<string, number> = { delta: rows };
  const deltaMode = config.computeDeltaWithTorch ? 'read' : 'fused';
  if (config.computeDeltaWithTorch) {
    passes.push({
      kernel: generateFusedBackwardDelta({ dimV: problem.dimV, dtype }),
      uniforms: { rows },
      workgroups: fold(Math.ceil(rows / WG_1D), maxWorkgroupsPerDimension),
    });
  }
  const dqTotal = problem.batch * problem.heads * ngroups * product(ntq) * S;
  const dqU: Record<string, number> = {
    batch: problem.batch,
    heads: problem.heads,
    heads_kv: problem.headsKv,
    tokens,
    rows,
    total: dqTotal,
    ntile_total: product(ntq),
    splits: S,
    ngroups,
    scale: problem.scale,
    ...axisU,
  };
  for (const a of axes(rank)) {
    dqU[`ntile_${a}`] = ntq[a] as number;
    dqU[`spl_${a}`] = config.numSplitsKey[a] as number;
  }
  if (partial) scratch.dqPartial = S * rows * problem.dim;
  if (problem.hasGradRpb) scratch.dsScratch = rpbDsScratchElements(problem);
  passes.push({
    kernel: generateFusedBackwardDq({
      ...baked,
      queryTile: [...config.queryTile],
      keyTile: [...config.keyTile],
      rpb: problem.hasRpb,
      gradRpb: problem.hasGradRpb,
      delta: deltaMode,
      partial,
      ...laneSpec,
      ...(config.queriesPerInvocation !== undefined && config.queriesPerInvocation > 1 ? { queriesPerInvocation: config.queriesPerInvocation } : {}),
      ...(config.keyUnroll !== undefined && config.keyUnroll !== 1 ? { keyUnroll: config.keyUnroll } : {}),
    }),
    uniforms: dqU,
    workgroups: fold(dqTotal, maxWorkgroupsPerDimension),
  });
  const dkvTotal = problem.batch * problem.headsKv * ngroups * product(nkt);
  const dkvU: Record<string, number> = {
    batch: problem.batch,
    heads: problem.heads,
    heads_kv: problem.headsKv,
    tokens,
    total: dkvTotal,
    ntile_total: product(nkt),
    ngroups,
    scale: problem.scale,
    ...axisU,
  };
  for (const a of axes(rank)) dkvU[`ntile_${a}`] = nkt[a] as number;
  passes.push({
    kernel: generateFusedBackwardDkv({
      ...baked,
      queryTile: [...config.queryTile],
      keyTile: [...config.keyTile],
      rpb: problem.hasRpb,
      ...laneSpec,
      ...(config.keysPerInvocation !== undefined && config.keysPerInvocation > 1 ? { keysPerInvocation: config.keysPerInvocation } : {}),
      ...(config.queryUnroll !== undefined && config.queryUnroll !== 1 ? { queryUnroll: config.queryUnroll } : {}),
    }),
    uniforms: dkvU,
    workgroups: fold(dkvTotal, maxWorkgroupsPerDimension),
  });
  if (partial) {
    const count = rows * problem.dim;
    passes.push({
      kernel: generateFusedBackwardDqReduce({ dtype }),
      uniforms: { count, splits: S },
      workgroups: fold(Math.ceil(count / WG_1D), maxWorkgroupsPerDimension),
    });
  }
  if (problem.hasGradRpb) {
    const rpbPlan = planRpbReducePasses(problem, dtype, maxWorkgroupsPerDimension);
    scratch.rpbPartial = rpbPlan.partialElements;
    passes.push(...rpbPlan.passes);
  }
  return { passes, scratch };
}

/** Elements (f32) of the dS scratch the d_rpb passes read: one row of prod(K) window slots per query row. */
export function rpbDsScratchElements(problem: FusedBackwardProblem): number {
  return problem.batch * product(problem.spatial) * problem.heads * product(problem.params.kernelSize);
}

/** The sizes, uniforms and dispatch sizes of a problem's d_rpb passes (`planRpbReducePasses` without the kernels). */
export interface RpbReduceLayout {
  /** The passes' kernel spec. */
  readonly spec: FusedBackwardRpbReduceSpec;
  readonly partial: { readonly uniforms: Readonly<Record<string, number>>; readonly workgroups: readonly [number, number, number] };
  readonly reduce: { readonly uniforms: Readonly<Record<string, number>>; readonly workgroups: readonly [number, number, number] };
  /** f32 elements of the block partials' scratch (`rpbPartial`). */
  readonly partialElements: number;
}

/** The d_rpb passes' layout for a problem with gradRpb: blocks of queries, uniforms, workgroups, scratch size. */
export function rpbReduceLayout(problem: FusedBackwardProblem, dtype: GpuDType, maxWorkgroupsPerDimension = 65535): RpbReduceLayout {
  const { rank, spatial, params } = problem;
  const tokens = product(spatial);
  const cells = product(params.kernelSize.map((k) => 2 * k - 1));
  const rows = problem.batch * tokens;
  const qblock = rpbQueryBlock(rows, problem.heads);
  const nblocks = Math.ceil(rows / qblock);
  return {
    spec: { rank, kernelSize: [...params.kernelSize], causal: [...params.isCausal], dtype },
    partial: {
      uniforms: { batch: problem.batch, heads: problem.heads, tokens, cells, qblock, nblocks, ...axisUniformValues(problem) },
      workgroups: fold(problem.heads * nblocks, maxWorkgroupsPerDimension),
    },
    reduce: { uniforms: { heads: problem.heads, cells, nblocks }, workgroups: fold(problem.heads * Math.ceil(cells / RPB_REDUCE_CELLS), maxWorkgroupsPerDimension) },
    partialElements: problem.heads * nblocks * cells,
  };
}

/**
 * The d_rpb passes (`generateFusedBackwardRpbPartial`, then `generateFusedBackwardRpbReduce`) of a problem with
 * gradRpb, reading the dS scratch (in window order, `rpbDsScratchElements`) that the plain dq kernel or the
 * tensor-core one (`gradRpb`) wrote, through an f32 scratch of `partialElements` block partials (`rpbPartial`).
 */
export function planRpbReducePasses(problem: FusedBackwardProblem, dtype: GpuDType, maxWorkgroupsPerDimension = 65535): { passes: [BackwardPass, BackwardPass]; partialElements: number } {
  const layout = rpbReduceLayout(problem, dtype, maxWorkgroupsPerDimension);
  return {
    passes: [
      { kernel: generateFusedBackwardRpbPartial(layout.spec), ...layout.partial },
      { kernel: generateFusedBackwardRpbReduce(layout.spec), ...layout.reduce },
    ],
    partialElements: layout.partialElements,
  };
}
