/**
 * Max |x| of three float32 tensors in one dispatch (the split tensor-core forward's per-tensor scales, see
 * `FusedForwardMmaSpec.split`), or of five (the split backwards': and dO, O). Workgroup (x, y): tensor y (0 query,
 * 1 key, 2 value, 3 grad_output, 4 output), vec4s x * 256 + lid with a
 * stride of all x-workgroups, four independent loads per loop step (a load per step left each invocation waiting
 * out one memory latency per vec4). A workgroup reduces into a workgroup atomic, then one atomicMax per workgroup into
 * `scales[y]` (the f32 bits of a non-negative float order as u32 do; NaN orders above +inf). `scales` must be zero
 * before the dispatch (the runtime's `DispatchCommand.clear`).
 */
import { type GeneratedKernel, kernelKey, type StorageBinding, type UniformField, uniformDecl } from '../kernel.ts';

const GEN = 3;

/** Threads per workgroup of the abs-max kernel. */
export const ABS_MAX_WORKGROUP = 256;
/** Vec4s each invocation loads per step of its grid-stride loop. */
export const ABS_MAX_UNROLL = 4;

/** WGSL of one loop step: `ABS_MAX_UNROLL` vec4s a stride apart (the first in range, the rest clamped and dropped past `n`). */
function unrolled(arr: string, n: string, f: string): string {
  return Array.from({ length: ABS_MAX_UNROLL }, (_, u) =>
    u === 0
      ? `      m = max(m, bitcast<u32>(${f}(${arr}[i])));`
      : `      { let j = i + ${u}u * stride; m = max(m, select(0u, bitcast<u32>(${f}(${arr}[min(j, params.${n} - 1u)])), j < params.${n})); }`,
  ).join('\n');
}

/** The tensors an abs-max dispatch reads, in grid-row order: the forward's three, the backward's five (dO, then O). */
const ABS_MAX_TENSORS = [
  { name: 'query', n: 'n_q' },
  { name: 'key', n: 'n_k' },
  { name: 'value', n: 'n_v' },
  { name: 'grad_output', n: 'n_g' },
  { name: 'output', n: 'n_o' },
] as const;

/**
 * The abs-max kernel over three tensors (query, key, value: the split forward) or five (and grad_output, output:
 * the split backwards, whose dS bound needs max |dO| and max |O|), max |x| of tensor y into `scales[y]`. The tensors
 * are read as vec4s (counts in vec4s), or with `scalar` as single floats (counts in floats: any length, such as the
 * BMM ops' attention tensors), whose max is over the finite values only: NATTEN fills invalid (causal) attention
 * slots with -inf, which no scale can bring into range, and which the kernels reading it never multiply.
 */
export function generateAbsMax(spec: { readonly tensors?: 3 | 5; readonly scalar?: boolean } = {}): GeneratedKernel {
  const count = spec.tensors ?? 3;
  const scalar = spec.scalar === true;
  const key = kernelKey(`abs-max${count}${scalar ? '-scalar' : ''}`, GEN, {});
  const tensors = ABS_MAX_TENSORS.slice(0, count);
  const bindings: StorageBinding[] = [...tensors.map((t) => ({ name: t.name, access: 'read' as const })), { name: 'scales', access: 'read_write' }];
  const uniforms: UniformField[] = tensors.map((t) => ({ name: t.n, type: 'u32' }));
  // Grid row y reads tensor y: an if / else-if chain, the last tensor in the final else.
  const rows = tensors
    .map((t, y) => {
      const head = y === 0 ? `  if (wg.y == 0u) {` : y === tensors.length - 1 ? '  } else {' : `  } else if (wg.y == ${y}u) {`;
      return `${head}
    for (var i = wg.x * ${ABS_MAX_WORKGROUP}u + lid; i < params.${t.n}; i += ${ABS_MAX_UNROLL}u * stride) {
${unrolled(t.name, t.n, scalar ? 'finite_abs' : 'vmax')}
    }`;
    })
    .join('\n');
  const code = `// ${key}
${tensors.map((t, i) => `@group(0) @binding(${i}) var<storage, read> ${t.name}: array<${scalar ? 'f32' : 'vec4<f32>'}>;`).join('\n')}
@group(0) @binding(${count}) var<storage, read_write> scales: array<atomic<u32>>;
${uniformDecl(uniforms, bindings.length)}
var<workgroup> wmax: atomic<u32>;

${
  scalar
    ? `fn finite_abs(x: f32) -> f32 {
  // Exponent bits all ones: +-inf or NaN.
  return select(abs(x), 0.0, (bitcast<u32>(x) & 0x7f800000u) == 0x7f800000u);
}`
    : `fn vmax(v: vec4<f32>) -> f32 {
  let a = abs(v);
  return max(max(a.x, a.y), max(a.z, a.w));
}`
}

@compute @workgroup_size(${ABS_MAX_WORKGROUP})
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  // The workgroup max starts at zero by this store, not by Dawn's zero-initialization (which Node may turn off).
  if (lid == 0u) { atomicStore(&wmax, 0u); }
  let stride = nwg.x * ${ABS_MAX_WORKGROUP}u;
  var m = 0u;
${rows}
  }
  workgroupBarrier();
  atomicMax(&wmax, m);
  workgroupBarrier();
  if (lid == 0u) { atomicMax(&scales[wg.y], atomicLoad(&wmax)); }
}
`;
  return { key, code, entryPoint: 'main', workgroupSize: [ABS_MAX_WORKGROUP, 1, 1], bindings, uniforms, workgroupBytes: 4, features: [] };
}
