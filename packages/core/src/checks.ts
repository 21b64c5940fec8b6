import type { DType } from './dtype.ts';
import { NattenArgumentError } from './errors.ts';
import { attnShape, type HeadsFirstShape, headsFirstShape, parseHeadsFirst, parseHeadsLast, spatialNames } from './layout.ts';
import { anyCausal, type NaParams, type NaParamsInput, normalizeParams, numSlots, rpbShape } from './problem.ts';
import { formatShape, type Tensor } from './tensor.ts';

/** Anything with a shape and dtype: host tensors, GPU tensors. Validators only read these two fields. */
export interface TensorLike {
  readonly shape: readonly number[];
  readonly dtype: DType;
}
import { type Dims, type NaRank, normalizeDims, product } from './tuples.ts';

/** Tile products a backend accepts, as [query tile product, key tile product] pairs. */
export type TileProducts = readonly (readonly [number, number])[];

/** NATTEN v0.17.5's fused forward GEMM shapes (spec §3.3). */
export const NATTEN_FORWARD_TILES: TileProducts = [
  [32, 128],
  [64, 64],
  [64, 128],
];
/** NATTEN v0.17.5's fused backward GEMM shapes (spec §3.3). */
export const NATTEN_BACKWARD_TILES: TileProducts = [
  [64, 64],
  [128, 64],
  [128, 128],
];

/** Default tiles of NATTEN's Python layer: 1-D (64,), 2-D (8,8), 3-D (4,4,4). */
export function defaultTile(rank: NaRank): number[] {
  return rank === 1 ? [64] : rank === 2 ? [8, 8] : [4, 4, 4];
}

export function expectShape(op: string, name: string, t: TensorLike, shape: readonly number[]): void {
  if (t.shape.length !== shape.length || t.shape.some((s, i) => s !== shape[i])) {
    throw new NattenArgumentError(`${op}: ${name} must have shape ${formatShape(shape)}, got ${formatShape(t.shape)}`);
  }
}

export function expectDType(op: string, name: string, t: TensorLike, dtype: DType, why = ''): void {
  if (t.dtype !== dtype) {
    throw new NattenArgumentError(`${op}: ${name} must be ${dtype}${why}, got ${t.dtype}`);
  }
}

export function expectTensor(op: string, name: string, t: unknown): asserts t is TensorLike {
  const v = t as Partial<TensorLike> | null | undefined;
  if (!v || !Array.isArray(v.shape) || typeof v.dtype !== 'string') {
    throw new NattenArgumentError(`${op}: ${name} must be a tensor ({ shape, dtype, data }), got ${v === null ? 'null' : typeof v}`);
  }
}

function checkScale(op: string, attnScale: unknown, dim: number): number {
  if (attnScale === undefined || attnScale === null) return 1 / Math.sqrt(dim);
  if (typeof attnScale !== 'number' || !Number.isFinite(attnScale)) {
    throw new NattenArgumentError(`${op}: attn_scale=${String(attnScale)} must be a finite number`);
  }
  return attnScale;
}

/** Validate a tile tuple pair against the accepted products; error lists the valid choices. */
export function checkTiles(
  op: string,
  rank: NaRank,
  queryTile: readonly number[] | undefined,
  keyTile: readonly number[] | undefined,
  allowed: TileProducts,
  pass: 'forward' | 'backward' = 'forward',
): { queryTile: Dims<NaRank>; keyTile: Dims<NaRank> } | undefined {
  if (queryTile === undefined && keyTile === undefined) return undefined;
  if (queryTile === undefined || keyTile === undefined) {
    throw new NattenArgumentError(`${op}: give both query_tile_size and key_tile_size, or neither (got only ${queryTile === undefined ? 'key_tile_size' : 'query_tile_size'})`);
  }
  const q = normalizeDims(op, 'query_tile_size', queryTile, rank, 1);
  const k = normalizeDims(op, 'key_tile_size', keyTile, rank, 1);
  const qp = product(q);
  const kp = product(k);
  if (!allowed.some(([a, b]) => a === qp && b === kp)) {
    const choices = allowed.map(([a, b]) => `${a}x${b}`).join(', ');
    throw new NattenArgumentError(
      `${op}: query_tile_size=${formatShape(q)} and key_tile_size=${formatShape(k)} multiply to ${qp}x${kp}, which is not a ${pass} tile of this backend; valid products (query x key) are ${choices}, e.g. ${exampleTiles(rank, allowed[0] ?? [64, 64])}`,
    );
  }
  return { queryTile: q, keyTile: k };
}

function exampleTiles(rank: NaRank, [qp, kp]: readonly [number, number]): string {
  const split = (p: number): number[] => {
    if (rank === 1) return [p];
    const out = new Array<number>(rank).fill(1);
    let rest = p;
    let a = rank - 1;
    while (rest > 1) {
      out[a] = (out[a] as number) * 2;
      rest /= 2;
      a = a === 0 ? rank - 1 : a - 1;
    }
    return out;
  };
  return `query_tile_size=${formatShape(split(qp))}, key_tile_size=${formatShape(split(kp))}`;
}

/** `num_splits_key[a]` must be in [1, ceil(ceil(L_a / d_a) / key_tile_a)] (spec §3.3). */
export function checkNumSplitsKey(
  op: string,
  rank: NaRank,
  numSplits: readonly number[] | number | undefined,
  spatial: readonly number[],
  params: NaParams,
  keyTile: readonly number[],
): Dims<NaRank> {
  const splits = normalizeDims(op, 'num_splits_key', numSplits ?? 1, rank, 1);
  for (let a = 0; a < rank; a++) {
    const bound = Math.ceil(Math.ceil((spatial[a] as number) / (params.dilation[a] as number)) / (keyTile[a] as number));
    if ((splits[a] as number) > bound) {
      const label = rank === 1 ? 'num_splits_key' : `num_splits_key[${a}]`;
      throw new NattenArgumentError(
        `${op}: ${label}=${splits[a]} exceeds the number of key tiles along axis ${a}, ceil(ceil(length ${spatial[a]} / dilation ${params.dilation[a]}) / key_tile ${keyTile[a]}) = ${bound}`,
      );
    }
  }
  return splits;
}

/** `name` is the argument as the op calls it (`grad_rel_pos_bias` in the QK backward). */
function checkRpb(op: string, rpb: TensorLike, heads: number, params: NaParams, dtype: DType, name = 'rel_pos_bias'): void {
  if (anyCausal(params)) {
    throw new NattenArgumentError(
      `${op}: ${name} cannot be combined with causal masking (is_causal=${formatShape(params.isCausal.map(String) as unknown as number[])}); positional biases are defined for non-causal NA only`,
    );
  }
  params.kernelSize.forEach((k, a) => {
    if (k % 2 === 0) {
      throw new NattenArgumentError(
        `${op}: ${name} needs odd kernel sizes, got kernel_size${params.rank === 1 ? '' : `[${a}]`}=${k}`,
      );
    }
  });
  expectShape(op, name, rpb, rpbShape(heads, params));
  expectDType(op, name, rpb, dtype, ' (same dtype as the inputs)');
}

function checkOddKernel(op: string, params: NaParams): void {
  params.kernelSize.forEach((k, a) => {
    if (k % 2 === 0) {
      throw new NattenArgumentError(
        `${op}: kernel_size${params.rank === 1 ? '' : `[${a}]`}=${k} is even; this op (like NATTEN's BMM-style qk/av ops) supports odd kernel sizes only. Use the fused na${params.rank}d ops for even kernels`,
      );
    }
  });
}

function sameDType(op: string, tensors: Record<string, TensorLike | undefined>): DType {
  let first: [string, DType] | undefined;
  for (const [name, t] of Object.entries(tensors)) {
    if (!t) continue;
    if (!first) first = [name, t.dtype];
    else if (t.dtype !== first[1]) {
      throw new NattenArgumentError(`${op}: ${name} is ${t.dtype} but ${first[0]} is ${first[1]}; inputs and outputs must share one dtype`);
    }
  }
  if (!first) throw new NattenArgumentError(`${op}: no tensors given`);
  return first[1];
}

/** The fully validated description of a fused (heads-last) problem. */
export interface FusedProblem {
  readonly op: string;
  readonly rank: NaRank;
  readonly dtype: DType;
  readonly batch: number;
  readonly spatial: readonly number[];
  /** Query heads. */
  readonly heads: number;
  /** Key/value heads (GQA/MQA when < heads; heads % headsKv == 0). */
  readonly headsKv: number;
  readonly dim: number;
  /** Value head dim (may differ from dim). */
  readonly dimV: number;
  readonly params: NaParams;
  readonly scale: number;
  readonly hasRpb: boolean;
  readonly hasLse: boolean;
}

export interface FusedForwardArgs<T extends TensorLike = Tensor> extends NaParamsInput {
  readonly output: T;
  readonly query: T;
  readonly key: T;
  readonly value: T;
  readonly rpb?: T | null | undefined;
  readonly logsumexp?: T | null | undefined;
  readonly attnScale?: number | null | undefined;
  readonly queryTileSize?: readonly number[] | undefined;
  readonly keyTileSize?: readonly number[] | undefined;
  /**
   * Invocations per query of the WebGPU forward (lane split of the head dim over a subgroup; 1, 2, 4 or 8).
   * Needs query_tile_size and key_tile_size; backends without such a kernel ignore it once validated.
   */
  readonly lanes?: number | undefined;
}

/** Valid `lanes` values of the fused forward (and of the fused backward). */
export const FUSED_LANE_CHOICES = [1, 2, 4, 8] as const;

/** `lanes`: one of FUSED_LANE_CHOICES, and > 1 only with tile sizes (it selects a variant of a tile config). */
function checkLanes(op: string, lanes: number | undefined, queryTileSize: readonly number[] | undefined, per: 'query' | 'row'): void {
  if (lanes === undefined) return;
  if (!(FUSED_LANE_CHOICES as readonly number[]).includes(lanes)) {
    throw new NattenArgumentError(`${op}: lanes=${String(lanes)} is not one of ${FUSED_LANE_CHOICES.join(', ')} (invocations per ${per})`);
  }
  if (lanes !== 1 && queryTileSize === undefined) {
    throw new NattenArgumentError(`${op}: lanes=${lanes} needs query_tile_size and key_tile_size (it selects a variant of a tile config)`);
  }
}

function checkQkv(op: string, rank: NaRank, query: TensorLike, key: TensorLike, value: TensorLike) {
  expectTensor(op, 'query', query);
  expectTensor(op, 'key', key);
  expectTensor(op, 'value', value);
  const q = parseHeadsLast(op, 'query', query.shape, rank);
  const k = parseHeadsLast(op, 'key', key.shape, rank);
  const v = parseHeadsLast(op, 'value', value.shape, rank);
  const tokensMatch = (a: typeof q, b: typeof q) => a.batch === b.batch && a.spatial.every((s, i) => s === b.spatial[i]);
  if (!tokensMatch(q, k) || !tokensMatch(q, v)) {
    throw new NattenArgumentError(
      `${op}: query ${formatShape(query.shape)}, key ${formatShape(key.shape)} and value ${formatShape(value.shape)} must match in batch and token layout [${spatialNames(rank)}]`,
    );
  }
  if (q.dim !== k.dim) {
    throw new NattenArgumentError(`${op}: query head_dim=${q.dim} and key head_dim=${k.dim} must match`);
  }
  if (k.heads !== v.heads) {
    throw new NattenArgumentError(`${op}: key has ${k.heads} heads but value has ${v.heads}; key and value heads must be equal`);
  }
  if (q.heads % k.heads !== 0) {
    throw new NattenArgumentError(
      `${op}: key/value heads must evenly divide query heads (GQA/MQA), got heads_q=${q.heads}, heads_kv=${k.heads}`,
    );
  }
  return { q, k, v };
}

/** Validate `na{1,2,3}d_forward` arguments (spec §3.1, §4), including GQA and a distinct value head dim. */
export function checkFusedForward(op: string, rank: NaRank, args: FusedForwardArgs<TensorLike>, tiles: TileProducts = NATTEN_FORWARD_TILES): FusedProblem {
  const { q, k, v } = checkQkv(op, rank, args.query, args.key, args.value);
  expectTensor(op, 'output', args.output);
  const dtype = sameDType(op, { query: args.query, key: args.key, value: args.value, output: args.output });
  const params = normalizeParams(op, rank, args, q.spatial);
  expectShape(op, 'output', args.output, [q.batch, ...q.spatial, q.heads, v.dim]);
  const rpb = args.rpb ?? undefined;
  if (rpb) checkRpb(op, rpb, q.heads, params, dtype);
  const lse = args.logsumexp ?? undefined;
  if (lse) {
    expectDType(op, 'logsumexp', lse, 'float32', ' (logsumexp is always stored in float32)');
    expectShape(op, 'logsumexp', lse, [q.batch, ...q.spatial, q.heads]);
  }
  checkTiles(op, rank, args.queryTileSize, args.keyTileSize, tiles, 'forward');
  checkLanes(op, args.lanes, args.queryTileSize, 'query');
  return {
    op,
    rank,
    dtype,
    batch: q.batch,
    spatial: q.spatial,
    heads: q.heads,
    headsKv: k.heads,
    dim: q.dim,
    dimV: v.dim,
    params,
    scale: checkScale(op, args.attnScale, q.dim),
    hasRpb: rpb !== undefined,
    hasLse: lse !== undefined,
  };
}

export interface FusedBackwardArgs<T extends TensorLike = Tensor> extends NaParamsInput {
  readonly gradQuery: T;
  readonly gradKey: T;
  readonly gradValue: T;
  readonly query: T;
  readonly key: T;
  readonly value: T;
  readonly output: T;
  readonly gradOutput: T;
  readonly logsumexp: T;
  readonly attnScale?: number | null | undefined;
  readonly queryTileSize?: readonly number[] | undefined;
  readonly keyTileSize?: readonly number[] | undefined;
  readonly numSplitsKey?: readonly number[] | number | undefined;
  readonly computeDeltaWithTorch?: boolean | undefined;
  /**
   * Invocations per row (query or key) of the WebGPU backward's dQ and dK/dV kernels (lane split of the head dims
   * over a subgroup; 1, 2, 4 or 8). Needs query_tile_size and key_tile_size; backends without such a kernel
   * ignore it once validated.
   */
  readonly lanes?: number | undefined;
  /** Beyond NATTEN: the forward's bias; then gradRpb (if given) receives d_rpb. */
  readonly rpb?: T | null | undefined;
  readonly gradRpb?: T | null | undefined;
}

export interface FusedBackwardProblem extends FusedProblem {
  readonly hasGradRpb: boolean;
  readonly numSplitsKey: Dims<NaRank>;
  readonly computeDeltaWithTorch: boolean;
}

/** Validate `na{1,2,3}d_backward` arguments (spec §3.2). */
export function checkFusedBackward(op: string, rank: NaRank, args: FusedBackwardArgs<TensorLike>, tiles: TileProducts = NATTEN_BACKWARD_TILES): FusedBackwardProblem {
  const { q, k, v } = checkQkv(op, rank, args.query, args.key, args.value);
  for (const name of ['gradQuery', 'gradKey', 'gradValue', 'output', 'gradOutput', 'logsumexp'] as const) {
    expectTensor(op, snake(name), args[name]);
  }
  const dtype = sameDType(op, {
    query: args.query,
    key: args.key,
    value: args.value,
    output: args.output,
    grad_output: args.gradOutput,
    grad_query: args.gradQuery,
    grad_key: args.gradKey,
    grad_value: args.gradValue,
  });
  const params = normalizeParams(op, rank, args, q.spatial);
  const outShape = [q.batch, ...q.spatial, q.heads, v.dim];
  expectShape(op, 'output', args.output, outShape);
  expectShape(op, 'grad_output', args.gradOutput, outShape);
  expectShape(op, 'grad_query', args.gradQuery, args.query.shape);
  expectShape(op, 'grad_key', args.gradKey, args.key.shape);
  expectShape(op, 'grad_value', args.gradValue, args.value.shape);
  expectDType(op, 'logsumexp', args.logsumexp, 'float32', ' (logsumexp is always stored in float32)');
  expectShape(op, 'logsumexp', args.logsumexp, [q.batch, ...q.spatial, q.heads]);
  const rpb = args.rpb ?? undefined;
  const gradRpb = args.gradRpb ?? undefined;
  if (gradRpb && !rpb) {
    throw new NattenArgumentError(`${op}: grad_rel_pos_bias was given without rel_pos_bias; pass the bias used in the forward pass`);
  }
  if (rpb) checkRpb(op, rpb, q.heads, params, dtype);
  if (gradRpb) {
    expectShape(op, 'grad_rel_pos_bias', gradRpb, rpbShape(q.heads, params));
    expectDType(op, 'grad_rel_pos_bias', gradRpb, dtype, ' (same dtype as the inputs)');
  }
  const t = checkTiles(op, rank, args.queryTileSize, args.keyTileSize, tiles, 'backward');
  checkLanes(op, args.lanes, args.queryTileSize, 'row');
  const keyTile = t ? t.keyTile : defaultTile(rank);
  const numSplitsKey = checkNumSplitsKey(op, rank, args.numSplitsKey, q.spatial, params, keyTile);
  if (args.computeDeltaWithTorch !== undefined && typeof args.computeDeltaWithTorch !== 'boolean') {
    throw new NattenArgumentError(`${op}: compute_delta_with_torch must be a boolean, got ${String(args.computeDeltaWithTorch)}`);
  }
  return {
    op,
    rank,
    dtype,
    batch: q.batch,
    spatial: q.spatial,
    heads: q.heads,
    headsKv: k.heads,
    dim: q.dim,
    dimV: v.dim,
    params,
    scale: checkScale(op, args.attnScale, q.dim),
    hasRpb: rpb !== undefined,
    hasLse: true,
    hasGradRpb: gradRpb !== undefined,
    numSplitsKey,
    computeDeltaWithTorch: args.computeDeltaWithTorch ?? false,
  };
}

function snake(name: string): string {
  return name.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
}

/** A validated BMM-style (heads-first) problem. */
export interface BmmProblem {
  readonly op: string;
  readonly rank: NaRank;
  readonly dtype: DType;
  readonly batch: number;
  readonly heads: number;
  readonly spatial: readonly number[];
  /** head dim of query/key (qk ops) or of value (av ops). */
  readonly dim: number;
  readonly params: NaParams;
  /** P = prod(kernel_size). */
  readonly slots: number;
  readonly hasRpb: boolean;
}

/** The BmmProblem of a validated qk/av op; `x` is the query (qk ops) or the value (av ops). */
function bmmProblem(op: string, rank: NaRank, dtype: DType, x: HeadsFirstShape, params: NaParams, hasRpb: boolean): BmmProblem {
  return { op, rank, dtype, batch: x.batch, heads: x.heads, spatial: x.spatial, dim: x.dim, params, slots: numSlots(params), hasRpb };
}

export interface QkForwardArgs<T extends TensorLike = Tensor> extends NaParamsInput {
  readonly attn: T;
  readonly query: T;
  readonly key: T;
  readonly rpb?: T | null | undefined;
}

function checkQk(op: string, rank: NaRank, query: TensorLike, key: TensorLike, params: NaParamsInput) {
  expectTensor(op, 'query', query);
  expectTensor(op, 'key', key);
  const q = parseHeadsFirst(op, 'query', query.shape, rank);
  expectShape(op, 'key', key, query.shape);
  const p = normalizeParams(op, rank, params, q.spatial);
  checkOddKernel(op, p);
  return { q, p };
}

/** Validate `na{1,2,3}d_qk_forward` (spec §3.4). */
export function checkQkForward(op: string, rank: NaRank, args: QkForwardArgs<TensorLike>): BmmProblem {
  const { q, p } = checkQk(op, rank, args.query, args.key, args);
  expectTensor(op, 'attn', args.attn);
  const dtype = sameDType(op, { query: args.query, key: args.key, attn: args.attn });
  expectShape(op, 'attn', args.attn, attnShape(q.batch, q.heads, q.spatial, numSlots(p)));
  const rpb = args.rpb ?? undefined;
  if (rpb) checkRpb(op, rpb, q.heads, p, dtype);
  return bmmProblem(op, rank, dtype, q, p, !!rpb);
}

export interface QkBackwardArgs<T extends TensorLike = Tensor> extends NaParamsInput {
  readonly gradQuery: T;
  readonly gradKey: T;
  readonly gradRpb?: T | null | undefined;
  readonly gradAttn: T;
  readonly query: T;
  readonly key: T;
}

/** Validate `na{1,2,3}d_qk_backward` (spec §3.5). */
export function checkQkBackward(op: string, rank: NaRank, args: QkBackwardArgs<TensorLike>): BmmProblem {
  const { q, p } = checkQk(op, rank, args.query, args.key, args);
  expectTensor(op, 'grad_query', args.gradQuery);
  expectTensor(op, 'grad_key', args.gradKey);
  expectTensor(op, 'grad_attn', args.gradAttn);
  const dtype = sameDType(op, { query: args.query, key: args.key, grad_attn: args.gradAttn, grad_query: args.gradQuery, grad_key: args.gradKey });
  expectShape(op, 'grad_query', args.gradQuery, args.query.shape);
  expectShape(op, 'grad_key', args.gradKey, args.key.shape);
  expectShape(op, 'grad_attn', args.gradAttn, attnShape(q.batch, q.heads, q.spatial, numSlots(p)));
  const gradRpb = args.gradRpb ?? undefined;
  if (gradRpb) checkRpb(op, gradRpb, q.heads, p, dtype, 'grad_rel_pos_bias');
  return bmmProblem(op, rank, dtype, q, p, !!gradRpb);
}

export interface AvForwardArgs<T extends TensorLike = Tensor> extends NaParamsInput {
  readonly output: T;
  readonly attn: T;
  readonly value: T;
}

function checkAvCommon(op: string, rank: NaRank, attn: TensorLike, value: TensorLike, params: NaParamsInput) {
  expectTensor(op, 'attn', attn);
  expectTensor(op, 'value', value);
  const v = parseHeadsFirst(op, 'value', value.shape, rank);
  const p = normalizeParams(op, rank, params, v.spatial);
  checkOddKernel(op, p);
  expectShape(op, 'attn', attn, attnShape(v.batch, v.heads, v.spatial, numSlots(p)));
  return { v, p };
}

/** Validate `na{1,2,3}d_av_forward` (spec §3.6). */
export function checkAvForward(op: string, rank: NaRank, args: AvForwardArgs<TensorLike>): BmmProblem {
  const { v, p } = checkAvCommon(op, rank, args.attn, args.value, args);
  expectTensor(op, 'output', args.output);
  const dtype = sameDType(op, { attn: args.attn, value: args.value, output: args.output });
  expectShape(op, 'output', args.output, headsFirstShape(v));
  return bmmProblem(op, rank, dtype, v, p, false);
}

export interface AvBackwardArgs<T extends TensorLike = Tensor> extends NaParamsInput {
  readonly gradAttn: T;
  readonly gradValue: T;
  readonly gradOutput: T;
  readonly attn: T;
  readonly value: T;
}

/** Validate `na{1,2,3}d_av_backward` (spec §3.7). */
export function checkAvBackward(op: string, rank: NaRank, args: AvBackwardArgs<TensorLike>): BmmProblem {
  const { v, p } = checkAvCommon(op, rank, args.attn, args.value, args);
  expectTensor(op, 'grad_attn', args.gradAttn);
  expectTensor(op, 'grad_value', args.gradValue);
  expectTensor(op, 'grad_output', args.gradOutput);
  const dtype = sameDType(op, { attn: args.attn, value: args.value, grad_attn: args.gradAttn, grad_value: args.gradValue, grad_output: args.gradOutput });
  expectShape(op, 'grad_attn', args.gradAttn, args.attn.shape);
  expectShape(op, 'grad_value', args.gradValue, args.value.shape);
  expectShape(op, 'grad_output', args.gradOutput, args.value.shape);
  return bmmProblem(op, rank, dtype, v, p, false);
}
