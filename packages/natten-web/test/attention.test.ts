import { type Tensor, tensor, toFloat64Values } from '@natten-web/core';
import { describe, expect, it } from 'vitest';
import { attention, attentionBackward, mergeAttentions } from '../src/index.ts';
import { expectClose, rnd } from './helpers.ts';

/** Direct dense attention in f64 (single loop nest, no shared code with the library). */
function direct(q: Tensor, k: Tensor, v: Tensor, scale: number, causal: boolean): { out: Float64Array; lse: Float64Array } {
  const [B, S, H, D] = q.shape as [number, number, number, number];
  const [, N, Hkv] = k.shape as [number, number, number, number];
  const Dv = v.shape[3] as number;
  const [qv, kv, vv] = [q, k, v].map(toFloat64Values) as [Float64Array, Float64Array, Float64Array];
  const out = new Float64Array(B * S * H * Dv);
  const lse = new Float64Array(B * S * H);
  for (let b = 0; b < B; b++)
    for (let i = 0; i < S; i++)
      for (let h = 0; h < H; h++) {
        const hk = Math.floor((h * Hkv) / H);
        const s: number[] = [];
        for (let j = 0; j < (causal ? i + 1 : N); j++) {
          let d = 0;
          for (let c = 0; c < D; c++) d += (qv[((b * S + i) * H + h) * D + c] as number) * (kv[((b * N + j) * Hkv + hk) * D + c] as number);
          s.push(scale * d);
        }
        const z = s.reduce((a, x) => a + Math.exp(x), 0);
        s.forEach((x, j) => {
          for (let c = 0; c < Dv; c++) out[((b * S + i) * H + h) * Dv + c] += (Math.exp(x) / z) * (vv[((b * N + j) * Hkv + hk) * Dv + c] as number);
        });
        lse[(b * S + i) * H + h] = Math.log(z);
      }
  return { out, lse };
}

describe('attention (FMHA, heads-last)', () => {
  it('cross-attention with GQA and D_v != D matches a direct computation', async () => {
    const q = rnd([2, 5, 4, 8], 'float64');
    const k = rnd([2, 7, 2, 8], 'float64');
    const v = rnd([2, 7, 2, 3], 'float64');
    const r = await attention(q, k, v, { returnLse: true });
    const d = direct(q, k, v, 8 ** -0.5, false);
    expectClose(r.output, tensor([2, 5, 4, 3], 'float64', d.out), 1e-12);
    expectClose(r.lse, tensor([2, 5, 4], 'float32', Float32Array.from(d.lse)), 1e-5);
    expect(r.lse.dtype).toBe('float32');
  });

  it('causal is top-left aligned: query i sees keys 0..i', async () => {
    const q = rnd([1, 4, 1, 4], 'float64');
    const k = rnd([1, 6, 1, 4], 'float64');
    const out = await attention(q, k, k, { isCausal: true, scale: 0.3 });
    expectClose(out, tensor(out.shape, 'float64', direct(q, k, k, 0.3, true).out), 1e-12);
    // query 0 sees only key 0: its output is value 0.
    expect(Array.from(out.data.slice(0, 4))).toEqual(Array.from(k.data.slice(0, 4)));
  });

  it('attentionBackward matches finite differences', async () => {
    const q = rnd([1, 3, 2, 2], 'float64');
    const k = rnd([1, 4, 1, 2], 'float64');
    const v = rnd([1, 4, 1, 2], 'float64');
    const g = rnd([1, 3, 2, 2], 'float64');
    const f = await attention(q, k, v, { returnLse: true, isCausal: true });
    const grads = await attentionBackward(q, k, v, f.output, g, f.lse, { isCausal: true });
    const loss = () => direct(q, k, v, 2 ** -0.5, true).out.reduce((a, x, i) => a + x * (g.data[i] as number), 0);
    for (const [t, grad] of [[q, grads.gradQuery], [k, grads.gradKey], [v, grads.gradValue]] as const) {
      const data = t.data as Float64Array;
      for (let i = 0; i < data.length; i++) {
        const keep = data[i] as number;
        data[i] = keep + 1e-6;
        const up = loss();
        data[i] = keep - 1e-6;
        const down = loss();
        data[i] = keep;
        expect(grad.data[i] as number).toBeCloseTo((up - down) / 2e-6, 6);
      }
    }
  });

  it('shape errors name the op and the tensors', async () => {
    await expect(attention(rnd([1, 4, 2, 8]), rnd([1, 4, 3, 8]), rnd([1, 4, 3, 8]))).rejects.toThrow(
      'attention: key/value heads must evenly divide query heads (GQA/MQA), got heads_q=2, heads_kv=3',
    );
    await expect(attention(rnd([1, 4, 2, 8]), rnd([1, 4, 2, 4]), rnd([1, 4, 2, 8]))).rejects.toThrow('attention: query head_dim=8 and key head_dim=4 must match');
    await expect(attention(rnd([1, 4, 2, 8]), rnd([1, 4, 2, 8]), rnd([1, 4, 2, 8]), { isCausal: 1 as unknown as boolean })).rejects.toThrow(
      'attention: isCausal must be a boolean, got 1',
    );
  });
});

describe('mergeAttentions', () => {
  it('merging attention over two key halves equals attention over all keys', async () => {
    const q = rnd([1, 6, 2, 4], 'float64');
    const k = rnd([1, 10, 2, 4], 'float64');
    const v = rnd([1, 10, 2, 5], 'float64');
    const half = (t: Tensor, from: number, to: number): Tensor => {
      const [B, , H, D] = t.shape as [number, number, number, number];
      return tensor([B, to - from, H, D], 'float64', (t.data as Float64Array).slice(from * H * D, to * H * D));
    };
    const a = await attention(q, half(k, 0, 4), half(v, 0, 4), { returnLse: true });
    const b = await attention(q, half(k, 4, 7), half(v, 4, 7), { returnLse: true });
    const c = await attention(q, half(k, 7, 10), half(v, 7, 10), { returnLse: true });
    const all = await attention(q, k, v, { returnLse: true });
    const m = await mergeAttentions([a.output, b.output, c.output], [a.lse, b.lse, c.lse]);
    expectClose(m.output, all.output, 1e-6); // lse inputs are float32
    expectClose(m.lse, all.lse, 1e-6);
    expect(m.output.dtype).toBe('float64');
    expect(m.lse.dtype).toBe('float32');
  });

  it('errors: fewer than two, count mismatch, shape mismatch', async () => {
    const o = rnd([1, 3, 2, 4]);
    const l = rnd([1, 3, 2]);
    await expect(mergeAttentions([o], [l])).rejects.toThrow('mergeAttentions: needs at least 2 outputs to merge, got 1');
    await expect(mergeAttentions([o, o], [l])).rejects.toThrow('mergeAttentions: got 2 outputs but 1 lses; give one lse per output');
    await expect(mergeAttentions([o, rnd([1, 3, 2, 5])], [l, l])).rejects.toThrow('mergeAttentions: outputs[1] has shape [1, 3, 2, 5] but outputs[0] has [1, 3, 2, 4]');
    await expect(mergeAttentions([o, o], [l, rnd([1, 3, 3])])).rejects.toThrow('mergeAttentions: lses[1] must have shape [1, 3, 2]');
  });
});

describe('variable-length attention (packed sequences, batch 1)', () => {
  const seqQ = [3, 0, 6, 1];
  const seqKv = [4, 2, 6, 3];
  const S = 10;
  const N = 15;
  /** The packed tensor's rows [t0, t0 + n) as a tensor of batch 1. */
  const rows = (t: Tensor, t0: number, n: number): Tensor => {
    const w = (t.shape[2] as number) * (t.shape[3] as number);
    return tensor([1, n, t.shape[2] as number, t.shape[3] as number], 'float64', toFloat64Values(t).slice(t0 * w, (t0 + n) * w));
  };
  it.each([false, true])('each sequence attends to its own keys, as separate calls do (causal %s); forward and backward', async (causal) => {
    const q = rnd([1, S, 4, 8], 'float64');
    const k = rnd([1, N, 2, 8], 'float64');
    const v = rnd([1, N, 2, 3], 'float64');
    const dO = rnd([1, S, 4, 3], 'float64');
    const r = await attention(q, k, v, { returnLse: true, isCausal: causal, seqlensQ: seqQ, seqlensKv: seqKv });
    const cum = await attention(q, k, v, { returnLse: true, isCausal: causal, cumulativeSeqlenQ: [0, 3, 3, 9, 10], cumulativeSeqlenKv: [0, 4, 6, 12, 15] });
    expectClose(cum.output, r.output, 0);
    const g = await attentionBackward(q, k, v, r.output, dO, r.lse, { isCausal: causal, seqlensQ: seqQ, seqlensKv: seqKv });
    let q0 = 0;
    let k0 = 0;
    for (let s = 0; s < seqQ.length; s++) {
      const nq = seqQ[s] as number;
      const nk = seqKv[s] as number;
      if (nq > 0) {
        const part = await attention(rows(q, q0, nq), rows(k, k0, nk), rows(v, k0, nk), { returnLse: true, isCausal: causal });
        const d = direct(rows(q, q0, nq), rows(k, k0, nk), rows(v, k0, nk), 8 ** -0.5, causal);
        expectClose(rows(r.output, q0, nq), tensor(part.output.shape, 'float64', d.out), 1e-12);
        const pg = await attentionBackward(rows(q, q0, nq), rows(k, k0, nk), rows(v, k0, nk), part.output, rows(dO, q0, nq), part.lse, { isCausal: causal });
        expectClose(rows(g.gradQuery, q0, nq), pg.gradQuery, 1e-12);
        expectClose(rows(g.gradKey, k0, nk), pg.gradKey, 1e-12);
        expectClose(rows(g.gradValue, k0, nk), pg.gradValue, 1e-12);
      } else {
        // Keys of a sequence without queries get no gradient.
        expect(Array.from(toFloat64Values(rows(g.gradKey, k0, nk))).every((x) => x === 0)).toBe(true);
      }
      q0 += nq;
      k0 += nk;
    }
  });

  it('names the argument and the rule', async () => {
    const q = rnd([1, S, 4, 8]);
    const k = rnd([1, N, 2, 8]);
    await expect(attention(q, k, k, { seqlensQ: seqQ })).rejects.toThrow('attention: seqlensQ was given without seqlensKv; pass both or neither');
    await expect(attention(q, k, k, { seqlensQ: seqQ, cumulativeSeqlenKv: [0, 15] })).rejects.toThrow('attention: give seqlensQ/seqlensKv or cumulativeSeqlenQ/cumulativeSeqlenKv, not both forms');
    await expect(attention(q, k, k, { seqlensQ: [3, 7], seqlensKv: [5, 9] })).rejects.toThrow('attention: cumulativeSeqlenKv ends at 14 but there are 15 keys');
    await expect(attention(q, k, k, { seqlensQ: [3, -1, 8], seqlensKv: [5, 5, 5] })).rejects.toThrow('attention: seqlensQ[1]=-1 must be a non-negative integer');
    await expect(attention(q, k, k, { seqlensQ: [4, 6], seqlensKv: [0, 15] })).rejects.toThrow('attention: sequence 0 has 4 queries but no keys; a query needs at least one key');
    await expect(attention(rnd([2, 5, 4, 8]), rnd([2, 5, 2, 8]), rnd([2, 5, 2, 8]), { seqlensQ: [5], seqlensKv: [5] })).rejects.toThrow('attention: variable-length sequences are packed along the tokens, so batch must be 1, got 2');
  });
});
