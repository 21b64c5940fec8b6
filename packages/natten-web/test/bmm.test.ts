import { type NaRank, type Tensor } from '@natten-web/core';
import {
  na1dAvBackward as cpu1AvB,
  na1dAvForward as cpu1Av,
  na1dQkBackward as cpu1QkB,
  na1dQkForward as cpu1Qk,
  na2dAvBackward as cpu2AvB,
  na2dAvForward as cpu2Av,
  na2dQkBackward as cpu2QkB,
  na2dQkForward as cpu2Qk,
  na3dAvBackward as cpu3AvB,
  na3dAvForward as cpu3Av,
  na3dQkBackward as cpu3QkB,
  na3dQkForward as cpu3Qk,
} from '@natten-web/cpu';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  na1dAv,
  na1dAvBackward,
  na1dQk,
  na1dQkBackward,
  na2dAv,
  na2dAvBackward,
  na2dQk,
  na2dQkBackward,
  na3dAv,
  na3dAvBackward,
  na3dQk,
  na3dQkBackward,
  setBackend,
  zeros,
} from '../src/index.ts';
import { expectSame, like, rnd } from './helpers.ts';

beforeAll(() => setBackend('cpu'));

type Fn = (...a: unknown[]) => unknown;
const API = {
  1: { qk: na1dQk, av: na1dAv, qkB: na1dQkBackward, avB: na1dAvBackward, cQk: cpu1Qk, cAv: cpu1Av, cQkB: cpu1QkB, cAvB: cpu1AvB },
  2: { qk: na2dQk, av: na2dAv, qkB: na2dQkBackward, avB: na2dAvBackward, cQk: cpu2Qk, cAv: cpu2Av, cQkB: cpu2QkB, cAvB: cpu2AvB },
  3: { qk: na3dQk, av: na3dAv, qkB: na3dQkBackward, avB: na3dAvBackward, cQk: cpu3Qk, cAv: cpu3Av, cQkB: cpu3QkB, cAvB: cpu3AvB },
} as unknown as Record<NaRank, Record<string, Fn>>;

const CASES = [
  { rank: 1 as NaRank, shape: [2, 3, 11, 4], kernelSize: 5, dilation: 2, isCausal: false, rpb: [3, 9] },
  { rank: 1 as NaRank, shape: [1, 2, 9, 4], kernelSize: 3, dilation: 1, isCausal: true, rpb: undefined },
  { rank: 2 as NaRank, shape: [1, 2, 6, 7, 4], kernelSize: [3, 5], dilation: [2, 1], isCausal: false, rpb: [2, 5, 9] },
  { rank: 2 as NaRank, shape: [1, 1, 5, 5, 3], kernelSize: 3, dilation: 1, isCausal: [true, false], rpb: undefined },
  { rank: 3 as NaRank, shape: [1, 2, 4, 5, 3, 2], kernelSize: 3, dilation: 1, isCausal: false, rpb: [2, 5, 5, 5] },
  { rank: 3 as NaRank, shape: [1, 1, 3, 6, 3, 2], kernelSize: 3, dilation: [1, 2, 1], isCausal: [false, false, true], rpb: undefined },
];

describe.each(CASES)('BMM ops, rank $rank, K=$kernelSize d=$dilation causal=$isCausal', (c) => {
  const f = API[c.rank] as Record<string, Fn>;
  const opts = { kernelSize: c.kernelSize, dilation: c.dilation, isCausal: c.isCausal };
  const P = (Array.isArray(c.kernelSize) ? c.kernelSize : new Array<number>(c.rank).fill(c.kernelSize as number)).reduce((a, b) => a * b, 1);

  it('qk and av equal the seed ops (heads-first)', async () => {
    const q = rnd(c.shape);
    const k = rnd(c.shape);
    const v = rnd(c.shape);
    const rpb = c.rpb ? rnd(c.rpb) : undefined;
    const attn = (await (f.qk as Fn)(q, k, { ...opts, rpb })) as Tensor;
    const ref = zeros([...c.shape.slice(0, -1), P], 'float32');
    (f.cQk as Fn)(ref, q, k, rpb ?? null, c.kernelSize, c.dilation, c.isCausal);
    expectSame(attn, ref);
    const out = (await (f.av as Fn)(attn, v, opts)) as Tensor;
    const refOut = like(v);
    (f.cAv as Fn)(refOut, attn, v, c.kernelSize, c.dilation, c.isCausal);
    expectSame(out, refOut);
  });

  it('qk and av backward equal the seed ops', async () => {
    const q = rnd(c.shape);
    const k = rnd(c.shape);
    const v = rnd(c.shape);
    const rpb = c.rpb ? rnd(c.rpb) : undefined;
    const attn = rnd([...c.shape.slice(0, -1), P]);
    const dAttn = rnd(attn.shape);
    const dOut = rnd(c.shape);
    const qkG = (await (f.qkB as Fn)(q, k, dAttn, { ...opts, rpb })) as Record<string, Tensor | undefined>;
    const [dq, dk] = [like(q), like(k)];
    const drpb = rpb ? like(rpb) : null;
    (f.cQkB as Fn)(dq, dk, drpb, dAttn, q, k, c.kernelSize, c.dilation, c.isCausal);
    expectSame(qkG.gradQuery as Tensor, dq);
    expectSame(qkG.gradKey as Tensor, dk);
    if (drpb) {
      expectSame(qkG.gradRpb as Tensor, drpb);
      expect(Array.from(drpb.data).some((x) => x !== 0)).toBe(true);
    } else expect(qkG.gradRpb).toBeUndefined();
    const avG = (await (f.avB as Fn)(attn, v, dOut, opts)) as Record<string, Tensor>;
    const [dA, dv] = [like(attn), like(v)];
    (f.cAvB as Fn)(dA, dv, dOut, attn, v, c.kernelSize, c.dilation, c.isCausal);
    expectSame(avG.gradAttn as Tensor, dA);
    expectSame(avG.gradValue as Tensor, dv);
  });
});

describe('BMM errors', () => {
  it('even kernels are rejected (odd only, like NATTEN BMM ops)', async () => {
    const q = rnd([1, 1, 8, 4]);
    await expect(na1dQk(q, q, { kernelSize: 4 })).rejects.toThrow('na1dQk: kernel_size=4 is even');
  });
  it('attn with the wrong slot count', async () => {
    const v = rnd([1, 1, 8, 4]);
    await expect(na1dAv(rnd([1, 1, 8, 5]), v, { kernelSize: 3 })).rejects.toThrow('na1dAv: attn must have shape [1, 1, 8, 3], got [1, 1, 8, 5]');
  });
  it('rpb with causal', async () => {
    const q = rnd([1, 2, 8, 4]);
    await expect(na1dQk(q, q, { kernelSize: 3, isCausal: true, rpb: rnd([2, 5]) })).rejects.toThrow('na1dQk: rel_pos_bias cannot be combined with causal masking');
  });
});
