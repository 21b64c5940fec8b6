import { type BoolDimsOrScalar, type DimsOrScalar, lseShape, type NaRank, type Tensor, zeros } from '@natten-web/core';
import { na1dBackward as cpu1dBackward, na1dForward as cpu1dForward, na2dBackward as cpu2dBackward, na2dForward as cpu2dForward, na3dBackward as cpu3dBackward, na3dForward as cpu3dForward } from '@natten-web/cpu';
import { beforeAll, describe, expect, it } from 'vitest';
import { na1d, na1dBackward, na2d, na2dBackward, na3d, na3dBackward, setBackend } from '../src/index.ts';
import { expectSame, like, rnd } from './helpers.ts';

beforeAll(() => setBackend('cpu'));

interface Case {
  readonly name: string;
  readonly rank: NaRank;
  readonly q: number[];
  readonly kv: number[];
  readonly dv: number;
  readonly kernelSize: DimsOrScalar<NaRank>;
  readonly dilation?: DimsOrScalar<NaRank>;
  readonly stride?: DimsOrScalar<NaRank>;
  readonly isCausal?: BoolDimsOrScalar<NaRank>;
  readonly rpb?: number[];
  readonly scale?: number;
}

const CASES: Case[] = [
  { name: '1-D GQA, Dv != D, dilation, causal, stride', rank: 1, q: [2, 12, 4, 8], kv: [2, 12, 2, 8], dv: 4, kernelSize: 3, dilation: 2, isCausal: true, stride: 2 },
  { name: '1-D rpb, explicit scale', rank: 1, q: [1, 9, 2, 4], kv: [1, 9, 2, 4], dv: 4, kernelSize: 5, rpb: [2, 9], scale: 0.3 },
  { name: '2-D per-axis kernel/dilation, mixed causal', rank: 2, q: [1, 6, 7, 2, 4], kv: [1, 6, 7, 2, 4], dv: 4, kernelSize: [3, 3], dilation: [1, 2], isCausal: [true, false] },
  { name: '2-D rpb', rank: 2, q: [2, 5, 5, 3, 4], kv: [2, 5, 5, 3, 4], dv: 4, kernelSize: [3, 5], rpb: [3, 5, 9] },
  { name: '3-D even kernel, GQA', rank: 3, q: [1, 4, 5, 4, 4, 4], kv: [1, 4, 5, 4, 1, 4], dv: 8, kernelSize: [2, 3, 3], stride: [1, 2, 1] },
  { name: '3-D rpb, dilation', rank: 3, q: [1, 6, 3, 3, 1, 4], kv: [1, 6, 3, 3, 1, 4], dv: 4, kernelSize: 3, dilation: [2, 1, 1], rpb: [1, 5, 5, 5] },
];

const FWD = { 1: na1d, 2: na2d, 3: na3d } as const;
const BWD = { 1: na1dBackward, 2: na2dBackward, 3: na3dBackward } as const;
const CPU_FWD = { 1: cpu1dForward, 2: cpu2dForward, 3: cpu3dForward } as const;
const CPU_BWD = { 1: cpu1dBackward, 2: cpu2dBackward, 3: cpu3dBackward } as const;

type AnyFwd = (q: Tensor, k: Tensor, v: Tensor, o: Record<string, unknown>) => Promise<Tensor | { output: Tensor; lse: Tensor }>;
type AnyBwd = (q: Tensor, k: Tensor, v: Tensor, o: Tensor, dO: Tensor, lse: Tensor, opts: Record<string, unknown>) => Promise<Record<string, Tensor | undefined>>;
type CpuFwd = (...a: unknown[]) => void;

function inputs(c: Case) {
  const q = rnd(c.q);
  const k = rnd(c.kv);
  const v = rnd([...c.kv.slice(0, -1), c.dv]);
  const rpb = c.rpb ? rnd(c.rpb) : undefined;
  return { q, k, v, rpb };
}

function options(c: Case): Record<string, unknown> {
  const o: Record<string, unknown> = { kernelSize: c.kernelSize };
  if (c.dilation !== undefined) o.dilation = c.dilation;
  if (c.stride !== undefined) o.stride = c.stride;
  if (c.isCausal !== undefined) o.isCausal = c.isCausal;
  if (c.scale !== undefined) o.scale = c.scale;
  return o;
}

describe.each(CASES)('na$rank-d functional vs the CPU seed op: $name', (c) => {
  const fwd = FWD[c.rank] as unknown as AnyFwd;
  const cpuFwd = CPU_FWD[c.rank] as unknown as CpuFwd;
  const D = c.q[c.q.length - 1] as number;
  const scale = c.scale ?? D ** -0.5;

  it('forward output and lse equal the seed op with outputs passed in', async () => {
    const { q, k, v, rpb } = inputs(c);
    const res = (await fwd(q, k, v, { ...options(c), rpb, returnLse: true })) as { output: Tensor; lse: Tensor };
    const output = zeros([...c.q.slice(0, -1), c.dv], 'float32');
    const lse = zeros(lseShape(c.q[0] as number, c.q.slice(1, 1 + c.rank), c.q[c.rank + 1] as number), 'float32');
    cpuFwd(output, q, k, v, rpb ?? null, lse, c.kernelSize, c.dilation ?? 1, c.isCausal ?? false, scale, undefined, undefined, { stride: c.stride ?? 1 });
    expectSame(res.output, output);
    expectSame(res.lse, lse);
    const plain = (await fwd(q, k, v, { ...options(c), rpb })) as Tensor;
    expectSame(plain, output);
  });

  it('backward gradients equal the seed op', async () => {
    const { q, k, v, rpb } = inputs(c);
    const { output, lse } = (await fwd(q, k, v, { ...options(c), rpb, returnLse: true })) as { output: Tensor; lse: Tensor };
    const dO = rnd(output.shape, 'float32', 0.05);
    const grads = await (BWD[c.rank] as unknown as AnyBwd)(q, k, v, output, dO, lse, { ...options(c), rpb });
    const dq = like(q);
    const dk = like(k);
    const dv = like(v);
    const drpb = rpb ? like(rpb) : null;
    (CPU_BWD[c.rank] as unknown as CpuFwd)(dq, dk, dv, q, k, v, output, dO, lse, c.kernelSize, c.dilation ?? 1, c.isCausal ?? false, scale, undefined, undefined, undefined, undefined, {
      stride: c.stride ?? 1,
      relPosBias: rpb ?? null,
      gradRelPosBias: drpb,
    });
    expectSame(grads.gradQuery as Tensor, dq);
    expectSame(grads.gradKey as Tensor, dk);
    expectSame(grads.gradValue as Tensor, dv);
    if (drpb) expectSame(grads.gradRpb as Tensor, drpb);
    else expect(grads.gradRpb).toBeUndefined();
    expect(grads.gradAdditionalKeys).toBeUndefined();
  });
});

describe('scale', () => {
  it('an explicit scale of 0 is honoured (uniform weights), unlike NATTEN scale-or-default', async () => {
    const q = rnd([1, 7, 1, 4]);
    const k = rnd([1, 7, 1, 4]);
    const v = rnd([1, 7, 1, 4]);
    const zero = await na1d(q, k, v, { kernelSize: 3, scale: 0 });
    // Query 3 sees keys 2, 3, 4 with equal weight 1/3.
    for (let c = 0; c < 4; c++) {
      const mean = ((v.data[2 * 4 + c] as number) + (v.data[3 * 4 + c] as number) + (v.data[4 * 4 + c] as number)) / 3;
      expect(zero.data[3 * 4 + c]).toBeCloseTo(mean, 6);
    }
    const dflt = await na1d(q, k, v, { kernelSize: 3 });
    const explicit = await na1d(q, k, v, { kernelSize: 3, scale: 0.5 });
    expectSame(dflt, explicit); // D = 4: default is 4^-0.5 = 0.5
    expect(Array.from(zero.data)).not.toEqual(Array.from(dflt.data));
  });
});

describe('dtypes on the CPU backend', () => {
  it('float64 and float16 inputs return outputs of the same dtype and float32 lse', async () => {
    for (const dtype of ['float64', 'float16'] as const) {
      const q = rnd([1, 6, 6, 1, 4], dtype);
      const res = await na2d(q, q, q, { kernelSize: 3, returnLse: true });
      expect(res.output.dtype).toBe(dtype);
      expect(res.lse.dtype).toBe('float32');
      expect(res.lse.shape).toEqual([1, 6, 6, 1]);
    }
  });
});

describe('config', () => {
  it('explicit NATTEN tiles are passed through to the backend (the CPU validates them)', async () => {
    const q = rnd([1, 16, 16, 1, 4]);
    const ok = await na2d(q, q, q, { kernelSize: 3, config: { forward: { queryTileSize: [8, 8], keyTileSize: [8, 8] } } });
    expectSame(ok, await na2d(q, q, q, { kernelSize: 3, config: 'auto' }));
    await expect(na2d(q, q, q, { kernelSize: 3, config: { forward: { queryTileSize: [4, 4], keyTileSize: [8, 8] } } })).rejects.toThrow(
      /query_tile_size=\[4, 4\] and key_tile_size=\[8, 8\] multiply to 16x64, which is not a forward tile/,
    );
  });
});
