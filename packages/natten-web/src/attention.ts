/**
 * `attention` (FMHA, NATTEN's `natten.attention`) and `mergeAttentions` (`natten.merge_attentions`),
 * heads-last. Host tensors run on the host in f64. GPU tensors run the WebGPU kernels of `@natten-web/gpu`
 * (`denseForward`, `denseBackward`, `attentionMerge`, f32 math); a merge with float16 lses, and head dims past the
 * kernels' 256, read GPU tensors back, run on the host and upload the results.
 */
import { checkVarlen, type DenseDims, formatShape, NattenArgumentError, NattenNotImplementedError, NattenUnsupportedError, type Tensor } from '@natten-web/core';
import {
  attentionMerge as gpuAttentionMerge,
  denseBackward as gpuDenseBackward,
  denseForward as gpuDenseForward,
  denseForwardUnfit,
  type GpuContext,
  type GpuTensor,
} from '@natten-web/gpu';
import { checkOptions, execute, type GpuInputs, type HostInputs, hostTensor, placement, resolveScale, values, withGpuOutputs } from './common.ts';
import { denseBackward, denseDims, denseForward, mergeF64 } from './dense.ts';
import { na1d, na1dBackward } from './functional.ts';
import type { AnyTensor, OutputOf, SameAs } from './tensors.ts';

export interface AttentionOptions {
  /** Default head_dim^-0.5 when absent (0 is honoured). */
  readonly scale?: number | undefined;
  /** Top-left aligned causal mask: query i sees keys j <= i. Default false. */
  readonly isCausal?: boolean | undefined;
  readonly returnLse?: boolean | undefined;
  /**
   * Variable-length sequences packed along the tokens (batch 1; NATTEN's varlen): each sequence's query and key
   * counts (`seqlensQ`, `seqlensKv`), or their cumulative offsets (`cumulativeSeqlenQ`, `cumulativeSeqlenKv`: `n + 1`
   * entries from 0 to the totals). A query attends to its own sequence's keys (causal: top-left per sequence).
   */
  readonly seqlensQ?: ArrayLike<number> | undefined;
  readonly seqlensKv?: ArrayLike<number> | undefined;
  readonly cumulativeSeqlenQ?: ArrayLike<number> | undefined;
  readonly cumulativeSeqlenKv?: ArrayLike<number> | undefined;
}

const VARLEN_OPTIONS = ['seqlensQ', 'seqlensKv', 'cumulativeSeqlenQ', 'cumulativeSeqlenKv'] as const;

/** Cumulative varlen offsets, named as the WebGPU dense ops take them. */
interface VarlenOffsets {
  readonly cumulativeSeqlenQ: number[];
  readonly cumulativeSeqlenKv: number[];
}

/** The varlen offsets of the options (validated against the shapes), or undefined without varlen. */
function varlenOffsets(op: string, o: Record<string, unknown>, dims: DenseDims): VarlenOffsets | undefined {
  const given = VARLEN_OPTIONS.filter((k) => o[k] !== undefined && o[k] !== null);
  if (given.length === 0) return undefined;
  const lengths = given.some((k) => k.startsWith('seqlens'));
  const cumulative = given.some((k) => k.startsWith('cumulative'));
  if (lengths && cumulative) throw new NattenArgumentError(`${op}: give seqlensQ/seqlensKv or cumulativeSeqlenQ/cumulativeSeqlenKv, not both forms (got ${given.join(', ')})`);
  const list = (k: string): number[] | undefined => {
    const v = o[k];
    if (v === undefined || v === null) return undefined;
    if (typeof v !== 'object' || typeof (v as ArrayLike<number>).length !== 'number') throw new NattenArgumentError(`${op}: ${k} must be an array of integers, got ${String(v)}`);
    return Array.from(v as ArrayLike<number>, Number);
  };
  if (cumulative) {
    const cuQ = list('cumulativeSeqlenQ');
    const cuKv = list('cumulativeSeqlenKv');
    checkVarlen(op, dims, cuQ, cuKv);
    return { cumulativeSeqlenQ: cuQ as number[], cumulativeSeqlenKv: cuKv as number[] };
  }
  const sq = list('seqlensQ');
  const skv = list('seqlensKv');
  if (sq === undefined || skv === undefined) throw new NattenArgumentError(`${op}: ${sq === undefined ? 'seqlensKv was given without seqlensQ' : 'seqlensQ was given without seqlensKv'}; pass both or neither`);
  for (const [k, xs] of [
    ['seqlensQ', sq],
    ['seqlensKv', skv],
  ] as const) {
    xs.forEach((x, i) => {
      if (!Number.isInteger(x) || x < 0) throw new NattenArgumentError(`${op}: ${k}[${i}]=${x} must be a non-negative integer`);
    });
  }
  const cum = (xs: number[]): number[] => xs.reduce((a, x) => [...a, (a[a.length - 1] as number) + x], [0]);
  const cuQ = cum(sq);
  const cuKv = cum(skv);
  checkVarlen(op, dims, cuQ, cuKv);
  return { cumulativeSeqlenQ: cuQ, cumulativeSeqlenKv: cuKv };
}

/** Run `f` on each packed sequence's slices of heads-last host arrays (batch 1), with that sequence's dims. */
function perSequence(dims: DenseDims, v: VarlenOffsets, f: (d: DenseDims, q0: number, k0: number) => void): void {
  const { cumulativeSeqlenQ: cuQ, cumulativeSeqlenKv: cuKv } = v;
  for (let s = 0; s + 1 < cuQ.length; s++) {
    const q0 = cuQ[s] as number;
    const k0 = cuKv[s] as number;
    const nq = (cuQ[s + 1] as number) - q0;
    if (nq === 0) continue;
    f({ ...dims, queries: nq, keys: (cuKv[s + 1] as number) - k0 }, q0, k0);
  }
}

export interface AttentionFunction {
  <T extends AnyTensor>(query: T, key: SameAs<T>, value: SameAs<T>, options: AttentionOptions & { readonly returnLse: true }): Promise<{ output: OutputOf<T>; lse: OutputOf<T> }>;
  <T extends AnyTensor>(query: T, key: SameAs<T>, value: SameAs<T>, options?: AttentionOptions & { readonly returnLse?: false | undefined }): Promise<OutputOf<T>>;
  <T extends AnyTensor>(query: T, key: SameAs<T>, value: SameAs<T>, options?: AttentionOptions): Promise<OutputOf<T> | { output: OutputOf<T>; lse: OutputOf<T> }>;
}

/**
 * Host tensors through `host`; GPU tensors through `gpu` where given (undefined from it: not on WebGPU for these
 * inputs), else read back, run through `host` and uploaded.
 */
async function onHostOrGpu(
  op: string,
  inputs: Record<string, AnyTensor | undefined>,
  host: (t: HostInputs) => Record<string, Tensor>,
  gpu?: (ctx: GpuContext, g: GpuInputs) => Promise<Record<string, GpuTensor> | undefined>,
): Promise<Record<string, AnyTensor>> {
  return execute({
    op,
    requested: undefined,
    inputs,
    host: async (t) => host(t),
    async gpu(ctx: GpuContext, g) {
      const direct = gpu ? await gpu(ctx, g) : undefined;
      if (direct) return direct;
      const t: Record<string, Tensor | undefined> = {};
      for (const [k, v] of Object.entries(g)) t[k] = v ? await ctx.read(v) : undefined;
      const out: Record<string, GpuTensor> = {};
      for (const [k, v] of Object.entries(host(t))) out[k] = ctx.upload(v, `${op}.${k}`);
      return out;
    },
  });
}

/** The NA route's result, or undefined where the NA kernels refuse the problem (argument or support errors). */
async function viaNa<T>(run: () => Promise<T>): Promise<T | undefined> {
  try {
    return await run();
  } catch (e) {
    if (e instanceof NattenArgumentError || e instanceof NattenUnsupportedError || e instanceof NattenNotImplementedError) return undefined;
    throw e;
  }
}

/** Dense attention with as many keys as queries (two or more) is 1-D NA with kernel size = the sequence length. */
function selfAttention(d: { readonly queries: number; readonly keys: number }): boolean {
  return d.queries === d.keys && d.keys >= 2;
}

function causalFlag(op: string, v: unknown): boolean {
  if (v === undefined) return false;
  if (typeof v !== 'boolean') throw new NattenArgumentError(`${op}: isCausal must be a boolean, got ${String(v)}`);
  return v;
}

/**
 * Dense attention: query `[B, S, H, D]`, key `[B, S_kv, H_kv, D]`, value `[B, S_kv, H_kv, D_v]` ->
 * output `[B, S, H, D_v]` (and lse `[B, S, H]` float32 with `returnLse`).
 */
export const attention: AttentionFunction = (async (query: AnyTensor, key: AnyTensor, value: AnyTensor, options: unknown = {}) => {
  const op = 'attention';
  const o = checkOptions(op, options, ['scale', 'isCausal', 'returnLse', ...VARLEN_OPTIONS]);
  placement(op, { query, key, value });
  const dims = denseDims(op, query.shape, key.shape, value.shape);
  const varlen = varlenOffsets(op, o, dims);
  if (key.dtype !== query.dtype || value.dtype !== query.dtype) {
    throw new NattenArgumentError(`${op}: query ${query.dtype}, key ${key.dtype} and value ${value.dtype} must share one dtype`);
  }
  const scale = resolveScale(op, o.scale, dims.dim);
  const causal = causalFlag(op, o.isCausal);
  const returnLse = o.returnLse === true;
  if (o.returnLse !== undefined && typeof o.returnLse !== 'boolean') {
    throw new NattenArgumentError(`${op}: returnLse must be a boolean, got ${String(o.returnLse)}`);
  }
  const outShape = [dims.batch, dims.queries, dims.heads, dims.dimV];
  const res = await onHostOrGpu(
    op,
    { query, key, value },
    (t) => {
      const [qv, kv, vv] = [values(t.query as Tensor), values(t.key as Tensor), values(t.value as Tensor)];
      if (!varlen) {
        const r = denseForward(dims, qv, kv, vv, scale, causal);
        return { output: hostTensor(outShape, query.dtype, r.out), lse: hostTensor(outShape.slice(0, 3), 'float32', r.lse) };
      }
      const { heads: H, headsKv: Hk, dim: D, dimV: Dv } = dims;
      const out = new Float64Array(dims.queries * H * Dv);
      const lse = new Float64Array(dims.queries * H);
      perSequence(dims, varlen, (d, q0, k0) => {
        const r = denseForward(d, qv.subarray(q0 * H * D, (q0 + d.queries) * H * D), kv.subarray(k0 * Hk * D, (k0 + d.keys) * Hk * D), vv.subarray(k0 * Hk * Dv, (k0 + d.keys) * Hk * Dv), scale, causal);
        out.set(r.out, q0 * H * Dv);
        lse.set(r.lse, q0 * H);
      });
      return { output: hostTensor(outShape, query.dtype, out), lse: hostTensor(outShape.slice(0, 3), 'float32', lse) };
    },
    async (ctx, g) => {
      if (selfAttention(dims) && !varlen) {
        // As many queries as keys: 1-D NA whose window is the whole sequence (causal: keys 0..i), on the fused
        // (tensor-core where the adapter has them) kernels; where those refuse the problem, the dense kernel below.
        const r = await viaNa(() => na1d(g.query as GpuTensor, g.key as GpuTensor, g.value as GpuTensor, { kernelSize: dims.keys, isCausal: causal, scale, returnLse: true }));
        if (r) return { output: r.output, lse: r.lse };
      }
      // Head dims past the kernel's, or a grid past the device's: on the host.
      if (denseForwardUnfit(ctx, dims) !== undefined) return undefined;
      const dtype = query.dtype as GpuTensor['dtype'];
      const outs = await withGpuOutputs(ctx, op, { output: { shape: outShape, dtype }, lse: { shape: outShape.slice(0, 3), dtype: 'float32' } }, (r) =>
        gpuDenseForward(ctx, {
          query: g.query as GpuTensor,
          key: g.key as GpuTensor,
          value: g.value as GpuTensor,
          output: r.output as GpuTensor,
          lse: r.lse as GpuTensor,
          scale,
          isCausal: causal,
          ...varlen,
        }),
      );
      return { output: outs.output as GpuTensor, lse: outs.lse as GpuTensor };
    },
  );
  return returnLse ? { output: res.output, lse: res.lse } : res.output;
}) as AttentionFunction;

/** Gradients of `attention` from its output and lse (f64 on the host; on GPU tensors the WebGPU dense backward). */
export async function attentionBackward<T extends AnyTensor>(
  query: T,
  key: SameAs<T>,
  value: SameAs<T>,
  output: SameAs<T>,
  gradOutput: SameAs<T>,
  lse: SameAs<T>,
  options: Omit<AttentionOptions, 'returnLse'> = {},
): Promise<{ gradQuery: OutputOf<T>; gradKey: OutputOf<T>; gradValue: OutputOf<T> }> {
  const op = 'attentionBackward';
  const o = checkOptions(op, options, ['scale', 'isCausal', ...VARLEN_OPTIONS]);
  placement(op, { query, key, value, output, gradOutput, lse });
  const dims = denseDims(op, query.shape, key.shape, value.shape);
  const varlen = varlenOffsets(op, o, dims);
  const outShape = [dims.batch, dims.queries, dims.heads, dims.dimV];
  for (const [name, t, shape] of [
    ['output', output, outShape],
    ['gradOutput', gradOutput, outShape],
    ['lse', lse, outShape.slice(0, 3)],
  ] as const) {
    if (t.shape.length !== shape.length || t.shape.some((s, i) => s !== shape[i])) {
      throw new NattenArgumentError(`${op}: ${name} must have shape ${formatShape(shape)}, got ${formatShape(t.shape)}`);
    }
  }
  const scale = resolveScale(op, o.scale, dims.dim);
  const causal = causalFlag(op, o.isCausal);
  const res = await onHostOrGpu(
    op,
    { query, key, value, output, gradOutput, lse },
    (t) => {
      const [qv, kv, vv, ov, gv, lv] = [t.query, t.key, t.value, t.output, t.gradOutput, t.lse].map((x) => values(x as Tensor)) as [
        Float64Array,
        Float64Array,
        Float64Array,
        Float64Array,
        Float64Array,
        Float64Array,
      ];
      let grads: { dq: Float64Array; dk: Float64Array; dv: Float64Array };
      if (!varlen) grads = denseBackward(dims, qv, kv, vv, ov, gv, lv, scale, causal);
      else {
        const { heads: H, headsKv: Hk, dim: D, dimV: Dv } = dims;
        grads = { dq: new Float64Array(qv.length), dk: new Float64Array(kv.length), dv: new Float64Array(vv.length) };
        const all = grads;
        perSequence(dims, varlen, (d, q0, k0) => {
          const qs = (x: Float64Array, w: number) => x.subarray(q0 * H * w, (q0 + d.queries) * H * w);
          const ks = (x: Float64Array, w: number) => x.subarray(k0 * Hk * w, (k0 + d.keys) * Hk * w);
          const r = denseBackward(d, qs(qv, D), ks(kv, D), ks(vv, Dv), qs(ov, Dv), qs(gv, Dv), lv.subarray(q0 * H, (q0 + d.queries) * H), scale, causal);
          all.dq.set(r.dq, q0 * H * D);
          all.dk.set(r.dk, k0 * Hk * D);
          all.dv.set(r.dv, k0 * Hk * Dv);
        });
      }
      return {
        gradQuery: hostTensor(query.shape, query.dtype, grads.dq),
        gradKey: hostTensor(key.shape, key.dtype, grads.dk),
        gradValue: hostTensor(value.shape, value.dtype, grads.dv),
      };
    },
    async (ctx, g) => {
      if (selfAttention(dims) && lse.dtype === 'float32' && !varlen) {
        const r = await viaNa(() =>
          na1dBackward(g.query as GpuTensor, g.key as GpuTensor, g.value as GpuTensor, g.output as GpuTensor, g.gradOutput as GpuTensor, g.lse as GpuTensor, {
            kernelSize: dims.keys,
            isCausal: causal,
            scale,
          }),
        );
        if (r) return { gradQuery: r.gradQuery, gradKey: r.gradKey, gradValue: r.gradValue };
      }
      if (denseForwardUnfit(ctx, dims) !== undefined || lse.dtype !== 'float32') return undefined;
      const dtype = query.dtype as GpuTensor['dtype'];
      const outs = await withGpuOutputs(ctx, op, { gradQuery: { shape: query.shape, dtype }, gradKey: { shape: key.shape, dtype }, gradValue: { shape: value.shape, dtype } }, (r) =>
        gpuDenseBackward(ctx, {
          query: g.query as GpuTensor,
          key: g.key as GpuTensor,
          value: g.value as GpuTensor,
          output: g.output as GpuTensor,
          gradOutput: g.gradOutput as GpuTensor,
          lse: g.lse as GpuTensor,
          gradQuery: r.gradQuery as GpuTensor,
          gradKey: r.gradKey as GpuTensor,
          gradValue: r.gradValue as GpuTensor,
          scale,
          isCausal: causal,
          ...varlen,
        }),
      );
      return { gradQuery: outs.gradQuery as GpuTensor, gradKey: outs.gradKey as GpuTensor, gradValue: outs.gradValue as GpuTensor };
    },
  );
  return res as { gradQuery: OutputOf<T>; gradKey: OutputOf<T>; gradValue: OutputOf<T> };
}

/**
 * Merge attention outputs over disjoint key sets of the same queries (NATTEN's `merge_attentions`):
 * outputs `[B, S(, ...), H, D_v]`, lses `[B, S(, ...), H]` (any layout where lse is the output without its
 * last dim). f64 math, folded left; returns the merged output (dtype of outputs[0]) and lse (float32).
 */
export async function mergeAttentions<T extends AnyTensor>(outputs: readonly T[], lses: readonly SameAs<T>[]): Promise<{ output: OutputOf<T>; lse: OutputOf<T> }> {
  const op = 'mergeAttentions';
  if (!Array.isArray(outputs) || !Array.isArray(lses)) throw new NattenArgumentError(`${op}: outputs and lses must be arrays of tensors`);
  if (outputs.length < 2) throw new NattenArgumentError(`${op}: needs at least 2 outputs to merge, got ${outputs.length}`);
  if (lses.length !== outputs.length) throw new NattenArgumentError(`${op}: got ${outputs.length} outputs but ${lses.length} lses; give one lse per output`);
  const inputs: Record<string, AnyTensor> = {};
  outputs.forEach((t, i) => {
    inputs[`outputs[${i}]`] = t;
  });
  lses.forEach((t, i) => {
    inputs[`lses[${i}]`] = t;
  });
  placement(op, inputs);
  const first = outputs[0] as T;
  const shape = first.shape;
  const lseShape = shape.slice(0, -1);
  outputs.forEach((t: AnyTensor, i: number) => {
    if (t.shape.length !== shape.length || t.shape.some((s: number, a: number) => s !== shape[a])) {
      throw new NattenArgumentError(`${op}: outputs[${i}] has shape ${formatShape(t.shape)} but outputs[0] has ${formatShape(shape)}; all must match`);
    }
    const l = lses[i] as T;
    if (l.shape.length !== lseShape.length || l.shape.some((s: number, a: number) => s !== lseShape[a])) {
      throw new NattenArgumentError(`${op}: lses[${i}] must have shape ${formatShape(lseShape)} (its output's shape without the last dim), got ${formatShape(l.shape)}`);
    }
  });
  const dimV = shape[shape.length - 1] as number;
  const res = await onHostOrGpu(
    op,
    inputs,
    (t) => {
      const outs = outputs.map((_, i) => values(t[`outputs[${i}]`] as Tensor));
      const ls = lses.map((_, i) => values(t[`lses[${i}]`] as Tensor));
      const m = mergeF64(outs, ls, dimV);
      return { output: hostTensor(shape, first.dtype, m.out), lse: hostTensor(lseShape, 'float32', m.lse) };
    },
    async (ctx, g) => {
      const gOuts = outputs.map((_, i) => g[`outputs[${i}]`] as GpuTensor);
      const gLses = lses.map((_, i) => g[`lses[${i}]`] as GpuTensor);
      // The kernel reads float32 lses; others (and mixed dtypes) merge on the host.
      if (gLses.some((t) => t.dtype !== 'float32') || gOuts.some((t) => t.dtype !== first.dtype)) return undefined;
      const dtype = first.dtype as GpuTensor['dtype'];
      const outs = await withGpuOutputs(ctx, op, { output: { shape, dtype }, lse: { shape: lseShape, dtype: 'float32' } }, (r) =>
        gpuAttentionMerge(ctx, { outputs: gOuts, lses: gLses, output: r.output as GpuTensor, lse: r.lse as GpuTensor }),
      );
      return { output: outs.output as GpuTensor, lse: outs.lse as GpuTensor };
    },
  );
  return { output: res.output as OutputOf<T>, lse: res.lse as OutputOf<T> };
}
