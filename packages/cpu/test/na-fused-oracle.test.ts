import { type DType, fromValues, type Tensor } from '@natten-web/core';
import { describe, expect, it } from 'vitest';
import { cpuBackend, fusedForward } from '../src/index.ts';
import { type Case, caseKey, fusedCases } from './cases.ts';
import { axes, denseOracle, empty, expectClose, rand, tol, values } from './helpers.ts';

function inputs(c: Case, dtype: DType, seed: number) {
  const sp = c.spatial;
  const q = rand([c.B, ...sp, c.H, c.D], dtype, seed);
  const k = rand([c.B, ...sp, c.Hkv, c.D], dtype, seed + 1);
  const v = rand([c.B, ...sp, c.Hkv, c.Dv], dtype, seed + 2);
  const rpb = c.rpb ? rand([c.H, ...c.K.map((k) => 2 * k - 1)], dtype, seed + 3) : null;
  return { q, k, v, rpb };
}

function oracleFor(c: Case, q: Tensor, k: Tensor, v: Tensor, rpb: Tensor | null, scale: number) {
  return denseOracle({
    q: values(q),
    k: values(k),
    v: values(v),
    rpb: rpb ? values(rpb) : null,
    B: c.B,
    spatial: c.spatial,
    H: c.H,
    Hkv: c.Hkv,
    D: c.D,
    Dv: c.Dv,
    scale,
    ax: axes(c.spatial, c.K, c.d, c.causal, c.s),
  });
}

describe('fused forward vs the dense masked oracle', () => {
  const dtypes: DType[] = ['float64', 'float32', 'float16'];
  fusedCases().forEach((c, i) => {
    for (const dtype of dtypes) {
      it(caseKey(c, dtype), () => {
        const { q, k, v, rpb } = inputs(c, dtype, 100 + 7 * i);
        const output = empty([c.B, ...c.spatial, c.H, c.Dv], dtype);
        const logsumexp = empty([c.B, ...c.spatial, c.H], 'float32');
        fusedForward(c.rank, {
          output,
          query: q,
          key: k,
          value: v,
          rpb,
          logsumexp,
          kernelSize: c.K,
          dilation: c.d,
          isCausal: c.causal,
          stride: c.s,
          attnScale: null,
        });
        const ref = oracleFor(c, q, k, v, rpb, 1 / Math.sqrt(c.D));
        const t = tol(dtype);
        expectClose(values(output), ref.out, t.atol, t.rtol, 'output');
        expectClose(values(logsumexp), ref.lse, 1e-5, 1e-6, 'logsumexp');
      });
    }
  });

  it('honours an explicit attnScale, including 0 (uniform weights over the window)', () => {
    const c = fusedCases()[0] as Case;
    const { q, k, v } = inputs(c, 'float64', 5);
    for (const scale of [0, 0.37, -1.5]) {
      const output = empty([c.B, ...c.spatial, c.H, c.Dv], 'float64');
      fusedForward(1, { output, query: q, key: k, value: v, kernelSize: c.K, dilation: c.d, isCausal: c.causal, attnScale: scale });
      expectClose(values(output), oracleFor(c, q, k, v, null, scale).out, 1e-12, 1e-12, `scale ${scale}`);
    }
  });

  it('runs without a logsumexp (through cpuBackend) and writes every output element', async () => {
    const c = fusedCases()[13] as Case; // 2-D with rpb
    const { q, k, v, rpb } = inputs(c, 'float32', 9);
    const output = fromValues([c.B, ...c.spatial, c.H, c.Dv], 'float32', new Float64Array(c.B * 25 * c.H * c.Dv).fill(Number.NaN));
    await cpuBackend.fusedForward(2, { output, query: q, key: k, value: v, rpb, kernelSize: c.K });
    expect(values(output).some(Number.isNaN)).toBe(false);
    expectClose(values(output), oracleFor(c, q, k, v, rpb, 0.5).out, 1e-5, 1e-5, 'output');
  });

  it('is deterministic: two runs give bit-identical outputs', () => {
    const c = fusedCases()[24] as Case;
    const { q, k, v } = inputs(c, 'float32', 11);
    const run = () => {
      const output = empty([c.B, ...c.spatial, c.H, c.Dv], 'float32');
      fusedForward(c.rank, { output, query: q, key: k, value: v, kernelSize: c.K, dilation: c.d, isCausal: c.causal, stride: c.s });
      return output.data;
    };
    expect(run()).toEqual(run());
  });
});
