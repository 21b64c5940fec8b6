/**
 * Clock warmer: a compute-bound kernel with no memory traffic to speak of (four independent FMA chains per
 * invocation, `iters` steps each, one store per invocation so the work is not dead code).
 *
 * Why it exists: a GPU's clock governor lowers the core clock when the GPU is mostly idle. A benchmark that times
 * short kernels one submission at a time (submit, wait, read the timestamps) leaves the GPU idle between them, so
 * those kernels run, and are timed, at a fraction of the boost clock: on an H200 we saw 450-1100 MHz instead of
 * 1980 MHz, and the same kernel timed 2-4x apart between runs. Queuing this kernel before each timed sample keeps
 * the GPU busy and its clock up, which is how a model's steady stream of kernels runs, and how the torch
 * baselines run. The timestamps of the timed passes exclude the warmer's own pass.
 */
import { type GeneratedKernel, kernelKey, type UniformField, uniformDecl } from '../kernel.ts';

const GEN = 1;

/** Invocations per workgroup of the clock warmer. */
export const CLOCK_WARMER_WORKGROUP = 256;

export function generateClockWarmer(): GeneratedKernel {
  const uniforms: UniformField[] = [{ name: 'iters', type: 'u32' }];
  const key = kernelKey('clock-warmer', GEN, {});
  const code = `// ${key}
@group(0) @binding(0) var<storage, read_write> sink: array<f32>;
${uniformDecl(uniforms, 1)}
@compute @workgroup_size(${CLOCK_WARMER_WORKGROUP})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  var a = f32(gid.x) * 1.0e-7;
  var b = a + 0.25;
  var c = a + 0.5;
  var d = a + 0.75;
  for (var i = 0u; i < params.iters; i++) {
    a = fma(a, 0.999, 0.001);
    b = fma(b, 0.999, 0.001);
    c = fma(c, 0.999, 0.001);
    d = fma(d, 0.999, 0.001);
  }
  sink[lid] = a + b + c + d;
}
`;
  return {
    key,
    code,
    entryPoint: 'main',
    workgroupSize: [CLOCK_WARMER_WORKGROUP, 1, 1],
    bindings: [{ name: 'sink', access: 'read_write' }],
    uniforms,
    workgroupBytes: 0,
    features: [],
  };
}
