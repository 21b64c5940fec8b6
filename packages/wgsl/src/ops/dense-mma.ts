/**
 * Dense attention on tensor cores (float16 tensors, f32 accumulation, WebGPU subgroup matrices 16x16x16; the float32
 * forward as the NA forward's split), the fast twins of `generateDenseForward`, `generateDenseBackwardQuery` and
 * `generateDenseBackwardKv` (same bindings, the split's scales added; same uniforms, same grids: a caller swaps one
 * kernel for the other). Heads-last layouts as there; causal top-left; varlen through the cumulative offsets; GQA by
 * head groups. Every workgroup variable is a multiple of 16 bytes: with two 4-byte ones first, the H200 misplaced the
 * backward kernels' matrix data.
 *
 * - Forward (flash-attention style): a workgroup of 4 subgroups owns 64 consecutive queries of one (batch, head), 16
 *   rows per subgroup, its Q fragments kept for the whole walk. Chunks of K and V rows are staged in workgroup memory
 *   (16-byte loads; the next chunk's loads in flight during this chunk's work). Per chunk: S = Q K^T into an f32
 *   scratch, the online softmax on each row by its two lanes (P as f16; the running max moves only when a chunk
 *   raises it by more than 2^8, and O is rescaled through the scratch only then), O += P V. A subgroup whose rows
 *   need none of a chunk's keys (causal, varlen) skips its multiplies.
 * - dQ kernel: the same walk with dO's fragments kept too; per chunk S = Q K^T and dP = dO V^T, then per element
 *   P = exp(scale S - lse) and dS = scale P (dP - delta) (f16), dQ += dS K. It forms delta = dO . O per row first and
 *   writes it for the dK/dV kernel.
 * - dK/dV kernel: a workgroup owns 64 keys of one (batch, key head), with their K and V fragments; it walks the query
 *   rows of the head group (positions of its split, `generateDenseBackwardKv`'s rows) in chunks of Q and dO rows:
 *   S^T = K Q^T, dP^T = V dO^T, P^T and dS^T per element, dV += P^T dO, dK += dS^T Q. With `partial`, each split
 *   writes f32 partial sums that `generateDenseGradReduce` adds in a fixed order.
 *
 * Rows of a left or result fragment belong to lanes as in the other mma kernels (two lanes per row: lane / 2 of its
 * subgroup's 16, each lane every other group of four columns), which the tests' emulation assumes.
 * ASSUMPTION (as the other mma kernels): subgroups are the aligned runs of 32 consecutive local invocation indices;
 * callers route here only where the subgroup size is fixed at 32.
 */
import { NattenArgumentError } from '@natten-web/core';
import { type GeneratedKernel, kernelKey, type StorageBinding, type UniformField, uniformDecl } from '../kernel.ts';
import {
  DENSE_BACKWARD_UNIFORMS,
  DENSE_QUERIES,
  DENSE_UNIFORMS,
  denseBindings,
  KEY_WALK_IDS,
  keyQueryRanges,
  mergeWeights,
  queryKeyRanges,
  SPLIT_ROWS,
  STAGED_ROW_FN,
  varlenHelpers,
} from './dense.ts';
import { MMA_FRAGMENT as F, MMA_HEADER, mmaChunkMax, mmaMulAdd, mmaRescaleO, mmaScratchEpilogue, PACK8_FN, SPLIT_BACKWARD_BINDINGS, SPLIT_SCALE_FN, splitBackwardScales, storeSplit4 } from './na-fused-forward-mma.ts';

const GEN = 1;
/** Largest head dim the tensor-core dense kernels compile (fragments live in registers). */
export const DENSE_MMA_MAX_DIM = 128;
/** Keys (forward, dQ) or query rows (dK/dV) staged per chunk. */
export const DENSE_MMA_CHUNKS = [16, 32, 64] as const;
const NSG = 4;
const WG = 32 * NSG;
/** Rows (queries or keys) per workgroup: 16 per subgroup. */
const ROWS = F * NSG;

export interface DenseMmaSpec {
  readonly dim: number;
  readonly dimV: number;
  readonly causal: boolean;
  /** Packed sequences (`cu_q` / `cu_kv` bindings), as `DenseForwardSpec.varlen`. */
  readonly varlen?: boolean;
  /** Keys (forward, dQ) or query rows (dK/dV) per staged chunk. */
  readonly chunk: (typeof DENSE_MMA_CHUNKS)[number];
  /** dQ kernel: add to what grad_query holds. */
  readonly accumulate?: boolean;
  /** dK/dV kernel: f32 partial sums per query split. */
  readonly partial?: boolean;
  /** S / dP scratch and P / dS rows of exactly the chunk, without the bank-conflict padding (+4 floats, +8 halves). */
  readonly tight?: boolean;
  /**
   * float32 tensors on the f16 tensor cores, as the NA forward's split: Q, K, V (and dO in the backward) scaled by a
   * power of two per tensor (the `scales` binding holds max |Q|, max |K|, max |V|, `generateAbsMax`; the backward's
   * also max |dO| and max |O|), each value staged as hi (its mantissa cut to f16's) and lo = f16(x - hi),
   * every product hi hi + hi lo + lo hi with f32 accumulation (P and dS too; dS scaled by its bound,
   * scale D_v max |dO| (max |V| + max |O|): `splitBackwardScales`).
   */
  readonly split?: boolean;
  /** Forward only: merge into what output and lse hold, as `DenseForwardSpec.merge`. */
  readonly merge?: boolean;
}

export type DenseMmaKind = 'forward' | 'dq' | 'dkv';

const range = (n: number): number[] => Array.from({ length: n }, (_, i) => i);

interface Layout {
  /** Staged row strides (halves) of the two staged tensors: K, V (forward, dQ) or Q, dO (dK/dV). */
  readonly lda: number;
  readonly ldb: number;
  /** f32 scratch and f16 P rows. */
  readonly lds: number;
  readonly ldp: number;
  /** Halves of the staging area: a chunk of both tensors, or 16 rows of either (the fragments' own staging). */
  readonly stage: number;
  readonly bytes: number;
}

/** Why a spec cannot compile, or undefined. */
export function denseMmaSpecProblem(spec: DenseMmaSpec): string | undefined {
  for (const [name, d] of [
    ['dim', spec.dim],
    ['dimV', spec.dimV],
  ] as const) {
    if (!Number.isInteger(d) || d < F || d > DENSE_MMA_MAX_DIM || d % F !== 0) return `${name} must be a multiple of ${F} in [${F}, ${DENSE_MMA_MAX_DIM}], got ${d}`;
  }
  if (!DENSE_MMA_CHUNKS.includes(spec.chunk)) return `chunk must be one of ${DENSE_MMA_CHUNKS.join(', ')}, got ${String(spec.chunk)}`;
  return undefined;
}

function layout(kind: DenseMmaKind, spec: DenseMmaSpec): Layout {
  const lda = spec.dim + 8;
  const ldb = spec.dimV + 8;
  const lds = spec.chunk + (spec.tight === true ? 0 : 4);
  const ldp = spec.chunk + (spec.tight === true ? 0 : 8);
  // (The fragments' own 64 rows go through it in passes of at least one fragment of rows.)
  const stage = Math.max(spec.chunk * (lda + ldb), F * Math.max(lda, ldb));
  // Scratches: S (+ dP in the backward); P (+ dS in dK/dV); dK/dV's lse and delta rows; the forward's flag.
  const scratches = kind === 'forward' ? 1 : 2;
  const ps = kind === 'dkv' ? 2 : 1;
  // (+ 16 for varlen's two range words)
  const extra = (kind === 'dkv' ? 2 * 4 * Math.max(4, spec.chunk) : kind === 'forward' ? 16 : 0) + (spec.varlen === true ? 16 : 0);
  // The split stages lo halves beside the hi ones, and P's lo beside P.
  const halves = spec.split === true ? 2 : 1;
  return { lda, ldb, lds, ldp, stage, bytes: halves * 2 * stage + scratches * 4 * ROWS * lds + halves * ps * 2 * ROWS * ldp + extra };
}

/** Workgroup memory of a kernel (for the caller's choice of chunk against the device's limit). */
export function denseMmaWorkgroupBytes(kind: DenseMmaKind, spec: DenseMmaSpec): number {
  return layout(kind, spec).bytes;
}

const LEFT = `subgroup_matrix_left<f16, ${F}, ${F}>`;
const RIGHT = `subgroup_matrix_right<f16, ${F}, ${F}>`;
const RESULT = `subgroup_matrix_result<f32, ${F}, ${F}>`;

/** Storage declarations: tensors as vec4<u32> (eight halves), offsets u32, lse / delta f32, `f32x4` names vec4<f32>. */
function decls(bindings: readonly StorageBinding[], f32x4: readonly string[] = []): string {
  const elem = (n: string): string => (n === 'cu_q' || n === 'cu_kv' ? 'u32' : n === 'lse' || n === 'delta' || n === 'scales' ? 'f32' : f32x4.includes(n) ? 'vec4<f32>' : 'vec4<u32>');
  return bindings.map((b, i) => `@group(0) @binding(${i}) var<storage, ${b.access}> ${b.name}: array<${elem(b.name)}>;`).join('\n');
}

/** WGSL `put8`: eight halves (one 16-byte unit) into the staging area `st_sh` at element `at`. */
export const PUT8_FN = `fn put8(at: u32, v: vec4<u32>) {
  let a = bitcast<vec2<f16>>(v.x); let b = bitcast<vec2<f16>>(v.y); let c = bitcast<vec2<f16>>(v.z); let d = bitcast<vec2<f16>>(v.w);
  st_sh[at] = a.x; st_sh[at + 1u] = a.y; st_sh[at + 2u] = b.x; st_sh[at + 3u] = b.y;
  st_sh[at + 4u] = c.x; st_sh[at + 5u] = c.y; st_sh[at + 6u] = d.x; st_sh[at + 7u] = d.y;
}`;

/** WGSL helpers: `put8` and `pack8` / `unpack8`. */
const STAGING_FNS = `${PUT8_FN}
fn unpack_lo(v: vec4<u32>) -> vec4<f32> { return vec4<f32>(vec4<f16>(bitcast<vec2<f16>>(v.x), bitcast<vec2<f16>>(v.y))); }
fn unpack_hi(v: vec4<u32>) -> vec4<f32> { return vec4<f32>(vec4<f16>(bitcast<vec2<f16>>(v.z), bitcast<vec2<f16>>(v.w))); }
${PACK8_FN}`;

/**
 * How a kernel stages a tensor's rows: float16 tensors in 16-byte units of eight halves (`put8`); the split's float32
 * tensors in units of four floats, times the tensor's power-of-two scale, as hi halves in `st_sh` and lo halves in
 * `stlo_sh` at the same offsets (`storeSplit4`).
 */
interface Units {
  /** Values per unit. */
  readonly per: number;
  readonly type: string;
  readonly zero: string;
  /** WGSL staging unit value `v` at element offset `at` (times `scale`, for the split). */
  readonly store: (at: string, v: string, scale: string) => string;
  readonly split: boolean;
}
const HALF_UNITS: Units = { per: 8, type: 'vec4<u32>', zero: 'vec4<u32>(0u)', store: (at, v) => `put8(${at}, ${v});`, split: false };
const SPLIT_UNITS: Units = { per: 4, type: 'vec4<f32>', zero: 'vec4<f32>(0.0)', store: (at, v, scale) => storeSplit4('st_sh', at, v, { lo: 'stlo_sh' }, scale), split: true };
const unitsOf = (spec: Pick<DenseMmaSpec, 'split'>): Units => (spec.split === true ? SPLIT_UNITS : HALF_UNITS);

/**
 * WGSL staging 64 rows of a tensor (`width` units each, row `r` read at `src(r)` when `ok(r)`, else zeros) at stride
 * `ld`, in passes of as many whole fragments of rows as the staging area holds (`stage` halves), each subgroup
 * loading its `frags` left fragments `${name}_kk` (and `${name}lo_kk` with the split) in the pass that holds its rows.
 */
function fragmentsThroughStaging(o: { name: string; units: Units; scale?: string; width: number; ld: number; stage: number; src: (r: string) => string; ok: (r: string) => string; frags: number }): string {
  const passRows = Math.min(ROWS, Math.floor(o.stage / o.ld / F) * F);
  const names = o.units.split ? [o.name, `${o.name}lo`] : [o.name];
  const arrays = ['st_sh', 'stlo_sh'];
  const passes = range(Math.ceil(ROWS / passRows)).map((p) => {
    const first = p * passRows;
    const rows = Math.min(passRows, ROWS - first);
    const r = first === 0 ? 'r' : `(${first}u + r)`;
    return `  for (var e = lid; e < ${rows * o.width}u; e += ${WG}u) {
    let r = e / ${o.width}u;
    let c = e % ${o.width}u;
    ${o.units.store(`r * ${o.ld}u + c * ${o.units.per}u`, `select(${o.units.zero}, ${o.src(r)}, ${o.ok(r)})`, o.scale ?? '1.0')}
  }
  workgroupBarrier();
  if (rbase >= ${first}u && rbase < ${first + rows}u) {
${names
  .flatMap((nm, a) => range(o.frags).map((kk) => `    ${nm}_${kk} = subgroupMatrixLoad<${LEFT}, row_major>(&${arrays[a] as string}, (rbase - ${first}u) * ${o.ld}u + ${kk * F}u, ${o.ld}u);`))
  .join('\n')}
  }
  workgroupBarrier();`;
  });
  return `${names
    .flatMap((nm) => range(o.frags).map((kk) => `  var ${nm}_${kk} = ${LEFT}();`))
    .join('\n')}
${passes.join('\n')}`;
}

/**
 * WGSL of a chunked walk's prefetch registers: `${tag}_i` hold this invocation's units of the next chunk of `rows`
 * rows of `width` units (`unit(r, c)` the global read of row r's unit c, `ok(r)` whether row r is in range); `fetch`
 * issues the loads, `stage` writes them to the staging area at `off` (stride `ld`).
 */
function chunkRegisters(o: { tag: string; units: Units; scale?: string; rows: number; width: number; ld: number; off: number; unit: (r: string, c: string) => string; ok: (r: string) => string }): { decl: string; fetch: string; stage: string } {
  const units = o.rows * o.width;
  const n = Math.ceil(units / WG);
  const whole = units % WG === 0;
  return {
    decl: range(n)
      .map((i) => `  var ${o.tag}_${i} = ${o.units.zero};`)
      .join('\n'),
    fetch: range(n)
      .map(
        (i) => `    {
      let u = lid + ${i * WG}u;
      let r = u / ${o.width}u;
      let c = u % ${o.width}u;
      ${o.tag}_${i} = select(${o.units.zero}, ${o.unit('r', 'c')}, ${o.ok('r')}${whole ? '' : ` && u < ${units}u`});
    }`,
      )
      .join('\n'),
    stage: range(n)
      .map((i) => {
        const body = o.units.store(`${o.off}u + (u / ${o.width}u) * ${o.ld}u + (u % ${o.width}u) * ${o.units.per}u`, `${o.tag}_${i}`, o.scale ?? '1.0');
        return `    { let u = lid + ${i * WG}u; ${whole ? body : `if (u < ${units}u) { ${body} }`} }`;
      })
      .join('\n'),
  };
}

/** Lane, row and key head of a query-walking kernel, its query row `qrow` (clamped) and the key ranges. */
function queryWalkHead(spec: DenseMmaSpec): string {
  return `  let b = wg.z;
  let h = wg.y;
  let rbase = (lid / 32u) * ${F}u;
  let lane = lid % 32u;
  let hf = lane % 2u;
  let row = rbase + lane / 2u;
  let i = wg.x * ${ROWS}u + row;
  let hk = h / (params.heads / params.heads_kv);
  let valid = i < params.queries;
  let qrow = (b * params.queries + min(i, params.queries - 1u)) * params.heads + h;
  // Keys any query of this workgroup sees [u0, u1) (uniform), and this row's own [rk0, rk1) (empty for rows past the end).
${queryKeyRanges(spec, ROWS)}
  let rk0 = select(0u, qk0, valid);
  let rk1 = select(0u, qk1, valid);`;
}

/** This subgroup's keys: chunks outside [span_lo, span_hi) are skipped by its multiplies (after a barrier: every lane). */
const SUBGROUP_SPAN = `  let span_lo = subgroupMin(select(0xffffffffu, rk0, rk1 > rk0));
  let span_hi = subgroupMax(select(0u, rk1, rk1 > rk0));`;

/** The query walk's K/V chunk registers (keys from `c0n`, rows past `u1` zero; with the split, scaled by sck, scv). */
function kvChunk(spec: DenseMmaSpec, L: Layout): { k: ReturnType<typeof chunkRegisters>; v: ReturnType<typeof chunkRegisters> } {
  const { units, DW: wk, DVW: wv } = sizes(spec);
  const unit = (src: string, w: number) => (r: string, c: string) => `${src}[(kv_base + min(c0n + ${r}, u1 - 1u) * params.heads_kv) * ${w}u + ${c}]`;
  const ok = (r: string): string => `c0n + ${r} < u1`;
  return {
    k: chunkRegisters({ tag: 'kr', units, scale: 'sck', rows: spec.chunk, width: wk, ld: L.lda, off: 0, unit: unit('key', wk), ok }),
    v: chunkRegisters({ tag: 'vr', units, scale: 'scv', rows: spec.chunk, width: wv, ld: L.ldb, off: spec.chunk * L.lda, unit: unit('value', wv), ok }),
  };
}

/**
 * WGSL of a query walk's chunk loop up to `need`: the K/V prefetch registers and the first chunk's loads, the loop
 * head (`counted`: a `step` counter for the rescale flag), this chunk's staging, the barrier, the next chunk's loads
 * (in flight during this chunk's work), and `need` (some row of this subgroup sees a key of the chunk).
 */
function keyWalkTop(spec: DenseMmaSpec, L: Layout, counted: boolean): string {
  const { k, v } = kvChunk(spec, L);
  return `${k.decl}
${v.decl}
  var c0n = u0;
${k.fetch}
${v.fetch}
  for (var c0 = u0; c0 < u1; c0 += ${spec.chunk}u) {
${counted ? '    step = step + 1u;\n' : ''}${k.stage}
${v.stage}
    workgroupBarrier();
    c0n = c0 + ${spec.chunk}u;
    if (c0n < u1) {
${k.fetch}
${v.fetch}
    }
    let need = c0 < span_hi && c0 + ${spec.chunk}u > span_lo;`;
}

/**
 * WGSL of `acc` plus the product of left fragment `a` (`alo` its lo half, with the split) and the right fragment at
 * `off` of the staging area (`major`-major; `stlo_sh` holds its lo half): one multiply, or hi hi + hi lo + lo hi.
 */
function mulAdd(a: string, alo: string | undefined, major: 'row' | 'col', off: string, ld: number, acc: string): string {
  return mmaMulAdd(a, alo, (lo) => `subgroupMatrixLoad<${RIGHT}, ${major}_major>(&${lo ? 'stlo_sh' : 'st_sh'}, ${off}, ${ld}u)`, acc);
}

/**
 * WGSL of a new result fragment `acc` = the sum over kk of left fragments `${left}_kk` times right fragments read
 * column-major from the staging area at `offset(kk)` (stride `ld`: staged rows, transposed), stored to this
 * subgroup's rows of `scratch` at column block `n`; with `split`, three multiplies per product.
 */
function productToScratch(o: { acc: string; left: string; frags: number; offset: (kk: number) => number; ld: number; scratch: string; n: number; split?: boolean }): string {
  return `        var ${o.acc} = ${RESULT}();
${range(o.frags)
  .map((kk) => `        ${o.acc} = ${mulAdd(`${o.left}_${kk}`, o.split === true ? `${o.left}lo_${kk}` : undefined, 'col', `${o.offset(kk)}u`, o.ld, o.acc)};`)
  .join('\n')}
        subgroupMatrixStore<row_major>(&${o.scratch}, rbase * LDS + ${o.n * F}u, ${o.acc}, LDS);`;
}

/** This lane's interleaved groups of four columns of a chunk row (two lanes per row): `cc${v}` their first columns. */
const laneColumns = (chunk: number): number[] => range(chunk / 8);
const colOf = (v: number): string => `(${v * 2}u + hf) * 4u`;

function checkSpec(gen: string, spec: DenseMmaSpec, forward = true): void {
  const why =
    denseMmaSpecProblem(spec) ??
    (!forward && spec.merge === true ? 'merge is a forward option' : undefined);
  if (why !== undefined) throw new NattenArgumentError(`${gen}: ${why}`);
}

const FEATURES = ['shader-f16', 'subgroups', 'chromium-experimental-subgroup-matrix'];


/** The split's workgroup arrays of lo halves (staging, and P / dS as `ps` names), or nothing. */
function splitArrays(split: boolean, L: Layout, ps: readonly string[]): string {
  if (!split) return '';
  return [`var<workgroup> stlo_sh: array<f16, ${L.stage}>;`, ...ps.map((n) => `var<workgroup> ${n}lo_sh: array<f16, ${ROWS * L.ldp}>;`)].join('\n') + '\n';
}

/**
 * WGSL of the backward split's scales (`splitBackwardScales`; dS here carries the softmax scale) and the factor that
 * undoes Q's and K's on S (`s_un`).
 */
function backwardSplitScales(dimV: number, sq: string, sk: string): string {
  return `${splitBackwardScales(dimV, 'abs(params.scale) * ')}
  let s_un = 1.0 / (${sq} * ${sk});`;
}

/**
 * A spec's head dims in 16-byte units (8 halves), in fragments and in its staging units (`DW`, `DVW`: 8 halves, or 4
 * floats with the split), its chunk in fragments, and whether it splits.
 */
function sizes(spec: DenseMmaSpec): { D8: number; DV8: number; D16: number; DV16: number; C16: number; SPLIT: boolean; units: Units; DW: number; DVW: number } {
  const units = unitsOf(spec);
  return { D8: spec.dim / 8, DV8: spec.dimV / 8, D16: spec.dim / F, DV16: spec.dimV / F, C16: spec.chunk / F, SPLIT: units.split, units, DW: spec.dim / units.per, DVW: spec.dimV / units.per };
}

/** The generated kernel of a tensor-core dense kernel's key, code, bindings and uniforms. */
function denseMmaKernel(key: string, code: string, bindings: readonly StorageBinding[], uniforms: readonly UniformField[], L: Layout): GeneratedKernel {
  return { key, code, entryPoint: 'main', workgroupSize: [WG, 1, 1], bindings, uniforms, workgroupBytes: L.bytes, features: FEATURES };
}


export function generateDenseForwardMma(spec: DenseMmaSpec): GeneratedKernel {
  checkSpec('generateDenseForwardMma', spec);
  const key = kernelKey('dense-forward-mma', GEN, { ...spec, accumulate: undefined, partial: undefined });
  const L = layout('forward', spec);
  const BK = spec.chunk;
  const { D16, DV16, C16: BK16, SPLIT, units, DW } = sizes(spec);
  const VOFF = BK * L.lda;
  const bindings: StorageBinding[] = [...denseBindings('forward', spec.varlen), ...(SPLIT ? [{ name: 'scales', access: 'read' as const }] : [])];
  const TPR = Math.floor(L.lds / F);
  const cols = laneColumns(BK);
  const storeP = (at: string): string =>
    SPLIT
      ? storeSplit4('p_sh', at, 'p', { lo: 'plo_sh' }, '1.0')
      : `let ph = vec4<f16>(p);
        p_sh[${at}] = ph.x; p_sh[${at} + 1u] = ph.y; p_sh[${at} + 2u] = ph.z; p_sh[${at} + 3u] = ph.w;`;
  const DV4 = spec.dimV / 4;
  const MERGE = spec.merge === true;
  // O / l, merged into what the output holds with `merge` (O0 - w1 (O0 - O1)).
  const mix = (old: string, o: string): string => (MERGE ? `${old} - w1 * (${old} - ${o})` : o);
  const writeO = (j: number, lo: string, hi: string): string => {
    if (SPLIT) {
      const at = (k: number): string => `qrow * ${DV4}u + ${4 * j + k}u + 2u * hf`;
      return [lo, hi].map((x, k) => `output[${at(k)}] = ${mix(`output[${at(k)}]`, `${x} * inv_l`)};`).join(' ');
    }
    const at = `qrow * ${spec.dimV / 8}u + ${2 * j}u + hf`;
    return MERGE
      ? `let old = output[${at}]; output[${at}] = pack8(${mix('unpack_lo(old)', `${lo} * inv_l`)}, ${mix('unpack_hi(old)', `${hi} * inv_l`)});`
      : `output[${at}] = pack8(${lo} * inv_l, ${hi} * inv_l);`;
  };
  const code = `// ${key}
${MMA_HEADER}
${decls(bindings, SPLIT ? ['query', 'key', 'value', 'output'] : [])}
${uniformDecl(DENSE_UNIFORMS, bindings.length)}
const LDS: u32 = ${L.lds}u;
const LDP: u32 = ${L.ldp}u;
const NEG: f32 = -1.0e30;
const MASKED: f32 = -3.0e38;
// Every workgroup variable is a multiple of 16 bytes (matrix stores misplace data off a 16-byte boundary).
var<workgroup> st_sh: array<f16, ${L.stage}>;
var<workgroup> s_sh: array<f32, ${ROWS * L.lds}>;
var<workgroup> p_sh: array<f16, ${ROWS * L.ldp}>;
${splitArrays(SPLIT, L, ['p'])}var<workgroup> flag: vec4<u32>;
${varlenHelpers(spec.varlen)}${STAGING_FNS}${SPLIT ? SPLIT_SCALE_FN : ''}
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
${queryWalkHead(spec)}
  let sl2 = params.scale * 1.4426950408889634;
${
  SPLIT
    ? `  // Per-tensor power-of-two scales of the split (max |x| of Q, K, V into (2^13, 2^14]); S and O are unscaled after.
  let scq = split_scale(scales[0]);
  let sck = split_scale(scales[1]);
  let scv = split_scale(scales[2]);
  let sscale = sl2 / (scq * sck);`
    : ''
}
  // The rescale flag starts at zero by this store (the Q staging's barriers follow).
  if (lid == 0u) { flag = vec4<u32>(0u); }
${fragmentsThroughStaging({ name: 'q', units, scale: 'scq', width: DW, ld: L.lda, src: (r) => `query[((b * params.queries + min(wg.x * ${ROWS}u + ${r}, params.queries - 1u)) * params.heads + h) * ${DW}u + c]`, ok: (r) => `wg.x * ${ROWS}u + ${r} < params.queries`, frags: D16, stage: L.stage })}
${range(DV16)
  .map((j) => `  var o_${j} = ${RESULT}();`)
  .join('\n')}
${SUBGROUP_SPAN}
  var m = NEG;
  var l = 0.0;
  var step = 0u;
${keyWalkTop(spec, L, true)}
    if (need) {
${range(BK16)
  .map((n) => `      {\n${productToScratch({ acc: 's', left: 'q', frags: D16, offset: (kk) => n * F * L.lda + kk * F, ld: L.lda, scratch: 's_sh', n, split: SPLIT })}\n      }`)
  .join('\n')}
    }
    workgroupBarrier();
    var alpha = 1.0;
    if (need) {
      // Online softmax on this lane's columns of its row (log2 domain); keys outside [rk0, rk1) are masked.
      let inside = c0 >= rk0 && c0 + ${BK}u <= rk1;
${cols
  .map(
    (c) => `      let cc${c} = ${colOf(c)};
      var x${c} = vec4<f32>(s_sh[row * LDS + cc${c}], s_sh[row * LDS + cc${c} + 1u], s_sh[row * LDS + cc${c} + 2u], s_sh[row * LDS + cc${c} + 3u]) * ${SPLIT ? 'sscale' : 'sl2'};
      if (!inside) {
        let kj = vec4<u32>(c0 + cc${c}) + vec4<u32>(0u, 1u, 2u, 3u);
        x${c} = select(vec4<f32>(MASKED), x${c}, (kj >= vec4<u32>(rk0)) & (kj < vec4<u32>(rk1)));
      }`,
  )
  .join('\n')}
${mmaChunkMax(cols.length)}
      var psum = 0.0;
${cols
  .map(
    (c) => `      {
        let p = exp2(x${c} - vec4<f32>(m));
        psum = psum + (p.x + p.y) + (p.z + p.w);
        ${storeP(`row * LDP + cc${c}`)}
      }`,
  )
  .join('\n')}
      psum = psum + subgroupShuffleXor(psum, 1u);
      l = l * alpha + psum;
    }
    // (This uniform load is also the barrier between the P stores and the P loads.)
    if (workgroupUniformLoad(&flag).x == step) {
${mmaRescaleO(DV16, L.lds)}
    }
    if (need) {
${range(BK16)
  .flatMap((n) => [
    `      let p_${n} = subgroupMatrixLoad<${LEFT}, row_major>(&p_sh, rbase * LDP + ${n * F}u, LDP);`,
    ...(SPLIT ? [`      let plo_${n} = subgroupMatrixLoad<${LEFT}, row_major>(&plo_sh, rbase * LDP + ${n * F}u, LDP);`] : []),
  ])
  .join('\n')}
${range(DV16)
  .map((j) => `      o_${j} = ${range(BK16).reduce((acc, n) => mulAdd(`p_${n}`, SPLIT ? `plo_${n}` : undefined, 'row', `${VOFF + n * F * L.ldb + j * F}u`, L.ldb, acc), `o_${j}`)};`)
  .join('\n')}
    }
    workgroupBarrier();
  }
  // Epilogue: O / l through the scratch (the split: / scv too); the natural-log lse.
  let inv_l = select(0.0, 1.0 / ${SPLIT ? '(l * scv)' : 'l'}, l > 0.0);
  let l1 = (m + log2(l)) * 0.6931471805599453;
${MERGE ? `  // Merged into what output and lse hold (another attention of these queries over other keys).\n  let l0 = lse[qrow];\n${mergeWeights('l0', 'l1')}\n` : ''}${mmaScratchEpilogue({
  outs: [{ acc: 'o', frags: DV16, write: writeO }],
  scratches: ['s_sh'],
  perScratch: TPR,
  srow: 'row',
  guard: 'valid',
})}
${MERGE ? '  // Both lanes of a row read lse[qrow] above; the write waits for them.\n  storageBarrier();\n' : ''}  if (valid && hf == 0u) { lse[qrow] = ${MERGE ? 'lm' : 'l1'}; }
}
`;
  return denseMmaKernel(key, code, bindings, DENSE_UNIFORMS, L);
}

export function generateDenseBackwardQueryMma(spec: DenseMmaSpec): GeneratedKernel {
  checkSpec('generateDenseBackwardQueryMma', spec, false);
  const key = kernelKey('dense-backward-q-mma', GEN, { ...spec, partial: undefined });
  const L = layout('dq', spec);
  const BK = spec.chunk;
  const { D8, DV8, D16, DV16, C16: BK16, SPLIT, units, DW, DVW } = sizes(spec);
  const VOFF = BK * L.lda;
  const bindings: StorageBinding[] = [...denseBindings('dq', spec.varlen), ...(SPLIT ? SPLIT_BACKWARD_BINDINGS : [])];
  const cols = laneColumns(BK);
  const rowOf = (r: string): string => `(b * params.queries + min(wg.x * ${ROWS}u + ${r}, params.queries - 1u)) * params.heads + h`;
  const inRange = (r: string): string => `wg.x * ${ROWS}u + ${r} < params.queries`;
  const acc = spec.accumulate === true;
  const code = `// ${key}
${MMA_HEADER}
${decls(bindings, SPLIT ? ['query', 'key', 'value', 'output', 'grad_output', 'grad_query'] : [])}
${uniformDecl(DENSE_BACKWARD_UNIFORMS, bindings.length)}
const LDS: u32 = ${L.lds}u;
const LDP: u32 = ${L.ldp}u;
var<workgroup> st_sh: array<f16, ${L.stage}>;
var<workgroup> s_sh: array<f32, ${ROWS * L.lds}>;
var<workgroup> dp_sh: array<f32, ${ROWS * L.lds}>;
var<workgroup> p_sh: array<f16, ${ROWS * L.ldp}>;
${splitArrays(SPLIT, L, ['p'])}${varlenHelpers(spec.varlen)}${STAGING_FNS}${SPLIT ? SPLIT_SCALE_FN : ''}
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
${queryWalkHead(spec)}
  let sl2 = params.scale * 1.4426950408889634;
${SPLIT ? `${backwardSplitScales(spec.dimV, 'scq', 'sck')}\n` : ''}${fragmentsThroughStaging({ name: 'q', units, scale: 'scq', width: DW, ld: L.lda, src: (r) => `query[(${rowOf(r)}) * ${DW}u + c]`, ok: inRange, frags: D16, stage: L.stage })}
${fragmentsThroughStaging({ name: 'g', units, scale: 'scg', width: DVW, ld: L.ldb, src: (r) => `grad_output[(${rowOf(r)}) * ${DVW}u + c]`, ok: inRange, frags: DV16, stage: L.stage })}
  // delta = dO . O of this row (the lanes of a row take every other group of eight values; of four with the split).
  var dl = 0.0;
${
  SPLIT
    ? `  for (var c = hf; c < ${DVW}u; c += 2u) { dl = dl + dot(grad_output[qrow * ${DVW}u + c], output[qrow * ${DVW}u + c]); }`
    : `  for (var c = hf; c < ${DV8}u; c += 2u) {
    let a = grad_output[qrow * ${DV8}u + c];
    let o = output[qrow * ${DV8}u + c];
    dl = dl + dot(unpack_lo(a), unpack_lo(o)) + dot(unpack_hi(a), unpack_hi(o));
  }`
}
  dl = dl + subgroupShuffleXor(dl, 1u);
  let l2 = lse[qrow] * 1.4426950408889634;
${SUBGROUP_SPAN}
${range(D16)
  .map((kk) => `  var dq_${kk} = ${RESULT}();`)
  .join('\n')}
${keyWalkTop(spec, L, false)}
    if (need) {
${range(BK16)
  .map(
    (n) => `      {
${productToScratch({ acc: 's', left: 'q', frags: D16, offset: (kk) => n * F * L.lda + kk * F, ld: L.lda, scratch: 's_sh', n, split: SPLIT })}
${productToScratch({ acc: 'dp', left: 'g', frags: DV16, offset: (jj) => VOFF + n * F * L.ldb + jj * F, ld: L.ldb, scratch: 'dp_sh', n, split: SPLIT })}
      }`,
  )
  .join('\n')}
    }
    workgroupBarrier();
    if (need) {
      // P = exp(scale S - lse), dS = scale P (dP - delta) on this lane's columns; keys outside [rk0, rk1) give 0.
${cols
  .map(
    (c) => `      {
        let cc = ${colOf(c)};
        let e = row * LDS + cc;
        let kj = vec4<u32>(c0 + cc) + vec4<u32>(0u, 1u, 2u, 3u);
        let x = vec4<f32>(s_sh[e], s_sh[e + 1u], s_sh[e + 2u], s_sh[e + 3u]) * ${SPLIT ? '(sl2 * s_un)' : 'sl2'} - vec4<f32>(l2);
        let p = select(vec4<f32>(0.0), exp2(x), (kj >= vec4<u32>(rk0)) & (kj < vec4<u32>(rk1)));
        let dp = vec4<f32>(dp_sh[e], dp_sh[e + 1u], dp_sh[e + 2u], dp_sh[e + 3u])${SPLIT ? ' * dp_un' : ''};
${
  SPLIT
    ? `        let at = row * LDP + cc;
        ${storeSplit4('p_sh', 'at', 'p * (dp - vec4<f32>(dl)) * params.scale', { lo: 'plo_sh' }, 'scd')}`
    : `        let ds = vec4<f16>(p * (dp - vec4<f32>(dl)) * params.scale);
        let at = row * LDP + cc;
        p_sh[at] = ds.x; p_sh[at + 1u] = ds.y; p_sh[at + 2u] = ds.z; p_sh[at + 3u] = ds.w;`
}
      }`,
  )
  .join('\n')}
    }
    workgroupBarrier();
    if (need) {
${range(BK16)
  .flatMap((n) => [
    `      let ds_${n} = subgroupMatrixLoad<${LEFT}, row_major>(&p_sh, rbase * LDP + ${n * F}u, LDP);`,
    ...(SPLIT ? [`      let dslo_${n} = subgroupMatrixLoad<${LEFT}, row_major>(&plo_sh, rbase * LDP + ${n * F}u, LDP);`] : []),
  ])
  .join('\n')}
${range(D16)
  .map((kk) => `      dq_${kk} = ${range(BK16).reduce((a, n) => mulAdd(`ds_${n}`, SPLIT ? `dslo_${n}` : undefined, 'row', `${n * F * L.lda + kk * F}u`, L.lda, a), `dq_${kk}`)};`)
  .join('\n')}
    }
    workgroupBarrier();
  }
${mmaScratchEpilogue({
  outs: [
    {
      acc: 'dq',
      frags: D16,
      write: (j, lo, hi) => {
        if (SPLIT) {
          // dQ = scale dS K: undo dS's and K's scales.
          const at = (k: number): string => `qrow * ${DW}u + ${4 * j + k}u + 2u * hf`;
          return [lo, hi].map((x, k) => `grad_query[${at(k)}] = ${acc ? `grad_query[${at(k)}] + ` : ''}${x} / (scd * sck);`).join(' ');
        }
        const at = `qrow * ${D8}u + ${2 * j}u + hf`;
        return acc ? `let old = grad_query[${at}]; grad_query[${at}] = pack8(${lo} + unpack_lo(old), ${hi} + unpack_hi(old));` : `grad_query[${at}] = pack8(${lo}, ${hi});`;
      },
    },
  ],
  scratches: ['s_sh', 'dp_sh'],
  perScratch: Math.floor(L.lds / F),
  srow: 'row',
  guard: 'valid',
})}
  if (valid && hf == 0u) { delta[qrow] = dl; }
}
`;
  return denseMmaKernel(key, code, bindings, DENSE_BACKWARD_UNIFORMS, L);
}

export function generateDenseBackwardKvMma(spec: DenseMmaSpec): GeneratedKernel {
  checkSpec('generateDenseBackwardKvMma', spec, false);
  const key = kernelKey('dense-backward-kv-mma', GEN, { ...spec, accumulate: undefined });
  const L = layout('dkv', spec);
  const BQ = spec.chunk;
  const { D8, DV8, D16, DV16, C16: BQ16, SPLIT, units, DW, DVW } = sizes(spec);
  const OOFF = BQ * L.lda;
  const partial = spec.partial === true;
  const bindings: StorageBinding[] = [...denseBindings('dkv', spec.varlen), ...(SPLIT ? SPLIT_BACKWARD_BINDINGS : [])];
  const keyRow = (r: string): string => `(b * params.keys + min(wg.x * ${ROWS}u + ${r}, params.keys - 1u)) * params.heads_kv + hk`;
  const keyOk = (r: string): string => `wg.x * ${ROWS}u + ${r} < params.keys`;
  const qUnit = (src: string, w8: number) => (r: string, c: string) => `${src}[staged_row(row_base, min(r0 + ${r}, max(n_rows, 1u) - 1u), hk, group) * ${w8}u + ${c}]`;
  const qOk = (r: string): string => `r0 + ${r} < n_rows`;
  const qc = chunkRegisters({ tag: 'qr', units, scale: 'scq', rows: BQ, width: DW, ld: L.lda, off: 0, unit: qUnit('query', DW), ok: qOk });
  const gc = chunkRegisters({ tag: 'gr', units, scale: 'scg', rows: BQ, width: DVW, ld: L.ldb, off: OOFF, unit: qUnit('grad_output', DVW), ok: qOk });
  const cols = laneColumns(BQ);
  // With the split, dK = dS^T Q and dV = P^T dO undo dS's and Q's scales, and dO's.
  const unscale = (arr: string): string => (!SPLIT ? '' : arr === 'grad_key' ? ' / (scd * scq)' : ' / scg');
  const write = (arr: string, w: number) => (j: number, lo: string, hi: string): string => {
    const u = unscale(arr);
    if (partial || SPLIT) {
      const base = partial ? `(wg.y * params.${arr === 'grad_key' ? 'k' : 'v'}_elems + krow * ${w}u) / 4u` : `krow * ${w / 4}u`;
      return `${arr}[${base} + ${4 * j}u + 2u * hf] = ${lo}${u}; ${arr}[${base} + ${4 * j}u + 2u * hf + 1u] = ${hi}${u};`;
    }
    return `${arr}[krow * ${w / 8}u + ${2 * j}u + hf] = pack8(${lo}, ${hi});`;
  };
  const code = `// ${key}
${MMA_HEADER}
${decls(bindings, SPLIT ? ['query', 'key', 'value', 'grad_output', 'grad_key', 'grad_value'] : partial ? ['grad_key', 'grad_value'] : [])}
${uniformDecl(DENSE_BACKWARD_UNIFORMS, bindings.length)}
const LDS: u32 = ${L.lds}u;
const LDP: u32 = ${L.ldp}u;
var<workgroup> st_sh: array<f16, ${L.stage}>;
var<workgroup> s_sh: array<f32, ${ROWS * L.lds}>;
var<workgroup> dp_sh: array<f32, ${ROWS * L.lds}>;
var<workgroup> p_sh: array<f16, ${ROWS * L.ldp}>;
var<workgroup> ds_sh: array<f16, ${ROWS * L.ldp}>;
var<workgroup> ls: array<f32, ${Math.max(4, BQ)}>;
var<workgroup> dls: array<f32, ${Math.max(4, BQ)}>;
${splitArrays(SPLIT, L, ['p', 'ds'])}${varlenHelpers(spec.varlen)}${STAGING_FNS}${STAGED_ROW_FN}${SPLIT ? SPLIT_SCALE_FN : ''}
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
${KEY_WALK_IDS}  let rbase = (lid / 32u) * ${F}u;
  let lane = lid % 32u;
  let hf = lane % 2u;
  let row = rbase + lane / 2u;
  let j = wg.x * ${ROWS}u + row;
  let valid = j < params.keys;
  let krow = (b * params.keys + min(j, params.keys - 1u)) * params.heads_kv + hk;
  let sl2 = params.scale * 1.4426950408889634;
${SPLIT ? `${backwardSplitScales(spec.dimV, 'sck', 'scq')}\n` : ''}${fragmentsThroughStaging({ name: 'k', units, scale: 'sck', width: DW, ld: L.lda, src: (r) => `key[(${keyRow(r)}) * ${DW}u + c]`, ok: keyOk, frags: D16, stage: L.stage })}
${fragmentsThroughStaging({ name: 'v', units, scale: 'scv', width: DVW, ld: L.ldb, src: (r) => `value[(${keyRow(r)}) * ${DVW}u + c]`, ok: keyOk, frags: DV16, stage: L.stage })}
  // The query positions any key of this workgroup is seen by, [u0, u1) (causal: from the first key's position on),
  // this split's share of them, and this key's own: its sequence's [cq0, cq1), and its position kpos in it.
${keyQueryRanges(spec, ROWS)}
${SPLIT_ROWS}${range(D16)
  .map((kk) => `  var dk_${kk} = ${RESULT}();`)
  .join('\n')}
${range(DV16)
  .map((jj) => `  var dv_${jj} = ${RESULT}();`)
  .join('\n')}
${qc.decl}
${gc.decl}
  var r0 = 0u;
${qc.fetch}
${gc.fetch}
  for (var rc = 0u; rc < n_rows; rc += ${BQ}u) {
${qc.stage}
${gc.stage}
    for (var e = lid; e < ${BQ}u; e += ${WG}u) {
      let qr = staged_row(row_base, min(rc + e, max(n_rows, 1u) - 1u), hk, group);
      ls[e] = lse[qr] * 1.4426950408889634;
      dls[e] = delta[qr];
    }
    workgroupBarrier();
    r0 = rc + ${BQ}u;
    if (r0 < n_rows) {
${qc.fetch}
${gc.fetch}
    }
    // S^T = K Q^T and dP^T = V dO^T (rows: this subgroup's keys; columns: the chunk's query rows).
${range(BQ16)
  .map(
    (n) => `    {
${productToScratch({ acc: 's', left: 'k', frags: D16, offset: (kk) => n * F * L.lda + kk * F, ld: L.lda, scratch: 's_sh', n, split: SPLIT })}
${productToScratch({ acc: 'dp', left: 'v', frags: DV16, offset: (jj) => OOFF + n * F * L.ldb + jj * F, ld: L.ldb, scratch: 'dp_sh', n, split: SPLIT })}
    }`,
  )
  .join('\n')}
    workgroupBarrier();
    // P^T and dS^T on this lane's columns of its key's row; a query row outside the key's sequence (causal: before
    // the key) or past the split gives 0.
${cols
  .map(
    (c) => `    {
      let cc = ${colOf(c)};
      let e = row * LDS + cc;
      let rr = vec4<u32>(rc + cc) + vec4<u32>(0u, 1u, 2u, 3u);
      let qi = vec4<u32>(q_lo) + rr / vec4<u32>(group);
      let keep = vec4<bool>(valid) & (rr < vec4<u32>(n_rows)) & (qi >= vec4<u32>(cq0)) & (qi < vec4<u32>(cq1))${spec.causal ? ' & (qi - vec4<u32>(cq0) >= vec4<u32>(kpos))' : ''};
      let x = vec4<f32>(s_sh[e], s_sh[e + 1u], s_sh[e + 2u], s_sh[e + 3u]) * ${SPLIT ? '(sl2 * s_un)' : 'sl2'} - vec4<f32>(ls[cc], ls[cc + 1u], ls[cc + 2u], ls[cc + 3u]);
      let p = select(vec4<f32>(0.0), exp2(x), keep);
      let dp = vec4<f32>(dp_sh[e], dp_sh[e + 1u], dp_sh[e + 2u], dp_sh[e + 3u])${SPLIT ? ' * dp_un' : ''};
${
  SPLIT
    ? `      let at = row * LDP + cc;
      ${storeSplit4('p_sh', 'at', 'p', { lo: 'plo_sh' }, '1.0')}
      ${storeSplit4('ds_sh', 'at', 'p * (dp - vec4<f32>(dls[cc], dls[cc + 1u], dls[cc + 2u], dls[cc + 3u])) * params.scale', { lo: 'dslo_sh' }, 'scd')}`
    : `      let ds = vec4<f16>(p * (dp - vec4<f32>(dls[cc], dls[cc + 1u], dls[cc + 2u], dls[cc + 3u])) * params.scale);
      let ph = vec4<f16>(p);
      let at = row * LDP + cc;
      p_sh[at] = ph.x; p_sh[at + 1u] = ph.y; p_sh[at + 2u] = ph.z; p_sh[at + 3u] = ph.w;
      ds_sh[at] = ds.x; ds_sh[at + 1u] = ds.y; ds_sh[at + 2u] = ds.z; ds_sh[at + 3u] = ds.w;`
}
    }`,
  )
  .join('\n')}
    workgroupBarrier();
    // dV += P^T dO, dK += dS^T Q.
${range(BQ16)
  .map(
    (n) => `    {
      let pt = subgroupMatrixLoad<${LEFT}, row_major>(&p_sh, rbase * LDP + ${n * F}u, LDP);
      let dst = subgroupMatrixLoad<${LEFT}, row_major>(&ds_sh, rbase * LDP + ${n * F}u, LDP);
${SPLIT ? `      let ptlo = subgroupMatrixLoad<${LEFT}, row_major>(&plo_sh, rbase * LDP + ${n * F}u, LDP);\n      let dstlo = subgroupMatrixLoad<${LEFT}, row_major>(&dslo_sh, rbase * LDP + ${n * F}u, LDP);\n` : ''}${range(DV16)
  .map((jj) => `      dv_${jj} = ${mulAdd('pt', SPLIT ? 'ptlo' : undefined, 'row', `${OOFF + n * F * L.ldb + jj * F}u`, L.ldb, `dv_${jj}`)};`)
  .join('\n')}
${range(D16)
  .map((kk) => `      dk_${kk} = ${mulAdd('dst', SPLIT ? 'dstlo' : undefined, 'row', `${n * F * L.lda + kk * F}u`, L.lda, `dk_${kk}`)};`)
  .join('\n')}
    }`,
  )
  .join('\n')}
    workgroupBarrier();
  }
${mmaScratchEpilogue({
  outs: [
    { acc: 'dk', frags: D16, write: write('grad_key', spec.dim) },
    { acc: 'dv', frags: DV16, write: write('grad_value', spec.dimV) },
  ],
  scratches: ['s_sh', 'dp_sh'],
  perScratch: Math.floor(L.lds / F),
  srow: 'row',
  guard: 'valid',
})}
}
`;
  return denseMmaKernel(key, code, bindings, DENSE_BACKWARD_UNIFORMS, L);
}

/** Queries (forward, dQ) or keys (dK/dV) per workgroup of the tensor-core dense kernels, as the plain ones. */
export const DENSE_MMA_ROWS = DENSE_QUERIES;
