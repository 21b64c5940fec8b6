/**
 * A linear layer, `y = x W^T + b` (PyTorch's `nn.Linear`: W is `[out, in]`), for the modules' qkv and output
 * projections on WebGPU. A tiled GEMM: a workgroup of 16 x 16 invocations owns a 64 x 64 block of y, stages 16-wide
 * slices of x's rows and W's rows through workgroup memory (as f32, k-major, so the reads below are conflict-free),
 * and each invocation accumulates 4 x 4 outputs in f32: rows `ty + 16 i`, columns `tx + 16 j`. Row blocks past the
 * grid's y extent are walked in a workgroup-uniform loop (more than 65535 blocks of 64 rows).
 * With `parts` = 3 the output columns are split into three tensors of `out / 3` columns each (column c goes to tensor
 * `c / part` at column `c % part`): the qkv projection writes q, k and v in their `[..., heads, head_dim]` layout
 * directly, as PyTorch's `qkv(x).reshape(B, *spatial, 3, H, D)`.
 */
import { NattenArgumentError } from '@natten-web/core';
import { dtypeFeatures, enableDirectives, type GpuDType, wgslType } from '../dtype.ts';
import { type GeneratedKernel, kernelKey, type StorageBinding, type UniformField, uniformDecl } from '../kernel.ts';

const GEN = 1;
/** Rows and columns of y per workgroup, and the k slice staged per step. */
export const LINEAR_TILE = 64;
const TK = 16;
const SIDE = 16;
const PER = LINEAR_TILE / SIDE;

export interface LinearSpec {
  readonly dtype: GpuDType;
  readonly bias: boolean;
  /** Output tensors the columns are split into (1, or 3 for a qkv projection). */
  readonly parts: 1 | 3;
}

/** The linear kernels' uniforms, with `inField` the row length's name (`n_in`, or `n_in8` in 16-byte units). */
export function linearUniforms(inField: string): readonly UniformField[] {
  return [
    { name: 'rows', type: 'u32' },
    { name: inField, type: 'u32' },
    { name: 'n_out', type: 'u32' },
    { name: 'part', type: 'u32' },
    { name: 'row_tiles', type: 'u32' },
  ];
}

export const LINEAR_UNIFORMS: readonly UniformField[] = linearUniforms('n_in');

/** The linear kernels' storage bindings: x, W, the bias if any, then the outputs y0 .. y{parts-1}. */
export function linearBindings(spec: { readonly bias: boolean; readonly parts: 1 | 3 }): StorageBinding[] {
  return [
    { name: 'x', access: 'read' },
    { name: 'w', access: 'read' },
    ...(spec.bias ? [{ name: 'b', access: 'read' as const }] : []),
    ...Array.from({ length: spec.parts }, (_, p) => ({ name: `y${p}`, access: 'read_write' as const })),
  ];
}

export function generateLinear(spec: LinearSpec): GeneratedKernel {
  if (spec.parts !== 1 && spec.parts !== 3) throw new NattenArgumentError(`generateLinear: parts must be 1 or 3, got ${String(spec.parts)}`);
  const key = kernelKey('linear', GEN, spec);
  const T = wgslType(spec.dtype);
  const bindings = linearBindings(spec);
  const range = (n: number): number[] => Array.from({ length: n }, (_, i) => i);
  const store = spec.parts === 1 ? `y0[r * params.part + c] = ${T}(v);` : `{
          let p = c / params.part;
          let o = r * params.part + c % params.part;
          if (p == 0u) { y0[o] = ${T}(v); } else if (p == 1u) { y1[o] = ${T}(v); } else { y2[o] = ${T}(v); }
        }`;
  const code = `// ${key}
${enableDirectives(spec.dtype)}${bindings.map((b, i) => `@group(0) @binding(${i}) var<storage, ${b.access}> ${b.name}: array<${T}>;`).join('\n')}
${uniformDecl(LINEAR_UNIFORMS, bindings.length)}
var<workgroup> xs: array<f32, ${TK * LINEAR_TILE}>;
var<workgroup> ws: array<f32, ${TK * LINEAR_TILE}>;

@compute @workgroup_size(${SIDE * SIDE})
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let tx = lid % ${SIDE}u;
  let ty = lid / ${SIDE}u;
  let col0 = wg.x * ${LINEAR_TILE}u;
  for (var rt = wg.y; rt < params.row_tiles; rt += nwg.y) {
    let row0 = rt * ${LINEAR_TILE}u;
${range(PER)
  .map((i) => `    var acc${i} = vec4<f32>(0.0);`)
  .join('\n')}
    for (var k0 = 0u; k0 < params.n_in; k0 += ${TK}u) {
      // Stage x[row0 .. +64, k0 .. +16] and W[col0 .. +64, k0 .. +16] k-major: 16 consecutive invocations read one
      // row's 16 consecutive elements.
${range((TK * LINEAR_TILE) / (SIDE * SIDE))
  .map(
    (u) => `      {
        let e = lid + ${u * SIDE * SIDE}u;
        let rr = e / ${TK}u;
        let kk = e % ${TK}u;
        let gk = k0 + kk;
        let gr = row0 + rr;
        let gc = col0 + rr;
        xs[kk * ${LINEAR_TILE}u + rr] = select(0.0, f32(x[min(gr, params.rows - 1u) * params.n_in + min(gk, params.n_in - 1u)]), gr < params.rows && gk < params.n_in);
        ws[kk * ${LINEAR_TILE}u + rr] = select(0.0, f32(w[min(gc, params.n_out - 1u) * params.n_in + min(gk, params.n_in - 1u)]), gc < params.n_out && gk < params.n_in);
      }`,
  )
  .join('\n')}
      workgroupBarrier();
      for (var kk = 0u; kk < ${TK}u; kk++) {
        let wv = vec4<f32>(${range(PER)
          .map((j) => `ws[kk * ${LINEAR_TILE}u + tx + ${j * SIDE}u]`)
          .join(', ')});
${range(PER)
  .map((i) => `        acc${i} = acc${i} + xs[kk * ${LINEAR_TILE}u + ty + ${i * SIDE}u] * wv;`)
  .join('\n')}
      }
      workgroupBarrier();
    }
${range(PER)
  .map(
    (i) => `    {
      let r = row0 + ty + ${i * SIDE}u;
${range(PER)
  .map(
    (j) => `      {
        let c = col0 + tx + ${j * SIDE}u;
        if (r < params.rows && c < params.n_out) {
          let v = acc${i}[${j}]${spec.bias ? ' + f32(b[c])' : ''};
          ${store}
        }
      }`,
  )
  .join('\n')}
    }`,
  )
  .join('\n')}
  }
}
`;
  return {
    key,
    code,
    entryPoint: 'main',
    workgroupSize: [SIDE * SIDE, 1, 1],
    bindings,
    uniforms: LINEAR_UNIFORMS,
    workgroupBytes: 2 * 4 * TK * LINEAR_TILE,
    features: dtypeFeatures(spec.dtype),
  };
}
