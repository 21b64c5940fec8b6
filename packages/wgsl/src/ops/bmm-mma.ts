/**
 * The BMM-style neighborhood kernels (`snippets/bmm.ts`: pn, nn, in) on tensor cores: float16 tensors, f32
 * accumulation, WebGPU subgroup matrices 16x16x16. Same bindings (by name and order), uniforms and grid as the plain
 * kernels with the default tile (64 tokens: 64 / 8x8 / 4x4x4), so a caller swaps one kernel for the other. float32
 * tensors run through the split (as the fused kernels'): a `scales` binding after the plain kernels' (max |x| of
 * the op's tensors, `BMM_SPLIT_TENSORS`), each operand scaled by a power of two and staged as f16 hi and lo halves,
 * three products per product (hi hi, hi lo, lo hi), the results unscaled; head dims up to 64.
 *
 * A workgroup of 4 subgroups owns the tile's 64 tokens, 16 rows per subgroup (rows in the tile's row-major order). It
 * walks the tile's box (keys for pn / nn, the inverse neighborhood's queries for in) in chunks of 16 box rows, staged
 * in workgroup memory with 16-byte loads (the next chunk's loads in flight during this chunk's work), each chunk
 * column's box coordinates and token beside them.
 *
 * - pn (`attn[x, t] = <a_x, b_{n_t(x)}> (+ rpb)`): the tile's rows of `a` are held as left fragments for the whole
 *   walk; per chunk S = A B^T (16 x 16 per subgroup) goes to an f32 scratch, and each (row, column) that is a member
 *   of the row's window is written to its slot. Invalid (causal) slots are filled first.
 * - nn (`out[x] = sum_t attn[x, t] b_{n_t(x)}`): per chunk, the 16 x 16 block of attention weights of this subgroup's
 *   rows and the chunk's keys is gathered from `attn` (zero for non-members) into an f16 tile, then O += P B.
 * - in (`out[j] = sum_{x: j in N(x)} attn[x, t(x, j)] a_x`): rows are keys, chunk columns are queries; the block
 *   P^T (key rows, query columns) is gathered the same way, then O += P^T A.
 *
 * In the gather and scatter passes lane l of a subgroup takes chunk column l % 16 of rows 2i + l / 16 (i = 0..7), so a
 * row's 16 columns are 16 neighbouring lanes (contiguous slots of the attention row in 1-D). Every workgroup variable
 * is a multiple of 16 bytes (as the other mma kernels). ASSUMPTION (as the other mma kernels): subgroups are the
 * aligned runs of 32 consecutive local invocation indices; callers route here only where the subgroup size is fixed at
 * 32 and the adapter has f16 -> f32 16x16x16 subgroup matrices.
 */
import { NattenArgumentError } from '@natten-web/core';
import { type GeneratedKernel, kernelKey, uniformDecl } from '../kernel.ts';
import { BMM_FILL_UNIFORM, BMM_TILE_TOKEN, BMM_UNIFORMS, bmmBindings, type BmmKernelSpec, bmmBoxLines, bmmGridDecode, bmmTileConsts, bmmWindowConsts, padAxes } from '../snippets/bmm.ts';
import { windowFunctions } from '../snippets/window.ts';
import { PUT8_FN } from './dense-mma.ts';
import { MMA_FRAGMENT as F, MMA_HEADER, mmaMulAdd, mmaScratchEpilogue, PACK8_FN, SPLIT_SCALE_FN, storeSplit4 } from './na-fused-forward-mma.ts';

const GEN = 1;
/** Largest head dim the tensor-core BMM kernels compile (the pn kernel holds D / 16 left fragments, nn / in D / 16 results). */
export const BMM_MMA_MAX_DIM = 128;
/** Tokens per tile: 4 subgroups of 16 rows. */
export const BMM_MMA_TILE_TOKENS = 64;
const NSG = 4;
const WGS = 32 * NSG;
/** Box rows per staged chunk (one fragment). */
export const BMM_MMA_CHUNK = 16;
const CH = BMM_MMA_CHUNK;

/** WGSL staging four f32s `x` times `scale` at `at` as f16 hi halves (`st_sh`) and lo halves (`st_lo`): the fused kernels' `storeSplit4`. */
const stageSplit4 = (at: string, x: string, scale: string): string => `{ let at4 = ${at}; ${storeSplit4('st_sh', 'at4', x, { lo: 'st_lo' }, scale)} }`;

const range = (n: number): number[] => Array.from({ length: n }, (_, i) => i);
const LEFT = `subgroup_matrix_left<f16, ${F}, ${F}>`;
const RIGHT = `subgroup_matrix_right<f16, ${F}, ${F}>`;
const RESULT = `subgroup_matrix_result<f32, ${F}, ${F}>`;

/** Largest head dim of the float32 kernels (the split's hi and lo staging and P tiles must fit 16 KiB). */
export const BMM_MMA_MAX_SPLIT_DIM = 64;

/** Why a spec cannot run on the tensor-core BMM kernels, or undefined. */
export function bmmMmaSpecProblem(spec: Pick<BmmKernelSpec, 'dim' | 'dtype' | 'tile'>): string | undefined {
  if (spec.dtype !== 'float16' && spec.dtype !== 'float32') return `the tensor-core BMM kernels need float16 or float32 tensors, not ${String(spec.dtype)}`;
  const max = spec.dtype === 'float32' ? BMM_MMA_MAX_SPLIT_DIM : BMM_MMA_MAX_DIM;
  if (!Number.isInteger(spec.dim) || spec.dim < F || spec.dim > max || spec.dim % F !== 0) {
    return `head_dim=${spec.dim} must be a multiple of ${F} in [${F}, ${max}]${spec.dtype === 'float32' ? ' for float32 (hi / lo split)' : ''}`;
  }
  const tokens = spec.tile.reduce((a, b) => a * b, 1);
  if (tokens !== BMM_MMA_TILE_TOKENS) return `the tile ${spec.tile.join('x')} must hold ${BMM_MMA_TILE_TOKENS} tokens (4 subgroups of 16 rows), not ${tokens}`;
  return undefined;
}

/**
 * WGSL of the chunk walk's prefetch: registers `nv_i` (this invocation's 16-byte units of the next chunk's `CH` box
 * rows of `src`, zero past the box) and `nm_i` (the row's metadata, from the invocation that loads its first unit:
 * pn / nn the key's group coordinates and token; in the query's window start in group coordinates and token, and
 * `nc_i` its window's valid counts); float32 (`split`): `nv_i` holds four floats, staged times `sc_y` as hi and lo
 * halves (`stageSplit4`). `fetch(at)` issues the loads of the chunk at box row `at` (an i32 expression);
 * `stage` writes the registers to the staging area (stride `LDB`) and the metadata arrays (from element `metaAt`, a
 * WGSL prefix such as `mo + ` for a double-buffered metadata array, or empty).
 */
function chunkPrefetch(src: string, inverse: boolean, dim: number, metaAt: string, split: boolean): { decl: string; fetch: (at: string) => string; stage: string } {
  const units = CH * (dim / (split ? 4 : 8));
  const zero = split ? 'vec4<f32>(0.0)' : 'vec4<u32>(0u)';
  const n = Math.ceil(units / WGS);
  const whole = units % WGS === 0;
  const meta = inverse
    ? `        let qw0 = na_window_0(y0, params.L0, params.d0, params.s0);
        let qw1 = na_window_1(y1, params.L1, params.d1, params.s1);
        let qw2 = na_window_2(y2, params.L2, params.d2, params.s2);
        nm_I = vec4<i32>((qw0.x - g0) / params.d0, (qw1.x - g1) / params.d1, (qw2.x - g2) / params.d2, tk);
        nc_I = vec4<i32>(qw0.y, qw1.y, qw2.y, 0);`
    : '        nm_I = vec4<i32>(j0, j1, j2, tk);';
  const guard = (body: string): string => (whole ? body : `if (e < ${units}u) { ${body} }`);
  return {
    decl: range(n)
      .map((i) => `  var nv_${i} = ${zero};\n  var nm_${i} = vec4<i32>(0, 0, 0, -1);${inverse ? `\n  var nc_${i} = vec4<i32>(0);` : ''}`)
      .join('\n'),
    fetch: (at) =>
      range(n)
        .map(
          (i) => `    {
      let e = lidx + ${i * WGS}u;
      let u = ${at} + i32(e / DU);
      nv_${i} = ${zero};
      nm_${i} = vec4<i32>(0, 0, 0, -1);
      if (${whole ? '' : `e < ${units}u && `}u < box) {
        let j0 = lo0 + u / (w1 * w2);
        let j1 = lo1 + (u / w2) % w1;
        let j2 = lo2 + u % w2;
        let y0 = j0 * params.d0 + g0;
        let y1 = j1 * params.d1 + g1;
        let y2 = j2 * params.d2 + g2;
        let tk = (y0 * params.L1 + y1) * params.L2 + y2;
${meta.split('_I ').join(`_${i} `)}
        nv_${i} = ${src}[u32(bh * N + tk) * DU + e % DU];
      }
    }`,
        )
        .join('\n'),
    stage: range(n)
      .map(
        (i) => `    {
      let e = lidx + ${i * WGS}u;
      ${guard(`${split ? stageSplit4('(e / DU) * LDB + (e % DU) * 4u', `nv_${i}`, 'sc_y') : `put8((e / DU) * LDB + (e % DU) * 8u, nv_${i})`};
      if (e % DU == 0u) { meta_sh[${metaAt}e / DU] = nm_${i};${inverse ? ` cnt_sh[e / DU] = nc_${i};` : ''} }`)}
    }`,
      )
      .join('\n'),
  };
}

/**
 * The slot of chunk column `ec` in a row's window (`t0..t2`), and whether it is a member (`ok`): pn / nn compare the
 * key's group coordinates (`m`) with the row's window start `rw` and counts `rc`; in compares the row's key
 * coordinates `rw` with the query's window (`m`, counts `q`). Axes the rank pads (size 1) are 0 and not compared.
 */
function memberLines(inverse: boolean, rank: number, rw: string, rc: string): string {
  const axes = range(3).filter((a) => a >= 3 - rank);
  const xyz = ['x', 'y', 'z'];
  const t = range(3).map((a) => {
    if (!axes.includes(a)) return `        let t${a} = 0;`;
    const c = xyz[a] as string;
    return inverse ? `        let t${a} = ${rw}.${c} - m.${c};` : `        let t${a} = m.${c} - ${rw}.${c};`;
  });
  const tests = axes.map((a) => `t${a} >= 0 && t${a} < ${inverse ? 'q' : rc}.${xyz[a]}`).join(' && ');
  return `${t.join('\n')}
        let ok = kc < box && ${rc}.w != 0 && ${tests};`;
}

/** Generate one tensor-core BMM kernel (float16; per-call sizes as uniforms, as the plain kernels). */
export function generateBmmMmaKernel(spec: BmmKernelSpec): GeneratedKernel {
  const why = bmmMmaSpecProblem(spec) ?? (spec.chunk !== CH ? `chunk must be ${CH} box rows (one fragment), got ${spec.chunk}` : undefined);
  if (why !== undefined) throw new NattenArgumentError(`generateBmmMmaKernel: ${why}`);
  const key = kernelKey(`na-bmm-mma-${spec.kind}`, GEN, spec);
  const K = padAxes(spec.kernelSize, 1);
  const C = padAxes(spec.causal, false);
  const TL = padAxes(spec.tile, 1);
  const D = spec.dim;
  const D16 = D / F;
  const anyCausal = C.some((c) => c);
  const inverse = spec.kind === 'in';
  const pn = spec.kind === 'pn';
  const rpb = pn && spec.rpb === true;
  const fillNegInf = pn && anyCausal && spec.fill !== 'zero';
  // float32: the split. Each operand is scaled by a power of two from its max |x| (the op's abs-max dispatch fills
  // `scales`), staged as f16 hi (mantissa cut to f16's 10 bits) and lo (the rest) halves, and multiplied as
  // hi x hi + hi x lo + lo x hi in f32; results are unscaled before they are stored.
  const SPLIT = spec.dtype === 'float32';
  const T = SPLIT ? 'f32' : 'f16';
  if (SPLIT && spec.scales === undefined) throw new NattenArgumentError('generateBmmMmaKernel: a float32 spec needs its scales entries');
  const [S0, S1] = spec.scales ?? [0, 1];
  const bindings = [...bmmBindings(spec), ...(SPLIT ? [{ name: 'scales', access: 'read' as const }] : [])];
  const uniforms = fillNegInf ? [...BMM_UNIFORMS, BMM_FILL_UNIFORM] : [...BMM_UNIFORMS];
  const elem = (name: string): string =>
    name === 'attn' || name === 'attn_out' || name === 'rpb' ? T : name === 'scales' ? 'f32' : SPLIT ? 'vec4<f32>' : 'vec4<u32>';
  const decls = bindings.map((b, i) => `@group(0) @binding(${i}) var<storage, ${b.access}> ${b.name}: array<${elem(b.name)}>;`).join('\n');
  // Staged rows: D halves + 8 (16 bytes) against bank conflicts of the column-major right loads; f32 S / epilogue
  // scratch rows and f16 P rows of one chunk.
  const LDB = D + 8;
  const LDS = F;
  const LDP = F;
  // One staging area. pn reads it only in its multiplies, which finish before the S barrier, so with its chunk
  // metadata double-buffered (chunk parity) the next chunk's staging needs no third barrier. nn / in read the area in
  // their multiplies after the P barrier, so a third barrier keeps the next chunk's staging behind them (two staging
  // areas instead, without it, cost a workgroup per SM and were 1.3-1.7x slower on the H200, session 28).
  const metaBufs = pn ? 2 : 1;
  const halves = SPLIT ? 2 : 1;
  const workgroupBytes = halves * 2 * CH * LDB + 16 * CH * metaBufs * (inverse ? 2 : 1) + 16 * 64 * (rpb ? 3 : 2) + 4 * 64 * LDS + (pn ? 0 : halves * 2 * 64 * LDP);
  if (workgroupBytes > 16384) throw new NattenArgumentError(`generateBmmMmaKernel: ${workgroupBytes} bytes of workgroup memory, over 16384 (head_dim=${D}, ${spec.dtype})`);

  // The row table: pn / nn the row's window start (group coordinates) and token, its valid counts and liveness;
  // in the row's (key's) group coordinates and token, and its liveness. rpb adds the row's group coordinates.
  const rowTable = inverse
    ? `    row_sh[lid] = vec4<i32>(i0, i1, i2, tok);
    rowc_sh[lid] = vec4<i32>(0, 0, 0, select(0, 1, row_live));`
    : `    let ow0 = na_window_0(x0, params.L0, params.d0, params.s0);
    let ow1 = na_window_1(x1, params.L1, params.d1, params.s1);
    let ow2 = na_window_2(x2, params.L2, params.d2, params.s2);
    row_sh[lid] = vec4<i32>((ow0.x - g0) / params.d0, (ow1.x - g1) / params.d1, (ow2.x - g2) / params.d2, tok);
    rowc_sh[lid] = vec4<i32>(ow0.y, ow1.y, ow2.y, select(0, 1, row_live));${rpb ? '\n    rowi_sh[lid] = vec4<i32>(i0, i1, i2, 0);' : ''}`;

  // The row table entries of this lane's eight rows of the gather / scatter passes (rows 2i + eh of its subgroup):
  // loaded once and held for the whole walk (1.2-1.6x faster nn / in kernels on the H200, session 28), except in the
  // rank-3 pn kernel, where held rows (all three axes, beside its left fragments) made it 1.2x slower; there each
  // chunk's pass loops over the rows and reads them again.
  const rowsHeld = !(pn && spec.rank === 3);
  const rowLoads = range(8)
    .map((i) => `  let rw_${i} = row_sh[rbase + ${2 * i}u + eh];\n  let rc_${i} = rowc_sh[rbase + ${2 * i}u + eh];${rpb ? `\n  let ri_${i} = rowi_sh[rbase + ${2 * i}u + eh];` : ''}`)
    .join('\n');
  /** The pass over this lane's eight rows: `body(rw, rc, ri, row)` names the row's table entries and index. */
  const rowPass = (body: (rw: string, rc: string, ri: string, row: string) => string): string =>
    rowsHeld
      ? range(8)
          .map((i) => `      {\n${body(`rw_${i}`, `rc_${i}`, `ri_${i}`, `rbase + ${2 * i}u + eh`)}\n      }`)
          .join('\n')
      : `      for (var i = 0u; i < 8u; i++) {
        let r = rbase + 2u * i + eh;
        let rw = row_sh[r];
        let rc = rowc_sh[r];
${rpb ? '        let ri = rowi_sh[r];\n' : ''}${body('rw', 'rc', 'ri', 'r')}
      }`;

  const fillExpr = SPLIT ? (fillNegInf ? 'bitcast<f32>(params.fill_bits)' : '0.0') : fillNegInf ? 'bitcast<vec2<f16>>(params.fill_bits).x' : 'f16(0.0)';
  // Invalid (causal) slots of this subgroup's rows: the fill (-inf as NATTEN, or 0 for a gradient).
  const causalFill = pn && anyCausal
    ? `  for (var rr = 0u; rr < ${F}u; rr++) {
    let rw = row_sh[rbase + rr];
    let rc = rowc_sh[rbase + rr];
    if (rc.w != 0) {
      for (var t = i32(lane); t < P; t += 32) {
        let t0 = t / (K1 * K2);
        let t1 = (t / K2) % K1;
        let t2 = t % K2;
        if (t0 >= rc.x || t1 >= rc.y || t2 >= rc.z) { attn_out[(bh * N + rw.w) * P + t] = ${fillExpr}; }
      }
    }
  }
`
    : '';

  let prologue = '';
  let chunkWork = '';
  let epilogue = '';
  if (pn) {
    // The tile's rows of a, through the staging area in four passes of 16 rows, into each subgroup's left fragments.
    const passes = range(NSG)
      .map(
        (p) => `  for (var e = lidx; e < ${F}u * DU; e += ${WGS}u) {
    let r = e / DU;
    let c = e % DU;
    ${SPLIT ? stageSplit4('r * LDB + c * 4u', `select(vec4<f32>(0.0), row_a[u32(bh * N + row_sh[${p * F}u + r].w) * DU + c], rowc_sh[${p * F}u + r].w != 0)`, 'sc_x') : `put8(r * LDB + c * 8u, select(vec4<u32>(0u), row_a[u32(bh * N + row_sh[${p * F}u + r].w) * DU + c], rowc_sh[${p * F}u + r].w != 0));`}
  }
  workgroupBarrier();
  if (sg == ${p}u) {
${range(D16)
  .map((kk) => `    a_${kk} = subgroupMatrixLoad<${LEFT}, row_major>(&st_sh, ${kk * F}u, LDB);${SPLIT ? `\n    al_${kk} = subgroupMatrixLoad<${LEFT}, row_major>(&st_lo, ${kk * F}u, LDB);` : ''}`)
  .join('\n')}
  }
  workgroupBarrier();`,
      )
      .join('\n');
    prologue = `${range(D16)
      .map((kk) => `  var a_${kk} = ${LEFT}();${SPLIT ? `\n  var al_${kk} = ${LEFT}();` : ''}`)
      .join('\n')}
${passes}
${causalFill}`;
    chunkWork = `    var s = ${RESULT}();
${range(D16)
  .map((kk) =>
    SPLIT
      ? `    {
      let bh_${kk} = subgroupMatrixLoad<${RIGHT}, col_major>(&st_sh, ${kk * F}u, LDB);
      s = ${mmaMulAdd(`a_${kk}`, `al_${kk}`, (lo) => (lo ? `subgroupMatrixLoad<${RIGHT}, col_major>(&st_lo, ${kk * F}u, LDB)` : `bh_${kk}`), 's')};
    }`
      : `    s = subgroupMatrixMultiplyAccumulate(a_${kk}, subgroupMatrixLoad<${RIGHT}, col_major>(&st_sh, ${kk * F}u, LDB), s);`,
  )
  .join('\n')}
    subgroupMatrixStore<row_major>(&s_sh, rbase * LDS, s, LDS);
    workgroupBarrier();
    {
      let kc = base + i32(ec);
      let m = meta_sh[mo + ec];
${rowPass(
  (rw, rc, ri, row) => `${memberLines(false, spec.rank, rw, rc)}
        if (ok) {
          var v = s_sh[(${row}) * LDS + ec]${SPLIT ? ' * unscale' : ''};
${rpb ? `          v = v + f32(rpb[((h * R0 + (m.x - ${ri}.x + K0 - 1)) * R1 + (m.y - ${ri}.y + K1 - 1)) * R2 + (m.z - ${ri}.z + K2 - 1)]);\n` : ''}          attn_out[(bh * N + ${rw}.w) * P + (t0 * K1 + t1) * K2 + t2] = ${SPLIT ? 'v' : 'f16(v)'};
        }`,
)}
    }`;
  } else {
    prologue = range(D16)
      .map((n) => `  var o_${n} = ${RESULT}();`)
      .join('\n');
    // The attention weight of (row, column): nn reads the row's (query's) slot of the key; in the column's (query's)
    // slot of the row's key.
    const weight = (rw: string): string => (inverse ? 'attn[(bh * N + m.w) * P + (t0 * K1 + t1) * K2 + t2]' : `attn[(bh * N + ${rw}.w) * P + (t0 * K1 + t1) * K2 + t2]`);
    chunkWork = `    {
      let kc = base + i32(ec);
      let m = meta_sh[ec];
${inverse ? '      let q = cnt_sh[ec];\n' : ''}${rowPass(
  (rw, rc, _ri, row) => `${memberLines(inverse, spec.rank, rw, rc)}
        var p = ${T}(0.0);
        if (ok) { p = ${weight(rw)}; }
${
  SPLIT
    ? `        let ps = p * sc_x;
        let ph = bitcast<f32>(bitcast<u32>(ps) & 0xffffe000u);
        p_sh[(${row}) * LDP + ec] = f16(ph);
        p_lo[(${row}) * LDP + ec] = f16(ps - ph);`
    : `        p_sh[(${row}) * LDP + ec] = p;`
}`,
)}
    }
    workgroupBarrier();
    let pm = subgroupMatrixLoad<${LEFT}, row_major>(&p_sh, rbase * LDP, LDP);
${SPLIT ? `    let pl = subgroupMatrixLoad<${LEFT}, row_major>(&p_lo, rbase * LDP, LDP);\n` : ''}${range(D16)
  .map((n) =>
    SPLIT
      ? `    {
      let bh_${n} = subgroupMatrixLoad<${RIGHT}, row_major>(&st_sh, ${n * F}u, LDB);
      o_${n} = ${mmaMulAdd('pm', 'pl', (lo) => (lo ? `subgroupMatrixLoad<${RIGHT}, row_major>(&st_lo, ${n * F}u, LDB)` : `bh_${n}`), `o_${n}`)};
    }`
      : `    o_${n} = subgroupMatrixMultiplyAccumulate(pm, subgroupMatrixLoad<${RIGHT}, row_major>(&st_sh, ${n * F}u, LDB), o_${n});`,
  )
  .join('\n')}
    workgroupBarrier();`;
    // Two lanes per row, eight columns each, one 16-byte store per fragment.
    epilogue = mmaScratchEpilogue({
      outs: [
        {
          acc: 'o',
          frags: D16,
          write: (j, lo, hi) =>
            SPLIT
              ? `row_out[u32(bh * N + erw.w) * DU + ${j * 4}u + 2u * hf] = ${lo} * unscale; row_out[u32(bh * N + erw.w) * DU + ${j * 4}u + 2u * hf + 1u] = ${hi} * unscale;`
              : `row_out[u32(bh * N + erw.w) * DU + ${j * 2}u + hf] = pack8(${lo}, ${hi});`,
        },
      ],
      scratches: ['s_sh'],
      perScratch: LDS / F,
      srow: 'erow',
      guard: 'rowc_sh[erow].w != 0',
    });
  }

  const walk = chunkPrefetch(inverse ? 'row_a' : 'row_b', inverse, D, pn ? 'mo + ' : '', SPLIT);
  const header = `// ${key}
// NATTEN BMM ${spec.kind.toUpperCase()} kernel on tensor cores, rank ${spec.rank} (padded to 3 axes), ${SPLIT ? 'float32 storage (f16 hi / lo split)' : 'float16 storage'}, f32 accumulation.`;
  const code = `${MMA_HEADER}
${header}
${bmmWindowConsts(spec.rank, K)}
const DU: u32 = ${D / (SPLIT ? 4 : 8)}u;
const LDB: u32 = ${LDB}u;
const LDS: u32 = ${LDS}u;
const LDP: u32 = ${LDP}u;
${bmmTileConsts(TL)}

${decls}
${uniformDecl(uniforms, bindings.length)}
var<workgroup> st_sh: array<f16, ${CH * LDB}>;
${SPLIT ? `var<workgroup> st_lo: array<f16, ${CH * LDB}>;\n` : ''}var<workgroup> meta_sh: array<vec4<i32>, ${metaBufs * CH}>;
${inverse ? `var<workgroup> cnt_sh: array<vec4<i32>, ${CH}>;\n` : ''}var<workgroup> row_sh: array<vec4<i32>, 64>;
var<workgroup> rowc_sh: array<vec4<i32>, 64>;
${rpb ? 'var<workgroup> rowi_sh: array<vec4<i32>, 64>;\n' : ''}var<workgroup> s_sh: array<f32, ${64 * LDS}>;
${pn ? '' : `var<workgroup> p_sh: array<f16, ${64 * LDP}>;\n${SPLIT ? `var<workgroup> p_lo: array<f16, ${64 * LDP}>;\n` : ''}`}
${windowFunctions(K, C)}
${SPLIT ? SPLIT_SCALE_FN : `${PUT8_FN}\n${pn ? '' : PACK8_FN}`}
@compute @workgroup_size(${WGS})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lidx: u32) {
${bmmGridDecode(true)}
${BMM_TILE_TOKEN}
  let row_live = live && lid < WG;
  let lane = lidx % 32u;
  let sg = lidx / 32u;
  let rbase = sg * ${F}u;
  // Gather / scatter passes: chunk column ec of rows 2i + eh. Epilogue: two lanes per row (hf: which eight columns).
  let ec = lane % 16u;
  let eh = lane / 16u;
  let hf = lane % 2u;
  let erow = rbase + lane / 2u;
  if (lid < WG) {
${rowTable}
  }
${bmmBoxLines(inverse)}
  let box = w0 * w1 * w2;
${SPLIT ? `  // The split's scales: the first operand's (sc_x), the walked operand's (sc_y), and the results' unscale.
  let sc_x = split_scale(scales[${S0}]);
  let sc_y = split_scale(scales[${S1}]);
  let unscale = 1.0 / (sc_x * sc_y);
` : ''}  workgroupBarrier();
${rowsHeld ? `  // This lane's eight rows of the gather / scatter passes, held for the whole walk.\n${rowLoads}` : ''}
${prologue}
${walk.decl}
${walk.fetch('0')}
  for (var base = 0; base < box; base += ${CH}) {
${pn ? `    // This chunk's metadata (parity).
    let mo = (u32(base / ${CH}) % 2u) * ${CH}u;
` : ''}${walk.stage}
    workgroupBarrier();
    // The next chunk's loads, in flight during this chunk's work.
    if (base + ${CH} < box) {
${walk.fetch(`base + ${CH}`)}
    }
${chunkWork}
  }
${pn ? '' : '  let erw = row_sh[erow];'}
${epilogue}
}
`;
  return {
    key,
    code,
    entryPoint: 'main',
    workgroupSize: [WGS, 1, 1],
    bindings,
    uniforms,
    workgroupBytes,
    features: ['shader-f16', 'subgroups', 'chromium-experimental-subgroup-matrix'],
  };
}
