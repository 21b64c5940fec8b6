/**
 * Dense attention (`attention`, FMHA) and the merge of partial attentions on GPU tensors (`@natten-web/wgsl`'s
 * `generateDenseForward` and `generateAttentionMerge`): the additional-KV path of `na{1,2,3}d`, `attention` and
 * `mergeAttentions` of the umbrella. Heads-last; f32 math and accumulation; lse float32.
 */
import { checkVarlen, type DenseDims, denseDims, formatShape, NattenArgumentError } from '@natten-web/core';
import {
  checkGpuDType,
  DENSE_MAX_DIM,
  DENSE_MMA_CHUNKS,
  DENSE_MMA_MAX_DIM,
  DENSE_QUERIES,
  type DenseMmaKind,
  type DenseMmaSpec,
  denseMmaWorkgroupBytes,
  generateAttentionMerge,
  generateDenseBackwardKv,
  generateDenseBackwardKvMma,
  generateDenseBackwardQuery,
  generateDenseBackwardQueryMma,
  generateDenseForward,
  generateDenseForwardMma,
  generateDenseGradReduce,
  mergeRowsPerWorkgroup,
} from '@natten-web/wgsl';
import { type DispatchCommand, foldWorkgroups, type GpuContext, type GpuTensor } from '../context.ts';
import { absMaxCommand, mmaAvailability } from './na-fused-forward-mma.ts';
import { callKey, type GpuOpPlan, memoKernel, memoPerContext, requireF16Feature, runPlan } from './op.ts';

export interface DenseForwardArgs {
  /** `[B, S, H, D]`. */
  readonly query: GpuTensor;
  /** `[B, S_kv, H_kv, D]`; H a multiple of H_kv (GQA). */
  readonly key: GpuTensor;
  /** `[B, S_kv, H_kv, D_v]`. */
  readonly value: GpuTensor;
  /** `[B, S, H, D_v]`, query's dtype. */
  readonly output: GpuTensor;
  /** `[B, S, H]` float32. */
  readonly lse: GpuTensor;
  /** Logit scale (NATTEN's `attn_scale`): the caller resolves the default `D^-0.5`. */
  readonly scale: number;
  /** Top-left aligned: query i sees keys j <= i. */
  readonly isCausal?: boolean;
  /**
   * Variable-length sequences packed along the token axis (batch 1, NATTEN's varlen): cumulative offsets, `n + 1`
   * non-decreasing integers from 0 to the query (key) count. Query token t of sequence s attends to that sequence's
   * keys only (causal: the first `t - cumulativeSeqlenQ[s] + 1` of them). Both or neither.
   */
  readonly cumulativeSeqlenQ?: ArrayLike<number>;
  readonly cumulativeSeqlenKv?: ArrayLike<number>;
  /**
   * `output` and `lse` already hold another attention of the same queries over other keys (NA's, on the
   * additional-KV path): merge this one into them in place by logsumexp (NATTEN's `merge_attentions`), in the kernel's
   * epilogue, instead of writing them.
   */
  readonly mergeInto?: boolean;
}

const FWD = 'attention';

export interface DenseOptions {
  /**
   * `'auto'` (default): the tensor-core kernels (`generateDenseForwardMma` and its backward twins) for float16 tensors,
   * and as the split for float32 ones, whose head dims are multiples of 16 up to 128, where the adapter has f16
   * subgroup matrices and 32-wide subgroups; else the plain kernels (f32 loops, one query or key per invocation). `'mma'` requires the tensor cores (throws
   * saying why they cannot run the call); `'plain'` forces the others.
   */
  readonly path?: 'auto' | 'mma' | 'plain';
  /**
   * Tensor-core kernels only (tuning): keys per staged chunk of the forward and the dQ kernel, query rows per chunk of
   * the dK/dV kernel (16, 32 or 64, within the device's workgroup memory), and `tight`: scratch rows without padding
   * (true) or with it (false). Absent: the defaults (`defaultLayout`: 16 and unpadded, the causal forward 32 padded).
   */
  readonly chunk?: { readonly forward?: 16 | 32 | 64; readonly dq?: 16 | 32 | 64; readonly dkv?: 16 | 32 | 64 };
  readonly tight?: boolean;
}

/** Why the tensor-core dense kernels cannot run a call, or undefined (float32 runs as the split). */
function denseMmaUnfit(ctx: GpuContext, dims: DenseDims, dtype: string): string | undefined {
  const avail = mmaAvailability(ctx);
  if ('why' in avail) return avail.why;
  if (dtype !== 'float16' && dtype !== 'float32') return `it needs float16 or float32 tensors, not ${dtype}`;
  for (const [name, d] of [
    ['query head_dim', dims.dim],
    ['value head_dim', dims.dimV],
  ] as const) {
    if (d % 16 !== 0 || d > DENSE_MMA_MAX_DIM) return `${name}=${d} must be a multiple of 16 up to ${DENSE_MMA_MAX_DIM}`;
  }
  return undefined;
}

/**
 * The tensor-core kernels' default chunk and scratch layout: 16 keys (query rows in the dK/dV kernel) per chunk with
 * unpadded scratch rows, except the causal forward without varlen, 32 keys with padded rows. H200, session 23, GPU
 * time, each variant twice in turn (dense-mma-device.ts --sweep), against the first defaults (forward 64 padded,
 * backward 32 padded): forward self 4096 D=64 586 -> 429 us, cross 4096x1024 B=2 311 -> 225, 64 extra keys 26.5 ->
 * 18.5, D=128 (32 padded) 1081-1109 -> 935, varlen 8x512 causal 86 -> 62, causal 4096 385 -> 353 with 32 padded (16
 * unpadded 388-400); backward self D=64 1964 -> 1589 (16 padded 1484-1493), causal 1218 -> 1045-1062, cross 1135 ->
 * 840, extra 119-121 -> 106-108, D=128 3015 -> 2485, varlen 310 -> 220-229. The float32 split (forward and backward) takes 16 unpadded
 * everywhere (32-key chunks 1.1-1.4x slower, padding within 3%: self 4096 762 us, causal 576 against 561 padded and
 * 595 with 32 keys, cross 409 against 575, head dim 128 1893, where 32 does not fit).
 */
function defaultLayout(kind: DenseMmaKind, base: Pick<DenseMmaSpec, 'causal' | 'varlen'>, split: boolean): { chunk: 16 | 32; tight: boolean } {
  return kind === 'forward' && base.causal && base.varlen !== true && !split ? { chunk: 32, tight: false } : { chunk: 16, tight: true };
}

/**
 * The tensor-core spec of a call's kernel of `kind` (chunk and layout the defaults or the options', the split for
 * float32), or undefined where the plain kernels run it (`path`, dtype, head dims, adapter, workgroup memory); throws
 * for `path: 'mma'` that cannot run, naming why.
 */
function denseMmaSpec(ctx: GpuContext, op: string, kind: DenseMmaKind, dims: DenseDims, dtype: string, base: Omit<DenseMmaSpec, 'chunk' | 'dim' | 'dimV'>, options: DenseOptions): DenseMmaSpec | undefined {
  const path = options.path ?? 'auto';
  if (path !== 'auto' && path !== 'mma' && path !== 'plain') throw new NattenArgumentError(`${op}: path must be 'auto', 'mma' or 'plain', got ${String(path)}`);
  if (path === 'plain') return undefined;
  let why = denseMmaUnfit(ctx, dims, dtype);
  if (why === undefined) {
    const limit = ctx.limits.maxComputeWorkgroupStorageSize;
    const asked = options.chunk?.[kind];
    if (asked !== undefined && !DENSE_MMA_CHUNKS.includes(asked)) throw new NattenArgumentError(`${op}: chunk.${kind} must be one of ${DENSE_MMA_CHUNKS.join(', ')}, got ${String(asked)}`);
    const layout = defaultLayout(kind, base, dtype === 'float32');
    const tight = options.tight ?? layout.tight;
    const spec: DenseMmaSpec = { ...base, dim: dims.dim, dimV: dims.dimV, chunk: asked ?? layout.chunk, ...(tight ? { tight: true } : {}), ...(dtype === 'float32' ? { split: true } : {}) };
    if (denseMmaWorkgroupBytes(kind, spec) <= limit) return spec;
    why = `its workgroup memory (${kind}${asked !== undefined ? `, chunk ${asked}` : ''}) exceeds this device's ${limit} bytes`;
  }
  if (path === 'mma') throw new NattenArgumentError(`${op}: path 'mma' (tensor cores) cannot run this call: ${why}`);
  return undefined;
}

/** The varlen offsets as u32 storage buffers, shared per content (`constantBuffer`: a loop over the same layouts uploads nothing). */
function offsetBuffer(ctx: GpuContext, cu: ArrayLike<number>): GPUBuffer {
  return ctx.constantBuffer(Uint32Array.from(cu), 'natten-web varlen offsets');
}

function expectShape(op: string, name: string, t: GpuTensor, shape: readonly number[]): void {
  if (t.shape.length !== shape.length || t.shape.some((s, i) => s !== shape[i])) {
    throw new NattenArgumentError(`${op}: ${name} must have shape ${formatShape(shape)}, got ${formatShape(t.shape)}`);
  }
}

/** Why the dense kernel cannot run a problem of these sizes on this device (head dims, grid), or undefined. */
export function denseForwardUnfit(ctx: GpuContext, dims: DenseDims): string | undefined {
  for (const [name, d] of [
    ['query head_dim', dims.dim],
    ['value head_dim', dims.dimV],
  ] as const) {
    if (d > DENSE_MAX_DIM) return `${name}=${d} exceeds the WebGPU dense kernel's ${DENSE_MAX_DIM}`;
  }
  const max = ctx.limits.maxComputeWorkgroupsPerDimension;
  const grid = [Math.ceil(dims.queries / DENSE_QUERIES), dims.heads, dims.batch];
  if (grid.some((g) => g > max)) return `${dims.queries} queries x ${dims.heads} heads x batch ${dims.batch} needs a grid of ${grid.join(' x ')} workgroups, over this device's ${max} per axis`;
  return undefined;
}

/**
 * The checks the dense forward and backward share (throws naming the argument): q, k, v shapes, one dtype over q and
 * `sameDtype` (each also of its given shape), output `[B, S, H, D_v]`, lse `[B, S, H]` float32, the kernels' fit.
 */
function checkDense(
  ctx: GpuContext,
  op: string,
  args: Pick<DenseForwardArgs, 'query' | 'key' | 'value' | 'output' | 'lse'>,
  sameDtype: readonly (readonly [string, GpuTensor, readonly number[] | undefined])[],
): { dims: DenseDims; dtype: 'float32' | 'float16' } {
  const dims = denseDims(op, args.query.shape, args.key.shape, args.value.shape);
  const dtype = checkGpuDType(op, args.query.dtype);
  requireF16Feature(ctx, op, dtype);
  const outShape = [dims.batch, dims.queries, dims.heads, dims.dimV];
  for (const [name, t, shape] of [['key', args.key, undefined], ['value', args.value, undefined], ['output', args.output, outShape], ...sameDtype] as const) {
    if (t.dtype !== dtype) throw new NattenArgumentError(`${op}: ${name} is ${t.dtype} but query is ${dtype}; pass one dtype`);
    if (shape) expectShape(op, name, t, shape);
  }
  if (args.lse.dtype !== 'float32') throw new NattenArgumentError(`${op}: lse must be float32, got ${args.lse.dtype}`);
  expectShape(op, 'lse', args.lse, outShape.slice(0, 3));
  const unfit = denseForwardUnfit(ctx, dims);
  if (unfit !== undefined) throw new NattenArgumentError(`${op}: ${unfit}`);
  return { dims, dtype };
}

/** Validate (throws naming the argument), memoised per call signature. */
function checkDenseForward(ctx: GpuContext, args: DenseForwardArgs): { dims: DenseDims; dtype: 'float32' | 'float16' } {
  const { cumulativeSeqlenQ: _q, cumulativeSeqlenKv: _kv, ...shapes } = args;
  return memoPerContext(ctx, 'dense-forward-check', callKey(1, { ...shapes, scale: 0 }), () => checkDense(ctx, FWD, args, []));
}

/** The forward kernels' spec fields of a call: causal, varlen, merge. */
function forwardBase(args: DenseForwardArgs, seqs: number): { causal: boolean; varlen?: true; merge?: true } {
  return { causal: args.isCausal === true, ...(seqs > 0 ? { varlen: true as const } : {}), ...(args.mergeInto === true ? { merge: true as const } : {}) };
}

/**
 * The dispatches of a dense forward (validated; no GPU work): the forward, after an abs-max dispatch into `scales`
 * (a 4-float scratch the caller gives) where float32 runs on the tensor cores (the split). With varlen, `offsets` are
 * the u32 buffers of the cumulative offsets (`offsetBuffer`).
 */
function denseForwardCommands(
  ctx: GpuContext,
  args: DenseForwardArgs,
  choice: { dims: DenseDims; dtype: 'float32' | 'float16'; mma: DenseMmaSpec | undefined },
  seqs: number,
  offsets: readonly GPUBuffer[],
  scales: GpuTensor | undefined,
): DispatchCommand[] {
  const { dims, dtype, mma } = choice;
  const base = forwardBase(args, seqs);
  const kernel = mma ? memoKernel('dense-forward-mma', mma, generateDenseForwardMma) : memoKernel('dense-forward', { dtype, dim: dims.dim, dimV: dims.dimV, ...base }, generateDenseForward);
  const forward: DispatchCommand = {
    kernel,
    buffers: [args.query.buffer, args.key.buffer, args.value.buffer, ...offsets, args.output.buffer, args.lse.buffer, ...(scales ? [scales.buffer] : [])],
    uniforms: { queries: dims.queries, keys: dims.keys, heads: dims.heads, heads_kv: dims.headsKv, scale: args.scale, seqs: Math.max(1, seqs) },
    workgroups: [Math.ceil(dims.queries / DENSE_QUERIES), dims.heads, dims.batch],
  };
  return scales ? [absMaxCommand(ctx, [args.query, args.key, args.value], scales), forward] : [forward];
}

/** Dense attention on GPU tensors: `output = softmax(scale q k^T) v`, `lse` its logsumexp (outputs written in place, or merged into with `mergeInto`). */
export async function denseForward(ctx: GpuContext, args: DenseForwardArgs, options: DenseOptions = {}): Promise<void> {
  await runPlan(ctx, denseForwardPlan(ctx, args, options), FWD);
}

/**
 * The dispatches of a dense forward, varlen included (validated; no GPU work but a first upload of new varlen
 * offsets), and `release`, which frees its scratch (the split's scales) once the work is submitted: for callers that
 * record or time them.
 */
export function denseForwardPlan(ctx: GpuContext, args: DenseForwardArgs, options: DenseOptions = {}): GpuOpPlan {
  const { dims, dtype } = checkDenseForward(ctx, args);
  const seqs = checkVarlen(FWD, dims, args.cumulativeSeqlenQ, args.cumulativeSeqlenKv);
  if (!Number.isFinite(args.scale)) throw new NattenArgumentError(`${FWD}: scale must be a finite number, got ${args.scale}`);
  const mma = denseMmaSpec(ctx, FWD, 'forward', dims, dtype, forwardBase(args, seqs), options);
  const offsets = seqs > 0 ? [offsetBuffer(ctx, args.cumulativeSeqlenQ as ArrayLike<number>), offsetBuffer(ctx, args.cumulativeSeqlenKv as ArrayLike<number>)] : [];
  const scales = mma?.split === true ? ctx.tempTensor([4], 'float32', { label: `${FWD}.splitScales` }) : undefined;
  return {
    commands: denseForwardCommands(ctx, args, { dims, dtype, mma }, seqs, offsets, scales),
    release: () => {
      if (scales) ctx.releaseTensor(scales);
    },
  };
}

export interface AttentionMergeArgs {
  /** Two or more outputs over disjoint key sets of the same queries, one shape `[..., D_v]`, one dtype. */
  readonly outputs: readonly GpuTensor[];
  /** Their logsumexps, float32, each its output's shape without the last dim. */
  readonly lses: readonly GpuTensor[];
  /**
   * The merged output (outputs' shape and dtype) and lse (float32): distinct from the inputs, or exactly
   * `outputs[0]` and `lses[0]`, which then accumulate the merge in place.
   */
  readonly output: GpuTensor;
  readonly lse: GpuTensor;
}

const MERGE = 'mergeAttentions';

/** The dispatches of a merge (folded left: the first two into `output`, then each further one in place). */
export function attentionMergeCommands(ctx: GpuContext, args: AttentionMergeArgs): DispatchCommand[] {
  const { outputs, lses, output, lse } = args;
  if (outputs.length < 2) throw new NattenArgumentError(`${MERGE}: needs at least 2 outputs to merge, got ${outputs.length}`);
  if (lses.length !== outputs.length) throw new NattenArgumentError(`${MERGE}: got ${outputs.length} outputs but ${lses.length} lses; give one lse per output`);
  const first = outputs[0] as GpuTensor;
  const dtype = checkGpuDType(MERGE, first.dtype);
  requireF16Feature(ctx, MERGE, dtype);
  const shape = first.shape;
  const lseShape = shape.slice(0, -1);
  outputs.forEach((t, i) => {
    expectShape(MERGE, `outputs[${i}]`, t, shape);
    if (t.dtype !== dtype) throw new NattenArgumentError(`${MERGE}: outputs[${i}] is ${t.dtype} but outputs[0] is ${dtype}; pass one dtype`);
  });
  lses.forEach((t, i) => {
    expectShape(MERGE, `lses[${i}]`, t, lseShape);
    if (t.dtype !== 'float32') throw new NattenArgumentError(`${MERGE}: lses[${i}] must be float32 on WebGPU, got ${t.dtype}`);
  });
  expectShape(MERGE, 'output', output, shape);
  expectShape(MERGE, 'lse', lse, lseShape);
  if (output.dtype !== dtype || lse.dtype !== 'float32') throw new NattenArgumentError(`${MERGE}: output must be ${dtype} and lse float32, got ${output.dtype} and ${lse.dtype}`);
  const inPlace = output.buffer === first.buffer && lse.buffer === (lses[0] as GpuTensor).buffer;
  const rest = inPlace ? [...outputs.slice(1), ...lses.slice(1)] : [...outputs, ...lses];
  if (rest.some((t) => t.buffer === output.buffer || t.buffer === lse.buffer)) {
    throw new NattenArgumentError(`${MERGE}: output and lse must not share a buffer with the inputs (other than being outputs[0] and lses[0], to merge in place)`);
  }
  const rows = lseShape.reduce((a, b) => a * b, 1);
  const dimV = shape[shape.length - 1] as number;
  const workgroups = foldWorkgroups(Math.ceil(rows / mergeRowsPerWorkgroup(dimV)), ctx.limits.maxComputeWorkgroupsPerDimension);
  const uniforms = { rows, dim_v: dimV, row_groups: workgroups[0] };
  const firstKernel = memoKernel('attention-merge', { dtype, first: true }, generateAttentionMerge);
  const foldKernel = memoKernel('attention-merge', { dtype, first: false }, generateAttentionMerge);
  const fold = (from: number): DispatchCommand[] =>
    outputs.slice(from).map((t, i) => ({ kernel: foldKernel, buffers: [t.buffer, (lses[i + from] as GpuTensor).buffer, output.buffer, lse.buffer], uniforms, workgroups }));
  if (inPlace) return fold(1);
  return [
    { kernel: firstKernel, buffers: [first.buffer, (lses[0] as GpuTensor).buffer, (outputs[1] as GpuTensor).buffer, (lses[1] as GpuTensor).buffer, output.buffer, lse.buffer], uniforms, workgroups },
    ...fold(2),
  ];
}

/** Merge partial attentions on GPU tensors (NATTEN's `merge_attentions`; outputs written in place). */
export async function attentionMerge(ctx: GpuContext, args: AttentionMergeArgs): Promise<void> {
  await ctx.dispatch(attentionMergeCommands(ctx, args), MERGE);
}

export interface DenseBackwardArgs {
  readonly query: GpuTensor;
  readonly key: GpuTensor;
  readonly value: GpuTensor;
  /** The forward's output `[B, S, H, D_v]` and lse `[B, S, H]` (float32): on the additional-KV path the merged ones. */
  readonly output: GpuTensor;
  readonly lse: GpuTensor;
  readonly gradOutput: GpuTensor;
  readonly gradQuery: GpuTensor;
  readonly gradKey: GpuTensor;
  readonly gradValue: GpuTensor;
  readonly scale: number;
  readonly isCausal?: boolean;
  /** Add the dense dQ to what gradQuery holds (NA's dQ on the additional-KV path) instead of writing it. */
  readonly accumulateGradQuery?: boolean;
  /** Varlen offsets, as `DenseForwardArgs`. */
  readonly cumulativeSeqlenQ?: ArrayLike<number>;
  readonly cumulativeSeqlenKv?: ArrayLike<number>;
}

const BWD = 'attentionBackward';
/** f32 partial sums the dK/dV kernel's query splits may take. */
const PARTIAL_BYTES = 64 * 1024 * 1024;

/** Query splits of the dK/dV kernel: enough workgroups to fill a GPU when keys are few (additional tokens). */
function denseSplits(ctx: GpuContext, d: DenseDims): number {
  const kvWorkgroups = Math.ceil(d.keys / DENSE_QUERIES) * d.batch * d.headsKv;
  let splits = Math.min(Math.ceil(d.queries / DENSE_QUERIES), Math.max(1, Math.ceil(512 / kvWorkgroups)), ctx.limits.maxComputeWorkgroupsPerDimension);
  const perSplit = d.batch * d.keys * d.headsKv * (d.dim + d.dimV) * 4;
  while (splits > 1 && splits * perSplit > PARTIAL_BYTES) splits = Math.ceil(splits / 2);
  // Whole splits of query positions.
  return Math.ceil(d.queries / Math.ceil(d.queries / splits));
}

/**
 * Dense attention's backward on GPU tensors (outputs written in place): a dQ kernel (which also forms delta), then
 * a dK/dV kernel over query splits, then, with more than one split, fixed-order sums of the splits' partials.
 * Deterministic: no atomics.
 */
export async function denseBackward(ctx: GpuContext, args: DenseBackwardArgs, options: DenseOptions = {}): Promise<void> {
  await runPlan(ctx, denseBackwardPlan(ctx, args, options), BWD);
}

/**
 * The dispatches of a dense backward (validated; no GPU work yet) and `release`, which frees its temporaries (delta,
 * the splits' partials) once the work is submitted: for callers that record or time them.
 */
export function denseBackwardPlan(ctx: GpuContext, args: DenseBackwardArgs, options: DenseOptions = {}): GpuOpPlan {
  const { dims, dtype } = checkDense(ctx, BWD, args, [
    ['gradOutput', args.gradOutput, args.output.shape],
    ['gradQuery', args.gradQuery, args.query.shape],
    ['gradKey', args.gradKey, args.key.shape],
    ['gradValue', args.gradValue, args.value.shape],
  ]);
  const outShape = args.output.shape;
  if (!Number.isFinite(args.scale)) throw new NattenArgumentError(`${BWD}: scale must be a finite number, got ${args.scale}`);
  const max = ctx.limits.maxComputeWorkgroupsPerDimension;
  if (dims.batch * dims.headsKv > max || Math.ceil(dims.keys / DENSE_QUERIES) > max) {
    throw new NattenArgumentError(`${BWD}: ${dims.keys} keys x ${dims.headsKv} key heads x batch ${dims.batch} needs more than this device's ${max} workgroups per axis`);
  }
  const causal = args.isCausal === true;
  const seqs = checkVarlen(BWD, dims, args.cumulativeSeqlenQ, args.cumulativeSeqlenKv);
  const splits = denseSplits(ctx, dims);
  const kElems = dims.batch * dims.keys * dims.headsKv * dims.dim;
  const vElems = dims.batch * dims.keys * dims.headsKv * dims.dimV;
  const uniforms = { queries: dims.queries, keys: dims.keys, heads: dims.heads, heads_kv: dims.headsKv, scale: args.scale, seqs: Math.max(1, seqs), k_elems: kElems, v_elems: vElems };
  const base = { causal, ...(seqs > 0 ? { varlen: true } : {}) };
  const spec = { dtype, dim: dims.dim, dimV: dims.dimV, ...base };
  const accumulate = args.accumulateGradQuery === true;
  const dqMma = denseMmaSpec(ctx, BWD, 'dq', dims, dtype, { ...base, ...(accumulate ? { accumulate } : {}) }, options);
  const dkvMma = denseMmaSpec(ctx, BWD, 'dkv', dims, dtype, { ...base, ...(splits > 1 ? { partial: true } : {}) }, options);
  const offsets = seqs > 0 ? [offsetBuffer(ctx, args.cumulativeSeqlenQ as ArrayLike<number>), offsetBuffer(ctx, args.cumulativeSeqlenKv as ArrayLike<number>)] : [];
  const delta = ctx.tempTensor(outShape.slice(0, 3), 'float32', { label: `${BWD}.delta` });
  const partials = splits > 1 ? [ctx.tempTensor([splits * kElems], 'float32', { label: `${BWD}.dkPartial` }), ctx.tempTensor([splits * vElems], 'float32', { label: `${BWD}.dvPartial` })] : [];
  // The float32 split's per-tensor maxima: |Q|, |K|, |V|, |dO|, |O| (one abs-max dispatch before the kernels; O
  // bounds delta, and may be a merged output whose values exceed V's).
  const split = dqMma?.split === true || dkvMma?.split === true;
  const scales = split ? ctx.tempTensor([8], 'float32', { label: `${BWD}.splitScales` }) : undefined;
  const scaleBuffers = (mma: DenseMmaSpec | undefined): GPUBuffer[] => (mma?.split === true && scales ? [scales.buffer] : []);
  const release = (): void => {
    ctx.releaseTensor(delta);
    for (const t of [...partials, ...(scales ? [scales] : [])]) ctx.releaseTensor(t);
  };
  const commands: DispatchCommand[] = [
    ...(scales ? [absMaxCommand(ctx, [args.query, args.key, args.value, args.gradOutput, args.output], scales)] : []),
    {
      kernel: dqMma ? memoKernel('dense-backward-q-mma', dqMma, generateDenseBackwardQueryMma) : memoKernel('dense-backward-q', { ...spec, accumulate }, generateDenseBackwardQuery),
      buffers: [args.query.buffer, args.key.buffer, args.value.buffer, args.output.buffer, args.gradOutput.buffer, args.lse.buffer, ...offsets, args.gradQuery.buffer, delta.buffer, ...scaleBuffers(dqMma)],
      uniforms,
      workgroups: [Math.ceil(dims.queries / DENSE_QUERIES), dims.heads, dims.batch],
    },
    {
      kernel: dkvMma ? memoKernel('dense-backward-kv-mma', dkvMma, generateDenseBackwardKvMma) : memoKernel('dense-backward-kv', { ...spec, partial: splits > 1 }, generateDenseBackwardKv),
      buffers: [
        args.query.buffer,
        args.key.buffer,
        args.value.buffer,
        args.gradOutput.buffer,
        args.lse.buffer,
        delta.buffer,
        ...offsets,
        (partials[0] ?? args.gradKey).buffer,
        (partials[1] ?? args.gradValue).buffer,
        ...scaleBuffers(dkvMma),
      ],
      uniforms,
      workgroups: [Math.ceil(dims.keys / DENSE_QUERIES), splits, dims.batch * dims.headsKv],
    },
  ];
  const [dkPartial, dvPartial] = partials;
  if (dkPartial && dvPartial) {
    // dK's and dV's sums in one dispatch (grid z), each value's splits in a fixed order.
    const [x, y] = foldWorkgroups(Math.ceil(Math.max(kElems, vElems) / 64), max);
    commands.push({
      kernel: memoKernel('dense-grad-reduce', { dtype }, generateDenseGradReduce),
      buffers: [dkPartial.buffer, dvPartial.buffer, args.gradKey.buffer, args.gradValue.buffer],
      uniforms: { elems_k: kElems, elems_v: vElems, splits, groups_x: x },
      workgroups: [x, y, 2],
    });
  }
  return { commands, release };
}
