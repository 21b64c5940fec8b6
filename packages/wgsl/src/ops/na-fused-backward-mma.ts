/**
 * Fused neighborhood-attention backward on tensor cores (`fusedBackwardMma` in @natten-web/gpu, which
 * `fusedBackward` runs by default for f16 and f32 on adapters with subgroup matrices): the multi-subgroup structure of the mma forward (na-fused-forward-mma.ts) applied to the two
 * gradient kernels of the plain backward (na-fused-backward.ts), f16 inputs, or f32 inputs as hi and lo f16 halves
 * (`split`, three multiplies per product, as the forward's split). Deterministic: each kernel owns its
 * output rows, no atomics. With relative positional bias (`hasRpb`) both kernels add the bias to the recomputed
 * logits, and the dq kernel (`gradRpb`) writes each in-window dS (f32) to the plain backward's dS scratch in window
 * order, which the plain backward's `rpb-reduce` pass sums in a fixed order into d_rpb.
 *
 * 1. `dq` (one workgroup per query tile of 16 x NSG queries, decoded and boxed as the forward): its prologue computes
 *    delta = rowsum(dO * O) per query (two lanes per row) and writes it for pass 2; Q and dO fragments are gathered
 *    once; per chunk of the union key box it stages K, V and the keys' coordinates, computes S = Q K^T and
 *    dP = dO V^T per subgroup into two scratches, then per element P = exp2(S * scale log2(e) - lse log2(e)) inside
 *    the row's window (else 0) and dS = P (dP - delta) (f16), and accumulates dQ += dS K in result fragments;
 *    dQ * scale is written at the end.
 * 2. `dkv` (one workgroup per key tile of 16 x NSG keys of one KV head): the union of the tile's exact inverse
 *    neighbourhoods (`na_inverse_a`) is the query box; over one flattened walk of (query head of the KV head's GQA
 *    group, chunk) it stages chunks of Q, dO, and each query's coordinates, lse and delta (loaded into registers
 *    while the previous step is multiplied: register prefetch, as the dq kernel's key chunks), computes S^T = K Q^T
 *    and dP^T = V dO^T, then P^T and dS^T masked by "key inside the query's window", tested as "query inside the
 *    key's exact inverse neighbourhood" (one staged vec4 per query; until session 11 each query's window, two), and
 *    accumulates dV += P^T dO and dK += dS^T Q.
 * Both stage through workgroup memory like the forward, and a subgroup skips the work of a chunk outside the
 * box-linear span of its rows' windows (dq) or inverse windows (dkv).
 * Same assumptions as the forward: 32-wide subgroups that are aligned runs of local_invocation_index, and
 * `chromium.subgroup_matrix_uniformity` off for offsets that depend on the subgroup index.
 */
import { NattenArgumentError, type NaRank, product } from '@natten-web/core';
import { type GeneratedKernel, kernelKey, type StorageBinding, type UniformField, uniformDecl } from '../kernel.ts';
import { rpbIndexExpr, rpbWindowProblem, tokenOf, windowSlot } from '../snippets/fused-index.ts';
import { windowFunctions } from '../snippets/window.ts';
import { forwardWorkgroupPrologue, fusedForwardUniformFields, rowLoader, workgroupTileDecode } from './na-fused-forward.ts';
import { COORD, MMA_FRAGMENT, MMA_HEADER, MMA_SUBGROUP_SIZE, type MmaLayout, mmaBindingDecls, mmaBoxCursor, mmaDecodeTile, mmaInWindow, mmaCoordTable, mmaLayout, mmaPackedCoords, mmaPassRows, mmaQueryRowWindow, mmaShapeProblem, mmaStagedKeyLoop, mmaSubgroupSpan, stagingPartGuard, store4, BOX_DIVMOD_FN, mmaFastDivide, mmaGatherPasses, mmaScratchEpilogue, mmaMulAdd, PACK8_FN, SPLIT_BACKWARD_BINDINGS, SPLIT_SCALE_FN, splitBackwardScales, storeSplit4, type StagingShape, stagingFetchCounts, stagingFetchZero, stagingStore, stagingUnits, WIDE_KV_LOADERS, withUnitSteps } from './na-fused-forward-mma.ts';

const GEN = 15;
const F = MMA_FRAGMENT;
const range = (n: number): number[] => Array.from({ length: n }, (_, i) => i);
const LEFT = `subgroup_matrix_left<f16, ${F}, ${F}>`;
const RIGHT = `subgroup_matrix_right<f16, ${F}, ${F}>`;
const RESULT = `subgroup_matrix_result<f32, ${F}, ${F}>`;

/** Chunk sizes (keys for dq, queries for dkv) the backward compiles. */
export const MMA_BACKWARD_CHUNKS = [16, 32] as const;

/** A tensor-core backward kernel spec (both kernels): `tile` is the dq query tile or the dkv key tile. */
export interface FusedBackwardMmaSpec {
  readonly rank: NaRank;
  readonly kernelSize: readonly number[];
  readonly causal: readonly boolean[];
  readonly dim: number;
  readonly dimV: number;
  /** Rows per axis a workgroup owns (queries in dq, keys in dkv); product 16 x subgroups. */
  readonly tile: readonly number[];
  /** Keys (dq) or queries (dkv) staged per step. */
  readonly chunk: number;
  readonly subgroups: number;
  /**
   * f32 scratch and f16 P/dS rows of exactly the chunk, without bank-conflict padding (less workgroup memory, as the
   * forward's `tightScratch`; on an H200 the dkv kernel with 2 subgroups ran 1.2x faster with it). Absent = padded
   * rows.
   */
  readonly tightScratch?: boolean;
  /**
   * The dq kernel's S and dP through one f32 scratch instead of two: each lane reads its S values into registers, a
   * barrier, then dP is stored over S (two more barriers per chunk, rows x scratch row f32 less workgroup memory).
   * H200, the dq kernel alone: 2-D 128x128 K=7 192 -> 156 us, 3-D 16x32x32 K=3x7x7 309 -> 300 us; the same in the
   * dkv kernel ran 1.02-1.06x slower, so the dkv kernel has no such option. Absent = two scratches.
   */
  readonly sharedScratch?: boolean;
  /**
   * The dq kernel's dS (f16) written over the chunk's staged V rows, dead once every subgroup has passed the barrier
   * after dP = dO V^T, instead of into its own array (rows x dS-row bytes less workgroup memory). Needs the V rows to
   * hold dS (16 x subgroups x dS row <= chunk x V row: up to 4 subgroups at 16-row chunks and head dim 64). Alone no
   * faster (H200, session 11: 3-D dq 295.1 -> 294.7 us); since session 25 the float16 default pairs it with `wideS`,
   * which the freed memory pays for. Absent = dS in its own array.
   */
  readonly dsOverV?: boolean;
  /**
   * Two subgroups per 16 rows, each owning half of the head dims: subgroup 2b + h multiplies head-dim half h of
   * block b's rows (its fragments of Q and dO, or K and V, and half of the dQ, or dK and dV, accumulators), S and dP
   * are the sums of the pair's two partial products (added in the per-element step, which each subgroup runs on
   * half of the chunk's columns), and both read the block's P/dS. Half the registers per subgroup for the same
   * matrix work: for head dim 128 the dkv kernel otherwise holds 16 accumulator fragments and 16 operand fragments
   * per subgroup. The tile has 8 x subgroups rows; needs head dims that are multiples of 32; not with
   * `sharedScratch` or `dsOverV`. Opt-in: on an H200 (session 11) 1.1-1.7x slower per kernel on every problem timed,
   * FLUX-like's head dim 128 included (whole backward 191 -> 285 ms). Absent = one subgroup per 16 rows.
   */
  readonly headSplit?: boolean;
  /**
   * Staged coordinates packed into one u32 per staged row (see `FusedForwardMmaSpec.packedCoords`): the dq
   * kernel's key coordinates and the dkv kernel's query coordinates, as offsets in their union box. Ranks 2 and 3;
   * the caller guarantees every group extent is at most `mmaPackedMaxExtent(rank)`. Absent = a vec4<i32> per row.
   */
  readonly packedCoords?: boolean;
  /**
   * The f32 scratch rows (S, dP) padded by 4 floats while the f16 P/dS rows stay exactly the chunk, with
   * `tightScratch` (as the forward's `padS`). Absent = both as `tightScratch` says.
   */
  readonly padS?: boolean;
  /**
   * The f32 scratch rows (S, dP) of the chunk plus 8 floats, in either layout (as the forward's `wideS`: its matrix
   * stores are cheaper into such rows). Not with `padS`. Absent = as `tightScratch` and `padS` say.
   */
  readonly wideS?: boolean;
  /**
   * The dkv kernel's S^T scratch (the first of its two f32 scratches) with rows of the chunk plus 8 floats, its dP^T
   * scratch as `tightScratch` and `padS` say: the cheaper stores of `wideS` for half its extra memory (at 2 subgroups
   * and 16-row chunks, with exact dP^T rows, what `padS` takes). dkv kernel only; not with `wideS`, `leanScratch` or
   * `headSplit`. Absent = both scratches alike.
   */
  readonly wideFirst?: boolean;
  /**
   * The dq kernel decodes each staged key's box index (3-D) by float reciprocal (`box_divmod`, as the forward's
   * `fastDivide`); the caller guarantees fewer than `MMA_FAST_DIVIDE_ROWS` key-box rows. Absent = integer division.
   */
  readonly fastDivide?: boolean;
  /** Dilation and stride 1 on every axis, compiled in (`withUnitSteps`); absent = read from the uniforms. */
  readonly unitSteps?: boolean;
  /**
   * The staged rows with 16-byte loads (eight halves each), as the forward's `wideLoads`: half the staging loads and
   * stores per thread. The dq kernel's key chunks' K and V rows (`key` and `value` bound as vec4<u32>), the dkv
   * kernel's query chunks' Q and dO rows (`query` and `grad_output`). float16 only. Absent = vec4<f16> loads.
   */
  readonly wideLoads?: boolean;
  /**
   * The dkv kernel's lean layout: one f32 scratch (S^T, read into registers, then dP^T over it, as the dq kernel's
   * `sharedScratch`) and one f16 array (P^T for dV += P^T dO, then dS^T over it for dK += dS^T Q): four more
   * barriers per step and twice the epilogue rounds, for about 6 KiB less workgroup memory at 64 rows, so 4
   * subgroups (64-key tiles) fit as many workgroups per SM as 2 do without it. Not with `headSplit`. Absent = two
   * scratches and two arrays.
   */
  readonly leanScratch?: boolean;
  /**
   * Relative positional bias: both kernels add rpb[h, key - query + K - 1 per axis] to each in-window logit before
   * the softmax is recomputed (bound as `rpb` after their other bindings). Needs a non-causal window and odd kernel
   * sizes (NATTEN's rule), not with `packedCoords`.
   */
  readonly hasRpb?: boolean;
  /**
   * The dq kernel writes each in-window dS (f32, before its f16 rounding) to `ds_scratch[query row x prod(K) +
   * slot]` (the plain backward's dS scratch layout, slot = the key's index in the query's window), for the d_rpb
   * passes (`planRpbReducePasses`). Needs `hasRpb`; dq kernel only.
   */
  readonly gradRpb?: boolean;
  /**
   * float32 tensors on the f16 tensor cores, as the mma forward's split: Q, K, V and dO scaled by a power of two per
   * tensor (from max |x| in `scales` = max |Q|, |K|, |V|, |dO|, |O|, one abs-max dispatch, bound after the kernel's
   * other bindings), each staged or gathered value as hi (its mantissa cut to f16's) and
   * lo = f16(x - hi), every product hi hi + hi lo + lo hi into f32; P (scale 1) and dS likewise, dS scaled by its
   * bound D_v max |dO| (max |V| + max |O|) (|dP| <= D_v max |dO| max |V|, |delta| <= D_v max |dO| max |O|; O may be a
   * merged output, as with extra KV tokens, so max |V| alone does not bound delta). Gradients are written as f32.
   * Not with `headSplit`, `dsOverV` or `wideLoads`.
   */
  readonly split?: boolean;
}

function layout(spec: Pick<FusedBackwardMmaSpec, 'dim' | 'dimV' | 'chunk' | 'subgroups' | 'tightScratch' | 'padS' | 'wideS' | 'wideFirst'>): MmaLayout {
  return mmaLayout(spec.dim, spec.dimV, spec.chunk, spec.subgroups, spec.tightScratch === true, spec.padS === true, spec.wideS === true || spec.wideFirst === true);
}

/** The row stride (floats) of the dP (dP^T) scratch: the S scratch's, or with `wideFirst` the unwidened layout's. */
function dpStride(spec: Pick<FusedBackwardMmaSpec, 'dim' | 'dimV' | 'chunk' | 'subgroups' | 'tightScratch' | 'padS' | 'wideS' | 'wideFirst'>): number {
  return spec.wideFirst === true ? layout({ ...spec, wideFirst: false }).lds : layout(spec).lds;
}

/** The sizes both kernels derive from a spec: workgroup size, vec4 and fragment counts, staging threads per row. */
function sizes(spec: FusedBackwardMmaSpec) {
  const WG = MMA_SUBGROUP_SIZE * spec.subgroups;
  const split = spec.headSplit === true;
  return {
    r: spec.rank,
    /** Two subgroups per 16 rows (`headSplit`). */
    split,
    /** Rows of the tile (16 per subgroup, or per pair of subgroups with `headSplit`). */
    ROWS: (split ? F / 2 : F) * spec.subgroups,
    /** Head-dim halves per subgroup's fragments: 2 with `headSplit` (each subgroup holds D16 / HS of them). */
    HS: split ? 2 : 1,
    /** WGSL ` + name` (a head-dim half's column offset) with `headSplit`, else empty. */
    hoff: (name: string): string => (split ? ` + ${name}` : ''),
    axes: range(spec.rank),
    L: layout(spec),
    WG,
    D4: spec.dim / 4,
    DV4: spec.dimV / 4,
    D16: spec.dim / F,
    DV16: spec.dimV / F,
    C16: spec.chunk / F,
    /** Invocations staging one chunk row. */
    TPR: WG / spec.chunk,
  };
}

/** Bytes of workgroup memory of either kernel (staging, two f32 scratches, P/dS, per-chunk row tables). */
export function fusedBackwardMmaWorkgroupBytes(
  spec: Pick<FusedBackwardMmaSpec, 'rank' | 'dim' | 'dimV' | 'chunk' | 'subgroups' | 'tightScratch' | 'sharedScratch' | 'dsOverV' | 'headSplit' | 'packedCoords' | 'padS' | 'wideS' | 'wideFirst' | 'leanScratch' | 'split' | 'hasRpb' | 'gradRpb'>,
  kernel: 'dq' | 'dkv',
): number {
  const l = layout(spec);
  const coords = stagedCoords(spec, kernel) ? mmaCoordTable(spec.packedCoords === true, kernel === 'dq' ? 'kc_sh' : 'qc_sh').bytes(spec.chunk) : 0;
  const tables = kernel === 'dq' ? coords : coords + 2 * 4 * spec.chunk;
  // P/dS rows: one per tile row (half the scratch's rows with headSplit, whose scratches hold both partials).
  const pdsRows = spec.headSplit === true ? l.rows / 2 : l.rows;
  const lean = kernel === 'dkv' && spec.leanScratch === true;
  const pds = kernel === 'dq' ? (spec.dsOverV === true ? 0 : 2 * pdsRows * l.ldp) : (lean ? 1 : 2) * 2 * pdsRows * l.ldp;
  const scratches = (kernel === 'dq' && spec.sharedScratch === true) || lean ? 1 : 2;
  // The split keeps lo halves beside the staging area and the P/dS arrays.
  const halves = spec.split === true ? 2 : 1;
  // With wideFirst the second scratch (dP^T) keeps the unwidened rows.
  const scratchFloats = scratches === 2 ? l.lds + dpStride(spec) : l.lds;
  return halves * (2 * l.stageElems + pds) + 4 * l.rows * scratchFloats + tables + 16;
}

/**
 * Whether a kernel keeps its staged rows' coordinate table (`kc_sh` in dq, `qc_sh` in dkv): ranks 2 and 3 always
 * (window tests), rank 1 only where the bias (or dq's dS slots for d_rpb) looks coordinates up; elsewhere the 1-D
 * mask is arithmetic on box indices, and the table and its stores per chunk are left out (H200, session 26, same
 * call: 1-D L=4096 K=127 dq 28.7 -> 28.3 us, dkv 44.0 -> 43.2; 16 heads dq 61.5 -> 60.8, dkv 89.5 -> 88.1).
 */
function stagedCoords(spec: Pick<FusedBackwardMmaSpec, 'rank' | 'hasRpb' | 'gradRpb'>, kernel: 'dq' | 'dkv'): boolean {
  return spec.rank > 1 || spec.hasRpb === true || (kernel === 'dq' && spec.gradRpb === true);
}

/** Why a spec cannot be generated, or undefined. */
export function fusedBackwardMmaSpecProblem(spec: FusedBackwardMmaSpec): string | undefined {
  const shape = mmaShapeProblem({ ...spec, chunks: MMA_BACKWARD_CHUNKS, names: { tileField: 'tile', tile: 'tile', rows: 'rows', chunk: 'chunk' } });
  if (shape !== undefined) return shape;
  const l = layout(spec);
  if (spec.split === true && (spec.headSplit === true || spec.dsOverV === true || spec.wideLoads === true)) return 'split (float32) does not combine with headSplit, dsOverV or wideLoads';
  if (mmaPassRows(l, Math.max(l.ldk, l.ldv)) < F) return `head dims ${spec.dim}/${spec.dimV} are too large for chunk ${spec.chunk}`;
  if (spec.dsOverV === true && l.rows * l.ldp > spec.chunk * l.ldv) return `dsOverV: dS (${l.rows} rows of ${l.ldp}) does not fit the chunk's V rows (${spec.chunk} of ${l.ldv})`;
  if (spec.packedCoords === true && spec.rank < 2) return `packedCoords needs rank 2 or 3 (rank ${spec.rank})`;
  if (spec.padS === true && spec.tightScratch !== true) return 'padS needs tightScratch (the padded layout already pads the scratch)';
  if (spec.padS === true && spec.wideS === true) return 'padS and wideS both widen the scratch rows (by 4 and by 8 floats); take one';
  if (spec.wideFirst === true && (spec.wideS === true || spec.leanScratch === true || spec.headSplit === true)) return 'wideFirst widens the first of two scratches: not with wideS (both widened), leanScratch (one scratch) or headSplit';
  if (spec.gradRpb === true && spec.hasRpb !== true) return 'gradRpb needs hasRpb';
  if (spec.hasRpb === true) {
    const why = rpbWindowProblem(spec);
    if (why !== undefined) return why;
    if (spec.packedCoords === true) return 'packedCoords does not combine with hasRpb (the bias needs each staged row\'s coordinates)';
  }
  if (spec.headSplit === true) {
    if (spec.dim % (2 * F) !== 0 || spec.dimV % (2 * F) !== 0) return `headSplit: head dims ${spec.dim}/${spec.dimV} must be multiples of ${2 * F} (a whole number of fragments per half)`;
    if (spec.sharedScratch === true || spec.dsOverV === true || spec.leanScratch === true) return 'headSplit does not combine with sharedScratch, dsOverV or leanScratch (the scratch holds both partial products)';
  }
  return undefined;
}

/**
 * The module text both kernels share up to the workgroup variables: header, tile and head-dim constants, bindings,
 * uniforms, window functions and the q/k/v/dO row loaders.
 */
function moduleHead(key: string, spec: FusedBackwardMmaSpec, bindings: readonly StorageBinding[], uniforms: readonly UniformField[], extraConsts: string, kernel: 'dq' | 'dkv'): string {
  const L = layout(spec);
  const WIDE = spec.wideLoads === true;
  // 16-byte staging loads: of the staged K and V rows in dq, of the staged Q and dO rows in dkv.
  const wideRows = WIDE ? (kernel === 'dq' ? ['key', 'value'] : ['query', 'grad_output']) : [];
  const SPLIT = spec.split === true;
  const T = SPLIT ? 'f32' : 'f16';
  return `// ${key}
${MMA_HEADER}
${range(spec.rank)
  .map((a) => `const TILE_${a}: u32 = ${spec.tile[a]}u;`)
  .join('\n')}
${extraConsts}const HEAD_DIM: u32 = ${spec.dim}u;
const HEAD_DIM_V: u32 = ${spec.dimV}u;
const LDK: u32 = ${L.ldk}u;
const LDV: u32 = ${L.ldv}u;
const LDS: u32 = ${L.lds}u;
${spec.wideFirst === true ? `const LDD: u32 = ${dpStride(spec)}u;\n` : ''}const LDP: u32 = ${L.ldp}u;
const LOG2E: f32 = 1.4426950408889634;

${mmaBindingDecls(bindings, T, SPLIT ? [] : ['grad_query', 'grad_key', 'grad_value', ...wideRows])}
${SPLIT ? SPLIT_SCALE_FN : PACK8_FN}
${uniformDecl(uniforms, bindings.length)}
${windowFunctions(spec.kernelSize, spec.causal)}
${
  WIDE && kernel === 'dkv'
    ? WIDE_QDO_LOADERS
    : `${rowLoader('load_q', 'query', spec.dim, true, T)}
${rowLoader('load_do', 'grad_output', spec.dimV, true, T)}`
}
${
  WIDE && kernel === 'dq'
    ? WIDE_KV_LOADERS
    : `${rowLoader('load_k', 'key', spec.dim, true, T)}
${rowLoader('load_v', 'value', spec.dimV, true, T)}`
}

var<workgroup> st: array<f16, ${L.stageElems}>;${SPLIT ? `\nvar<workgroup> stlo: array<f16, ${L.stageElems}>;` : ''}
var<workgroup> s_sh: array<f32, ${L.rows * L.lds}>;${spec.sharedScratch === true || spec.leanScratch === true ? '' : `
var<workgroup> dp_sh: array<f32, ${L.rows * dpStride(spec)}>;`}`;
}

/** WGSL of the dkv kernel's Q and dO row loaders of 16-byte staging loads (`wideLoads`): eight halves each. */
const WIDE_QDO_LOADERS = `fn load_q8(base: u32, c: u32) -> vec4<u32> { return query[base + c]; }
fn load_do8(base: u32, c: u32) -> vec4<u32> { return grad_output[base + c]; }`;

/**
 * The float32 split's scales (`splitBackwardScales`) and the factor that undoes Q's and K's on S, times the softmax's
 * scale log2(e) (`sl2`: S = Q K^T in the dq kernel, S^T = K Q^T in the dkv kernel).
 */
const SPLIT_PROLOGUE = (dimV: number): string => `  // The split's per-tensor power-of-two scales; S, dP and the gradients are unscaled after.
${splitBackwardScales(dimV)}
  let sl2 = params.scale_log2 / (scq * sck);`;

/** Declarations of `n` left fragments `${name}_kk` (and `${name}_lo_kk` with the split). */
function leftDecls(name: string, n: number, split: boolean): string {
  return range(n)
    .map((kk) => `  var ${name}_${kk} = ${LEFT}();${split ? `\n  var ${name}_lo_${kk} = ${LEFT}();` : ''}`)
    .join('\n');
}

/** The lane's position: subgroup row base, lane, half (two lanes per row) and tile row. */
const LANE_POSITION = `  let rbase = (lid / ${MMA_SUBGROUP_SIZE}u) * ${F}u;
  let lane = lid % ${MMA_SUBGROUP_SIZE}u;
  let hf = lane % 2u;
  let row = rbase + lane / 2u;`;

/**
 * The lane's position with `headSplit`: its subgroup's rows of the f32 scratches (`rbase`), head-dim half `hd` and
 * the column offsets of that half (`hoff_d`, `hoff_dv`), the block's first tile row (`pbase`, also its first P/dS
 * row), lane, half (two lanes per row) and tile row.
 */
function laneSplitPosition(dim: number, dimV: number): string {
  return `  let sg = lid / ${MMA_SUBGROUP_SIZE}u;
  let rbase = sg * ${F}u;
  let hd = sg % 2u;
  let hoff_d = hd * ${dim / 2}u;
  let hoff_dv = hd * ${dimV / 2}u;
  let pbase = (sg / 2u) * ${F}u;
  let lane = lid % ${MMA_SUBGROUP_SIZE}u;
  let hf = lane % 2u;
  let row = pbase + lane / 2u;`;
}


/** Decode a tile-linear index into per-axis offsets over the `TILE_a` constants. */
function decodeTile(r: number, idx: string, p: string, ind: string): string {
  return mmaDecodeTile(r, idx, p, ind, 'TILE');
}

/**
 * The workgroup's tile rows as buffer rows, for gathering fragments: `tile_row(rr)` (token x heads + head of tile row
 * rr, or 0xffffffff past the group's extent) and `load_or_zero(which, row, width, c)` (vec4 c of loader 0 or 1's
 * row, zero for 0xffffffff). `init` copies the prologue's names into private variables the functions read.
 */
function tileRows(r: NaRank, o: { readonly first: string; readonly head: string; readonly heads: string; readonly loaders: readonly [string, string]; readonly type?: 'f16' | 'f32' }): { decls: string; init: string } {
  const T = o.type ?? 'f16';
  const axes = range(r);
  return {
    decls: `var<private> p_tok_base: u32;
var<private> p_head: u32;
var<private> p_g: vec4<i32>;
var<private> p_first: vec4<i32>;
var<private> p_n: vec4<i32>;

// Buffer row (token x heads + head) of tile row rr, or the invalid marker 0xffffffff past the group's extent.
fn tile_row(rr: u32) -> u32 {
${decodeTile(r, 'rr', 'tr', '  ')}
  if (${axes.map((a) => `p_first[${a}] + tr_${a} >= p_n[${a}]`).join(' || ')}) { return 0xffffffffu; }
  return (p_tok_base + ${tokenOf(r, (a) => `(p_first[${a}] + tr_${a}) * params.dil_${a} + p_g[${a}]`)}) * params.${o.heads} + p_head;
}
fn load_or_zero(which: u32, rowIdx: u32, width: u32, c: u32) -> vec4<${T}> {
  if (rowIdx == 0xffffffffu) { return vec4<${T}>(0.0); }
  if (which == 0u) { return ${o.loaders[0]}(rowIdx * width, c); }
  return ${o.loaders[1]}(rowIdx * width, c);
}`,
    init: `  p_tok_base = tok_base;
  p_head = ${o.head};
${axes.map((a) => `  p_g[${a}] = g_${a};\n  p_first[${a}] = ${o.first}_${a};\n  p_n[${a}] = n_${a};`).join('\n')}
`,
  };
}

/**
 * Gather `frags` per tile row into left fragments `${name}_kk` through the staging area `st` (row stride `ld`), pass
 * by pass, each pass's global loads issued before its stores (`mmaGatherPasses`, batched: H200, session 14, the whole
 * backward against a loop that waited on each load: 1-D L=4096 K=127 0.096 -> 0.089 ms, 1-D K=2047 causal 4.65 ->
 * 4.43, 2-D K=7 0.368 -> 0.316, K=13 dilated 0.555 -> 0.506, 256x256 K=15 4.58 -> 4.25, 3-D 0.669 -> 0.611; 12/12
 * checks): `rowValue(row, c)` is the vec4 of tile row `row` (u32), column c, or zero.
 */
function gatherFragments(o: { rows: number; passRows: number; width4: number; ld: string; name: string; frags: number; wg: number; rowValue: (rr: string, c: string) => string; base?: string; colOff?: string; splitScale?: string }): string {
  const base = o.base ?? 'rbase';
  const colOff = o.colOff === undefined ? '' : ` + ${o.colOff}`;
  // The split: f32 rows times the tensor's scale, hi halves to `st` and lo halves to `stlo`, loaded as `${name}_lo_kk`.
  const split = o.splitScale;
  const load = (arr: string, name: string, kk: number, first: number): string => `    ${name}_${kk} = subgroupMatrixLoad<${LEFT}, row_major>(&${arr}, (${base} - ${first}u) * ${o.ld} + ${kk * F}u${colOff}, ${o.ld});`;
  return mmaGatherPasses({
    rows: o.rows,
    passRows: o.passRows,
    width4: o.width4,
    wg: o.wg,
    batched: true,
    // Names per gather (a kernel gathers two: q and do, k and v).
    tag: `${o.name}_`,
    type: split === undefined ? 'vec4<f16>' : 'vec4<f32>',
    value: () => '',
    load: (first) => o.rowValue(`${first}u + rr`, 'c'),
    store: (v) => (split === undefined ? store4('st', `rr * ${o.ld} + 4u * c`, v) : storeSplit4('st', `rr * ${o.ld} + 4u * c`, v, { lo: 'stlo' }, split)),
    fragments: (first, rows) => `  if (${base} >= ${first}u && ${base} < ${first + rows}u) {
${range(o.frags)
  .map((kk) => (split === undefined ? load('st', o.name, kk, first) : `${load('st', o.name, kk, first)}\n${load('stlo', `${o.name}_lo`, kk, first)}`))
  .join('\n')}
  }`,
  });
}

/**
 * Both kernels' tile gathers into left fragments: `${first}_kk` from the rows of head dim D (dq: Q, dkv: K) and
 * `${second}_kk` from those of Dv (dq: dO, dkv: V), through the row loaders of `tileRows` (`load_or_zero` 0 and 1).
 * With headSplit each pair of subgroups shares its rows (`pbase`) and each takes its half's columns.
 */
function tileGathers(spec: FusedBackwardMmaSpec, first: string, second: string, scales?: readonly [string, string]): string {
  const { L, WG, D4, DV4, D16, DV16, split, ROWS, HS } = sizes(spec);
  return [
    gatherFragments({ rows: ROWS, passRows: mmaPassRows(L, L.ldk), width4: D4, ld: 'LDK', name: first, frags: D16 / HS, wg: WG, rowValue: (rr, c) => `load_or_zero(0u, tile_row(${rr}), HEAD_DIM, ${c})`, ...(split ? { base: 'pbase', colOff: 'hoff_d' } : {}), ...(scales ? { splitScale: scales[0] } : {}) }),
    gatherFragments({ rows: ROWS, passRows: mmaPassRows(L, L.ldv), width4: DV4, ld: 'LDV', name: second, frags: DV16 / HS, wg: WG, rowValue: (rr, c) => `load_or_zero(1u, tile_row(${rr}), HEAD_DIM_V, ${c})`, ...(split ? { base: 'pbase', colOff: 'hoff_dv' } : {}), ...(scales ? { splitScale: scales[1] } : {}) }),
  ].join('\n');
}

/** A right fragment of the staging area (`stlo` for the split's lo half) at `off`, `major`-major. */
const stagedRight = (major: 'row' | 'col', off: string, ld: string) => (lo: boolean): string => `subgroupMatrixLoad<${RIGHT}, ${major}_major>(&${lo ? 'stlo' : 'st'}, ${off}, ${ld})`;

/**
 * S-like products of the subgroup's 16 rows against `n16` 16-column blocks of a staged chunk, stored to `dst` (row
 * stride `sld`); with `split` three multiplies per product (`${lefts}_lo_kk` and `stlo` hold the lo halves).
 */
function productsInto(dst: string, lefts: string, nk: number, n16: number, rightOffset: (n: number, kk: number) => string, ld: string, split = false, sld = 'LDS'): string {
  return range(n16)
    .map(
      (n) => `    {
      var acc = ${RESULT}();
${range(nk)
  .map((kk) => `      acc = ${mmaMulAdd(`${lefts}_${kk}`, split ? `${lefts}_lo_${kk}` : undefined, stagedRight('col', rightOffset(n, kk), ld), 'acc')};`)
  .join('\n')}
      subgroupMatrixStore<row_major>(&${dst}, rbase * ${sld} + ${n * F}u, acc, ${sld});
    }`,
    )
    .join('\n');
}

/**
 * acc_j += left(p_n) x right(rows of the chunk, columns j) for j < outs, n < n16; the left rows start at `leftBase` in
 * `leftArr`. With `lo` (the float32 split) the left's lo halves are in array `lo` and the right's in `stlo`: three
 * multiplies per product.
 */
function accumulateFrom(acc: string, leftArr: string, outs: number, n16: number, rightBase: string, ld: string, leftBase = '', split?: { readonly colOff: string }, lo?: string): string {
  const leftRow = split ? 'pbase' : 'rbase';
  const colOff = split ? ` + ${split.colOff}` : '';
  const left = (arr: string, name: string, n: number): string => `    let ${name}_f${n} = subgroupMatrixLoad<${LEFT}, row_major>(&${arr}, ${leftBase}${leftRow} * LDP + ${n * F}u, LDP);`;
  return `${range(n16)
    .map((n) => (lo === undefined ? left(leftArr, leftArr, n) : `${left(leftArr, leftArr, n)}\n${left(lo, lo, n)}`))
    .join('\n')}
${range(outs)
  .map(
    (j) =>
      `    ${acc}_${j} = ${range(n16).reduce(
        (a, n) => mmaMulAdd(`${leftArr}_f${n}`, lo === undefined ? undefined : `${lo}_f${n}`, stagedRight('row', `${rightBase} + ${n * F}u * ${ld} + ${j * F}u${colOff}`, ld), a),
        `${acc}_${j}`,
      )};`,
  )
  .join('\n')}`;
}

/**
 * WGSL writing result fragments (`outs`: `${acc}_j`, times `scale` where given, to binding `out` at row `row8` in vec4<u32>
 * units, eight halves each) through the f32 scratches (`mmaScratchEpilogue`): the S scratch, and the dP scratch where
 * the kernel has one (half the rounds). With headSplit each subgroup writes its own head-dim half from its own rows.
 */
function writeThroughScratch(o: {
  /** `row8`: the row's first vec4<u32> (eight halves), or its first vec4<f32> with `f32`. */
  outs: readonly { acc: string; frags: number; out: string; row8: string; scale?: string }[];
  n16: number;
  valid: string;
  twoScratches: boolean;
  split?: boolean;
  /** float32 outputs (the split): two vec4<f32> stores per eight values. */
  f32?: boolean;
  /** The dP scratch's row stride is `LDD` (the dkv kernel's `wideFirst`). */
  dpStride?: boolean;
}): string {
  return mmaScratchEpilogue({
    outs: o.outs.map((x) => ({
      acc: x.acc,
      frags: x.frags,
      write: (j: number, lo: string, hi: string) => {
        const scaled = x.scale === undefined ? '' : ` * ${x.scale}`;
        if (o.f32 === true) {
          const at = `${x.row8} + ${4 * j}u + 2u * hf`;
          return `${x.out}[${at}] = ${lo}${scaled}; ${x.out}[${at} + 1u] = ${hi}${scaled};`;
        }
        return `${x.out}[${x.row8}${o.split === true ? ` + hd * ${x.frags * 2}u` : ''} + ${2 * j}u + hf] = pack8(${lo}${scaled}, ${hi}${scaled});`;
      },
    })),
    scratches: o.twoScratches ? ['s_sh', 'dp_sh'] : ['s_sh'],
    ...(o.dpStride === true ? { strides: ['LDS', 'LDD'] } : {}),
    perScratch: o.n16,
    srow: o.split === true ? '(rbase + lane / 2u)' : 'row',
    guard: o.valid,
  });
}

/**
 * WGSL of the rank-1 mask of the four staged rows at columns `cc` .. `cc + 3` of the chunk starting at box index `c0`:
 * their coordinates are the box start `bs` plus their box indices, so the test is arithmetic (no coordinate table
 * read); inside [lo, hi). Rows past the box are past every window (the box is the union of the windows).
 */
const rangeMask4 = (bs: string, lo: string, hi: string): string => {
  const c = `(vec4<i32>(${bs} + i32(c0 + cc)) + vec4<i32>(0, 1, 2, 3))`;
  return `((${c} >= vec4<i32>(${lo})) & (${c} < vec4<i32>(${hi})))`;
};

/** WGSL of the vec4 at column `cc` of this lane's row of f32 scratch `arr`. */
const scratchVec4 = (arr: string, srow = 'srow'): string => `vec4<f32>(${arr}[${srow} + cc], ${arr}[${srow} + cc + 1u], ${arr}[${srow} + cc + 2u], ${arr}[${srow} + cc + 3u])`;

/**
 * Both kernels' S and dP products and the per-element P/dS (`s(dst)` / `dp(dst)` store S or dP into a scratch,
 * `pds(shared)` is the per-element block writing at `prow`, which starts at `pBase`), indented for the kernel's loop (`ind`
 * added to every line). With two scratches:
 * both products, a barrier, P/dS. With one (the dq kernel's `sharedScratch`): S, a barrier, each lane's S values
 * into registers `sreg_v`, a barrier, dP over S, a barrier, P/dS. `dpRow`: the dP scratch has its own row stride
 * (`LDD`, the dkv kernel's `wideFirst`), and the P/dS block reads it at `drow`.
 */
function productsAndPds(o: { shared: boolean; vpl: number; s: (dst: string) => string; dp: (dst: string) => string; pds: (shared: boolean) => string; ind: string; pBase?: string; split?: boolean; dpRow?: boolean }): string {
  const guarded = (body: string): string => `    if (need) {\n${body}\n    }`;
  // headSplit: the pair's partial products are rows 2 pbase + lane / 2 (its first subgroup) and 16 rows on.
  const srows = o.split === true ? `      let srow = (2u * pbase + lane / 2u) * LDS;\n      let srow2 = srow + ${F}u * LDS;` : `      let srow = row * LDS;${o.dpRow === true ? '\n      let drow = row * LDD;' : ''}`;
  const pdsBlock = guarded(`${srows}\n      let prow = ${o.pBase ?? ''}row * LDP;\n${o.pds(o.shared)}`);
  const sRegs = `${range(o.vpl)
    .map((v) => `    var sreg_${v} = vec4<f32>(0.0);`)
    .join('\n')}
${guarded(`      let srow = row * LDS;\n${range(o.vpl)
    .map((v) => `      { let cc = (${v * 2}u + hf) * 4u; sreg_${v} = ${scratchVec4('s_sh')}; }`)
    .join('\n')}`)}`;
  const barrier = '    workgroupBarrier();';
  const parts = !o.shared ? [guarded(`${o.s('s_sh')}\n${o.dp('dp_sh')}`), barrier, pdsBlock] : [guarded(o.s('s_sh')), barrier, sRegs, barrier, guarded(o.dp('s_sh')), barrier, pdsBlock];
  const text = parts.join('\n');
  return o.ind === '' ? text : text.replace(/^/gm, o.ind);
}

/**
 * The per-element masked P and dS of this lane's interleaved vec4 columns (`vpl` of them; vec4 index `vi`):
 * `inw(vi, i)` is the in-window test of column `4 vi + i`, `lse(vi)` / `delta(vi)` the (log2-scaled) lse and delta of
 * a column or row; P^T/dS^T go to `pArr`/`dsArr` (dq writes dS only), or dS^T to registers `dsreg_v` with
 * `dsRegs` (the dkv kernel's `leanScratch`: stored by `dsRegsStore` once dV has read P^T). With `split` (headSplit) the
 * lane's subgroup takes half of the columns and S and dP are the sums of the rows at `srow` and `srow2`.
 */
function pdsStmts(o: {
  vpl: number;
  inw: (vi: string, i: number) => string;
  inw4?: (vi: string) => string;
  lse: (vi: string) => string;
  delta: (vi: string) => string;
  pArr?: string;
  dsArr: string;
  dsRegs?: boolean;
  shared?: boolean;
  split?: boolean;
  /** The rpb index (u32) of column `4 vi + i`, read where the column is in the window (`hasRpb`). */
  rpbIndex?: (vi: string, i: number) => string;
  /** Statements storing the f32 `ds` of column `4 vi + i` where it is in the window (`gradRpb`). */
  dsOut?: (vi: string, i: number) => string;
  /**
   * The float32 split: S and dP scaled (undone by `sl2`, which includes the softmax's scale log2(e), and `dp_un`), P
   * stored as hi and lo halves (lo to `pLo`), dS times `scd` likewise (lo to `dsLo`; `dsRegs` then hold the f32 dS).
   */
  splitLo?: { readonly p?: string; readonly ds: string };
  /** The dP scratch's rows start at `drow` (its own stride, `wideFirst`); absent = at `srow`. */
  dpRow?: boolean;
}): string {
  const vi = (v: number): string => (o.split === true ? `${v * 2}u + hf + ${2 * o.vpl}u * hd` : `${v * 2}u + hf`);
  const sum = (arr: string): string => (o.split === true ? `${scratchVec4(arr)} + ${scratchVec4(arr, 'srow2')}` : scratchVec4(arr));
  return range(o.vpl)
    .map(
      (v) => `      {
        let cc = (${vi(v)}) * 4u;
        let s = ${o.shared ? `sreg_${v}` : sum('s_sh')};
        let dp = ${o.shared ? scratchVec4('s_sh') : o.dpRow === true ? scratchVec4('dp_sh', 'drow') : sum('dp_sh')}${o.splitLo ? ' * dp_un' : ''};
        let inw = ${o.inw4 ? o.inw4(vi(v)) : `vec4<bool>(${[0, 1, 2, 3].map((i) => o.inw(vi(v), i)).join(', ')})`};
${
  o.rpbIndex
    ? `        let bias = vec4<f32>(${[0, 1, 2, 3].map((i) => `f32(rpb[select(0u, ${o.rpbIndex?.(vi(v), i) ?? ''}, inw[${i}])])`).join(', ')}) * LOG2E;\n`
    : ''
}        let p = select(vec4<f32>(0.0), exp2(s * ${o.splitLo ? 'sl2' : 'params.scale_log2'}${o.rpbIndex ? ' + bias' : ''} - ${o.lse(vi(v))}), inw);
        let ds = p * (dp - ${o.delta(vi(v))});
${o.dsOut ? `${[0, 1, 2, 3].map((i) => `        if (inw[${i}]) { ${o.dsOut?.(vi(v), i) ?? ''} }`).join('\n')}\n` : ''}${pdsStores(o, v)}
      }`,
    )
    .join('\n');
}

/** `pdsStmts`' stores of P (where it has a P array) and dS: f16, or hi and lo halves with the split. */
function pdsStores(o: { pArr?: string; dsArr: string; dsRegs?: boolean; splitLo?: { readonly p?: string; readonly ds: string } }, v: number): string {
  const lo = o.splitLo;
  const p = o.pArr === undefined ? '' : lo ? `        ${storeSplit4(o.pArr, 'prow + cc', 'p', { lo: lo.p ?? '' }, '1.0')}\n` : `        let ph = vec4<f16>(p);\n        ${store4(o.pArr, 'prow + cc', 'ph')}\n`;
  if (lo) return `${p}        ${o.dsRegs === true ? `dsreg_${v} = ds;` : storeSplit4(o.dsArr, 'prow + cc', 'ds', { lo: lo.ds }, 'scd')}`;
  return `${p}        let dh = vec4<f16>(ds);
        ${o.dsRegs === true ? `dsreg_${v} = dh;` : store4(o.dsArr, 'prow + cc', 'dh')}`;
}

/**
 * WGSL storing registers `dsreg_v` (`pdsStmts` with `dsRegs`) to this lane's columns of f16 array `arr` (rows
 * `prow`); with the split (`lo`) the f32 dS times `scd` as hi and lo halves.
 */
function dsRegsStore(vpl: number, arr: string, lo?: string): string {
  return range(vpl)
    .map((v) => `        { let cc = (${v * 2}u + hf) * 4u; ${lo === undefined ? store4(arr, 'prow + cc', `dsreg_${v}`) : storeSplit4(arr, 'prow + cc', `dsreg_${v}`, { lo }, 'scd')} }`)
    .join('\n');
}

/** The options only one kernel takes, and why the other does not. */
const KERNEL_ONLY: Readonly<Record<'dq' | 'dkv', readonly (readonly [keyof FusedBackwardMmaSpec, string])[]>> = {
  dq: [
    ['sharedScratch', 'sharedScratch is a dq-kernel option (one scratch timed slower in dkv)'],
    ['dsOverV', 'dsOverV is a dq-kernel option (the dkv kernel reads its Q and dO rows to the end of each step)'],
    ['gradRpb', 'gradRpb is a dq-kernel option (the dq kernel writes dS for d_rpb)'],
  ],
  dkv: [
    ['leanScratch', 'leanScratch is a dkv-kernel option (the dq kernel has sharedScratch and dsOverV)'],
    ['wideFirst', 'wideFirst is a dkv-kernel option (the dq kernel widens its one scratch with wideS)'],
  ],
};

/** Throw, naming the generator, where a spec cannot be generated as `kernel` (its own rules, or the other kernel's options). */
function checkKernelSpec(spec: FusedBackwardMmaSpec, kernel: 'dq' | 'dkv', generator: string): void {
  const other = kernel === 'dq' ? 'dkv' : 'dq';
  const why = fusedBackwardMmaSpecProblem(spec) ?? KERNEL_ONLY[other].find(([field]) => spec[field] === true)?.[1];
  if (why !== undefined) throw new NattenArgumentError(`${generator}: ${why}`);
}

/** The dq kernel (pass 1). */
export function generateFusedBackwardMmaDq(spec: FusedBackwardMmaSpec): GeneratedKernel {
  checkKernelSpec(spec, 'dq', 'generateFusedBackwardMmaDq');
  const key = kernelKey('na-fused-backward-mma-dq', GEN, spec);
  const { r, axes, L, WG, D4, DV4, D16, DV16, C16: BK16, TPR: TPK, split, ROWS, HS, hoff } = sizes(spec);
  const BK = spec.chunk;
  const VOFF = BK * L.ldk;
  const SHARED = spec.sharedScratch === true;
  // dS's array: its own, or the chunk's V rows (offset VOFF of the staging area) once dP is done with them (dsOverV).
  const DS_OVER_V = spec.dsOverV === true;
  const DS_ARR = DS_OVER_V ? 'st' : 'ds_sh';
  const DS_BASE = DS_OVER_V ? `${VOFF}u + ` : '';
  const PACKED = spec.packedCoords === true;
  const packing = mmaPackedCoords(r);
  const SPLIT = spec.split === true;
  const FAST_DIV = mmaFastDivide(r, SPLIT, spec.fastDivide);
  const COORDS = stagedCoords(spec, 'dq');
  const staging = mmaStagedKeyLoop({ r, arr: 'st', tpk: TPK, d4: D4, dv4: DV4, voff: VOFF, ...(COORDS ? {} : { noCoords: true }), ...(PACKED ? { packed: true } : {}), ...(FAST_DIV ? { fastDivide: true } : {}), ...(spec.wideLoads === true ? { wide: true } : {}), ...(SPLIT ? { split: { lo: 'stlo', scaleK: 'sck', scaleV: 'scv' } } : {}) });
  const uniforms = fusedForwardUniformFields(r);
  const bindings: StorageBinding[] = [
    { name: 'query', access: 'read' },
    { name: 'key', access: 'read' },
    { name: 'value', access: 'read' },
    { name: 'output', access: 'read' },
    { name: 'grad_output', access: 'read' },
    { name: 'logsumexp', access: 'read' },
    { name: 'grad_query', access: 'read_write' },
    { name: 'delta', access: 'read_write' },
    ...(spec.hasRpb === true ? [{ name: 'rpb', access: 'read' as const }] : []),
    ...(spec.gradRpb === true ? [{ name: 'ds_scratch', access: 'read_write' as const }] : []),
    ...(SPLIT ? SPLIT_BACKWARD_BINDINGS : []),
  ];
  const tokOf = (x: (a: number) => string): string => tokenOf(r, x);
  const qrowOf = (c: (a: number) => string): string => `((tok_base + ${tokOf((a) => `${c(a)} * params.dil_${a} + g_${a}`)}) * params.heads + h)`;
  // The staged coordinates (group coordinates, vec4<i32>) of column 4 vi + i of the chunk.
  const keyAt = (vi: string, i: number): string => `kc_sh[(${vi}) * 4u + ${i}u]`;

  const rows = tileRows(r, { first: 'qf', head: 'h', heads: 'heads', loaders: ['load_q', 'load_do'], ...(SPLIT ? { type: 'f32' as const } : {}) });
  const code = withUnitSteps(`${moduleHead(key, spec, bindings, uniforms, `${axes.map((a) => `const QUERY_TILE_${a}: u32 = ${spec.tile[a]}u;`).join('\n')}\nconst KEY_CHUNK: u32 = ${BK}u;\n`, 'dq')}
${DS_OVER_V ? '' : `var<workgroup> ds_sh: array<f16, ${ROWS * L.ldp}>;\n`}${SPLIT ? `var<workgroup> dslo_sh: array<f16, ${ROWS * L.ldp}>;\n` : ''}${COORDS ? `var<workgroup> kc_sh: ${mmaCoordTable(PACKED, 'kc_sh').type(BK)};` : ''}${FAST_DIV ? `\n${BOX_DIVMOD_FN}` : ''}

${rows.decls}

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wg_id: vec3<u32>, @builtin(num_workgroups) wg_num: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
${forwardWorkgroupPrologue(r)}${rows.init}
${split ? laneSplitPosition(spec.dim, spec.dimV) : LANE_POSITION}
${SPLIT ? SPLIT_PROLOGUE(spec.dimV) : ''}
  // ---- this lane's query row: coordinates, window, lse, and delta = rowsum(dO * O) (written for the dkv pass)
${mmaQueryRowWindow(r, 'TILE')}
  let qrow = ${qrowOf((a) => `min(qi_${a}, n_${a} - 1)`)};
  // The first chunk's K/V fetch, then this lane's half of the row's dO and O loads, all in flight together.
${staging.before}
  var dsum = 0.0;
  if (valid) {
${range(DV4 / 2)
  .map((i) => `    { let c = hf + ${2 * i}u; dsum = dsum + dot(vec4<f32>(grad_output[qrow * ${DV4}u + c]), vec4<f32>(output[qrow * ${DV4}u + c])); }`)
  .join('\n')}
  }
  let delta_r = dsum + subgroupShuffleXor(dsum, 1u);
  if (valid && hf == 0u${split ? ' && hd == 0u' : ''}) { delta[qrow] = delta_r; }
  let lse_r = select(0.0, logsumexp[qrow] * LOG2E, valid);
${mmaSubgroupSpan(r, 'valid', (a) => `ws_${a}`, (a) => `we_${a} - 1`, 'bs', 'bw')}
${PACKED ? `${packing.lane}\n` : ''}
${leftDecls('q', D16 / HS, SPLIT)}
${leftDecls('do', DV16 / HS, SPLIT)}
${tileGathers(spec, 'q', 'do', SPLIT ? ['scq', 'scg'] : undefined)}
${range(D16 / HS)
  .map((j) => `  var dq_${j} = ${RESULT}();`)
  .join('\n')}
  for (var ch = 0u; ch < n_chunks; ch++) {
    let c0 = ch * KEY_CHUNK;
    let need = i32(c0) <= span_hi && i32(c0 + KEY_CHUNK) > span_lo;
${staging.step}
    // ---- S = Q K^T and dP = dO V^T for this subgroup's rows (chunks outside its windows' span skip all work)
${productsAndPds({
  shared: SHARED,
  vpl: BK / 8,
  s: (dst) => productsInto(dst, 'q', D16 / HS, BK16, (n, kk) => `${n * F}u * LDK + ${kk * F}u${hoff('hoff_d')}`, 'LDK', SPLIT),
  dp: (dst) => productsInto(dst, 'do', DV16 / HS, BK16, (n, kk) => `${VOFF}u + ${n * F}u * LDV + ${kk * F}u${hoff('hoff_dv')}`, 'LDV', SPLIT),
  pds: (shared) =>
    pdsStmts({
      vpl: BK / 8 / HS,
      inw: (vi, i) => mmaInWindow(r, keyAt(vi, i)),
      ...(PACKED ? { inw4: (vi: string) => packing.inw4(`kc_sh[${vi}]`) } : r === 1 ? { inw4: () => rangeMask4('bs_0', 'ws_0', 'we_0') } : {}),
      lse: () => 'vec4<f32>(lse_r)',
      delta: () => 'vec4<f32>(delta_r)',
      dsArr: DS_ARR,
      shared,
      split,
      ...(SPLIT ? { splitLo: { ds: 'dslo_sh' } } : {}),
      ...(spec.hasRpb === true ? { rpbIndex: (vi: string, i: number) => rpbIndexExpr(spec.kernelSize, (a) => `${keyAt(vi, i)}.${COORD[a] as string} - qi_${a}`) } : {}),
      ...(spec.gradRpb === true ? { dsOut: (vi: string, i: number) => `ds_scratch[qrow * ${product(spec.kernelSize)}u + ${windowSlot(spec.kernelSize, (a) => `${keyAt(vi, i)}.${COORD[a] as string} - ws_${a}`)}] = ds[${i}];` } : {}),
    }),
  ind: '',
  pBase: DS_BASE,
  split,
})}
    workgroupBarrier();
    // ---- dQ += dS K
    if (need) {
${accumulateFrom('dq', DS_ARR, D16 / HS, BK16, '0u', 'LDK', DS_BASE, split ? { colOff: 'hoff_d' } : undefined, SPLIT ? 'dslo_sh' : undefined)}
    }
    workgroupBarrier();
  }
  // ---- dQ * scale${SPLIT ? " (the split: over dS's and K's scales)" : ''}
  let scale = params.scale_log2 * 0.6931471805599453${SPLIT ? ' / (scd * sck)' : ''};
${writeThroughScratch({ outs: [{ acc: 'dq', frags: D16 / HS, out: 'grad_query', row8: `qrow * ${spec.dim / (SPLIT ? 4 : 8)}u`, scale: 'scale' }], n16: BK16, valid: 'valid', twoScratches: spec.sharedScratch !== true, split, ...(SPLIT ? { f32: true } : {}) })}
}
`, spec.unitSteps);
  return {
    key,
    code,
    entryPoint: 'main',
    workgroupSize: [WG, 1, 1],
    bindings,
    uniforms,
    workgroupBytes: fusedBackwardMmaWorkgroupBytes(spec, 'dq'),
    features: ['shader-f16', 'subgroups', 'chromium-experimental-subgroup-matrix'],
  };
}

/**
 * WGSL of the dkv kernel's workgroup decode: (batch, KV head, dilation group, key tile), the group extents `n_a`, the
 * first key `kf_a`, and the query box `qbs_a` + `qbw_a` (group coordinates): the union of the exact inverse
 * neighbourhoods of the tile's first and last keys per axis (monotone in the key). Returns (uniformly) past the end.
 */
function keyTilePrologue(r: NaRank): string {
  const axes = range(r);
  return `${workgroupTileDecode(r, { head: 'hk', heads: 'heads_kv', first: 'kf', tile: 'TILE' })}
${axes
  .map(
    (a) => `  let kl_${a} = min(kf_${a} + i32(TILE_${a}), n_${a}) - 1;
  let ifirst_${a} = na_inverse_${a}(kf_${a} * params.dil_${a} + g_${a}, params.len_${a}, params.dil_${a}, params.str_${a});
  let ilast_${a} = na_inverse_${a}(kl_${a} * params.dil_${a} + g_${a}, params.len_${a}, params.dil_${a}, params.str_${a});
  let qbs_${a} = (ifirst_${a}.x - g_${a}) / params.dil_${a};
  let qbw_${a} = (ilast_${a}.y - g_${a}) / params.dil_${a} - qbs_${a};`,
  )
  .join('\n')}
  let box_n = u32(${axes.map((a) => `qbw_${a}`).join(' * ')});
  let n_chunks = (box_n + QUERY_CHUNK - 1u) / QUERY_CHUNK;
  let tok_base = b * params.tokens;
`;
}

/** The dkv kernel (pass 2). Uniforms as the forward's, with key tiles in `ntile_a` and KV heads in `total_wg`. */
export function generateFusedBackwardMmaDkv(spec: FusedBackwardMmaSpec): GeneratedKernel {
  checkKernelSpec(spec, 'dkv', 'generateFusedBackwardMmaDkv');
  const key = kernelKey('na-fused-backward-mma-dkv', GEN, spec);
  const { r, axes, L, WG, D4, DV4, D16, DV16, C16: QC16, TPR: TPQ, split, ROWS, HS, hoff } = sizes(spec);
  const QC = spec.chunk;
  const OOFF = QC * L.ldk; // dO rows after the Q rows
  const SPLIT = spec.split === true;
  const T = SPLIT ? 'f32' : 'f16';
  // The forward's uniforms: `ntile_a` counts key tiles here and `total_wg` runs over KV heads.
  const uniforms = fusedForwardUniformFields(r);
  const bindings: StorageBinding[] = [
    { name: 'query', access: 'read' },
    { name: 'key', access: 'read' },
    { name: 'value', access: 'read' },
    { name: 'grad_output', access: 'read' },
    { name: 'logsumexp', access: 'read' },
    { name: 'delta', access: 'read' },
    { name: 'grad_key', access: 'read_write' },
    { name: 'grad_value', access: 'read_write' },
    ...(spec.hasRpb === true ? [{ name: 'rpb', access: 'read' as const }] : []),
    ...(SPLIT ? SPLIT_BACKWARD_BINDINGS : []),
  ];
  const RPB = spec.hasRpb === true;
  const tokOf = (x: (a: number) => string): string => tokenOf(r, x);
  // Key k (this lane's row) inside staged query c's window, on every axis: the query inside the key's exact inverse
  // neighbourhood [ilo_a, ihi_a) (core's window tests check the equivalence exhaustively), one staged vec4 per query.
  const inWindow = (c: string): string => `kvalid && ${axes.map((a) => `(qc_sh[${c}].${COORD[a] as string} >= ilo_${a}) && (qc_sh[${c}].${COORD[a] as string} < ihi_${a})`).join(' && ')}`;
  // Packed (spec.packedCoords): each query's offsets in the query box in one u32, tested four at a time.
  const PACKED = spec.packedCoords === true;
  const packing = mmaPackedCoords(r);
  const queryCoords = mmaCoordTable(PACKED, 'qc_sh');
  // leanScratch: S^T and dP^T through one scratch, P^T and then dS^T through one f16 array (dS^T held in registers
  // while dV += P^T dO reads P^T).
  const LEAN = spec.leanScratch === true;
  // wideFirst: S^T's scratch rows widened, dP^T's of their own stride (LDD).
  const WIDE_FIRST = spec.wideFirst === true;
  const DS_ARR = LEAN ? 'p_sh' : 'ds_sh';
  // The split's lo half of dS^T (those of the staged Q and dO rows are in `stlo`, of P^T in `plo_sh`).
  const DS_LO = LEAN ? 'plo_sh' : 'dslo_sh';

  // The staging thread's query row in the box (the union of the tile's inverse windows) as a cursor: decoded once,
  // advanced a chunk per step and reset at each query head (`mmaBoxCursor`: no integer division per step).
  const cursor = mmaBoxCursor({ r, p: 'q', start: 'st_row', step: 'QUERY_CHUNK', bs: 'qbs', bw: 'qbw' });
  // One flattened (query head, chunk) walk; the next step's query rows, coordinates, lse and delta are
  // loaded into registers right after this step's are committed to workgroup memory.
  // wideLoads: 16-byte units of eight halves (vec4<u32>) instead of vec4s of four.
  const WIDE = spec.wideLoads === true;
  // The staging format (the forward's and dq kernel's, with Q in K's place and dO in V's): units, loads per thread.
  const shape: StagingShape = { tpk: TPQ, d4: D4, dv4: DV4, ...(WIDE ? { wide: true } : {}), ...(SPLIT ? { split: { lo: 'stlo', scaleK: 'scq', scaleV: 'scg' } } : {}) };
  const UQ = stagingUnits(shape, D4);
  const UO = stagingUnits(shape, DV4);
  const { nk: NQ, nv: NO } = stagingFetchCounts(shape);
  const fzero = stagingFetchZero(shape);
  const part = (n: number, d4: number, i: number): string => stagingPartGuard(n, TPQ, d4, i);
  // The staged rows' coordinates: not in rank 1 without rpb (the mask is arithmetic on box indices).
  const COORDS = stagedCoords(spec, 'dkv');
  const fetchRow = (loader: string, width: string, i: number): string =>
    WIDE ? `${loader}8(select(0u, qrow * (${width} / 8u), in_box), st_sub + ${i * TPQ}u)` : `${loader}(select(0u, qrow * ${width}, in_box), st_sub + ${i * TPQ}u)`;
  const commitRow = (at: (step: number) => string, v: string, scale: string): string => stagingStore(shape, 'st', at, v, scale);
  // The next step's query head `f_qh` and chunk `f_ch` advance with the cursor.
  const fetchStep = (ind: string): string => `${ind}{
${ind}  let qbox = f_ch * QUERY_CHUNK + st_row;
${ind}  let in_box = qbox < box_n;
${cursor.row(`${ind}  `, 'heads', 'hk * params.gqa + f_qh')}
${range(NQ)
  .map((i) => `${ind}  ${part(NQ, UQ, i)}{ pq_${i} = select(${fzero}, ${fetchRow('load_q', 'HEAD_DIM', i)}, in_box); }`)
  .join('\n')}
${range(NO)
  .map((i) => `${ind}  ${part(NO, UO, i)}{ po_${i} = select(${fzero}, ${fetchRow('load_do', 'HEAD_DIM_V', i)}, in_box); }`)
  .join('\n')}
${ind}  if (st_sub == 0u) {
${
  COORDS
    ? `${ind}    pqc = select(${queryCoords.none}, ${
        PACKED
          ? packing.pack((a) => `qg_${a} - qbs_${a}`)
          : `vec4<i32>(${range(4)
              .map((a) => (a < r ? `qg_${a}` : '0'))
              .join(', ')})`
      }, in_box);\n`
    : ''
}${ind}    plse = select(0.0, logsumexp[select(0u, qrow, in_box)] * LOG2E, in_box);
${ind}    pdelta = select(0.0, delta[select(0u, qrow, in_box)], in_box);
${ind}  }
${ind}  f_ch = f_ch + 1u;
${ind}  if (f_ch == n_chunks) {
${ind}    f_ch = 0u;
${ind}    f_qh = f_qh + 1u;
${cursor.reset(`${ind}    `)}
${ind}  } else {
${cursor.advance(`${ind}    `)}
${ind}  }
${ind}}`;
  // The first step's fetch comes after the K/V gather (before it, the dkv kernel ran 1.01-1.09x slower on an H200,
  // session 16, while the dq kernel's early fetch paid).
  const walkHead = `  let st_row = lid / ${TPQ}u;
  let st_sub = lid % ${TPQ}u;
${range(NQ)
  .map((i) => `  var pq_${i} = ${fzero};`)
  .join('\n')}
${range(NO)
  .map((i) => `  var po_${i} = ${fzero};`)
  .join('\n')}
${COORDS ? `  var pqc = ${queryCoords.none};\n` : ''}  var plse = 0.0;
  var pdelta = 0.0;
  let n_steps = params.gqa * n_chunks;
${cursor.decls}
  var f_qh = 0u;
  var f_ch = 0u;
  var w_ch = 0u;${RPB ? '\n  var w_qh = 0u;' : ''}
${fetchStep('  ')}
    for (var it = 0u; it < n_steps; it++) {
      let c0 = w_ch * QUERY_CHUNK;${RPB ? '\n      // The step\'s query head (the rpb\'s head).\n      let h = hk * params.gqa + w_qh;' : ''}
      w_ch = select(w_ch + 1u, 0u, w_ch + 1u == n_chunks);${RPB ? '\n      w_qh = select(w_qh, w_qh + 1u, w_ch == 0u);' : ''}
      let need = i32(c0) <= span_hi && i32(c0 + QUERY_CHUNK) > span_lo;
      // ---- commit this step's query rows (Q, dO, coordinates, lse, delta), then load the next step's into registers
${range(NQ)
  .map((i) => `      ${part(NQ, UQ, i)}{ ${commitRow((step) => `st_row * LDK + ${step}u * (st_sub + ${i * TPQ}u)`, `pq_${i}`, 'scq')} }`)
  .join('\n')}
${range(NO)
  .map((i) => `      ${part(NO, UO, i)}{ ${commitRow((step) => `${OOFF}u + st_row * LDV + ${step}u * (st_sub + ${i * TPQ}u)`, `po_${i}`, 'scg')} }`)
  .join('\n')}
      if (st_sub == 0u) {
${COORDS ? `        ${queryCoords.store('st_row', 'pqc')}\n` : ''}        lse_sh[st_row / 4u][st_row % 4u] = plse;
        delta_sh[st_row / 4u][st_row % 4u] = pdelta;
      }
      workgroupBarrier();
      if (it + 1u < n_steps) {
${fetchStep('        ')}
      }
`;
  const rows = tileRows(r, { first: 'kf', head: 'hk', heads: 'heads_kv', loaders: ['load_k', 'load_v'], ...(SPLIT ? { type: 'f32' as const } : {}) });
  const code = withUnitSteps(`${moduleHead(key, spec, bindings, uniforms, `const QUERY_CHUNK: u32 = ${QC}u;\n`, 'dkv')}
var<workgroup> p_sh: array<f16, ${ROWS * L.ldp}>;
${LEAN ? '' : `var<workgroup> ds_sh: array<f16, ${ROWS * L.ldp}>;
`}${SPLIT ? `var<workgroup> plo_sh: array<f16, ${ROWS * L.ldp}>;\n${LEAN ? '' : `var<workgroup> dslo_sh: array<f16, ${ROWS * L.ldp}>;\n`}` : ''}${COORDS ? `var<workgroup> qc_sh: ${queryCoords.type(QC)};\n` : ''}
var<workgroup> lse_sh: array<vec4<f32>, ${QC / 4}>;
var<workgroup> delta_sh: array<vec4<f32>, ${QC / 4}>;

${rows.decls}

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wg_id: vec3<u32>, @builtin(num_workgroups) wg_num: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
${keyTilePrologue(r)}${rows.init}
${split ? laneSplitPosition(spec.dim, spec.dimV) : LANE_POSITION}
${SPLIT ? `${SPLIT_PROLOGUE(spec.dimV)}\n` : ''}
  // ---- this lane's key row
${decodeTile(r, 'row', 'ko', '  ')}
${axes.map((a) => `  let ki_${a} = kf_${a} + ko_${a};`).join('\n')}
  let kvalid = ${axes.map((a) => `ki_${a} < n_${a}`).join(' && ')};
  let krow = (tok_base + ${tokOf((a) => `min(ki_${a}, n_${a} - 1) * params.dil_${a} + g_${a}`)}) * params.heads_kv + hk;
${axes.map((a) => `  let inv_${a} = na_inverse_${a}(min(ki_${a}, n_${a} - 1) * params.dil_${a} + g_${a}, params.len_${a}, params.dil_${a}, params.str_${a});`).join('\n')}
${axes.map((a) => `  let ilo_${a} = (inv_${a}.x - g_${a}) / params.dil_${a};
  let ihi_${a} = (inv_${a}.y - g_${a}) / params.dil_${a};`).join('\n')}
${mmaSubgroupSpan(r, 'kvalid', (a) => `ilo_${a}`, (a) => `ihi_${a} - 1`, 'qbs', 'qbw')}
${PACKED ? `${packing.laneOf({ lo: (a) => `ilo_${a}`, hi: (a) => `ihi_${a}`, base: (a) => `qbs_${a}`, valid: 'kvalid' })}\n` : ''}
${leftDecls('k', D16 / HS, SPLIT)}
${leftDecls('v', DV16 / HS, SPLIT)}
${tileGathers(spec, 'k', 'v', SPLIT ? ['sck', 'scv'] : undefined)}
${range(D16 / HS)
  .map((j) => `  var dk_${j} = ${RESULT}();`)
  .join('\n')}
${range(DV16 / HS)
  .map((j) => `  var dv_${j} = ${RESULT}();`)
  .join('\n')}
${walkHead}      workgroupBarrier();
${LEAN ? `${range(QC / 8)
  .map((v) => `      var dsreg_${v} = vec4<${T}>(0.0);`)
  .join('\n')}\n` : ''}      // ---- S^T = K Q^T and dP^T = V dO^T for this subgroup's keys (chunks outside its keys' inverse span skip)
${productsAndPds({
  shared: LEAN,
  vpl: QC / 8,
  s: (dst) => productsInto(dst, 'k', D16 / HS, QC16, (n, kk) => `${n * F}u * LDK + ${kk * F}u${hoff('hoff_d')}`, 'LDK', SPLIT),
  dp: (dst) => productsInto(dst, 'v', DV16 / HS, QC16, (n, kk) => `${OOFF}u + ${n * F}u * LDV + ${kk * F}u${hoff('hoff_dv')}`, 'LDV', SPLIT, WIDE_FIRST ? 'LDD' : 'LDS'),
  pds: (shared) =>
    pdsStmts({
      vpl: QC / 8 / HS,
      inw: (vi, i) => inWindow(`(${vi}) * 4u + ${i}u`),
      ...(PACKED ? { inw4: (vi: string) => packing.inw4(`qc_sh[${vi}]`) } : r === 1 ? { inw4: () => `vec4<bool>(kvalid) & ${rangeMask4('qbs_0', 'ilo_0', 'ihi_0')}` } : {}),
      lse: (vi) => `lse_sh[${vi}]`,
      delta: (vi) => `delta_sh[${vi}]`,
      pArr: 'p_sh',
      dsArr: DS_ARR,
      dsRegs: LEAN,
      shared,
      split,
      ...(SPLIT ? { splitLo: { p: 'plo_sh', ds: DS_LO } } : {}),
      // The bias of (this lane's key, staged query): key - query per axis.
      ...(RPB ? { rpbIndex: (vi: string, i: number) => rpbIndexExpr(spec.kernelSize, (a) => `ki_${a} - qc_sh[(${vi}) * 4u + ${i}u].${COORD[a] as string}`) } : {}),
      ...(WIDE_FIRST ? { dpRow: true } : {}),
    }),
  ind: '  ',
  split,
  ...(WIDE_FIRST ? { dpRow: true } : {}),
})}
      workgroupBarrier();
      // ---- dV += P^T dO, dK += dS^T Q${LEAN ? ' (dS^T over P^T in between)' : ''}
      if (need) {
${accumulateFrom('dv', 'p_sh', DV16 / HS, QC16, `${OOFF}u`, 'LDV', '', split ? { colOff: 'hoff_dv' } : undefined, SPLIT ? 'plo_sh' : undefined).replace(/^/gm, '  ')}
${
  LEAN
    ? `      }
      workgroupBarrier();
      if (need) {
        let prow = row * LDP;
${dsRegsStore(QC / 8, 'p_sh', SPLIT ? 'plo_sh' : undefined)}
      }
      workgroupBarrier();
      if (need) {
`
    : ''
}${accumulateFrom('dk', DS_ARR, D16 / HS, QC16, '0u', 'LDK', '', split ? { colOff: 'hoff_d' } : undefined, SPLIT ? DS_LO : undefined).replace(/^/gm, '  ')}
      }
      workgroupBarrier();
    }
  // ---- dK * scale, dV${SPLIT ? " (the split: over dS's and Q's scales, dO's)" : ''}
  let scale = params.scale_log2 * 0.6931471805599453${SPLIT ? ' / (scd * scq)' : ''};${SPLIT ? '\n  let dv_un = 1.0 / scg;' : ''}
${writeThroughScratch({
  outs: [
    { acc: 'dk', frags: D16 / HS, out: 'grad_key', row8: `krow * ${spec.dim / (SPLIT ? 4 : 8)}u`, scale: 'scale' },
    { acc: 'dv', frags: DV16 / HS, out: 'grad_value', row8: `krow * ${spec.dimV / (SPLIT ? 4 : 8)}u`, ...(SPLIT ? { scale: 'dv_un' } : {}) },
  ],
  n16: QC16,
  valid: 'kvalid',
  twoScratches: !LEAN,
  ...(WIDE_FIRST ? { dpStride: true } : {}),
  split,
  ...(SPLIT ? { f32: true } : {}),
})}
}
`, spec.unitSteps);
  return {
    key,
    code,
    entryPoint: 'main',
    workgroupSize: [WG, 1, 1],
    bindings,
    uniforms,
    workgroupBytes: fusedBackwardMmaWorkgroupBytes(spec, 'dkv'),
    features: ['shader-f16', 'subgroups', 'chromium-experimental-subgroup-matrix'],
  };
}
