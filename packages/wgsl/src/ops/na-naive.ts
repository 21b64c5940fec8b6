/**
 * Naive fused NA forward: the benchmark's regression baseline ("our own naive kernel"), not a user path.
 *
 * Deliberately simple: one invocation per (batch, query token, head), no workgroup memory, no tiling. Each
 * invocation walks its exact window slot by slot (the `na_window_a` math every kernel shares), re-reading the
 * query row and every key and value row from global memory, scalar loads, f32 math, online softmax in f32
 * registers. Any rank, f32/f16 storage, dilation, causal, stride, GQA/MQA, rpb and logsumexp.
 *
 * Baked (spec, key): rank, kernel size, causal per axis, head dims, dtype, rpb/lse flags.
 * Uniforms: batch, heads, kv heads, gqa, tokens, total invocations, scale, per-axis length/dilation/stride.
 */
import { formatShape, NattenArgumentError, type NaRank, product } from '@natten-web/core';
import { dtypeFeatures, enableDirectives, wgslType } from '../dtype.ts';
import { type GeneratedKernel, kernelKey, type StorageBinding, type UniformField, uniformDecl } from '../kernel.ts';
import { rpbWindowProblem } from '../snippets/fused-index.ts';
import { windowFunctions } from '../snippets/window.ts';
import {
  FORWARD_SHAPE_UNIFORMS,
  type FusedForwardSpec,
  forwardAxisUniformFields,
  forwardProblemUniforms,
  fusedForwardBindings,
} from './na-fused-forward.ts';

const FAMILY = 'na-naive-forward';
const GEN = 1;

/** Invocations per workgroup (1-D). */
export const NAIVE_WORKGROUP_SIZE = 64;

/** Largest value head dim: the output accumulator is a private f32 array of this many entries. */
export const NAIVE_MAX_DIM_V = 1024;

/** What the naive kernel bakes in: the fused forward's window, head dims, dtype and rpb/lse flags; no tiles. */
export type NaiveForwardSpec = Pick<FusedForwardSpec, 'rank' | 'kernelSize' | 'causal' | 'dim' | 'dimV' | 'dtype' | 'hasRpb' | 'hasLse'>;

/** Validate a spec before generating (internal consistency only). */
export function checkNaiveForwardSpec(spec: NaiveForwardSpec): void {
  const bad = (what: string): never => {
    throw new NattenArgumentError(`generateNaiveForward: ${what}`);
  };
  const r = spec.rank;
  if (r !== 1 && r !== 2 && r !== 3) bad(`rank must be 1, 2 or 3, got ${String(r)}`);
  if (spec.kernelSize.length !== r || spec.causal.length !== r) bad(`kernelSize and causal need ${r} entries, got ${formatShape(spec.kernelSize)} and ${spec.causal.length}`);
  if (spec.kernelSize.some((k) => !Number.isInteger(k) || k < 2)) bad(`kernel sizes must be integers >= 2, got ${formatShape(spec.kernelSize)}`);
  if (!Number.isInteger(spec.dim) || spec.dim < 1) bad(`head_dim must be a positive integer, got ${spec.dim}`);
  if (!Number.isInteger(spec.dimV) || spec.dimV < 1 || spec.dimV > NAIVE_MAX_DIM_V) {
    bad(`value head_dim must be an integer in 1..${NAIVE_MAX_DIM_V} (private f32 accumulator), got ${spec.dimV}`);
  }
  const rpb = rpbWindowProblem(spec);
  if (rpb !== undefined) bad(rpb);
}

/** Uniform fields, in struct order. */
export function naiveForwardUniformFields(rank: NaRank): UniformField[] {
  const f: UniformField[] = [...FORWARD_SHAPE_UNIFORMS, { name: 'total', type: 'u32' }, { name: 'scale', type: 'f32' }];
  for (let a = 0; a < rank; a++) f.push(...forwardAxisUniformFields(a));
  return f;
}

/** Uniform values and the number of workgroups (before folding) for one call. */
export function naiveForwardDispatch(problem: {
  readonly rank: NaRank;
  readonly batch: number;
  readonly spatial: readonly number[];
  readonly heads: number;
  readonly headsKv: number;
  readonly scale: number;
  readonly params: { readonly dilation: readonly number[]; readonly stride: readonly number[] };
}): { uniforms: Record<string, number>; workgroups: number } {
  const tokens = product(problem.spatial);
  const total = problem.batch * tokens * problem.heads;
  if (total > 0xffffffff) {
    throw new NattenArgumentError(`naive forward: batch*tokens*heads=${total} exceeds the u32 invocation index`);
  }
  const u: Record<string, number> = { ...forwardProblemUniforms(problem), total, scale: problem.scale };
  return { uniforms: u, workgroups: Math.ceil(total / NAIVE_WORKGROUP_SIZE) };
}

/** Storage bindings in binding order: query, key, value, [rpb], output, [logsumexp] (same order as the fused kernel). */
export function naiveForwardBindings(spec: Pick<NaiveForwardSpec, 'hasRpb' | 'hasLse'>): StorageBinding[] {
  return fusedForwardBindings(spec);
}

/** Generate the naive kernel for a spec. Pure: same spec, same text. */
export function generateNaiveForward(spec: NaiveForwardSpec): GeneratedKernel {
  checkNaiveForwardSpec(spec);
  const key = kernelKey(FAMILY, GEN, spec);
  const r = spec.rank;
  const axes = Array.from({ length: r }, (_, a) => a);
  const T = wgslType(spec.dtype);
  const bindings = naiveForwardBindings(spec);
  const uniforms = naiveForwardUniformFields(r);
  const elem = (name: string): string => (name === 'logsumexp' ? 'f32' : T);
  const decls = bindings.map((b, i) => `@group(0) @binding(${i}) var<storage, ${b.access}> ${b.name}: array<${elem(b.name)}>;`).join('\n');
  const rpbPer = product(spec.kernelSize.map((k) => 2 * k - 1));
  let rpbIdx = `u32((j_0 - x_0) / params.dil_0 + KERNEL_SIZE_0 - 1)`;
  for (let a = 1; a < r; a++) rpbIdx = `(${rpbIdx}) * u32(2 * KERNEL_SIZE_${a} - 1) + u32((j_${a} - x_${a}) / params.dil_${a} + KERNEL_SIZE_${a} - 1)`;
  let ktok = `u32(j_0)`;
  for (let a = 1; a < r; a++) ktok = `(${ktok}) * u32(params.len_${a}) + u32(j_${a})`;
  const ind = (n: number): string => '  '.repeat(n);
  // Nested slot loops, axis 0 outermost (row-major key order, like the CPU reference).
  const open = axes
    .map((a) => `${ind(a + 1)}for (var t_${a} = 0; t_${a} < w_${a}.y; t_${a}++) {\n${ind(a + 2)}let j_${a} = w_${a}.x + t_${a} * params.dil_${a};`)
    .join('\n');
  const close = axes
    .slice()
    .reverse()
    .map((a) => `${ind(a + 1)}}`)
    .join('\n');
  const inner = ind(r + 1);
  const code = `// ${key}
${enableDirectives(spec.dtype).trimEnd()}
const RANK: u32 = ${r}u;
${axes.map((a) => `const KERNEL_SIZE_${a}: i32 = ${spec.kernelSize[a]};`).join('\n')}
${axes.map((a) => `const IS_CAUSAL_${a}: bool = ${spec.causal[a] ? 'true' : 'false'};`).join('\n')}
const HEAD_DIM: u32 = ${spec.dim}u;
const HEAD_DIM_V: u32 = ${spec.dimV}u;
const HAS_RPB: bool = ${spec.hasRpb};
const HAS_LSE: bool = ${spec.hasLse};
const RPB_PER_HEAD: u32 = ${rpbPer}u;
const WORKGROUP_SIZE: u32 = ${NAIVE_WORKGROUP_SIZE}u;
const NEG: f32 = -1e30;

${decls}
${uniformDecl(uniforms, bindings.length)}
${windowFunctions(spec.kernelSize, spec.causal)}
@compute @workgroup_size(${NAIVE_WORKGROUP_SIZE})
fn main(@builtin(workgroup_id) wg_id: vec3<u32>, @builtin(num_workgroups) wg_num: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let idx = (wg_id.x + wg_id.y * wg_num.x) * WORKGROUP_SIZE + lid;
  if (idx >= params.total) { return; }
  // idx is the query row: ((b * tokens + tok) * heads + h)
  let h = idx % params.heads;
  let bt = idx / params.heads;
  let tok = bt % params.tokens;
  let b = bt / params.tokens;
  let hk = h / params.gqa;
  var rest = tok;
${axes
  .slice()
  .reverse()
  .map((a) => `  let x_${a} = i32(rest % u32(params.len_${a}));\n  rest = rest / u32(params.len_${a});`)
  .join('\n')}
${axes.map((a) => `  let w_${a} = na_window_${a}(x_${a}, params.len_${a}, params.dil_${a}, params.str_${a});`).join('\n')}
  let qbase = idx * HEAD_DIM;
  var m = NEG;
  var l = 0.0;
  var o: array<f32, ${spec.dimV}>;
  for (var c = 0u; c < HEAD_DIM_V; c++) { o[c] = 0.0; }
${open}
${inner}let krow = (b * params.tokens + ${ktok}) * params.heads_kv + hk;
${inner}let kbase = krow * HEAD_DIM;
${inner}var s = 0.0;
${inner}for (var c = 0u; c < HEAD_DIM; c++) { s = s + f32(query[qbase + c]) * f32(key[kbase + c]); }
${inner}s = s * params.scale;
${spec.hasRpb ? `${inner}s = s + f32(rpb[h * RPB_PER_HEAD + ${rpbIdx}]);\n` : ''}${inner}let m_new = max(m, s);
${inner}let alpha = exp(m - m_new);
${inner}let p = exp(s - m_new);
${inner}l = l * alpha + p;
${inner}m = m_new;
${inner}let vbase = krow * HEAD_DIM_V;
${inner}for (var c = 0u; c < HEAD_DIM_V; c++) { o[c] = o[c] * alpha + p * f32(value[vbase + c]); }
${close}
  let inv_l = 1.0 / l;
  let obase = idx * HEAD_DIM_V;
  for (var c = 0u; c < HEAD_DIM_V; c++) { output[obase + c] = ${T}(o[c] * inv_l); }
${spec.hasLse ? '  logsumexp[idx] = m + log(l);\n' : ''}}
`;
  return {
    key,
    code,
    entryPoint: 'main',
    workgroupSize: [NAIVE_WORKGROUP_SIZE, 1, 1],
    bindings,
    uniforms,
    workgroupBytes: 0,
    features: dtypeFeatures(spec.dtype),
  };
}
