/**
 * A linear layer on tensor cores, `y = x W^T + b` (PyTorch's `nn.Linear`, W `[out, in]`), float16 tensors with f32
 * accumulation, through WebGPU subgroup matrices (`chromium-experimental-subgroup-matrix`, f16 x f16 -> f32,
 * 16x16x16), for the modules' projections where the adapter has them (`generateLinear` is the fallback).
 *
 * - A workgroup of 4 subgroups owns a block of 64 rows of y. With `rowFrags` = 1 the subgroups stand in a column:
 *   subgroup s owns rows 16s .. 16s+15 and all `16 * frags` columns of the block. With `rowFrags` = 2 they stand 2 x 2:
 *   each owns 32 rows and `16 * frags` columns (the block is twice as wide), so every right fragment it loads feeds
 *   two multiplies. A subgroup keeps its `rowFrags * frags` result fragments (f32) across the whole k walk.
 * - Per step of 32 k values, the workgroup stages x's 64 rows and W's block rows (f16, rows padded by 8 halves)
 *   in workgroup memory with 16-byte loads; the next step's loads are issued before this step's multiplies, so their
 *   latency hides behind them. Each subgroup then multiplies its `rowFrags` left fragments of x by its `frags` right
 *   fragments of W^T (W's staged rows read column-major) per 16 k values.
 * - The epilogue goes through a 16 x 16 f32 scratch per subgroup, fragment by fragment: two lanes per row add the
 *   bias, round to f16 and store 8 halves each (one 16-byte store where the output's columns allow it).
 * - `in` must be a multiple of 8 (16-byte rows); with `parts` = 3 the columns are split into three outputs as in
 *   `generateLinear` (the qkv projection).
 * ASSUMPTION (as the other mma kernels): subgroups are the aligned runs of 32 consecutive local invocation indices;
 * callers route here only where the subgroup size is fixed at 32.
 */
import { NattenArgumentError } from '@natten-web/core';
import { type GeneratedKernel, kernelKey, type StorageBinding, type UniformField, uniformDecl } from '../kernel.ts';
import { linearBindings, linearUniforms } from './linear.ts';
import { MMA_FRAGMENT as F, MMA_HEADER } from './na-fused-forward-mma.ts';

const GEN = 1;
/** Subgroups per workgroup; the row block is 16 rows per subgroup. */
const NSG = 4;
/** Rows of y per workgroup. */
export const LINEAR_MMA_ROWS = F * NSG;
/** k values staged per step. */
const BK = 32;
/** Staged row stride in halves (padding against bank conflicts; 80 bytes keeps matrix strides 16-byte aligned). */
const LDX = BK + 8;
/** Epilogue scratch row stride in floats. */
const LDC = F + 4;
/** Column fragments per subgroup this kernel compiles. */
export const LINEAR_MMA_FRAGS = [4, 8] as const;

export interface LinearMmaSpec {
  readonly bias: boolean;
  /** Output tensors the columns are split into (1, or 3 for a qkv projection). */
  readonly parts: 1 | 3;
  /** Column fragments per subgroup (16 columns each). */
  readonly frags: (typeof LINEAR_MMA_FRAGS)[number];
  /** Row fragments per subgroup: 1 (subgroups in a column) or 2 (2 x 2). Absent = 1. */
  readonly rowFrags?: 1 | 2;
  /**
   * Outputs written 8 halves per 16-byte store: the caller guarantees that `out / parts` is a multiple of 8 (so no
   * group of 8 columns straddles two outputs or a row end). Absent = one f16 store per value.
   */
  readonly wideOut?: boolean;
}

/** As `generateLinear`'s, with the row length `n_in8` in 16-byte units (`in / 8`). */
export const LINEAR_MMA_UNIFORMS: readonly UniformField[] = linearUniforms('n_in8');

export function generateLinearMma(spec: LinearMmaSpec): GeneratedKernel {
  if (spec.parts !== 1 && spec.parts !== 3) throw new NattenArgumentError(`generateLinearMma: parts must be 1 or 3, got ${String(spec.parts)}`);
  if (!LINEAR_MMA_FRAGS.includes(spec.frags)) throw new NattenArgumentError(`generateLinearMma: frags must be one of ${LINEAR_MMA_FRAGS.join(', ')}, got ${String(spec.frags)}`);
  const fr = spec.rowFrags ?? 1;
  if (fr !== 1 && fr !== 2) throw new NattenArgumentError(`generateLinearMma: rowFrags must be 1 or 2, got ${String(fr)}`);
  if (fr === 2 && spec.frags !== 4) throw new NattenArgumentError('generateLinearMma: rowFrags 2 takes frags 4 (32 result fragments per lane at most)');
  const key = kernelKey('linear-mma', GEN, spec);
  // Subgroups per block row (SC) and the block's columns.
  const SC = fr;
  const BN = F * spec.frags * SC;
  const WG = 32 * NSG;
  const units = BK / 8;
  const xLoads = (LINEAR_MMA_ROWS * units) / WG;
  const wLoads = (BN * units) / WG;
  const wide = spec.wideOut === true;
  const bindings = linearBindings(spec);
  const decl = (b: StorageBinding, i: number): string => {
    const elem = b.name === 'x' || b.name === 'w' || (wide && b.name.startsWith('y')) ? 'vec4<u32>' : 'f16';
    return `@group(0) @binding(${i}) var<storage, ${b.access}> ${b.name}: array<${elem}>;`;
  };
  const range = (n: number): number[] => Array.from({ length: n }, (_, i) => i);
  const LEFT = `subgroup_matrix_left<f16, ${F}, ${F}>`;
  const RIGHT = `subgroup_matrix_right<f16, ${F}, ${F}>`;
  const RESULT = `subgroup_matrix_result<f32, ${F}, ${F}>`;
  // Unit u of a staged block (rows of `units` 16-byte units) for load i of this invocation.
  const fetch = (arr: 'x' | 'w', n: number, first: string, limit: string): string =>
    range(n)
      .map(
        (i) => `    {
      let u = lid + ${i * WG}u;
      let r = ${first} + u / ${units}u;
      let c = k8 + u % ${units}u;
      ${arr}_${i} = select(vec4<u32>(0u), ${arr}[min(r, ${limit} - 1u) * params.n_in8 + min(c, params.n_in8 - 1u)], r < ${limit} && c < params.n_in8);
    }`,
      )
      .join('\n');
  const stage = (arr: 'x' | 'w', n: number): string =>
    range(n)
      .map(
        (i) => `    {
      let u = lid + ${i * WG}u;
      let at = (u / ${units}u) * ${LDX}u + (u % ${units}u) * 8u;
      let v = ${arr}_${i};
      let lo = vec4<f16>(bitcast<vec2<f16>>(v.x), bitcast<vec2<f16>>(v.y));
      let hi = vec4<f16>(bitcast<vec2<f16>>(v.z), bitcast<vec2<f16>>(v.w));
${range(8)
  .map((e) => `      ${arr}s[at + ${e}u] = ${e < 4 ? 'lo' : 'hi'}[${e % 4}];`)
  .join('\n')}
    }`,
      )
      .join('\n');
  const partOf = spec.parts === 1 ? '' : `\n          let p = c / params.part;`;
  const outIndex = spec.parts === 1 ? 'r * params.part + c' : 'r * params.part + c % params.part';
  const storeTo = (value: string, at: string): string =>
    spec.parts === 1 ? `y0[${at}] = ${value};` : `if (p == 0u) { y0[${at}] = ${value}; } else if (p == 1u) { y1[${at}] = ${value}; } else { y2[${at}] = ${value}; }`;
  const bias = (c: string): string => (spec.bias ? ` + f32(b[${c}])` : '');
  const epilogueStore = wide
    ? `        if (r < params.rows && c0 < params.n_out) {
          let c = c0;${partOf}
          let v0 = vec4<f32>(${range(4)
            .map((t) => `cs[cb + ${t}u]${bias(`c0 + ${t}u`)}`)
            .join(', ')});
          let v1 = vec4<f32>(${range(4)
            .map((t) => `cs[cb + ${t + 4}u]${bias(`c0 + ${t + 4}u`)}`)
            .join(', ')});
          let packed = vec4<u32>(bitcast<vec2<u32>>(vec4<f16>(v0)), bitcast<vec2<u32>>(vec4<f16>(v1)));
          ${storeTo('packed', `(${outIndex}) / 8u`)}
        }`
    : `        for (var t = 0u; t < 8u; t++) {
          let c = c0 + t;
          if (r < params.rows && c < params.n_out) {${partOf}
            ${storeTo(`f16(cs[cb + t]${bias('c')})`, outIndex)}
          }
        }`;
  const code = `// ${key}
${MMA_HEADER}
${bindings.map(decl).join('\n')}
${uniformDecl(LINEAR_MMA_UNIFORMS, bindings.length)}
var<workgroup> xs: array<f16, ${LINEAR_MMA_ROWS * LDX}>;
var<workgroup> ws: array<f16, ${BN * LDX}>;
var<workgroup> cs: array<f32, ${NSG * F * LDC}>;

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let sg = lid / 32u;
  let lane = lid % 32u;
  let col0 = wg.x * ${BN}u;
  let steps = (params.n_in8 + ${units - 1}u) / ${units}u;
  for (var rt = wg.y; rt < params.row_tiles; rt += nwg.y) {
    let row0 = rt * ${LINEAR_MMA_ROWS}u;
${range(fr)
  .flatMap((i) => range(spec.frags).map((j) => `    var acc_${i}_${j} = ${RESULT}();`))
  .join('\n')}
${range(xLoads)
  .map((i) => `    var x_${i}: vec4<u32>;`)
  .join('\n')}
${range(wLoads)
  .map((i) => `    var w_${i}: vec4<u32>;`)
  .join('\n')}
    var k8 = 0u;
${fetch('x', xLoads, 'row0', 'params.rows')}
${fetch('w', wLoads, 'col0', 'params.n_out')}
    for (var step = 0u; step < steps; step++) {
${stage('x', xLoads)}
${stage('w', wLoads)}
      workgroupBarrier();
      // The next step's loads, in flight during this step's multiplies.
      k8 = k8 + ${units}u;
      if (step + 1u < steps) {
${fetch('x', xLoads, 'row0', 'params.rows').replace(/^/gm, '  ')}
${fetch('w', wLoads, 'col0', 'params.n_out').replace(/^/gm, '  ')}
      }
${range(BK / F)
  .map(
    (kk) => `      {
${range(fr)
  .map((i) => `        let a_${i} = subgroupMatrixLoad<${LEFT}, row_major>(&xs, (sg / ${SC}u) * ${fr * F * LDX}u + ${i * F * LDX + kk * F}u, ${LDX}u);`)
  .join('\n')}
${range(spec.frags)
  .map(
    (j) => `        {
          let b = subgroupMatrixLoad<${RIGHT}, col_major>(&ws, (sg % ${SC}u) * ${spec.frags * F * LDX}u + ${j * F * LDX + kk * F}u, ${LDX}u);
${range(fr)
  .map((i) => `          acc_${i}_${j} = subgroupMatrixMultiplyAccumulate(a_${i}, b, acc_${i}_${j});`)
  .join('\n')}
        }`,
  )
  .join('\n')}
      }`,
  )
  .join('\n')}
      workgroupBarrier();
    }
    // Epilogue: fragment by fragment through this subgroup's scratch; lanes 2i and 2i+1 write row i's two halves.
    let cb = sg * ${F * LDC}u + (lane / 2u) * ${LDC}u + (lane % 2u) * 8u;
${range(fr)
  .flatMap((i) =>
    range(spec.frags).map(
      (j) => `    subgroupMatrixStore<row_major>(&cs, sg * ${F * LDC}u, acc_${i}_${j}, ${LDC}u);
    workgroupBarrier();
    {
      let r = row0 + (sg / ${SC}u) * ${fr * F}u + ${i * F}u + lane / 2u;
      let c0 = col0 + (sg % ${SC}u) * ${spec.frags * F}u + ${j * F}u + (lane % 2u) * 8u;
${epilogueStore}
    }
    workgroupBarrier();`,
    ),
  )
  .join('\n')}
  }
}
`;
  return {
    key,
    code,
    entryPoint: 'main',
    workgroupSize: [WG, 1, 1],
    bindings,
    uniforms: LINEAR_MMA_UNIFORMS,
    workgroupBytes: 2 * (LINEAR_MMA_ROWS + BN) * LDX + 4 * NSG * F * LDC,
    features: ['shader-f16', 'subgroups', 'chromium-experimental-subgroup-matrix'],
  };
}
