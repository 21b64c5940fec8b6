/**
 * Fused neighborhood-attention forward on tensor cores, generation 3 ("mma" path): several subgroups per
 * workgroup sharing staged key chunks, through WebGPU subgroup matrices (`chromium-experimental-subgroup-matrix`,
 * f16 x f16 -> f32, 16x16x16). kernels.md §3; measured in docs/device-results.md.
 *
 * The generation-2 path (na-fused-forward-sgmat.ts) gives each workgroup one subgroup and loads K/V fragments
 * straight from storage, so every fragment feeds one or two multiplies. Here:
 * - One workgroup = (batch, head, dilation group, query tile of 16 * NSG queries), decoded and boxed exactly as the
 *   plain path does (`forwardWorkgroupPrologue`): the union key box of the tile in group coordinates, walked in
 *   linear chunks of BK keys (row-major, last axis fastest).
 * - NSG subgroups of 32 lanes; subgroup s owns tile rows 16s .. 16s+15 (tile-linear, last axis fastest). Its Q
 *   fragments (D/16 left matrices) are gathered once through workgroup memory and kept for the whole walk.
 * - Per chunk, the whole workgroup stages the chunk's K and V rows (f16, rows padded by 8 halves) and each key's
 *   group coordinates; every staged fragment then feeds all NSG subgroups.
 * - S = Q K^T (f32) per subgroup into its own rows of a scratch; two lanes per query row read their interleaved
 *   vec4 columns, mask each key with the row's exact window on every axis (causal, dilation, stride as the window
 *   functions compute them), run the online softmax in base 2 with lazy rescaling (the max moves only when a logit
 *   exceeds it by more than 2^8, so P <= 256 fits f16), and write P (f16). A rescale of O, when any row of the
 *   workgroup needs one, goes through the scratch, decided workgroup-uniformly with `workgroupUniformLoad`.
 * - O += P V with O in result fragments (registers) for the whole walk; the epilogue divides by l through the
 *   scratch and writes the natural-log LSE.
 * Subgroup-matrix offsets that depend on the subgroup index are not provably uniform to WGSL's analysis, so the
 * kernel turns off `chromium.subgroup_matrix_uniformity`. ASSUMPTION (as the lane split): subgroups are the
 * aligned runs of 32 consecutive local invocation indices; config selection requires a fixed subgroup size of 32.
 * float16 inputs (or float32 through the split: f16 hi + lo halves), D and Dv multiples of 16; relative positional
 * bias (`hasRpb`) is added to each in-window logit.
 */
import { NattenArgumentError, type NaRank, formatShape, product } from '@natten-web/core';
import { type GeneratedKernel, kernelKey, type StorageBinding, uniformDecl } from '../kernel.ts';
import { rpbIndexExpr, rpbWindowProblem, tokenOf } from '../snippets/fused-index.ts';
import { windowFunctions } from '../snippets/window.ts';
import { boxKeyRow, type FusedForwardSpec, forwardWorkgroupPrologue, fusedForwardBindings, fusedForwardUniformFields, rowLoader } from './na-fused-forward.ts';

const FAMILY = 'na-fused-forward-mma';
/** Bump when the emitted text changes for an unchanged spec. */
const GEN = 10;

/** Fragment size (M = N = K). */
export const MMA_FRAGMENT = 16;
/** The subgroup size the kernel is written for (two lanes per query row of a 16-row fragment). */
export const MMA_SUBGROUP_SIZE = 32;
/** Subgroups per workgroup this path compiles. */
export const MMA_SUBGROUP_COUNTS = [2, 4, 8] as const;
/** Keys per chunk this path compiles. */
export const MMA_KEY_CHUNKS = [16, 32, 64] as const;

/** The enables and diagnostics of every mma kernel (the subgroup-matrix offsets depend on the subgroup index). */
export const MMA_HEADER = `enable f16;
enable subgroups;
enable chromium_experimental_subgroup_matrix;
diagnostic(off, chromium.subgroup_matrix_uniformity);
diagnostic(off, subgroup_uniformity);`;

/** Per-axis coordinate components of the kernels' vec4 coordinate tables. */
export const COORD = ['x', 'y', 'z'];

/**
 * WGSL storage declarations of the mma kernels' bindings, each with its element type (by binding name); `tensor` is
 * the element type of the tensors (f32 for the split forward).
 */
export function mmaBindingDecls(bindings: readonly StorageBinding[], tensor: 'f16' | 'f32' = 'f16', wide: readonly string[] = []): string {
  // f32 rows (logsumexp, delta, the backward's dS scratch) and scales, scalars of the tensor type (rpb), vec4s of it (everything else); the
  // `wide` ones as vec4<u32> (16 bytes: eight halves per load or store).
  const elem = (name: string): string =>
    wide.includes(name) ? 'vec4<u32>' : name === 'logsumexp' || name === 'delta' || name === 'scales' || name === 'ds_scratch' ? 'f32' : name === 'rpb' ? tensor : `vec4<${tensor}>`;
  return bindings.map((b, i) => `@group(0) @binding(${i}) var<storage, ${b.access}> ${b.name}: array<${elem(b.name)}>;`).join('\n');
}

/**
 * WGSL of this subgroup's span over a staged box (box-linear, last axis fastest): `lo(a)` / `hi(a)` are the first and
 * last group coordinates of this lane's row's range per axis, the box starts at `${bs}_a` with widths `${bw}_a`.
 * Chunks outside [span_lo, span_hi] are skipped (their P and dS are zero for every row of the subgroup).
 */
export function mmaSubgroupSpan(r: number, valid: string, lo: (a: number) => string, hi: (a: number) => string, bs: string, bw: string): string {
  const lin = (c: (a: number) => string): string =>
    range(r)
      .map((a) => `(${c(a)} - ${bs}_${a})${range(r).slice(a + 1).map((b) => ` * ${bw}_${b}`).join('')}`)
      .join(' + ');
  return `  let lin_lo = select(2147483647, ${lin(lo)}, ${valid});
  let lin_hi = select(-1, ${lin(hi)}, ${valid});
  let span_lo = subgroupMin(lin_lo);
  let span_hi = subgroupMax(lin_hi);`;
}

/**
 * WGSL of this lane's query row (tile row `row` over the `${tile}_a` constants, first query `qf_a`): coordinates
 * `qi_a`, `valid`, and the exact window per axis in group coordinates, `[ws_a, we_a)` (empty for invalid rows).
 */
export function mmaQueryRowWindow(r: number, tile: string): string {
  const axes = range(r);
  return `${mmaDecodeTile(r, 'row', 'qo', '  ', tile)}
${axes.map((a) => `  let qi_${a} = qf_${a} + qo_${a};`).join('\n')}
  let valid = ${axes.map((a) => `qi_${a} < n_${a}`).join(' && ')};
${axes
  .map(
    (a) => `  let w_${a} = na_window_${a}(min(qi_${a}, n_${a} - 1) * params.dil_${a} + g_${a}, params.len_${a}, params.dil_${a}, params.str_${a});
  let ws_${a} = select(0, (w_${a}.x - g_${a}) / params.dil_${a}, valid);
  let we_${a} = select(0, (w_${a}.x - g_${a}) / params.dil_${a} + w_${a}.y, valid);`,
  )
  .join('\n')}`;
}

/** WGSL storing the components of vec4 `v` to scalar array `arr` at `at` .. `at + 3`. */
export function store4(arr: string, at: string, v: string): string {
  return `${arr}[${at}] = ${v}.x; ${arr}[${at} + 1u] = ${v}.y; ${arr}[${at} + 2u] = ${v}.z; ${arr}[${at} + 3u] = ${v}.w;`;
}

/** WGSL decoding tile-linear index `idx` (last axis fastest) into per-axis offsets `${p}_a` (i32) over `${tile}_a`. */
export function mmaDecodeTile(r: number, idx: string, p: string, ind: string, tile: string): string {
  return [
    `${ind}var ${p}_rest = ${idx};`,
    ...range(r)
      .reverse()
      .map((a) => `${ind}let ${p}_${a} = i32(${p}_rest % ${tile}_${a}); ${p}_rest = ${p}_rest / ${tile}_${a};`),
  ].join('\n');
}

/**
 * WGSL testing whether the key with coordinates `kc` (a vec4<i32> expression) is inside the window [ws_a, we_a) of
 * this lane's row on every axis. Parenthesized: `a < b, c > d` inside a call would otherwise parse as a template list.
 */
export function mmaInWindow(r: number, kc: string): string {
  return range(r)
    .map((a) => `(${kc}.${COORD[a] as string} >= ws_${a}) && (${kc}.${COORD[a] as string} < we_${a})`)
    .join(' && ');
}


/**
 * Split staging (float32 tensors): each staged vec4 x, times the tensor's power-of-two scale, is written as hi to the
 * staging array and lo = f16(x - hi) to `lo` at the same offset, where hi is x with its mantissa cut to f16's 10
 * bits by masking (exact in f16 for normal values). Not hi = f16(x), lo = f16(x - f32(hi)): compilers may fold
 * f32(f16(x)) to x (lavapipe does), which zeroes lo.
 */
export interface MmaSplitStaging {
  readonly lo: string;
  readonly scaleK: string;
  readonly scaleV: string;
}

/**
 * How a kernel stages a chunk of rows of two tensors (K and V in the forward and the dq kernel, Q and dO in the dkv
 * kernel): `tpk` threads per row, `d4` / `dv4` vec4s per row of each, and the load and store format.
 */
export interface StagingShape {
  readonly tpk: number;
  readonly d4: number;
  readonly dv4: number;
  readonly split?: MmaSplitStaging;
  /** Key coordinates packed into one u32 per key (`mmaPackedCoords`); absent = a vec4<i32> per key. */
  readonly packed?: boolean;
  /**
   * 16-byte loads (f16, no split): K and V read as vec4<u32> through `load_k8` / `load_v8` (eight halves each),
   * `d4` / `dv4` still counting vec4s of halves. Absent = 8-byte vec4<f16> loads.
   */
  readonly wide?: boolean;
  /**
   * Where the staged row's box index is decoded per chunk (3-D, the split): by `box_divmod` (a float reciprocal
   * and one correction step, exact below 2^21 box rows) instead of integer division and remainder. Absent = integer.
   */
  readonly fastDivide?: boolean;
  /**
   * No key-coordinate table: the kernel never reads the staged keys' coordinates (rank 1 without a per-key bias
   * lookup: a key's coordinate there is the box start plus its box index), so the staging neither computes, holds nor
   * stores them (the dq kernel's rule, `stagedCoords` in na-fused-backward-mma.ts; not the forward's, which ran slower
   * without). Absent = the
   * table (`kc_sh`) is filled per chunk.
   */
  readonly noCoords?: boolean;
}


/**
 * Packed key coordinates (the forward's and dq kernel's `packedCoords`, ranks 2 and 3): each staged key's offsets in
 * the union key box, axis a in bits [B a, B a + B) of one u32 (B = 16 in 2-D, 10 in 3-D), so a lane reads four
 * keys' coordinates with one vec4 load instead of four, and the staging thread holds one register instead of four.
 * Keys past the box are all ones, which no window holds as long as every box width is below 2^B (callers
 * guarantee it: `mmaPackedMaxExtent`). `lane` declares this lane's window relative to the box (`klo_a`, and
 * `kcnt_a` = its width, 0 for invalid rows): by default the forward's and dq's names (window `[ws_a, we_a)`, empty
 * for invalid rows; box start `bs_a`), or given ones (the dkv kernel: its key's inverse window, box start and
 * validity); `inw4(kp)` tests the four entries of vec4<u32> `kp`.
 */
export function mmaPackedCoords(r: number): {
  readonly bits: number;
  readonly pack: (offset: (a: number) => string) => string;
  readonly lane: string;
  readonly laneOf: (o: { readonly lo: (a: number) => string; readonly hi: (a: number) => string; readonly base: (a: number) => string; readonly valid?: string }) => string;
  readonly inw4: (kp: string) => string;
} {
  const bits = r === 2 ? 16 : 10;
  const mask = (1 << bits) - 1;
  const axes = range(r);
  // An invalid row's count is 0 on the first axis (so nothing is inside), where `valid` is given.
  function laneOf(o: { readonly lo: (a: number) => string; readonly hi: (a: number) => string; readonly base: (a: number) => string; readonly valid?: string }): string {
    return axes
      .map((a) => {
        const cnt = `u32(${o.hi(a)} - ${o.lo(a)})`;
        return `  let klo_${a} = u32(${o.lo(a)} - ${o.base(a)});\n  let kcnt_${a} = ${a === 0 && o.valid !== undefined ? `select(0u, ${cnt}, ${o.valid})` : cnt};`;
      })
      .join('\n');
  }
  const field = (kp: string, a: number): string => {
    const shifted = a === 0 ? kp : `(${kp} >> vec4<u32>(${bits * a}u))`;
    return a === r - 1 ? shifted : `(${shifted} & vec4<u32>(${mask}u))`;
  };
  return {
    bits,
    pack: (offset) => axes.map((a) => (a === 0 ? `u32(${offset(a)})` : `(u32(${offset(a)}) << ${bits * a}u)`)).join(' | '),
    lane: laneOf({ lo: (a) => `ws_${a}`, hi: (a) => `we_${a}`, base: (a) => `bs_${a}` }),
    laneOf,
    inw4: (kp) => axes.map((a) => `((${field(kp, a)} - vec4<u32>(klo_${a})) < vec4<u32>(kcnt_${a}))`).join(' & '),
  };
}

/**
 * A table of staged coordinates in workgroup memory (`arr`: one entry per staged row, the forward's and dq's keys,
 * the dkv kernel's queries), packed (`mmaPackedCoords`: a vec4<u32> holds four rows) or a vec4<i32> per row: its
 * WGSL type and bytes for `rows` rows, the value of a row past the box (out of every window), and the store of a
 * row's value.
 */
export function mmaCoordTable(packed: boolean, arr: string): {
  readonly type: (rows: number) => string;
  readonly bytes: (rows: number) => number;
  readonly none: string;
  readonly store: (row: string, value: string) => string;
} {
  return packed
    ? { type: (rows) => `array<vec4<u32>, ${rows / 4}>`, bytes: (rows) => 4 * rows, none: '0xffffffffu', store: (row, value) => `${arr}[${row} / 4u][${row} % 4u] = ${value};` }
    : { type: (rows) => `array<vec4<i32>, ${rows}>`, bytes: (rows) => 16 * rows, none: 'vec4<i32>(-1073741824)', store: (row, value) => `${arr}[${row}] = ${value};` };
}

/** The largest group extent per axis for which the packed coordinates are exact (box widths stay below 2^B). */
export function mmaPackedMaxExtent(r: number): number {
  return (1 << mmaPackedCoords(r).bits) - 1;
}

/**
 * WGSL guard of a staging thread's i-th vec4 of a row of `d4` vec4s, when `n` passes of `tpk` threads cover it:
 * empty when they cover it exactly, else `if (st_sub + i * tpk < d4) `.
 */
export function stagingPartGuard(n: number, tpk: number, d4: number, i: number): string {
  return n * tpk === d4 ? '' : `if (st_sub + ${i * tpk}u < ${d4}u) `;
}

/** Loads per staged row part: vec4s of the tensor type, or 16-byte units (two vec4<f16>) when `wide`. */
export const stagingUnits = (o: StagingShape, n4: number): number => (o.wide === true ? n4 / 2 : n4);

/** Loads per staging thread of each tensor's row (`nk` of the first, `nv` of the second). */
export function stagingFetchCounts(o: StagingShape): { nk: number; nv: number } {
  return { nk: Math.ceil(stagingUnits(o, o.d4) / o.tpk), nv: Math.ceil(stagingUnits(o, o.dv4) / o.tpk) };
}

const fetchType = (o: StagingShape): string => (o.wide === true ? 'vec4<u32>' : `vec4<${o.split ? 'f32' : 'f16'}>`);

/** WGSL of a zero staging register (the type a fetch loads into). */
export const stagingFetchZero = (o: StagingShape): string => `${fetchType(o)}(${o.wide === true ? '0u' : '0.0'})`;

/**
 * WGSL storing staging register `x` to f16 array `arr` at `at(step)` (`step` halves per unit: 8 wide, else 4); with
 * the split, times `scale` as hi and lo halves.
 */
export function stagingStore(o: StagingShape, arr: string, at: (step: number) => string, x: string, scale?: string): string {
  return o.wide === true ? storeWide(arr, at(8), x) : storeSplit4(arr, at(4), x, o.split, scale);
}

/** WGSL storing 16-byte unit `u` (eight halves in a vec4<u32>) to f16 array `arr` at `at` .. `at + 7`. */
function storeWide(arr: string, at: string, u: string): string {
  return `{ let wa = vec4<f16>(bitcast<vec2<f16>>(${u}.x), bitcast<vec2<f16>>(${u}.y)); let wb = vec4<f16>(bitcast<vec2<f16>>(${u}.z), bitcast<vec2<f16>>(${u}.w)); ${store4(arr, at, 'wa')} ${store4(arr, `${at} + 4u`, 'wb')} }`;
}

/** WGSL storing vec4 `v` to `arr` at `at`; with a split, `v` times `scale` as hi to `arr` and lo to `split.lo`. */
export function storeSplit4(arr: string, at: string, v: string, split?: { readonly lo: string }, scale?: string): string {
  if (!split) return store4(arr, at, v);
  return `{ let sx = ${v} * ${scale}; let sx_hi = bitcast<vec4<f32>>(bitcast<vec4<u32>>(sx) & vec4<u32>(0xffffe000u)); let sh = vec4<f16>(sx_hi); let sl = vec4<f16>(sx - sx_hi); ${store4(arr, at, 'sh')} ${store4(split.lo, at, 'sl')} }`;
}

/**
 * A staging thread's box cursor, so that no chunk decodes its box index with integer divisions (tens of
 * instructions each on GPUs): `decls` decodes box index `start` once into offsets `${p}b_a` (last axis fastest,
 * widths `${bw}_a`; `${p}b0_a` keep them for `reset`), `advance` moves them `step` rows on with one compare on the
 * last axis and a short carry loop on the middle one (the step's quotient and remainder by the last width are
 * workgroup-uniform, computed once), `row` gives group coordinates `${p}g_a` = `${bs}_a` + offset, token and buffer
 * row of head `head` among `heads`. The offsets past the box's end are never used (callers test the box index).
 */
export function mmaBoxCursor(o: { readonly r: number; readonly p: string; readonly start: string; readonly step: string; readonly bs: string; readonly bw: string }): {
  readonly decls: string;
  readonly advance: (ind: string) => string;
  readonly reset: (ind: string) => string;
  readonly row: (ind: string, heads: string, head: string) => string;
} {
  const { r, p, bw } = o;
  const last = r - 1;
  const axes = range(r);
  const decode =
    r === 1
      ? `  let ${p}b0_0 = i32(${o.start});`
      : `  var ${p}b_rest = i32(${o.start});
${axes
  .slice(1)
  .reverse()
  .map((a) => `  let ${p}b0_${a} = ${p}b_rest % ${bw}_${a};\n  ${p}b_rest = ${p}b_rest / ${bw}_${a};`)
  .join('\n')}
  let ${p}b0_0 = ${p}b_rest;
  let ${p}b_q = i32(${o.step}) / ${bw}_${last};
  let ${p}b_r = i32(${o.step}) % ${bw}_${last};`;
  return {
    decls: `${decode}\n${axes.map((a) => `  var ${p}b_${a} = ${p}b0_${a};`).join('\n')}`,
    advance: (ind) =>
      r === 1
        ? `${ind}${p}b_0 = ${p}b_0 + i32(${o.step});`
        : [
            `${ind}${p}b_${last} = ${p}b_${last} + ${p}b_r; ${p}b_${last - 1} = ${p}b_${last - 1} + ${p}b_q;`,
            `${ind}if (${p}b_${last} >= ${bw}_${last}) { ${p}b_${last} = ${p}b_${last} - ${bw}_${last}; ${p}b_${last - 1} = ${p}b_${last - 1} + 1; }`,
            ...(r === 3 ? [`${ind}while (${p}b_1 >= ${bw}_1) { ${p}b_1 = ${p}b_1 - ${bw}_1; ${p}b_0 = ${p}b_0 + 1; }`] : []),
          ].join('\n'),
    reset: (ind) => axes.map((a) => `${ind}${p}b_${a} = ${p}b0_${a};`).join('\n'),
    row: (ind, heads, head) => `${axes.map((a) => `${ind}let ${p}g_${a} = ${o.bs}_${a} + ${p}b_${a};`).join('\n')}
${ind}let ${p}tok = ${tokenOf(r as NaRank, (a) => `${p}g_${a} * params.dil_${a} + g_${a}`)};
${ind}let ${p}row = (tok_base + ${p}tok) * params.${heads} + ${head};`,
  };
}

/**
 * The key cursor of the chunk staging (forward and dq): box index st_row, advanced a chunk per fetch; in 3-D and in
 * the float32 split the box index is decoded per chunk instead (`boxKeyRow`): with the cursor the 3-D forward ran
 * 1.03x and the dq kernel 1.08-1.24x slower on an H200 (session 11; 2-D 1.02-1.05x faster, the dkv kernel
 * 1.09-1.15x faster in 2-D and 3-D), and the split forward 5-9% slower in 1-D and 2-D (session 12's float32 table
 * against session 10's; its 3-D row, which never had the cursor, held). Those kernels hold more registers, and
 * extra live values cost them (session 12's timing probes; session 13 counted their residency, unchanged: the cost
 * is the work on each chunk's path, not occupancy). There, where the decode stays, it divides by float reciprocal
 * (`fastDivide`).
 */
function keyCursor(r: number, split: boolean, fastDivide = false): { readonly decls: string; readonly advance: (ind: string) => string; readonly row: (ind: string) => string } {
  if (decodesPerChunk(r, split)) {
    // With `fastDivide`: the box widths' reciprocals once, then `box_divmod` per staged row.
    const fast = mmaFastDivide(r, split, fastDivide);
    const decls = fast ? `${range(r).slice(1).map((a) => `  let inv_bw_${a} = 1.0 / f32(bw_${a});`).join('\n')}\n` : '';
    return { decls, advance: () => '', row: () => boxKeyRow(r as NaRank, fast) };
  }
  const c = mmaBoxCursor({ r, p: 'k', start: 'st_row', step: 'KEY_CHUNK', bs: 'bs', bw: 'bw' });
  return { decls: `${c.decls}\n`, advance: (ind) => `${c.advance(ind)}\n`, row: (ind) => c.row(ind, 'heads_kv', 'hk') };
}

/** Whether the key staging decodes each staged row's box index per chunk (3-D, the split) instead of by cursor. */
function decodesPerChunk(r: number, split: boolean): boolean {
  return r === 3 || split;
}

/**
 * Whether a kernel's key staging divides by float reciprocal: `fastDivide` asked for where the staging decodes per
 * chunk (rank 1 has nothing to divide); such a kernel includes `BOX_DIVMOD_FN`.
 */
export function mmaFastDivide(r: number, split: boolean, fastDivide: boolean | undefined): boolean {
  return fastDivide === true && r > 1 && decodesPerChunk(r, split);
}

/**
 * WGSL of `box_divmod(n, w, inv)`: (n / w, n % w) for n below 2^21 (`MMA_FAST_DIVIDE_ROWS`) and inv = 1 / f32(w)
 * computed on the GPU: with the division up to 2.5 ulp off (WGSL's bound) and the product rounded, the float
 * quotient is off by less than one there (3 x 2^-23 relative on a quotient below 2^21: under 0.75), and one step
 * corrects it.
 */
export const BOX_DIVMOD_FN = `fn box_divmod(n: u32, w: u32, inv: f32) -> vec2<u32> {
  var q = u32(f32(n) * inv);
  var r = i32(n) - i32(q * w);
  if (r < 0) { q = q - 1u; r = r + i32(w); } else if (r >= i32(w)) { q = q + 1u; r = r - i32(w); }
  return vec2<u32>(q, u32(r));
}
`;

/** The staging's key cursor (`keyCursor`) for a staging shape. */
const stagingCursor = (o: StagingShape & { readonly r: number }) => keyCursor(o.r, o.split !== undefined, o.fastDivide === true);

function mmaFetchDecls(o: StagingShape & { readonly r: number }): string {
  const { nk, nv } = stagingFetchCounts(o);
  return `  let st_row = lid / ${o.tpk}u;
  let st_sub = lid % ${o.tpk}u;
${stagingCursor(o).decls}${range(nk)
  .map((i) => `  var pk_${i} = ${stagingFetchZero(o)};`)
  .join('\n')}
${range(nv)
  .map((i) => `  var pv_${i} = ${stagingFetchZero(o)};`)
  .join('\n')}${o.noCoords === true ? '' : `\n  var pkc = ${keyCoords(o).none};`}`;
}

/** The staging's key-coordinate table (`kc_sh`, one row per staged key). */
const keyCoords = (o: { readonly packed?: boolean }) => mmaCoordTable(o.packed === true, 'kc_sh');

function mmaFetchKeyChunk(o: StagingShape & { readonly r: number }, c0: string, ind: string): string {
  const { nk, nv } = stagingFetchCounts(o);
  const cursor = stagingCursor(o);
  const guard = (n: number, d4: number, i: number): string => stagingPartGuard(n, o.tpk, d4, i);
  return `${ind}{
${ind}  let kbox = ${c0} + st_row;
${o.noCoords === true ? '' : `${ind}  pkc = ${keyCoords(o).none};\n`}${range(nk)
  .map((i) => `${ind}  pk_${i} = ${stagingFetchZero(o)};`)
  .join('\n')}
${range(nv)
  .map((i) => `${ind}  pv_${i} = ${stagingFetchZero(o)};`)
  .join('\n')}
${ind}  if (kbox < box_n) {
${cursor.row(`${ind}    `)}
${
  o.noCoords === true
    ? ''
    : `${ind}    pkc = ${
        o.packed === true
          ? mmaPackedCoords(o.r).pack((a) => `kg_${a} - bs_${a}`)
          : `vec4<i32>(${range(o.r)
              .map((a) => `kg_${a}`)
              .join(', ')}${', 0'.repeat(4 - o.r)})`
      };\n`
}${range(nk)
  .map((i) => `${ind}    ${guard(nk, stagingUnits(o, o.d4), i)}{ pk_${i} = ${o.wide === true ? 'load_k8(krow * (HEAD_DIM / 8u)' : 'load_k(krow * HEAD_DIM'}, st_sub + ${i * o.tpk}u); }`)
  .join('\n')}
${range(nv)
  .map((i) => `${ind}    ${guard(nv, stagingUnits(o, o.dv4), i)}{ pv_${i} = ${o.wide === true ? 'load_v8(krow * (HEAD_DIM_V / 8u)' : 'load_v(krow * HEAD_DIM_V'}, st_sub + ${i * o.tpk}u); }`)
  .join('\n')}
${ind}  }
${cursor.advance(`${ind}  `)}${ind}}`;
}

/** Which rows a commit writes: K with the key coordinates, V, or both (then the barrier). */
type CommitParts = 'k' | 'v' | 'both';

function mmaCommitKeyChunk(o: StagingShape & { readonly arr: string; readonly voff: number }, parts: CommitParts = 'both'): string {
  const { nk, nv } = stagingFetchCounts(o);
  const guard = (n: number, d4: number, i: number): string => stagingPartGuard(n, o.tpk, d4, i);
  const k = range(nk)
    .map((i) => `    ${guard(nk, stagingUnits(o, o.d4), i)}{ ${stagingStore(o, o.arr, (step) => `st_row * LDK + ${step}u * (st_sub + ${i * o.tpk}u)`, `pk_${i}`, o.split?.scaleK)} }`)
    .join('\n');
  const v = range(nv)
    .map((i) => `    ${guard(nv, stagingUnits(o, o.dv4), i)}{ ${stagingStore(o, o.arr, (step) => `${o.voff}u + st_row * LDV + ${step}u * (st_sub + ${i * o.tpk}u)`, `pv_${i}`, o.split?.scaleV)} }`)
    .join('\n');
  const kc = o.noCoords === true ? [] : [`    if (st_sub == 0u) { ${keyCoords(o).store('st_row', 'pkc')} }`];
  const barrier = '    workgroupBarrier();';
  if (parts === 'v') return v;
  return [k, ...(parts === 'both' ? [v] : []), ...kc, barrier].join('\n');
}

/**
 * K and V in turn through one chunk-sized staging area (`FusedForwardMmaSpec.kvInTurn`): `top` commits the chunk's
 * K rows and coordinates (then a barrier), `afterS` goes after the barrier that follows S = Q K^T (every subgroup
 * is done with K): it commits the chunk's V rows over them and fetches the next chunk into registers, so the
 * barrier before P V makes V visible with P. Same barriers per chunk as `mmaStagedKeyLoop`; the next chunk's loads
 * are issued after S instead of before it.
 */
function mmaStagedKeyLoopInTurn(o: StagingShape & { readonly r: number; readonly arr: string; readonly voff: number }): { readonly before: string; readonly top: string; readonly afterS: string } {
  return {
    before: `${mmaFetchDecls(o)}\n${mmaFetchKeyChunk(o, '0u', '  ')}`,
    top: mmaCommitKeyChunk(o, 'k'),
    afterS: `${mmaCommitKeyChunk(o, 'v')}
    if (ch + 1u < n_chunks) {
${mmaFetchKeyChunk(o, 'c0 + KEY_CHUNK', '      ')}
    }`,
  };
}

/**
 * Key-chunk staging with register prefetch, shared by the forward and the dq kernel: `mmaFetchKeyChunk` loads the
 * staging thread's K and V vec4s and the key's coordinates of the chunk starting at `c0` into registers (zeros and
 * an out-of-box coordinate past the box), `mmaCommitKeyChunk` writes them to workgroup memory (K rows at 0, V rows at
 * `voff`, coordinates to kc_sh), and `mmaStagedKeyLoop` places them: the first fetch before the chunk loop, then per
 * step the commit, a barrier, and the next chunk's fetch, so its global loads are in flight while this chunk is
 * multiplied. Measured on an H200 (f16 forward): 1.5-1.9x faster than loading each chunk after the previous one's
 * last barrier (FLUX-like 85 -> 45 ms, 2-D 256x256 K=15 4.27 -> 2.27 ms, 1-D K=2047 causal 2.74 -> 1.77 ms).
 */
export function mmaStagedKeyLoop(o: StagingShape & { readonly r: number; readonly arr: string; readonly voff: number }): { readonly before: string; readonly step: string } {
  return {
    before: `${mmaFetchDecls(o)}\n${mmaFetchKeyChunk(o, '0u', '  ')}`,
    step: `${mmaCommitKeyChunk(o)}
    if (ch + 1u < n_chunks) {
${mmaFetchKeyChunk(o, 'c0 + KEY_CHUNK', '      ')}
    }`,
  };
}

/**
 * WGSL gathering a tile's rows into fragments through a staging area, pass by pass (`passRows` rows of `width4` vec4s
 * each, over `wg` invocations): per element `e` of a pass, `rr` = e / width4 (the pass's row) and `c` = e % width4
 * (its vec4) are in scope for `value(first, guard)` (statements before the load; `guard` is a condition the element
 * needs, or '' when every element of the pass is real), `load(first)` (the vec4 expression) and `store(v)` (statements
 * storing vec4 `v` at rr, c); after each pass a barrier, `fragments(first, rows)` (the owners' fragment loads) and a
 * barrier. Loop: each invocation loads and stores its elements in turn, waiting on each load. `batched`: a pass's
 * elements are loaded first into registers (`${tag}v_p_i`), so their latencies overlap, then stored.
 */
export function mmaGatherPasses(o: {
  readonly rows: number;
  readonly passRows: number;
  readonly width4: number;
  readonly wg: number;
  readonly batched: boolean;
  readonly tag: string;
  readonly type: string;
  readonly value: (first: number, guard: string) => string;
  readonly load: (first: number) => string;
  readonly store: (v: string) => string;
  readonly fragments: (first: number, rows: number) => string;
}): string {
  const { width4: w, wg, tag } = o;
  return range(Math.ceil(o.rows / o.passRows))
    .map((p) => {
      const first = p * o.passRows;
      const rows = Math.min(o.passRows, o.rows - first);
      const n = rows * w;
      let stage: string;
      if (o.batched) {
        const parts = range(Math.ceil(n / wg));
        // The pass's guard where its rows' vec4s are not a whole number of workgroup widths.
        const inPass = (e: string): string => (n % wg === 0 ? '' : `${e} < ${n}u`);
        const e = (i: number): string => `${tag}e_${p}_${i}`;
        const v = (i: number): string => `${tag}v_${p}_${i}`;
        const loads = parts.map(
          (i) => `  let ${e(i)} = lid + ${i * wg}u;
  var ${v(i)} = ${o.type}(0.0);
  {
    let rr = ${e(i)} / ${w}u;
    let c = ${e(i)} % ${w}u;
${withBody(o.value(first, inPass(e(i))))}    ${v(i)} = ${o.load(first)};
  }`,
        );
        const stores = parts.map((i) => {
          const g = inPass(e(i));
          return `  ${g === '' ? '' : `if (${g}) `}{ let rr = ${e(i)} / ${w}u; let c = ${e(i)} % ${w}u; ${o.store(v(i))} }`;
        });
        stage = [...loads, ...stores].join('\n');
      } else {
        stage = `  for (var e = lid; e < ${n}u; e += ${wg}u) {
    let rr = e / ${w}u;
    let c = e % ${w}u;
${withBody(o.value(first, ''))}    let ${tag}v = ${o.load(first)};
    ${o.store(`${tag}v`)}
  }`;
      }
      return `${stage}
  workgroupBarrier();
${o.fragments(first, rows)}
  workgroupBarrier();`;
    })
    .join('\n');
}

/** One accumulator written by `mmaScratchEpilogue`: fragments `${acc}_0 .. ${acc}_{frags-1}`. */
export interface MmaEpilogueOut {
  readonly acc: string;
  readonly frags: number;
  /**
   * WGSL storing this lane's eight columns of fragment `j` (its columns 8 hf .. 8 hf + 7, as vec4<f32> `lo` and `hi`)
   * to the output row.
   */
  readonly write: (j: number, lo: string, hi: string) => string;
}

/**
 * WGSL writing result fragments to their output rows through f32 scratch rows (`LDS` floats each; `perScratch`
 * fragments side by side per row), in rounds that fill every scratch given: store this subgroup's fragments, barrier,
 * each lane reads its row's eight columns of each (`srow` its scratch row) and writes them under `guard`, barrier
 * (none after the last round: nothing after the epilogue touches workgroup memory). A round holds
 * `perScratch x scratches` fragments, so a kernel with two free scratches (the backward's S and dP) needs half the
 * rounds; one 16-byte write per lane per fragment (two lanes per row).
 */
export function mmaScratchEpilogue(o: {
  readonly outs: readonly MmaEpilogueOut[];
  readonly scratches: readonly string[];
  /** Each scratch's row stride (a WGSL constant name); absent = `LDS` for all. */
  readonly strides?: readonly string[];
  readonly perScratch: number;
  readonly srow: string;
  readonly guard: string;
}): string {
  const items = o.outs.flatMap((out) => range(out.frags).map((j) => ({ out, j })));
  const cap = o.perScratch * o.scratches.length;
  const rounds = range(Math.ceil(items.length / cap)).map((rd) => items.slice(rd * cap, rd * cap + cap));
  return rounds
    .map((round, rd) => {
      const at = (t: number): { arr: string; col: number; ld: string } => {
        const i = Math.floor(t / o.perScratch);
        return { arr: o.scratches[i] as string, col: (t % o.perScratch) * F, ld: o.strides?.[i] ?? 'LDS' };
      };
      const stores = round.map(({ out, j }, t) => `  subgroupMatrixStore<row_major>(&${at(t).arr}, rbase * ${at(t).ld} + ${at(t).col}u, ${out.acc}_${j}, ${at(t).ld});`);
      const writes = round.map(({ out, j }, t) => {
        const { arr, col, ld } = at(t);
        return `    {
      let e = ${o.srow} * ${ld} + ${col}u + 8u * hf;
      let lo = vec4<f32>(${arr}[e], ${arr}[e + 1u], ${arr}[e + 2u], ${arr}[e + 3u]);
      let hi = vec4<f32>(${arr}[e + 4u], ${arr}[e + 5u], ${arr}[e + 6u], ${arr}[e + 7u]);
      ${out.write(j, 'lo', 'hi')}
    }`;
      });
      return `${stores.join('\n')}
  workgroupBarrier();
  if (${o.guard}) {
${writes.join('\n')}
  }${rd + 1 < rounds.length ? '\n  workgroupBarrier();' : ''}`;
    })
    .join('\n');
}

/** WGSL of the K and V row loaders of 16-byte staging loads (`wide`): `load_k8` / `load_v8`, eight halves each. */
export const WIDE_KV_LOADERS = `fn load_k8(base: u32, c: u32) -> vec4<u32> { return key[base + c]; }
fn load_v8(base: u32, c: u32) -> vec4<u32> { return value[base + c]; }`;

/** WGSL of the helper packing eight f32s into eight f16s as one 16-byte store (`pack8`). */
export const PACK8_FN = `fn pack8(a: vec4<f32>, b: vec4<f32>) -> vec4<u32> {
  return vec4<u32>(bitcast<vec2<u32>>(vec4<f16>(a)), bitcast<vec2<u32>>(vec4<f16>(b)));
}
`;

/**
 * A kernel's text specialised to dilation and stride 1 on every axis (the specs' `unitSteps`): each
 * `params.dil_a` and `params.str_a` becomes the constant 1, so the divisions and remainders by them in the window
 * functions, the tile decode and the token arithmetic fold away when the shader is compiled.
 */
export function withUnitSteps(code: string, on: boolean | undefined): string {
  return on === true ? code.replace(/\bparams\.(dil|str)_(\d)\b/g, '1i') : code;
}

/** Statements followed by a newline, or nothing. */
const withBody = (x: string): string => (x === '' ? '' : `${x}\n`);

/** A tensor-core (generation 3) forward kernel spec. */
export type FusedForwardMmaSpec = Pick<FusedForwardSpec, 'rank' | 'kernelSize' | 'causal' | 'dim' | 'dimV' | 'queryTile' | 'keyChunk' | 'hasLse'> & {
  /** Subgroups per workgroup (NSG); the query tile has 16 * NSG queries. */
  readonly subgroups: number;
  /** Relative positional bias [H, 2K-1, ...] added to the logits (non-causal, odd kernel sizes); absent = none. */
  readonly hasRpb?: boolean;
  /**
   * float32 tensors on the f16 tensor cores ("split"): Q, K, V (and P) are scaled by a power of two per tensor so
   * that max |x| lands in (2^13, 2^14] (the `scales` binding holds max |Q|, max |K|, max |V|, see
   * `generateAbsMax`), split into hi (x with its mantissa masked to f16's 10 bits) and lo = f16(x - hi)
   * (`storeSplit4`), and every product takes three multiplies
   * (hi hi + hi lo + lo hi, f32 accumulation): about 2^-22 relative error per product against f16's 2^-11.
   * Absent = float16 tensors.
   */
  readonly split?: boolean;
  /**
   * S and P scratch rows of exactly the key chunk, without the bank-conflict padding (S +4 floats, P +8 halves):
   * less workgroup memory per query. Measured on an H200 (f16, 16-key chunks, same run): with 4 subgroups 1.07-1.34x
   * faster on six problems (2-D 128x128 K=7 156 -> 121 us), with 8 subgroups 1.01-1.08x slower. The K/V staging rows
   * keep their padding (unpadded, they ran 1.5-2.3x slower). Absent = padded rows.
   */
  readonly tightScratch?: boolean;
  /**
   * K and V staged in turn through one chunk-sized area (K for S, then V over it for P V) instead of side by side:
   * half the staging's workgroup memory, the same barriers per chunk, the next chunk's loads issued after S instead
   * of before it. H200 (session 10): float32 (split) 1.17-1.30x faster on five of six problems, float16 no faster (1-D
   * 1.1x slower). Absent = K and V side by side.
   */
  readonly kvInTurn?: boolean;
  /**
   * P (f16) written over the chunk's staged K rows, dead once every subgroup has passed the barrier after S, instead
   * of into its own array: rows x P-row bytes less workgroup memory, no other change. Needs the K rows to hold P
   * (16 x subgroups x P row <= chunk x K row: up to 4 subgroups at 16-key chunks) and K and V side by side (not
   * with `kvInTurn`). H200 (session 10): about as fast as `kvInTurn` in float32, no faster than the default in float16;
   * since session 25 the float16 default pairs it with `wideS`, which the freed memory pays for.
   */
  readonly pOverK?: boolean;
  /**
   * Key coordinates packed into one u32 per staged key (`mmaPackedCoords`): a quarter of the coordinate loads per
   * lane and one register per staging thread instead of four. Ranks 2 and 3 without rpb; the caller guarantees every
   * group extent is at most `mmaPackedMaxExtent(rank)` (box widths stay below the field width). Absent = a vec4<i32>
   * per key.
   */
  readonly packedCoords?: boolean;
  /**
   * S scratch rows padded by 4 floats while P rows stay exactly the chunk (with `tightScratch`): the padded layout's
   * S (fewer bank conflicts in its matrix stores and the softmax's reads) for 16 bytes more per query row. Absent =
   * both as `tightScratch` says.
   */
  readonly padS?: boolean;
  /**
   * S scratch rows of the key chunk plus 8 floats, in either layout (P rows as `tightScratch` says): the S matrix
   * stores ran 15% faster into rows of 24 floats than of 16 or 20 (H200, session 25, `sgmat-rates-device.ts`), for
   * 16 bytes more per query row than `padS`. Not with `padS`. Absent = S rows as `tightScratch` and `padS` say.
   */
  readonly wideS?: boolean;
  /**
   * K and V loaded 16 bytes (eight halves) per load instead of 8 (float16 only): half the staging's global loads
   * per thread. Absent = vec4<f16> loads.
   */
  readonly wideLoads?: boolean;
  /**
   * The staged key's box index decoded by float reciprocal (`box_divmod`) where it is decoded per chunk (3-D, the
   * split). The caller guarantees the key box has fewer than 2^21 rows (`MMA_FAST_DIVIDE_ROWS`). Absent = integer
   * division.
   */
  readonly fastDivide?: boolean;
  /** The first chunk's K/V loads issued before the Q gather (both in flight at once). Absent = after it. */
  readonly earlyFetch?: boolean;
  /**
   * Each Q gather pass issues all of its global loads before storing any (their latencies overlap). Absent = a loop
   * that waits on each load before the next.
   */
  readonly batchedQGather?: boolean;
  /**
   * Dilation and stride 1 on every axis, compiled in (`withUnitSteps`): the window math and the tile decode lose their
   * divisions by them. The caller guarantees the problem has them. Absent = read from the uniforms.
   */
  readonly unitSteps?: boolean;
};

/** Key-box rows below which `fastDivide` is exact. */
export const MMA_FAST_DIVIDE_ROWS = 1 << 21;

const F = MMA_FRAGMENT;
const RESULT_TYPE = `subgroup_matrix_result<f32, ${F}, ${F}>`;

/**
 * WGSL of `acc` plus left fragment `a` times the right fragment `b(false)`; with the split (`aLo`, the left's lo
 * half, and `b(true)`, the right's) three multiplies: hi hi + hi lo + lo hi (lo lo is below f32's rounding).
 */
export function mmaMulAdd(a: string, aLo: string | undefined, b: (lo: boolean) => string, acc: string): string {
  const one = `subgroupMatrixMultiplyAccumulate(${a}, ${b(false)}, ${acc})`;
  return aLo === undefined ? one : `subgroupMatrixMultiplyAccumulate(${aLo}, ${b(false)}, subgroupMatrixMultiplyAccumulate(${a}, ${b(true)}, ${one}))`;
}

/** The backward split's extra binding: max |Q|, |K|, |V|, |dO|, |O| (`scales`), from one abs-max dispatch over the five. */
export const SPLIT_BACKWARD_BINDINGS: readonly StorageBinding[] = [{ name: 'scales', access: 'read' }];

/**
 * WGSL of the backward split's scales (the NA and dense tensor-core backwards): Q, K, V, dO (`scq`, `sck`, `scv`,
 * `scg`, from `scales` = max |Q|, |K|, |V|, |dO|, |O|), dS's from its bound (`scd`): |dP| <=
 * D_v max |dO| max |V| and |delta| = |dO . O| <= D_v max |dO| max |O|, so |dS| <= factor D_v max |dO| (max |V| +
 * max |O|) with P <= 1 (`factor` is how the kernel scales dS: `abs(params.scale) * ` where dS carries the softmax
 * scale). max |O| and not max |V| alone: O may be a merged output (extra KV tokens), whose values are not V's. And
 * the factor that undoes dO's and V's scales on dP (`dp_un`).
 */
export function splitBackwardScales(dimV: number, factor = ''): string {
  return `  let scq = split_scale(scales[0]);
  let sck = split_scale(scales[1]);
  let scv = split_scale(scales[2]);
  let scg = split_scale(scales[3]);
  let scd = split_scale(${factor}${dimV}.0 * scales[3] * (scales[2] + scales[4]));
  let dp_un = 1.0 / (scg * scv);`;
}

/**
 * The split's scale for a tensor whose max |x| is `m`: 2^(14 - ceil(log2 m)), exact (ldexp), so max |x| times it is
 * at most 2^14 (f16's largest finite is 65504); the exponent is clamped to [-60, 60] so that products of two scales
 * stay finite in f32 (tensors beyond 2^74 overflow S in f32 on any path); 1 for m = 0, infinities and NaN (those
 * propagate as on the plain path).
 */
export const SPLIT_SCALE_FN = `fn split_scale(m: f32) -> f32 {
  if (!(m > 0.0) || m > 3.0e38) { return 1.0; }
  return ldexp(1.0, clamp(14 - i32(ceil(log2(m))), -60, 60));
}
`;
const range = (n: number): number[] => Array.from({ length: n }, (_, i) => i);

/**
 * Workgroup-memory layout of the mma kernels: 16 rows per subgroup; a staging area for one chunk of rows of both
 * head dims (K and V, or Q and dO), rows padded by 8 halves (bank conflicts; 16-byte matrix strides); an f32 scratch
 * row of `chunk + 4` and an f16 P row of `chunk + 8` per fragment row, or of exactly `chunk` with `tightScratch`
 * (less workgroup memory; the kernels' `tightScratch` spec field), S rows still padded with `padS`, or by 8 floats
 * in either layout with `wideS`.
 */
export interface MmaLayout {
  readonly rows: number;
  readonly ldk: number;
  readonly ldv: number;
  readonly lds: number;
  readonly ldp: number;
  /** f16 elements of the staging area. */
  readonly stageElems: number;
}

export function mmaLayout(dim: number, dimV: number, chunk: number, subgroups: number, tightScratch = false, padS = false, wideS = false): MmaLayout {
  const ldk = dim + 8;
  const ldv = dimV + 8;
  const lds = wideS ? chunk + 8 : tightScratch && !padS ? chunk : chunk + 4;
  return { rows: F * subgroups, ldk, ldv, lds, ldp: tightScratch ? chunk : chunk + 8, stageElems: chunk * (ldk + ldv) };
}

/** Rows of stride `ld` one pass through the staging area gathers: a multiple of 16, at most the layout's rows. */
export function mmaPassRows(l: MmaLayout, ld: number): number {
  return Math.min(l.rows, F * Math.floor(l.stageElems / ld / F));
}

/**
 * The shape rules every mma kernel spec shares, in order (entries per axis, subgroup count, 16 rows per subgroup,
 * chunk size, head dims multiples of 16), worded with the kernel's names for its tile and chunk; or undefined.
 */
export function mmaShapeProblem(o: {
  readonly rank: number;
  readonly kernelSize: readonly number[];
  readonly causal: readonly boolean[];
  readonly tile: readonly number[];
  readonly subgroups: number;
  readonly chunk: number;
  readonly dim: number;
  readonly dimV: number;
  readonly chunks: readonly number[];
  readonly names: { readonly tileField: string; readonly tile: string; readonly rows: string; readonly chunk: string };
  /** Two subgroups per 16 rows, each owning half the head dims (the backward's `headSplit`). */
  readonly headSplit?: boolean;
}): string | undefined {
  const r = o.rank;
  if (o.kernelSize.length !== r || o.causal.length !== r || o.tile.length !== r) return `kernelSize, causal and ${o.names.tileField} need ${r} entries`;
  if (!(MMA_SUBGROUP_COUNTS as readonly number[]).includes(o.subgroups)) return `subgroups=${o.subgroups} is not one of ${MMA_SUBGROUP_COUNTS.join(', ')}`;
  if (o.headSplit === true) {
    if (product(o.tile) !== (F / 2) * o.subgroups) return `${o.names.tile} ${formatShape(o.tile)} must have ${(F / 2) * o.subgroups} ${o.names.rows} (16 per pair of subgroups with headSplit)`;
  } else if (product(o.tile) !== F * o.subgroups) return `${o.names.tile} ${formatShape(o.tile)} must have ${F * o.subgroups} ${o.names.rows} (16 per subgroup)`;
  if (!o.chunks.includes(o.chunk)) return `${o.names.chunk} ${o.chunk} is not one of ${o.chunks.join(', ')}`;
  if (o.dim % F !== 0 || o.dimV % F !== 0) return `head dims ${o.dim}/${o.dimV} must be multiples of ${F}`;
  return undefined;
}

function layout(spec: Pick<FusedForwardMmaSpec, 'dim' | 'dimV' | 'keyChunk' | 'subgroups' | 'tightScratch' | 'kvInTurn' | 'padS' | 'wideS'>): MmaLayout {
  const l = mmaLayout(spec.dim, spec.dimV, spec.keyChunk, spec.subgroups, spec.tightScratch === true, spec.padS === true, spec.wideS === true);
  return spec.kvInTurn === true ? { ...l, stageElems: spec.keyChunk * Math.max(l.ldk, l.ldv) } : l;
}

/** Bytes of workgroup memory a spec declares (K/V staging, S scratch, P, key coordinates, flag; split: lo halves). */
export function fusedForwardMmaWorkgroupBytes(
  spec: Pick<FusedForwardMmaSpec, 'dim' | 'dimV' | 'keyChunk' | 'subgroups' | 'split' | 'tightScratch' | 'kvInTurn' | 'pOverK' | 'packedCoords' | 'padS' | 'wideS'>,
): number {
  const l = layout(spec);
  const halves = (spec.split === true ? 2 : 1) * (l.stageElems + (spec.pOverK === true ? 0 : l.rows * l.ldp));
  return 2 * halves + 4 * l.rows * l.lds + mmaCoordTable(spec.packedCoords === true, 'kc_sh').bytes(spec.keyChunk) + 16;
}

/** Why a spec cannot be generated (internal consistency, not device limits), or undefined. */
export function fusedForwardMmaSpecProblem(spec: FusedForwardMmaSpec): string | undefined {
  const shape = mmaShapeProblem({
    ...spec,
    tile: spec.queryTile,
    chunk: spec.keyChunk,
    chunks: MMA_KEY_CHUNKS,
    names: { tileField: 'queryTile', tile: 'query tile', rows: 'queries', chunk: 'key chunk' },
  });
  if (shape !== undefined) return shape;
  const l = layout(spec);
  if (mmaPassRows(l, l.ldk) < F) return `head_dim=${spec.dim} is too large for key chunk ${spec.keyChunk}`;
  if (spec.pOverK === true) {
    if (spec.kvInTurn === true) return 'pOverK needs K and V side by side (not kvInTurn)';
    if (l.rows * l.ldp > spec.keyChunk * l.ldk) return `pOverK: P (${l.rows} rows of ${l.ldp}) does not fit the chunk's K rows (${spec.keyChunk} of ${l.ldk})`;
  }
  if (spec.padS === true && spec.tightScratch !== true) return 'padS needs tightScratch (the padded layout already pads S)';
  if (spec.padS === true && spec.wideS === true) return 'padS and wideS both widen the S rows (by 4 and by 8 floats); take one';
  if (spec.wideLoads === true && spec.split === true) return 'wideLoads is for float16 tensors (the split loads f32)';
  if (spec.packedCoords === true && (spec.rank < 2 || spec.hasRpb === true)) return `packedCoords needs rank 2 or 3 without rpb (rank ${spec.rank}${spec.hasRpb === true ? ', rpb' : ''})`;
  return rpbWindowProblem(spec);
}

/** Generate the kernel for a spec. Pure: same spec, same text. */
/**
 * WGSL of the online softmax's chunk maximum on a row's two lanes (`x0 .. x{vpl-1}`, vec4 logits in the log2 domain,
 * masked ones at MASKED) and the lazy update of the running max `m`: it moves only when the chunk raises it by more
 * than 2^8 (P stays below 2^8, within f16), setting `alpha` (the old rows' factor) and the workgroup's rescale
 * `flag` to this `step`.
 */
export function mmaChunkMax(vpl: number): string {
  return `      var cmax = ${range(vpl)
    .map((v) => `max(max(x${v}.x, x${v}.y), max(x${v}.z, x${v}.w))`)
    .reduce((a, b) => `max(${a}, ${b})`)};
      cmax = max(cmax, subgroupShuffleXor(cmax, 1u));
      if (cmax > m + 8.0) {
        if (l > 0.0) { alpha = exp2(m - cmax); }
        m = cmax;
      }
      if (alpha != 1.0) { flag.x = step; }`;
}

/**
 * WGSL of the rare rescale of the O fragments `o_0 .. o_{dv16-1}` by each row's `alpha`, through the f32 scratch
 * `s_sh` (rows of `lds` floats), as many fragments per round as a scratch row holds: store, barrier, scale, barrier,
 * reload.
 */
export function mmaRescaleO(dv16: number, lds: number): string {
  const TPR = Math.floor(lds / F);
  return range(Math.ceil(dv16 / TPR))
    .map((rd) => {
      const tiles = range(dv16).slice(rd * TPR, rd * TPR + TPR);
      const at = (j: number): string => `rbase * LDS + ${(j - rd * TPR) * F}u`;
      return `${tiles.map((j) => `      subgroupMatrixStore<row_major>(&s_sh, ${at(j)}, o_${j}, LDS);`).join('\n')}
      workgroupBarrier();
      for (var c = hf; c < ${tiles.length * F}u; c += 2u) { s_sh[row * LDS + c] = s_sh[row * LDS + c] * alpha; }
      workgroupBarrier();
${tiles.map((j) => `      o_${j} = subgroupMatrixLoad<${RESULT_TYPE}, row_major>(&s_sh, ${at(j)}, LDS);`).join('\n')}`;
    })
    .join('\n');
}

export function generateFusedForwardMma(spec: FusedForwardMmaSpec): GeneratedKernel {
  const why = fusedForwardMmaSpecProblem(spec);
  if (why !== undefined) throw new NattenArgumentError(`generateFusedForwardMma: ${why}`);
  const key = kernelKey(FAMILY, GEN, spec);
  const r = spec.rank;
  const axes = range(r);
  const L = layout(spec);
  const NSG = spec.subgroups;
  const WG = MMA_SUBGROUP_SIZE * NSG;
  const BK = spec.keyChunk;
  const SPLIT = spec.split === true;
  const T = SPLIT ? 'f32' : 'f16';
  const D4 = spec.dim / 4;
  const DV4 = spec.dimV / 4;
  const D16 = spec.dim / F;
  const DV16 = spec.dimV / F;
  const BK16 = BK / F;
  const VPL = BK / 8; // vec4 columns per lane (two lanes per row)
  const TPK = WG / BK; // staging threads per key row
  const IN_TURN = spec.kvInTurn === true;
  const PACKED = spec.packedCoords === true;
  const packing = mmaPackedCoords(r);
  // P's array: its own, or the chunk's K rows (offset 0 of the staging area) once S is done with them (pOverK).
  const P_OVER_K = spec.pOverK === true;
  const P_ARR = P_OVER_K ? 'kv_sh' : 'p_sh';
  const PLO_ARR = P_OVER_K ? 'kvlo_sh' : 'plo_sh';
  // V's offset in the staging area: after the chunk's K rows, or at 0 where V takes K's place (kvInTurn).
  const VOFF = IN_TURN ? 0 : BK * L.ldk;
  const LEFT = `subgroup_matrix_left<f16, ${F}, ${F}>`;
  const RIGHT = `subgroup_matrix_right<f16, ${F}, ${F}>`;
  const RESULT = `subgroup_matrix_result<f32, ${F}, ${F}>`;
  const uniforms = fusedForwardUniformFields(r);
  const bindings: StorageBinding[] = [...fusedForwardBindings({ hasRpb: spec.hasRpb === true, hasLse: spec.hasLse }), ...(SPLIT ? [{ name: 'scales', access: 'read' as const }] : [])];
  const WIDE = spec.wideLoads === true;
  const decls = mmaBindingDecls(bindings, T, [...(WIDE ? ['key', 'value'] : []), ...(SPLIT ? [] : ['output'])]);
  const split = SPLIT ? { lo: 'kvlo_sh', scaleK: 'sk', scaleV: 'sv' } : undefined;
  const mul = (a: string, aLo: string, b: (lo: boolean) => string, acc: string): string => mmaMulAdd(a, SPLIT ? aLo : undefined, b, acc);
  const tokOf = (x: (a: number) => string): string => tokenOf(r, x);
  const decodeTile = (idx: string, p: string, ind: string): string => mmaDecodeTile(r, idx, p, ind, 'QUERY_TILE');
  const inWindow = (kc: string): string => mmaInWindow(r, kc);

  // ---- Q fragments: gather the tile's rows through the K/V staging area, pass by pass (`mmaGatherPasses`).
  const qGather = mmaGatherPasses({
    rows: L.rows,
    passRows: mmaPassRows(L, L.ldk),
    width4: D4,
    wg: WG,
    batched: spec.batchedQGather === true,
    tag: 'q',
    type: `vec4<${T}>`,
    value: (first, guard) => `${decodeTile(`${first}u + rr`, 'sq', '    ')}
    let in_q = ${axes.map((a) => `qf_${a} + sq_${a} < n_${a}`).join(' && ')}${guard === '' ? '' : ` && ${guard}`};
    let qtok = ${tokOf((a) => `(qf_${a} + sq_${a}) * params.dil_${a} + g_${a}`)};`,
    load: () => `select(vec4<${T}>(0.0), load_q(select(0u, ((tok_base + qtok) * params.heads + h) * HEAD_DIM, in_q), c), in_q)`,
    store: (v) => storeSplit4('kv_sh', 'rr * LDK + 4u * c', v, split, 'sq'),
    fragments: (first, rows) => `  if (rbase >= ${first}u && rbase < ${first + rows}u) {
${range(D16)
  .map(
    (kk) =>
      `    q_${kk} = subgroupMatrixLoad<${LEFT}, row_major>(&kv_sh, (rbase - ${first}u) * LDK + ${kk * F}u, LDK);${SPLIT ? `\n    qlo_${kk} = subgroupMatrixLoad<${LEFT}, row_major>(&kvlo_sh, (rbase - ${first}u) * LDK + ${kk * F}u, LDK);` : ''}`,
  )
  .join('\n')}
  }`,
  });

  const EARLY = spec.earlyFetch === true;
  const FAST_DIV = mmaFastDivide(r, SPLIT, spec.fastDivide);
  // The key coordinates are staged in rank 1 too, where nothing reads them: without the table and its stores the
  // 1-D forwards ran slower on an H200 (session 26, same call: L=4096 K=127 26.0 -> 26.7 us, K=2047 causal 1168 ->
  // 1257), while the backward kernels gained (`noCoords` there).
  const stagingShape = { r, arr: 'kv_sh', tpk: TPK, d4: D4, dv4: DV4, voff: VOFF, ...(split ? { split } : {}), ...(PACKED ? { packed: true } : {}), ...(WIDE ? { wide: true } : {}), ...(FAST_DIV ? { fastDivide: true } : {}) };
  const staging = mmaStagedKeyLoop(stagingShape);
  const turn = mmaStagedKeyLoopInTurn(stagingShape);
  const fetchFirst = IN_TURN ? turn.before : staging.before;

  // ---- S = Q K^T into this subgroup's scratch rows
  const sBlock = `    if (need) {\n${range(BK16)
    .map(
      (n) => `    {
      var s = ${RESULT}();
${range(D16)
  .map((kk) => `      s = ${mul(`q_${kk}`, `qlo_${kk}`, (lo) => `subgroupMatrixLoad<${RIGHT}, col_major>(&${lo ? 'kvlo_sh' : 'kv_sh'}, ${n * F}u * LDK + ${kk * F}u, LDK)`, 's')};`)
  .join('\n')}
      subgroupMatrixStore<row_major>(&s_sh, rbase * LDS + ${n * F}u, s, LDS);
    }`,
    )
    .join('\n')}\n    }`;

  // ---- mask + online softmax on this lane's interleaved vec4 columns of its row. Rank 1: a key's coordinate is
  // bs_0 + its box index, and a chunk inside the row's whole window (most chunks of a large window) skips the test.
  // A masked logit is MASKED (-3e38), below the running max's floor NEG (-1e30): exp2(x - m) is 0 for it without a
  // test, since m stays NEG until the row meets a key in its window and a chunk of masked keys never moves it.
  const maskStmt = (v: number): string => (spec.hasRpb ? maskRpbStmt(v) : maskOnlyStmt(v));
  const maskOnlyStmt = (v: number): string =>
    r === 1
      ? `if (!inside) {
        let kk = vec4<i32>(bs_0 + i32(c0 + cc${v})) + vec4<i32>(0, 1, 2, 3);
        x${v} = select(vec4<f32>(MASKED), x${v}, (kk >= vec4<i32>(ws_0)) & (kk < vec4<i32>(we_0)));
      }`
      : PACKED
        ? `x${v} = select(vec4<f32>(MASKED), x${v}, ${packing.inw4(`kc_sh[${col(v)}]`)});`
        : `{
        let k0 = kc_sh[cc${v}]; let k1 = kc_sh[cc${v} + 1u]; let k2 = kc_sh[cc${v} + 2u]; let k3 = kc_sh[cc${v} + 3u];
        let inw = vec4<bool>(${[0, 1, 2, 3].map((i) => inWindow(`k${i}`)).join(', ')});
        x${v} = select(vec4<f32>(MASKED), x${v}, inw);
      }`;
  // With rpb: each in-window logit gains rpb[h, key - query + K - 1 per axis] (base 2); the index of a masked key
  // may be out of range, so it reads entry 0 and the mask drops it.
  const maskRpbStmt = (v: number): string => {
    const keys = r === 1 ? [0, 1, 2, 3].map((i) => `vec4<i32>(bs_0 + i32(c0 + cc${v}) + ${i}, 0, 0, 0)`) : [0, 1, 2, 3].map((i) => `kc_sh[cc${v} + ${i}u]`);
    return `{
${[0, 1, 2, 3].map((i) => `        let k${i} = ${keys[i]};`).join('\n')}
        let inw = vec4<bool>(${[0, 1, 2, 3].map((i) => inWindow(`k${i}`)).join(', ')});
        let bias = vec4<f32>(${[0, 1, 2, 3].map((i) => `f32(rpb[select(0u, ${rpbIndexExpr(spec.kernelSize, (a) => `k${i}.${COORD[a] as string} - qi_${a}`)}, inw[${i}])])`).join(', ')});
        x${v} = select(vec4<f32>(MASKED), x${v} + bias * LOG2E, inw);
      }`;
  };
  const col = (v: number): string => `${v * 2}u + hf`;
  const softmax = `    if (need) {
      let srow = row * LDS;
${range(VPL)
  .map(
    (v) => `      let cc${v} = (${col(v)}) * 4u;
      var x${v} = vec4<f32>(s_sh[srow + cc${v}], s_sh[srow + cc${v} + 1u], s_sh[srow + cc${v} + 2u], s_sh[srow + cc${v} + 3u]) * ${SPLIT ? 'sscale' : 'params.scale_log2'};
      ${maskStmt(v)}`,
  )
  .join('\n')}
${mmaChunkMax(VPL)}
      var psum = 0.0;
      let prow = row * LDP;
${range(VPL)
  .map(
    (v) => `      {
        let p = exp2(x${v} - vec4<f32>(m));
        psum = psum + (p.x + p.y) + (p.z + p.w);
        ${SPLIT ? storeSplit4(P_ARR, `prow + cc${v}`, 'p', { lo: PLO_ARR }, '1.0') : `let ph = vec4<f16>(p);
        ${store4(P_ARR, `prow + cc${v}`, 'ph')}`}
      }`,
  )
  .join('\n')}
      psum = psum + subgroupShuffleXor(psum, 1u);
      l = l * alpha + psum;
    }`;

  // ---- the rare rescale of O by each row's alpha
  const rescale = mmaRescaleO(DV16, L.lds);
  const TPR = Math.floor(L.lds / F);
  // ---- the epilogue: O / l through the scratch, one 16-byte write per lane and fragment (float16: eight halves packed)
  const epilogue = mmaScratchEpilogue({
    outs: [
      {
        acc: 'o',
        frags: DV16,
        write: (j, lo, hi) =>
          SPLIT
            ? `output[orow * DV4 + ${4 * j}u + 2u * hf] = ${lo} * inv_l; output[orow * DV4 + ${4 * j}u + 2u * hf + 1u] = ${hi} * inv_l;`
            : `output[orow * ${spec.dimV / 8}u + ${2 * j}u + hf] = pack8(${lo} * inv_l, ${hi} * inv_l);`,
      },
    ],
    scratches: ['s_sh'],
    perScratch: TPR,
    srow: 'row',
    guard: 'valid',
  });

  const pv = `    if (need) {\n${range(BK16)
    .map(
      (n) =>
        `    let p_${n} = subgroupMatrixLoad<${LEFT}, row_major>(&${P_ARR}, rbase * LDP + ${n * F}u, LDP);${SPLIT ? `\n    let plo_${n} = subgroupMatrixLoad<${LEFT}, row_major>(&${PLO_ARR}, rbase * LDP + ${n * F}u, LDP);` : ''}`,
    )
    .join('\n')}
${range(DV16)
  .map(
    (j) =>
      `    o_${j} = ${range(BK16).reduce(
        (acc, n) => mul(`p_${n}`, `plo_${n}`, (lo) => `subgroupMatrixLoad<${RIGHT}, row_major>(&${lo ? 'kvlo_sh' : 'kv_sh'}, ${VOFF}u + ${n * F}u * LDV + ${j * F}u, LDV)`, acc),
        `o_${j}`,
      )};`,
  )
  .join('\n')}\n    }`;

  const code = withUnitSteps(`// ${key}
${MMA_HEADER}
${axes.map((a) => `const QUERY_TILE_${a}: u32 = ${spec.queryTile[a]}u;`).join('\n')}
const HEAD_DIM: u32 = ${spec.dim}u;
const HEAD_DIM_V: u32 = ${spec.dimV}u;
const DV4: u32 = ${DV4}u;
const KEY_CHUNK: u32 = ${BK}u;
const LDK: u32 = ${L.ldk}u;
const LDV: u32 = ${L.ldv}u;
const LDS: u32 = ${L.lds}u;
const LDP: u32 = ${L.ldp}u;
const NEG: f32 = -1.0e30;
const MASKED: f32 = -3.0e38;
${spec.hasRpb ? 'const LOG2E: f32 = 1.4426950408889634;\n' : ''}
${decls}
${uniformDecl(uniforms, bindings.length)}
${windowFunctions(spec.kernelSize, spec.causal)}
${rowLoader('load_q', 'query', spec.dim, true, T)}
${
  WIDE
    ? WIDE_KV_LOADERS
    : `${rowLoader('load_k', 'key', spec.dim, true, T)}
${rowLoader('load_v', 'value', spec.dimV, true, T)}`
}
${SPLIT ? SPLIT_SCALE_FN : PACK8_FN}${FAST_DIV ? BOX_DIVMOD_FN : ''}
// Every workgroup variable is a multiple of 16 bytes: matrix stores into workgroup memory misplace data when a
// variable starts off a 16-byte boundary (seen on NVIDIA through Dawn/Vulkan).
var<workgroup> kv_sh: array<f16, ${L.stageElems}>;
var<workgroup> s_sh: array<f32, ${L.rows * L.lds}>;
${P_OVER_K ? '' : `var<workgroup> p_sh: array<f16, ${L.rows * L.ldp}>;\n`}${SPLIT ? `var<workgroup> kvlo_sh: array<f16, ${L.stageElems}>;\n${P_OVER_K ? '' : `var<workgroup> plo_sh: array<f16, ${L.rows * L.ldp}>;\n`}` : ''}var<workgroup> kc_sh: ${mmaCoordTable(PACKED, 'kc_sh').type(BK)};
var<workgroup> flag: vec4<u32>;

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wg_id: vec3<u32>, @builtin(num_workgroups) wg_num: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
${forwardWorkgroupPrologue(r)}  let rbase = (lid / ${MMA_SUBGROUP_SIZE}u) * ${F}u;
  let lane = lid % ${MMA_SUBGROUP_SIZE}u;
  let hf = lane % 2u;
  let row = rbase + lane / 2u;

  // ---- this lane's query row: coordinates, validity, exact window (group coordinates)
${mmaQueryRowWindow(r, 'QUERY_TILE')}
  // Box-linear span of this row's window (row-major over the box): a chunk outside the span of every row of the
  // subgroup skips its matrix work and softmax (P stays out of O). Invalid rows span nothing.
${mmaSubgroupSpan(r, 'valid', (a) => `ws_${a}`, (a) => `we_${a} - 1`, 'bs', 'bw')}
${PACKED ? `${packing.lane}\n` : ''}
${SPLIT ? `  // Per-tensor power-of-two scales of the split (max |x| of Q, K, V into (2^13, 2^14]); S and O are unscaled after.
  let sq = split_scale(scales[0]);
  let sk = split_scale(scales[1]);
  let sv = split_scale(scales[2]);
  let sscale = params.scale_log2 / (sq * sk);
` : ''}  // The rescale flag starts at zero by this store (the Q gather's barriers follow), not by Dawn's zero-initialization.
  if (lid == 0u) { flag = vec4<u32>(0u); }
${EARLY ? `${fetchFirst}\n` : ''}${range(D16)
  .map((kk) => `  var q_${kk} = ${LEFT}();${SPLIT ? `\n  var qlo_${kk} = ${LEFT}();` : ''}`)
  .join('\n')}
${qGather}
${range(DV16)
  .map((j) => `  var o_${j} = ${RESULT}();`)
  .join('\n')}
  var m = NEG;
  var l = 0.0;
  var step = 0u;
${EARLY ? '' : fetchFirst}
  for (var ch = 0u; ch < n_chunks; ch++) {
    let c0 = ch * KEY_CHUNK;
    step = step + 1u;
    let need = i32(c0) <= span_hi && i32(c0 + KEY_CHUNK) > span_lo;
${r === 1 ? '    let inside = bs_0 + i32(c0) >= ws_0 && bs_0 + i32(c0 + KEY_CHUNK) <= we_0;' : ''}
${IN_TURN ? turn.top : staging.step}
${sBlock}
    workgroupBarrier();
${IN_TURN ? `${turn.afterS}
` : ''}    var alpha = 1.0;
${softmax}
    if (workgroupUniformLoad(&flag).x == step) {
${rescale}
    }
${pv}
    workgroupBarrier();
  }

  // ---- epilogue: O / l (f16) through the scratch, natural-log LSE (f32)
  let orow = (tok_base + ${tokOf((a) => `min(qi_${a}, n_${a} - 1) * params.dil_${a} + g_${a}`)}) * params.heads + h;
  let inv_l = 1.0 / ${SPLIT ? '(l * sv)' : 'l'};
${epilogue}
${spec.hasLse ? '  if (valid && hf == 0u) { logsumexp[orow] = (m + log2(l)) * 0.6931471805599453; }' : ''}
}
`, spec.unitSteps);
  return {
    key,
    code,
    entryPoint: 'main',
    workgroupSize: [WG, 1, 1],
    bindings,
    uniforms,
    workgroupBytes: fusedForwardMmaWorkgroupBytes(spec),
    features: ['shader-f16', 'subgroups', 'chromium-experimental-subgroup-matrix'],
  };
}
