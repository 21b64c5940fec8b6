/**
 * Index helpers shared by the fused-backward kernels (WGSL text, per-axis code emitted from TS).
 *
 * Conventions: axis a has extent `params.len_a`, dilation `params.dil_a`, stride `params.str_a` (uniforms).
 * Coordinates named `*_a` are group coordinates (`x' = x div d`) unless noted; original coordinate = x' * d + g.
 */

/** Axis indices 0..rank-1. */
export function axes(rank: number): number[] {
  return Array.from({ length: rank }, (_, a) => a);
}

/** Row-major decode of `src` (a u32 expression held in a fresh `var`) into `${prefix}_a` by the given per-axis extents. */
export function decodeRowMajor(src: string, prefix: string, extents: readonly string[], tmp: string): string {
  const rank = extents.length;
  const lines = [`var ${tmp}: u32 = ${src};`];
  for (let a = rank - 1; a >= 0; a--) {
    lines.push(`let ${prefix}_${a}: i32 = i32(${tmp} % ${extents[a]});`);
    if (a > 0) lines.push(`${tmp} = ${tmp} / ${extents[a]};`);
  }
  return lines.join('\n  ');
}

/** Linear token index (row-major over the spatial extents) of original coordinates `${prefix}_a`. */
export function tokenIndex(prefix: string, rank: number): string {
  let e = `u32(${prefix}_0)`;
  for (let a = 1; a < rank; a++) e = `(${e} * u32(params.len_${a}) + u32(${prefix}_${a}))`;
  return e;
}

/** Uniform fields for per-axis extents, dilations and strides. */
export function axisUniformNames(rank: number): string[] {
  const out: string[] = [];
  for (const a of axes(rank)) out.push(`len_${a}`, `dil_${a}`, `str_${a}`);
  return out;
}
