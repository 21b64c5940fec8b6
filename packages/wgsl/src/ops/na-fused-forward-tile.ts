/**
 * Fused neighborhood-attention forward, dense register-tiled ("tile") path, as generated WGSL. Experimental and
 * opt-in (`fusedForwardTile` in @natten-web/gpu); for large windows, where most of a query tile's union key box is
 * inside every query's window.
 *
 * The plain path (na-fused-forward.ts) gives each invocation one query and walks exactly its window, reading one
 * staged key element per FMA. This path computes a query tile's scores against each staged key chunk densely, as a
 * small GEMM with register tiles, and masks what lies outside each query's window:
 * - One workgroup = (batch, head, dilation group, query tile of BQ queries), as in the plain path (same prologue,
 *   same union key box, same chunks of BK keys, same uniforms and bindings). The query tile is staged once in
 *   workgroup memory; each chunk stages its K and V rows.
 * - (BQ / 4) * (BK / 4) invocations: invocation (qg, kg) owns queries 4qg .. 4qg+3 of the tile and keys
 *   kg + KG*u (u = 0..3, KG = BK / 4) of the chunk, a 4 x 4 score tile in registers: per vec4 column it reads 4 q
 *   and 4 k vectors for 16 dot products (4 FMAs per element read instead of 1). Key ownership is strided so the KG
 *   invocations of a query row read consecutive (padded, conflict-free) k rows.
 * - Masking per score: the key's group coordinates inside the query's window on every axis (causal, dilation and
 *   stride included, as the window functions compute them), else the score is dropped (p = 0).
 * - Online softmax per query row across the KG invocations that share it: row max and row sum by
 *   `subgroupShuffleXor` over masks 1 .. KG/2 (needs subgroups at least KG wide, contiguous in
 *   local_invocation_index, as the lane split assumes), a rescale of O per chunk.
 * - P goes through workgroup memory (transposed, 4 queries per vec4) and O += P V with each invocation owning its 4
 *   queries' O columns kg + KG*cc (vec4 columns): per key, one P vector and DV4/KG V vectors feed 4*DV4/KG vec4 FMAs.
 *
 * Needs: D % 4 == 0, Dv % (4 * KG) == 0, subgroups. Masked keys still cost their dot products, so the path only
 * pays where the window covers most of the union box (density prod(K) / prod(K + tile - 1), see `tileDensity`).
 */
import { NattenArgumentError, type NaRank, formatShape, product } from '@natten-web/core';
import { dtypeFeatures, enableDirectives, wgslType } from '../dtype.ts';
import { type GeneratedKernel, kernelKey, uniformDecl } from '../kernel.ts';
import { FUSED_NEG } from '../snippets/fused-softmax.ts';
import { rpbIndexExpr, rpbWindowProblem, tokenOf } from '../snippets/fused-index.ts';
import { windowFunctions } from '../snippets/window.ts';
import {
  type FusedForwardSpec,
  forwardStageChunk,
  forwardWorkgroupPrologue,
  fusedForwardBindings,
  fusedForwardUniformFields,
  rowLoader,
} from './na-fused-forward.ts';

const FAMILY = 'na-fused-forward-tile';
const GEN = 1;

/** Query-tile products of the tile path. */
export const TILE_FORWARD_QUERY_TILES = [16, 32, 64] as const;
/** Key-chunk products of the tile path. */
export const TILE_FORWARD_KEY_CHUNKS = [16, 32] as const;

/**
 * A tile-path kernel spec: the plain spec's problem fields, its query tile (product in TILE_FORWARD_QUERY_TILES),
 * key chunk (in TILE_FORWARD_KEY_CHUNKS) and staging type.
 */
export type FusedForwardTileSpec = Pick<
  FusedForwardSpec,
  'rank' | 'kernelSize' | 'causal' | 'dim' | 'dimV' | 'dtype' | 'queryTile' | 'keyChunk' | 'stage' | 'hasRpb' | 'hasLse'
>;

/** Invocations of a spec's workgroup: (BQ / 4) * (BK / 4). */
export function tileForwardInvocations(spec: Pick<FusedForwardTileSpec, 'queryTile' | 'keyChunk'>): number {
  return (product(spec.queryTile) / 4) * (spec.keyChunk / 4);
}

/** Invocations sharing a query row (KG = BK / 4): the subgroups must be at least this wide. */
export function tileForwardRowLanes(spec: Pick<FusedForwardTileSpec, 'keyChunk'>): number {
  return spec.keyChunk / 4;
}

/** Bytes of workgroup memory: q tile and k chunk (padded rows), v chunk, P (padded). */
export function tileForwardWorkgroupBytes(spec: Pick<FusedForwardTileSpec, 'queryTile' | 'keyChunk' | 'dim' | 'dimV' | 'stage'>): number {
  const vb = spec.stage === 'f16' ? 8 : 16;
  const bq = product(spec.queryTile);
  const d4 = spec.dim / 4 + 1;
  return bq * d4 * vb + spec.keyChunk * d4 * vb + spec.keyChunk * (spec.dimV / 4) * vb + spec.keyChunk * (bq / 4 + 1) * 16;
}

/**
 * Fraction of the dense score work that lands inside a window, for a problem and query tile: prod(K_a) over
 * prod(min(t_a + K_a - 1, group extent_a)) (the union box per tile); causal windows are counted as full.
 */
export function tileDensity(kernelSize: readonly number[], queryTile: readonly number[], groupExtents: readonly number[]): number {
  let d = 1;
  kernelSize.forEach((k, a) => {
    d *= k / Math.min((queryTile[a] as number) + k - 1, groupExtents[a] as number);
  });
  return d;
}

/** Why a spec cannot be generated (internal consistency, not device limits), or undefined. */
export function fusedForwardTileSpecProblem(spec: FusedForwardTileSpec): string | undefined {
  const r = spec.rank;
  if (spec.kernelSize.length !== r || spec.causal.length !== r || spec.queryTile.length !== r) return `kernelSize, causal and queryTile need ${r} entries`;
  const bq = product(spec.queryTile);
  if (!(TILE_FORWARD_QUERY_TILES as readonly number[]).includes(bq)) return `query tile ${formatShape(spec.queryTile)} has product ${bq}, not one of ${TILE_FORWARD_QUERY_TILES.join(', ')}`;
  if (!(TILE_FORWARD_KEY_CHUNKS as readonly number[]).includes(spec.keyChunk)) return `key chunk ${spec.keyChunk} is not one of ${TILE_FORWARD_KEY_CHUNKS.join(', ')}`;
  const kg = tileForwardRowLanes(spec);
  if (spec.dim % 4 !== 0) return `head_dim=${spec.dim} must be a multiple of 4`;
  if (spec.dimV % (4 * kg) !== 0) return `value head_dim=${spec.dimV} must be a multiple of ${4 * kg} (4 x the ${kg} invocations sharing a query row with key chunk ${spec.keyChunk})`;
  if (spec.stage === 'f16' && spec.dtype !== 'float16') return `f16 staging needs float16 inputs`;
  return rpbWindowProblem(spec);
}

/** Generate the kernel for a spec. Pure: same spec, same text. */
export function generateFusedForwardTile(spec: FusedForwardTileSpec): GeneratedKernel {
  const why = fusedForwardTileSpecProblem(spec);
  if (why !== undefined) throw new NattenArgumentError(`generateFusedForwardTile: ${why}`);
  const key = kernelKey(FAMILY, GEN, spec);
  const r = spec.rank;
  const axes = Array.from({ length: r }, (_, a) => a);
  const T = wgslType(spec.dtype);
  const S = spec.stage;
  const D4 = spec.dim / 4;
  const DV4 = spec.dimV / 4;
  const BQ = product(spec.queryTile);
  const BK = spec.keyChunk;
  const KG = BK / 4;
  const QG = BQ / 4;
  const CPT = DV4 / KG;
  const WG = QG * KG;
  const QS = D4 + 1; // padded q / k row stride (vec4s)
  const PS = QG + 1; // padded P row stride (vec4s)
  const js = [0, 1, 2, 3];
  const us = [0, 1, 2, 3];
  const cs = Array.from({ length: CPT }, (_, c) => c);
  const uniforms = fusedForwardUniformFields(r);
  const bindings = fusedForwardBindings(spec);
  const elem: Record<string, string> = { query: `vec4<${T}>`, key: `vec4<${T}>`, value: `vec4<${T}>`, rpb: T, output: `vec4<${T}>`, logsumexp: 'f32' };
  const decls = bindings.map((b, i) => `@group(0) @binding(${i}) var<storage, ${b.access}> ${b.name}: array<${elem[b.name] ?? T}>;`).join('\n');
  const tokOf = (x: (a: number) => string): string => tokenOf(r, x);
  const win = (a: number, x: string): string => `na_window_${a}(${x} * params.dil_${a} + g_${a}, params.len_${a}, params.dil_${a}, params.str_${a})`;
  // Decode a tile-linear index (last axis fastest) into per-axis tile offsets, as `${p}_a`.
  const decodeTile = (idx: string, p: string): string =>
    [`var ${p}_rest = ${idx};`, ...axes.slice().reverse().map((a) => `let ${p}_${a} = i32(${p}_rest % QUERY_TILE_${a}); ${p}_rest = ${p}_rest / QUERY_TILE_${a};`)].join(' ');
  const butterfly = (x: string, op: 'max' | '+'): string => {
    const out: string[] = [];
    for (let m = 1; m < KG; m *= 2) out.push(op === 'max' ? `${x} = max(${x}, subgroupShuffleXor(${x}, ${m}u));` : `${x} = ${x} + subgroupShuffleXor(${x}, ${m}u);`);
    return out.join(' ');
  };

  const header = [
    `// ${key}`,
    enableDirectives(spec.dtype).trimEnd(),
    'enable subgroups;',
    ...axes.map((a) => `const QUERY_TILE_${a}: u32 = ${spec.queryTile[a]}u;`),
    `const HEAD_DIM: u32 = ${spec.dim}u;`,
    `const HEAD_DIM_V: u32 = ${spec.dimV}u;`,
    `const D4: u32 = ${D4}u;`,
    `const DV4: u32 = ${DV4}u;`,
    `const QS: u32 = ${QS}u;`,
    `const PS: u32 = ${PS}u;`,
    `const BQ: u32 = ${BQ}u;`,
    `const KEY_CHUNK: u32 = ${BK}u;`,
    `const KG: u32 = ${KG}u;`,
    `const WORKGROUP_SIZE: u32 = ${WG}u;`,
    `const THREADS_PER_KEY: u32 = 1u;`,
    `const LOG2E: f32 = 1.4426950408889634;`,
    `const NEG: f32 = ${FUSED_NEG};`,
  ]
    .filter((l) => l.length > 0)
    .join('\n');

  // ---- per invocation: its 4 queries (rows 4qg + j of the tile) and their windows
  const querySetup = js
    .map(
      (j) => `  let qt_${j} = qg * 4u + ${j}u;
  ${decodeTile(`qt_${j}`, `qo${j}`)}
${axes.map((a) => `  let qi${j}_${a} = qf_${a} + qo${j}_${a};`).join('\n')}
  let valid_${j} = ${axes.map((a) => `qi${j}_${a} < n_${a}`).join(' && ')};
${axes.map((a) => `  let w${j}_${a} = ${win(a, `min(qi${j}_${a}, n_${a} - 1)`)};\n  let ws${j}_${a} = (w${j}_${a}.x - g_${a}) / params.dil_${a};\n  let we${j}_${a} = ws${j}_${a} + w${j}_${a}.y;`).join('\n')}
  var m_${j} = NEG;
  var l_${j} = 0.0;
${cs.map((c) => `  var o${j}_${c} = vec4<f32>(0.0);`).join('\n')}`,
    )
    .join('\n');

  // ---- stage the query tile once (padded rows, zero rows outside the group)
  const stageQ = `  for (var rr = lid; rr < BQ; rr += WORKGROUP_SIZE) {
    ${decodeTile('rr', 'sq')}
    let in_q = ${axes.map((a) => `qf_${a} + sq_${a} < n_${a}`).join(' && ')};
    let qtok = ${tokOf((a) => `(qf_${a} + sq_${a}) * params.dil_${a} + g_${a}`)};
    let qbase = select(0u, ((tok_base + qtok) * params.heads + h) * HEAD_DIM, in_q);
    for (var c = 0u; c < D4; c++) { q_sh[rr * QS + c] = select(vec4<${S}>(0.0), load_q(qbase, c), in_q); }
  }`;

  // ---- scores of the chunk: 16 dots over the vec4 columns
  const scoreDecl = js.flatMap((j) => us.map((u) => `var s${j}_${u} = 0.0;`)).join(' ');
  const scoreLoop = `    for (var c = 0u; c < D4; c++) {
${js.map((j) => `      let qv${j} = vec4<f32>(q_sh[(qg * 4u + ${j}u) * QS + c]);`).join('\n')}
${us.map((u) => `      let kv${u} = vec4<f32>(k_sh[(kg + ${u * KG}u) * QS + c]);`).join('\n')}
${js.map((j) => `      ${us.map((u) => `s${j}_${u} = s${j}_${u} + dot(qv${j}, kv${u});`).join(' ')}`).join('\n')}
    }`;
  // ---- each of the invocation's keys: box coordinates, in-box flag
  const keyCoords = us
    .map((u) => {
      const parts = [`    let kb${u} = c0 + kg + ${u * KG}u;`, `    let kin${u} = kb${u} < box_n;`, `    var kr${u} = i32(kb${u});`];
      for (const a of axes.slice().reverse()) {
        parts.push(a === 0 ? `    let kc${u}_0 = bs_0 + kr${u};` : `    let kc${u}_${a} = bs_${a} + kr${u} % bw_${a}; kr${u} = kr${u} / bw_${a};`);
      }
      return parts.join('\n');
    })
    .join('\n');
  const inWindow = (j: number, u: number): string => [`valid_${j}`, `kin${u}`, ...axes.map((a) => `kc${u}_${a} >= ws${j}_${a} && kc${u}_${a} < we${j}_${a}`)].join(' && ');
  const rpbTerm = (j: number, u: number): string =>
    spec.hasRpb ? ` + f32(rpb[${rpbIndexExpr(spec.kernelSize, (a) => `kc${u}_${a} - qi${j}_${a}`)}]) * LOG2E` : '';
  const maskScale = js
    .flatMap((j) => us.map((u) => `    let in${j}_${u} = ${inWindow(j, u)};\n    if (in${j}_${u}) { s${j}_${u} = s${j}_${u} * params.scale_log2${rpbTerm(j, u)}; } else { s${j}_${u} = NEG; }`))
    .join('\n');
  const softmax = js
    .map(
      (j) => `    var mx_${j} = max(max(s${j}_0, s${j}_1), max(s${j}_2, s${j}_3));
    ${butterfly(`mx_${j}`, 'max')}
    let mn_${j} = max(m_${j}, mx_${j});
    let alpha_${j} = exp2(m_${j} - mn_${j});
    m_${j} = mn_${j};
${us.map((u) => `    let p${j}_${u} = select(0.0, exp2(s${j}_${u} - mn_${j}), in${j}_${u});`).join('\n')}
    var rs_${j} = (p${j}_0 + p${j}_1) + (p${j}_2 + p${j}_3);
    ${butterfly(`rs_${j}`, '+')}
    l_${j} = l_${j} * alpha_${j} + rs_${j};
${cs.map((c) => `    o${j}_${c} = o${j}_${c} * alpha_${j};`).join('\n')}`,
    )
    .join('\n');
  const writeP = us.map((u) => `    p_sh[(kg + ${u * KG}u) * PS + qg] = vec4<f32>(p0_${u}, p1_${u}, p2_${u}, p3_${u});`).join('\n');
  const pv = `    for (var k = 0u; k < KEY_CHUNK; k++) {
      let pk = p_sh[k * PS + qg];
${cs.map((c) => `      let vv${c} = vec4<f32>(v_sh[k * DV4 + kg + ${c * KG}u]);`).join('\n')}
${js.map((j) => `      ${cs.map((c) => `o${j}_${c} = fma(vec4<f32>(pk.${'xyzw'[j]}), vv${c}, o${j}_${c});`).join(' ')}`).join('\n')}
    }`;
  const epilogue = js
    .map(
      (j) => `  if (valid_${j}) {
    let inv_l = 1.0 / l_${j};
    let qrow = (tok_base + ${tokOf((a) => `qi${j}_${a} * params.dil_${a} + g_${a}`)}) * params.heads + h;
${cs.map((c) => `    output[qrow * DV4 + kg + ${c * KG}u] = vec4<${T}>(o${j}_${c} * inv_l);`).join('\n')}
${spec.hasLse ? `    if (kg == 0u) { logsumexp[qrow] = (m_${j} + log2(l_${j})) * 0.6931471805599453; }` : ''}
  }`,
    )
    .join('\n');

  const code = `${header}

${decls}
${uniformDecl(uniforms, bindings.length)}
${windowFunctions(spec.kernelSize, spec.causal)}
${rowLoader('load_q', 'query', spec.dim, true, S)}
${rowLoader('load_k', 'key', spec.dim, true, S)}
${rowLoader('load_v', 'value', spec.dimV, true, S)}

var<workgroup> q_sh: array<vec4<${S}>, ${BQ * QS}>;
var<workgroup> k_sh: array<vec4<${S}>, ${BK * QS}>;
var<workgroup> v_sh: array<vec4<${S}>, ${BK * DV4}>;
var<workgroup> p_sh: array<vec4<f32>, ${BK * PS}>;

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wg_id: vec3<u32>, @builtin(num_workgroups) wg_num: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
${forwardWorkgroupPrologue(r)}
  let qg = lid / KG;
  let kg = lid % KG;
${querySetup}
${stageQ}

  // ---- walk the union key box in chunks of KEY_CHUNK keys: dense 4x4 score tiles, masked per window
  for (var ch = 0u; ch < n_chunks; ch++) {
    let c0 = ch * KEY_CHUNK;
${forwardStageChunk(r, (rr, c) => `${rr} * QS + ${c}`, (rr, c) => `${rr} * DV4 + ${c}`)}    workgroupBarrier();
    ${scoreDecl}
${scoreLoop}
${keyCoords}
${maskScale}
${softmax}
${writeP}
    workgroupBarrier();
${pv}
    workgroupBarrier();
  }

${epilogue}
}
`;
  return {
    key,
    code,
    entryPoint: 'main',
    workgroupSize: [WG, 1, 1],
    bindings,
    uniforms,
    workgroupBytes: tileForwardWorkgroupBytes(spec),
    features: [...dtypeFeatures(spec.dtype), 'subgroups'],
  };
}
