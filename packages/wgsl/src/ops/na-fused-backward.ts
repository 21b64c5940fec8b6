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
 *  5. `rpb-reduce` (only with gradRpb): d_rpb[h, cell] = sum over batch, queries, slots mapping to the cell of dS.
 *
 * In `dq` each query likewise walks only the staged keys of its own window per axis (slot t = j - window start), so
 * it touches exactly prod(K) keys (the previous design tested every staged key of every chunk).
 *
 * One invocation owns one query row (dq) or one key row (dkv); accumulators and the owned row live in registers:
 * named vec4 variables for rows of up to 32 vectors (private arrays ran ~4x slower on NVIDIA in the forward),
 * private arrays beyond. Staged rows keep the I/O dtype (f16 staging for f16 inputs); all math is f32.
 * Rows outside the dilation group are zero-filled and masked, and P is forced to 0 with `select` for them.
 */
import { type FusedBackwardProblem, type NaRank, product, type TileProducts } from '@natten-web/core';
import { enableDirectives, type GpuDType, wgslType } from '../dtype.ts';
import { type GeneratedKernel, kernelKey, type StorageBinding, storageDecls, type UniformField, uniformDecl } from '../kernel.ts';
import { axes, axisUniformNames, decodeRowMajor, tokenIndex } from '../snippets/backward-index.ts';
import { windowFunctions } from '../snippets/window.ts';

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
}

/** A complete backward configuration: what NATTEN's query_tile_size / key_tile_size / num_splits_key / compute_delta_with_torch select. */
export interface FusedBackwardConfig {
  readonly queryTile: readonly number[];
  readonly keyTile: readonly number[];
  readonly numSplitsKey: readonly number[];
  readonly computeDeltaWithTorch: boolean;
}

/** Problem facts the kernels bake (everything else is a uniform). */
interface BakedProblem {
  readonly rank: NaRank;
  readonly kernelSize: readonly number[];
  readonly causal: readonly boolean[];
  readonly dim: number;
  readonly dimV: number;
  readonly dtype: GpuDType;
}

export interface FusedBackwardDqSpec extends BakedProblem {
  readonly queryTile: readonly number[];
  readonly keyTile: readonly number[];
  readonly rpb: boolean;
  readonly gradRpb: boolean;
  /** 'fused': compute delta in the prologue and write it out; 'read': read it from the delta pass. */
  readonly delta: 'fused' | 'read';
  /** Write f32 per-split partials instead of the final dQ. */
  readonly partial: boolean;
}

export interface FusedBackwardDkvSpec extends BakedProblem {
  readonly queryTile: readonly number[];
  readonly keyTile: readonly number[];
  readonly rpb: boolean;
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

function regs(V: VecTypes): Regs {
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
function dotStmts(R: Regs, V: VecTypes, out: string, n: number, f: (c: string, r: (name: string) => string) => [string, string]): string {
  if (V.W === 4) {
    return `var ${out}_v = vec4<f32>(0.0);
        ${R.each(n, (c, r) => {
          const [a, b] = f(c, r);
          return `${out}_v = fma(${a}, ${b}, ${out}_v);`;
        })}
        let ${out} = ${out}_v.x + ${out}_v.y + ${out}_v.z + ${out}_v.w;`;
  }
  return `var ${out}_v = 0.0;
        ${R.each(n, (c, r) => {
          const [a, b] = f(c, r);
          return `${out}_v = fma(${a}, ${b}, ${out}_v);`;
        })}
        let ${out} = ${out}_v;`;
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

/** Workgroup bytes of the dq kernel: a key tile of K and V rows plus row offsets. */
export function dqWorkgroupBytes(rank: number, dim: number, dimV: number, dtype: GpuDType, keyTileProduct: number): number {
  const e = elemBytes(dtype);
  const pad4 = (n: number): number => Math.ceil(n / 4) * 4;
  return pad4(keyTileProduct * dim * e) + pad4(keyTileProduct * dimV * e) + keyTileProduct * 4;
}

/** Workgroup bytes of the dkv kernel: a query tile of q and dO rows, lse, delta and row offsets. */
export function dkvWorkgroupBytes(rank: number, dim: number, dimV: number, dtype: GpuDType, queryTileProduct: number): number {
  const e = elemBytes(dtype);
  const pad4 = (n: number): number => Math.ceil(n / 4) * 4;
  return pad4(queryTileProduct * dim * e) + pad4(queryTileProduct * dimV * e) + queryTileProduct * 3 * 4;
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
  return {
    queryTile: balancedShape(rank, pair[0]),
    keyTile: balancedShape(rank, pair[1]),
    numSplitsKey: new Array<number>(rank).fill(1),
    computeDeltaWithTorch: problem.computeDeltaWithTorch,
  };
}

/** The most cube-like power-of-two shape of product p, larger entries on the last axes (64 -> 8x8, 4x4x4). */
export function balancedShape(rank: number, p: number): number[] {
  const out = new Array<number>(rank).fill(1);
  let rest = p;
  let a = rank - 1;
  while (rest > 1) {
    out[a] = (out[a] as number) * 2;
    rest /= 2;
    a = a === 0 ? rank - 1 : a - 1;
  }
  return out;
}

/**
 * Configs for the autotuner: tile pairs that fit the limits (shapes: powers of two >= 2 per axis like NATTEN's
 * vetted list, or 1 where the group extent is 1; entries capped at the next power of two of the group extent, as
 * larger tiles only add masked rows), x num_splits_key in {1s, 2 on every axis that has >= 2 key tiles} x both
 * delta modes.
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
          for (const computeDeltaWithTorch of [false, true]) out.push({ queryTile: qt, keyTile: kt, numSplitsKey, computeDeltaWithTorch });
        }
      }
    }
  }
  return out;
}

function header(family: string, spec: object & { readonly dtype: GpuDType }, consts: Record<string, string | number>): string {
  const key = kernelKey(family, GEN, spec);
  const lines = [`// ${key}`, enableDirectives(spec.dtype).trimEnd()].filter((l) => l.length > 0);
  for (const [name, v] of Object.entries(consts)) {
    lines.push(`const ${name} = ${v};`);
  }
  return lines.join('\n');
}

function u(n: number): string {
  return `${n}u`;
}

function bakedConsts(s: BakedProblem & { queryTile: readonly number[]; keyTile: readonly number[] }): Record<string, string | number> {
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
  return c;
}

function axisUniforms(rank: number): UniformField[] {
  return axisUniformNames(rank).map((name) => ({ name, type: 'i32' as const }));
}

/** Per-axis group setup shared by dq and dkv: g_a, n_a. */
function groupSetup(rank: number): string {
  return axes(rank)
    .map((a) => `let n_${a} = na_group_len(params.len_${a}, params.dil_${a}, g_${a});`)
    .join('\n  ');
}

function rpbIndexExpr(rank: number, ks: readonly number[], key: string, query: string): string {
  let e = 'h';
  for (const a of axes(rank)) {
    const K = ks[a] as number;
    e = `(${e} * ${2 * K - 1}u + u(clamp(${key}_${a} - ${query}_${a} + ${K - 1}, 0, ${2 * K - 2})))`;
  }
  return e.replace(/\bu\(/g, 'u32(');
}

/** The dq kernel (pass 2). */
export function generateFusedBackwardDq(spec: FusedBackwardDqSpec): NamedKernel {
  const { rank, dim: D, dimV: DV } = spec;
  const T = wgslType(spec.dtype);
  const BQ = product(spec.queryTile);
  const BK = product(spec.keyTile);
  const family = 'na-fused-backward-dq';
  const V = vecTypes(T, D, DV);
  const R = regs(V);
  const KSW = swizzleMask(V, V.DW, spec.dtype);
  const VSW = swizzleMask(V, V.DVW, spec.dtype);
  const bindings: (StorageBinding & { elem: string })[] = [
    { name: 'q_buf', access: 'read', elem: V.VT },
    { name: 'k_buf', access: 'read', elem: V.VT },
    { name: 'v_buf', access: 'read', elem: V.VT },
  ];
  const names = ['query', 'key', 'value'];
  if (spec.delta === 'fused') {
    bindings.push({ name: 'o_buf', access: 'read', elem: V.VT });
    names.push('output');
  }
  bindings.push({ name: 'do_buf', access: 'read', elem: V.VT }, { name: 'lse_buf', access: 'read', elem: 'f32' });
  names.push('gradOutput', 'logsumexp');
  if (spec.rpb) {
    bindings.push({ name: 'rpb_buf', access: 'read', elem: T });
    names.push('rpb');
  }
  bindings.push({ name: 'delta_buf', access: spec.delta === 'fused' ? 'read_write' : 'read', elem: 'f32' });
  names.push('delta');
  bindings.push({ name: 'dq_buf', access: 'read_write', elem: spec.partial ? 'f32' : T });
  names.push(spec.partial ? 'dqPartial' : 'gradQuery');
  if (spec.gradRpb) {
    bindings.push({ name: 'ds_buf', access: 'read_write', elem: 'f32' });
    names.push('dsScratch');
  }
  const uniforms: UniformField[] = [
    { name: 'batch', type: 'u32' },
    { name: 'heads', type: 'u32' },
    { name: 'heads_kv', type: 'u32' },
    { name: 'tokens', type: 'u32' },
    { name: 'rows', type: 'u32' },
    { name: 'total', type: 'u32' },
    { name: 'ntile_total', type: 'u32' },
    { name: 'splits', type: 'u32' },
    { name: 'ngroups', type: 'u32' },
    { name: 'scale', type: 'f32' },
    ...axisUniforms(rank),
    ...axes(rank).flatMap((a) => [
      { name: `ntile_${a}`, type: 'u32' as const },
      { name: `spl_${a}`, type: 'i32' as const },
    ]),
  ];
  const A = axes(rank);
  const per = (f: (a: number) => string, sep = '\n  '): string => A.map(f).join(sep);
  const allAxes = (f: (a: number) => string): string => A.map(f).join(' || ');
  const allAxesAnd = (f: (a: number) => string): string => A.map(f).join(' && ');
  const deltaLoad =
    spec.delta === 'fused'
      ? `var dl = 0.0;
    ${R.each(V.DVW, (c, r) => `dl += dotw(${r('dov')}, ${V.VF}(o_buf[row * DVW + ${c}]));`)}
    delta_x = dl;
    if (split == 0u) { delta_buf[row] = dl; }`
      : `delta_x = delta_buf[row];`;
  const keyLoop = (body: string): string => {
    let s = body;
    for (let a = rank - 1; a >= 0; a--) {
      s = `for (var kt_${a} = klo_${a}; kt_${a} < khi_${a}; kt_${a}++) {\n${s}\n  }`;
    }
    return s;
  };
  const windowWalk = (body: string): string => {
    let s = body;
    for (let a = rank - 1; a >= 0; a--) s = `for (var m_${a} = mlo_${a}; m_${a} < mhi_${a}; m_${a}++) {\n        ${s}\n      }`;
    return s;
  };
  const code = `${header(family, spec, bakedConsts(spec))}
${storageDecls(bindings)}
${uniformDecl(uniforms, bindings.length)}
${windowFunctions(spec.kernelSize, spec.causal)}
${V.helper}
var<workgroup> k_sh: array<${V.VT}, ${BK * V.DW}>;
var<workgroup> v_sh: array<${V.VT}, ${BK * V.DVW}>;
var<workgroup> krow_sh: array<i32, ${BK}>;

@compute @workgroup_size(${BQ})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let lin = wid.x + wid.y * nwg.x;
  if (lin >= params.total) { return; }
  let tile_lin = lin % params.ntile_total;
  var rest = lin / params.ntile_total;
  let split = rest % params.splits;
  rest = rest / params.splits;
  let gd = rest % params.ngroups;
  rest = rest / params.ngroups;
  let h = rest % params.heads;
  let b = rest / params.heads;
  let hk = h / (params.heads / params.heads_kv);
  ${decodeRowMajor('tile_lin', 'tq', A.map((a) => `params.ntile_${a}`), 'tt')}
  ${decodeRowMajor('split', 'sp', A.map((a) => `u32(params.spl_${a})`), 'ss')}
  ${decodeRowMajor('gd', 'g', A.map((a) => `u32(params.dil_${a})`), 'gg')}
  ${groupSetup(rank)}
  ${per((a) => `let q0_${a} = tq_${a} * i32(QT_${a});`)}
  if (${allAxes((a) => `q0_${a} >= n_${a}`)}) { return; }
  ${per((a) => `let q1_${a} = min(q0_${a} + i32(QT_${a}), n_${a}) - 1;`)}
  ${per(
    (a) => `let wf_${a} = na_window_${a}(q0_${a} * params.dil_${a} + g_${a}, params.len_${a}, params.dil_${a}, params.str_${a});
  let wl_${a} = na_window_${a}(q1_${a} * params.dil_${a} + g_${a}, params.len_${a}, params.dil_${a}, params.str_${a});
  let bs_${a} = (wf_${a}.x - g_${a}) / params.dil_${a};
  let be_${a} = (wl_${a}.x - g_${a}) / params.dil_${a} + wl_${a}.y;
  let nb_${a} = (be_${a} - bs_${a} + i32(KT_${a}) - 1) / i32(KT_${a});
  let klo_${a} = (sp_${a} * nb_${a}) / params.spl_${a};
  let khi_${a} = ((sp_${a} + 1) * nb_${a}) / params.spl_${a};`,
  )}
  ${decodeRowMajor('lid', 'l', A.map((a) => `QT_${a}`), 'll')}
  ${per((a) => `let i_${a} = q0_${a} + l_${a};`)}
  let qvalid = ${allAxesAnd((a) => `i_${a} < n_${a}`)};
  ${per((a) => `var ws_${a} = 0;\n  var wc_${a} = 0;`)}
  var row = 0u;
  ${R.decl('qv', V.DW)}
  ${R.decl('dov', V.DVW)}
  ${R.decl('acc', V.DW)}
  var lse_x = 0.0;
  var delta_x = 0.0;
  if (qvalid) {
    ${per(
      (a) => `let w_${a} = na_window_${a}(i_${a} * params.dil_${a} + g_${a}, params.len_${a}, params.dil_${a}, params.str_${a});
    ws_${a} = (w_${a}.x - g_${a}) / params.dil_${a};
    wc_${a} = w_${a}.y;
    let x_${a} = i_${a} * params.dil_${a} + g_${a};`,
      '\n    ',
    )}
    row = (b * params.tokens + ${tokenIndex('x', rank)}) * params.heads + h;
    ${R.each(V.DW, (c, r) => `${r('qv')} = ${V.VF}(q_buf[row * DW + ${c}]);`)}
    ${R.each(V.DVW, (c, r) => `${r('dov')} = ${V.VF}(do_buf[row * DVW + ${c}]);`)}
    lse_x = lse_buf[row];
    ${deltaLoad}
  }
  ${keyLoop(`    workgroupBarrier();
    for (var e = lid; e < BK; e += BQ) {
      ${decodeRowMajor('e', 'm', A.map((a) => `KT_${a}`), 'mm')}
      ${A.map((a) => `let j_${a} = bs_${a} + kt_${a} * i32(KT_${a}) + m_${a};`).join('\n      ')}
      let ok = ${allAxesAnd((a) => `j_${a} < be_${a}`)};
      ${A.map((a) => `let y_${a} = j_${a} * params.dil_${a} + g_${a};`).join('\n      ')}
      let kvrow = (b * params.tokens + ${tokenIndex('y', rank)}) * params.heads_kv + hk;
      krow_sh[e] = select(-1, i32(kvrow), ok);
    }
    workgroupBarrier();
    for (var e = lid; e < BK * DW; e += BQ) {
      let r = krow_sh[e / DW];
      let ks = ${swizzledStore('e', 'DW', KSW)};
      if (r >= 0) { k_sh[ks] = k_buf[u32(r) * DW + e % DW]; } else { k_sh[ks] = ${V.VT}(); }
    }
    for (var e = lid; e < BK * DVW; e += BQ) {
      let r = krow_sh[e / DVW];
      let vs = ${swizzledStore('e', 'DVW', VSW)};
      if (r >= 0) { v_sh[vs] = v_buf[u32(r) * DVW + e % DVW]; } else { v_sh[vs] = ${V.VT}(); }
    }
    workgroupBarrier();
    if (qvalid) {
      // Exact window walk: per axis only the staged keys of this query's own window (slot t = j - ws).
      ${per((a) => `let kb_${a} = bs_${a} + kt_${a} * i32(KT_${a});
      let mlo_${a} = max(ws_${a} - kb_${a}, 0);
      let mhi_${a} = min(ws_${a} + wc_${a} - kb_${a}, i32(KT_${a}));`, '\n      ')}
      ${windowWalk(`let m = ${tileLinear(rank, 'm', 'KT')};
        ${per((a) => `let j_${a} = kb_${a} + m_${a};`, '\n        ')}
        let ksw = m & ${KSW}u;
        let vsw = m & ${VSW}u;
        ${dotStmts(R, V, 'sdot', V.DW, (c, r) => [r('qv'), `${V.VF}(k_sh[m * DW + ${swizzledCol(c, 'ksw', KSW)}])`])}
        var s = params.scale * sdot;
        ${spec.rpb ? `s += f32(rpb_buf[${rpbIndexExpr(rank, spec.kernelSize, 'j', 'i')}]);` : ''}
        let p = exp(s - lse_x);
        ${dotStmts(R, V, 'dp', V.DVW, (c, r) => [r('dov'), `${V.VF}(v_sh[m * DVW + ${swizzledCol(c, 'vsw', VSW)}])`])}
        let ds = p * (dp - delta_x);
        ${R.each(V.DW, (c, r) => `${r('acc')} = fma(${V.VF}(ds), ${V.VF}(k_sh[m * DW + ${swizzledCol(c, 'ksw', KSW)}]), ${r('acc')});`)}
        ${spec.gradRpb ? `ds_buf[row * NSLOTS + ${A.reduce((e, a) => (a === 0 ? 'u32(j_0 - ws_0)' : `(${e} * u32(KS_${a}) + u32(j_${a} - ws_${a}))`), '')}] = ds;` : ''}`)}
    }`)}
  if (qvalid) {
    ${
      spec.partial
        ? `let base = split * params.rows * D + row * D;
    ${R.eachScalar(D, (c, x) => `dq_buf[base + ${c}] = params.scale * ${x('acc')};`)}`
        : `${R.eachScalar(D, (c, x) => `dq_buf[row * D + ${c}] = ${T}(params.scale * ${x('acc')});`)}`
    }
  }
}
`;
  return {
    key: kernelKey(family, GEN, spec),
    code,
    entryPoint: 'main',
    workgroupSize: [BQ, 1, 1],
    bindings: bindings.map(({ name, access }) => ({ name, access })),
    uniforms,
    workgroupBytes: dqWorkgroupBytes(rank, D, DV, spec.dtype, BK),
    features: spec.dtype === 'float16' ? ['shader-f16'] : [],
    bufferNames: names,
  };
}

/** The dK/dV kernel (pass 3). */
export function generateFusedBackwardDkv(spec: FusedBackwardDkvSpec): NamedKernel {
  const { rank, dim: D, dimV: DV } = spec;
  const T = wgslType(spec.dtype);
  const BQ = product(spec.queryTile);
  const BK = product(spec.keyTile);
  const family = 'na-fused-backward-dkv';
  const V = vecTypes(T, D, DV);
  const R = regs(V);
  const QSW = swizzleMask(V, V.DW, spec.dtype);
  const OSW = swizzleMask(V, V.DVW, spec.dtype);
  const bindings: (StorageBinding & { elem: string })[] = [
    { name: 'q_buf', access: 'read', elem: V.VT },
    { name: 'k_buf', access: 'read', elem: V.VT },
    { name: 'v_buf', access: 'read', elem: V.VT },
    { name: 'do_buf', access: 'read', elem: V.VT },
    { name: 'lse_buf', access: 'read', elem: 'f32' },
    { name: 'delta_buf', access: 'read', elem: 'f32' },
  ];
  const names = ['query', 'key', 'value', 'gradOutput', 'logsumexp', 'delta'];
  if (spec.rpb) {
    bindings.push({ name: 'rpb_buf', access: 'read', elem: T });
    names.push('rpb');
  }
  bindings.push({ name: 'dk_buf', access: 'read_write', elem: T }, { name: 'dv_buf', access: 'read_write', elem: T });
  names.push('gradKey', 'gradValue');
  const uniforms: UniformField[] = [
    { name: 'batch', type: 'u32' },
    { name: 'heads', type: 'u32' },
    { name: 'heads_kv', type: 'u32' },
    { name: 'tokens', type: 'u32' },
    { name: 'total', type: 'u32' },
    { name: 'ntile_total', type: 'u32' },
    { name: 'ngroups', type: 'u32' },
    { name: 'scale', type: 'f32' },
    ...axisUniforms(rank),
    ...axes(rank).map((a) => ({ name: `ntile_${a}`, type: 'u32' as const })),
  ];
  const A = axes(rank);
  const per = (f: (a: number) => string, sep = '\n  '): string => A.map(f).join(sep);
  const allAxes = (f: (a: number) => string): string => A.map(f).join(' || ');
  const allAxesAnd = (f: (a: number) => string): string => A.map(f).join(' && ');
  const queryLoop = (body: string): string => {
    let s = body;
    for (let a = rank - 1; a >= 0; a--) {
      s = `for (var qt_${a} = qlo_${a}; qt_${a} < qhi_${a}; qt_${a}++) {\n${s}\n  }`;
    }
    return s;
  };
  const inverseWalk = (body: string): string => {
    let s = body;
    for (let a = rank - 1; a >= 0; a--) s = `for (var m_${a} = mlo_${a}; m_${a} < mhi_${a}; m_${a}++) {\n        ${s}\n      }`;
    return s;
  };
  const code = `${header(family, spec, bakedConsts(spec))}
${storageDecls(bindings)}
${uniformDecl(uniforms, bindings.length)}
${windowFunctions(spec.kernelSize, spec.causal)}
${V.helper}
var<workgroup> q_sh: array<${V.VT}, ${BQ * V.DW}>;
var<workgroup> do_sh: array<${V.VT}, ${BQ * V.DVW}>;
var<workgroup> lse_sh: array<f32, ${BQ}>;
var<workgroup> dl_sh: array<f32, ${BQ}>;
var<workgroup> qrow_sh: array<i32, ${BQ}>;

@compute @workgroup_size(${BK})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let lin = wid.x + wid.y * nwg.x;
  if (lin >= params.total) { return; }
  let tile_lin = lin % params.ntile_total;
  var rest = lin / params.ntile_total;
  let gd = rest % params.ngroups;
  rest = rest / params.ngroups;
  let hk = rest % params.heads_kv;
  let b = rest / params.heads_kv;
  let group_heads = params.heads / params.heads_kv;
  ${decodeRowMajor('tile_lin', 'tk', A.map((a) => `params.ntile_${a}`), 'tt')}
  ${decodeRowMajor('gd', 'g', A.map((a) => `u32(params.dil_${a})`), 'gg')}
  ${groupSetup(rank)}
  ${per((a) => `let k0_${a} = tk_${a} * i32(KT_${a});`)}
  if (${allAxes((a) => `k0_${a} >= n_${a}`)}) { return; }
  ${per(
    (a) => `let k1_${a} = min(k0_${a} + i32(KT_${a}), n_${a}) - 1;
  let if_${a} = na_inverse_${a}(k0_${a} * params.dil_${a} + g_${a}, params.len_${a}, params.dil_${a}, params.str_${a});
  let il_${a} = na_inverse_${a}(k1_${a} * params.dil_${a} + g_${a}, params.len_${a}, params.dil_${a}, params.str_${a});
  let ibs_${a} = (if_${a}.x - g_${a}) / params.dil_${a};
  let ibe_${a} = (il_${a}.y - g_${a}) / params.dil_${a};
  let qlo_${a} = 0;
  let qhi_${a} = (ibe_${a} - ibs_${a} + i32(QT_${a}) - 1) / i32(QT_${a});`,
  )}
  ${decodeRowMajor('lid', 'l', A.map((a) => `KT_${a}`), 'll')}
  ${per((a) => `let j_${a} = k0_${a} + l_${a};`)}
  let kvalid = ${allAxesAnd((a) => `j_${a} < n_${a}`)};
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
      (a) => `let y_${a} = j_${a} * params.dil_${a} + g_${a};
    let inv_${a} = na_inverse_${a}(y_${a}, params.len_${a}, params.dil_${a}, params.str_${a});
    ifs_${a} = (inv_${a}.x - g_${a}) / params.dil_${a};
    ife_${a} = (inv_${a}.y - g_${a}) / params.dil_${a};`,
      '\n    ',
    )}
    kvrow = (b * params.tokens + ${tokenIndex('y', rank)}) * params.heads_kv + hk;
    ${R.each(V.DW, (c, r) => `${r('kv')} = ${V.VF}(k_buf[kvrow * DW + ${c}]);`)}
    ${R.each(V.DVW, (c, r) => `${r('vv')} = ${V.VF}(v_buf[kvrow * DVW + ${c}]);`)}
  }
  for (var hh = 0u; hh < group_heads; hh++) {
    let h = hk * group_heads + hh;
    ${queryLoop(`    workgroupBarrier();
    for (var e = lid; e < BQ; e += BK) {
      ${decodeRowMajor('e', 'm', A.map((a) => `QT_${a}`), 'mm')}
      ${A.map((a) => `let i_${a} = ibs_${a} + qt_${a} * i32(QT_${a}) + m_${a};`).join('\n      ')}
      let ok = ${allAxesAnd((a) => `i_${a} < ibe_${a}`)};
      if (ok) {
        ${A.map((a) => `let x_${a} = i_${a} * params.dil_${a} + g_${a};`).join('\n        ')}
        let row = (b * params.tokens + ${tokenIndex('x', rank)}) * params.heads + h;
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
    for (var e = lid; e < BQ * DW; e += BK) {
      let r = qrow_sh[e / DW];
      let qs = ${swizzledStore('e', 'DW', QSW)};
      if (r >= 0) { q_sh[qs] = q_buf[u32(r) * DW + e % DW]; } else { q_sh[qs] = ${V.VT}(); }
    }
    for (var e = lid; e < BQ * DVW; e += BK) {
      let r = qrow_sh[e / DVW];
      let os = ${swizzledStore('e', 'DVW', OSW)};
      if (r >= 0) { do_sh[os] = do_buf[u32(r) * DVW + e % DVW]; } else { do_sh[os] = ${V.VT}(); }
    }
    workgroupBarrier();
    if (kvalid) {
      // Exact inverse walk: per axis only the staged queries in [ifs, ife) (no window membership test).
      ${per((a) => `let qb_${a} = ibs_${a} + qt_${a} * i32(QT_${a});
      let mlo_${a} = max(ifs_${a} - qb_${a}, 0);
      let mhi_${a} = min(ife_${a} - qb_${a}, i32(QT_${a}));`, '\n      ')}
      ${inverseWalk(`let m = ${tileLinear(rank, 'm', 'QT')};
        ${per((a) => `let i_${a} = qb_${a} + m_${a};`, '\n        ')}
        let qsw = m & ${QSW}u;
        let osw = m & ${OSW}u;
        ${dotStmts(R, V, 'sdot', V.DW, (c, r) => [`${V.VF}(q_sh[m * DW + ${swizzledCol(c, 'qsw', QSW)}])`, r('kv')])}
        var s = params.scale * sdot;
        ${spec.rpb ? `s += f32(rpb_buf[${rpbIndexExpr(rank, spec.kernelSize, 'j', 'i')}]);` : ''}
        let p = exp(s - lse_sh[m]);
        ${dotStmts(R, V, 'dp', V.DVW, (c, r) => [`${V.VF}(do_sh[m * DVW + ${swizzledCol(c, 'osw', OSW)}])`, r('vv')])}
        let ds = p * (dp - dl_sh[m]);
        ${R.each(V.DVW, (c, r) => `${r('dva')} = fma(${V.VF}(p), ${V.VF}(do_sh[m * DVW + ${swizzledCol(c, 'osw', OSW)}]), ${r('dva')});`)}
        ${R.each(V.DW, (c, r) => `${r('dka')} = fma(${V.VF}(ds), ${V.VF}(q_sh[m * DW + ${swizzledCol(c, 'qsw', QSW)}]), ${r('dka')});`)}`)}
    }`)}
  }
  if (kvalid) {
    ${R.eachScalar(D, (c, x) => `dk_buf[kvrow * D + ${c}] = ${T}(params.scale * ${x('dka')});`)}
    ${R.eachScalar(DV, (c, x) => `dv_buf[kvrow * DV + ${c}] = ${T}(${x('dva')});`)}
  }
}
`;
  return {
    key: kernelKey(family, GEN, spec),
    code,
    entryPoint: 'main',
    workgroupSize: [BK, 1, 1],
    bindings: bindings.map(({ name, access }) => ({ name, access })),
    uniforms,
    workgroupBytes: dkvWorkgroupBytes(rank, D, DV, spec.dtype, BQ),
    features: spec.dtype === 'float16' ? ['shader-f16'] : [],
    bufferNames: names,
  };
}

export interface FusedBackwardDeltaSpec {
  readonly dimV: number;
  readonly dtype: GpuDType;
}

/** The separate delta pass (pass 1, compute_delta_with_torch = true). */
export function generateFusedBackwardDelta(spec: FusedBackwardDeltaSpec): NamedKernel {
  const T = wgslType(spec.dtype);
  const family = 'na-fused-backward-delta';
  const bindings: (StorageBinding & { elem: string })[] = [
    { name: 'o_buf', access: 'read', elem: T },
    { name: 'do_buf', access: 'read', elem: T },
    { name: 'delta_buf', access: 'read_write', elem: 'f32' },
  ];
  const uniforms: UniformField[] = [{ name: 'rows', type: 'u32' }];
  const code = `${header(family, spec, { DV: u(spec.dimV), WG: u(WG_1D) })}
${storageDecls(bindings)}
${uniformDecl(uniforms, bindings.length)}
@compute @workgroup_size(${WG_1D})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let row = (wid.x + wid.y * nwg.x) * WG + lid;
  if (row >= params.rows) { return; }
  var acc = 0.0;
  for (var c = 0u; c < DV; c++) { acc += f32(do_buf[row * DV + c]) * f32(o_buf[row * DV + c]); }
  delta_buf[row] = acc;
}
`;
  return {
    key: kernelKey(family, GEN, spec),
    code,
    entryPoint: 'main',
    workgroupSize: [WG_1D, 1, 1],
    bindings: bindings.map(({ name, access }) => ({ name, access })),
    uniforms,
    workgroupBytes: 0,
    features: spec.dtype === 'float16' ? ['shader-f16'] : [],
    bufferNames: ['output', 'gradOutput', 'delta'],
  };
}

export interface FusedBackwardDqReduceSpec {
  readonly dtype: GpuDType;
}

/** Sum of the per-split dQ partials in split order (pass 4). */
export function generateFusedBackwardDqReduce(spec: FusedBackwardDqReduceSpec): NamedKernel {
  const T = wgslType(spec.dtype);
  const family = 'na-fused-backward-dq-reduce';
  const bindings: (StorageBinding & { elem: string })[] = [
    { name: 'part_buf', access: 'read', elem: 'f32' },
    { name: 'dq_buf', access: 'read_write', elem: T },
  ];
  const uniforms: UniformField[] = [
    { name: 'count', type: 'u32' },
    { name: 'splits', type: 'u32' },
  ];
  const code = `${header(family, spec, { WG: u(WG_1D) })}
${storageDecls(bindings)}
${uniformDecl(uniforms, bindings.length)}
@compute @workgroup_size(${WG_1D})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let i = (wid.x + wid.y * nwg.x) * WG + lid;
  if (i >= params.count) { return; }
  var acc = 0.0;
  for (var s = 0u; s < params.splits; s++) { acc += part_buf[s * params.count + i]; }
  dq_buf[i] = ${T}(acc);
}
`;
  return {
    key: kernelKey(family, GEN, spec),
    code,
    entryPoint: 'main',
    workgroupSize: [WG_1D, 1, 1],
    bindings: bindings.map(({ name, access }) => ({ name, access })),
    uniforms,
    workgroupBytes: 0,
    features: spec.dtype === 'float16' ? ['shader-f16'] : [],
    bufferNames: ['dqPartial', 'gradQuery'],
  };
}

export interface FusedBackwardRpbReduceSpec {
  readonly rank: NaRank;
  readonly kernelSize: readonly number[];
  readonly causal: readonly boolean[];
  readonly dtype: GpuDType;
}

/**
 * d_rpb (pass 5): one invocation per (head, bias cell); sums dS over batch, then queries in token order, of the
 * slot whose key sits at the cell's relative offset (fixed order, so deterministic).
 */
export function generateFusedBackwardRpbReduce(spec: FusedBackwardRpbReduceSpec): NamedKernel {
  const { rank } = spec;
  const T = wgslType(spec.dtype);
  const family = 'na-fused-backward-rpb-reduce';
  const A = axes(rank);
  const bindings: (StorageBinding & { elem: string })[] = [
    { name: 'ds_buf', access: 'read', elem: 'f32' },
    { name: 'drpb_buf', access: 'read_write', elem: T },
  ];
  const uniforms: UniformField[] = [
    { name: 'batch', type: 'u32' },
    { name: 'heads', type: 'u32' },
    { name: 'tokens', type: 'u32' },
    { name: 'cells', type: 'u32' },
    ...axisUniforms(rank),
  ];
  const consts: Record<string, string | number> = { RANK: u(rank), WG: u(WG_1D), NSLOTS: u(product(spec.kernelSize)) };
  for (const a of A) consts[`KS_${a}`] = `${spec.kernelSize[a] as number}i`;
  let body = `acc += ds_buf[((b * params.tokens + ${tokenIndex('x', rank)}) * params.heads + h) * NSLOTS + ${A.reduce(
    (e, a) => (a === 0 ? 'u32(t_0)' : `(${e} * u32(KS_${a}) + u32(t_${a}))`),
    '',
  )}];`;
  for (let a = rank - 1; a >= 0; a--) {
    body = `for (var x_${a} = 0; x_${a} < params.len_${a}; x_${a}++) {
      let y_${a} = x_${a} + off_${a} * params.dil_${a};
      if (y_${a} < 0 || y_${a} >= params.len_${a}) { continue; }
      let w_${a} = na_window_${a}(x_${a}, params.len_${a}, params.dil_${a}, params.str_${a});
      let t_${a} = (y_${a} - w_${a}.x) / params.dil_${a};
      if (y_${a} < w_${a}.x || t_${a} >= w_${a}.y) { continue; }
      ${body}
    }`;
  }
  const code = `${header(family, spec, consts)}
${storageDecls(bindings)}
${uniformDecl(uniforms, bindings.length)}
${windowFunctions(spec.kernelSize, spec.causal)}
@compute @workgroup_size(${WG_1D})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let idx = (wid.x + wid.y * nwg.x) * WG + lid;
  if (idx >= params.heads * params.cells) { return; }
  let h = idx / params.cells;
  ${decodeRowMajor('idx % params.cells', 'r', A.map((a) => `u32(2 * KS_${a} - 1)`), 'rr')}
  ${A.map((a) => `let off_${a} = r_${a} - (KS_${a} - 1);`).join('\n  ')}
  var acc = 0.0;
  for (var b = 0u; b < params.batch; b++) {
    ${body}
  }
  drpb_buf[idx] = ${T}(acc);
}
`;
  return {
    key: kernelKey(family, GEN, spec),
    code,
    entryPoint: 'main',
    workgroupSize: [WG_1D, 1, 1],
    bindings: bindings.map(({ name, access }) => ({ name, access })),
    uniforms,
    workgroupBytes: 0,
    features: spec.dtype === 'float16' ? ['shader-f16'] : [],
    bufferNames: ['dsScratch', 'gradRpb'],
  };
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
  const tokens = product(spatial);
  const rows = problem.batch * tokens * problem.heads;
  const ngroups = product(params.dilation);
  const S = product(config.numSplitsKey);
  const partial = S > 1;
  const axisU: Record<string, number> = {};
  for (const a of axes(rank)) {
    axisU[`len_${a}`] = spatial[a] as number;
    axisU[`dil_${a}`] = params.dilation[a] as number;
    axisU[`str_${a}`] = params.stride[a] as number;
  }
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
  if (problem.hasGradRpb) scratch.dsScratch = rows * product(params.kernelSize);
  passes.push({
    kernel: generateFusedBackwardDq({
      ...baked,
      queryTile: [...config.queryTile],
      keyTile: [...config.keyTile],
      rpb: problem.hasRpb,
      gradRpb: problem.hasGradRpb,
      delta: deltaMode,
      partial,
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
    kernel: generateFusedBackwardDkv({ ...baked, queryTile: [...config.queryTile], keyTile: [...config.keyTile], rpb: problem.hasRpb }),
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
    const cells = product(params.kernelSize.map((k) => 2 * k - 1));
    passes.push({
      kernel: generateFusedBackwardRpbReduce({ rank, kernelSize: baked.kernelSize, causal: baked.causal, dtype }),
      uniforms: { batch: problem.batch, heads: problem.heads, tokens, cells, ...axisU },
      workgroups: fold(Math.ceil((problem.heads * cells) / WG_1D), maxWorkgroupsPerDimension),
    });
  }
  return { passes, scratch };
}
