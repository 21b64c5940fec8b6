import { describe, expect, it } from 'vitest';
import { NattenArgumentError, na1d, na2d, na2dBackward, na3d, setBackend, type Tensor } from '../src/index.ts';
import { rnd } from './helpers.ts';

setBackend('cpu');

const q2 = rnd([1, 6, 6, 2, 4]);

describe('argument errors are NattenArgumentErrors naming the op, argument, value and rule', () => {
  it('bad backend name (per call and setBackend)', async () => {
    await expect(na2d(q2, q2, q2, { kernelSize: 3, backend: 'gpu' as 'webgpu' })).rejects.toThrow(
      "na2d: backend='gpu' is not a backend; use 'cpu', 'webgpu' or 'auto'",
    );
    expect(() => setBackend('metal' as 'cpu')).toThrow("setBackend: backend='metal' is not a backend; use 'cpu', 'webgpu' or 'auto'");
  });

  it('unknown options (typos of NATTEN names) are rejected', async () => {
    await expect(na2d(q2, q2, q2, { kernelSize: 3, kernel_size: 3 } as unknown as { kernelSize: 3 })).rejects.toThrow(
      "na2d: unknown option 'kernel_size'; allowed options are kernelSize, dilation, stride, isCausal, scale, rpb, returnLse, additionalKeys, additionalValues, backend, config",
    );
    await expect(na2dBackward(q2, q2, q2, q2, q2, rnd([1, 6, 6, 2]), { kernelSize: 3, returnLse: true } as unknown as { kernelSize: 3 })).rejects.toThrow(
      "na2dBackward: unknown option 'returnLse'",
    );
  });

  it('tuple lengths must match the rank', async () => {
    await expect(na2d(q2, q2, q2, { kernelSize: [3, 3, 3] as unknown as [number, number] })).rejects.toThrow(
      'na2d: kernel_size has 3 entries ([3, 3, 3]) but this is a 2-D op; give one integer or a tuple of 2',
    );
    await expect(na2d(q2, q2, q2, { kernelSize: 3, isCausal: [true] as unknown as [boolean, boolean] })).rejects.toThrow(
      'na2d: is_causal has 1 entries ([true]) but this is a 2-D op',
    );
  });

  it('kernel, dilation and stride rules', async () => {
    await expect(na2d(q2, q2, q2, { kernelSize: [3, 4], dilation: [1, 2] })).rejects.toThrow(
      'na2d: kernel_size[1]=4 times dilation[1]=2 exceeds input length 6 along spatial axis 1',
    );
    await expect(na2d(q2, q2, q2, { kernelSize: 3, stride: 4 })).rejects.toThrow('na2d: stride[0]=4 is larger than kernel_size[0]=3');
    await expect(na1d(rnd([1, 8, 1, 4]), rnd([1, 8, 1, 4]), rnd([1, 8, 1, 4]), { kernelSize: 1 })).rejects.toThrow('na1d: kernel_size=1 must be an integer >= 2');
  });

  it('layout mismatch: 3-D op on a 2-D tensor', async () => {
    await expect(na3d(q2, q2, q2, { kernelSize: 3 })).rejects.toThrow(
      'na3d: query must be a rank-6 tensor [batch, depth, height, width, heads, head_dim] for 3-D NA, got shape [1, 6, 6, 2, 4]',
    );
  });

  it('mismatched options: rpb with causal masking, rpb with an even kernel, rpb of the wrong shape', async () => {
    const rpb = rnd([2, 5, 5]);
    await expect(na2d(q2, q2, q2, { kernelSize: 3, isCausal: [false, true], rpb })).rejects.toThrow(
      'na2d: rel_pos_bias cannot be combined with causal masking',
    );
    await expect(na2d(q2, q2, q2, { kernelSize: [3, 4], rpb: rnd([2, 5, 7]) })).rejects.toThrow('na2d: rel_pos_bias needs odd kernel sizes, got kernel_size[1]=4');
    await expect(na2d(q2, q2, q2, { kernelSize: 3, rpb: rnd([2, 5, 7]) })).rejects.toThrow('na2d: rel_pos_bias must have shape [2, 5, 5], got [2, 5, 7]');
  });

  it('scale and returnLse types', async () => {
    await expect(na2d(q2, q2, q2, { kernelSize: 3, scale: Number.NaN })).rejects.toThrow('na2d: scale=NaN must be a finite number');
    await expect(na2d(q2, q2, q2, { kernelSize: 3, returnLse: 'yes' as unknown as boolean })).rejects.toThrow('na2d: returnLse must be a boolean, got yes');
  });

  it('config must be auto or { forward, backward } with known keys', async () => {
    await expect(na2d(q2, q2, q2, { kernelSize: 3, config: 'fast' as 'auto' })).rejects.toThrow("na2d: config must be 'auto' or { forward?, backward? }, got 'fast'");
    await expect(na2d(q2, q2, q2, { kernelSize: 3, config: { forward: { qTile: [8, 8] } as unknown as { queryTileSize: number[] } } })).rejects.toThrow(
      "na2d: unknown key 'qTile' in config.forward; allowed keys are queryTileSize, keyTileSize, lanes",
    );
    await expect(na2d(q2, q2, q2, { kernelSize: 3, config: { forward: { lanes: 3 } } })).rejects.toThrow('na2d_forward: lanes=3 is not one of 1, 2, 4, 8');
    const lse2 = rnd([1, 6, 6, 2]);
    await expect(na2dBackward(q2, q2, q2, q2, q2, lse2, { kernelSize: 3, config: { backward: { qTile: [8, 8] } as unknown as { queryTileSize: number[] } } })).rejects.toThrow(
      "na2dBackward: unknown key 'qTile' in config.backward; allowed keys are queryTileSize, keyTileSize, numSplitsKey, computeDeltaWithTorch, lanes",
    );
    await expect(na2dBackward(q2, q2, q2, q2, q2, lse2, { kernelSize: 3, config: { backward: { lanes: 3 } } })).rejects.toThrow('na2d_backward: lanes=3 is not one of 1, 2, 4, 8 (invocations per row)');
    await expect(na2dBackward(q2, q2, q2, q2, q2, lse2, { kernelSize: 3, config: { backward: { lanes: 2 } } })).rejects.toThrow('na2d_backward: lanes=2 needs query_tile_size and key_tile_size');
  });

  it('not a tensor, and host/GPU mixing', async () => {
    await expect(na2d(q2, q2, [1, 2] as unknown as Tensor, { kernelSize: 3 })).rejects.toThrow(
      'na2d: value must be a tensor (a host { shape, dtype, data } or a GPU tensor), got object',
    );
    const fakeGpu = { shape: [1, 6, 6, 2, 4], dtype: 'float32', buffer: {}, numel: 288, byteLength: 1152 };
    await expect(na2d(q2, q2, fakeGpu as unknown as Tensor, { kernelSize: 3 })).rejects.toThrow(
      'na2d: query is a host tensor but value is a gpu tensor; pass all host tensors or all GPU tensors (use toGpu/toHost)',
    );
  });

  it('dtype mismatch between query and value', async () => {
    await expect(na2d(q2, q2, rnd([1, 6, 6, 2, 4], 'float64'), { kernelSize: 3 })).rejects.toBeInstanceOf(NattenArgumentError);
    await expect(na2d(q2, q2, rnd([1, 6, 6, 2, 4], 'float64'), { kernelSize: 3 })).rejects.toThrow('na2d: value is float64 but query is float32');
  });
});
