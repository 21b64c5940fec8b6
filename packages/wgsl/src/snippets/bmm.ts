/**
 * The three BMM-style neighborhood kernels behind NATTEN's `qk` / `av` ops (heads-first `[B, H, *sp, D]`,
 * attn `[B, H, *sp, P]`, P = prod(K), slots row-major over the kernel axes; spec §3.4-§3.7, §7.4):
 *
 * - `pn` (NATTEN "PN"): `out[x, t] = <a_x, b_{n_t(x)}> (+ rpb)`; invalid (causal) slots get a fill value
 *   (-inf for qk_forward, 0 for the d_attn of av_backward).
 * - `nn` (NATTEN "NN"): `out[x, :] = sum_{valid t} attn[x, t] * b_{n_t(x)}` (av_forward; dQ of qk_backward).
 * - `in` (NATTEN "IN"): `out[j, :] = sum_{x : j in N(x)} attn[x, t(x, j)] * a_x` (dV of av_backward, dK of
 *   qk_backward), gathered over the exact inverse neighborhood: no atomics.
 *
 * Structure (all three): one workgroup = (batch*head, dilation group, one tile of TILE_0 x TILE_1 x TILE_2
 * tokens in group coordinates); one invocation owns one token of the tile. The rows of the tile's box
 * (keys for pn/nn, queries for in) are staged through workgroup memory in chunks of BK rows in row-major
 * box order, so every row is read from global memory once per workgroup; each invocation then tests the
 * staged row against its own window (integer compares only) and does the D-long dot product / axpy for
 * members. Accumulation runs in f32 for every storage dtype. Box order equals slot order, so the NN sum
 * runs in slot order, like NATTEN's reference.
 *
 * The code is always emitted for three spatial axes; a rank-1/2 problem is padded with leading unit axes
 * (K = 1, L = 1), which leaves every row-major layout (tokens, slots, rpb) unchanged.
 */
import { invariant } from '@natten-web/core';
import { dtypeFeatures, enableDirectives, type GpuDType, wgslType } from '../dtype.ts';
import { type GeneratedKernel, kernelKey, type StorageBinding, type UniformField, uniformDecl } from '../kernel.ts';
import { windowFunctions } from './window.ts';

function indent(text: string, n: number): string {
  const pad = ' '.repeat(n);
  return text
    .split('\n')
    .map((l) => (l.length > 0 ? pad + l : l))
    .join('\n');
}

export type BmmKind = 'pn' | 'nn' | 'in';

/** Invalid-slot fill of the pn kernel: -inf (qk_forward, as NATTEN) or 0 (d_attn of av_backward). */
export type BmmFill = 'neg-inf' | 'zero';

export interface BmmKernelSpec {
  readonly kind: BmmKind;
  /** Real rank (1-3); code is emitted for 3 padded axes. */
  readonly rank: 1 | 2 | 3;
  /** Kernel size per real axis (odd, >= 3 for NATTEN's BMM ops; any K >= 1 works here). */
  readonly kernelSize: readonly number[];
  readonly causal: readonly boolean[];
  /** Head dim D of the rows (q/k for qk, v for av). */
  readonly dim: number;
  readonly dtype: GpuDType;
  /** Tile shape per real axis, in group coordinates; the product is the workgroup size. */
  readonly tile: readonly number[];
  /** Rows staged per chunk. */
  readonly chunk: number;
  /** pn only: add rel_pos_bias. */
  readonly rpb?: boolean | undefined;
  /** pn only: fill of invalid slots. */
  readonly fill?: BmmFill | undefined;
  /** The tensor-core kernel (`ops/bmm-mma.ts`: head dim a multiple of 16, 64-token tiles; float32 through the split). */
  readonly mma?: boolean | undefined;
  /**
   * The float32 tensor-core kernel's entries of its op's `scales` binding (max |x| per tensor, in the op's
   * `BMM_SPLIT_TENSORS` order): the first operand's (pn `row_a`, nn / in `attn`) and the walked operand's (pn / nn
   * `row_b`, in `row_a`).
   */
  readonly scales?: readonly [number, number] | undefined;
}

const GEN = 1;

/** Uniform fields shared by the BMM kernels (per-call sizes; padded axes get L = d = s = 1). */
export const BMM_UNIFORMS: readonly UniformField[] = [
  { name: 'bh', type: 'i32' },
  { name: 'heads', type: 'i32' },
  { name: 'L0', type: 'i32' },
  { name: 'L1', type: 'i32' },
  { name: 'L2', type: 'i32' },
  { name: 'd0', type: 'i32' },
  { name: 'd1', type: 'i32' },
  { name: 'd2', type: 'i32' },
  { name: 's0', type: 'i32' },
  { name: 's1', type: 'i32' },
  { name: 's2', type: 'i32' },
  { name: 'tiles0', type: 'i32' },
  { name: 'tiles1', type: 'i32' },
  { name: 'tiles2', type: 'i32' },
];

/** pn kernels with a -inf fill also take the fill's bit pattern (WGSL has no inf literal; a uniform keeps it out of constant folding). */
export const BMM_FILL_UNIFORM: UniformField = { name: 'fill_bits', type: 'u32' };

/** Pad a per-real-axis list to 3 axes with leading `pad` values. */
export function padAxes<T>(values: readonly T[], pad: T): [T, T, T] {
  const out: T[] = [];
  for (let a = 0; a < 3 - values.length; a++) out.push(pad);
  out.push(...values);
  return [out[0] as T, out[1] as T, out[2] as T];
}

/** WGSL consts of a padded 3-axis window: RANK (the real rank), K0..K2, P = prod(K), R0..R2 = 2K - 1 (bias extents). */
export function bmmWindowConsts(rank: number, K: readonly [number, number, number]): string {
  const R = K.map((k) => 2 * k - 1);
  return `const RANK: i32 = ${rank};
const K0: i32 = ${K[0]};
const K1: i32 = ${K[1]};
const K2: i32 = ${K[2]};
const P: i32 = ${K[0] * K[1] * K[2]};
const R0: i32 = ${R[0]};
const R1: i32 = ${R[1]};
const R2: i32 = ${R[2]};`;
}

/** WGSL consts of a padded 3-axis tile: TILE_0..TILE_2 and WG, its product (the workgroup size). */
export function bmmTileConsts(TL: readonly [number, number, number]): string {
  return `const TILE_0: i32 = ${TL[0]};
const TILE_1: i32 = ${TL[1]};
const TILE_2: i32 = ${TL[2]};
const WG: i32 = ${TL[0] * TL[1] * TL[2]};`;
}

/**
 * The first lines of a BMM-grid `main` (uniforms `BMM_UNIFORMS`, builtins `wid`, `nwg`): the flat workgroup
 * index `wgi` (returning past the grid), its tile, dilation group (`g0..g2`) and batch*head `bh` (and head `h`
 * when `withHead`), and the group's extents `n0..n2`.
 */
export function bmmGridDecode(withHead: boolean): string {
  return `  let gcount = params.d0 * params.d1 * params.d2;
  let tcount = params.tiles0 * params.tiles1 * params.tiles2;
  let wgi = i32(wid.x + wid.y * nwg.x);
  if (wgi >= params.bh * gcount * tcount) { return; }
  let tile = wgi % tcount;
  let rest = wgi / tcount;
  let gl = rest % gcount;
  let bh = rest / gcount;
${withHead ? '  let h = bh % params.heads;\n' : ''}  let g0 = gl / (params.d1 * params.d2);
  let g1 = (gl / params.d2) % params.d1;
  let g2 = gl % params.d2;
  let n0 = na_group_len(params.L0, params.d0, g0);
  let n1 = na_group_len(params.L1, params.d1, g1);
  let n2 = na_group_len(params.L2, params.d2, g2);`;
}

/**
 * WGSL of the tile's box per axis in group coordinates (`lo_a`, `hi_a`, `w_a`; needs `tq_a`, `qe_a`, `g_a`, `n_a`): the
 * union of the tile's windows (keys, for pn/nn) or of its keys' inverse neighborhoods (queries, for in).
 */
export function bmmBoxLines(inverse: boolean): string {
  const lines: string[] = [];
  for (let a = 0; a < 3; a++) {
    if (inverse) {
      lines.push(
        `  let lo${a} = (na_inverse_${a}(tq${a} * params.d${a} + g${a}, params.L${a}, params.d${a}, params.s${a}).x - g${a}) / params.d${a};`,
        `  let hi${a} = (na_inverse_${a}(qe${a} * params.d${a} + g${a}, params.L${a}, params.d${a}, params.s${a}).y - g${a}) / params.d${a};`,
      );
    } else {
      lines.push(
        `  let lo${a} = (na_window_${a}(tq${a} * params.d${a} + g${a}, params.L${a}, params.d${a}, params.s${a}).x - g${a}) / params.d${a};`,
        `  let hi${a} = min((na_window_${a}(qe${a} * params.d${a} + g${a}, params.L${a}, params.d${a}, params.s${a}).x - g${a}) / params.d${a} + K${a}, n${a});`,
      );
    }
    lines.push(`  let w${a} = max(hi${a} - lo${a}, 0);`);
  }
  return lines.join('\n');
}

/**
 * WGSL after `bmmGridDecode`: the workgroup's tile (`tq_a` first and `qe_a` last token per axis, group coordinates;
 * a tile past a short dilation group's end returns, uniformly), `N`, `lid` (i32) and the tile token of invocation
 * `lid` (row-major in the tile; `live` false past the group's end, not past the tile): its group coordinates `i_a` (clamped into
 * the group), original coordinates `x_a` and flat index `tok`.
 */
export const BMM_TILE_TOKEN = `  let tq0 = (tile / (params.tiles1 * params.tiles2)) * TILE_0;
  let tq1 = ((tile / params.tiles2) % params.tiles1) * TILE_1;
  let tq2 = (tile % params.tiles2) * TILE_2;
  // Tiles past a short dilation group's end: nothing to do (workgroup-uniform return).
  if (tq0 >= n0 || tq1 >= n1 || tq2 >= n2) { return; }
  let qe0 = min(tq0 + TILE_0, n0) - 1;
  let qe1 = min(tq1 + TILE_1, n1) - 1;
  let qe2 = min(tq2 + TILE_2, n2) - 1;
  let N = params.L0 * params.L1 * params.L2;
  let lid = i32(lidx);
  let li0 = tq0 + lid / (TILE_1 * TILE_2);
  let li1 = tq1 + (lid / TILE_2) % TILE_1;
  let li2 = tq2 + lid % TILE_2;
  let live = li0 < n0 && li1 < n1 && li2 < n2;
  // Own token (clamped into the group for inactive invocations, which never write).
  let i0 = min(li0, n0 - 1);
  let i1 = min(li1, n1 - 1);
  let i2 = min(li2, n2 - 1);
  let x0 = i0 * params.d0 + g0;
  let x1 = i1 * params.d1 + g1;
  let x2 = i2 * params.d2 + g2;
  let tok = (x0 * params.L1 + x1) * params.L2 + x2;`;

/** Default tile per rank: 64 invocations (64 / 8x8 / 4x4x4 tokens). */
export function defaultBmmTile(rank: 1 | 2 | 3): number[] {
  return rank === 1 ? [64] : rank === 2 ? [8, 8] : [4, 4, 4];
}

/** Rows per staged chunk: about 8 KiB of f32 rows, a power of two in [1, 64]. */
export function defaultBmmChunk(dim: number): number {
  let bk = 64;
  while (bk > 1 && bk * dim * 4 > 8192) bk /= 2;
  return bk;
}

/** The bindings of a BMM kernel (by NATTEN's roles; the tensor-core kernels take the same). */
export function bmmBindings(spec: Pick<BmmKernelSpec, 'kind' | 'rpb'>): StorageBinding[] {
  switch (spec.kind) {
    case 'pn':
      return [
        { name: 'row_a', access: 'read' },
        { name: 'row_b', access: 'read' },
        ...(spec.rpb === true ? [{ name: 'rpb', access: 'read' as const }] : []),
        { name: 'attn_out', access: 'read_write' },
      ];
    case 'nn':
      return [
        { name: 'attn', access: 'read' },
        { name: 'row_b', access: 'read' },
        { name: 'row_out', access: 'read_write' },
      ];
    case 'in':
      return [
        { name: 'attn', access: 'read' },
        { name: 'row_a', access: 'read' },
        { name: 'row_out', access: 'read_write' },
      ];
  }
}

export function bmmKernelKey(spec: BmmKernelSpec): string {
  return kernelKey(`na-bmm-${spec.kind}`, GEN, spec);
}

/** Generate one BMM kernel. Per-call sizes (batch, heads, extents, dilation, stride) are uniforms. */
export function generateBmmKernel(spec: BmmKernelSpec): GeneratedKernel {
  const key = bmmKernelKey(spec);
  const tileSize = spec.tile.reduce((x, y) => x * y, 1);
  invariant(
    spec.tile.length === spec.rank && spec.kernelSize.length === spec.rank && spec.causal.length === spec.rank,
    () => `generateBmmKernel: tile, kernelSize and causal need ${spec.rank} entries (${key})`,
  );
  invariant(
    Number.isInteger(spec.chunk) && spec.chunk >= 1 && spec.chunk <= tileSize,
    () => `generateBmmKernel: chunk ${spec.chunk} must be an integer in [1, tile size ${tileSize}] (${key})`,
  );
  const T = wgslType(spec.dtype);
  const K = padAxes(spec.kernelSize, 1);
  const C = padAxes(spec.causal, false);
  const TL = padAxes(spec.tile, 1);
  const wg = TL[0] * TL[1] * TL[2];
  const D = spec.dim;
  const V = D % 4 === 0 ? 4 : 1;
  const DV = D / V;
  const BK = spec.chunk;
  const anyCausal = C.some((c) => c);
  const F = V === 4 ? 'vec4<f32>' : 'f32';
  const S = V === 4 ? `vec4<${T}>` : T;
  const zeroF = V === 4 ? 'vec4<f32>(0.0)' : '0.0';
  const bindings = bmmBindings(spec);
  const fillNegInf = spec.kind === 'pn' && anyCausal && spec.fill !== 'zero';
  const uniforms = fillNegInf ? [...BMM_UNIFORMS, BMM_FILL_UNIFORM] : [...BMM_UNIFORMS];
  const elemOf = (name: string): string => (name === 'attn' || name === 'attn_out' || name === 'rpb' ? T : S);
  const decls = bindings
    .map((b, i) => `@group(0) @binding(${i}) var<storage, ${b.access}> ${b.name}: array<${elemOf(b.name)}>;`)
    .join('\n');
  const isIn = spec.kind === 'in';
  const workgroupBytes = BK * DV * V * 4 + BK * 16 + (isIn ? BK * 16 : 0);

  const fillExpr = !anyCausal
    ? ''
    : fillNegInf
      ? T === 'f32'
        ? 'bitcast<f32>(params.fill_bits)'
        : 'bitcast<vec2<f16>>(params.fill_bits).x'
      : `${T}(0.0)`;

  // Own window (pn/nn): slot-0 start (group coords) and valid count per axis.
  const ownWindow = isIn
    ? ''
    : [0, 1, 2]
        .map(
          (a) =>
            `  let ow${a} = na_window_${a}(x${a}, params.L${a}, params.d${a}, params.s${a});\n  let st${a} = (ow${a}.x - g${a}) / params.d${a};\n  let cn${a} = ow${a}.y;`,
        )
        .join('\n');

  const metaFill = isIn
    ? `      let y0 = j0 * params.d0 + g0;
      let y1 = j1 * params.d1 + g1;
      let y2 = j2 * params.d2 + g2;
      let qw0 = na_window_0(y0, params.L0, params.d0, params.s0);
      let qw1 = na_window_1(y1, params.L1, params.d1, params.s1);
      let qw2 = na_window_2(y2, params.L2, params.d2, params.s2);
      m = vec4<i32>((qw0.x - g0) / params.d0, (qw1.x - g1) / params.d1, (qw2.x - g2) / params.d2, (y0 * params.L1 + y1) * params.L2 + y2);
      cn = vec4<i32>(qw0.y, qw1.y, qw2.y, 0);`
    : `      let y0 = j0 * params.d0 + g0;
      let y1 = j1 * params.d1 + g1;
      let y2 = j2 * params.d2 + g2;
      m = vec4<i32>(j0, j1, j2, (y0 * params.L1 + y1) * params.L2 + y2);`;

  let prologue = '';
  let body = '';
  let epilogue = '';
  const staged = (r: string, c: string): string => `sh_row[${r} * DV + ${c}]`;
  const dotExpr = (a: string, b: string): string => (V === 4 ? `dot(${a}, ${b})` : `${a} * ${b}`);
  if (spec.kind === 'pn') {
    const rpbLine =
      spec.rpb === true
        ? `        acc = acc + f32(rpb[((h * R0 + (m.x - i0 + K0 - 1)) * R1 + (m.y - i1 + K1 - 1)) * R2 + (m.z - i2 + K2 - 1)]);\n`
        : '';
    prologue = `  var av: array<${F}, DV>;
  if (live) {
    for (var c = 0; c < DV; c++) { av[c] = ${F}(row_a[(bh * N + tok) * DV + c]); }
  }${
    anyCausal
      ? `
  if (live) {
    // Invalid (causal) slots: ${fillNegInf ? '-inf, exactly as NATTEN' : '0 (gradient mask)'}.
    for (var t = 0; t < P; t++) {
      let t0 = t / (K1 * K2);
      let t1 = (t / K2) % K1;
      let t2 = t % K2;
      if (t0 >= cn0 || t1 >= cn1 || t2 >= cn2) { attn_out[(bh * N + tok) * P + t] = ${fillExpr}; }
    }
  }`
      : ''
  }`;
    body = `        var acc = 0.0;
        for (var c = 0; c < DV; c++) { acc = acc + ${dotExpr('av[c]', staged('r', 'c'))}; }
${rpbLine}        attn_out[(bh * N + tok) * P + (t0 * K1 + t1) * K2 + t2] = ${T}(acc);`;
  } else if (spec.kind === 'nn') {
    prologue = `  var acc: array<${F}, DV>;
  for (var c = 0; c < DV; c++) { acc[c] = ${zeroF}; }`;
    body = `        let p = f32(attn[(bh * N + tok) * P + (t0 * K1 + t1) * K2 + t2]);
        for (var c = 0; c < DV; c++) { acc[c] = acc[c] + p * ${staged('r', 'c')}; }`;
    epilogue = `  if (live) {
    for (var c = 0; c < DV; c++) { row_out[(bh * N + tok) * DV + c] = ${S}(acc[c]); }
  }`;
  } else {
    prologue = `  var acc: array<${F}, DV>;
  for (var c = 0; c < DV; c++) { acc[c] = ${zeroF}; }`;
    body = `        let p = f32(attn[(bh * N + m.w) * P + (t0 * K1 + t1) * K2 + t2]);
        for (var c = 0; c < DV; c++) { acc[c] = acc[c] + p * ${staged('r', 'c')}; }`;
    epilogue = `  if (live) {
    for (var c = 0; c < DV; c++) { row_out[(bh * N + tok) * DV + c] = ${S}(acc[c]); }
  }`;
  }

  const memberTest = isIn
    ? `      let m = sh_meta[r];
      let q = sh_cnt[r];
      let t0 = i0 - m.x;
      let t1 = i1 - m.y;
      let t2 = i2 - m.z;
      if (t0 >= 0 && t0 < q.x && t1 >= 0 && t1 < q.y && t2 >= 0 && t2 < q.z) {`
    : `      let m = sh_meta[r];
      let t0 = m.x - st0;
      let t1 = m.y - st1;
      let t2 = m.z - st2;
      if (t0 >= 0 && t0 < cn0 && t1 >= 0 && t1 < cn1 && t2 >= 0 && t2 < cn2) {`;

  const rowSource = spec.kind === 'in' ? 'row_a' : 'row_b';
  const header = [
    `// ${key}`,
    `// NATTEN BMM ${spec.kind.toUpperCase()} kernel, rank ${spec.rank} (padded to 3 axes), ${spec.dtype} storage, f32 math.`,
  ].join('\n');
  const code = `${enableDirectives(spec.dtype)}${header}
${bmmWindowConsts(spec.rank, K)}
const CAUSAL_0: bool = ${C[0]};
const CAUSAL_1: bool = ${C[1]};
const CAUSAL_2: bool = ${C[2]};
const HEAD_DIM: i32 = ${D};
const VEC: i32 = ${V};
const DV: i32 = ${DV};
${bmmTileConsts(TL)}
const BK: i32 = ${BK};

${decls}
${uniformDecl(uniforms, bindings.length)}
var<workgroup> sh_row: array<${F}, ${BK * DV}>;
var<workgroup> sh_meta: array<vec4<i32>, ${BK}>;
${isIn ? `var<workgroup> sh_cnt: array<vec4<i32>, ${BK}>;\n` : ''}
${windowFunctions(K, C)}
@compute @workgroup_size(${wg})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lidx: u32) {
${bmmGridDecode(true)}
${BMM_TILE_TOKEN}
${ownWindow}
${bmmBoxLines(isIn)}
  let box = w0 * w1 * w2;
${prologue}
  for (var base = 0; base < box; base += BK) {
    if (lid < BK) {
      let u = base + lid;
      var m = vec4<i32>(0, 0, 0, -1);
${isIn ? '      var cn = vec4<i32>(0, 0, 0, 0);\n' : ''}      if (u < box) {
        let j0 = lo0 + u / (w1 * w2);
        let j1 = lo1 + (u / w2) % w1;
        let j2 = lo2 + u % w2;
${metaFill.replace(/^ {6}/gm, '        ')}
      }
      sh_meta[lid] = m;
${isIn ? '      sh_cnt[lid] = cn;\n' : ''}    }
    workgroupBarrier();
    for (var e = lid; e < BK * DV; e += WG) {
      let tk = sh_meta[e / DV].w;
      var v = ${zeroF};
      if (tk >= 0) { v = ${F}(${rowSource}[(bh * N + tk) * DV + e % DV]); }
      sh_row[e] = v;
    }
    workgroupBarrier();
    if (live) {
      let rows = min(BK, box - base);
      for (var r = 0; r < rows; r++) {
${indent(memberTest, 2)}
${indent(body, 2)}
        }
      }
    }
    workgroupBarrier();
  }
${epilogue}
}
`;
  return {
    key,
    code,
    entryPoint: 'main',
    workgroupSize: [wg, 1, 1],
    bindings,
    uniforms,
    workgroupBytes,
    features: dtypeFeatures(spec.dtype),
  };
}
