/**
 * Generators behind `na{1,2,3}d_qk_forward` / `na{1,2,3}d_qk_backward` (spec §3.4, §3.5, §5, §7.4).
 * - forward: PN kernel (q.k + rpb; -inf in invalid causal slots; no scaling);
 * - backward: NN kernel on (d_attn, key) for dQ, IN kernel on (d_attn, query) for dK, and the
 *   deterministic two-pass d_rel_pos_bias reduction below (per-tile partials, then a fixed-order sum).
 */
import { dtypeFeatures, enableDirectives, type GpuDType, wgslType } from '../dtype.ts';
import { type GeneratedKernel, kernelKey, type UniformField, uniformDecl } from '../kernel.ts';
import {
  BMM_UNIFORMS,
  type BmmKernelSpec,
  bmmGridDecode,
  bmmTileConsts,
  bmmWindowConsts,
  defaultBmmChunk,
  defaultBmmTile,
  generateBmmKernel,
  padAxes,
} from '../snippets/bmm.ts';
import { windowFunctions } from '../snippets/window.ts';
import { BMM_MMA_CHUNK, generateBmmMmaKernel } from './bmm-mma.ts';

/** What a BMM op bakes into its kernels (everything else is a uniform). */
export interface BmmOpSpec {
  readonly rank: 1 | 2 | 3;
  readonly kernelSize: readonly number[];
  readonly causal: readonly boolean[];
  readonly dim: number;
  readonly dtype: GpuDType;
  /** Tile per real axis (default 64 / 8x8 / 4x4x4 tokens). */
  readonly tile?: readonly number[] | undefined;
  /** Rows staged per chunk (default: about 8 KiB of f32 rows; the tensor-core kernels stage 16). */
  readonly chunk?: number | undefined;
  /**
   * The tensor-core kernels (`generateBmmMmaKernel`): head dim a multiple of 16 up to 128 (float32, through the hi / lo
   * split: up to 64), the default tile. float32 kernels read an extra `scales` binding (`BMM_SPLIT_TENSORS`).
   */
  readonly mma?: boolean | undefined;
}

/**
 * The tensors whose max |x| the float32 tensor-core BMM kernels of an op read from their `scales` binding, in the
 * binding's order (NATTEN's argument names). The runtime fills it with one abs-max dispatch before the op's kernels.
 */
export const BMM_SPLIT_TENSORS = {
  qk_forward: ['query', 'key'],
  qk_backward: ['grad_attn', 'key', 'query'],
  av_forward: ['attn', 'value'],
  av_backward: ['grad_output', 'value', 'attn'],
} as const;

/** A float32 kernel's `scales` entries: its first and walked operands' places in `BMM_SPLIT_TENSORS[op]`. */
export function bmmSplitSlots<O extends keyof typeof BMM_SPLIT_TENSORS>(op: O, first: (typeof BMM_SPLIT_TENSORS)[O][number], walked: (typeof BMM_SPLIT_TENSORS)[O][number]): [number, number] {
  const names: readonly string[] = BMM_SPLIT_TENSORS[op];
  return [names.indexOf(first), names.indexOf(walked)];
}

export function bmmSpec(
  op: BmmOpSpec,
  kind: BmmKernelSpec['kind'],
  extra: { rpb?: boolean; fill?: 'neg-inf' | 'zero'; scales?: readonly [number, number] } = {},
): BmmKernelSpec {
  return {
    kind,
    rank: op.rank,
    kernelSize: [...op.kernelSize],
    causal: [...op.causal],
    dim: op.dim,
    dtype: op.dtype,
    tile: [...(op.tile ?? defaultBmmTile(op.rank))],
    chunk: op.chunk ?? (op.mma === true ? BMM_MMA_CHUNK : defaultBmmChunk(op.dim)),
    ...(extra.rpb === true ? { rpb: true } : {}),
    ...(op.mma === true ? { mma: true } : {}),
    ...(extra.fill !== undefined && kind === 'pn' && op.causal.some((c) => c) ? { fill: extra.fill } : {}),
    ...(op.mma === true && op.dtype === 'float32' && extra.scales ? { scales: extra.scales } : {}),
  };
}

/** A BMM kernel: the tensor-core one where the spec asks for it, else the plain one (same bindings, uniforms, grid). */
export function bmmKernel(spec: BmmKernelSpec): GeneratedKernel {
  return spec.mma === true ? generateBmmMmaKernel(spec) : generateBmmKernel(spec);
}

/** qk_forward: `attn = q.k (+ rpb)`, -inf in invalid causal slots. Bindings: query, key, (rpb), attn. */
export function generateQkForward(op: BmmOpSpec & { readonly rpb: boolean }): GeneratedKernel {
  return bmmKernel(bmmSpec(op, 'pn', { rpb: op.rpb, fill: 'neg-inf', scales: bmmSplitSlots('qk_forward', 'query', 'key') }));
}

/** qk_backward, dQ = sum_t dA[x,t] k_{n_t(x)}. Bindings: grad_attn, key, grad_query. */
export function generateQkBackwardQuery(op: BmmOpSpec): GeneratedKernel {
  return bmmKernel(bmmSpec(op, 'nn', { scales: bmmSplitSlots('qk_backward', 'grad_attn', 'key') }));
}

/** qk_backward, dK = sum_{x: j in N(x)} dA[x, t(x,j)] q_x. Bindings: grad_attn, query, grad_key. */
export function generateQkBackwardKey(op: BmmOpSpec): GeneratedKernel {
  return bmmKernel(bmmSpec(op, 'in', { scales: bmmSplitSlots('qk_backward', 'grad_attn', 'query') }));
}

export interface RpbGradSpec {
  readonly rank: 1 | 2 | 3;
  readonly kernelSize: readonly number[];
  readonly dtype: GpuDType;
  /** Query tile per real axis of the partial pass (default: the BMM tile; its product is the workgroup size). */
  readonly tile?: readonly number[] | undefined;
}

const RPB_GEN = 2;

/** The kernel of one d_rpb pass: entry `main`, a 1-D workgroup of `wg`, reading binding `input`, writing `output`. */
function rpbPassKernel(k: {
  readonly key: string;
  readonly code: string;
  readonly wg: number;
  readonly input: string;
  readonly output: string;
  readonly uniforms: readonly UniformField[];
  readonly workgroupBytes: number;
  readonly dtype: GpuDType;
}): GeneratedKernel {
  return {
    key: k.key,
    code: k.code,
    entryPoint: 'main',
    workgroupSize: [k.wg, 1, 1],
    bindings: [
      { name: k.input, access: 'read' },
      { name: k.output, access: 'read_write' },
    ],
    uniforms: k.uniforms,
    workgroupBytes: k.workgroupBytes,
    features: dtypeFeatures(k.dtype),
  };
}

/** Bias cells per head: prod(2K - 1). */
export function rpbCells(kernelSize: readonly number[]): number {
  return kernelSize.reduce((acc, k) => acc * (2 * k - 1), 1);
}

/**
 * d_rel_pos_bias, pass 1 of 2 (spec §5): per query tile (the BMM kernels' workgroup grid: batch*head x
 * dilation group x tile), the sum of d_attn over the tile's (query, slot) pairs mapping to each bias cell,
 * written to `partial[workgroup * CELLS + cell]` (f32). The tile's windows are staged once; then each
 * invocation owns cells and walks the tile's queries in a fixed order. Every workgroup of the grid writes
 * its row (zeros for tiles past a short dilation group), so the scratch needs no clearing.
 * Bindings: grad_attn, partial. Uniforms: `BMM_UNIFORMS`.
 */
export function generateRpbGradPartial(spec: RpbGradSpec): GeneratedKernel {
  const tile = [...(spec.tile ?? defaultBmmTile(spec.rank))];
  const canonical = { rank: spec.rank, kernelSize: [...spec.kernelSize], dtype: spec.dtype, tile };
  const key = kernelKey('na-rpb-partial', RPB_GEN, canonical);
  const T = wgslType(spec.dtype);
  const K = padAxes(spec.kernelSize, 1);
  const TL = padAxes(tile, 1);
  const wg = TL[0] * TL[1] * TL[2];
  const uniforms = [...BMM_UNIFORMS];
  const code = `${enableDirectives(spec.dtype)}// ${key}
// d_rel_pos_bias partial sums per query tile, rank ${spec.rank} (padded to 3 axes), ${spec.dtype} d_attn, f32 sums.
${bmmWindowConsts(spec.rank, K)}
const CELLS: i32 = ${rpbCells(spec.kernelSize)};
${bmmTileConsts(TL)}

@group(0) @binding(0) var<storage, read> grad_attn: array<${T}>;
@group(0) @binding(1) var<storage, read_write> partial: array<f32>;
${uniformDecl(uniforms, 2)}
// Per query of the tile: (i - start) per axis (group units) and the token (-1: outside the group); valid counts.
var<workgroup> sh_q: array<vec4<i32>, ${wg}>;
var<workgroup> sh_c: array<vec4<i32>, ${wg}>;

${windowFunctions(K, [false, false, false])}
@compute @workgroup_size(${wg})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lidx: u32) {
${bmmGridDecode(false)}
  let lid = i32(lidx);
  let li0 = (tile / (params.tiles1 * params.tiles2)) * TILE_0 + lid / (TILE_1 * TILE_2);
  let li1 = ((tile / params.tiles2) % params.tiles1) * TILE_1 + (lid / TILE_2) % TILE_1;
  let li2 = (tile % params.tiles2) * TILE_2 + lid % TILE_2;
  let N = params.L0 * params.L1 * params.L2;
  var q = vec4<i32>(0, 0, 0, -1);
  var c = vec4<i32>(0, 0, 0, 0);
  if (li0 < n0 && li1 < n1 && li2 < n2) {
    let x0 = li0 * params.d0 + g0;
    let x1 = li1 * params.d1 + g1;
    let x2 = li2 * params.d2 + g2;
    let w0 = na_window_0(x0, params.L0, params.d0, params.s0);
    let w1 = na_window_1(x1, params.L1, params.d1, params.s1);
    let w2 = na_window_2(x2, params.L2, params.d2, params.s2);
    q = vec4<i32>(li0 - (w0.x - g0) / params.d0, li1 - (w1.x - g1) / params.d1, li2 - (w2.x - g2) / params.d2, (x0 * params.L1 + x1) * params.L2 + x2);
    c = vec4<i32>(w0.y, w1.y, w2.y, 0);
  }
  sh_q[lid] = q;
  sh_c[lid] = c;
  workgroupBarrier();
  for (var cell = lid; cell < CELLS; cell += WG) {
    // Relative offset of the cell (group units): the key of slot t is start + t, so t = (i - start) + o.
    let o0 = cell / (R1 * R2) - (K0 - 1);
    let o1 = (cell / R2) % R1 - (K1 - 1);
    let o2 = cell % R2 - (K2 - 1);
    var sum = 0.0;
    for (var k = 0; k < WG; k++) {
      let m = sh_q[k];
      let cn = sh_c[k];
      let t0 = m.x + o0;
      let t1 = m.y + o1;
      let t2 = m.z + o2;
      if (m.w >= 0 && t0 >= 0 && t0 < cn.x && t1 >= 0 && t1 < cn.y && t2 >= 0 && t2 < cn.z) {
        sum = sum + f32(grad_attn[(bh * N + m.w) * P + (t0 * K1 + t1) * K2 + t2]);
      }
    }
    partial[wgi * CELLS + cell] = sum;
  }
}
`;
  return rpbPassKernel({ key, code, wg, input: 'grad_attn', output: 'partial', uniforms, workgroupBytes: wg * 32, dtype: spec.dtype });
}

export const RPB_REDUCE_UNIFORMS: readonly UniformField[] = [
  { name: 'batch', type: 'i32' },
  { name: 'heads', type: 'i32' },
  { name: 'rows', type: 'i32' },
];

/**
 * d_rel_pos_bias, pass 2 of 2: one workgroup per (head, cell) sums the partial rows of that head
 * (`rows` = dilation groups x tiles per batch*head, over every batch) with a fixed assignment and a fixed
 * tree, then ACCUMULATES into grad_rpb (`+=`, like NATTEN). Deterministic, no atomics.
 * Bindings: partial, grad_rpb. Dispatch heads * CELLS workgroups (folded).
 */
export function generateRpbGradReduce(spec: Omit<RpbGradSpec, 'tile'> & { readonly workgroupSize?: number | undefined }): GeneratedKernel {
  const wg = spec.workgroupSize ?? 64;
  const canonical = { rank: spec.rank, kernelSize: [...spec.kernelSize], dtype: spec.dtype, workgroupSize: wg };
  const key = kernelKey('na-rpb-reduce', RPB_GEN, canonical);
  const T = wgslType(spec.dtype);
  const cells = rpbCells(spec.kernelSize);
  const uniforms = [...RPB_REDUCE_UNIFORMS];
  const code = `${enableDirectives(spec.dtype)}// ${key}
// d_rel_pos_bias: fixed-order reduction of the per-tile partial sums, accumulated into ${spec.dtype} grad_rpb.
const CELLS: i32 = ${cells};
const WG: i32 = ${wg};

@group(0) @binding(0) var<storage, read> partial: array<f32>;
@group(0) @binding(1) var<storage, read_write> grad_rpb: array<${T}>;
${uniformDecl(uniforms, 2)}
var<workgroup> acc: array<f32, ${wg}>;

@compute @workgroup_size(${wg})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lidx: u32) {
  let wgi = i32(wid.x + wid.y * nwg.x);
  if (wgi >= params.heads * CELLS) { return; }
  let h = wgi / CELLS;
  let cell = wgi % CELLS;
  let lid = i32(lidx);
  var sum = 0.0;
  for (var e = lid; e < params.batch * params.rows; e += WG) {
    let b = e / params.rows;
    let row = ((b * params.heads + h) * params.rows + e % params.rows);
    sum = sum + partial[row * CELLS + cell];
  }
  acc[lid] = sum;
  workgroupBarrier();
  for (var half = WG / 2; half > 0; half = half / 2) {
    if (lid < half) { acc[lid] = acc[lid] + acc[lid + half]; }
    workgroupBarrier();
  }
  if (lid == 0) {
    let idx = h * CELLS + cell;
    grad_rpb[idx] = ${T}(f32(grad_rpb[idx]) + acc[0]);
  }
}
`;
  return rpbPassKernel({ key, code, wg, input: 'partial', output: 'grad_rpb', uniforms, workgroupBytes: wg * 4, dtype: spec.dtype });
}
