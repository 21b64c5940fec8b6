import { buildTables, normalizeParams, type NaRank, type Tensor, tensor, toFloat64Values } from '@natten-web/core';
import { beforeAll, describe, expect, it } from 'vitest';
import { attention, mergeAttentions, na1d, na1dBackward, na2d, na2dBackward, setBackend } from '../src/index.ts';
import { expectClose, rnd } from './helpers.ts';

beforeAll(() => setBackend('cpu'));

interface Geometry {
  readonly rank: NaRank;
  readonly kernelSize: number | readonly number[];
  readonly dilation?: number | readonly number[];
  readonly isCausal?: boolean | readonly boolean[];
}

/** Key token indices of query token `xi` (flattened), from core's per-axis window tables. */
function neighbours(g: Geometry, spatial: readonly number[]): number[][] {
  const p = normalizeParams('ref', g.rank, { kernelSize: g.kernelSize, dilation: g.dilation, isCausal: g.isCausal }, spatial);
  const tables = buildTables(p, spatial);
  const N = spatial.reduce((a, b) => a * b, 1);
  const out: number[][] = [];
  for (let xi = 0; xi < N; xi++) {
    const coords: number[] = [];
    let rest = xi;
    for (let a = g.rank - 1; a >= 0; a--) {
      coords[a] = rest % (spatial[a] as number);
      rest = Math.floor(rest / (spatial[a] as number));
    }
    let keys = [0];
    for (let a = 0; a < g.rank; a++) {
      const t = tables[a];
      if (!t) throw new Error('missing table');
      const x = coords[a] as number;
      const axisKeys: number[] = [];
      for (let s = 0; s < (t.count[x] as number); s++) axisKeys.push((t.start[x] as number) + s * (t.params.dilation as number));
      keys = keys.flatMap((k) => axisKeys.map((j) => k * (spatial[a] as number) + j));
    }
    out.push(keys);
  }
  return out;
}

/** Dense reference: softmax over (NA neighbourhood ∪ additional tokens), heads-last, f64, single KV head group. */
function reference(g: Geometry, q: Tensor, k: Tensor, v: Tensor, ak: Tensor, av: Tensor, scale: number) {
  const spatial = q.shape.slice(1, 1 + g.rank);
  const [B, H, D] = [q.shape[0] as number, q.shape[g.rank + 1] as number, q.shape[g.rank + 2] as number];
  const Dv = v.shape[g.rank + 2] as number;
  const Hkv = k.shape[g.rank + 1] as number;
  const Na = ak.shape[1] as number;
  const N = spatial.reduce((a, b) => a * b, 1);
  const [qv, kv, vv, akv, avv] = [q, k, v, ak, av].map(toFloat64Values) as [Float64Array, Float64Array, Float64Array, Float64Array, Float64Array];
  const nb = neighbours(g, spatial);
  const out = new Float64Array(B * N * H * Dv);
  const lse = new Float64Array(B * N * H);
  for (let b = 0; b < B; b++)
    for (let x = 0; x < N; x++)
      for (let h = 0; h < H; h++) {
        const hk = Math.floor(h / (H / Hkv));
        const rows: { s: number; val: (c: number) => number }[] = [];
        const dot = (src: Float64Array, off: number) => {
          let s = 0;
          for (let c = 0; c < D; c++) s += (qv[((b * N + x) * H + h) * D + c] as number) * (src[off + c] as number);
          return scale * s;
        };
        for (const j of nb[x] as number[]) rows.push({ s: dot(kv, ((b * N + j) * Hkv + hk) * D), val: (c) => vv[((b * N + j) * Hkv + hk) * Dv + c] as number });
        for (let m = 0; m < Na; m++) rows.push({ s: dot(akv, ((b * Na + m) * Hkv + hk) * D), val: (c) => avv[((b * Na + m) * Hkv + hk) * Dv + c] as number });
        const mx = Math.max(...rows.map((r) => r.s));
        const sum = rows.reduce((a, r) => a + Math.exp(r.s - mx), 0);
        for (const r of rows) for (let c = 0; c < Dv; c++) out[((b * N + x) * H + h) * Dv + c] += (Math.exp(r.s - mx) / sum) * r.val(c);
        lse[(b * N + x) * H + h] = mx + Math.log(sum);
      }
  return { out, lse };
}

describe('additional keys/values (HEAD semantics: dense attention over extra tokens, merged)', () => {
  it('1-D causal, GQA: output and merged lse match a dense reference over neighbourhood ∪ extra tokens', async () => {
    const g: Geometry = { rank: 1, kernelSize: 3, dilation: 2, isCausal: true };
    const q = rnd([2, 10, 4, 4], 'float64');
    const k = rnd([2, 10, 2, 4], 'float64');
    const v = rnd([2, 10, 2, 6], 'float64');
    const ak = rnd([2, 3, 2, 4], 'float64');
    const av = rnd([2, 3, 2, 6], 'float64');
    const res = await na1d(q, k, v, { kernelSize: 3, dilation: 2, isCausal: true, additionalKeys: ak, additionalValues: av, returnLse: true });
    const ref = reference(g, q, k, v, ak, av, 0.5);
    // The NA part's lse is float32 (as in NATTEN), so the merge carries ~1e-7 relative rounding even in f64.
    expectClose(res.output, tensor(res.output.shape, 'float64', ref.out), 1e-6);
    expectClose(res.lse, tensor(res.lse.shape, 'float32', Float32Array.from(ref.lse)), 1e-5);
    const plain = await na1d(q, k, v, { kernelSize: 3, dilation: 2, isCausal: true, additionalKeys: ak, additionalValues: av });
    expectClose(plain, res.output, 0);
  });

  it('2-D float32: matches the reference to f32 accuracy', async () => {
    const g: Geometry = { rank: 2, kernelSize: [3, 5], isCausal: [false, true] };
    const q = rnd([1, 5, 6, 2, 8]);
    const k = rnd([1, 5, 6, 2, 8]);
    const v = rnd([1, 5, 6, 2, 8]);
    const ak = rnd([1, 4, 2, 8]);
    const av = rnd([1, 4, 2, 8]);
    const out = await na2d(q, k, v, { kernelSize: [3, 5], isCausal: [false, true], scale: 0.2, additionalKeys: ak, additionalValues: av });
    expectClose(out, tensor(out.shape, 'float64', reference(g, q, k, v, ak, av, 0.2).out), 2e-6);
  });

  it('equals mergeAttentions(na, attention) computed by hand', async () => {
    const q = rnd([1, 8, 2, 4], 'float64');
    const ak = rnd([1, 5, 2, 4], 'float64');
    const av = rnd([1, 5, 2, 4], 'float64');
    const na = await na1d(q, q, q, { kernelSize: 5, returnLse: true });
    const dense = await attention(q, ak, av, { returnLse: true });
    const merged = await mergeAttentions([na.output, dense.output], [na.lse, dense.lse]);
    const both = await na1d(q, q, q, { kernelSize: 5, additionalKeys: ak, additionalValues: av, returnLse: true });
    // na.lse is float32 (seed op), so the merge of the separately computed parts carries f32 lse rounding.
    expectClose(both.output, merged.output, 1e-6);
    expectClose(both.lse, merged.lse, 1e-6);
  });

  it('backward: gradients of query, key, value and the extra tokens match finite differences (float64)', async () => {
    const g: Geometry = { rank: 2, kernelSize: 3 };
    const q = rnd([1, 4, 4, 2, 3], 'float64');
    const k = rnd([1, 4, 4, 1, 3], 'float64');
    const v = rnd([1, 4, 4, 1, 2], 'float64');
    const ak = rnd([1, 2, 1, 3], 'float64');
    const av = rnd([1, 2, 1, 2], 'float64');
    const dO = rnd([1, 4, 4, 2, 2], 'float64');
    const scale = 0.7;
    const fwd = await na2d(q, k, v, { kernelSize: 3, scale, additionalKeys: ak, additionalValues: av, returnLse: true });
    const grads = await na2dBackward(q, k, v, fwd.output, dO, fwd.lse, { kernelSize: 3, scale, additionalKeys: ak, additionalValues: av });
    const loss = () => {
      const o = reference(g, q, k, v, ak, av, scale).out;
      return o.reduce((a, x, i) => a + x * (dO.data[i] as number), 0);
    };
    const checks: [string, Tensor, Tensor | undefined][] = [
      ['query', q, grads.gradQuery],
      ['key', k, grads.gradKey],
      ['value', v, grads.gradValue],
      ['additionalKeys', ak, grads.gradAdditionalKeys],
      ['additionalValues', av, grads.gradAdditionalValues],
    ];
    const eps = 1e-6;
    for (const [name, t, grad] of checks) {
      expect(grad, name).toBeDefined();
      const data = t.data as Float64Array;
      for (let i = 0; i < data.length; i += Math.max(1, Math.floor(data.length / 7))) {
        const keep = data[i] as number;
        data[i] = keep + eps;
        const up = loss();
        data[i] = keep - eps;
        const down = loss();
        data[i] = keep;
        expect((grad as Tensor).data[i] as number, `${name}[${i}]`).toBeCloseTo((up - down) / (2 * eps), 6);
      }
    }
  });

  it('only one of additionalKeys / additionalValues is an error (HEAD behaviour)', async () => {
    const q = rnd([1, 8, 1, 4]);
    const extra = rnd([1, 2, 1, 4]);
    await expect(na1d(q, q, q, { kernelSize: 3, additionalKeys: extra })).rejects.toThrow(
      'na1d: additionalKeys was given without additionalValues; pass both or neither',
    );
    await expect(na1d(q, q, q, { kernelSize: 3, additionalValues: extra })).rejects.toThrow(
      'na1d: additionalValues was given without additionalKeys; pass both or neither',
    );
    await expect(na1dBackward(q, q, q, q, q, rnd([1, 8, 1]), { kernelSize: 3, additionalKeys: extra })).rejects.toThrow(
      'na1dBackward: additionalKeys was given without additionalValues',
    );
  });

  it('shape rules for the extra tokens', async () => {
    const q = rnd([1, 8, 2, 4]);
    await expect(na1d(q, q, q, { kernelSize: 3, additionalKeys: rnd([1, 2, 2, 4]), additionalValues: rnd([1, 3, 2, 4]) })).rejects.toThrow(
      'na1d: additionalKeys has 2 tokens but additionalValues has 3; they must match',
    );
    await expect(na1d(q, q, q, { kernelSize: 3, additionalKeys: rnd([1, 2, 2, 8]), additionalValues: rnd([1, 2, 2, 4]) })).rejects.toThrow(
      'na1d: query head_dim=4 and additionalKeys head_dim=8 must match',
    );
    await expect(na1d(q, q, q, { kernelSize: 3, additionalKeys: rnd([1, 2, 4]), additionalValues: rnd([1, 2, 2, 4]) })).rejects.toThrow(
      'na1d: additionalKeys must be a rank-4 tensor [batch, tokens, heads, head_dim], got shape [1, 2, 4]',
    );
    await expect(na1d(q, q, q, { kernelSize: 3, additionalKeys: rnd([1, 2, 2, 4]), additionalValues: rnd([1, 2, 2, 6]) })).rejects.toThrow(
      'na1d: additionalValues head_dim=6 must equal value head_dim=4',
    );
  });
});
