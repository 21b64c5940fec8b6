/** dtype helpers (half bits, rounding), tensor helpers (construction, randn, comparison), layouts, FLOPs, op names. */
import { describe, expect, it } from 'vitest';
import {
  allocate,
  attnShape,
  bytesPerElement,
  cast,
  cloneTensor,
  compareTensors,
  compareValues,
  dataMatchesDType,
  DTYPES,
  fnaBackwardFlops,
  fnaFlops,
  fnaMacs,
  floatToHalfBits,
  formatShape,
  fromFloat64,
  fromValues,
  halfBitsToFloat,
  headsFirstShape,
  headsLastShape,
  isDType,
  isNaRank,
  lseShape,
  NattenArgumentError,
  NattenError,
  NattenNotImplementedError,
  NattenUnsupportedError,
  naAvFlops,
  naQkFlops,
  numel,
  OP_FAMILIES,
  opName,
  product,
  randn,
  randu,
  roundTo,
  rpbShape,
  normalizeParams,
  numSlots,
  anyCausal,
  seededRandom,
  spatialNames,
  tensor,
  toFloat64,
  toFloat64Values,
  toHeadsFirst,
  toHeadsLast,
  invariant,
  zeros,
} from '../src/index.ts';

function argError(fn: () => unknown, ...parts: string[]): void {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  expect(caught).toBeInstanceOf(NattenArgumentError);
  for (const p of parts) expect((caught as Error).message).toContain(p);
}

describe('dtype', () => {
  it('names, sizes and storage arrays', () => {
    expect(DTYPES).toEqual(['float32', 'float16', 'float64']);
    expect(DTYPES.map(bytesPerElement)).toEqual([4, 2, 8]);
    expect(isDType('float16')).toBe(true);
    expect(isDType('bfloat16')).toBe(false);
    expect(allocate('float16', 3)).toBeInstanceOf(Uint16Array);
    expect(allocate('float32', 3)).toBeInstanceOf(Float32Array);
    expect(allocate('float64', 3)).toBeInstanceOf(Float64Array);
    expect(dataMatchesDType(new Uint16Array(1), 'float16')).toBe(true);
    expect(dataMatchesDType(new Float32Array(1), 'float64')).toBe(false);
    argError(() => allocate('int8' as 'float32', 1), 'unknown dtype int8', 'float32, float16, float64');
  });

  it('every half bit pattern decodes and re-encodes to itself (NaNs stay NaN)', () => {
    const bits = new Uint16Array(65536).map((_, i) => i);
    const vals = halfBitsToFloat(bits);
    const back = floatToHalfBits(vals);
    let mismatches = 0;
    for (let i = 0; i < 65536; i++) {
      const isNaN = (i & 0x7c00) === 0x7c00 && (i & 0x03ff) !== 0;
      if (isNaN) {
        if (!Number.isNaN(vals[i] as number)) mismatches++;
      } else if (back[i] !== i) mismatches++;
    }
    expect(mismatches).toBe(0);
  });

  it('known half values', () => {
    const dec = (b: number) => halfBitsToFloat(Uint16Array.of(b))[0];
    expect(dec(0x3c00)).toBe(1);
    expect(dec(0xc000)).toBe(-2);
    expect(dec(0x7bff)).toBe(65504);
    expect(dec(0x0001)).toBe(2 ** -24);
    expect(dec(0x7c00)).toBe(Number.POSITIVE_INFINITY);
    expect(Object.is(dec(0x8000), -0)).toBe(true);
  });

  it('encoding rounds to nearest, ties to even, overflows to infinity', () => {
    const enc = (v: number) => floatToHalfBits([v])[0];
    expect(enc(1 + 2 ** -11)).toBe(0x3c00); // tie -> even (down)
    expect(enc(1 + 3 * 2 ** -11)).toBe(0x3c02); // tie -> even (up)
    expect(enc(1 + 2 ** -11 + 2 ** -20)).toBe(0x3c01); // above the tie
    expect(enc(65519)).toBe(0x7bff);
    expect(enc(65520)).toBe(0x7c00);
    expect(enc(-1e6)).toBe(0xfc00);
    expect(enc(2 ** -25)).toBe(0x0000); // tie between 0 and the smallest subnormal -> even (0)
    expect(enc(3 * 2 ** -26)).toBe(0x0001);
  });

  it('roundTo rounds like each dtype stores', () => {
    expect(roundTo(0.1, 'float64')).toBe(0.1);
    expect(roundTo(0.1, 'float32')).toBe(Math.fround(0.1));
    expect(roundTo(0.1, 'float16')).toBe(0.0999755859375);
    expect(roundTo(1 + 2 ** -11, 'float16')).toBe(1);
    expect(roundTo(70000, 'float16')).toBe(Number.POSITIVE_INFINITY);
  });

  it('toFloat64 / fromFloat64 round trip per dtype', () => {
    const v = [0.5, -1.25, 3.1, 1e-3];
    expect(Array.from(toFloat64(fromFloat64(v, 'float64'), 'float64'))).toEqual(v);
    expect(Array.from(toFloat64(fromFloat64(v, 'float32'), 'float32'))).toEqual(v.map(Math.fround));
    expect(Array.from(toFloat64(fromFloat64(v, 'float16'), 'float16'))).toEqual(v.map((x) => roundTo(x, 'float16')));
    expect(fromFloat64(v, 'float16')).toBeInstanceOf(Uint16Array);
  });
});

describe('tensor', () => {
  it('construction: shape, data adoption, validation', () => {
    const data = new Float32Array(6);
    const x = tensor([2, 3], 'float32', data);
    expect(x.data).toBe(data);
    expect(numel([2, 3, 4])).toBe(24);
    expect(numel([])).toBe(1);
    expect(formatShape([1, 2])).toBe('[1, 2]');
    expect(zeros([2, 2], 'float16').data).toEqual(new Uint16Array(4));
    argError(() => tensor([2, -1], 'float32'), 'tensor: shape[1]=-1 must be a non-negative integer (shape [2, -1])');
    argError(() => tensor([2.5], 'float32'), 'shape[0]=2.5');
    argError(() => tensor([2], 'float16', new Float32Array(2) as unknown as Uint16Array), "tensor: data is a Float32Array but dtype 'float16' needs a Uint16Array of half bits");
    argError(() => tensor([2], 'float64', new Float32Array(2) as unknown as Float64Array), 'needs a Float64Array');
    argError(() => tensor([3], 'float32', new Float32Array(2)), 'tensor: data has 2 elements but shape [3] needs 3');
  });

  it('fromValues rounds, cast converts, clone copies', () => {
    const h = fromValues([2], 'float16', [0.1, 2]);
    expect(Array.from(toFloat64Values(h))).toEqual([roundTo(0.1, 'float16'), 2]);
    const c = cast(h, 'float64');
    expect(c.dtype).toBe('float64');
    expect(Array.from(c.data)).toEqual(Array.from(toFloat64Values(h)));
    const same = cast(h, 'float16');
    expect(same.data).not.toBe(h.data);
    expect(same.data).toEqual(h.data);
    const cl = cloneTensor(c);
    cl.data[0] = 42;
    expect(c.data[0]).not.toBe(42);
  });

  it('randn is deterministic per seed, differs across seeds, and is roughly standard normal', () => {
    const a = randn([1000], 'float64', 7);
    expect(randn([1000], 'float64', 7).data).toEqual(a.data);
    expect(randn([1000], 'float64', 8).data).not.toEqual(a.data);
    const n = 20000;
    const big = randn([n], 'float64', 3).data;
    const mean = big.reduce((s, x) => s + x, 0) / n;
    const variance = big.reduce((s, x) => s + (x - mean) ** 2, 0) / n;
    expect(Math.abs(mean)).toBeLessThan(0.05);
    expect(Math.abs(variance - 1)).toBeLessThan(0.05);
    const scaled = randn([1000], 'float64', 7, 0.05).data;
    expect(scaled[10]).toBeCloseTo((a.data[10] as number) * 0.05, 14);
    expect(randn([5], 'float32', 1).data).toEqual(Float32Array.from(randn([5], 'float64', 1).data));
  });

  it('randu lies in [lo, hi); seededRandom is deterministic in [0, 1)', () => {
    const u = randu([500], 'float64', 2, -3, 5).data;
    expect(u.every((x) => x >= -3 && x < 5)).toBe(true);
    const r1 = seededRandom(9);
    const r2 = seededRandom(9);
    const s = Array.from({ length: 100 }, () => r1());
    expect(Array.from({ length: 100 }, () => r2())).toEqual(s);
    expect(s.every((x) => x >= 0 && x < 1)).toBe(true);
  });

  it('compareValues: two NaNs are equal, NaN vs number and mismatched infinities count, worst index reported', () => {
    const c = compareValues([1, Number.NaN, Number.POSITIVE_INFINITY, 2.5], [1, Number.NaN, Number.POSITIVE_INFINITY, 2]);
    expect(c.nonFiniteMismatches).toBe(0);
    expect(c.actualNonFinite).toBe(2);
    expect(c.maxAbs).toBe(0.5);
    expect(c.worstIndex).toBe(3);
    expect([c.worstExpected, c.worstActual]).toEqual([2, 2.5]);
    expect(c.maxRel).toBe(0.25);
    expect(c.nmse).toBeCloseTo(0.25 / 5, 15);
    const d = compareValues([Number.NaN, 1, Number.NEGATIVE_INFINITY], [0, Number.NaN, Number.POSITIVE_INFINITY]);
    expect(d.nonFiniteMismatches).toBe(3);
    expect(compareValues([0, 0], [0, 0]).nmse).toBe(0);
    expect(compareValues([1], [0]).nmse).toBe(Number.POSITIVE_INFINITY);
    argError(() => compareValues([1, 2], [1]), 'compare: actual has 2 elements, expected has 1');
  });

  it('compareTensors checks shapes and compares across dtypes', () => {
    const a = fromValues([2], 'float16', [1, 2]);
    const b = fromValues([2], 'float64', [1, 2.001]);
    expect(compareTensors(a, b).maxAbs).toBeCloseTo(0.001, 12);
    argError(() => compareTensors(a, fromValues([1, 2], 'float64', [1, 2])), 'compare: shape mismatch, actual [2] vs expected [1, 2]');
  });
});

describe('layouts', () => {
  it('shape builders', () => {
    const s = { batch: 2, spatial: [5, 6], heads: 3, dim: 8 };
    expect(headsLastShape(s)).toEqual([2, 5, 6, 3, 8]);
    expect(headsFirstShape(s)).toEqual([2, 3, 5, 6, 8]);
    expect(lseShape(2, [5, 6], 3)).toEqual([2, 5, 6, 3]);
    expect(attnShape(2, 3, [5, 6], 9)).toEqual([2, 3, 5, 6, 9]);
    expect([spatialNames(1), spatialNames(2), spatialNames(3)]).toEqual(['length', 'height, width', 'depth, height, width']);
  });

  it('toHeadsFirst moves element (b, x, y, h, c) to (b, h, x, y, c); toHeadsLast inverts it', () => {
    const shape = [2, 3, 4, 5, 2];
    const x = fromValues(shape, 'float32', Array.from({ length: numel(shape) }, (_, i) => i));
    const f = toHeadsFirst(x, 2);
    expect(f.shape).toEqual([2, 5, 3, 4, 2]);
    const at = (b: number, xx: number, y: number, h: number, c: number) => ((((b * 3 + xx) * 4 + y) * 5 + h) * 2 + c);
    const atF = (b: number, h: number, xx: number, y: number, c: number) => ((((b * 5 + h) * 3 + xx) * 4 + y) * 2 + c);
    expect(f.data[atF(1, 4, 2, 3, 1)]).toBe(x.data[at(1, 2, 3, 4, 1)]);
    expect(f.data[atF(0, 2, 1, 0, 0)]).toBe(x.data[at(0, 1, 0, 2, 0)]);
    const back = toHeadsLast(f, 2);
    expect(back.shape).toEqual(shape);
    expect(back.data).toEqual(x.data);
    const h = fromValues([1, 7, 2, 3], 'float16', Array.from({ length: 42 }, (_, i) => i / 8));
    expect(toHeadsLast(toHeadsFirst(h, 1), 1).data).toEqual(h.data);
    expect(toHeadsFirst(h, 1).data).toBeInstanceOf(Uint16Array);
  });
});

describe('problem helpers', () => {
  it('numSlots, anyCausal, rpbShape, product', () => {
    const p = normalizeParams('na3d', 3, { kernelSize: [3, 5, 7], isCausal: [false, true, false] }, [9, 9, 9]);
    expect(numSlots(p)).toBe(105);
    expect(anyCausal(p)).toBe(true);
    expect(rpbShape(4, p)).toEqual([4, 5, 9, 13]);
    expect(product([2, 3, 4])).toBe(24);
    expect(isNaRank(2)).toBe(true);
    expect(isNaRank(4)).toBe(false);
  });
});

describe('FLOPs (spec §8)', () => {
  const p = { batch: 1, heads: 4, spatial: [56, 56], dim: 32, kernelSize: [7, 7] };
  it('2-D 56x56, K 7x7, H 4, D 32: QK 39,337,984; total 78,675,968 FLOPs; 39,337,984 MACs', () => {
    expect(naQkFlops(p)).toBe(39_337_984);
    expect(naAvFlops(p)).toBe(39_337_984);
    expect(fnaFlops(p)).toBe(78_675_968);
    expect(fnaMacs(p)).toBe(39_337_984);
    expect(fnaBackwardFlops(p)).toBe(2.5 * 78_675_968);
  });
  it('a distinct value head dim changes only the AV half', () => {
    expect(naAvFlops({ ...p, dimV: 64 })).toBe(2 * 39_337_984);
    expect(naQkFlops({ ...p, dimV: 64 })).toBe(39_337_984);
  });
});

describe('errors and op names', () => {
  it('error classes carry codes and names', () => {
    const e = new NattenArgumentError('bad', { cause: 'x' });
    expect(e).toBeInstanceOf(NattenError);
    expect(e).toBeInstanceOf(Error);
    expect([e.code, e.name, e.cause]).toEqual(['argument', 'NattenArgumentError', 'x']);
    expect([new NattenUnsupportedError('u').code, new NattenNotImplementedError('n').code]).toEqual(['unsupported', 'not-implemented']);
    expect(() => invariant(false, () => 'broken')).toThrow('natten-web internal error: broken');
    expect(() => invariant(1, 'fine')).not.toThrow();
  });
  it('NATTEN op names', () => {
    expect(OP_FAMILIES.map((f) => opName(2, f))).toEqual(['na2d_forward', 'na2d_backward', 'na2d_qk_forward', 'na2d_qk_backward', 'na2d_av_forward', 'na2d_av_backward']);
  });
});
