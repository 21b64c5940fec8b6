/**
 * Dense attention (NATTEN's `attention`, FMHA) and the merge of partial attentions (`merge_attentions`), for
 * `attention`, `mergeAttentions` and the additional-KV path of `na{1,2,3}d` on GPU tensors. Heads-last layouts:
 * q `[B, S, H, D]`, k `[B, S_kv, H_kv, D]`, v `[B, S_kv, H_kv, D_v]`, out `[B, S, H, D_v]`, lse `[B, S, H]` (f32).
 *
 * Forward (`generateDenseForward`): a workgroup of 64 invocations owns 64 consecutive queries of one (batch, head);
 * each invocation one query. Keys and values are staged through workgroup memory (as f32) in chunks shared by the 64
 * queries; per chunk each query forms its logits, takes the chunk's max, rescales its f32 accumulator once and adds
 * the chunk's weighted values (online softmax). Causal is top-left aligned (query i sees keys j <= i); chunks past
 * the workgroup's last query are never staged. GQA: query head h reads key/value head h / (H / H_kv).
 *
 * Merge (`generateAttentionMerge`): one invocation per row (a query and head), `O = O0 - sigmoid(l1 - l0) (O0 - O1)`,
 * `l = max(l0, l1) + log(1 + exp(-|l0 - l1|))`, in f32. The `first` form reads two outputs and writes a third; the
 * fold form merges one more output into the accumulator in place (three or more outputs: fold left).
 */
import { NattenArgumentError } from '@natten-web/core';
import { dtypeFeatures, enableDirectives, type GpuDType, wgslType } from '../dtype.ts';
import { type GeneratedKernel, kernelKey, type StorageBinding, type UniformField, uniformDecl } from '../kernel.ts';

const GEN = 3;
/** Queries per workgroup (one per invocation). */
export const DENSE_QUERIES = 64;
/** Workgroup memory the forward's staging may take (WebGPU's default limit). */
const STAGE_BYTES = 16384;
/** Largest head dim the dense kernels compile (q and the accumulator live in private arrays). */
export const DENSE_MAX_DIM = 256;

/** The generated kernel of a plain dense kernel (64 invocations, entry `main`, features by dtype). */
function denseKernel(key: string, code: string, bindings: readonly StorageBinding[], uniforms: readonly UniformField[], workgroupBytes: number, dtype: GpuDType): GeneratedKernel {
  return { key, code, entryPoint: 'main', workgroupSize: [DENSE_QUERIES, 1, 1], bindings, uniforms, workgroupBytes, features: dtypeFeatures(dtype) };
}

export interface DenseForwardSpec {
  readonly dtype: GpuDType;
  readonly dim: number;
  readonly dimV: number;
  readonly causal: boolean;
  /**
   * Variable-length sequences packed along the token axis (batch 1; NATTEN's varlen FMHA): `cu_q` / `cu_kv` bindings
   * (u32, `seqs + 1` cumulative offsets) give each sequence's queries and keys; a query attends to its own
   * sequence's keys only (causal: top-left within the sequence).
   */
  readonly varlen?: boolean;
  /**
   * Forward only: `output` and `lse` already hold another attention of the same queries over other keys (NA's, on
   * the additional-KV path); this one is merged into them in place by logsumexp (as `generateAttentionMerge`), in the
   * kernel's epilogue, instead of written.
   */
  readonly merge?: boolean;
}

/**
 * WGSL merging a new partial attention (lse `l1`) into an old one (lse `l0`): `w1` = sigmoid(l1 - l0), the new
 * one's weight (stable for both signs; 0 where l1 is -inf), and `lm` = logaddexp(l0, l1). Merged O = O0 - w1 (O0 - O1).
 */
export function mergeWeights(l0: string, l1: string, ind = '  '): string {
  return `${ind}let mdiff = ${l1} - ${l0};
${ind}let me = exp(-abs(mdiff));
${ind}let w1 = select(me / (1.0 + me), 1.0 / (1.0 + me), mdiff >= 0.0);
${ind}let lm = max(${l0}, ${l1}) + log(1.0 + me);`;
}

export const DENSE_UNIFORMS: readonly UniformField[] = [
  { name: 'queries', type: 'u32' },
  { name: 'keys', type: 'u32' },
  { name: 'heads', type: 'u32' },
  { name: 'heads_kv', type: 'u32' },
  { name: 'scale', type: 'f32' },
  /** Packed sequences (varlen), else 1. */
  { name: 'seqs', type: 'u32' },
];

/**
 * WGSL of the varlen helpers: the sequence holding packed query (key) `t`, by binary search of the cumulative offsets,
 * and the workgroup word (a vec4) a workgroup's union range goes through (`workgroupUniformLoad`).
 */
export function varlenHelpers(on: boolean | undefined): string {
  if (on !== true) return '';
  // A trip count from the uniforms alone (ceil(log2(seqs)) halvings) and selects instead of branches, so the lanes of a
  // subgroup never diverge here: the tensor-core kernels' matrix operations and subgroup reductions need all of them.
  const search = (name: string, cu: string): string => `fn ${name}(t: u32) -> u32 {
  var lo = 0u;
  var hi = params.seqs;
  for (var n = params.seqs; n > 1u; n = (n + 1u) / 2u) {
    let mid = (lo + hi) / 2u;
    let open = hi - lo > 1u;
    let up = ${cu}[mid] <= t;
    lo = select(lo, mid, open && up);
    hi = select(hi, mid, open && !up);
  }
  return lo;
}`;
  return `${search('seq_q', 'cu_q')}
${search('seq_kv', 'cu_kv')}
// One 16-byte word (lo, hi, -, -): every workgroup variable a multiple of 16 bytes, as the mma kernels need.
var<workgroup> wg_range: vec4<u32>;
`;
}

/** Storage declarations; `cu_q` / `cu_kv` are u32, `lse` / `delta` (and `f32Names`) f32, the rest the tensor type. */
function denseDecls(bindings: readonly StorageBinding[], T: string, f32Names: readonly string[] = []): string {
  const elem = (name: string): string => (name === 'cu_q' || name === 'cu_kv' ? 'u32' : name === 'lse' || name === 'delta' || f32Names.includes(name) ? 'f32' : T);
  return bindings.map((b, i) => `@group(0) @binding(${i}) var<storage, ${b.access}> ${b.name}: array<${elem(b.name)}>;`).join('\n');
}

export const CU_BINDINGS: readonly StorageBinding[] = [
  { name: 'cu_q', access: 'read' },
  { name: 'cu_kv', access: 'read' },
];

/** The storage bindings of a dense kernel (the plain ones and their tensor-core twins alike), in binding order. */
export function denseBindings(kind: 'forward' | 'dq' | 'dkv', varlen: boolean | undefined): StorageBinding[] {
  const r = (name: string): StorageBinding => ({ name, access: 'read' });
  const w = (name: string): StorageBinding => ({ name, access: 'read_write' });
  const cu = varlen === true ? CU_BINDINGS : [];
  if (kind === 'forward') return [r('query'), r('key'), r('value'), ...cu, w('output'), w('lse')];
  if (kind === 'dq') return [r('query'), r('key'), r('value'), r('output'), r('grad_output'), r('lse'), ...cu, w('grad_query'), w('delta')];
  return [r('query'), r('key'), r('value'), r('grad_output'), r('lse'), r('delta'), ...cu, w('grad_key'), w('grad_value')];
}

/**
 * WGSL of a query-walking kernel's key ranges: the workgroup's union `[u0, u1)` (uniform) and this query's own
 * `[qk0, qk1)`, with `kv_base` the key row offset of its batch and key head.
 */
export function queryKeyRanges(spec: Pick<DenseForwardSpec, 'causal' | 'varlen'>, WG: number): string {
  if (spec.varlen !== true) {
    return `  let last_q = min(wg.x * ${WG}u + ${WG - 1}u, params.queries - 1u);
  let u0 = 0u;
  let u1 = ${spec.causal ? 'min(params.keys, last_q + 1u)' : 'params.keys'};
  let kv_base = b * params.keys * params.heads_kv + hk;
  let qk0 = 0u;
  let qk1 = ${spec.causal ? 'min(params.keys, i + 1u)' : 'params.keys'};`;
  }
  return `  let last_q = min(wg.x * ${WG}u + ${WG - 1}u, params.queries - 1u);
  if (lid == 0u) {
    wg_range = vec4<u32>(cu_kv[seq_q(wg.x * ${WG}u)], cu_kv[seq_q(last_q) + 1u], 0u, 0u);
  }
  let wr = workgroupUniformLoad(&wg_range);
  let u0 = wr.x;
  let u1 = wr.y;
  let kv_base = hk;
  let sq = seq_q(min(i, params.queries - 1u));
  let qk0 = cu_kv[sq];
  let qk1 = ${spec.causal ? 'min(cu_kv[sq + 1u], qk0 + (min(i, params.queries - 1u) - cu_q[sq]) + 1u)' : 'cu_kv[sq + 1u]'};`;
}

/**
 * WGSL of a key-walking kernel's query ranges (its key `j`, batch `b`): the query positions any key of the
 * workgroup is seen by, `[u0, u1)` (uniform; causal: from the first key's position on), and this key's own: its
 * sequence's `[cq0, cq1)` and its position `kpos` in it.
 */
export function keyQueryRanges(spec: Pick<DenseForwardSpec, 'causal' | 'varlen'>, WG: number): string {
  if (spec.varlen === true) {
    return `  if (lid == 0u) {
    wg_range = vec4<u32>(cu_q[seq_kv(wg.x * ${WG}u)], cu_q[seq_kv(min(wg.x * ${WG}u + ${WG - 1}u, params.keys - 1u)) + 1u], 0u, 0u);
  }
  let wr = workgroupUniformLoad(&wg_range);
  let u0 = wr.x;
  let u1 = wr.y;
  let sk = seq_kv(min(j, params.keys - 1u));
  let cq0 = cu_q[sk];
  let cq1 = cu_q[sk + 1u];
  let kpos = min(j, params.keys - 1u) - cu_kv[sk];`;
  }
  return `  let u0 = ${spec.causal ? `min(wg.x * ${WG}u, params.queries)` : '0u'};
  let u1 = params.queries;
  let cq0 = 0u;
  let cq1 = params.queries;
  let kpos = j;`;
}

/** WGSL of a key-walking kernel's batch `b`, key head `hk` and head group size `group` (grid z: batch x key head). */
export const KEY_WALK_IDS = `  let bh = wg.z;
  let b = bh / params.heads_kv;
  let hk = bh % params.heads_kv;
  let group = params.heads / params.heads_kv;
`;

/** WGSL of the query row (batch, position, head) of staged row r of a key-walking kernel (position-major over the head group). */
export const STAGED_ROW_FN = `/** Row r of the staged rows, position-major over the head group of key head hk, from row base (batch, first position). */
fn staged_row(base: u32, r: u32, hk: u32, group: u32) -> u32 {
  return (base + r / group) * params.heads + hk * group + r % group;
}
`;

/**
 * WGSL of a key-walking kernel's share of the query positions (split `wg.y` of `nwg.y`), `[q_lo, q_hi)`, its staged
 * rows `n_rows` (position, head of the group) and their base row `row_base`.
 */
export const SPLIT_ROWS = `  let share = (u1 - u0 + nwg.y - 1u) / nwg.y;
  let q_lo = min(u0 + wg.y * share, u1);
  let q_hi = min(q_lo + share, u1);
  // Rows (position, head of the group), position-major.
  let n_rows = select(0u, (q_hi - q_lo) * group, q_hi > q_lo);
  // Query row (batch, position, head) of staged row r (clamped to the last).
  let row_base = b * params.queries + q_lo;
`;

/** WGSL staging one chunk of K and V rows from key `k0` (keys past `u1` zero). */
function stageKv(WG: number): string {
  return `    for (var e = lid; e < BK * D; e += ${WG}u) {
      let j = k0 + e / D;
      ks[e] = select(0.0, f32(key[(kv_base + min(j, u1 - 1u) * params.heads_kv) * D + e % D]), j < u1);
    }
    for (var e = lid; e < BK * DV; e += ${WG}u) {
      let j = k0 + e / DV;
      vs[e] = select(0.0, f32(value[(kv_base + min(j, u1 - 1u) * params.heads_kv) * DV + e % DV]), j < u1);
    }
    workgroupBarrier();
    // This query's keys in the chunk: [k0 + lo, k0 + hi).
    let lo = select(0u, qk0 - k0, qk0 > k0);
    let hi = select(0u, min(BK, qk1 - k0), valid && qk1 > k0);`;
}

/** Keys staged per chunk: the largest power of two whose K and V rows (f32) fit the staging bytes, at most 32. */
export function denseKeyChunk(dim: number, dimV: number): number {
  let bk = 32;
  while (bk > 1 && bk * (dim + dimV) * 4 > STAGE_BYTES) bk /= 2;
  return bk;
}

function checkDims(gen: string, dim: number, dimV: number): void {
  for (const [name, d] of [
    ['dim', dim],
    ['dimV', dimV],
  ] as const) {
    if (!Number.isInteger(d) || d < 1 || d > DENSE_MAX_DIM) throw new NattenArgumentError(`${gen}: ${name} must be an integer in [1, ${DENSE_MAX_DIM}], got ${d}`);
  }
}

/**
 * WGSL of a query-walking kernel (forward, dQ) up to this invocation's query row: declarations, the K/V staging
 * arrays, and in `main` the batch, head, query `i`, key head `hk`, `valid` and `qrow`.
 */
function queryKernelHead(key: string, spec: DenseForwardSpec, bindings: readonly StorageBinding[], uniforms: readonly UniformField[]): string {
  const T = wgslType(spec.dtype);
  const BK = denseKeyChunk(spec.dim, spec.dimV);
  const WG = DENSE_QUERIES;
  return `// ${key}
${enableDirectives(spec.dtype)}${denseDecls(bindings, T)}
${uniformDecl(uniforms, bindings.length)}
${varlenHelpers(spec.varlen)}const D = ${spec.dim}u;
const DV = ${spec.dimV}u;
const BK = ${BK}u;
var<workgroup> ks: array<f32, ${BK * spec.dim}>;
var<workgroup> vs: array<f32, ${BK * spec.dimV}>;

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let b = wg.z;
  let h = wg.y;
  let i = wg.x * ${WG}u + lid;
  let hk = h / (params.heads / params.heads_kv);
  let valid = i < params.queries;
  let qrow = ((b * params.queries + min(i, params.queries - 1u)) * params.heads + h);`;
}

export function generateDenseForward(spec: DenseForwardSpec): GeneratedKernel {
  checkDims('generateDenseForward', spec.dim, spec.dimV);
  const key = kernelKey('dense-forward', GEN, spec);
  const T = wgslType(spec.dtype);
  const D = spec.dim;
  const DV = spec.dimV;
  const BK = denseKeyChunk(D, DV);
  const WG = DENSE_QUERIES;
  const bindings = denseBindings('forward', spec.varlen);
  const code = `${queryKernelHead(key, spec, bindings, DENSE_UNIFORMS)}
  var q: array<f32, ${D}>;
  for (var c = 0u; c < D; c++) { q[c] = f32(query[qrow * D + c]) * params.scale; }
  var acc: array<f32, ${DV}>;
  var m = -3.0e38;
  var l = 0.0;
  var s: array<f32, ${BK}>;
  // Keys any query of this workgroup sees [u0, u1) (causal: up to its last query), and this query's [qk0, qk1).
${queryKeyRanges(spec, WG)}
  for (var k0 = u0; k0 < u1; k0 += BK) {
${stageKv(WG)}
    if (hi > lo) {
      var cm = m;
      for (var jj = lo; jj < hi; jj++) {
        var dot = 0.0;
        for (var c = 0u; c < D; c++) { dot += q[c] * ks[jj * D + c]; }
        s[jj] = dot;
        cm = max(cm, dot);
      }
      let corr = exp(m - cm);
      l = l * corr;
      for (var c = 0u; c < DV; c++) { acc[c] = acc[c] * corr; }
      for (var jj = lo; jj < hi; jj++) {
        let p = exp(s[jj] - cm);
        l += p;
        for (var c = 0u; c < DV; c++) { acc[c] += p * vs[jj * DV + c]; }
      }
      m = cm;
    }
    workgroupBarrier();
  }
  if (valid) {
    let inv = select(0.0, 1.0 / l, l > 0.0);
${
  spec.merge === true
    ? `    // Merged into what output and lse hold (another attention of these queries over other keys).
    let l1 = m + log(l);
    let l0 = lse[qrow];
${mergeWeights('l0', 'l1', '    ')}
    for (var c = 0u; c < DV; c++) {
      let x = f32(output[qrow * DV + c]);
      output[qrow * DV + c] = ${T}(x - w1 * (x - acc[c] * inv));
    }
    lse[qrow] = lm;`
    : `    for (var c = 0u; c < DV; c++) { output[qrow * DV + c] = ${T}(acc[c] * inv); }
    lse[qrow] = m + log(l);`
}
  }
}
`;
  return denseKernel(key, code, bindings, DENSE_UNIFORMS, 4 * BK * (D + DV), spec.dtype);
}

export interface AttentionMergeSpec {
  readonly dtype: GpuDType;
  /** `first`: merge outputs 0 and 1 into a new output; absent / false: merge one more into the accumulator in place. */
  readonly first: boolean;
}

export const ATTENTION_MERGE_UNIFORMS: readonly UniformField[] = [
  { name: 'rows', type: 'u32' },
  { name: 'dim_v', type: 'u32' },
  /** Workgroups along x of the folded grid (a workgroup's rows start at (wid.x + wid.y * row_groups) * mergeRowsPerWorkgroup). */
  { name: 'row_groups', type: 'u32' },
];

/** Rows a merge workgroup of 64 invocations holds: one invocation per group of four channels, up to 64 per row. */
export function mergeRowsPerWorkgroup(dimV: number): number {
  return Math.floor(64 / Math.min(Math.ceil(dimV / 4), 64));
}

export function generateAttentionMerge(spec: AttentionMergeSpec): GeneratedKernel {
  const key = kernelKey('attention-merge', GEN, spec);
  const T = wgslType(spec.dtype);
  const bindings: StorageBinding[] = spec.first
    ? [
        { name: 'out0', access: 'read' },
        { name: 'lse0', access: 'read' },
        { name: 'out1', access: 'read' },
        { name: 'lse1', access: 'read' },
        { name: 'output', access: 'read_write' },
        { name: 'lse', access: 'read_write' },
      ]
    : [
        { name: 'out1', access: 'read' },
        { name: 'lse1', access: 'read' },
        { name: 'output', access: 'read_write' },
        { name: 'lse', access: 'read_write' },
      ];
  const elem = (name: string): string => (name.startsWith('lse') ? 'f32' : T);
  const a = spec.first ? 'out0' : 'output';
  const la = spec.first ? 'lse0' : 'lse';
  const code = `// ${key}
${enableDirectives(spec.dtype)}${bindings.map((b, i) => `@group(0) @binding(${i}) var<storage, ${b.access}> ${b.name}: array<${elem(b.name)}>;`).join('\n')}
${uniformDecl(ATTENTION_MERGE_UNIFORMS, bindings.length)}
@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  // Invocations per row: one per group of four channels (G of them, up to 64, each looping over further groups); a
  // workgroup holds whole rows, so the in-place lse write waits at the barrier for every read of its row.
  let groups = (params.dim_v + 3u) / 4u;
  let per_row = min(groups, 64u);
  let rows_per_wg = 64u / per_row;
  let rr = lid / per_row;
  let r = (wg.x + wg.y * params.row_groups) * rows_per_wg + rr;
  let valid = rr < rows_per_wg && r < params.rows;
  let rc = min(r, params.rows - 1u);
  let l0 = ${la}[rc];
  let l1 = lse1[rc];
${mergeWeights('l0', 'l1')}
  if (valid) {
    for (var g = lid % per_row; g < groups; g += per_row) {
      for (var c = g * 4u; c < min(g * 4u + 4u, params.dim_v); c++) {
        let o = r * params.dim_v + c;
        let x = f32(${a}[o]);
        output[o] = ${T}(x - w1 * (x - f32(out1[o])));
      }
    }
  }
  workgroupBarrier();
  if (valid && lid % per_row == 0u) { lse[r] = lm; }
}
`;
  return denseKernel(key, code, bindings, ATTENTION_MERGE_UNIFORMS, 0, spec.dtype);
}

export interface DenseBackwardSpec extends DenseForwardSpec {
  /** dQ kernel: add the dense dQ to what gradQuery holds (the additional-KV path adds it to NA's dQ). */
  readonly accumulate?: boolean;
  /** dK/dV kernel: write f32 partial sums per query split (reduced by `generateDenseGradReduce`) instead of dK, dV. */
  readonly partial?: boolean;
}

export const DENSE_BACKWARD_UNIFORMS: readonly UniformField[] = [
  ...DENSE_UNIFORMS,
  /** dK/dV kernel: the elements of one split's dK (dV) partial. */
  { name: 'k_elems', type: 'u32' },
  { name: 'v_elems', type: 'u32' },
];

/** Query rows staged per chunk of the dK/dV kernel (q, dO, lse and delta of each, f32). */
export function denseQueryChunk(dim: number, dimV: number): number {
  let bq = 32;
  while (bq > 1 && bq * (dim + dimV + 2) * 4 > STAGE_BYTES) bq /= 2;
  return bq;
}

/**
 * The dense backward's dQ kernel (spec §7.2 over a dense key set): per query, delta = dO . O (written out for the
 * dK/dV kernel), then over staged K/V chunks P = exp(scale q . k - lse), dS = P (dO . v - delta), dQ += scale dS k.
 * O and lse are the forward's (the merged ones on the additional-KV path).
 */
export function generateDenseBackwardQuery(spec: DenseBackwardSpec): GeneratedKernel {
  checkDims('generateDenseBackwardQuery', spec.dim, spec.dimV);
  const key = kernelKey('dense-backward-q', GEN, { ...spec, partial: undefined });
  const T = wgslType(spec.dtype);
  const D = spec.dim;
  const DV = spec.dimV;
  const BK = denseKeyChunk(D, DV);
  const WG = DENSE_QUERIES;
  const bindings = denseBindings('dq', spec.varlen);
  const code = `${queryKernelHead(key, spec, bindings, DENSE_BACKWARD_UNIFORMS)}
  var q: array<f32, ${D}>;
  for (var c = 0u; c < D; c++) { q[c] = f32(query[qrow * D + c]); }
  var go: array<f32, ${DV}>;
  var dl = 0.0;
  for (var c = 0u; c < DV; c++) {
    go[c] = f32(grad_output[qrow * DV + c]);
    dl += go[c] * f32(output[qrow * DV + c]);
  }
  let l = lse[qrow];
  var dq: array<f32, ${D}>;
${queryKeyRanges(spec, WG)}
  for (var k0 = u0; k0 < u1; k0 += BK) {
${stageKv(WG)}
    for (var jj = lo; jj < hi; jj++) {
      var s = 0.0;
      for (var c = 0u; c < D; c++) { s += q[c] * ks[jj * D + c]; }
      let p = exp(params.scale * s - l);
      var dp = 0.0;
      for (var c = 0u; c < DV; c++) { dp += go[c] * vs[jj * DV + c]; }
      let ds = params.scale * p * (dp - dl);
      for (var c = 0u; c < D; c++) { dq[c] += ds * ks[jj * D + c]; }
    }
    workgroupBarrier();
  }
  if (valid) {
    for (var c = 0u; c < D; c++) { grad_query[qrow * D + c] = ${T}(${spec.accumulate === true ? `f32(grad_query[qrow * D + c]) + ` : ''}dq[c]); }
    delta[qrow] = dl;
  }
}
`;
  return denseKernel(key, code, bindings, DENSE_BACKWARD_UNIFORMS, 4 * BK * (D + DV), spec.dtype);
}

/**
 * The dense backward's dK/dV kernel: a workgroup of 64 invocations owns 64 consecutive keys of one (batch, key head);
 * each invocation one key. The query rows of the head group (every query head h with h / (H / H_kv) = its key head,
 * over the split's query positions) are staged in chunks with their dO, lse and delta; per key and query
 * P = exp(scale q . k - lse), dV += P dO, dS = P (dO . v - delta), dK += scale dS q. Fixed order, no atomics: with
 * `partial`, each split (grid y) writes its own f32 partial sums, which `generateDenseGradReduce` adds in order.
 */
export function generateDenseBackwardKv(spec: DenseBackwardSpec): GeneratedKernel {
  checkDims('generateDenseBackwardKv', spec.dim, spec.dimV);
  const key = kernelKey('dense-backward-kv', GEN, { ...spec, accumulate: undefined });
  const T = wgslType(spec.dtype);
  const D = spec.dim;
  const DV = spec.dimV;
  const BQ = denseQueryChunk(D, DV);
  const WG = DENSE_QUERIES;
  const partial = spec.partial === true;
  const bindings = denseBindings('dkv', spec.varlen);
  const OUT = partial ? 'f32' : T;
  const code = `// ${key}
${enableDirectives(spec.dtype)}${denseDecls(bindings, T, partial ? ['grad_key', 'grad_value'] : [])}
${uniformDecl(DENSE_BACKWARD_UNIFORMS, bindings.length)}
${varlenHelpers(spec.varlen)}const D = ${D}u;
const DV = ${DV}u;
const BQ = ${BQ}u;
var<workgroup> qs: array<f32, ${BQ * D}>;
var<workgroup> gs: array<f32, ${BQ * DV}>;
var<workgroup> ls: array<f32, ${BQ}>;
var<workgroup> dls: array<f32, ${BQ}>;

${STAGED_ROW_FN}
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
${KEY_WALK_IDS}  let j = wg.x * ${WG}u + lid;
  let valid = j < params.keys;
  let krow = (b * params.keys + min(j, params.keys - 1u)) * params.heads_kv + hk;
  var k: array<f32, ${D}>;
  for (var c = 0u; c < D; c++) { k[c] = f32(key[krow * D + c]); }
  var v: array<f32, ${DV}>;
  for (var c = 0u; c < DV; c++) { v[c] = f32(value[krow * DV + c]); }
  var dk: array<f32, ${D}>;
  var dv: array<f32, ${DV}>;
  // The query positions any key of this workgroup is seen by, [u0, u1) (causal: from the first key's position on),
  // this split's share of them, and this key's own: its sequence's [cq0, cq1), and its position kpos in it.
${keyQueryRanges(spec, WG)}
${SPLIT_ROWS}  for (var r0 = 0u; r0 < n_rows; r0 += BQ) {
    for (var e = lid; e < BQ * D; e += ${WG}u) {
      let r = r0 + e / D;
      let qrow = staged_row(row_base, min(r, n_rows - 1u), hk, group);
      qs[e] = select(0.0, f32(query[qrow * D + e % D]), r < n_rows);
    }
    for (var e = lid; e < BQ * DV; e += ${WG}u) {
      let r = r0 + e / DV;
      let qrow = staged_row(row_base, min(r, n_rows - 1u), hk, group);
      gs[e] = select(0.0, f32(grad_output[qrow * DV + e % DV]), r < n_rows);
    }
    for (var e = lid; e < BQ; e += ${WG}u) {
      let qrow = staged_row(row_base, min(r0 + e, n_rows - 1u), hk, group);
      ls[e] = lse[qrow];
      dls[e] = delta[qrow];
    }
    workgroupBarrier();
    let rn = min(BQ, n_rows - r0);
    if (valid) {
      for (var rr = 0u; rr < rn; rr++) {
        let qi = q_lo + (r0 + rr) / group;
        if (qi < cq0 || qi >= cq1${spec.causal ? ' || qi - cq0 < kpos' : ''}) { continue; }
        var s = 0.0;
        for (var c = 0u; c < D; c++) { s += k[c] * qs[rr * D + c]; }
        let p = exp(params.scale * s - ls[rr]);
        var dp = 0.0;
        for (var c = 0u; c < DV; c++) {
          let g = gs[rr * DV + c];
          dv[c] += p * g;
          dp += g * v[c];
        }
        let ds = params.scale * p * (dp - dls[rr]);
        for (var c = 0u; c < D; c++) { dk[c] += ds * qs[rr * D + c]; }
      }
    }
    workgroupBarrier();
  }
  if (valid) {
    let ko = ${partial ? 'wg.y * params.k_elems + ' : ''}krow * D;
    let vo = ${partial ? 'wg.y * params.v_elems + ' : ''}krow * DV;
    for (var c = 0u; c < D; c++) { grad_key[ko + c] = ${OUT}(dk[c]); }
    for (var c = 0u; c < DV; c++) { grad_value[vo + c] = ${OUT}(dv[c]); }
  }
}
`;
  return denseKernel(key, code, bindings, DENSE_BACKWARD_UNIFORMS, 4 * BQ * (D + DV + 2), spec.dtype);
}

export const DENSE_REDUCE_UNIFORMS: readonly UniformField[] = [
  { name: 'elems_k', type: 'u32' },
  { name: 'elems_v', type: 'u32' },
  { name: 'splits', type: 'u32' },
  /** Workgroups along x of the folded grid. */
  { name: 'groups_x', type: 'u32' },
];

/**
 * Sum `splits` f32 partials of dK (`elems_k` values each) and of dV (`elems_v`), in one fixed order, into the
 * gradients (their dtype): grid z 0 reduces dK's, 1 dV's, one value per invocation, four partials in flight. One
 * dispatch for both since session 24: on an H200 it takes what one of the two did (64 splits: 10.3 against 10.2 + 10.4
 * us; that kernel loaded sixteen partials per step, not four: no faster than the old loop of four, so the loop stays
 * four), and na2d 64x64 K=7 with 16 extra tokens, backward, went 158.6-160.3 -> 149.8-150.5 us.
 */
export function generateDenseGradReduce(spec: { readonly dtype: GpuDType }): GeneratedKernel {
  const key = kernelKey('dense-grad-reduce-kv', GEN, spec);
  const T = wgslType(spec.dtype);
  const bindings: StorageBinding[] = [
    { name: 'partial_k', access: 'read' },
    { name: 'partial_v', access: 'read' },
    { name: 'grad_key', access: 'read_write' },
    { name: 'grad_value', access: 'read_write' },
  ];
  const x4 = (arr: string, first: number): string => `vec4<f32>(${[0, 1, 2, 3].map((i) => `${arr}[(s + ${first + i}u) * n + e]`).join(', ')})`;
  // One tensor's sum: four sums in flight (splits s = 0, 1, 2, 3 mod 4), added in one fixed order (deterministic).
  const sum = (partial: string, out: string, elems: string): string => `    let n = ${elems};
    if (e >= n) { return; }
    var acc = vec4<f32>(0.0);
    var s = 0u;
    for (; s + 4u <= params.splits; s += 4u) { acc += ${x4(partial, 0)}; }
    for (; s < params.splits; s++) { acc.x += ${partial}[s * n + e]; }
    ${out}[e] = ${T}((acc.x + acc.y) + (acc.z + acc.w));`;
  const code = `// ${key}
${enableDirectives(spec.dtype)}@group(0) @binding(0) var<storage, read> partial_k: array<f32>;
@group(0) @binding(1) var<storage, read> partial_v: array<f32>;
@group(0) @binding(2) var<storage, read_write> grad_key: array<${T}>;
@group(0) @binding(3) var<storage, read_write> grad_value: array<${T}>;
${uniformDecl(DENSE_REDUCE_UNIFORMS, bindings.length)}
@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let e = (wg.x + wg.y * params.groups_x) * 64u + lid;
  if (wg.z == 0u) {
${sum('partial_k', 'grad_key', 'params.elems_k')}
  } else {
${sum('partial_v', 'grad_value', 'params.elems_v')}
  }
}
`;
  return denseKernel(key, code, bindings, DENSE_REDUCE_UNIFORMS, 0, spec.dtype);
}
