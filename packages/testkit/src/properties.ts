import { type DType, type NaBackend, type NaRank, randn, toFloat64Values } from '@natten-web/core';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, it } from 'vitest';
import { buildMask, denseAttention, type OracleGeometry } from './oracle.ts';
import { roundValues, tensorFromValues } from './encode.ts';
import { BASE_TOLERANCE, checkOutput, multiIndex, type Tolerance } from './run-case.ts';

/**
 * Property tests (fast-check) of a backend's fused forward. Each property generates small random
 * problems and compares the backend with an independent description of the same attention:
 * full / blocked / causal dense attention, NA on dilation sub-grids, the convex hull of V, and
 * batch / head permutations.
 */

export interface NaPropertiesOptions {
  readonly name: string;
  readonly makeBackend: () => Promise<NaBackend>;
  /** dtype of the backend runs (default float32). */
  readonly dtype?: DType;
  /** Runs per property (default 25). */
  readonly numRuns?: number;
  /** fast-check seed (default: `NATTEN_WEB_SEED` or a fixed seed, so runs are reproducible). */
  readonly seed?: number;
  /** Comparison tolerance (default: the dtype's row of STYLE.md §5). */
  readonly tolerance?: Tolerance;
  readonly timeoutMs?: number;
}

/** A small fused problem: shapes, geometry and seeded inputs (f64 values rounded to the dtype). */
export interface PropertyProblem {
  readonly batch: number;
  readonly heads: number;
  readonly headsKv: number;
  readonly dim: number;
  readonly dimV: number;
  readonly geometry: OracleGeometry;
  readonly seed: number;
}

function numel(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

interface Inputs {
  q: Float64Array;
  k: Float64Array;
  v: Float64Array;
}

function makeInputs(p: PropertyProblem, dtype: DType): Inputs {
  const sp = p.geometry.spatial;
  const gen = (shape: number[], seed: number): Float64Array => roundValues(toFloat64Values(randn(shape, 'float64', seed)), dtype);
  return {
    q: gen([p.batch, ...sp, p.heads, p.dim], p.seed * 3 + 1),
    k: gen([p.batch, ...sp, p.headsKv, p.dim], p.seed * 3 + 2),
    v: gen([p.batch, ...sp, p.headsKv, p.dimV], p.seed * 3 + 3),
  };
}

/** Run the backend's fused forward on f64 values (converted to `dtype`); returns the output as f64. */
export async function runFusedForward(backend: NaBackend, dtype: DType, p: PropertyProblem, x: Inputs): Promise<Float64Array> {
  const sp = p.geometry.spatial;
  const rank = sp.length as NaRank;
  const oShape = [p.batch, ...sp, p.heads, p.dimV];
  const output = tensorFromValues(oShape, dtype, new Float64Array(numel(oShape)).fill(Number.NaN));
  await backend.fusedForward(rank, {
    output,
    query: tensorFromValues([p.batch, ...sp, p.heads, p.dim], dtype, x.q),
    key: tensorFromValues([p.batch, ...sp, p.headsKv, p.dim], dtype, x.k),
    value: tensorFromValues([p.batch, ...sp, p.headsKv, p.dimV], dtype, x.v),
    kernelSize: [...p.geometry.kernelSize],
    dilation: [...p.geometry.dilation],
    stride: [...p.geometry.stride],
    isCausal: [...p.geometry.isCausal],
  });
  return toFloat64Values(output);
}

function describeProblem(p: PropertyProblem): string {
  const g = p.geometry;
  return `sp=${g.spatial.join('x')} K=${g.kernelSize.join('x')} d=${g.dilation.join('x')} s=${g.stride.join('x')} causal=${g.isCausal
    .map((c) => (c ? 'T' : 'F'))
    .join('')} B=${p.batch} H=${p.heads}/${p.headsKv} D=${p.dim}/${p.dimV} seed=${p.seed}`;
}

function assertClose(label: string, p: PropertyProblem, actual: Float64Array, expected: Float64Array, tol: Tolerance): void {
  const shape = [actual.length];
  const r = checkOutput(`${label} ${describeProblem(p)}`, 'output', { shape, dtype: 'float64', values: actual }, { shape, dtype: 'float64', values: expected }, tol);
  if (!r.ok) throw new Error(r.message);
}

// ---------------------------------------------------------------------------------------------
// arbitraries

const MAX_EXTENT: Record<NaRank, number> = { 1: 12, 2: 7, 3: 4 };

const rankArb: fc.Arbitrary<NaRank> = fc.constantFrom<NaRank>(1, 2, 3);

interface Shapes {
  batch: number;
  heads: number;
  headsKv: number;
  dim: number;
  dimV: number;
  seed: number;
}

const shapesArb = (gqa: boolean): fc.Arbitrary<Shapes> =>
  fc
    .record({
      batch: fc.integer({ min: 1, max: 2 }),
      heads: fc.integer({ min: 1, max: 2 }),
      kvDiv: fc.boolean(),
      dim: fc.constantFrom(8, 16),
      dimV: fc.constantFrom(8, 16),
      seed: fc.integer({ min: 0, max: 1_000_000 }),
    })
    .map(({ batch, heads, kvDiv, dim, dimV, seed }) => ({
      batch,
      heads,
      headsKv: gqa && kvDiv && heads === 2 ? 1 : heads,
      dim,
      dimV,
      seed,
    }));

const perAxis = <T>(rank: NaRank, arb: fc.Arbitrary<T>): fc.Arbitrary<T[]> => fc.array(arb, { minLength: rank, maxLength: rank });

const ones = (rank: number): number[] => new Array<number>(rank).fill(1);

/** Any valid geometry: K in [2, L], d with K*d <= L, s in [1, K], causal per axis. */
function geometryArb(rank: NaRank): fc.Arbitrary<OracleGeometry> {
  const axis = fc
    .integer({ min: 2, max: MAX_EXTENT[rank] })
    .chain((L) => fc.integer({ min: 2, max: L }).map((K) => ({ L, K })))
    .chain(({ L, K }) => fc.integer({ min: 1, max: Math.floor(L / K) }).map((d) => ({ L, K, d })))
    .chain(({ L, K, d }) => fc.record({ s: fc.integer({ min: 1, max: K }), causal: fc.boolean() }).map(({ s, causal }) => ({ L, K, d, s, causal })));
  return perAxis(rank, axis).map((axes) => ({
    spatial: axes.map((a) => a.L),
    kernelSize: axes.map((a) => a.K),
    dilation: axes.map((a) => a.d),
    stride: axes.map((a) => a.s),
    isCausal: axes.map((a) => a.causal),
  }));
}

function problemArb(geometry: (rank: NaRank) => fc.Arbitrary<OracleGeometry>, gqa = true): fc.Arbitrary<PropertyProblem> {
  return rankArb.chain((rank) => fc.record({ geometry: geometry(rank), shapes: shapesArb(gqa) })).map(({ geometry: g, shapes }) => ({ ...shapes, geometry: g }));
}

/** A kernel as large as the whole (random) extent on every axis, d = s = 1. */
function fullExtentArb(causal: boolean): fc.Arbitrary<PropertyProblem> {
  return problemArb((rank) =>
    perAxis(rank, fc.integer({ min: 2, max: MAX_EXTENT[rank] })).map((sp) => ({
      spatial: sp,
      kernelSize: sp,
      dilation: ones(rank),
      stride: ones(rank),
      isCausal: sp.map(() => causal),
    })),
  );
}

// ---------------------------------------------------------------------------------------------
// the properties, as plain async predicates (usable outside vitest)

export interface PropertyContext {
  readonly backend: NaBackend;
  readonly dtype: DType;
  readonly tolerance: Tolerance;
}

type KeyFilter = (xc: readonly number[], jc: readonly number[]) => boolean;

function dense(p: PropertyProblem, x: Inputs, keep: KeyFilter): Float64Array {
  return denseAttention(
    { batch: p.batch, heads: p.heads, headsKv: p.headsKv, dim: p.dim, dimV: p.dimV, scale: 1 / Math.sqrt(p.dim), spatial: p.geometry.spatial },
    x.q,
    x.k,
    x.v,
    keep,
  );
}

export interface NaProperty {
  readonly name: string;
  readonly arbitrary: fc.Arbitrary<PropertyProblem>;
  readonly check: (ctx: PropertyContext, p: PropertyProblem) => Promise<void>;
}

/** A property whose ground truth is dense attention over the keys `keep(p)` lets each query see. */
function denseProperty(name: string, label: string, arbitrary: fc.Arbitrary<PropertyProblem>, keep: (p: PropertyProblem) => KeyFilter): NaProperty {
  return {
    name,
    arbitrary,
    async check(ctx, p) {
      const x = makeInputs(p, ctx.dtype);
      const out = await runFusedForward(ctx.backend, ctx.dtype, p, x);
      assertClose(label, p, out, dense(p, x, keep(p)), ctx.tolerance);
    },
  };
}

export const NA_PROPERTIES: readonly NaProperty[] = [
  denseProperty('a kernel covering the whole extent (d=1, non-causal) equals full attention', 'full extent', fullExtentArb(false), () => () => true),
  denseProperty(
    'stride == kernel size equals blocked attention',
    'blocked',
    problemArb((rank) =>
      perAxis(rank, fc.record({ K: fc.integer({ min: 2, max: 4 }), blocks: fc.integer({ min: 1, max: rank === 3 ? 2 : 3 }) })).map((axes) => ({
        spatial: axes.map((a) => a.K * a.blocks),
        kernelSize: axes.map((a) => a.K),
        dilation: ones(rank),
        stride: axes.map((a) => a.K),
        isCausal: axes.map(() => false),
      })),
    ),
    (p) => {
      const K = p.geometry.kernelSize;
      return (xc, jc) => xc.every((xa, a) => Math.floor(xa / (K[a] as number)) === Math.floor((jc[a] as number) / (K[a] as number)));
    },
  ),
  denseProperty('causal with a full-extent kernel equals causal attention', 'causal full extent', fullExtentArb(true), () => (xc, jc) =>
    xc.every((xa, a) => (jc[a] as number) <= xa),
  ),
  {
    name: 'dilation d equals NA on each of the d interleaved sub-grids',
    arbitrary: problemArb((rank) =>
      perAxis(
        rank,
        fc
          .record({ K: fc.integer({ min: 2, max: 3 }), d: fc.integer({ min: 2, max: 3 }), extra: fc.integer({ min: 0, max: 2 }), causal: fc.boolean() })
          .map((a) => ({ ...a, d: rank === 3 ? 2 : a.d })),
      ).map((axes) => ({
        spatial: axes.map((a) => a.K * a.d + a.extra),
        kernelSize: axes.map((a) => a.K),
        dilation: axes.map((a) => a.d),
        stride: ones(rank),
        isCausal: axes.map((a) => a.causal),
      })),
    ),
    async check(ctx, p) {
      const x = makeInputs(p, ctx.dtype);
      const out = await runFusedForward(ctx.backend, ctx.dtype, p, x);
      const g = p.geometry;
      const rank = g.spatial.length;
      const N = numel(g.spatial);
      const expected = new Float64Array(out.length).fill(Number.NaN);
      // Every combination of per-axis groups.
      const groups: number[][] = [[]];
      for (let a = 0; a < rank; a++) {
        const next: number[][] = [];
        for (const prefix of groups) for (let r = 0; r < (g.dilation[a] as number); r++) next.push([...prefix, r]);
        groups.splice(0, groups.length, ...next);
      }
      for (const grp of groups) {
        const subSp = g.spatial.map((L, a) => Math.ceil((L - (grp[a] as number)) / (g.dilation[a] as number)));
        const subN = numel(subSp);
        // Token index in the full grid of each sub-grid token.
        const map = Array.from({ length: subN }, (_, t) => {
          const c = multiIndex(t, subSp).map((ca, a) => ca * (g.dilation[a] as number) + (grp[a] as number));
          return c.reduce((acc, ca, a) => acc * (g.spatial[a] as number) + ca, 0);
        });
        const gather = (src: Float64Array, H: number, D: number): Float64Array => {
          const dst = new Float64Array(p.batch * subN * H * D);
          for (let b = 0; b < p.batch; b++) {
            for (let t = 0; t < subN; t++) {
              const from = ((b * N + (map[t] as number)) * H) * D;
              dst.set(src.subarray(from, from + H * D), ((b * subN + t) * H) * D);
            }
          }
          return dst;
        };
        const sub: PropertyProblem = { ...p, geometry: { ...g, spatial: subSp, dilation: ones(rank) } };
        const subOut = await runFusedForward(ctx.backend, ctx.dtype, sub, {
          q: gather(x.q, p.heads, p.dim),
          k: gather(x.k, p.headsKv, p.dim),
          v: gather(x.v, p.headsKv, p.dimV),
        });
        const HD = p.heads * p.dimV;
        for (let b = 0; b < p.batch; b++) {
          for (let t = 0; t < subN; t++) {
            expected.set(subOut.subarray((b * subN + t) * HD, (b * subN + t + 1) * HD), (b * N + (map[t] as number)) * HD);
          }
        }
      }
      assertClose('dilated vs sub-grids', p, out, expected, ctx.tolerance);
    },
  },
  {
    name: "every fused output lies within the per-channel min/max of its neighborhood's V rows",
    arbitrary: problemArb(geometryArb),
    async check(ctx, p) {
      const x = makeInputs(p, ctx.dtype);
      const out = await runFusedForward(ctx.backend, ctx.dtype, p, x);
      const mask = buildMask(p.geometry);
      const N = mask.tokens;
      const group = p.heads / p.headsKv;
      const slack = ctx.tolerance.atol;
      for (let b = 0; b < p.batch; b++) {
        for (let xq = 0; xq < N; xq++) {
          for (let h = 0; h < p.heads; h++) {
            const hk = Math.floor(h / group);
            for (let c = 0; c < p.dimV; c++) {
              let lo = Number.POSITIVE_INFINITY;
              let hi = Number.NEGATIVE_INFINITY;
              for (let j = 0; j < N; j++) {
                if ((mask.slot[xq * N + j] as number) < 0) continue;
                const val = x.v[((b * N + j) * p.headsKv + hk) * p.dimV + c] as number;
                if (val < lo) lo = val;
                if (val > hi) hi = val;
              }
              const o = out[((b * N + xq) * p.heads + h) * p.dimV + c] as number;
              if (!(o >= lo - slack && o <= hi + slack)) {
                throw new Error(`convex hull ${describeProblem(p)}: output [b=${b}, token=${xq}, h=${h}, c=${c}] = ${o} outside [${lo}, ${hi}] (slack ${slack})`);
              }
            }
          }
        }
      }
    },
  },
  {
    name: 'batch and head permutations commute with the op',
    arbitrary: problemArb(geometryArb, false).chain((p) =>
      fc.record({ pb: fc.shuffledSubarray(range(p.batch), { minLength: p.batch, maxLength: p.batch }), ph: fc.shuffledSubarray(range(p.heads), { minLength: p.heads, maxLength: p.heads }) }).map(({ pb, ph }) => ({ ...p, perm: { batch: pb, heads: ph } })),
    ),
    async check(ctx, p) {
      const perm = (p as PropertyProblem & { perm: { batch: number[]; heads: number[] } }).perm;
      const x = makeInputs(p, ctx.dtype);
      const out = await runFusedForward(ctx.backend, ctx.dtype, p, x);
      const N = numel(p.geometry.spatial);
      const permute = (src: Float64Array, D: number): Float64Array => {
        const dst = new Float64Array(src.length);
        for (let b = 0; b < p.batch; b++) {
          for (let t = 0; t < N; t++) {
            for (let h = 0; h < p.heads; h++) {
              const from = ((( perm.batch[b] as number) * N + t) * p.heads + (perm.heads[h] as number)) * D;
              dst.set(src.subarray(from, from + D), ((b * N + t) * p.heads + h) * D);
            }
          }
        }
        return dst;
      };
      const outPerm = await runFusedForward(ctx.backend, ctx.dtype, p, { q: permute(x.q, p.dim), k: permute(x.k, p.dim), v: permute(x.v, p.dimV) });
      assertClose(`permutation batch=[${perm.batch}] heads=[${perm.heads}]`, p, outPerm, permute(out, p.dimV), ctx.tolerance);
    },
  },
];

function range(n: number): number[] {
  return Array.from({ length: n }, (_, i) => i);
}

export const DEFAULT_PROPERTY_SEED = 0x4e41;

/** Register the property tests as vitest blocks: `describe(name) > it(property)`. */
export function defineNaProperties(options: NaPropertiesOptions): void {
  const dtype = options.dtype ?? 'float32';
  const tolerance = options.tolerance ?? BASE_TOLERANCE[dtype];
  const envSeed = process.env.NATTEN_WEB_SEED;
  const seed = options.seed ?? (envSeed ? Number(envSeed) : DEFAULT_PROPERTY_SEED);
  const numRuns = options.numRuns ?? 25;
  let backend: NaBackend | undefined;
  describe(`${options.name} properties (${dtype})`, () => {
    beforeAll(async () => {
      backend = await options.makeBackend();
    });
    afterAll(async () => {
      await backend?.dispose?.();
    });
    for (const prop of NA_PROPERTIES) {
      it(
        prop.name,
        async () => {
          const be = backend;
          if (!be) throw new Error('backend was not created (makeBackend failed?)');
          await fc.assert(
            fc.asyncProperty(prop.arbitrary, async (p) => {
              await prop.check({ backend: be, dtype, tolerance }, p);
            }),
            { numRuns, seed, includeErrorInReport: true },
          );
        },
        options.timeoutMs,
      );
    }
  });
}
