/** Small kernels the runtime tests dispatch. */
import type { GeneratedKernel } from '@natten-web/wgsl';

export const FILL: GeneratedKernel = {
  key: 'test/fill/v1',
  code: `@group(0) @binding(0) var<storage, read_write> out: array<f32>;
struct Params { n: u32, value: f32, }
@group(0) @binding(1) var<uniform> params: Params;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  if (gid.x < params.n) { out[gid.x] = params.value + f32(gid.x); }
}
`,
  entryPoint: 'main',
  workgroupSize: [64, 1, 1],
  bindings: [{ name: 'out', access: 'read_write' }],
  uniforms: [
    { name: 'n', type: 'u32' },
    { name: 'value', type: 'f32' },
  ],
  workgroupBytes: 0,
  features: [],
};

/** One workgroup spinning `params.n` dependent steps per invocation (long on a software adapter). */
export const SPIN: GeneratedKernel = {
  ...FILL,
  key: 'test/spin/v1',
  code: `@group(0) @binding(0) var<storage, read_write> out: array<f32>;
struct Params { n: u32, value: f32, }
@group(0) @binding(1) var<uniform> params: Params;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  var x = params.value;
  for (var i = 0u; i < params.n; i++) { x = x * 0.999999 + 1.0; }
  out[gid.x] = x;
}
`,
};
