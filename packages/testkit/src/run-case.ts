import {
  compareValues,
  type Comparison,
  type DataArray,
  type DType,
  type NaBackend,
  type NaRank,
  randn,
  type Tensor,
  tensor,
  toFloat64Values,
} from '@natten-web/core';
import type { NaCase } from './cases.ts';
import { tensorFromValues } from './encode.ts';
import {
  buildMask,
  type OracleBmmProblem,
  type OracleFusedProblem,
  type OracleGeometry,
  oracleAvBackward,
  oracleAvForward,
  oracleFusedBackward,
  oracleFusedForward,
  oracleQkBackward,
  oracleQkForward,
  slotValidity,
} from './oracle.ts';

/** Named f64 arrays with their shapes: inputs of a case, or outputs of one run. */
export interface NamedArray {
  readonly shape: readonly number[];
  readonly values: Float64Array;
  /** dtype the tensor is passed in (float32 for logsumexp, the case dtype otherwise). */
  readonly dtype: DType;
  /** The values already encoded as a tensor of `dtype` (saves re-encoding large f16 inputs). */
  readonly encoded?: Tensor;
}
export type NamedArrays = Record<string, NamedArray>;

/** What computes the expected outputs: the dense oracle or a reference backend run in float64. */
export type NaReference = 'oracle' | NaBackend;

function numel(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

function get(arrays: NamedArrays, name: string): NamedArray {
  const a = arrays[name];
  if (!a) throw new Error(`testkit: missing array '${name}'`);
  return a;
}

function geometryOf(c: NaCase): OracleGeometry {
  return { spatial: c.spatial, kernelSize: c.kernelSize, dilation: c.dilation, stride: c.stride, isCausal: c.isCausal };
}

export function caseScale(c: NaCase): number {
  return c.attnScale ?? 1 / Math.sqrt(c.dim);
}


/** Values rounded to `dtype`, kept both as f64 (for references) and encoded (for the backend). */
function encodedArray(shape: readonly number[], dtype: DType, values: ArrayLike<number>): NamedArray {
  const encoded = tensorFromValues(shape, dtype, values);
  return { shape, dtype, values: toFloat64Values(encoded), encoded };
}

function input(shape: readonly number[], dtype: DType, seed: number, scale = 1): NamedArray {
  return encodedArray(shape, dtype, toFloat64Values(randn(shape, 'float64', seed, scale)));
}

function rpbShapeOf(c: NaCase): number[] {
  return [c.heads, ...c.kernelSize.map((k) => 2 * k - 1)];
}

function fusedShapes(c: NaCase) {
  const { batch: B, heads: H, headsKv: Hk, dim: D, dimV: Dv, spatial } = c;
  return {
    q: [B, ...spatial, H, D],
    k: [B, ...spatial, Hk, D],
    v: [B, ...spatial, Hk, Dv],
    o: [B, ...spatial, H, Dv],
    lse: [B, ...spatial, H],
  };
}

function bmmShapes(c: NaCase) {
  const P = c.kernelSize.reduce((a, b) => a * b, 1);
  return {
    x: [c.batch, c.heads, ...c.spatial, c.dim],
    attn: [c.batch, c.heads, ...c.spatial, P],
  };
}

/** Fill invalid BMM slots with a sentinel that a correct backend never reads (spec §3.5-§3.7, §6). */
function withSentinel(a: NamedArray, valid: Uint8Array, sentinel: number): NamedArray {
  const values = a.values.slice();
  const per = valid.length;
  for (let i = 0; i < values.length; i++) if (valid[i % per] === 0) values[i] = sentinel;
  return { shape: a.shape, dtype: a.dtype, values };
}

/** A forward pass used to produce the stored `output`/`logsumexp` inputs of the fused backward. */
type ForwardFn = (c: NaCase, inputs: NamedArrays) => Promise<{ output: Float64Array; lse: Float64Array }>;

/**
 * Seeded inputs of a case, already rounded to the case dtype: q, k, v ~ randn, dO ~ randn * 0.05 (as
 * NATTEN's tests), rpb ~ randn; BMM q is pre-scaled by dim^-0.5 (NATTEN's BMM tests). Invalid BMM
 * slots of `attn` inputs hold -inf and of `gradAttn` inputs NaN: the spec says they are never read.
 * The fused backward's stored `output` and `logsumexp` come from `forward` (then rounded to the dtype / f32).
 */
export async function makeCaseInputs(c: NaCase, forward: ForwardFn): Promise<NamedArrays> {
  const dt = c.dtype;
  let seed = c.seed;
  const next = (): number => {
    seed = (Math.imul(seed, 0x9e3779b1) + 0x7f4a7c15) >>> 0;
    return seed;
  };
  const inputs: NamedArrays = {};
  if (c.op === 'forward' || c.op === 'backward') {
    const s = fusedShapes(c);
    inputs.query = input(s.q, dt, next());
    inputs.key = input(s.k, dt, next());
    inputs.value = input(s.v, dt, next());
    if (c.rpb) inputs.rpb = input(rpbShapeOf(c), dt, next());
    if (c.op === 'backward') {
      inputs.gradOutput = input(s.o, dt, next(), 0.05);
      const fwd = await forward(c, inputs);
      inputs.output = encodedArray(s.o, dt, fwd.output);
      inputs.logsumexp = encodedArray(s.lse, 'float32', fwd.lse);
    }
    return inputs;
  }
  const s = bmmShapes(c);
  const valid = slotValidity(geometryOf(c));
  if (c.op === 'qk_forward' || c.op === 'qk_backward') {
    inputs.query = input(s.x, dt, next(), 1 / Math.sqrt(c.dim));
    inputs.key = input(s.x, dt, next());
    if (c.op === 'qk_forward' && c.rpb) inputs.rpb = input(rpbShapeOf(c), dt, next());
    if (c.op === 'qk_backward') inputs.gradAttn = withSentinel(input(s.attn, dt, next()), valid, Number.NaN);
    return inputs;
  }
  inputs.attn = withSentinel(input(s.attn, dt, next()), valid, Number.NEGATIVE_INFINITY);
  inputs.value = input(s.x, dt, next());
  if (c.op === 'av_backward') inputs.gradOutput = input(s.x, dt, next(), 0.05);
  return inputs;
}

function toTensor(a: NamedArray, dtype: DType): Tensor {
  if (a.encoded && a.encoded.dtype === dtype) return a.encoded;
  return tensorFromValues(a.shape, dtype, a.values);
}

function filled(shape: readonly number[], dtype: DType, value: number): Tensor {
  // Convert one element and repeat it (element-wise f16 encoding is the slow part of f16 cases).
  const one = tensorFromValues([1], dtype, [value]).data;
  const data = new (one.constructor as new (n: number) => typeof one)(numel(shape)).fill(one[0] as number);
  return tensor(shape, dtype, data);
}

/**
 * Run a case's op on a backend, in `dtype` (the case dtype, or float64 for a reference backend).
 * Outputs start as NaN so an unwritten element is caught; d_rpb buffers start at zero because the
 * qk backward accumulates into them (spec §3.5).
 */
export async function runOnBackend(backend: NaBackend, c: NaCase, inputs: NamedArrays, dtype: DType): Promise<NamedArrays> {
  const rank = c.rank as NaRank;
  // Inputs passed to the backend, with a copy of their data to check afterwards that none was written to.
  const passed = new Map<string, { tensor: Tensor; before: DataArray }>();
  const t = (name: string): Tensor => {
    const tensorIn = toTensor(get(inputs, name), dtype);
    passed.set(name, { tensor: tensorIn, before: (tensorIn.data as DataArray).slice() });
    return tensorIn;
  };
  const opt = (name: string): Tensor | undefined => (inputs[name] ? t(name) : undefined);
  const params = { kernelSize: [...c.kernelSize], dilation: [...c.dilation], stride: [...c.stride], isCausal: [...c.isCausal] };
  const outs: Record<string, Tensor> = {};
  // Gradient outputs shaped like the named inputs (NaN), plus a zeroed d_rpb when the case has rpb;
  // they are recorded in `outs` (in this order) and returned for the op's arguments.
  const gradsLike = <N extends string>(like: Record<N, string>, withRpb: boolean): Record<N, Tensor> & { gradRpb?: Tensor } => {
    const grads: Record<string, Tensor> = {};
    for (const [grad, input] of Object.entries<string>(like)) grads[grad] = filled(get(inputs, input).shape, dtype, Number.NaN);
    if (withRpb && c.rpb) grads.gradRpb = filled(rpbShapeOf(c), dtype, 0);
    Object.assign(outs, grads);
    return grads as Record<N, Tensor> & { gradRpb?: Tensor };
  };
  switch (c.op) {
    case 'forward': {
      const s = fusedShapes(c);
      outs.output = filled(s.o, dtype, Number.NaN);
      // logsumexp is float32 on every backend (core checks it); a float64 reference run keeps float32 too.
      if (c.lse) outs.logsumexp = filled(s.lse, 'float32', Number.NaN);
      await backend.fusedForward(rank, {
        ...params,
        output: outs.output,
        query: t('query'),
        key: t('key'),
        value: t('value'),
        rpb: opt('rpb'),
        logsumexp: outs.logsumexp,
        attnScale: c.attnScale,
      });
      break;
    }
    case 'backward': {
      await backend.fusedBackward(rank, {
        ...params,
        ...gradsLike({ gradQuery: 'query', gradKey: 'key', gradValue: 'value' }, true),
        query: t('query'),
        key: t('key'),
        value: t('value'),
        output: t('output'),
        gradOutput: t('gradOutput'),
        logsumexp: toTensor(get(inputs, 'logsumexp'), 'float32'),
        attnScale: c.attnScale,
        rpb: opt('rpb'),
      });
      break;
    }
    case 'qk_forward': {
      outs.attn = filled(bmmShapes(c).attn, dtype, Number.NaN);
      await backend.qkForward(rank, { ...params, attn: outs.attn, query: t('query'), key: t('key'), rpb: opt('rpb') });
      break;
    }
    case 'qk_backward': {
      await backend.qkBackward(rank, {
        ...params,
        ...gradsLike({ gradQuery: 'query', gradKey: 'key' }, true),
        gradAttn: t('gradAttn'),
        query: t('query'),
        key: t('key'),
      });
      break;
    }
    case 'av_forward': {
      outs.output = filled(get(inputs, 'value').shape, dtype, Number.NaN);
      await backend.avForward(rank, { ...params, output: outs.output, attn: t('attn'), value: t('value') });
      break;
    }
    case 'av_backward': {
      await backend.avBackward(rank, {
        ...params,
        ...gradsLike({ gradAttn: 'attn', gradValue: 'value' }, false),
        gradOutput: t('gradOutput'),
        attn: t('attn'),
        value: t('value'),
      });
      break;
    }
  }
  for (const [name, { tensor: tensorIn, before }] of passed) {
    const after = tensorIn.data as DataArray;
    for (let i = 0; i < before.length; i++) {
      const a = after[i] as number;
      const b = before[i] as number;
      if (a !== b && !(Number.isNaN(a) && Number.isNaN(b))) {
        throw new Error(`${c.key}: ${backend.name} modified its input '${name}' at index ${i} (${b} -> ${a}); inputs are read-only`);
      }
    }
  }
  const result: NamedArrays = {};
  for (const [name, tensor] of Object.entries(outs)) {
    result[name] = { shape: tensor.shape, dtype: tensor.dtype, values: toFloat64Values(tensor) };
  }
  return result;
}

function fusedProblem(c: NaCase): OracleFusedProblem {
  return {
    batch: c.batch,
    heads: c.heads,
    headsKv: c.headsKv,
    dim: c.dim,
    dimV: c.dimV,
    scale: caseScale(c),
    geometry: geometryOf(c),
  };
}

function bmmProblem(c: NaCase): OracleBmmProblem {
  return { batch: c.batch, heads: c.heads, dim: c.dim, geometry: geometryOf(c) };
}

/** Expected outputs of a case from the dense oracle (f64). */
export function runOnOracle(c: NaCase, inputs: NamedArrays): NamedArrays {
  const v = (name: string): Float64Array => get(inputs, name).values;
  const ov = (name: string): Float64Array | undefined => inputs[name]?.values;
  const mask = buildMask(geometryOf(c));
  const arr = (shape: readonly number[], values: Float64Array, dtype: DType = c.dtype): NamedArray => ({ shape, values, dtype });
  switch (c.op) {
    case 'forward': {
      const s = fusedShapes(c);
      const r = oracleFusedForward(fusedProblem(c), v('query'), v('key'), v('value'), ov('rpb'), mask);
      return c.lse ? { output: arr(s.o, r.output), logsumexp: arr(s.lse, r.lse, 'float32') } : { output: arr(s.o, r.output) };
    }
    case 'backward': {
      const r = oracleFusedBackward(fusedProblem(c), v('query'), v('key'), v('value'), v('output'), v('gradOutput'), v('logsumexp'), ov('rpb'), mask);
      const out: NamedArrays = {
        gradQuery: arr(get(inputs, 'query').shape, r.gradQuery),
        gradKey: arr(get(inputs, 'key').shape, r.gradKey),
        gradValue: arr(get(inputs, 'value').shape, r.gradValue),
      };
      if (r.gradRpb) out.gradRpb = arr(rpbShapeOf(c), r.gradRpb);
      return out;
    }
    case 'qk_forward':
      return { attn: arr(bmmShapes(c).attn, oracleQkForward(bmmProblem(c), v('query'), v('key'), ov('rpb'), mask)) };
    case 'qk_backward': {
      const r = oracleQkBackward(bmmProblem(c), v('gradAttn'), v('query'), v('key'), c.rpb, mask);
      const out: NamedArrays = {
        gradQuery: arr(get(inputs, 'query').shape, r.gradQuery),
        gradKey: arr(get(inputs, 'key').shape, r.gradKey),
      };
      if (r.gradRpb) out.gradRpb = arr(rpbShapeOf(c), r.gradRpb);
      return out;
    }
    case 'av_forward':
      return { output: arr(get(inputs, 'value').shape, oracleAvForward(bmmProblem(c), v('attn'), v('value'), mask)) };
    case 'av_backward': {
      const r = oracleAvBackward(bmmProblem(c), v('gradOutput'), v('attn'), v('value'), mask);
      return { gradAttn: arr(get(inputs, 'attn').shape, r.gradAttn), gradValue: arr(get(inputs, 'value').shape, r.gradValue) };
    }
  }
}

// ---------------------------------------------------------------------------------------------
// tolerances

/** Pass when every finite element has |a - e| <= atol + rtol*|e| AND nmse <= nmse. */
export interface Tolerance {
  readonly atol: number;
  readonly rtol: number;
  /** Upper bound on sum (a-e)^2 / sum e^2; Infinity = not checked. */
  readonly nmse: number;
  /** Why this tolerance differs from the dtype's base row (STYLE.md §5), if it does. */
  readonly reasons: readonly string[];
}

/** A loosening (or tightening) for matching cases and outputs. The reason is mandatory. */
export interface ToleranceOverride {
  /** Matched against the case key; all cases when absent. */
  readonly pattern?: RegExp;
  readonly outputs?: readonly string[];
  readonly dtypes?: readonly DType[];
  readonly atol?: number;
  readonly rtol?: number;
  readonly nmse?: number;
  readonly reason: string;
}

/** STYLE.md §5: f64 (cpu vs oracle) atol 1e-6 rtol 1e-5; f32 atol 1e-4 and nmse <= 1e-7; f16 atol 1e-2 and nmse <= 1e-6. */
export const BASE_TOLERANCE: Readonly<Record<DType, Tolerance>> = {
  float64: { atol: 1e-6, rtol: 1e-5, nmse: Number.POSITIVE_INFINITY, reasons: [] },
  float32: { atol: 1e-4, rtol: 0, nmse: 1e-7, reasons: [] },
  float16: { atol: 1e-2, rtol: 0, nmse: 1e-6, reasons: [] },
};

const BMM_RTOL: Partial<Record<DType, number>> = { float32: 1e-4, float16: 1e-3 };

/** The default tolerance of one output of a case, with the reason of every departure from the base row. */
export function defaultTolerance(c: NaCase, output: string): Tolerance {
  const base = BASE_TOLERANCE[c.dtype];
  let { atol, rtol, nmse } = base;
  const reasons: string[] = [];
  const bmm = c.op !== 'forward' && c.op !== 'backward';
  const rtolExtra = BMM_RTOL[c.dtype];
  if ((bmm || output === 'gradRpb') && rtolExtra !== undefined) {
    rtol = Math.max(rtol, rtolExtra);
    reasons.push(
      `rtol ${rtolExtra}: BMM outputs and d_rpb are unnormalised (logits ~ N(0, D), d_rpb sums over batch and queries, O(10-100)); spec Appendix A asks for a relative term, and ${c.dtype} storage alone rounds such values by more than atol`,
    );
  }
  if (c.op === 'backward' && output === 'gradQuery' && c.dtype === 'float32') {
    atol = 1e-3;
    reasons.push('atol 1e-3 for fp32 dQ: spec Appendix A target (HEAD tests allow 1e-2); dQ sums scale*dS*k over the whole window');
  }
  return { atol, rtol, nmse, reasons };
}

export function resolveTolerance(c: NaCase, output: string, overrides: readonly ToleranceOverride[] = []): Tolerance {
  let t = defaultTolerance(c, output);
  for (const o of overrides) {
    if (o.pattern && !o.pattern.test(c.key)) continue;
    if (o.outputs && !o.outputs.includes(output)) continue;
    if (o.dtypes && !o.dtypes.includes(c.dtype)) continue;
    t = {
      atol: o.atol ?? t.atol,
      rtol: o.rtol ?? t.rtol,
      nmse: o.nmse ?? t.nmse,
      reasons: [...t.reasons, o.reason],
    };
  }
  return t;
}

// ---------------------------------------------------------------------------------------------
// checking

export interface OutputCheck {
  readonly name: string;
  readonly ok: boolean;
  readonly tolerance: Tolerance;
  readonly comparison: Comparison;
  /** Elements outside atol + rtol*|e|. */
  readonly violations: number;
  /** Index of the worst element (largest excess over the bound, else largest |a - e|). */
  readonly worstIndex: number;
  readonly worstExpected: number;
  readonly worstActual: number;
  /** Non-finite values where the reference is finite, or non-finite mismatches. */
  readonly nonFinite: number;
  readonly message: string;
}

export function multiIndex(index: number, shape: readonly number[]): number[] {
  const out = new Array<number>(shape.length).fill(0);
  let r = index;
  for (let a = shape.length - 1; a >= 0; a--) {
    const s = shape[a] as number;
    out[a] = r % s;
    r = Math.floor(r / s);
  }
  return out;
}

function fmt(x: number): string {
  return Number.isFinite(x) ? x.toPrecision(6) : String(x);
}

/**
 * Compare one output. Every element must be finite except where the reference holds -Infinity
 * (qk_forward's invalid slots), and there the actual value must be exactly -Infinity too.
 */
export function checkOutput(key: string, name: string, actual: NamedArray, expected: NamedArray, tol: Tolerance): OutputCheck {
  const a = actual.values;
  const e = expected.values;
  if (a.length !== e.length) throw new Error(`${key}: ${name}: actual has ${a.length} elements, expected ${e.length}`);
  const comparison = compareValues(a, e);
  let violations = 0;
  let nonFinite = 0;
  let firstNonFinite = -1;
  let worst = -1;
  let worstExcess = 0;
  for (let i = 0; i < a.length; i++) {
    const ai = a[i] as number;
    const ei = e[i] as number;
    if (!Number.isFinite(ei)) {
      if (!(ai === ei)) {
        nonFinite++;
        if (firstNonFinite < 0) firstNonFinite = i;
      }
      continue;
    }
    if (!Number.isFinite(ai)) {
      nonFinite++;
      if (firstNonFinite < 0) firstNonFinite = i;
      continue;
    }
    const excess = Math.abs(ai - ei) - (tol.atol + tol.rtol * Math.abs(ei));
    if (excess > 0) violations++;
    if (worst < 0 || excess > worstExcess) {
      worst = i;
      worstExcess = excess;
    }
  }
  const worstIndex = firstNonFinite >= 0 ? firstNonFinite : worst;
  const nmseOk = comparison.nmse <= tol.nmse;
  const ok = violations === 0 && nonFinite === 0 && nmseOk;
  const wE = worstIndex >= 0 ? (e[worstIndex] as number) : Number.NaN;
  const wA = worstIndex >= 0 ? (a[worstIndex] as number) : Number.NaN;
  const why: string[] = [];
  if (nonFinite > 0) why.push(`${nonFinite} non-finite value(s) where the reference differs`);
  if (violations > 0) why.push(`${violations} of ${a.length} element(s) outside atol ${tol.atol} + rtol ${tol.rtol}*|expected|`);
  if (!nmseOk) why.push(`nmse ${comparison.nmse.toExponential(3)} > ${tol.nmse}`);
  const message =
    `${key}: ${name}: ${ok ? 'ok' : why.join('; ')}; worst index ${worstIndex} [${worstIndex >= 0 ? multiIndex(worstIndex, actual.shape).join(', ') : ''}] ` +
    `expected ${fmt(wE)} actual ${fmt(wA)}; maxAbs ${comparison.maxAbs.toExponential(3)}, nmse ${comparison.nmse.toExponential(3)}` +
    (tol.reasons.length > 0 ? ` (tolerance: ${tol.reasons.join(' / ')})` : '');
  return { name, ok, tolerance: tol, comparison, violations, worstIndex, worstExpected: wE, worstActual: wA, nonFinite, message };
}

export interface CaseReport {
  readonly key: string;
  readonly ok: boolean;
  readonly checks: readonly OutputCheck[];
  /** All failing checks' messages, one per line. */
  readonly message: string;
}

export interface RunCaseOptions {
  readonly reference?: NaReference;
  readonly tolerance?: readonly ToleranceOverride[];
}

/** Run one case on a backend and compare every output with the reference. Framework-independent. */
export async function runNaCase(backend: NaBackend, c: NaCase, options: RunCaseOptions = {}): Promise<CaseReport> {
  const reference = options.reference ?? 'oracle';
  const forward: ForwardFn = async (fc, inputs) => {
    const fwdCase: NaCase = { ...fc, op: 'forward', lse: true };
    const r = reference === 'oracle' ? runOnOracle(fwdCase, inputs) : await runOnBackend(reference, fwdCase, inputs, 'float64');
    return { output: get(r, 'output').values, lse: get(r, 'logsumexp').values };
  };
  const inputs = await makeCaseInputs(c, forward);
  const expected = reference === 'oracle' ? runOnOracle(c, inputs) : await runOnBackend(reference, c, inputs, 'float64');
  const actual = await runOnBackend(backend, c, inputs, c.dtype);
  const checks: OutputCheck[] = [];
  for (const [name, exp] of Object.entries(expected)) {
    const act = actual[name];
    if (!act) throw new Error(`${c.key}: backend produced no '${name}'`);
    checks.push(checkOutput(c.key, name, act, exp, resolveTolerance(c, name, options.tolerance)));
  }
  const failed = checks.filter((x) => !x.ok);
  return { key: c.key, ok: failed.length === 0, checks, message: failed.map((x) => x.message).join('\n') };
}
