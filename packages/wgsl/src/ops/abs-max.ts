/**
 * Max |x| of one float32 tensor (the split tensor-core forward's per-tensor scale of V, see
 * `FusedForwardMmaSpec.split`; Q and K take per-row scales inside the kernel). Each workgroup reads vec4s
 * x * 256 + lid with a stride of all workgroups, reduces with subgroupMax and one workgroup atomic per subgroup, then
 * one atomicMax per workgroup into `scales[0]` (the f32 bits of a non-negative float order as u32 do; NaN orders
 * above +inf). `scales` must be zero before the dispatch (the runtime's `DispatchCommand.clear`).
 */
import { type GeneratedKernel, kernelKey, type StorageBinding, type UniformField, uniformDecl } from '../kernel.ts';

const GEN = 2;

/** Threads per workgroup of the abs-max kernel. */
export const ABS_MAX_WORKGROUP = 256;

export function generateAbsMax(): GeneratedKernel {
  const key = kernelKey('abs-max', GEN, {});
  const bindings: StorageBinding[] = [
    { name: 'x', access: 'read' },
    { name: 'scales', access: 'read_write' },
  ];
  const uniforms: UniformField[] = [{ name: 'n', type: 'u32' }];
  const code = `// ${key}
enable subgroups;
@group(0) @binding(0) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> scales: array<atomic<u32>>;
${uniformDecl(uniforms, bindings.length)}
var<workgroup> wmax: atomic<u32>;

@compute @workgroup_size(${ABS_MAX_WORKGROUP})
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32, @builtin(subgroup_invocation_id) sid: u32) {
  let stride = nwg.x * ${ABS_MAX_WORKGROUP}u;
  var m = vec4<f32>(0.0);
  for (var i = wg.x * ${ABS_MAX_WORKGROUP}u + lid; i < params.n; i += stride) { m = max(m, abs(x[i])); }
  let r = subgroupMax(bitcast<u32>(max(max(m.x, m.y), max(m.z, m.w))));
  if (sid == 0u) { atomicMax(&wmax, r); }
  workgroupBarrier();
  if (lid == 0u) { atomicMax(&scales[0], atomicLoad(&wmax)); }
}
`;
  return { key, code, entryPoint: 'main', workgroupSize: [ABS_MAX_WORKGROUP, 1, 1], bindings, uniforms, workgroupBytes: 4, features: ['subgroups'] };
}
