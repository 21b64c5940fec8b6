/**
 * Seeded random sweep: random rank, extents, kernel, dilation, stride, causality, GQA and head dims;
 * fused forward and backward against the dense masked oracle in f64. `NATTEN_WEB_SWEEPS` sets the
 * number of cases (default 60).
 */
import { type NaRank, seededRandom } from '@natten-web/core';
import { describe, it } from 'vitest';
import { fusedBackward, fusedForward } from '../src/index.ts';
import { type Case, caseKey } from './cases.ts';
import { axes, denseOracle, denseOracleBackward, empty, expectClose, rand } from './helpers.ts';

const COUNT = Number(process.env.NATTEN_WEB_SWEEPS ?? 60);

function randomCase(seed: number): Case {
  const r = seededRandom(seed);
  const int = (lo: number, hi: number) => lo + Math.floor(r() * (hi - lo + 1));
  const rank = int(1, 3) as NaRank;
  const maxL = rank === 1 ? 24 : rank === 2 ? 9 : 6;
  const spatial: number[] = [];
  const K: number[] = [];
  const d: number[] = [];
  const s: number[] = [];
  const causal: boolean[] = [];
  const wantRpb = r() < 0.3; // rpb needs odd K and no causal axis
  for (let a = 0; a < rank; a++) {
    const L = int(wantRpb ? 3 : 2, maxL);
    let k = int(2, L);
    if (wantRpb && k % 2 === 0) k -= 1;
    if (wantRpb && k < 3) k = 3;
    spatial.push(L);
    K.push(k);
    d.push(int(1, Math.floor(L / k)));
    s.push(int(1, k));
    causal.push(!wantRpb && r() < 0.4);
  }
  const Hkv = int(1, 2);
  const H = Hkv * int(1, 3);
  const rpb = wantRpb;
  return { rank, B: int(1, 2), spatial, H, Hkv, D: int(1, 6), Dv: int(1, 6), K, d, causal, s, rpb };
}

describe(`random sweep (${COUNT} cases) vs the dense oracle`, () => {
  for (let i = 0; i < COUNT; i++) {
    const c = randomCase(0x5eed + i);
    it(`#${i} ${caseKey(c)}`, () => {
      const sp = c.spatial;
      const q = rand([c.B, ...sp, c.H, c.D], 'float64', 10 * i);
      const k = rand([c.B, ...sp, c.Hkv, c.D], 'float64', 10 * i + 1);
      const v = rand([c.B, ...sp, c.Hkv, c.Dv], 'float64', 10 * i + 2);
      const rpb = c.rpb ? rand([c.H, ...c.K.map((x) => 2 * x - 1)], 'float64', 10 * i + 3) : null;
      const dO = rand([c.B, ...sp, c.H, c.Dv], 'float64', 10 * i + 4);
      const params = { kernelSize: c.K, dilation: c.d, isCausal: c.causal, stride: c.s };
      const output = empty(dO.shape, 'float64');
      const logsumexp = empty([c.B, ...sp, c.H], 'float32');
      fusedForward(c.rank, { output, query: q, key: k, value: v, rpb, logsumexp, ...params });
      const inp = { q: q.data, k: k.data, v: v.data, rpb: rpb?.data ?? null, B: c.B, spatial: sp, H: c.H, Hkv: c.Hkv, D: c.D, Dv: c.Dv, scale: 1 / Math.sqrt(c.D), ax: axes(sp, c.K, c.d, c.causal, c.s) };
      const ref = denseOracle(inp);
      expectClose(output.data, ref.out, 1e-12, 1e-10, 'output');
      expectClose(logsumexp.data, ref.lse, 1e-5, 1e-6, 'logsumexp');

      const dq = empty(q.shape, 'float64');
      const dk = empty(k.shape, 'float64');
      const dv = empty(v.shape, 'float64');
      const gradRpb = rpb ? empty(rpb.shape, 'float64') : null;
      fusedBackward(c.rank, { gradQuery: dq, gradKey: dk, gradValue: dv, query: q, key: k, value: v, output, gradOutput: dO, logsumexp, rpb, gradRpb, ...params });
      const g = denseOracleBackward(inp, dO.data);
      // P is recomputed from the float32 logsumexp: ~1e-7 relative.
      expectClose(dq.data, g.dq, 1e-5, 1e-5, 'dQ');
      expectClose(dk.data, g.dk, 1e-5, 1e-5, 'dK');
      expectClose(dv.data, g.dv, 1e-5, 1e-5, 'dV');
      if (gradRpb) expectClose(gradRpb.data, g.drpb, 1e-5, 1e-5, 'd_rpb');
    });
  }
});
