/**
 * Generators behind `na{1,2,3}d_qk_forward` / `na{1,2,3}d_qk_backward` (spec §3.4, §3.5, §5, §7.4).
 * - forward: PN kernel (q.k + rpb; -inf in invalid causal slots; no scaling);
 * - backward: NN kernel on (d_attn, key) for dQ, IN kernel on (d_attn, query) for dK, and the
 *   deterministic d_rel_pos_bias reduction below.
 */
import { enableDirectives, type GpuDType, wgslType } from '../dtype.ts';
import { type GeneratedKernel, kernelKey, type UniformField, uniformDecl } from '../kernel.ts';
import {
  type BmmKernelSpec,
  defaultBmmChunk,
  defaultBmmTile,
  generateBmmKernel,
  padAxes,
} from '../snippets/bmm.ts';
import { windowFunctions } from '../snippets/window.ts';

/** What a BMM op bakes into its kernels (everything else is a uniform). */
export interface BmmOpSpec {
  readonly rank: 1 | 2 | 3;
  readonly kernelSize: readonly number[];
  readonly causal: readonly boolean[];
  readonly dim: number;
  readonly dtype: GpuDType;
  /** Tile per real axis (default 64 / 8x8 / 4x4x4 tokens). */
  readonly tile?: readonly number[] | undefined;
  /** Rows staged per chunk (default: about 8 KiB of f32 rows). */
  readonly chunk?: number | undefined;
}

export function bmmSpec(
  op: BmmOpSpec,
  kind: BmmKernelSpec['kind'],
  extra: { rpb?: boolean; fill?: 'neg-inf' | 'zero' } = {},
): BmmKernelSpec {
  return {
    kind,
    rank: op.rank,
    kernelSize: [...op.kernelSize],
    causal: [...op.causal],
    dim: op.dim,
    dtype: op.dtype,
    tile: [...(op.tile ?? defaultBmmTile(op.rank))],
    chunk: op.chunk ?? defaultBmmChunk(op.dim),
    ...(extra.rpb === true ? { rpb: true } : {}),
    ...(extra.fill !== undefined && kind === 'pn' && op.causal.some((c) => c) ? { fill: extra.fill } : {}),
  };
}

/** qk_forward: `attn = q.k (+ rpb)`, -inf in invalid causal slots. Bindings: query, key, (rpb), attn. */
export function generateQkForward(op: BmmOpSpec & { readonly rpb: boolean }): GeneratedKernel {
  return generateBmmKernel(bmmSpec(op, 'pn', { rpb: op.rpb, fill: 'neg-inf' }));
}

/** qk_backward, dQ = sum_t dA[x,t] k_{n_t(x)}. Bindings: grad_attn, key, grad_query. */
export function generateQkBackwardQuery(op: BmmOpSpec): GeneratedKernel {
  return generateBmmKernel(bmmSpec(op, 'nn'));
}

/** qk_backward, dK = sum_{x: j in N(x)} dA[x, t(x,j)] q_x. Bindings: grad_attn, query, grad_key. */
export function generateQkBackwardKey(op: BmmOpSpec): GeneratedKernel {
  return generateBmmKernel(bmmSpec(op, 'in'));
}

export interface RpbGradSpec {
  readonly rank: 1 | 2 | 3;
  readonly kernelSize: readonly number[];
  readonly dtype: GpuDType;
  /** Invocations per workgroup (a power of two). */
  readonly workgroupSize?: number | undefined;
}

const RPB_GEN = 1;

export const RPB_GRAD_UNIFORMS: readonly UniformField[] = [
  { name: 'batch', type: 'i32' },
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
];

/**
 * d_rel_pos_bias (spec §5): `d_rpb[h, r] += sum_b sum_x sum_{t : r(x, n_t(x)) = r} d_attn[b,h,x,t]`.
 * One workgroup per (head, bias cell); its invocations stride over (b, x) in a fixed assignment and
 * reduce with a fixed tree in workgroup memory: deterministic, no atomics. RPB means non-causal windows.
 * Bindings: grad_attn, grad_rpb (read_write: accumulated into, like NATTEN). Dispatch heads * prod(2K-1)
 * workgroups (fold with `wid.x + wid.y * nwg.x`).
 */
export function generateRpbGrad(spec: RpbGradSpec): GeneratedKernel {
  const wg = spec.workgroupSize ?? 64;
  const canonical = { rank: spec.rank, kernelSize: [...spec.kernelSize], dtype: spec.dtype, workgroupSize: wg };
  const key = kernelKey('na-rpb-grad', RPB_GEN, canonical);
  const T = wgslType(spec.dtype);
  const K = padAxes(spec.kernelSize, 1);
  const R = K.map((k) => 2 * k - 1);
  const uniforms = [...RPB_GRAD_UNIFORMS];
  const code = `${enableDirectives(spec.dtype)}// ${key}
// d_rel_pos_bias reduction, rank ${spec.rank} (padded to 3 axes), ${spec.dtype} storage, f32 sums.
const RANK: i32 = ${spec.rank};
const K0: i32 = ${K[0]};
const K1: i32 = ${K[1]};
const K2: i32 = ${K[2]};
const P: i32 = ${K[0] * K[1] * K[2]};
const R0: i32 = ${R[0]};
const R1: i32 = ${R[1]};
const R2: i32 = ${R[2]};
const CELLS: i32 = ${R[0] * R[1] * R[2]};
const WG: i32 = ${wg};

@group(0) @binding(0) var<storage, read> grad_attn: array<${T}>;
@group(0) @binding(1) var<storage, read_write> grad_rpb: array<${T}>;
${uniformDecl(uniforms, 2)}
var<workgroup> partial: array<f32, ${wg}>;

${windowFunctions(K, [false, false, false])}
@compute @workgroup_size(${wg})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lidx: u32) {
  let wgi = i32(wid.x + wid.y * nwg.x);
  if (wgi >= params.heads * CELLS) { return; }
  let h = wgi / CELLS;
  let cell = wgi % CELLS;
  // Relative offset (group units) of this cell per axis.
  let o0 = cell / (R1 * R2) - (K0 - 1);
  let o1 = (cell / R2) % R1 - (K1 - 1);
  let o2 = cell % R2 - (K2 - 1);
  let N = params.L0 * params.L1 * params.L2;
  let lid = i32(lidx);
  var sum = 0.0;
  for (var e = lid; e < params.batch * N; e += WG) {
    let b = e / N;
    let tok = e % N;
    let x0 = tok / (params.L1 * params.L2);
    let x1 = (tok / params.L2) % params.L1;
    let x2 = tok % params.L2;
    let w0 = na_window_0(x0, params.L0, params.d0, params.s0);
    let w1 = na_window_1(x1, params.L1, params.d1, params.s1);
    let w2 = na_window_2(x2, params.L2, params.d2, params.s2);
    // Slot of key x + o*d in x's window, per axis (valid iff 0 <= t < count).
    let t0 = (x0 + o0 * params.d0 - w0.x) / params.d0;
    let t1 = (x1 + o1 * params.d1 - w1.x) / params.d1;
    let t2 = (x2 + o2 * params.d2 - w2.x) / params.d2;
    let r0 = x0 + o0 * params.d0 - w0.x;
    let r1 = x1 + o1 * params.d1 - w1.x;
    let r2 = x2 + o2 * params.d2 - w2.x;
    if (r0 >= 0 && t0 < w0.y && r1 >= 0 && t1 < w1.y && r2 >= 0 && t2 < w2.y) {
      sum = sum + f32(grad_attn[((b * params.heads + h) * N + tok) * P + (t0 * K1 + t1) * K2 + t2]);
    }
  }
  partial[lid] = sum;
  workgroupBarrier();
  for (var half = WG / 2; half > 0; half = half / 2) {
    if (lid < half) { partial[lid] = partial[lid] + partial[lid + half]; }
    workgroupBarrier();
  }
  if (lid == 0) {
    let idx = h * CELLS + cell;
    grad_rpb[idx] = ${T}(f32(grad_rpb[idx]) + partial[0]);
  }
}
`;
  return {
    key,
    code,
    entryPoint: 'main',
    workgroupSize: [wg, 1, 1],
    bindings: [
      { name: 'grad_attn', access: 'read' },
      { name: 'grad_rpb', access: 'read_write' },
    ],
    uniforms,
    workgroupBytes: wg * 4,
    features: spec.dtype === 'float16' ? ['shader-f16'] : [],
  };
}
