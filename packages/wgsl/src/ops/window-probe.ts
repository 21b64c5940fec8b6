import { kernelKey, type GeneratedKernel, type UniformField, uniformDecl } from '../kernel.ts';
import { windowFunctions } from '../snippets/window.ts';

/**
 * Index-conformance kernel (STYLE §4 rule 8): for every coordinate along one axis, writes
 * (window start, valid count, inverse first, inverse end) exactly as the real kernels compute them,
 * so GPU window math can be compared with core's TypeScript math directly.
 */
export interface WindowProbeSpec {
  readonly kernelSize: number;
  readonly causal: boolean;
}

const GEN = 1;

export function generateWindowProbe(spec: WindowProbeSpec): GeneratedKernel {
  const uniforms: UniformField[] = [
    { name: 'length', type: 'i32' },
    { name: 'dilation', type: 'i32' },
    { name: 'stride', type: 'i32' },
  ];
  const code = `// ${kernelKey('window-probe', GEN, spec)}
const KERNEL_SIZE: i32 = ${spec.kernelSize};
@group(0) @binding(0) var<storage, read_write> out: array<i32>;
${uniformDecl(uniforms, 1)}
${windowFunctions([spec.kernelSize], [spec.causal])}
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let x = i32(gid.x);
  if (x >= params.length) { return; }
  let w = na_window_0(x, params.length, params.dilation, params.stride);
  let inv = na_inverse_0(x, params.length, params.dilation, params.stride);
  out[4 * x] = w.x;
  out[4 * x + 1] = w.y;
  out[4 * x + 2] = inv.x;
  out[4 * x + 3] = inv.y;
}
`;
  return {
    key: kernelKey('window-probe', GEN, spec),
    code,
    entryPoint: 'main',
    workgroupSize: [64, 1, 1],
    bindings: [{ name: 'out', access: 'read_write' }],
    uniforms,
    workgroupBytes: 0,
    features: [],
  };
}
