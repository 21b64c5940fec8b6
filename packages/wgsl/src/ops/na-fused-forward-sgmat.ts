/**
 * Fused neighborhood-attention forward on tensor cores, through WebGPU subgroup matrices
 * (`chromium-experimental-subgroup-matrix`, f16 x f16 -> f32, 16x16x16 fragments). kernels.md §3.
 *
 * Decomposition is the plain path's (one workgroup = batch, head, dilation group, multi-D query tile; the tile's
 * union key box walked row-major in chunks), but both GEMMs run on subgroup matrices:
 * - The query tile has BQ = 16 * NRB rows; subgroup `sg_id` owns row block `sg_id` (16 queries) and keeps its
 *   Q fragments (pre-scaled by scale * log2 e, f16) in registers for the whole key walk.
 * - Per chunk of BK keys: K and V rows and key coordinates are staged in workgroup memory (f16); each subgroup
 *   computes its 16 x BK logits S = Q K^T into workgroup memory (f32); the same subgroup's lanes then mask
 *   every logit with their query's exact window (per-axis coordinate test), update the running max and sum
 *   (base 2, lazy rescale), write P (f16) and rescale their O rows; then O += P V on subgroup matrices, O
 *   living in workgroup memory (f32).
 * - Each row is owned by T = SG / 16 adjacent lanes of its subgroup (interleaved columns); row statistics
 *   are combined with subgroupShuffleXor.
 * The subgroup size is read from the adapter and baked (the path needs subgroupMinSize == subgroupMaxSize).
 * f16 inputs only, D and Dv multiples of 16.
 */
import { formatShape, NattenArgumentError, type NaRank, product } from '@natten-web/core';
import { type GeneratedKernel, kernelKey, type StorageBinding, uniformDecl } from '../kernel.ts';
import { windowFunctions } from '../snippets/window.ts';
import { fusedForwardUniformFields } from './na-fused-forward.ts';

const FAMILY = 'na-fused-forward-sgmat';
/** Bump when the emitted text changes for an unchanged spec. */
const GEN = 1;

/** Fragment size (M = N = K) this path uses. */
export const SGMAT_FRAGMENT = 16;

export interface FusedForwardSgmatSpec {
  readonly rank: NaRank;
  readonly kernelSize: readonly number[];
  readonly causal: readonly boolean[];
  readonly dim: number;
  readonly dimV: number;
  /** Query tile per axis over dilation-group coordinates; product 16, 32, 48 or 64 (a multiple of 16). */
  readonly queryTile: readonly number[];
  /** Keys staged per chunk: 32 or 64. */
  readonly keyChunk: number;
  /** The adapter's (fixed) subgroup size: 16, 32 or 64. */
  readonly subgroupSize: number;
  /** Use the `subgroup_id` builtin (else local_invocation_index / subgroupSize). */
  readonly subgroupIdBuiltin: boolean;
  readonly hasRpb: boolean;
  readonly hasLse: boolean;
}

const F = SGMAT_FRAGMENT;

interface Layout {
  bq: number;
  nrb: number;
  wg: number;
  tpr: number;
  ldq: number;
  ldk: number;
  ldv: number;
  lds: number;
  ldp: number;
  ldo: number;
  hLen: number;
  vOff: number;
}

function layout(spec: FusedForwardSgmatSpec): Layout {
  const bq = product(spec.queryTile);
  const nrb = bq / F;
  const ldq = spec.dim + 8;
  const ldk = spec.dim + 8;
  const ldv = spec.dimV + 8;
  const bk = spec.keyChunk;
  return {
    bq,
    nrb,
    wg: nrb * spec.subgroupSize,
    tpr: spec.subgroupSize / F,
    ldq,
    ldk,
    ldv,
    lds: bk + 4,
    ldp: bk + 8,
    ldo: spec.dimV + 4,
    hLen: Math.max(bk * (ldk + ldv), bq * ldq),
    vOff: bk * ldk,
  };
}

/** Workgroup memory the kernel declares, in bytes. */
export function fusedForwardSgmatWorkgroupBytes(spec: FusedForwardSgmatSpec): number {
  const l = layout(spec);
  return 2 * l.hLen + 4 * l.bq * l.lds + 2 * l.bq * l.ldp + 4 * l.bq * l.ldo + 4 * spec.keyChunk * spec.rank;
}

/** Why a spec cannot be generated, or undefined. */
export function fusedForwardSgmatSpecProblem(spec: FusedForwardSgmatSpec): string | undefined {
  const bq = product(spec.queryTile);
  if (spec.queryTile.length !== spec.rank || spec.kernelSize.length !== spec.rank || spec.causal.length !== spec.rank) {
    return `kernelSize, causal and queryTile need ${spec.rank} entries`;
  }
  if (bq % F !== 0 || bq < F || bq > 64) return `query tile product ${bq} must be 16, 32, 48 or 64`;
  if (spec.keyChunk !== 32 && spec.keyChunk !== 64) return `key chunk ${spec.keyChunk} must be 32 or 64`;
  if (spec.dim % F !== 0 || spec.dimV % F !== 0) return `head dims ${spec.dim}/${spec.dimV} must be multiples of ${F}`;
  if (spec.dim > 256 || spec.dimV > 256) return `head dims ${spec.dim}/${spec.dimV} must be <= 256`;
  if (![16, 32, 64].includes(spec.subgroupSize)) return `subgroup size ${spec.subgroupSize} must be 16, 32 or 64`;
  if (spec.hasRpb && (spec.causal.some((c) => c) || spec.kernelSize.some((k) => k % 2 === 0))) {
    return 'rpb needs a non-causal window and odd kernel sizes';
  }
  return undefined;
}

/** Storage bindings: query, key, value, [rpb], output, [logsumexp] (the plain path's order). */
export function fusedForwardSgmatBindings(spec: Pick<FusedForwardSgmatSpec, 'hasRpb' | 'hasLse'>): StorageBinding[] {
  const b: StorageBinding[] = [
    { name: 'query', access: 'read' },
    { name: 'key', access: 'read' },
    { name: 'value', access: 'read' },
  ];
  if (spec.hasRpb) b.push({ name: 'rpb', access: 'read' });
  b.push({ name: 'output', access: 'read_write' });
  if (spec.hasLse) b.push({ name: 'logsumexp', access: 'read_write' });
  return b;
}

export function generateFusedForwardSgmat(spec: FusedForwardSgmatSpec): GeneratedKernel {
  const why = fusedForwardSgmatSpecProblem(spec);
  if (why !== undefined) throw new NattenArgumentError(`generateFusedForwardSgmat: ${why} (spec ${formatShape(spec.queryTile)})`);
  const key = kernelKey(FAMILY, GEN, spec);
  const r = spec.rank;
  const axes = Array.from({ length: r }, (_, a) => a);
  const L = layout(spec);
  const D = spec.dim;
  const Dv = spec.dimV;
  const BK = spec.keyChunk;
  const SG = spec.subgroupSize;
  const uniforms = fusedForwardUniformFields(r);
  const bindings = fusedForwardSgmatBindings(spec);
  const elem: Record<string, string> = {
    query: 'vec4<f16>',
    key: 'vec4<f16>',
    value: 'vec4<f16>',
    rpb: 'f16',
    output: 'vec4<f16>',
    logsumexp: 'f32',
  };
  const decls = bindings
    .map((b, i) => `@group(0) @binding(${i}) var<storage, ${b.access}> ${b.name}: array<${elem[b.name] ?? 'f16'}>;`)
    .join('\n');
  const tokOf = (x: (a: number) => string): string => {
    let e = `u32(${x(0)})`;
    for (let a = 1; a < r; a++) e = `(${e}) * u32(params.len_${a}) + u32(${x(a)})`;
    return e;
  };
  const rpbExt = spec.kernelSize.map((k) => 2 * k - 1);
  const rpbPer = product(rpbExt);
  let rpbIdx = `u32(kc_0 - qi_0 + ${(spec.kernelSize[0] as number) - 1})`;
  for (let a = 1; a < r; a++) rpbIdx = `(${rpbIdx}) * ${rpbExt[a]}u + u32(kc_${a} - qi_${a} + ${(spec.kernelSize[a] as number) - 1})`;
  const shuffles: string[] = [];
  for (let m = 1; m < L.tpr; m *= 2) shuffles.push(`${m}u`);
  const reduceMax = (v: string): string => shuffles.map((m) => `    ${v} = max(${v}, subgroupShuffleXor(${v}, ${m}));`).join('\n');
  const reduceSum = (v: string): string => shuffles.map((m) => `    ${v} = ${v} + subgroupShuffleXor(${v}, ${m});`).join('\n');
  const inWindow = axes.map((a) => `kc_${a} >= ws_${a} && kc_${a} < we_${a}`).join(' && ');
  const sgIdDecl = spec.subgroupIdBuiltin ? '@builtin(subgroup_id) sg_id: u32, ' : '';
  const sgIdExpr = spec.subgroupIdBuiltin ? '' : `  let sg_id = lid / ${SG}u;\n`;

  const code = `// ${key}
enable f16;
enable subgroups;
enable chromium_experimental_subgroup_matrix;
diagnostic(off, chromium_experimental.subgroup_matrix_uniformity);
diagnostic(off, subgroup_uniformity);
const RANK: u32 = ${r}u;
${axes.map((a) => `const KERNEL_SIZE_${a}: i32 = ${spec.kernelSize[a]};\nconst IS_CAUSAL_${a}: bool = ${spec.causal[a] ? 'true' : 'false'};\nconst QUERY_TILE_${a}: u32 = ${spec.queryTile[a]}u;`).join('\n')}
const HEAD_DIM: u32 = ${D}u;
const HEAD_DIM_V: u32 = ${Dv}u;
const BQ: u32 = ${L.bq}u;
const BK: u32 = ${BK}u;
const SUBGROUP_SIZE: u32 = ${SG}u;
const WORKGROUP_SIZE: u32 = ${L.wg}u;
const LANES_PER_ROW: u32 = ${L.tpr}u;
const LDQ: u32 = ${L.ldq}u;
const LDK: u32 = ${L.ldk}u;
const LDV: u32 = ${L.ldv}u;
const LDS: u32 = ${L.lds}u;
const LDP: u32 = ${L.ldp}u;
const LDO: u32 = ${L.ldo}u;
const V_OFF: u32 = ${L.vOff}u;
const LOG2E: f32 = 1.4426950408889634;
const NEG: f32 = -1.0e30;
const FAR: i32 = -1000000000;

${decls}
${uniformDecl(uniforms, bindings.length)}
${windowFunctions(spec.kernelSize, spec.causal)}
var<workgroup> h_sh: array<f16, ${L.hLen}>;
var<workgroup> s_sh: array<f32, ${L.bq * L.lds}>;
var<workgroup> p_sh: array<f16, ${L.bq * L.ldp}>;
var<workgroup> o_sh: array<f32, ${L.bq * L.ldo}>;
var<workgroup> kc_sh: array<i32, ${BK * r}>;

@compute @workgroup_size(${L.wg})
fn main(@builtin(workgroup_id) wg_id: vec3<u32>, @builtin(num_workgroups) wg_num: vec3<u32>, ${sgIdDecl}@builtin(subgroup_invocation_id) lane: u32, @builtin(local_invocation_index) lid: u32) {
  let wid = wg_id.x + wg_id.y * wg_num.x;
  if (wid >= params.total_wg) { return; }
${sgIdExpr}  var rest = wid;
${axes.slice().reverse().map((a) => `  let tile_${a} = rest % params.ntile_${a};\n  rest = rest / params.ntile_${a};`).join('\n')}
${axes.slice().reverse().map((a) => `  let g_${a} = i32(rest % u32(params.dil_${a}));\n  rest = rest / u32(params.dil_${a});`).join('\n')}
  let h = rest % params.heads;
  let b = rest / params.heads;
  let hk = h / params.gqa;
${axes.map((a) => `  let n_${a} = na_group_len(params.len_${a}, params.dil_${a}, g_${a});\n  let qf_${a} = i32(tile_${a} * QUERY_TILE_${a});`).join('\n')}
  if (${axes.map((a) => `qf_${a} >= n_${a}`).join(' || ')}) { return; }
${axes
  .map(
    (a) => `  let ql_${a} = min(qf_${a} + i32(QUERY_TILE_${a}), n_${a}) - 1;
  let wfirst_${a} = na_window_${a}(qf_${a} * params.dil_${a} + g_${a}, params.len_${a}, params.dil_${a}, params.str_${a});
  let wlast_${a} = na_window_${a}(ql_${a} * params.dil_${a} + g_${a}, params.len_${a}, params.dil_${a}, params.str_${a});
  let bs_${a} = (wfirst_${a}.x - g_${a}) / params.dil_${a};
  let bw_${a} = (wlast_${a}.x - g_${a}) / params.dil_${a} + wlast_${a}.y - bs_${a};`,
  )
  .join('\n')}
  let box_n = u32(${axes.map((a) => `bw_${a}`).join(' * ')});
  let n_chunks = (box_n + BK - 1u) / BK;
  let tok_base = b * params.tokens;

  // ---- Q tile staged once (pre-scaled, f16), rows outside the group are zero
  for (var e = lid; e < BQ * ${D / 4}u; e += WORKGROUP_SIZE) {
    let row = e / ${D / 4}u;
    let c = e % ${D / 4}u;
    var rrest = row;
${axes.slice().reverse().map((a) => `    let sq_${a} = qf_${a} + i32(rrest % QUERY_TILE_${a});\n    rrest = rrest / QUERY_TILE_${a};`).join('\n')}
    var v = vec4<f32>(0.0);
    if (${axes.map((a) => `sq_${a} < n_${a}`).join(' && ')}) {
      let qtok = ${tokOf((a) => `sq_${a} * params.dil_${a} + g_${a}`)};
      v = vec4<f32>(query[(((tok_base + qtok) * params.heads + h) * HEAD_DIM) / 4u + c]) * params.scale_log2;
    }
    let o = row * LDQ + 4u * c;
    h_sh[o] = f16(v.x);
    h_sh[o + 1u] = f16(v.y);
    h_sh[o + 2u] = f16(v.z);
    h_sh[o + 3u] = f16(v.w);
  }
  for (var e = lid; e < BQ * LDO; e += WORKGROUP_SIZE) { o_sh[e] = 0.0; }
  workgroupBarrier();
  var qfrag: array<subgroup_matrix_left<f16, ${F}, ${F}>, ${D / F}>;
  for (var kk = 0u; kk < ${D / F}u; kk++) {
    qfrag[kk] = subgroupMatrixLoad<subgroup_matrix_left<f16, ${F}, ${F}>>(&h_sh, sg_id * ${F}u * LDQ + kk * ${F}u, false, LDQ);
  }
  workgroupBarrier();

  // ---- this lane's row (query) and its exact window in group coordinates
  let row = sg_id * ${F}u + lane / LANES_PER_ROW;
  let hf = lane % LANES_PER_ROW;
  var rrest = row;
${axes.slice().reverse().map((a) => `  let qi_${a} = qf_${a} + i32(rrest % QUERY_TILE_${a});\n  rrest = rrest / QUERY_TILE_${a};`).join('\n')}
  let valid = ${axes.map((a) => `qi_${a} < n_${a}`).join(' && ')};
${axes.map((a) => `  var ws_${a} = 0;\n  var we_${a} = 0;`).join('\n')}
  if (valid) {
${axes
  .map(
    (a) => `    let w_${a} = na_window_${a}(qi_${a} * params.dil_${a} + g_${a}, params.len_${a}, params.dil_${a}, params.str_${a});
    ws_${a} = (w_${a}.x - g_${a}) / params.dil_${a};
    we_${a} = ws_${a} + w_${a}.y;`,
  )
  .join('\n')}
  }
  var m_run: f32 = NEG;
  var l_run: f32 = 0.0;

  for (var ch = 0u; ch < n_chunks; ch++) {
    let c0 = ch * BK;
    // ---- stage K, V rows and key coordinates of this chunk
    for (var e = lid; e < BK * ${D / 4}u; e += WORKGROUP_SIZE) {
      let kr = e / ${D / 4}u;
      let c = e % ${D / 4}u;
      let kbox = c0 + kr;
      var v = vec4<f16>(0.0);
      if (kbox < box_n) {
        var krest = i32(kbox);
${axes.slice().reverse().map((a) => (a === 0 ? `        let kg_0 = bs_0 + krest;` : `        let kg_${a} = bs_${a} + krest % bw_${a};\n        krest = krest / bw_${a};`)).join('\n')}
        let ktok = ${tokOf((a) => `kg_${a} * params.dil_${a} + g_${a}`)};
        v = key[(((tok_base + ktok) * params.heads_kv + hk) * HEAD_DIM) / 4u + c];
      }
      let o = kr * LDK + 4u * c;
      h_sh[o] = v.x;
      h_sh[o + 1u] = v.y;
      h_sh[o + 2u] = v.z;
      h_sh[o + 3u] = v.w;
    }
    for (var e = lid; e < BK * ${Dv / 4}u; e += WORKGROUP_SIZE) {
      let kr = e / ${Dv / 4}u;
      let c = e % ${Dv / 4}u;
      let kbox = c0 + kr;
      var v = vec4<f16>(0.0);
      if (kbox < box_n) {
        var krest = i32(kbox);
${axes.slice().reverse().map((a) => (a === 0 ? `        let kg_0 = bs_0 + krest;` : `        let kg_${a} = bs_${a} + krest % bw_${a};\n        krest = krest / bw_${a};`)).join('\n')}
        let ktok = ${tokOf((a) => `kg_${a} * params.dil_${a} + g_${a}`)};
        v = value[(((tok_base + ktok) * params.heads_kv + hk) * HEAD_DIM_V) / 4u + c];
      }
      let o = V_OFF + kr * LDV + 4u * c;
      h_sh[o] = v.x;
      h_sh[o + 1u] = v.y;
      h_sh[o + 2u] = v.z;
      h_sh[o + 3u] = v.w;
    }
    for (var e = lid; e < BK; e += WORKGROUP_SIZE) {
      let kbox = c0 + e;
      var krest = i32(kbox);
${axes.slice().reverse().map((a) => (a === 0 ? `      var kg_0 = bs_0 + krest;` : `      var kg_${a} = bs_${a} + krest % bw_${a};\n      krest = krest / bw_${a};`)).join('\n')}
      if (kbox >= box_n) { kg_0 = FAR; }
${axes.map((a) => `      kc_sh[e * RANK + ${a}u] = kg_${a};`).join('\n')}
    }
    workgroupBarrier();

    // ---- S = Q K^T for this subgroup's 16 rows (tensor cores)
    for (var cb = 0u; cb < ${BK / F}u; cb++) {
      var acc = subgroup_matrix_result<f32, ${F}, ${F}>();
      for (var kk = 0u; kk < ${D / F}u; kk++) {
        let kt = subgroupMatrixLoad<subgroup_matrix_right<f16, ${F}, ${F}>>(&h_sh, cb * ${F}u * LDK + kk * ${F}u, true, LDK);
        acc = subgroupMatrixMultiplyAccumulate(qfrag[kk], kt, acc);
      }
      subgroupMatrixStore(&s_sh, sg_id * ${F}u * LDS + cb * ${F}u, acc, false, LDS);
    }
    workgroupBarrier();

    // ---- exact-window mask + online softmax (base 2, lazy rescale) on this lane's columns
    var cmax = NEG;
    for (var j = hf; j < BK; j += LANES_PER_ROW) {
${axes.map((a) => `      let kc_${a} = kc_sh[j * RANK + ${a}u];`).join('\n')}
      if (valid && ${inWindow}) {
        var s = s_sh[row * LDS + j];
${spec.hasRpb ? `        s = s + f32(rpb[h * ${rpbPer}u + ${rpbIdx}]) * LOG2E;\n` : ''}        cmax = max(cmax, s);
      }
    }
${reduceMax('cmax')}
    var alpha = 1.0;
    if (cmax > m_run + 8.0) {
      alpha = exp2(m_run - cmax);
      m_run = cmax;
    }
    var psum = 0.0;
    for (var j = hf; j < BK; j += LANES_PER_ROW) {
${axes.map((a) => `      let kc_${a} = kc_sh[j * RANK + ${a}u];`).join('\n')}
      var p = 0.0;
      if (valid && ${inWindow}) {
        var s = s_sh[row * LDS + j];
${spec.hasRpb ? `        s = s + f32(rpb[h * ${rpbPer}u + ${rpbIdx}]) * LOG2E;\n` : ''}        p = exp2(s - m_run);
      }
      p_sh[row * LDP + j] = f16(p);
      psum = psum + p;
    }
${reduceSum('psum')}
    l_run = l_run * alpha + psum;
    if (alpha != 1.0) {
      for (var c = hf; c < HEAD_DIM_V; c += LANES_PER_ROW) { o_sh[row * LDO + c] = o_sh[row * LDO + c] * alpha; }
    }
    workgroupBarrier();

    // ---- O += P V (tensor cores)
    var pfrag: array<subgroup_matrix_left<f16, ${F}, ${F}>, ${BK / F}>;
    for (var kk = 0u; kk < ${BK / F}u; kk++) {
      pfrag[kk] = subgroupMatrixLoad<subgroup_matrix_left<f16, ${F}, ${F}>>(&p_sh, sg_id * ${F}u * LDP + kk * ${F}u, false, LDP);
    }
    for (var cb = 0u; cb < ${Dv / F}u; cb++) {
      var acc = subgroupMatrixLoad<subgroup_matrix_result<f32, ${F}, ${F}>>(&o_sh, sg_id * ${F}u * LDO + cb * ${F}u, false, LDO);
      for (var kk = 0u; kk < ${BK / F}u; kk++) {
        let vf = subgroupMatrixLoad<subgroup_matrix_right<f16, ${F}, ${F}>>(&h_sh, V_OFF + kk * ${F}u * LDV + cb * ${F}u, false, LDV);
        acc = subgroupMatrixMultiplyAccumulate(pfrag[kk], vf, acc);
      }
      subgroupMatrixStore(&o_sh, sg_id * ${F}u * LDO + cb * ${F}u, acc, false, LDO);
    }
    workgroupBarrier();
  }

  // ---- epilogue: O / l (f16), natural-log LSE (f32)
  if (valid) {
    let inv_l = 1.0 / l_run;
    let qtok = ${tokOf((a) => `qi_${a} * params.dil_${a} + g_${a}`)};
    let qrow = (tok_base + qtok) * params.heads + h;
    for (var c = hf; c < ${Dv / 4}u; c += LANES_PER_ROW) {
      let o = row * LDO + 4u * c;
      output[qrow * ${Dv / 4}u + c] = vec4<f16>(vec4<f32>(o_sh[o], o_sh[o + 1u], o_sh[o + 2u], o_sh[o + 3u]) * inv_l);
    }
${spec.hasLse ? `    if (hf == 0u) { logsumexp[qrow] = (m_run + log2(l_run)) * 0.6931471805599453; }` : ''}
  }
}
`;
  return {
    key,
    code,
    entryPoint: 'main',
    workgroupSize: [L.wg, 1, 1],
    bindings,
    uniforms,
    workgroupBytes: fusedForwardSgmatWorkgroupBytes(spec),
    features: ['shader-f16', 'subgroups', 'chromium-experimental-subgroup-matrix'],
  };
}
