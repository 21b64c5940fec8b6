/**
 * Index helpers shared by the fused kernels (WGSL text, per-axis code emitted from TS).
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

/**
 * Linear token index (row-major over the spatial extents) of per-axis original-coordinate expressions `x(a)`, as
 * the forward kernels spell it (`tokenIndex` is the backward kernels' spelling over named coordinates).
 */
export function tokenOf(rank: number, x: (a: number) => string): string {
  let e = `u32(${x(0)})`;
  for (let a = 1; a < rank; a++) e = `(${e}) * u32(params.len_${a}) + u32(${x(a)})`;
  return e;
}

/**
 * Why a kernel spec cannot take an rpb, or undefined: `rpbIndexExpr` indexes a bias centred on the query, which
 * needs a non-causal window and odd kernel sizes.
 */
export function rpbWindowProblem(spec: { readonly hasRpb?: boolean; readonly causal: readonly boolean[]; readonly kernelSize: readonly number[] }): string | undefined {
  return spec.hasRpb && (spec.causal.some((c) => c) || spec.kernelSize.some((k) => k % 2 === 0)) ? 'rpb needs a non-causal window and odd kernel sizes' : undefined;
}

/**
 * Index into an rpb tensor [H, 2K_0-1, ...] for head `h`: `rel(a)` is the key-minus-query offset along axis a
 * (group coordinates), in [-(K_a-1), K_a-1].
 */
export function rpbIndexExpr(kernelSize: readonly number[], rel: (a: number) => string): string {
  const ext = kernelSize.map((k) => 2 * k - 1);
  let e = `u32(${rel(0)} + ${(kernelSize[0] as number) - 1})`;
  for (let a = 1; a < kernelSize.length; a++) e = `(${e}) * ${ext[a]}u + u32(${rel(a)} + ${(kernelSize[a] as number) - 1})`;
  return `h * ${ext.reduce((x, y) => x * y, 1)}u + ${e}`;
}

/** Uniform fields for per-axis extents, dilations and strides. */
export function axisUniformNames(rank: number): string[] {
  const out: string[] = [];
  for (const a of axes(rank)) out.push(`len_${a}`, `dil_${a}`, `str_${a}`);
  return out;
}

/** The values of `axisUniformNames`' fields for a problem: `len_a`, `dil_a`, `str_a` per axis. */
export function axisUniformValues(problem: { readonly rank: number; readonly spatial: readonly number[]; readonly params: { readonly dilation: readonly number[]; readonly stride: readonly number[] } }): Record<string, number> {
  const u: Record<string, number> = {};
  for (const a of axes(problem.rank)) {
    u[`len_${a}`] = problem.spatial[a] as number;
    u[`dil_${a}`] = problem.params.dilation[a] as number;
    u[`str_${a}`] = problem.params.stride[a] as number;
  }
  return u;
}

/**
 * WGSL of a key's slot in a query's window (row-major over the kernel, last axis fastest) from its per-axis offsets
 * `off(a)` (i32 expressions, in slots) from the window's start.
 */
export function windowSlot(kernelSize: readonly number[], off: (a: number) => string): string {
  return kernelSize.reduce<string>((e, k, a) => (a === 0 ? `u32(${off(0)})` : `(${e}) * ${k}u + u32(${off(a)})`), '');
}

/** Per-axis text builders for one rank: statements per axis, and any/all conditions over the axes. */
export interface AxisText {
  readonly A: readonly number[];
  /** `f(a)` for every axis, joined by `sep` (a newline plus the indentation of the first). */
  per(f: (a: number) => string, sep?: string): string;
  /** `f(0) || f(1) || ...`. */
  any(f: (a: number) => string): string;
  /** `f(0) && f(1) && ...`. */
  all(f: (a: number) => string): string;
}

export function axisText(rank: number): AxisText {
  const A = axes(rank);
  return {
    A,
    per: (f, sep = '\n  ') => A.map(f).join(sep),
    any: (f) => A.map(f).join(' || '),
    all: (f) => A.map(f).join(' && '),
  };
}

/** Original coordinate of group coordinate `${c}_a` in dilation group `g_a`: x = x' * d + g. */
export function origCoord(a: number, c: string): string {
  return `${c}_${a} * params.dil_${a} + g_${a}`;
}

/** Group coordinate of the original-coordinate expression `x` (in group `g_a`): x' = (x - g) / d. */
export function groupCoord(a: number, x: string): string {
  return `(${x} - g_${a}) / params.dil_${a}`;
}

/** Call of the per-axis window function (`na_window_a` / `na_inverse_a` from snippets/window.ts) at original coordinate `x`. */
export function naCall(fn: 'window' | 'inverse', a: number, x: string): string {
  return `na_${fn}_${a}(${x}, params.len_${a}, params.dil_${a}, params.str_${a})`;
}

/** Row of the token at original coordinates `${prefix}_a` in a [batch, tokens, heads, .] tensor: (b * tokens + token) * heads + head. */
export function rowIndex(prefix: string, rank: number, heads: string, head: string): string {
  return `(b * params.tokens + ${tokenIndex(prefix, rank)}) * ${heads} + ${head}`;
}

/**
 * Flat workgroup index `lin` (guarded by `params.total`) decoded mixed-radix into `fields` (name, radix), fastest
 * first, through a `rest` variable; the last quotient is `last`. Needs at least two fields.
 */
export function decodeWorkgroup(fields: readonly (readonly [string, string])[], last: string): string {
  const lines = ['let lin = wid.x + wid.y * nwg.x;', 'if (lin >= params.total) { return; }'];
  fields.forEach(([name, radix], i) => {
    const src = i === 0 ? 'lin' : 'rest';
    lines.push(`let ${name} = ${src} % ${radix};`);
    if (i === fields.length - 1) lines.push(`let ${last} = ${src} / ${radix};`);
    else lines.push(i === 0 ? `var rest = lin / ${radix};` : `rest = rest / ${radix};`);
  });
  return lines.join('\n  ');
}

/** Nested loops `${v}_a` over [`${lo}_a`, `${hi}_a`), axis 0 outermost, around `body`; `open`/`close` carry each level's indentation. */
export function axisLoops(rank: number, v: string, lo: string, hi: string, body: string, open: string, close: string): string {
  let s = body;
  for (let a = rank - 1; a >= 0; a--) s = `for (var ${v}_${a} = ${lo}_${a}; ${v}_${a} < ${hi}_${a}; ${v}_${a}++) {${open}${s}${close}}`;
  return s;
}
