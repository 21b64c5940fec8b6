/**
 * Every validation rule of tuples.ts, problem.ts, layout.ts and checks.ts: each test asserts the
 * error class and that the message names the op, the argument, the value and the rule.
 */
import { describe, expect, it } from 'vitest';
import {
  type AvBackwardArgs,
  type AvForwardArgs,
  checkAvBackward,
  checkAvForward,
  checkFusedBackward,
  checkFusedForward,
  checkNumSplitsKey,
  checkQkBackward,
  checkQkForward,
  checkTiles,
  defaultTile,
  type DType,
  expectDType,
  expectShape,
  expectTensor,
  type FusedBackwardArgs,
  type FusedForwardArgs,
  NATTEN_BACKWARD_TILES,
  NATTEN_FORWARD_TILES,
  NattenArgumentError,
  NattenError,
  normalizeBools,
  normalizeDims,
  normalizeParams,
  parseHeadsFirst,
  parseHeadsLast,
  type QkBackwardArgs,
  type QkForwardArgs,
  type Tensor,
  tensor,
} from '../src/index.ts';

function expectArgError(fn: () => unknown, ...parts: string[]): void {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  expect(caught, 'expected a NattenArgumentError').toBeInstanceOf(NattenArgumentError);
  const err = caught as NattenArgumentError;
  expect(err).toBeInstanceOf(NattenError);
  expect(err.code).toBe('argument');
  expect(err.name).toBe('NattenArgumentError');
  for (const p of parts) expect(err.message).toContain(p);
}

const t = (shape: number[], dtype: DType = 'float32'): Tensor => tensor(shape, dtype);

describe('tuples.ts: normalizeDims / normalizeBools', () => {
  it('a scalar applies to every axis; a tuple is kept; the result is frozen', () => {
    expect(normalizeDims('op', 'kernel_size', 3, 2, 2)).toEqual([3, 3]);
    expect(normalizeDims('op', 'kernel_size', [3, 5], 2, 2)).toEqual([3, 5]);
    expect(Object.isFrozen(normalizeDims('op', 'dilation', 1, 3))).toBe(true);
    expect(normalizeBools('op', 'is_causal', true, 3)).toEqual([true, true, true]);
    expect(normalizeBools('op', 'is_causal', [true, false], 2)).toEqual([true, false]);
  });
  it('tuple length must equal the rank', () => {
    expectArgError(() => normalizeDims('na2d', 'kernel_size', [3, 3, 3], 2, 2), 'na2d', 'kernel_size has 3 entries', '[3, 3, 3]', '2-D op');
    expectArgError(() => normalizeBools('na3d', 'is_causal', [true], 3), 'na3d', 'is_causal has 1 entries', '[true]', '3-D op');
  });
  it('wrong type', () => {
    expectArgError(() => normalizeDims('na1d', 'dilation', '2', 1), 'na1d', 'invalid value for dilation', "'2'", 'expected an integer or a tuple of 1 integers');
    expectArgError(() => normalizeBools('na2d', 'is_causal', 1, 2), 'na2d', 'invalid value for is_causal', 'expected a boolean or a tuple of 2 booleans', 'got 1');
  });
  it('entries must be integers >= min (scalar label in 1-D, indexed label otherwise)', () => {
    expectArgError(() => normalizeDims('na1d', 'kernel_size', 1, 1, 2), 'na1d: kernel_size=1 must be an integer >= 2');
    expectArgError(() => normalizeDims('na2d', 'kernel_size', [3, 1], 2, 2), 'na2d: kernel_size[1]=1 must be an integer >= 2');
    expectArgError(() => normalizeDims('na2d', 'dilation', [1.5, 1], 2, 1), 'na2d: dilation[0]=1.5 must be an integer >= 1');
    expectArgError(() => normalizeDims('na3d', 'stride', 0, 3, 1), 'na3d: stride[0]=0 must be an integer >= 1');
    expectArgError(() => normalizeDims('na2d', 'dilation', [1, Number.NaN], 2, 1), 'dilation[1]=NaN');
    expectArgError(() => normalizeBools('na2d', 'is_causal', [true, 'yes'], 2), "na2d: is_causal[1]='yes' must be a boolean");
  });
});

describe('problem.ts: normalizeParams', () => {
  it('defaults: dilation 1, not causal, stride 1', () => {
    expect(normalizeParams('na2d', 2, { kernelSize: 3 }, [5, 6])).toEqual({
      rank: 2,
      kernelSize: [3, 3],
      dilation: [1, 1],
      isCausal: [false, false],
      stride: [1, 1],
    });
  });
  it('kernel_size >= 2, dilation >= 1, stride >= 1', () => {
    expectArgError(() => normalizeParams('na1d', 1, { kernelSize: 1 }, [9]), 'na1d: kernel_size=1 must be an integer >= 2');
    expectArgError(() => normalizeParams('na1d', 1, { kernelSize: 3, dilation: 0 }, [9]), 'na1d: dilation=0 must be an integer >= 1');
    expectArgError(() => normalizeParams('na1d', 1, { kernelSize: 3, stride: 0 }, [9]), 'na1d: stride=0 must be an integer >= 1');
  });
  it('kernel_size * dilation <= length, per axis', () => {
    expectArgError(
      () => normalizeParams('na2d', 2, { kernelSize: [3, 4], dilation: [1, 2] }, [5, 7]),
      'na2d: kernel_size[1]=4 times dilation[1]=2 exceeds input length 7 along spatial axis 1',
      'kernel_size * dilation <= length',
    );
    expectArgError(() => normalizeParams('na1d', 1, { kernelSize: 10 }, [9]), 'na1d: kernel_size=10 times dilation=1 exceeds input length 9');
    expect(normalizeParams('na1d', 1, { kernelSize: 3, dilation: 3 }, [9]).dilation).toEqual([3]);
  });
  it('stride <= kernel_size', () => {
    expectArgError(
      () => normalizeParams('na3d', 3, { kernelSize: 3, stride: [1, 4, 1] }, [9, 9, 9]),
      'na3d: stride[1]=4 is larger than kernel_size[1]=3',
      '1 <= stride <= kernel_size',
    );
  });
  it('spatial extents must match the rank', () => {
    expectArgError(() => normalizeParams('na2d', 2, { kernelSize: 3 }, [9]), 'na2d: expected 2 spatial extents, got [9]');
  });
});

describe('layout.ts', () => {
  it('heads-last and heads-first parse and reject a wrong rank', () => {
    expect(parseHeadsLast('na2d', 'query', [2, 5, 6, 3, 8], 2)).toEqual({ batch: 2, spatial: [5, 6], heads: 3, dim: 8 });
    expect(parseHeadsFirst('na2d_qk', 'query', [2, 3, 5, 6, 8], 2)).toEqual({ batch: 2, spatial: [5, 6], heads: 3, dim: 8 });
    expectArgError(() => parseHeadsLast('na2d_forward', 'query', [1, 5, 4, 8], 2), 'na2d_forward: query must be a rank-5 tensor [batch, height, width, heads, head_dim] for 2-D NA, got shape [1, 5, 4, 8]');
    expectArgError(() => parseHeadsFirst('na3d_qk_forward', 'key', [1, 2, 4, 8], 3), 'na3d_qk_forward: key must be a rank-6 tensor [batch, heads, depth, height, width, head_dim] for 3-D NA, got shape [1, 2, 4, 8]');
  });
  it('no empty dimension', () => {
    expectArgError(() => parseHeadsLast('na1d_forward', 'value', [1, 9, 0, 4], 1), 'na1d_forward: value has an empty dimension 2 (shape [1, 9, 0, 4])', 'every extent must be >= 1');
    expectArgError(() => parseHeadsFirst('na1d_av_forward', 'value', [0, 1, 9, 4], 1), 'na1d_av_forward: value has an empty dimension 0');
  });
});

describe('checks.ts: small helpers', () => {
  it('expectShape, expectDType, expectTensor', () => {
    expectArgError(() => expectShape('na1d_forward', 'output', t([1, 9, 1, 4]), [1, 9, 1, 8]), 'na1d_forward: output must have shape [1, 9, 1, 8], got [1, 9, 1, 4]');
    expectArgError(() => expectDType('na1d_forward', 'logsumexp', t([1]), 'float64', ' (why)'), 'na1d_forward: logsumexp must be float64 (why), got float32');
    expectArgError(() => expectTensor('na1d_forward', 'query', null), 'na1d_forward: query must be a tensor ({ shape, dtype, data }), got null');
    expectArgError(() => expectTensor('na1d_forward', 'key', { shape: [1] }), 'na1d_forward: key must be a tensor', 'got object');
    expectArgError(() => expectTensor('na1d_forward', 'key', undefined), 'got undefined');
  });
  it('defaultTile is NATTEN Python default per rank', () => {
    expect([defaultTile(1), defaultTile(2), defaultTile(3)]).toEqual([[64], [8, 8], [4, 4, 4]]);
  });
});

describe('checks.ts: checkTiles', () => {
  it('neither tile is fine; one without the other is rejected', () => {
    expect(checkTiles('na2d_forward', 2, undefined, undefined, NATTEN_FORWARD_TILES)).toBeUndefined();
    expectArgError(() => checkTiles('na2d_forward', 2, [8, 8], undefined, NATTEN_FORWARD_TILES), 'na2d_forward: give both query_tile_size and key_tile_size, or neither (got only query_tile_size)');
    expectArgError(() => checkTiles('na2d_forward', 2, undefined, [8, 8], NATTEN_FORWARD_TILES), 'got only key_tile_size');
  });
  it('products must be one of the tile shapes; factors of 1 are fine', () => {
    expect(checkTiles('na2d_forward', 2, [4, 8], [2, 64], NATTEN_FORWARD_TILES)).toEqual({ queryTile: [4, 8], keyTile: [2, 64] });
    expect(checkTiles('na3d_forward', 3, [64, 1, 1], [1, 1, 64], NATTEN_FORWARD_TILES)).toBeDefined();
    expectArgError(
      () => checkTiles('na2d_forward', 2, [4, 4], [8, 8], NATTEN_FORWARD_TILES),
      'na2d_forward: query_tile_size=[4, 4] and key_tile_size=[8, 8] multiply to 16x64',
      'not a forward tile',
      'valid products (query x key) are 32x128, 64x64, 64x128',
    );
    expectArgError(() => checkTiles('na1d_backward', 1, [32], [128], NATTEN_BACKWARD_TILES, 'backward'), 'not a backward tile', '64x64, 128x64, 128x128');
  });
  it('tile entries are rank-length tuples of integers >= 1', () => {
    expectArgError(() => checkTiles('na2d_forward', 2, [64], [8, 8], NATTEN_FORWARD_TILES), 'na2d_forward: query_tile_size has 1 entries');
    expectArgError(() => checkTiles('na2d_forward', 2, [8, 8], [0, 64], NATTEN_FORWARD_TILES), 'key_tile_size[0]=0 must be an integer >= 1');
  });
});

describe('checks.ts: checkNumSplitsKey', () => {
  const params = normalizeParams('na1d_backward', 1, { kernelSize: 3, dilation: 2 }, [9]);
  it('bound is ceil(ceil(L / d) / key_tile) per axis (spec example: L=9, d=2, tile 4 -> 2)', () => {
    expect(checkNumSplitsKey('na1d_backward', 1, 2, [9], params, [4])).toEqual([2]);
    expectArgError(
      () => checkNumSplitsKey('na1d_backward', 1, 3, [9], params, [4]),
      'na1d_backward: num_splits_key=3 exceeds the number of key tiles along axis 0, ceil(ceil(length 9 / dilation 2) / key_tile 4) = 2',
    );
  });
  it('defaults to 1 and rejects < 1', () => {
    expect(checkNumSplitsKey('na1d_backward', 1, undefined, [9], params, [4])).toEqual([1]);
    expectArgError(() => checkNumSplitsKey('na1d_backward', 1, 0, [9], params, [4]), 'num_splits_key=0 must be an integer >= 1');
  });
  it('labels the axis in 2-D', () => {
    const p2 = normalizeParams('na2d_backward', 2, { kernelSize: 3 }, [16, 16]);
    expectArgError(() => checkNumSplitsKey('na2d_backward', 2, [1, 3], [16, 16], p2, [8, 8]), 'num_splits_key[1]=3', '= 2');
  });
});

/** A valid fused forward problem (2-D, GQA 4/2, value dim 6) to mutate. */
function fwdArgs(over: Partial<FusedForwardArgs> = {}): FusedForwardArgs {
  return {
    output: t([2, 5, 6, 4, 6]),
    query: t([2, 5, 6, 4, 8]),
    key: t([2, 5, 6, 2, 8]),
    value: t([2, 5, 6, 2, 6]),
    kernelSize: 3,
    ...over,
  };
}

describe('checks.ts: checkFusedForward', () => {
  const op = 'na2d_forward';
  it('returns the validated problem (GQA heads, value dim, default scale D^-0.5)', () => {
    const p = checkFusedForward(op, 2, fwdArgs());
    expect(p).toMatchObject({ op, rank: 2, dtype: 'float32', batch: 2, spatial: [5, 6], heads: 4, headsKv: 2, dim: 8, dimV: 6, hasRpb: false, hasLse: false });
    expect(p.scale).toBeCloseTo(8 ** -0.5, 15);
  });
  it('an explicit attn_scale is honoured, even 0; null means the default; non-finite is rejected', () => {
    expect(checkFusedForward(op, 2, fwdArgs({ attnScale: 0 })).scale).toBe(0);
    expect(checkFusedForward(op, 2, fwdArgs({ attnScale: -2 })).scale).toBe(-2);
    expect(checkFusedForward(op, 2, fwdArgs({ attnScale: null })).scale).toBeCloseTo(8 ** -0.5, 15);
    expectArgError(() => checkFusedForward(op, 2, fwdArgs({ attnScale: Number.NaN })), 'na2d_forward: attn_scale=NaN must be a finite number');
    expectArgError(() => checkFusedForward(op, 2, fwdArgs({ attnScale: Number.POSITIVE_INFINITY })), 'attn_scale=Infinity');
    expectArgError(() => checkFusedForward(op, 2, fwdArgs({ attnScale: '1' as unknown as number })), 'attn_scale=1 must be a finite number');
  });
  it('query, key, value and output must be tensors', () => {
    expectArgError(() => checkFusedForward(op, 2, fwdArgs({ query: null as unknown as Tensor })), 'na2d_forward: query must be a tensor');
    expectArgError(() => checkFusedForward(op, 2, fwdArgs({ output: {} as Tensor })), 'na2d_forward: output must be a tensor');
  });
  it('rank of q/k/v', () => {
    expectArgError(() => checkFusedForward(op, 2, fwdArgs({ key: t([2, 30, 2, 8]) })), 'na2d_forward: key must be a rank-5 tensor', 'got shape [2, 30, 2, 8]');
  });
  it('batch and token layout must match', () => {
    expectArgError(
      () => checkFusedForward(op, 2, fwdArgs({ key: t([2, 5, 7, 2, 8]) })),
      'na2d_forward: query [2, 5, 6, 4, 8], key [2, 5, 7, 2, 8] and value [2, 5, 6, 2, 6] must match in batch and token layout [height, width]',
    );
    expectArgError(() => checkFusedForward(op, 2, fwdArgs({ value: t([1, 5, 6, 2, 6]) })), 'must match in batch and token layout');
  });
  it('query and key head dims must match', () => {
    expectArgError(() => checkFusedForward(op, 2, fwdArgs({ key: t([2, 5, 6, 2, 4]) })), 'na2d_forward: query head_dim=8 and key head_dim=4 must match');
  });
  it('key and value heads must be equal', () => {
    expectArgError(() => checkFusedForward(op, 2, fwdArgs({ value: t([2, 5, 6, 4, 6]) })), 'na2d_forward: key has 2 heads but value has 4', 'must be equal');
  });
  it('kv heads must divide query heads', () => {
    expectArgError(
      () => checkFusedForward(op, 2, fwdArgs({ key: t([2, 5, 6, 3, 8]), value: t([2, 5, 6, 3, 6]) })),
      'na2d_forward: key/value heads must evenly divide query heads (GQA/MQA), got heads_q=4, heads_kv=3',
    );
  });
  it('one dtype for inputs and output', () => {
    expectArgError(() => checkFusedForward(op, 2, fwdArgs({ value: t([2, 5, 6, 2, 6], 'float16') })), 'na2d_forward: value is float16 but query is float32', 'must share one dtype');
    expectArgError(() => checkFusedForward(op, 2, fwdArgs({ output: t([2, 5, 6, 4, 6], 'float64') })), 'output is float64 but query is float32');
  });
  it('output shape is [B, *sp, H, Dv]', () => {
    expectArgError(() => checkFusedForward(op, 2, fwdArgs({ output: t([2, 5, 6, 4, 8]) })), 'na2d_forward: output must have shape [2, 5, 6, 4, 6], got [2, 5, 6, 4, 8]');
  });
  it('window parameters are checked against the spatial extents', () => {
    expectArgError(() => checkFusedForward(op, 2, fwdArgs({ kernelSize: [3, 7] })), 'na2d_forward: kernel_size[1]=7 times dilation[1]=1 exceeds input length 6');
    expectArgError(() => checkFusedForward(op, 2, fwdArgs({ stride: [4, 1] })), 'na2d_forward: stride[0]=4 is larger than kernel_size[0]=3');
    expect(checkFusedForward(op, 2, fwdArgs({ kernelSize: [2, 4], isCausal: [true, false] })).params.kernelSize).toEqual([2, 4]);
  });
  it('rel_pos_bias: non-causal, odd kernel, shape [H, 2K-1, ...], same dtype', () => {
    expect(checkFusedForward(op, 2, fwdArgs({ rpb: t([4, 5, 5]) })).hasRpb).toBe(true);
    expectArgError(() => checkFusedForward(op, 2, fwdArgs({ rpb: t([4, 5, 5]), isCausal: [false, true] })), 'na2d_forward: rel_pos_bias cannot be combined with causal masking (is_causal=[false, true])', 'non-causal NA only');
    expectArgError(() => checkFusedForward(op, 2, fwdArgs({ rpb: t([4, 5, 7]), kernelSize: [3, 4] })), 'na2d_forward: rel_pos_bias needs odd kernel sizes, got kernel_size[1]=4');
    expectArgError(() => checkFusedForward(op, 2, fwdArgs({ rpb: t([2, 5, 5]) })), 'na2d_forward: rel_pos_bias must have shape [4, 5, 5], got [2, 5, 5]');
    expectArgError(() => checkFusedForward(op, 2, fwdArgs({ rpb: t([4, 5, 5], 'float64') })), 'na2d_forward: rel_pos_bias must be float32 (same dtype as the inputs), got float64');
    expectArgError(() => checkFusedForward('na1d_forward', 1, { ...fwdArgs(), output: t([1, 9, 1, 4]), query: t([1, 9, 1, 4]), key: t([1, 9, 1, 4]), value: t([1, 9, 1, 4]), kernelSize: 4, rpb: t([1, 7]) }), 'got kernel_size=4');
  });
  it('logsumexp: float32, shape [B, *sp, H]', () => {
    expect(checkFusedForward(op, 2, fwdArgs({ logsumexp: t([2, 5, 6, 4]) })).hasLse).toBe(true);
    expectArgError(() => checkFusedForward(op, 2, fwdArgs({ logsumexp: t([2, 5, 6, 4], 'float16') })), 'na2d_forward: logsumexp must be float32 (logsumexp is always stored in float32), got float16');
    expectArgError(() => checkFusedForward(op, 2, fwdArgs({ logsumexp: t([2, 5, 6, 2]) })), 'na2d_forward: logsumexp must have shape [2, 5, 6, 4], got [2, 5, 6, 2]');
  });
  it('tile sizes against the forward tile products', () => {
    expect(() => checkFusedForward(op, 2, fwdArgs({ queryTileSize: [8, 8], keyTileSize: [8, 8] }))).not.toThrow();
    expectArgError(() => checkFusedForward(op, 2, fwdArgs({ queryTileSize: [8, 16], keyTileSize: [8, 8] })), 'multiply to 128x64', 'not a forward tile');
    expectArgError(() => checkFusedForward(op, 2, fwdArgs({ queryTileSize: [8, 8], keyTileSize: [8, 8] }), [[32, 32]]), 'valid products (query x key) are 32x32');
  });
  it('lanes: 1, 2, 4 or 8, and only with tile sizes', () => {
    expect(() => checkFusedForward(op, 2, fwdArgs({ queryTileSize: [8, 8], keyTileSize: [8, 8], lanes: 4 }))).not.toThrow();
    expect(() => checkFusedForward(op, 2, fwdArgs({ lanes: 1 }))).not.toThrow();
    expectArgError(() => checkFusedForward(op, 2, fwdArgs({ queryTileSize: [8, 8], keyTileSize: [8, 8], lanes: 3 })), 'na2d_forward: lanes=3 is not one of 1, 2, 4, 8 (invocations per query)');
    expectArgError(() => checkFusedForward(op, 2, fwdArgs({ lanes: 2 })), 'na2d_forward: lanes=2 needs query_tile_size and key_tile_size');
  });
});

/** A valid fused backward problem (1-D, GQA 2/1, value dim 4). */
function bwdArgs(over: Partial<FusedBackwardArgs> = {}): FusedBackwardArgs {
  return {
    gradQuery: t([1, 9, 2, 8]),
    gradKey: t([1, 9, 1, 8]),
    gradValue: t([1, 9, 1, 4]),
    query: t([1, 9, 2, 8]),
    key: t([1, 9, 1, 8]),
    value: t([1, 9, 1, 4]),
    output: t([1, 9, 2, 4]),
    gradOutput: t([1, 9, 2, 4]),
    logsumexp: t([1, 9, 2]),
    kernelSize: 3,
    dilation: 2,
    ...over,
  };
}

describe('checks.ts: checkFusedBackward', () => {
  const op = 'na1d_backward';
  it('returns the problem with defaults (splits 1, delta not with torch)', () => {
    const p = checkFusedBackward(op, 1, bwdArgs());
    expect(p).toMatchObject({ heads: 2, headsKv: 1, dim: 8, dimV: 4, hasLse: true, hasRpb: false, hasGradRpb: false, numSplitsKey: [1], computeDeltaWithTorch: false });
  });
  it('every gradient and saved tensor must be a tensor', () => {
    for (const [field, name] of [
      ['gradQuery', 'grad_query'],
      ['gradKey', 'grad_key'],
      ['gradValue', 'grad_value'],
      ['output', 'output'],
      ['gradOutput', 'grad_output'],
      ['logsumexp', 'logsumexp'],
    ] as const) {
      expectArgError(() => checkFusedBackward(op, 1, bwdArgs({ [field]: undefined })), `na1d_backward: ${name} must be a tensor`);
    }
  });
  it('one dtype for every input and gradient', () => {
    expectArgError(() => checkFusedBackward(op, 1, bwdArgs({ gradOutput: t([1, 9, 2, 4], 'float64') })), 'na1d_backward: grad_output is float64 but query is float32');
    expectArgError(() => checkFusedBackward(op, 1, bwdArgs({ gradKey: t([1, 9, 1, 8], 'float16') })), 'grad_key is float16 but query is float32');
  });
  it('shapes of output, grad_output and the gradients', () => {
    expectArgError(() => checkFusedBackward(op, 1, bwdArgs({ output: t([1, 9, 2, 8]) })), 'na1d_backward: output must have shape [1, 9, 2, 4], got [1, 9, 2, 8]');
    expectArgError(() => checkFusedBackward(op, 1, bwdArgs({ gradOutput: t([1, 9, 1, 4]) })), 'na1d_backward: grad_output must have shape [1, 9, 2, 4]');
    expectArgError(() => checkFusedBackward(op, 1, bwdArgs({ gradQuery: t([1, 9, 1, 8]) })), 'na1d_backward: grad_query must have shape [1, 9, 2, 8], got [1, 9, 1, 8]');
    expectArgError(() => checkFusedBackward(op, 1, bwdArgs({ gradKey: t([1, 9, 2, 8]) })), 'na1d_backward: grad_key must have shape [1, 9, 1, 8]');
    expectArgError(() => checkFusedBackward(op, 1, bwdArgs({ gradValue: t([1, 9, 1, 8]) })), 'na1d_backward: grad_value must have shape [1, 9, 1, 4]');
  });
  it('logsumexp is required, float32, [B, *sp, H]', () => {
    expectArgError(() => checkFusedBackward(op, 1, bwdArgs({ logsumexp: t([1, 9, 2], 'float16') })), 'na1d_backward: logsumexp must be float32');
    expectArgError(() => checkFusedBackward(op, 1, bwdArgs({ logsumexp: t([1, 9]) })), 'na1d_backward: logsumexp must have shape [1, 9, 2], got [1, 9]');
  });
  it('rel_pos_bias / grad_rel_pos_bias', () => {
    const ok = checkFusedBackward(op, 1, bwdArgs({ rpb: t([2, 5]), gradRpb: t([2, 5]) }));
    expect([ok.hasRpb, ok.hasGradRpb]).toEqual([true, true]);
    expect(checkFusedBackward(op, 1, bwdArgs({ rpb: t([2, 5]) })).hasGradRpb).toBe(false);
    expectArgError(() => checkFusedBackward(op, 1, bwdArgs({ gradRpb: t([2, 5]) })), 'na1d_backward: grad_rel_pos_bias was given without rel_pos_bias', 'pass the bias used in the forward pass');
    expectArgError(() => checkFusedBackward(op, 1, bwdArgs({ rpb: t([2, 5]), isCausal: true })), 'na1d_backward: rel_pos_bias cannot be combined with causal masking');
    expectArgError(() => checkFusedBackward(op, 1, bwdArgs({ rpb: t([2, 5]), gradRpb: t([1, 5]) })), 'na1d_backward: grad_rel_pos_bias must have shape [2, 5], got [1, 5]');
    expectArgError(() => checkFusedBackward(op, 1, bwdArgs({ rpb: t([2, 5]), gradRpb: t([2, 5], 'float64') })), 'na1d_backward: grad_rel_pos_bias must be float32 (same dtype as the inputs), got float64');
  });
  it('backward tiles, num_splits_key against the key tile (default tile when none given)', () => {
    expect(checkFusedBackward(op, 1, bwdArgs({ queryTileSize: [128], keyTileSize: [64] })).numSplitsKey).toEqual([1]);
    expectArgError(() => checkFusedBackward(op, 1, bwdArgs({ queryTileSize: [64], keyTileSize: [128] })), 'multiply to 64x128', 'not a backward tile');
    // default 1-D key tile 64: ceil(ceil(9/2)/64) = 1
    expectArgError(() => checkFusedBackward(op, 1, bwdArgs({ numSplitsKey: 2 })), 'na1d_backward: num_splits_key=2 exceeds the number of key tiles', 'key_tile 64) = 1');
    const p2 = checkFusedBackward('na2d_backward', 2, {
      ...bwdArgs(),
      gradQuery: t([1, 32, 16, 1, 4]),
      gradKey: t([1, 32, 16, 1, 4]),
      gradValue: t([1, 32, 16, 1, 4]),
      query: t([1, 32, 16, 1, 4]),
      key: t([1, 32, 16, 1, 4]),
      value: t([1, 32, 16, 1, 4]),
      output: t([1, 32, 16, 1, 4]),
      gradOutput: t([1, 32, 16, 1, 4]),
      logsumexp: t([1, 32, 16, 1]),
      dilation: 1,
      numSplitsKey: [4, 2],
    });
    expect(p2.numSplitsKey).toEqual([4, 2]);
  });
  it('lanes: 1, 2, 4 or 8, and only with tile sizes', () => {
    expect(() => checkFusedBackward(op, 1, bwdArgs({ queryTileSize: [64], keyTileSize: [64], lanes: 2 }))).not.toThrow();
    expect(() => checkFusedBackward(op, 1, bwdArgs({ lanes: 1 }))).not.toThrow();
    expectArgError(() => checkFusedBackward(op, 1, bwdArgs({ queryTileSize: [64], keyTileSize: [64], lanes: 6 })), 'na1d_backward: lanes=6 is not one of 1, 2, 4, 8 (invocations per row)');
    expectArgError(() => checkFusedBackward(op, 1, bwdArgs({ lanes: 4 })), 'na1d_backward: lanes=4 needs query_tile_size and key_tile_size');
  });
  it('compute_delta_with_torch must be a boolean', () => {
    expect(checkFusedBackward(op, 1, bwdArgs({ computeDeltaWithTorch: true })).computeDeltaWithTorch).toBe(true);
    expectArgError(() => checkFusedBackward(op, 1, bwdArgs({ computeDeltaWithTorch: 1 as unknown as boolean })), 'na1d_backward: compute_delta_with_torch must be a boolean, got 1');
  });
});

function qkArgs(over: Partial<QkForwardArgs> = {}): QkForwardArgs {
  return { attn: t([1, 2, 5, 6, 9]), query: t([1, 2, 5, 6, 4]), key: t([1, 2, 5, 6, 4]), kernelSize: 3, ...over };
}

describe('checks.ts: checkQkForward', () => {
  const op = 'na2d_qk_forward';
  it('returns the BMM problem', () => {
    expect(checkQkForward(op, 2, qkArgs())).toMatchObject({ batch: 1, heads: 2, spatial: [5, 6], dim: 4, slots: 9, hasRpb: false });
  });
  it('tensors, rank and key == query shape', () => {
    expectArgError(() => checkQkForward(op, 2, qkArgs({ query: undefined as unknown as Tensor })), 'na2d_qk_forward: query must be a tensor');
    expectArgError(() => checkQkForward(op, 2, qkArgs({ attn: null as unknown as Tensor })), 'na2d_qk_forward: attn must be a tensor');
    expectArgError(() => checkQkForward(op, 2, qkArgs({ query: t([1, 2, 30, 4]) })), 'na2d_qk_forward: query must be a rank-5 tensor [batch, heads, height, width, head_dim]');
    expectArgError(() => checkQkForward(op, 2, qkArgs({ key: t([1, 1, 5, 6, 4]) })), 'na2d_qk_forward: key must have shape [1, 2, 5, 6, 4], got [1, 1, 5, 6, 4]');
  });
  it('odd kernel sizes only', () => {
    expectArgError(() => checkQkForward(op, 2, qkArgs({ kernelSize: [3, 4], attn: t([1, 2, 5, 6, 12]) })), "na2d_qk_forward: kernel_size[1]=4 is even; this op (like NATTEN's BMM-style qk/av ops) supports odd kernel sizes only", 'fused na2d');
  });
  it('dtypes and attn shape [B, H, *sp, prod(K)]', () => {
    expectArgError(() => checkQkForward(op, 2, qkArgs({ attn: t([1, 2, 5, 6, 9], 'float64') })), 'na2d_qk_forward: attn is float64 but query is float32');
    expectArgError(() => checkQkForward(op, 2, qkArgs({ attn: t([1, 2, 5, 6, 8]) })), 'na2d_qk_forward: attn must have shape [1, 2, 5, 6, 9], got [1, 2, 5, 6, 8]');
  });
  it('rpb rules', () => {
    expect(checkQkForward(op, 2, qkArgs({ rpb: t([2, 5, 5]) })).hasRpb).toBe(true);
    expectArgError(() => checkQkForward(op, 2, qkArgs({ rpb: t([2, 5, 5]), isCausal: [true, false] })), 'na2d_qk_forward: rel_pos_bias cannot be combined with causal masking');
    expectArgError(() => checkQkForward(op, 2, qkArgs({ rpb: t([2, 3, 5]) })), 'na2d_qk_forward: rel_pos_bias must have shape [2, 5, 5]');
  });
  it('window rules', () => {
    expectArgError(() => checkQkForward(op, 2, qkArgs({ dilation: [2, 1] })), 'na2d_qk_forward: kernel_size[0]=3 times dilation[0]=2 exceeds input length 5');
  });
});

function qkbArgs(over: Partial<QkBackwardArgs> = {}): QkBackwardArgs {
  return {
    gradQuery: t([2, 1, 9, 4]),
    gradKey: t([2, 1, 9, 4]),
    gradAttn: t([2, 1, 9, 3]),
    query: t([2, 1, 9, 4]),
    key: t([2, 1, 9, 4]),
    kernelSize: 3,
    ...over,
  };
}

describe('checks.ts: checkQkBackward', () => {
  const op = 'na1d_qk_backward';
  it('valid, with and without grad_rel_pos_bias', () => {
    expect(checkQkBackward(op, 1, qkbArgs()).hasRpb).toBe(false);
    expect(checkQkBackward(op, 1, qkbArgs({ gradRpb: t([1, 5]) })).hasRpb).toBe(true);
  });
  it('tensors, dtypes and shapes', () => {
    expectArgError(() => checkQkBackward(op, 1, qkbArgs({ gradQuery: null as unknown as Tensor })), 'na1d_qk_backward: grad_query must be a tensor');
    expectArgError(() => checkQkBackward(op, 1, qkbArgs({ gradKey: undefined as unknown as Tensor })), 'na1d_qk_backward: grad_key must be a tensor');
    expectArgError(() => checkQkBackward(op, 1, qkbArgs({ gradAttn: undefined as unknown as Tensor })), 'na1d_qk_backward: grad_attn must be a tensor');
    expectArgError(() => checkQkBackward(op, 1, qkbArgs({ gradAttn: t([2, 1, 9, 3], 'float16') })), 'na1d_qk_backward: grad_attn is float16 but query is float32');
    expectArgError(() => checkQkBackward(op, 1, qkbArgs({ gradQuery: t([2, 1, 9, 5]) })), 'na1d_qk_backward: grad_query must have shape [2, 1, 9, 4]');
    expectArgError(() => checkQkBackward(op, 1, qkbArgs({ gradKey: t([1, 1, 9, 4]) })), 'na1d_qk_backward: grad_key must have shape [2, 1, 9, 4]');
    expectArgError(() => checkQkBackward(op, 1, qkbArgs({ gradAttn: t([2, 1, 9, 5]) })), 'na1d_qk_backward: grad_attn must have shape [2, 1, 9, 3], got [2, 1, 9, 5]');
  });
  it('odd kernels; grad_rel_pos_bias follows the rpb rules', () => {
    expectArgError(() => checkQkBackward(op, 1, qkbArgs({ kernelSize: 2, gradAttn: t([2, 1, 9, 2]) })), 'na1d_qk_backward: kernel_size=2 is even');
    expectArgError(() => checkQkBackward(op, 1, qkbArgs({ gradRpb: t([1, 5]), isCausal: true })), 'na1d_qk_backward: grad_rel_pos_bias cannot be combined with causal masking');
    expectArgError(() => checkQkBackward(op, 1, qkbArgs({ gradRpb: t([1, 3]) })), 'na1d_qk_backward: grad_rel_pos_bias must have shape [1, 5], got [1, 3]');
    expectArgError(() => checkQkBackward(op, 1, qkbArgs({ gradRpb: t([1, 5], 'float64') })), 'na1d_qk_backward: grad_rel_pos_bias must be float32');
  });
});

function avArgs(over: Partial<AvForwardArgs> = {}): AvForwardArgs {
  return { output: t([1, 2, 4, 5, 6, 3]), attn: t([1, 2, 4, 5, 6, 27]), value: t([1, 2, 4, 5, 6, 3]), kernelSize: 3, ...over };
}

describe('checks.ts: checkAvForward', () => {
  const op = 'na3d_av_forward';
  it('valid problem', () => {
    expect(checkAvForward(op, 3, avArgs())).toMatchObject({ heads: 2, spatial: [4, 5, 6], dim: 3, slots: 27 });
  });
  it('tensors, odd kernel, attn and output shapes, dtypes', () => {
    expectArgError(() => checkAvForward(op, 3, avArgs({ attn: undefined as unknown as Tensor })), 'na3d_av_forward: attn must be a tensor');
    expectArgError(() => checkAvForward(op, 3, avArgs({ value: null as unknown as Tensor })), 'na3d_av_forward: value must be a tensor');
    expectArgError(() => checkAvForward(op, 3, avArgs({ output: null as unknown as Tensor })), 'na3d_av_forward: output must be a tensor');
    expectArgError(() => checkAvForward(op, 3, avArgs({ kernelSize: [3, 3, 2] })), 'na3d_av_forward: kernel_size[2]=2 is even');
    expectArgError(() => checkAvForward(op, 3, avArgs({ attn: t([1, 2, 4, 5, 6, 9]) })), 'na3d_av_forward: attn must have shape [1, 2, 4, 5, 6, 27], got [1, 2, 4, 5, 6, 9]');
    expectArgError(() => checkAvForward(op, 3, avArgs({ output: t([1, 2, 4, 5, 6, 4]) })), 'na3d_av_forward: output must have shape [1, 2, 4, 5, 6, 3]');
    expectArgError(() => checkAvForward(op, 3, avArgs({ attn: t([1, 2, 4, 5, 6, 27], 'float16') })), 'na3d_av_forward: value is float32 but attn is float16');
    expectArgError(() => checkAvForward(op, 3, avArgs({ value: t([1, 2, 4, 5, 6], 'float32') })), 'na3d_av_forward: value must be a rank-6 tensor');
  });
});

function avbArgs(over: Partial<AvBackwardArgs> = {}): AvBackwardArgs {
  return { gradAttn: t([1, 1, 9, 3]), gradValue: t([1, 1, 9, 4]), gradOutput: t([1, 1, 9, 4]), attn: t([1, 1, 9, 3]), value: t([1, 1, 9, 4]), kernelSize: 3, isCausal: true, ...over };
}

describe('checks.ts: checkAvBackward', () => {
  const op = 'na1d_av_backward';
  it('valid problem', () => {
    expect(checkAvBackward(op, 1, avbArgs()).params.isCausal).toEqual([true]);
  });
  it('tensors, shapes, dtypes', () => {
    expectArgError(() => checkAvBackward(op, 1, avbArgs({ gradAttn: undefined as unknown as Tensor })), 'na1d_av_backward: grad_attn must be a tensor');
    expectArgError(() => checkAvBackward(op, 1, avbArgs({ gradValue: undefined as unknown as Tensor })), 'na1d_av_backward: grad_value must be a tensor');
    expectArgError(() => checkAvBackward(op, 1, avbArgs({ gradOutput: undefined as unknown as Tensor })), 'na1d_av_backward: grad_output must be a tensor');
    expectArgError(() => checkAvBackward(op, 1, avbArgs({ gradAttn: t([1, 1, 9, 2]) })), 'na1d_av_backward: grad_attn must have shape [1, 1, 9, 3], got [1, 1, 9, 2]');
    expectArgError(() => checkAvBackward(op, 1, avbArgs({ gradValue: t([1, 1, 9, 2]) })), 'na1d_av_backward: grad_value must have shape [1, 1, 9, 4]');
    expectArgError(() => checkAvBackward(op, 1, avbArgs({ gradOutput: t([1, 1, 8, 4]) })), 'na1d_av_backward: grad_output must have shape [1, 1, 9, 4]');
    expectArgError(() => checkAvBackward(op, 1, avbArgs({ gradValue: t([1, 1, 9, 4], 'float64') })), 'na1d_av_backward: grad_value is float64 but attn is float32');
    expectArgError(() => checkAvBackward(op, 1, avbArgs({ kernelSize: 4, attn: t([1, 1, 9, 4]), gradAttn: t([1, 1, 9, 4]) })), 'na1d_av_backward: kernel_size=4 is even');
  });
});
