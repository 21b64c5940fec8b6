/**
 * The dense-attention conformance suite's cases, calls, oracle and tolerances (no test runner here, so device scripts
 * can run them too; `defineDenseConformance` in dense-conformance.ts registers them with vitest). NATTEN's newer API
 * beside neighborhood attention: cross-attention, GQA, D_v != D, causal top-left, variable-length packed batches, the
 * few keys of NA's extra KV tokens. A backend runs on host tensors: `forward` returns output and lse, `backward` the
 * three gradients from the output and lse its own forward gave (as a model chains them).
 */
import { type Tensor, randn, toFloat64Values } from '@natten-web/core';
import { seedOf } from './cases.ts';
import { cumulative, referenceVarlen } from './dense-oracle.ts';

/**
 * One problem: packed sequences `seqQ` / `seqKv` (query and key counts per sequence; causal is top-left within each).
 * A backend takes one sequence as a plain batch of one, several as a varlen batch (`varlen`), and `batch` equal
 * sequences as a batch of that many (the oracle runs them as sequences).
 */
export interface DenseCase {
  readonly name: string;
  readonly seqQ: readonly number[];
  readonly seqKv: readonly number[];
  /** Equal sequences given as a batch (`seqQ` / `seqKv` one entry each) instead of a varlen pack. */
  readonly batch?: number;
  readonly heads: number;
  readonly headsKv: number;
  readonly dim: number;
  readonly dimV: number;
  readonly causal: boolean;
  /** The softmax scale; absent = 1 / sqrt(dim). */
  readonly scale?: number;
}

/** Shapes and options of a case as a backend sees them. */
export interface DenseCall {
  readonly case: DenseCase;
  /** [1 or batch, total queries, heads, dim] etc. */
  readonly query: Tensor;
  readonly key: Tensor;
  readonly value: Tensor;
  readonly scale: number;
  /** Packed sequences: their cumulative offsets (n + 1 entries from 0); absent for a plain batch. */
  readonly varlen?: { readonly cumulativeSeqlenQ: readonly number[]; readonly cumulativeSeqlenKv: readonly number[] };
}

export interface DenseBackend {
  readonly name: string;
  forward(call: DenseCall): Promise<{ output: Tensor; lse: Tensor }>;
  backward(call: DenseCall, output: Tensor, gradOutput: Tensor, lse: Tensor): Promise<{ gradQuery: Tensor; gradKey: Tensor; gradValue: Tensor }>;
}

/**
 * The built-in cases, every head dim a multiple of 16 (so the tensor-core kernels can run each) and small enough for
 * lavapipe: more queries than keys with GQA and D_v != D, causal square past a chunk, causal with fewer queries than
 * keys, three keys for 300 queries (the dK/dV kernel's query splits and their sum), a batch of two at head dim 64 with
 * a given scale, varlen with empty sequences (causal), and varlen not causal.
 */
export const DENSE_CASES: readonly DenseCase[] = [
  { name: 'GQA 4/2, Dv != D, more queries than keys, batch 2', seqQ: [70], seqKv: [37], batch: 2, heads: 4, headsKv: 2, dim: 32, dimV: 16, causal: false },
  { name: 'causal, square, past a chunk', seqQ: [81], seqKv: [81], heads: 2, headsKv: 1, dim: 16, dimV: 16, causal: true },
  { name: 'causal, fewer queries than keys', seqQ: [20], seqKv: [45], heads: 1, headsKv: 1, dim: 16, dimV: 32, causal: true },
  { name: 'three keys for 300 queries (query splits)', seqQ: [300], seqKv: [3], heads: 4, headsKv: 2, dim: 16, dimV: 16, causal: false },
  { name: 'head dim 64, scale 0.5, batch 2', seqQ: [40], seqKv: [50], batch: 2, heads: 2, headsKv: 2, dim: 64, dimV: 64, causal: false, scale: 0.5 },
  { name: 'varlen with empty sequences, GQA, causal', seqQ: [5, 0, 70, 1, 33], seqKv: [7, 3, 40, 1, 20], heads: 4, headsKv: 2, dim: 32, dimV: 16, causal: true },
  { name: 'varlen, not causal', seqQ: [16, 40], seqKv: [30, 9], heads: 2, headsKv: 2, dim: 16, dimV: 16, causal: false },
];

/**
 * Tolerances, relative to max(1, the reference's largest magnitude): float32 outputs 2e-5, gradients 1e-4; float16
 * (inputs and outputs rounded to half; the output, and so delta, rounded before the backward) 2e-3 for both; lse (f32
 * in every dtype) 1e-4.
 */
export const DENSE_TOLERANCE = { float32: { output: 2e-5, grad: 1e-4 }, float16: { output: 2e-3, grad: 2e-3 }, lse: 1e-4 } as const;

/** The call a case makes for one dtype: seeded inputs (heads-last), rounded to the dtype, and dO. */
export function denseCall(c: DenseCase, dtype: 'float32' | 'float16'): { call: DenseCall; gradOutput: Tensor } {
  const seed = seedOf(`dense ${c.name}`);
  const b = c.batch ?? 1;
  const sq = c.seqQ.reduce((a, x) => a + x, 0);
  const sk = c.seqKv.reduce((a, x) => a + x, 0);
  const query = randn([b, sq, c.heads, c.dim], dtype, seed);
  const key = randn([b, sk, c.headsKv, c.dim], dtype, seed + 1);
  const value = randn([b, sk, c.headsKv, c.dimV], dtype, seed + 2);
  const gradOutput = randn([b, sq, c.heads, c.dimV], dtype, seed + 3);
  const varlen = c.seqQ.length > 1 ? { cumulativeSeqlenQ: cumulative(c.seqQ), cumulativeSeqlenKv: cumulative(c.seqKv) } : undefined;
  return { call: { case: c, query, key, value, scale: c.scale ?? 1 / Math.sqrt(c.dim), ...(varlen ? { varlen } : {}) }, gradOutput };
}

/** The f64 oracle of a call (a batch run as that many equal sequences). */
export function denseOracle(call: DenseCall, gradOutput: Tensor) {
  const c = call.case;
  const b = c.batch ?? 1;
  const rep = (xs: readonly number[]): number[] => Array.from({ length: b }, () => [...xs]).flat();
  return referenceVarlen({ seqQ: rep(c.seqQ), seqKv: rep(c.seqKv), H: c.heads, Hkv: c.headsKv, D: c.dim, Dv: c.dimV, causal: c.causal }, toFloat64Values(call.query), toFloat64Values(call.key), toFloat64Values(call.value), toFloat64Values(gradOutput), call.scale);
}

/**
 * The largest error of `got` against `want` relative to `tol` x max(1, max |want|): `ok` where within, and a message
 * naming the tensor, the worst index and the values.
 */
export function denseMismatch(got: Tensor, want: Float64Array, tol: number, what: string): { ok: boolean; message: string; worst: number } {
  const g = toFloat64Values(got);
  if (g.length !== want.length) return { ok: false, message: `${what}: ${g.length} values, want ${want.length}`, worst: Number.POSITIVE_INFINITY };
  let worst = 0;
  let at = 0;
  let scale = 1;
  for (let i = 0; i < want.length; i++) {
    scale = Math.max(scale, Math.abs(want[i] as number));
    const e = Math.abs((g[i] as number) - (want[i] as number));
    if (!(e <= worst)) {
      worst = e;
      at = i;
    }
  }
  return { ok: worst <= tol * scale, message: `${what}: max error ${worst} at ${at} (got ${g[at]}, want ${want[at]}), tolerance ${tol} x ${scale}`, worst };
}

/** Run one case on a backend: forward, then backward from its forward, each output against the oracle. */
export async function runDenseCase(backend: DenseBackend, c: DenseCase, dtype: 'float32' | 'float16'): Promise<ReturnType<typeof denseMismatch>[]> {
  const { call, gradOutput } = denseCall(c, dtype);
  const want = denseOracle(call, gradOutput);
  const tol = DENSE_TOLERANCE[dtype];
  const f = await backend.forward(call);
  const g = await backend.backward(call, f.output, gradOutput, f.lse);
  return [
    denseMismatch(f.output, want.out, tol.output, 'output'),
    denseMismatch(f.lse, want.lse, DENSE_TOLERANCE.lse, 'lse'),
    denseMismatch(g.gradQuery, want.dq, tol.grad, 'gradQuery'),
    denseMismatch(g.gradKey, want.dk, tol.grad, 'gradKey'),
    denseMismatch(g.gradValue, want.dv, tol.grad, 'gradValue'),
  ];
}
