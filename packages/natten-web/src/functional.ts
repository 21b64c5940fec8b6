/**
 * Fused neighborhood attention, NATTEN's `natten.functional.na{1,2,3}d` (spec §3.8, §11), heads-last
 * `[B, *spatial, H, D]`, plus its backward. Every function returns new tensors.
 */
import {
  type BoolDimsOrScalar,
  type FusedBackwardArgs,
  type FusedForwardArgs,
  checkFusedBackward,
  checkFusedForward,
  type DimsOrScalar,
  formatShape,
  lseShape,
  type NaRank,
  NattenArgumentError,
  numel,
  type Tensor,
  type TensorLike,
  zeros,
} from '@natten-web/core';
import {
  denseForwardUnfit,
  fusedBackwardMma,
  fusedBackwardMmaOnHost,
  denseBackward as gpuDenseBackward,
  denseForward as gpuDenseForward,
  fusedBackward as gpuFusedBackward,
  fusedForward as gpuFusedForward,
  fusedForwardMma,
  fusedForwardMmaOnHost,
  type GpuContext,
  type GpuTensor,
  type MmaBackwardConfig,
  type MmaForwardConfig,
} from '@natten-web/gpu';
import {
  checkOptions,
  defined,
  execute,
  type GpuInputs,
  type HostInputs,
  hostTensor,
  placement,
  resolveScale,
  values,
  withGpuOutputs,
} from './common.ts';
import { autoConfig, autoMmaBackwardConfig, autoMmaConfig, type BackwardConfig, type ForwardConfig, isAuto, type KernelConfigOption, resolveKernelConfig } from './config.ts';
import { type DenseDims, denseBackward, denseDims, denseForward, mergeF64 } from './dense.ts';
import { type BackendName, runHost } from './runtime.ts';
import type { AnyTensor, OutputOf, SameAs } from './tensors.ts';

/** Options of `na{1,2,3}d`. Tuples are typed per rank (`DimsOrScalar<2>` for na2d). */
export interface NaOptions<R extends NaRank, T extends AnyTensor = AnyTensor> {
  /** Window size per axis, >= 2 (even sizes allowed without rpb). */
  readonly kernelSize: DimsOrScalar<R>;
  /** Dilation per axis, >= 1, kernelSize * dilation <= extent. Default 1. */
  readonly dilation?: DimsOrScalar<R> | undefined;
  /** Stride per axis (NATTEN >= 0.20), 1 <= stride <= kernelSize. Default 1. */
  readonly stride?: DimsOrScalar<R> | undefined;
  /** Causal masking per axis. Default false. */
  readonly isCausal?: BoolDimsOrScalar<R> | undefined;
  /** Logit scale; default head_dim^-0.5 **only when absent** (0 is honoured, unlike NATTEN's `scale or default`). */
  readonly scale?: number | undefined;
  /** Relative positional bias `[H, 2K0-1, ...]` added after scaling (non-causal, odd K). */
  readonly rpb?: T | null | undefined;
  /** Also return the logsumexp `[B, *spatial, H]` (float32, natural log). */
  readonly returnLse?: boolean | undefined;
  /** Extra keys every query attends to densely, heads-last `[B, N_add, H_kv, D]` (non-causal, same scale). */
  readonly additionalKeys?: T | null | undefined;
  /** Extra values `[B, N_add, H_kv, D_v]`; required exactly when additionalKeys is given. */
  readonly additionalValues?: T | null | undefined;
  /** Backend for host tensors: 'cpu' | 'webgpu' | 'auto'; default `getBackend()`. */
  readonly backend?: BackendName | undefined;
  /** Kernel tiles `{ forward?, backward? }` passed to the backend, or 'auto' (the autotuner on WebGPU; see docs/performance.md). */
  readonly config?: KernelConfigOption | undefined;
}

export interface AttentionWithLse<T> {
  readonly output: T;
  readonly lse: T;
}

/** `na{1,2,3}d`: the return type follows `returnLse` and where the inputs live. */
export interface NaFunction<R extends NaRank> {
  <T extends AnyTensor>(query: T, key: SameAs<T>, value: SameAs<T>, options: NaOptions<R, SameAs<T>> & { readonly returnLse: true }): Promise<AttentionWithLse<OutputOf<T>>>;
  <T extends AnyTensor>(query: T, key: SameAs<T>, value: SameAs<T>, options: NaOptions<R, SameAs<T>> & { readonly returnLse?: false | undefined }): Promise<OutputOf<T>>;
  <T extends AnyTensor>(query: T, key: SameAs<T>, value: SameAs<T>, options: NaOptions<R, SameAs<T>>): Promise<OutputOf<T> | AttentionWithLse<OutputOf<T>>>;
}

/** Options of `na{1,2,3}dBackward`: the forward's options (returnLse aside). */
export type NaBackwardOptions<R extends NaRank, T extends AnyTensor = AnyTensor> = Omit<NaOptions<R, T>, 'returnLse'>;

export interface NaBackwardResult<T> {
  readonly gradQuery: T;
  readonly gradKey: T;
  readonly gradValue: T;
  /** Present when `rpb` was given. */
  readonly gradRpb?: T | undefined;
  /** Present when additional keys/values were given. */
  readonly gradAdditionalKeys?: T | undefined;
  readonly gradAdditionalValues?: T | undefined;
}

/**
 * `na{1,2,3}dBackward(query, key, value, output, gradOutput, lse, options)`: `output` and `lse` are what
 * the forward returned with `returnLse: true` (the merged ones when additional KV was used).
 */
export type NaBackwardFunction<R extends NaRank> = <T extends AnyTensor>(
  query: T,
  key: SameAs<T>,
  value: SameAs<T>,
  output: SameAs<T>,
  gradOutput: SameAs<T>,
  lse: SameAs<T>,
  options: NaBackwardOptions<R, SameAs<T>>,
) => Promise<NaBackwardResult<OutputOf<T>>>;

const FORWARD_OPTIONS = [
  'kernelSize',
  'dilation',
  'stride',
  'isCausal',
  'scale',
  'rpb',
  'returnLse',
  'additionalKeys',
  'additionalValues',
  'backend',
  'config',
] as const;
const BACKWARD_OPTIONS = FORWARD_OPTIONS.filter((k) => k !== 'returnLse');

type Opts = Record<string, unknown>;

function naParams(o: Opts) {
  return {
    kernelSize: o.kernelSize as number | readonly number[],
    dilation: o.dilation as number | readonly number[] | undefined,
    stride: o.stride as number | readonly number[] | undefined,
    isCausal: o.isCausal as boolean | readonly boolean[] | undefined,
  };
}

function like(shape: readonly number[], dtype: TensorLike['dtype']): TensorLike {
  return { shape, dtype };
}

/** Additional-KV arguments: both or neither; shapes [B, N_add, H_kv, D(_v)] against the flattened query. */
function additionalKv(op: string, o: Opts, query: TensorLike, value: TensorLike, rank: NaRank): { keys: AnyTensor; values: AnyTensor; dims: DenseDims } | undefined {
  const keys = (o.additionalKeys ?? undefined) as AnyTensor | undefined;
  const vals = (o.additionalValues ?? undefined) as AnyTensor | undefined;
  if (keys === undefined && vals === undefined) return undefined;
  if (keys === undefined || vals === undefined) {
    throw new NattenArgumentError(
      `${op}: ${keys === undefined ? 'additionalValues was given without additionalKeys' : 'additionalKeys was given without additionalValues'}; pass both or neither`,
    );
  }
  const B = query.shape[0] as number;
  const N = numel(query.shape.slice(1, 1 + rank));
  const H = query.shape[rank + 1] as number;
  const D = query.shape[rank + 2] as number;
  const dims = denseDims(op, [B, N, H, D], keys.shape, vals.shape, ['query', 'additionalKeys', 'additionalValues']);
  const Dv = value.shape[rank + 2] as number;
  if (dims.dimV !== Dv) {
    throw new NattenArgumentError(`${op}: additionalValues head_dim=${dims.dimV} must equal value head_dim=${Dv} (shape ${formatShape(vals.shape)})`);
  }
  for (const [name, t] of [['additionalKeys', keys], ['additionalValues', vals]] as const) {
    if (t.dtype !== query.dtype) throw new NattenArgumentError(`${op}: ${name} is ${t.dtype} but query is ${query.dtype}; they must share one dtype`);
  }
  return { keys, values: vals, dims };
}

function checkReturnLse(op: string, value: unknown): boolean {
  if (value === undefined) return false;
  if (typeof value !== 'boolean') throw new NattenArgumentError(`${op}: returnLse must be a boolean, got ${String(value)}`);
  return value;
}

/**
 * Views of NA's heads-last tensors as the dense ops' `[B, N, H, D]` (q-like, `q`), `[B, N, H, D_v]` (output-like, `o`)
 * and `[B, N, H]` (lse, `l`), N the flattened spatial extent: the same buffers, reshaped.
 */
function denseViews(d: DenseDims): { q: (t: GpuTensor) => GpuTensor; o: (t: GpuTensor) => GpuTensor; l: (t: GpuTensor) => GpuTensor } {
  const view = (shape: number[]) => (t: GpuTensor): GpuTensor => ({ ...t, shape });
  return { q: view([d.batch, d.queries, d.heads, d.dim]), o: view([d.batch, d.queries, d.heads, d.dimV]), l: view([d.batch, d.queries, d.heads]) };
}

/** Host merge of NA with the dense attention over the additional tokens. */
function mergeAdditionalHost(dims: DenseDims, t: HostInputs, output: Tensor, lse: Tensor, scale: number): { output: Tensor; lse: Tensor } {
  const dense = denseForward(dims, values(t.query as Tensor), values(t.additionalKeys as Tensor), values(t.additionalValues as Tensor), scale, false);
  const merged = mergeF64([values(output), dense.out], [values(lse), dense.lse], dims.dimV);
  return { output: hostTensor(output.shape, output.dtype, merged.out), lse: hostTensor(lse.shape, 'float32', merged.lse) };
}

async function readAll(ctx: GpuContext, g: GpuInputs): Promise<Record<string, Tensor | undefined>> {
  const out: Record<string, Tensor | undefined> = {};
  for (const [k, t] of Object.entries(g)) out[k] = t ? await ctx.read(t) : undefined;
  return out;
}

async function naForward(rank: NaRank, query: AnyTensor, key: AnyTensor, value: AnyTensor, options: unknown): Promise<unknown> {
  const op = `na${rank}d`;
  const o = checkOptions(op, options, FORWARD_OPTIONS);
  const rpb = (o.rpb ?? undefined) as AnyTensor | undefined;
  placement(op, { query, key, value, rpb, additionalKeys: o.additionalKeys, additionalValues: o.additionalValues });
  const returnLse = checkReturnLse(op, o.returnLse);
  const scale = resolveScale(op, o.scale, query.shape[query.shape.length - 1] as number);
  const tiles = resolveKernelConfig(op, rank, 'forward', o.config);
  const params = naParams(o);
  const outShape = [...query.shape.slice(0, -1), value.shape[value.shape.length - 1] as number];
  const problem = checkFusedForward(op, rank, { query, key, value, output: like(outShape, query.dtype), rpb, ...params, attnScale: scale });
  const extra = additionalKv(op, o, query, value, rank);
  const needLse = returnLse || extra !== undefined;
  const lseDims = lseShape(problem.batch, problem.spatial, problem.heads);
  const args = { ...params, attnScale: scale };
  const auto = isAuto(o.config);
  const tuneProblem = { ...problem, hasLse: needLse };
  // Where the route takes the mma path, the tuner's mma config comes back as `mma` and the caller runs it (GPU
  // tensors directly, host tensors through `fusedForwardMmaOnHost`); without a context nothing is tuned.
  const tilesFor = async (ctx: GpuContext | undefined): Promise<ForwardConfig & { readonly mma?: MmaForwardConfig }> => {
    // Where the device's default runs the tensor-core (mma) forward, 'auto' keeps that path (it measured 1.5-10.8x
    // faster than the plain default where it applies, docs/performance.md) and asks the tuner for its config among
    // the mma configs (cached, tabled, timed in 'tune' mode, else the default).
    if (ctx && auto) {
      const shapes: FusedForwardArgs<TensorLike> = { ...args, query, key, value, rpb: rpb ?? null, output: like(outShape, query.dtype), logsumexp: needLse ? like(lseDims, 'float32') : undefined };
      if (gpuFusedForward.route(ctx, rank, shapes) !== undefined) {
        const mma = await autoMmaConfig(ctx, tuneProblem);
        return { queryTileSize: undefined, keyTileSize: undefined, ...(mma ? { mma } : {}) };
      }
    }
    const t = ctx && auto ? await autoConfig(ctx, 'forward', tuneProblem) : tiles;
    return { queryTileSize: t.queryTileSize, keyTileSize: t.keyTileSize, ...(t.lanes !== undefined ? { lanes: t.lanes } : {}) };
  };

  const result = await execute({
    op,
    requested: o.backend as BackendName | undefined,
    inputs: { query, key, value, rpb, additionalKeys: extra?.keys, additionalValues: extra?.values },
    async host(t, backend) {
      const output = zeros(outShape, query.dtype);
      const lse = needLse ? zeros(lseDims, 'float32') : undefined;
      await runHost(op, backend, query.dtype, async (b, ctx) => {
        const { mma, ...tiles } = await tilesFor(ctx);
        const hostArgs = { ...args, ...tiles, output, query: t.query as Tensor, key: t.key as Tensor, value: t.value as Tensor, rpb: t.rpb, logsumexp: lse };
        // A tuned tensor-core config runs as tuned on host tensors too (the backend's own op runs the default one).
        if (ctx && mma) await fusedForwardMmaOnHost(ctx, rank, hostArgs, mma);
        else await b.fusedForward(rank, hostArgs);
      });
      if (!extra || !lse) return defined({ output, lse });
      return mergeAdditionalHost(extra.dims, t, output, lse, scale);
    },
    async gpu(ctx, g) {
      const dtype = query.dtype as GpuTensor['dtype'];
      const { mma, ...tiles } = await tilesFor(ctx);
      const gArgs = { ...args, ...tiles, query: g.query as GpuTensor, key: g.key as GpuTensor, value: g.value as GpuTensor, rpb: g.rpb };
      gpuFusedForward.check(ctx, rank, { ...gArgs, output: like(outShape, dtype), logsumexp: needLse ? like(lseDims, 'float32') : undefined });
      const outs = await withGpuOutputs(ctx, op, { output: { shape: outShape, dtype }, lse: needLse ? { shape: lseDims, dtype: 'float32' } : undefined }, (r) =>
        mma
          ? fusedForwardMma(ctx, rank, { ...gArgs, output: r.output as GpuTensor, logsumexp: r.lse }, mma)
          : gpuFusedForward(ctx, rank, { ...gArgs, output: r.output as GpuTensor, logsumexp: r.lse }),
      );
      if (!extra || !outs.lse || !outs.output) return defined(outs);
      if (denseForwardUnfit(ctx, extra.dims) === undefined) {
        // Dense attention over the additional tokens, merged into NA's output and lse in place (in its epilogue).
        const { output, lse } = outs;
        try {
          const as = denseViews(extra.dims);
          await gpuDenseForward(ctx, {
            query: as.q(g.query as GpuTensor),
            key: g.additionalKeys as GpuTensor,
            value: g.additionalValues as GpuTensor,
            output: as.o(output),
            lse: as.l(lse),
            scale,
            mergeInto: true,
          });
        } catch (e) {
          ctx.freeTensor(output);
          ctx.freeTensor(lse);
          throw e;
        }
        return { output, lse };
      }
      // Head dims or a grid past the dense kernel's: read back, merge on the host, upload.
      try {
        const host = await readAll(ctx, g);
        const merged = mergeAdditionalHost(extra.dims, host, await ctx.read(outs.output), await ctx.read(outs.lse), scale);
        return { output: ctx.upload(merged.output, `${op}.output`), lse: ctx.upload(merged.lse, `${op}.lse`) };
      } finally {
        ctx.freeTensor(outs.output);
        ctx.freeTensor(outs.lse);
      }
    },
  });
  return returnLse ? { output: result.output, lse: result.lse } : result.output;
}

function addInto(t: Tensor, extra: Float64Array): Tensor {
  const v = values(t);
  for (let i = 0; i < v.length; i++) v[i] = (v[i] as number) + (extra[i] as number);
  return hostTensor(t.shape, t.dtype, v);
}

/** Dense-branch gradients from the merged output and lse; dQ is added to the NA dQ. */
function additionalBackwardHost(dims: DenseDims, t: HostInputs, gradQuery: Tensor, scale: number) {
  const g = denseBackward(
    dims,
    values(t.query as Tensor),
    values(t.additionalKeys as Tensor),
    values(t.additionalValues as Tensor),
    values(t.output as Tensor),
    values(t.gradOutput as Tensor),
    values(t.lse as Tensor),
    scale,
    false,
  );
  const k = t.additionalKeys as Tensor;
  const v = t.additionalValues as Tensor;
  return {
    gradQuery: addInto(gradQuery, g.dq),
    gradAdditionalKeys: hostTensor(k.shape, k.dtype, g.dk),
    gradAdditionalValues: hostTensor(v.shape, v.dtype, g.dv),
  };
}

async function naBackward(
  rank: NaRank,
  query: AnyTensor,
  key: AnyTensor,
  value: AnyTensor,
  output: AnyTensor,
  gradOutput: AnyTensor,
  lse: AnyTensor,
  options: unknown,
): Promise<Record<string, AnyTensor>> {
  const op = `na${rank}dBackward`;
  const o = checkOptions(op, options, BACKWARD_OPTIONS);
  const rpb = (o.rpb ?? undefined) as AnyTensor | undefined;
  placement(op, { query, key, value, output, gradOutput, lse, rpb, additionalKeys: o.additionalKeys, additionalValues: o.additionalValues });
  const scale = resolveScale(op, o.scale, query.shape[query.shape.length - 1] as number);
  const cfg = resolveKernelConfig(op, rank, 'backward', o.config);
  const params = naParams(o);
  // The call's shapes (no data), for validation and for the GPU route below.
  const shapes: FusedBackwardArgs<TensorLike> = {
    query,
    key,
    value,
    output,
    gradOutput,
    logsumexp: lse,
    gradQuery: like(query.shape, query.dtype),
    gradKey: like(key.shape, key.dtype),
    gradValue: like(value.shape, value.dtype),
    rpb,
    ...params,
    attnScale: scale,
  };
  const bwdProblem = checkFusedBackward(op, rank, shapes);
  const extra = additionalKv(op, o, query, value, rank);
  const args = { ...params, attnScale: scale };
  const auto = isAuto(o.config);
  const configFor = async (ctx: GpuContext | undefined): Promise<BackwardConfig & { readonly mma?: MmaBackwardConfig }> => {
    // As for the forward: where the device's default runs the tensor-core (mma) backward, 'auto' keeps that path
    // (measured 1.02-2.6x faster than the plain default) and asks the tuner for its config among the mma configs,
    // which the caller runs (GPU tensors directly, host tensors through `fusedBackwardMmaOnHost`).
    if (ctx && auto && gpuFusedBackward.route(ctx, rank, shapes) !== undefined) {
      const mma = await autoMmaBackwardConfig(ctx, bwdProblem);
      return mma ? { mma } : {};
    }
    const c = ctx && auto ? await autoConfig(ctx, 'backward', { ...bwdProblem, hasGradRpb: rpb !== undefined }) : cfg;
    return {
      queryTileSize: c.queryTileSize,
      keyTileSize: c.keyTileSize,
      numSplitsKey: c.numSplitsKey,
      computeDeltaWithTorch: c.computeDeltaWithTorch,
      ...(c.lanes !== undefined ? { lanes: c.lanes } : {}),
    };
  };
  return execute({
    op,
    requested: o.backend as BackendName | undefined,
    inputs: { query, key, value, output, gradOutput, lse, rpb, additionalKeys: extra?.keys, additionalValues: extra?.values },
    async host(t, backend) {
      const gradQuery = zeros(query.shape, query.dtype);
      const gradKey = zeros(key.shape, key.dtype);
      const gradValue = zeros(value.shape, value.dtype);
      const gradRpb = t.rpb ? zeros(t.rpb.shape, t.rpb.dtype) : undefined;
      await runHost(op, backend, query.dtype, async (b, ctx) => {
        const { mma, ...tiles } = await configFor(ctx);
        const hostArgs = {
          ...args,
          ...tiles,
          gradQuery,
          gradKey,
          gradValue,
          gradRpb,
          query: t.query as Tensor,
          key: t.key as Tensor,
          value: t.value as Tensor,
          output: t.output as Tensor,
          gradOutput: t.gradOutput as Tensor,
          logsumexp: t.lse as Tensor,
          rpb: t.rpb,
        };
        // As in the forward: a tuned tensor-core config runs as tuned on host tensors too.
        if (ctx && mma) await fusedBackwardMmaOnHost(ctx, rank, hostArgs, mma);
        else await b.fusedBackward(rank, hostArgs);
      });
      if (!extra) return defined({ gradQuery, gradKey, gradValue, gradRpb });
      return defined({ ...additionalBackwardHost(extra.dims, t, gradQuery, scale), gradKey, gradValue, gradRpb });
    },
    async gpu(ctx, g) {
      const dtype = query.dtype as GpuTensor['dtype'];
      const { mma, ...tiles } = await configFor(ctx);
      const gArgs = {
        ...args,
        ...tiles,
        query: g.query as GpuTensor,
        key: g.key as GpuTensor,
        value: g.value as GpuTensor,
        output: g.output as GpuTensor,
        gradOutput: g.gradOutput as GpuTensor,
        logsumexp: g.lse as GpuTensor,
        rpb: g.rpb,
      };
      const specs = {
        gradQuery: { shape: query.shape, dtype },
        gradKey: { shape: key.shape, dtype },
        gradValue: { shape: value.shape, dtype },
        gradRpb: g.rpb ? { shape: g.rpb.shape, dtype } : undefined,
      };
      gpuFusedBackward.check(ctx, rank, {
        ...gArgs,
        gradQuery: like(query.shape, dtype),
        gradKey: like(key.shape, dtype),
        gradValue: like(value.shape, dtype),
        gradRpb: specs.gradRpb ? like(specs.gradRpb.shape, dtype) : undefined,
      });
      const outs = await withGpuOutputs(ctx, op, specs, (r) => {
        const a = { ...gArgs, gradQuery: r.gradQuery as GpuTensor, gradKey: r.gradKey as GpuTensor, gradValue: r.gradValue as GpuTensor, gradRpb: r.gradRpb };
        return mma ? fusedBackwardMma(ctx, rank, a, mma) : gpuFusedBackward(ctx, rank, a);
      });
      if (!extra || !outs.gradQuery) return defined(outs);
      if (denseForwardUnfit(ctx, extra.dims) === undefined && (g.lse as GpuTensor).dtype === 'float32') {
        // The dense branch's gradients from the merged output and lse; its dQ added to NA's in place.
        const as = denseViews(extra.dims);
        const ak = g.additionalKeys as GpuTensor;
        const av = g.additionalValues as GpuTensor;
        const addOuts = await withGpuOutputs(ctx, op, { gradAdditionalKeys: { shape: ak.shape, dtype }, gradAdditionalValues: { shape: av.shape, dtype } }, (r) =>
          gpuDenseBackward(ctx, {
            query: as.q(g.query as GpuTensor),
            key: ak,
            value: av,
            output: as.o(g.output as GpuTensor),
            lse: as.l(g.lse as GpuTensor),
            gradOutput: as.o(g.gradOutput as GpuTensor),
            gradQuery: as.q(outs.gradQuery as GpuTensor),
            gradKey: r.gradAdditionalKeys as GpuTensor,
            gradValue: r.gradAdditionalValues as GpuTensor,
            scale,
            accumulateGradQuery: true,
          }),
        );
        return defined({ ...outs, ...addOuts });
      }
      // Head dims or a grid past the dense kernels': read back, compute on the host, upload.
      const host = await readAll(ctx, g);
      const dq = await ctx.read(outs.gradQuery);
      ctx.freeTensor(outs.gradQuery);
      const add = additionalBackwardHost(extra.dims, host, dq, scale);
      return defined({
        ...outs,
        gradQuery: ctx.upload(add.gradQuery, `${op}.gradQuery`),
        gradAdditionalKeys: ctx.upload(add.gradAdditionalKeys, `${op}.gradAdditionalKeys`),
        gradAdditionalValues: ctx.upload(add.gradAdditionalValues, `${op}.gradAdditionalValues`),
      });
    },
  });
}

function forwardFor<R extends NaRank>(rank: R): NaFunction<R> {
  return ((query: AnyTensor, key: AnyTensor, value: AnyTensor, options: unknown) => naForward(rank, query, key, value, options)) as NaFunction<R>;
}

function backwardFor<R extends NaRank>(rank: R): NaBackwardFunction<R> {
  return ((query: AnyTensor, key: AnyTensor, value: AnyTensor, output: AnyTensor, gradOutput: AnyTensor, lse: AnyTensor, options: unknown) =>
    naBackward(rank, query, key, value, output, gradOutput, lse, options)) as unknown as NaBackwardFunction<R>;
}

/** 1-D neighborhood attention: q/k/v `[B, L, H, D]` (v may have D_v; k/v may have fewer heads, GQA). */
export const na1d: NaFunction<1> = forwardFor(1);
/** 2-D neighborhood attention: q/k/v `[B, X, Y, H, D]`. */
export const na2d: NaFunction<2> = forwardFor(2);
/** 3-D neighborhood attention: q/k/v `[B, X, Y, Z, H, D]`. */
export const na3d: NaFunction<3> = forwardFor(3);

/** Gradients of `na1d` with respect to query, key, value (and rpb, additional KV when given). */
export const na1dBackward: NaBackwardFunction<1> = backwardFor(1);
export const na2dBackward: NaBackwardFunction<2> = backwardFor(2);
export const na3dBackward: NaBackwardFunction<3> = backwardFor(3);
