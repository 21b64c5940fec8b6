/**
 * Max |x| of three float32 tensors in one dispatch (the split tensor-core forward's per-tensor scales, see
 * `FusedForwardMmaSpec.split`). Workgroup (x, y): tensor y (0 query, 1 key, 2 value), vec4s x * 256 + lid with a
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
function unrolled(arr: string, n: string): string {
  return Array.from({ length: ABS_MAX_UNROLL }, (_, u) =>
    u === 0
      ? `      m = max(m, bitcast<u32>(vmax(${arr}[i])));`
      : `      { let j = i + ${u}u * stride; m = max(m, select(0u, bitcast<u32>(vmax(${arr}[min(j, params.${n} - 1u)])), j < params.${n})); }`,
  ).join('\n');
}

export function generateAbsMax(): GeneratedKernel {
  const key = kernelKey('abs-max3', GEN, {});
  const bindings: StorageBinding[] = [
    { name: 'query', access: 'read' },
    { name: 'key', access: 'read' },
    { name: 'value', access: 'read' },
    { name: 'scales', access: 'read_write' },
  ];
  const uniforms: UniformField[] = [
    { name: 'n_q', type: 'u32' },
    { name: 'n_k', type: 'u32' },
    { name: 'n_v', type: 'u32' },
  ];
  const code = `// ${key}
@group(0) @binding(0) var<storage, read> query: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> key: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> value: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> scales: array<atomic<u32>>;
${uniformDecl(uniforms, bindings.length)}
var<workgroup> wmax: atomic<u32>;

fn vmax(v: vec4<f32>) -> f32 {
  let a = abs(v);
  return max(max(a.x, a.y), max(a.z, a.w));
}

@compute @workgroup_size(${ABS_MAX_WORKGROUP})
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  // The workgroup max starts at zero by this store, not by Dawn's zero-initialization (which Node may turn off).
  if (lid == 0u) { atomicStore(&wmax, 0u); }
  let stride = nwg.x * ${ABS_MAX_WORKGROUP}u;
  var m = 0u;
  if (wg.y == 0u) {
    for (var i = wg.x * ${ABS_MAX_WORKGROUP}u + lid; i < params.n_q; i += ${ABS_MAX_UNROLL}u * stride) {
${unrolled('query', 'n_q')}
    }
  } else if (wg.y == 1u) {
    for (var i = wg.x * ${ABS_MAX_WORKGROUP}u + lid; i < params.n_k; i += ${ABS_MAX_UNROLL}u * stride) {
${unrolled('key', 'n_k')}
    }
  } else {
    for (var i = wg.x * ${ABS_MAX_WORKGROUP}u + lid; i < params.n_v; i += ${ABS_MAX_UNROLL}u * stride) {
${unrolled('value', 'n_v')}
    }
  }
  workgroupBarrier();
  atomicMax(&wmax, m);
  workgroupBarrier();
  if (lid == 0u) { atomicMax(&scales[wg.y], atomicLoad(&wmax)); }
}
`;
  return { key, code, entryPoint: 'main', workgroupSize: [ABS_MAX_WORKGROUP, 1, 1], bindings, uniforms, workgroupBytes: 4, features: [] };
}
