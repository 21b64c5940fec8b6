import { type NaRank, type Tensor, tensor, toFloat64Values, zeros } from '@natten-web/core';
import { na1dForward, na2dForward, na3dForward } from '@natten-web/cpu';
import { beforeAll, describe, expect, it } from 'vitest';
import { NeighborhoodAttention1D, NeighborhoodAttention2D, NeighborhoodAttention3D, setBackend } from '../src/index.ts';
import { expectClose, rnd } from './helpers.ts';

beforeAll(() => setBackend('cpu'));

interface Spec {
  readonly rank: NaRank;
  readonly kernelSize: number | readonly number[];
  readonly dilation: number | readonly number[];
  readonly isCausal: boolean | readonly boolean[];
  readonly scale: number;
}

/**
 * Hand-written reference of NATTEN's module: y = x W_qkv^T + b; y.reshape(B, *sp, 3, H, D) (so q/k/v
 * head h, channel d is column s*C + h*D + d); each head separately through the CPU seed op; heads
 * concatenated back to C; proj.
 */
function reference(spec: Spec, x: Tensor, w: Record<string, Tensor>, H: number): Float64Array {
  const C = x.shape[x.shape.length - 1] as number;
  const D = C / H;
  const sp = x.shape.slice(1, -1);
  const B = x.shape[0] as number;
  const rows = B * sp.reduce((a, b) => a * b, 1);
  const xv = toFloat64Values(x);
  const W = toFloat64Values(w['qkv.weight'] as Tensor);
  const bq = w['qkv.bias'] ? toFloat64Values(w['qkv.bias']) : undefined;
  const out = new Float64Array(rows * C);
  for (let h = 0; h < H; h++) {
    const part = (s: number): Tensor => {
      const t = new Float32Array(rows * D);
      for (let r = 0; r < rows; r++)
        for (let d = 0; d < D; d++) {
          const col = s * C + h * D + d; // reshape(B, *sp, 3, H, D)
          let acc = bq ? (bq[col] as number) : 0;
          for (let i = 0; i < C; i++) acc += (xv[r * C + i] as number) * (W[col * C + i] as number);
          t[r * D + d] = acc;
        }
      return tensor([B, ...sp, 1, D], 'float32', t);
    };
    const o = zeros([B, ...sp, 1, D], 'float32');
    let rpb: Tensor | null = null;
    if (w.rpb) {
      const full = w.rpb;
      const per = full.data.length / H;
      rpb = tensor([1, ...full.shape.slice(1)], 'float32', Float32Array.from(full.data.slice(h * per, (h + 1) * per)));
    }
    const fwd = (spec.rank === 1 ? na1dForward : spec.rank === 2 ? na2dForward : na3dForward) as unknown as (...a: unknown[]) => void;
    fwd(o, part(0), part(1), part(2), rpb, null, spec.kernelSize, spec.dilation, spec.isCausal, spec.scale);
    for (let r = 0; r < rows; r++) for (let d = 0; d < D; d++) out[r * C + h * D + d] = o.data[r * D + d] as number;
  }
  const P = toFloat64Values(w['proj.weight'] as Tensor);
  const bp = toFloat64Values(w['proj.bias'] as Tensor);
  const y = new Float64Array(rows * C);
  for (let r = 0; r < rows; r++)
    for (let o = 0; o < C; o++) {
      let acc = bp[o] as number;
      for (let i = 0; i < C; i++) acc += (out[r * C + i] as number) * (P[o * C + i] as number);
      y[r * C + o] = acc;
    }
  return y;
}

function weights(C: number, H: number, rpbShape?: number[], qkvBias = true): Record<string, Tensor> {
  const w: Record<string, Tensor> = { 'qkv.weight': rnd([3 * C, C], 'float32', 0.3), 'proj.weight': rnd([C, C], 'float32', 0.3), 'proj.bias': rnd([C], 'float32', 0.1) };
  if (qkvBias) w['qkv.bias'] = rnd([3 * C], 'float32', 0.1);
  if (rpbShape) w.rpb = rnd([H, ...rpbShape], 'float32', 0.5);
  return w;
}

describe('NeighborhoodAttention modules vs a hand-written reference', () => {
  it('2-D with relPosBias and qkvBias: loadWeights(PyTorch state_dict) then forward', async () => {
    const m = new NeighborhoodAttention2D({ dim: 12, numHeads: 3, kernelSize: 3, dilation: [1, 2], relPosBias: true });
    const w = weights(12, 3, [5, 5]);
    m.loadWeights(w);
    const x = rnd([2, 5, 6, 12]);
    const y = await m.forward(x);
    expect(y.shape).toEqual([2, 5, 6, 12]);
    expect(y.dtype).toBe('float32');
    expectClose(y, tensor(y.shape, 'float64', reference({ rank: 2, kernelSize: 3, dilation: [1, 2], isCausal: false, scale: 4 ** -0.5 }, x, w, 3)), 2e-6);
  });

  it('1-D causal, no qkv bias, custom qkScale', async () => {
    const m = new NeighborhoodAttention1D({ dim: 8, numHeads: 2, kernelSize: 5, isCausal: true, qkvBias: false, qkScale: 0.25 });
    const w = weights(8, 2, undefined, false);
    m.loadWeights(w);
    const x = rnd([1, 11, 8]);
    const y = await m.forward(x);
    expectClose(y, tensor(y.shape, 'float64', reference({ rank: 1, kernelSize: 5, dilation: 1, isCausal: true, scale: 0.25 }, x, w, 2)), 2e-6);
  });

  it('3-D with per-axis kernel and rpb', async () => {
    const m = new NeighborhoodAttention3D({ dim: 8, numHeads: 2, kernelSize: [3, 3, 5], relPosBias: true });
    const w = weights(8, 2, [5, 5, 9]);
    m.loadWeights(w);
    const x = rnd([1, 3, 4, 5, 8]);
    const y = await m.forward(x);
    expectClose(y, tensor(y.shape, 'float64', reference({ rank: 3, kernelSize: [3, 3, 5], dilation: 1, isCausal: false, scale: 0.5 }, x, w, 2)), 2e-6);
  });

  it('seeded init: deterministic per seed, rpb zero, stateDict round trip', async () => {
    const a = new NeighborhoodAttention2D({ dim: 8, numHeads: 2, kernelSize: 3, relPosBias: true, seed: 5 });
    const b = new NeighborhoodAttention2D({ dim: 8, numHeads: 2, kernelSize: 3, relPosBias: true, seed: 5 });
    const c = new NeighborhoodAttention2D({ dim: 8, numHeads: 2, kernelSize: 3, relPosBias: true, seed: 6 });
    const sa = a.stateDict();
    expect(Object.keys(sa)).toEqual(['qkv.weight', 'qkv.bias', 'rpb', 'proj.weight', 'proj.bias']);
    expect(sa['qkv.weight']?.shape).toEqual([24, 8]);
    expect(sa.rpb?.shape).toEqual([2, 5, 5]);
    expect(Array.from(sa.rpb?.data ?? [])).toEqual(new Array(50).fill(0));
    expect(Array.from(sa['qkv.weight']?.data ?? [])).toEqual(Array.from(b.stateDict()['qkv.weight']?.data ?? []));
    expect(Array.from(sa['qkv.weight']?.data ?? [])).not.toEqual(Array.from(c.stateDict()['qkv.weight']?.data ?? []));
    const bound = 1 / Math.sqrt(8);
    expect(Array.from(sa['qkv.weight']?.data ?? []).every((v) => Math.abs(v) <= bound)).toBe(true);
    const x = rnd([1, 4, 4, 8]);
    c.loadWeights(sa);
    expect(Array.from((await c.forward(x)).data)).toEqual(Array.from((await a.forward(x)).data));
  });
});

describe('loadWeights errors', () => {
  const make = () => new NeighborhoodAttention2D({ dim: 8, numHeads: 2, kernelSize: 3 });
  it('missing key', () => {
    const w = weights(8, 2);
    delete w['proj.bias'];
    expect(() => make().loadWeights(w)).toThrow("NeighborhoodAttention2D.loadWeights: missing key 'proj.bias' (shape [8])");
  });
  it('wrong shape', () => {
    const w = { ...weights(8, 2), 'qkv.weight': rnd([8, 24]) };
    expect(() => make().loadWeights(w)).toThrow(
      "NeighborhoodAttention2D.loadWeights: 'qkv.weight' has shape [8, 24] but this module (dim=8, numHeads=2) needs [24, 8]",
    );
  });
  it('flat array of the wrong length', () => {
    const w = { ...weights(8, 2), 'qkv.bias': new Float32Array(23) };
    expect(() => make().loadWeights(w)).toThrow("NeighborhoodAttention2D.loadWeights: 'qkv.bias' has 23 values but shape [24] needs 24");
  });
  it('unexpected key, with a hint', () => {
    const w = { ...weights(8, 2), rpb: rnd([2, 5, 5]) };
    expect(() => make().loadWeights(w)).toThrow(
      "NeighborhoodAttention2D.loadWeights: unexpected key 'rpb' (this module was built without relPosBias); expected keys are qkv.weight, qkv.bias, proj.weight, proj.bias",
    );
  });
  it('a failed load changes nothing; flat typed arrays are accepted', () => {
    const m = make();
    const before = m.stateDict();
    const w = weights(8, 2);
    expect(() => m.loadWeights({ ...w, 'proj.weight': new Float32Array(3) })).toThrow("'proj.weight' has 3 values");
    expect(Array.from(m.stateDict()['qkv.weight']?.data ?? [])).toEqual(Array.from(before['qkv.weight']?.data ?? []));
    const flat = Object.fromEntries(Object.entries(w).map(([k, t]) => [k, t.data as Float32Array]));
    m.loadWeights(flat);
    expect(Array.from(m.stateDict()['qkv.weight']?.data ?? [])).toEqual(Array.from(w['qkv.weight']?.data ?? []));
  });
});

describe('module construction and input errors', () => {
  it('dim must divide into heads; rpb needs non-causal; unknown options', () => {
    expect(() => new NeighborhoodAttention2D({ dim: 10, numHeads: 3, kernelSize: 3 })).toThrow('NeighborhoodAttention2D: dim=10 must be divisible by numHeads=3');
    expect(() => new NeighborhoodAttention1D({ dim: 8, numHeads: 2, kernelSize: 3, isCausal: true, relPosBias: true })).toThrow(
      'NeighborhoodAttention1D: relPosBias cannot be combined with isCausal',
    );
    expect(() => new NeighborhoodAttention1D({ dim: 8, numHeads: 2, kernelSize: 4, relPosBias: true })).toThrow(
      'NeighborhoodAttention1D: relPosBias needs odd kernel sizes, got kernelSize=[4]',
    );
    expect(() => new NeighborhoodAttention1D({ dim: 8, numHeads: 2, kernelSize: 3, attnDrop: 0.1 } as unknown as { dim: 8; numHeads: 2; kernelSize: 3 })).toThrow(
      "NeighborhoodAttention1D: unknown option 'attnDrop'",
    );
  });
  it('forward checks the input layout', async () => {
    const m = new NeighborhoodAttention2D({ dim: 8, numHeads: 2, kernelSize: 3 });
    await expect(m.forward(rnd([1, 4, 4, 6]))).rejects.toThrow('NeighborhoodAttention2D.forward: x must have shape [batch, height, width, 8], got [1, 4, 4, 6]');
  });
});
