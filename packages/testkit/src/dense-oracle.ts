/** f64 references of dense attention (heads-last, causal top-left): the dense conformance suite's oracle, also used by the dense tests and device scripts. */

export type Dims = { B: number; S: number; N: number; H: number; Hkv: number; D: number; Dv: number };

/** f64 dense attention: out [B, S, H, Dv], lse [B, S, H]; causal top-left (query i sees keys j <= i). */
export function reference(d: Dims, q: Float64Array, k: Float64Array, v: Float64Array, scale: number, causal: boolean): { out: Float64Array; lse: Float64Array } {
  const out = new Float64Array(d.B * d.S * d.H * d.Dv);
  const lse = new Float64Array(d.B * d.S * d.H);
  for (let b = 0; b < d.B; b++) {
    for (let i = 0; i < d.S; i++) {
      for (let h = 0; h < d.H; h++) {
        const hk = Math.floor(h / (d.H / d.Hkv));
        const row = (b * d.S + i) * d.H + h;
        const n = causal ? Math.min(i + 1, d.N) : d.N;
        const z: number[] = [];
        for (let j = 0; j < n; j++) {
          let s = 0;
          for (let c = 0; c < d.D; c++) s += (q[row * d.D + c] as number) * (k[((b * d.N + j) * d.Hkv + hk) * d.D + c] as number);
          z.push(scale * s);
        }
        const m = Math.max(...z);
        const sum = z.reduce((a, x) => a + Math.exp(x - m), 0);
        z.forEach((x, j) => {
          for (let c = 0; c < d.Dv; c++) out[row * d.Dv + c] = (out[row * d.Dv + c] as number) + (Math.exp(x - m) / sum) * (v[((b * d.N + j) * d.Hkv + hk) * d.Dv + c] as number);
        });
        lse[row] = m + Math.log(sum);
      }
    }
  }
  return { out, lse };
}

/** f64 dense backward from the reference output and lse (spec §7.2 over a dense key set). */
export function referenceBackward(d: Dims, q: Float64Array, k: Float64Array, v: Float64Array, dO: Float64Array, scale: number, causal: boolean, output?: Float64Array) {
  const { out: forwardOut, lse } = reference(d, q, k, v, scale, causal);
  // delta = dO . O of the given output where there is one (a merged output, say), else of the forward's.
  const out = output ?? forwardOut;
  const dq = new Float64Array(q.length);
  const dk = new Float64Array(k.length);
  const dv = new Float64Array(v.length);
  for (let b = 0; b < d.B; b++) {
    for (let i = 0; i < d.S; i++) {
      for (let h = 0; h < d.H; h++) {
        const hk = Math.floor(h / (d.H / d.Hkv));
        const row = (b * d.S + i) * d.H + h;
        let delta = 0;
        for (let c = 0; c < d.Dv; c++) delta += (dO[row * d.Dv + c] as number) * (out[row * d.Dv + c] as number);
        const n = causal ? Math.min(i + 1, d.N) : d.N;
        for (let j = 0; j < n; j++) {
          const kr = (b * d.N + j) * d.Hkv + hk;
          let s = 0;
          for (let c = 0; c < d.D; c++) s += (q[row * d.D + c] as number) * (k[kr * d.D + c] as number);
          const p = Math.exp(scale * s - (lse[row] as number));
          let dp = 0;
          for (let c = 0; c < d.Dv; c++) {
            dp += (dO[row * d.Dv + c] as number) * (v[kr * d.Dv + c] as number);
            dv[kr * d.Dv + c] = (dv[kr * d.Dv + c] as number) + p * (dO[row * d.Dv + c] as number);
          }
          const ds = scale * p * (dp - delta);
          for (let c = 0; c < d.D; c++) {
            dq[row * d.D + c] = (dq[row * d.D + c] as number) + ds * (k[kr * d.D + c] as number);
            dk[kr * d.D + c] = (dk[kr * d.D + c] as number) + ds * (q[row * d.D + c] as number);
          }
        }
      }
    }
  }
  return { out, lse, dq, dk, dv };
}


/** Packed variable-length sequences: each one's query and key counts, heads, head dims, causal (top-left per sequence). */
export type VarlenCase = { seqQ: number[]; seqKv: number[]; H: number; Hkv: number; D: number; Dv: number; causal: boolean };

/** Cumulative offsets of counts: `n + 1` entries from 0. */
export function cumulative(xs: readonly number[]): number[] {
  return xs.reduce((a, x) => [...a, (a[a.length - 1] as number) + x], [0]);
}

/** f64 reference of packed varlen attention: each sequence on its own (`referenceBackward`), written into the packed layout. */
export function referenceVarlen(c: VarlenCase, q: Float64Array, k: Float64Array, v: Float64Array, dO: Float64Array, scale: number) {
  const cuQ = cumulative(c.seqQ);
  const cuKv = cumulative(c.seqKv);
  const S = cuQ[cuQ.length - 1] as number;
  const N = cuKv[cuKv.length - 1] as number;
  const { H, Hkv, D, Dv } = c;
  const want = { out: new Float64Array(S * H * Dv), lse: new Float64Array(S * H), dq: new Float64Array(S * H * D), dk: new Float64Array(N * Hkv * D), dv: new Float64Array(N * Hkv * Dv) };
  c.seqQ.forEach((nq, s) => {
    if (nq === 0) return;
    const d = { B: 1, S: nq, N: c.seqKv[s] as number, H, Hkv, D, Dv };
    const q0 = cuQ[s] as number;
    const k0 = cuKv[s] as number;
    const r = referenceBackward(d, q.slice(q0 * H * D, (q0 + nq) * H * D), k.slice(k0 * Hkv * D, (k0 + d.N) * Hkv * D), v.slice(k0 * Hkv * Dv, (k0 + d.N) * Hkv * Dv), dO.slice(q0 * H * Dv, (q0 + nq) * H * Dv), scale, c.causal);
    want.out.set(r.out, q0 * H * Dv);
    want.lse.set(r.lse, q0 * H);
    want.dq.set(r.dq, q0 * H * D);
    want.dk.set(r.dk, k0 * Hkv * D);
    want.dv.set(r.dv, k0 * Hkv * Dv);
  });
  return { ...want, cuQ, cuKv, S, N };
}
