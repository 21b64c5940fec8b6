/**
 * BMM-style (unfused) neighborhood attention, NATTEN v0.17.5's `na{1,2,3}d_qk` / `na{1,2,3}d_av` and
 * their backward ops, heads-first `[B, H, *spatial, D]`; `attn` is `[B, H, *spatial, prod(K)]`.
 * No scaling happens inside: pre-scale the query (as NATTEN's modules do), softmax the logits yourself.
 */
import {
  type BoolDimsOrScalar,
  checkAvBackward,
  checkAvForward,
  checkQkBackward,
  checkQkForward,
  type DimsOrScalar,
  type NaRank,
  normalizeDims,
  product,
  type Tensor,
  type TensorLike,
  zeros,
} from '@natten-web/core';
import {
  avBackward as gpuAvBackward,
  avForward as gpuAvForward,
  type GpuTensor,
  qkBackward as gpuQkBackward,
  qkForward as gpuQkForward,
} from '@natten-web/gpu';
import { checkOptions, defined, execute, withGpuOutputs } from './common.ts';
import { type BackendName, runHost } from './runtime.ts';
import type { AnyTensor, OutputOf, SameAs } from './tensors.ts';

export interface NaBmmOptions<R extends NaRank> {
  readonly kernelSize: DimsOrScalar<R>;
  readonly dilation?: DimsOrScalar<R> | undefined;
  readonly stride?: DimsOrScalar<R> | undefined;
  readonly isCausal?: BoolDimsOrScalar<R> | undefined;
  readonly backend?: BackendName | undefined;
}

export interface NaQkOptions<R extends NaRank, T extends AnyTensor = AnyTensor> extends NaBmmOptions<R> {
  /** Bias `[H, 2K0-1, ...]` added to the logits (non-causal, odd K); in the backward, asks for gradRpb. */
  readonly rpb?: T | null | undefined;
}

export type NaQkFunction<R extends NaRank> = <T extends AnyTensor>(query: T, key: SameAs<T>, options: NaQkOptions<R, SameAs<T>>) => Promise<OutputOf<T>>;
export type NaAvFunction<R extends NaRank> = <T extends AnyTensor>(attn: T, value: SameAs<T>, options: NaBmmOptions<R>) => Promise<OutputOf<T>>;
export type NaQkBackwardFunction<R extends NaRank> = <T extends AnyTensor>(
  query: T,
  key: SameAs<T>,
  gradAttn: SameAs<T>,
  options: NaQkOptions<R, SameAs<T>>,
) => Promise<{ gradQuery: OutputOf<T>; gradKey: OutputOf<T>; gradRpb?: OutputOf<T> | undefined }>;
export type NaAvBackwardFunction<R extends NaRank> = <T extends AnyTensor>(
  attn: T,
  value: SameAs<T>,
  gradOutput: SameAs<T>,
  options: NaBmmOptions<R>,
) => Promise<{ gradAttn: OutputOf<T>; gradValue: OutputOf<T> }>;

const BMM_OPTIONS = ['kernelSize', 'dilation', 'stride', 'isCausal', 'backend'] as const;
const QK_OPTIONS = [...BMM_OPTIONS, 'rpb'] as const;

type Opts = Record<string, unknown>;

function params(o: Opts) {
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

function gpuDtype(t: TensorLike): GpuTensor['dtype'] {
  return t.dtype as GpuTensor['dtype'];
}

async function qk(rank: NaRank, query: AnyTensor, key: AnyTensor, options: unknown): Promise<AnyTensor> {
  const op = `na${rank}dQk`;
  const o = checkOptions(op, options, QK_OPTIONS);
  const rpb = (o.rpb ?? undefined) as AnyTensor | undefined;
  const p = params(o);
  const slots = product(normalizeDims(op, 'kernel_size', p.kernelSize, rank, 2));
  const attnShape = [...query.shape.slice(0, -1), slots];
  checkQkForward(op, rank, { query, key, rpb, attn: like(attnShape, query.dtype), ...p });
  const res = await execute({
    op,
    requested: o.backend as BackendName | undefined,
    inputs: { query, key, rpb },
    async host(t, backend) {
      const attn = zeros(attnShape, query.dtype);
      await runHost(op, backend, query.dtype, (b) => b.qkForward(rank, { ...p, attn, query: t.query as Tensor, key: t.key as Tensor, rpb: t.rpb }));
      return { attn };
    },
    async gpu(ctx, g) {
      const a = { ...p, query: g.query as GpuTensor, key: g.key as GpuTensor, rpb: g.rpb };
      gpuQkForward.check(ctx, rank, { ...a, attn: like(attnShape, query.dtype) });
      return defined(await withGpuOutputs(ctx, op, { attn: { shape: attnShape, dtype: gpuDtype(query) } }, (r) => gpuQkForward(ctx, rank, { ...a, attn: r.attn as GpuTensor })));
    },
  });
  return res.attn as AnyTensor;
}

async function av(rank: NaRank, attn: AnyTensor, value: AnyTensor, options: unknown): Promise<AnyTensor> {
  const op = `na${rank}dAv`;
  const o = checkOptions(op, options, BMM_OPTIONS);
  const p = params(o);
  checkAvForward(op, rank, { attn, value, output: like(value.shape, value.dtype), ...p });
  const res = await execute({
    op,
    requested: o.backend as BackendName | undefined,
    inputs: { attn, value },
    async host(t, backend) {
      const output = zeros(value.shape, value.dtype);
      await runHost(op, backend, value.dtype, (b) => b.avForward(rank, { ...p, output, attn: t.attn as Tensor, value: t.value as Tensor }));
      return { output };
    },
    async gpu(ctx, g) {
      const a = { ...p, attn: g.attn as GpuTensor, value: g.value as GpuTensor };
      gpuAvForward.check(ctx, rank, { ...a, output: like(value.shape, value.dtype) });
      return defined(await withGpuOutputs(ctx, op, { output: { shape: value.shape, dtype: gpuDtype(value) } }, (r) => gpuAvForward(ctx, rank, { ...a, output: r.output as GpuTensor })));
    },
  });
  return res.output as AnyTensor;
}

async function qkBackward(rank: NaRank, query: AnyTensor, key: AnyTensor, gradAttn: AnyTensor, options: unknown): Promise<Record<string, AnyTensor>> {
  const op = `na${rank}dQkBackward`;
  const o = checkOptions(op, options, QK_OPTIONS);
  const rpb = (o.rpb ?? undefined) as AnyTensor | undefined;
  const p = params(o);
  const rpbLike = rpb ? like(rpb.shape, rpb.dtype) : undefined;
  checkQkBackward(op, rank, { query, key, gradAttn, gradQuery: like(query.shape, query.dtype), gradKey: like(key.shape, key.dtype), gradRpb: rpbLike, ...p });
  return execute({
    op,
    requested: o.backend as BackendName | undefined,
    inputs: { query, key, gradAttn, rpb },
    async host(t, backend) {
      const gradQuery = zeros(query.shape, query.dtype);
      const gradKey = zeros(key.shape, key.dtype);
      // The seed op accumulates into d_rpb: start from zeros (NATTEN's wrapper does zeros_like).
      const gradRpb = t.rpb ? zeros(t.rpb.shape, t.rpb.dtype) : undefined;
      await runHost(op, backend, query.dtype, (b) =>
        b.qkBackward(rank, { ...p, gradQuery, gradKey, gradRpb, gradAttn: t.gradAttn as Tensor, query: t.query as Tensor, key: t.key as Tensor }),
      );
      return defined({ gradQuery, gradKey, gradRpb });
    },
    async gpu(ctx, g) {
      const a = { ...p, gradAttn: g.gradAttn as GpuTensor, query: g.query as GpuTensor, key: g.key as GpuTensor };
      gpuQkBackward.check(ctx, rank, { ...a, gradQuery: like(query.shape, query.dtype), gradKey: like(key.shape, key.dtype), gradRpb: rpbLike });
      const specs = {
        gradQuery: { shape: query.shape, dtype: gpuDtype(query) },
        gradKey: { shape: key.shape, dtype: gpuDtype(key) },
        gradRpb: rpb ? { shape: rpb.shape, dtype: gpuDtype(rpb) } : undefined,
      };
      // New GPU buffers are zero-filled, so the accumulating d_rpb starts from zero.
      return defined(
        await withGpuOutputs(ctx, op, specs, (r) =>
          gpuQkBackward(ctx, rank, { ...a, gradQuery: r.gradQuery as GpuTensor, gradKey: r.gradKey as GpuTensor, gradRpb: r.gradRpb }),
        ),
      );
    },
  });
}

async function avBackward(rank: NaRank, attn: AnyTensor, value: AnyTensor, gradOutput: AnyTensor, options: unknown): Promise<Record<string, AnyTensor>> {
  const op = `na${rank}dAvBackward`;
  const o = checkOptions(op, options, BMM_OPTIONS);
  const p = params(o);
  checkAvBackward(op, rank, { attn, value, gradOutput, gradAttn: like(attn.shape, attn.dtype), gradValue: like(value.shape, value.dtype), ...p });
  return execute({
    op,
    requested: o.backend as BackendName | undefined,
    inputs: { attn, value, gradOutput },
    async host(t, backend) {
      const gradAttn = zeros(attn.shape, attn.dtype);
      const gradValue = zeros(value.shape, value.dtype);
      await runHost(op, backend, value.dtype, (b) =>
        b.avBackward(rank, { ...p, gradAttn, gradValue, gradOutput: t.gradOutput as Tensor, attn: t.attn as Tensor, value: t.value as Tensor }),
      );
      return { gradAttn, gradValue };
    },
    async gpu(ctx, g) {
      const a = { ...p, gradOutput: g.gradOutput as GpuTensor, attn: g.attn as GpuTensor, value: g.value as GpuTensor };
      gpuAvBackward.check(ctx, rank, { ...a, gradAttn: like(attn.shape, attn.dtype), gradValue: like(value.shape, value.dtype) });
      const specs = { gradAttn: { shape: attn.shape, dtype: gpuDtype(attn) }, gradValue: { shape: value.shape, dtype: gpuDtype(value) } };
      return defined(await withGpuOutputs(ctx, op, specs, (r) => gpuAvBackward(ctx, rank, { ...a, gradAttn: r.gradAttn as GpuTensor, gradValue: r.gradValue as GpuTensor })));
    },
  });
}

function qkFor<R extends NaRank>(rank: R): NaQkFunction<R> {
  return ((q: AnyTensor, k: AnyTensor, o: unknown) => qk(rank, q, k, o)) as NaQkFunction<R>;
}
function avFor<R extends NaRank>(rank: R): NaAvFunction<R> {
  return ((a: AnyTensor, v: AnyTensor, o: unknown) => av(rank, a, v, o)) as NaAvFunction<R>;
}
function qkBackwardFor<R extends NaRank>(rank: R): NaQkBackwardFunction<R> {
  return ((q: AnyTensor, k: AnyTensor, d: AnyTensor, o: unknown) => qkBackward(rank, q, k, d, o)) as NaQkBackwardFunction<R>;
}
function avBackwardFor<R extends NaRank>(rank: R): NaAvBackwardFunction<R> {
  return ((a: AnyTensor, v: AnyTensor, d: AnyTensor, o: unknown) => avBackward(rank, a, v, d, o)) as NaAvBackwardFunction<R>;
}

/** QK: query/key `[B, H, L, D]` -> attn `[B, H, L, K]` (unscaled logits + rpb; -Infinity in causal-invalid slots). */
export const na1dQk: NaQkFunction<1> = qkFor(1);
export const na2dQk: NaQkFunction<2> = qkFor(2);
export const na3dQk: NaQkFunction<3> = qkFor(3);
/** AV: attn `[B, H, *sp, P]`, value `[B, H, *sp, D]` -> output `[B, H, *sp, D]` (invalid slots skipped). */
export const na1dAv: NaAvFunction<1> = avFor(1);
export const na2dAv: NaAvFunction<2> = avFor(2);
export const na3dAv: NaAvFunction<3> = avFor(3);
/** QK backward: gradAttn -> gradQuery, gradKey (and gradRpb when `rpb` is passed). */
export const na1dQkBackward: NaQkBackwardFunction<1> = qkBackwardFor(1);
export const na2dQkBackward: NaQkBackwardFunction<2> = qkBackwardFor(2);
export const na3dQkBackward: NaQkBackwardFunction<3> = qkBackwardFor(3);
/** AV backward: gradOutput -> gradAttn (0 in invalid slots), gradValue. */
export const na1dAvBackward: NaAvBackwardFunction<1> = avBackwardFor(1);
export const na2dAvBackward: NaAvBackwardFunction<2> = avBackwardFor(2);
export const na3dAvBackward: NaAvBackwardFunction<3> = avBackwardFor(3);
