import type { NaBackend, Tensor } from '@natten-web/core';
import { toFloat64Values } from '@natten-web/core';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  BASE_TOLERANCE,
  buildCases,
  checkOutput,
  createOracleBackend,
  defaultTolerance,
  type NaCase,
  NA_PROPERTIES,
  resolveTolerance,
  runNaCase,
} from '../src/index.ts';

const oracle = createOracleBackend();
const all = buildCases({ size: 'quick', dtypes: ['float64', 'float32', 'float16'] });

function find(pred: (c: NaCase) => boolean, what: string): NaCase {
  const c = all.find(pred);
  if (!c) throw new Error(`no quick case with ${what}`);
  return c;
}

function poke(t: Tensor, index: number, value: number): void {
  // Works for f32/f64 arrays; f16 cases are not used with poke.
  (t.data as Float32Array | Float64Array)[index] = value;
}

describe('runNaCase', () => {
  it('the oracle backend passes every quick case in every dtype', async () => {
    for (const c of all.filter((_, i) => i % 9 === 0)) {
      const r = await runNaCase(oracle, c);
      expect(r.ok, r.message).toBe(true);
    }
  });

  it('catches a backend that ignores stride, with case key, output, worst index, expected, actual, maxAbs and nmse', async () => {
    const c = find((x) => x.op === 'forward' && x.dtype === 'float32' && x.stride.some((s) => s > 1), 'stride');
    const broken: NaBackend = { ...oracle, fusedForward: (rank, args) => oracle.fusedForward(rank, { ...args, stride: 1 }) };
    const r = await runNaCase(broken, c);
    expect(r.ok).toBe(false);
    expect(r.message).toContain(c.key);
    expect(r.message).toMatch(/: output: .*worst index \d+ \[[\d, ]+\] expected -?[\d.e+-]+ actual -?[\d.e+-]+; maxAbs [\d.e+-]+, nmse [\d.e+-]+/);
  });

  it('catches a backend that ignores causality along one axis (interleaved invalid slots)', async () => {
    const c = find((x) => x.op === 'qk_forward' && x.rank === 2 && x.isCausal[0] === false && x.isCausal[1] === true, 'causal=FT qk');
    const broken: NaBackend = { ...oracle, qkForward: (rank, args) => oracle.qkForward(rank, { ...args, isCausal: false }) };
    const r = await runNaCase(broken, c);
    expect(r.ok).toBe(false);
    expect(r.message).toContain('non-finite');
  });

  it('requires -inf (not 0) in the invalid slots of qk_forward attn', async () => {
    const c = find((x) => x.op === 'qk_forward' && x.dtype === 'float32' && x.isCausal.some(Boolean), 'causal qk f32');
    const broken: NaBackend = {
      ...oracle,
      async qkForward(rank, args) {
        await oracle.qkForward(rank, args);
        const d = args.attn.data as Float32Array;
        for (let i = 0; i < d.length; i++) if (d[i] === Number.NEGATIVE_INFINITY) d[i] = 0;
      },
    };
    const r = await runNaCase(broken, c);
    expect(r.ok).toBe(false);
    expect(r.message).toMatch(/attn: \d+ non-finite value\(s\) where the reference differs/);
  });

  it('catches a backend that reads the invalid slots of attn in av_forward (they hold -inf)', async () => {
    const c = find((x) => x.op === 'av_forward' && x.dtype === 'float64' && x.isCausal.some(Boolean), 'causal av f64');
    const broken: NaBackend = {
      ...oracle,
      async avForward(rank, args) {
        await oracle.avForward(rank, args);
        // "reads" every slot: any -inf weight poisons its row.
        const a = toFloat64Values(args.attn);
        const P = args.attn.shape[args.attn.shape.length - 1] as number;
        const D = args.output.shape[args.output.shape.length - 1] as number;
        for (let row = 0; row < a.length / P; row++) {
          if (a.subarray(row * P, (row + 1) * P).some((x) => !Number.isFinite(x))) poke(args.output, row * D, Number.NaN);
        }
      },
    };
    const r = await runNaCase(broken, c);
    expect(r.ok).toBe(false);
    expect(r.message).toContain('output');
  });

  it('catches an unwritten output element (outputs start as NaN)', async () => {
    const c = find((x) => x.op === 'backward' && x.dtype === 'float32', 'backward f32');
    const broken: NaBackend = {
      ...oracle,
      async fusedBackward(rank, args) {
        await oracle.fusedBackward(rank, args);
        poke(args.gradKey, 3, Number.NaN);
      },
    };
    const r = await runNaCase(broken, c);
    expect(r.ok).toBe(false);
    expect(r.checks.find((x) => x.name === 'gradKey')?.worstIndex).toBe(3);
    expect(r.checks.filter((x) => !x.ok).map((x) => x.name)).toEqual(['gradKey']);
  });

  it('catches a backend that ignores GQA (reads KV head h) and one that drops rpb', async () => {
    const gqa = find((x) => x.op === 'forward' && x.headsKv < x.heads && x.dtype === 'float32', 'GQA');
    const noGqa: NaBackend = {
      ...oracle,
      fusedForward: (rank, args) => {
        // Duplicate KV head 0 into every query head's slot is what GQA does; using only the first
        // query head's output for all heads is a realistic bug.
        return oracle.fusedForward(rank, args).then(() => {
          const o = args.output.data as Float32Array;
          const H = args.output.shape[args.output.shape.length - 2] as number;
          const D = args.output.shape[args.output.shape.length - 1] as number;
          for (let i = 0; i < o.length; i += H * D) for (let h = 1; h < H; h++) for (let c = 0; c < D; c++) o[i + h * D + c] = o[i + c] as number;
        });
      },
    };
    expect((await runNaCase(noGqa, gqa)).ok).toBe(false);
    const rpb = find((x) => x.op === 'qk_backward' && x.rpb && x.dtype === 'float64', 'rpb qk_backward');
    const noRpb: NaBackend = { ...oracle, qkBackward: (rank, args) => oracle.qkBackward(rank, { ...args, gradRpb: undefined }) };
    const r = await runNaCase(noRpb, rpb);
    expect(r.ok).toBe(false);
    expect(r.message).toContain('gradRpb');
  });

  it('catches a backend that writes into an input', async () => {
    const c = find((x) => x.op === 'av_backward' && x.dtype === 'float32', 'av_backward f32');
    const broken: NaBackend = {
      ...oracle,
      async avBackward(rank, args) {
        await oracle.avBackward(rank, args);
        poke(args.value, 0, 42);
      },
    };
    await expect(runNaCase(broken, c)).rejects.toThrow(/oracle modified its input 'value' at index 0 \(.* -> 42\); inputs are read-only/);
  });

  it('catches an f16 backend that is off by more than the f16 tolerance', async () => {
    const c = find((x) => x.op === 'forward' && x.dtype === 'float16' && x.rank === 1, 'f16 forward');
    const broken: NaBackend = { ...oracle, fusedForward: (rank, args) => oracle.fusedForward(rank, { ...args, attnScale: 1.05 / Math.sqrt(c.dim) }) };
    expect((await runNaCase(broken, c)).ok).toBe(false);
  });
});

describe('checkOutput and tolerances', () => {
  const arr = (values: number[]) => ({ shape: [values.length], dtype: 'float32' as const, values: Float64Array.from(values) });

  it('applies atol + rtol*|e| per element and the nmse bound', () => {
    const tol = { atol: 1e-3, rtol: 0, nmse: 1, reasons: [] };
    expect(checkOutput('k', 'o', arr([1, 2.0009]), arr([1, 2]), tol).ok).toBe(true);
    expect(checkOutput('k', 'o', arr([1, 2.002]), arr([1, 2]), tol).ok).toBe(false);
    expect(checkOutput('k', 'o', arr([100.05]), arr([100]), { ...tol, rtol: 1e-3 }).ok).toBe(true);
    const nmse = checkOutput('k', 'o', arr([1.0005, 1.0005]), arr([1, 1]), { ...tol, nmse: 1e-8 });
    expect(nmse.ok).toBe(false);
    expect(nmse.message).toMatch(/nmse 2\.500e-7 > 1e-8/);
  });

  it('-inf must match -inf exactly; any other non-finite value fails', () => {
    const tol = BASE_TOLERANCE.float32;
    expect(checkOutput('k', 'attn', arr([Number.NEGATIVE_INFINITY, 1]), arr([Number.NEGATIVE_INFINITY, 1]), tol).ok).toBe(true);
    expect(checkOutput('k', 'attn', arr([-1e30, 1]), arr([Number.NEGATIVE_INFINITY, 1]), tol).ok).toBe(false);
    expect(checkOutput('k', 'attn', arr([Number.POSITIVE_INFINITY, 1]), arr([0, 1]), tol).ok).toBe(false);
    expect(checkOutput('k', 'attn', arr([Number.NaN, 1]), arr([0, 1]), tol).ok).toBe(false);
  });

  it('defaults follow STYLE.md §5 and every departure carries its reason; overrides need a reason and match by key/output/dtype', () => {
    const fwd32 = find((x) => x.op === 'forward' && x.dtype === 'float32', 'f32 forward');
    expect(defaultTolerance(fwd32, 'output')).toEqual({ atol: 1e-4, rtol: 0, nmse: 1e-7, reasons: [] });
    const fwd16 = find((x) => x.op === 'forward' && x.dtype === 'float16', 'f16 forward');
    expect(defaultTolerance(fwd16, 'output')).toEqual({ atol: 1e-2, rtol: 0, nmse: 1e-6, reasons: [] });
    const f64 = find((x) => x.dtype === 'float64', 'f64');
    expect(defaultTolerance(f64, 'output').atol).toBe(1e-6);
    expect(defaultTolerance(f64, 'output').rtol).toBe(1e-5);
    const bwd32 = find((x) => x.op === 'backward' && x.dtype === 'float32', 'f32 backward');
    expect(defaultTolerance(bwd32, 'gradQuery').atol).toBe(1e-3);
    expect(defaultTolerance(bwd32, 'gradQuery').reasons[0]).toMatch(/Appendix A/);
    expect(defaultTolerance(bwd32, 'gradKey').atol).toBe(1e-4);
    const qk16 = find((x) => x.op === 'qk_forward' && x.dtype === 'float16', 'f16 qk');
    expect(defaultTolerance(qk16, 'attn').rtol).toBe(1e-3);
    const t = resolveTolerance(fwd32, 'output', [
      { pattern: /na9d/, atol: 1, reason: 'never matches' },
      { outputs: ['logsumexp'], atol: 2, reason: 'other output' },
      { dtypes: ['float32'], pattern: /forward/, nmse: 1e-6, reason: 'test loosening' },
    ]);
    expect(t).toEqual({ atol: 1e-4, rtol: 0, nmse: 1e-6, reasons: ['test loosening'] });
  });
});

describe('properties catch broken backends', () => {
  const ctx = (backend: NaBackend) => ({ backend, dtype: 'float64' as const, tolerance: BASE_TOLERANCE.float64 });
  const prop = (fragment: string) => {
    const p = NA_PROPERTIES.find((x) => x.name.includes(fragment));
    if (!p) throw new Error(fragment);
    return p;
  };

  it('the oracle backend satisfies every property', async () => {
    for (const p of NA_PROPERTIES) {
      await fc.assert(fc.asyncProperty(p.arbitrary, (x) => p.check(ctx(oracle), x)), { numRuns: 8, seed: 7, includeErrorInReport: true });
    }
  });

  it('a backend that ignores dilation fails the sub-grid property; one that ignores stride fails the blocked one', async () => {
    const noDil: NaBackend = { ...oracle, fusedForward: (rank, args) => oracle.fusedForward(rank, { ...args, dilation: 1 }) };
    const dil = prop('dilation');
    await expect(fc.assert(fc.asyncProperty(dil.arbitrary, (x) => dil.check(ctx(noDil), x)), { numRuns: 10, seed: 1, includeErrorInReport: true })).rejects.toThrow(/dilated vs sub-grids/);
    const noStride: NaBackend = { ...oracle, fusedForward: (rank, args) => oracle.fusedForward(rank, { ...args, stride: 1 }) };
    const blocked = prop('blocked');
    await expect(fc.assert(fc.asyncProperty(blocked.arbitrary, (x) => blocked.check(ctx(noStride), x)), { numRuns: 20, seed: 1, includeErrorInReport: true })).rejects.toThrow(/blocked/);
  });

  it('a backend that is causal along no axis fails the causal property; one that mixes heads fails the permutation property', async () => {
    const noCausal: NaBackend = { ...oracle, fusedForward: (rank, args) => oracle.fusedForward(rank, { ...args, isCausal: false }) };
    const causal = prop('causal with');
    await expect(fc.assert(fc.asyncProperty(causal.arbitrary, (x) => causal.check(ctx(noCausal), x)), { numRuns: 10, seed: 1, includeErrorInReport: true })).rejects.toThrow(/causal full extent/);
    const mixHeads: NaBackend = {
      ...oracle,
      async fusedForward(rank, args) {
        await oracle.fusedForward(rank, args);
        // Bug: head h writes to the output slot of head 0 when there are 2 heads in batch 0.
        const o = args.output.data as Float64Array;
        const H = args.output.shape[args.output.shape.length - 2] as number;
        const D = args.output.shape[args.output.shape.length - 1] as number;
        if (H === 2) for (let c = 0; c < D; c++) o[c] = (o[c] as number) + 0.5 * (o[D + c] as number);
      },
    };
    const perm = prop('permutation');
    await expect(fc.assert(fc.asyncProperty(perm.arbitrary, (x) => perm.check(ctx(mixHeads), x)), { numRuns: 30, seed: 3, includeErrorInReport: true })).rejects.toThrow(/permutation/);
  });

  it('an output outside the convex hull of V fails', async () => {
    const scaled: NaBackend = {
      ...oracle,
      async fusedForward(rank, args) {
        await oracle.fusedForward(rank, args);
        const o = args.output.data as Float64Array;
        for (let i = 0; i < o.length; i++) o[i] = (o[i] as number) * 3;
      },
    };
    const hull = prop('min/max');
    await expect(fc.assert(fc.asyncProperty(hull.arbitrary, (x) => hull.check(ctx(scaled), x)), { numRuns: 10, seed: 1, includeErrorInReport: true })).rejects.toThrow(/convex hull/);
  });
});
