/**
 * Fill GPU tensors with deterministic pseudo-random values on the GPU (a PCG hash of the index and a seed),
 * so large benchmark inputs (hundreds of MB) need no host generation or upload.
 */
import { type GpuContext, foldWorkgroups, type GpuTensor } from '@natten-web/gpu';
import { enableDirectives, type GeneratedKernel, type GpuDType, kernelKey, type UniformField, uniformDecl, wgslType } from '@natten-web/wgsl';

const GEN = 1;
const WG = 256;
const UNIFORMS: UniformField[] = [
  { name: 'n', type: 'u32' },
  { name: 'seed', type: 'u32' },
  { name: 'scale', type: 'f32' },
];

export function generateFill(dtype: GpuDType): GeneratedKernel {
  const spec = { dtype };
  const key = kernelKey('bench-fill', GEN, spec);
  const T = wgslType(dtype);
  const code = `// ${key}
${enableDirectives(dtype).trimEnd()}
@group(0) @binding(0) var<storage, read_write> out: array<${T}>;
${uniformDecl(UNIFORMS, 1)}
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wg_id: vec3<u32>, @builtin(num_workgroups) wg_num: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let i = (wg_id.x + wg_id.y * wg_num.x) * ${WG}u + lid;
  if (i >= params.n) { return; }
  var x = i * 747796405u + params.seed * 2891336453u + 1u;
  x = ((x >> ((x >> 28u) + 4u)) ^ x) * 277803737u;
  x = (x >> 22u) ^ x;
  out[i] = ${T}((f32(x) * 2.3283064365386963e-10 * 2.0 - 1.0) * params.scale);
}
`;
  return {
    key,
    code,
    entryPoint: 'main',
    workgroupSize: [WG, 1, 1],
    bindings: [{ name: 'out', access: 'read_write' }],
    uniforms: UNIFORMS,
    workgroupBytes: 0,
    features: dtype === 'float16' ? ['shader-f16'] : [],
  };
}

/** Uniform values in [-scale, scale). */
export async function fillRandom(ctx: GpuContext, t: GpuTensor, seed: number, scale = 1): Promise<void> {
  const groups = Math.ceil(t.numel / WG);
  await ctx.dispatch(
    [
      {
        kernel: generateFill(t.dtype),
        buffers: [t.buffer],
        uniforms: { n: t.numel, seed, scale },
        workgroups: foldWorkgroups(groups, ctx.limits.maxComputeWorkgroupsPerDimension),
      },
    ],
    'bench fill',
  );
}
