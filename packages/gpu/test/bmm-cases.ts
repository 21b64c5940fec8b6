/**
 * BMM (qk / av) GPU-vs-CPU-reference cases: small geometries that together cover every rank, causal
 * combos, dilation, stride, rpb, multi-tile extents, partial tiles, B/H > 1, and head dims that are and
 * are not multiples of 4 (vec4 and scalar kernel paths).
 */
import {
  attnShape,
  cloneTensor,
  type DType,
  type NaBackend,
  type NaRank,
  randn,
  type Tensor,
  toFloat64Values,
} from '@natten-web/core';

export interface BmmCase {
  readonly name: string;
  readonly rank: NaRank;
  readonly sp: readonly number[];
  readonly K: readonly number[];
  readonly d: readonly number[];
  readonly s: readonly number[];
  readonly causal: readonly boolean[];
  readonly rpb: boolean;
  readonly B: number;
  readonly H: number;
  readonly D: number;
}

function c(rank: NaRank, g: Partial<BmmCase> & { sp: readonly number[]; K: readonly number[] }): BmmCase {
  const ones = new Array<number>(rank).fill(1);
  const cs = g.causal ?? new Array<boolean>(rank).fill(false);
  const base = {
    rank,
    sp: g.sp,
    K: g.K,
    d: g.d ?? ones,
    s: g.s ?? ones,
    causal: cs,
    rpb: g.rpb ?? false,
    B: g.B ?? 1,
    H: g.H ?? 2,
    D: g.D ?? 8,
  };
  const tag = (v: readonly (number | boolean)[]): string => v.map((x) => (typeof x === 'boolean' ? (x ? 'T' : 'F') : String(x))).join('x');
  const name = `sp=${tag(base.sp)} K=${tag(base.K)} d=${tag(base.d)} s=${tag(base.s)} causal=${tag(base.causal)}${base.rpb ? ' rpb' : ''} B=${base.B} H=${base.H} D=${base.D}`;
  return { ...base, name };
}

export const BMM_CASES: readonly BmmCase[] = [
  c(1, { sp: [13], K: [3], d: [2], rpb: true, B: 2 }),
  c(1, { sp: [20], K: [5], causal: [true], D: 6 }),
  c(1, { sp: [70], K: [7], rpb: true, D: 16, H: 1 }),
  c(1, { sp: [17], K: [5], s: [3], causal: [true], d: [1] }),
  c(2, { sp: [9, 11], K: [3, 5], d: [2, 1], rpb: true }),
  c(2, { sp: [10, 12], K: [3, 3], causal: [true, false], B: 2, H: 1 }),
  c(2, { sp: [17, 9], K: [5, 3], causal: [true, true], d: [1, 2], s: [2, 1], D: 6 }),
  c(3, { sp: [5, 6, 7], K: [3, 3, 3], rpb: true, D: 4 }),
  c(3, { sp: [6, 7, 9], K: [3, 5, 3], d: [1, 1, 2], causal: [false, true, true], D: 12, H: 1 }),
  c(3, { sp: [9, 5, 6], K: [3, 3, 5], s: [2, 1, 3], D: 5, H: 1 }),
];

/** The case with its head dim raised to a multiple of 16, the tensor-core kernels' rule (4, 5, 6, 8, 12 -> 16; 16 -> 32, so one case runs two fragments). */
export function mmaCase(k: BmmCase): BmmCase {
  const D = k.D < 16 ? 16 : 2 * k.D;
  return { ...k, D, name: k.name.replace(/D=\d+$/, `D=${D}`) };
}

export type BmmOpName = 'qk_forward' | 'qk_backward' | 'av_forward' | 'av_backward';

export interface BmmRun {
  /** Output tensors after the op, by argument name. */
  readonly outputs: Record<string, Tensor>;
}

/** Build fresh inputs (deterministic per seed) and run one op on a backend; outputs start as junk (or, for grad_rel_pos_bias, random values it accumulates into). */
export async function runBmm(
  backend: NaBackend,
  op: BmmOpName,
  k: BmmCase,
  dtype: DType,
  seed: number,
  /** Input magnitudes (normal samples times these): the row tensors (q, k, v, dO) and the attention tensors. */
  scale: { readonly rows?: number; readonly attn?: number } = {},
): Promise<BmmRun> {
  const rank = k.rank;
  const rows = [k.B, k.H, ...k.sp, k.D];
  const P = k.K.reduce((a, b) => a * b, 1);
  const aShape = attnShape(k.B, k.H, k.sp, P);
  const rpbShape = [k.H, ...k.K.map((x) => 2 * x - 1)];
  const params = { kernelSize: [...k.K], dilation: [...k.d], stride: [...k.s], isCausal: [...k.causal] };
  const junk = (shape: readonly number[], s: number): Tensor => randn(shape, dtype, s, 3);
  const row = (s: number): Tensor => randn(rows, dtype, s, scale.rows ?? 1);
  const att = (s: number): Tensor => randn(aShape, dtype, s, scale.attn ?? 1);
  if (op === 'qk_forward') {
    const args = {
      ...params,
      query: row(seed),
      key: row(seed + 1),
      rpb: k.rpb ? randn(rpbShape, dtype, seed + 2) : null,
      attn: junk(aShape, seed + 3),
    };
    await backend.qkForward(rank, args);
    return { outputs: { attn: args.attn } };
  }
  if (op === 'qk_backward') {
    const args = {
      ...params,
      query: row(seed),
      key: row(seed + 1),
      gradAttn: att(seed + 2),
      gradQuery: junk(rows, seed + 3),
      gradKey: junk(rows, seed + 4),
      gradRpb: k.rpb ? randn(rpbShape, dtype, seed + 5) : null,
    };
    await backend.qkBackward(rank, args);
    const outputs: Record<string, Tensor> = { gradQuery: args.gradQuery, gradKey: args.gradKey };
    if (args.gradRpb) outputs.gradRpb = args.gradRpb;
    return { outputs };
  }
  if (op === 'av_forward') {
    const args = { ...params, attn: att(seed), value: row(seed + 1), output: junk(rows, seed + 2) };
    await backend.avForward(rank, args);
    return { outputs: { output: args.output } };
  }
  const args = {
    ...params,
    attn: att(seed),
    value: row(seed + 1),
    gradOutput: row(seed + 2),
    gradAttn: junk(aShape, seed + 3),
    gradValue: junk(rows, seed + 4),
  };
  await backend.avBackward(rank, args);
  return { outputs: { gradAttn: args.gradAttn, gradValue: args.gradValue } };
}

/** Tolerances: f32 math on both sides for f32; f16 storage differs by at most a rounding or two. */
export function tolerance(dtype: DType): { atol: number; rtol: number } {
  return dtype === 'float16' ? { atol: 2e-2, rtol: 1e-2 } : { atol: 1e-4, rtol: 1e-4 };
}

/** First mismatch as a readable string, or undefined. Non-finite values must match exactly (-inf slots). */
export function mismatch(
  actual: Tensor,
  expected: Tensor,
  dtype: DType,
  /** The magnitude of the output's terms (the product of its operands' scales): atol is relative to it. */
  termScale = 1,
): string | undefined {
  const a = toFloat64Values(actual);
  const e = toFloat64Values(expected);
  const { rtol } = tolerance(dtype);
  const atol = tolerance(dtype).atol * termScale;
  let bad = 0;
  let first = '';
  for (let i = 0; i < e.length; i++) {
    const x = a[i] as number;
    const y = e[i] as number;
    const ok = Number.isFinite(y) ? Number.isFinite(x) && Math.abs(x - y) <= atol + rtol * Math.abs(y) : Object.is(x, y);
    if (!ok) {
      if (bad === 0) first = `index ${i}: got ${x}, expected ${y}`;
      bad++;
    }
  }
  return bad === 0 ? undefined : `${bad}/${e.length} elements differ; first at ${first}`;
}

/**
 * Each output of `want` that `got` lacks or that differs from it (`name: why`), in `want`'s order; empty when all
 * match. `termScale`: per output name, the magnitude its atol is relative to (see `mismatch`).
 */
export function outputMismatches(got: BmmRun, want: BmmRun, dtype: DType, termScale: Readonly<Record<string, number>> = {}): string[] {
  return Object.entries(want.outputs).flatMap(([name, t]) => {
    const g = got.outputs[name];
    const why = g ? mismatch(g, t, dtype, termScale[name]) : 'missing';
    return why === undefined ? [] : [`${name}: ${why}`];
  });
}

export { cloneTensor };
