import { type AxisParams, type DType, type NaRank, OP_FAMILIES, type OpFamily, opName } from '@natten-web/core';

/**
 * Conformance cases as data. A case is one op call: op family x rank x dtype x neighborhood
 * parameters x shapes x features. Grids are built with `cross` (Cartesian product of partial
 * records) and `filter`, then expanded over ops and dtypes with the op's own constraints applied
 * (BMM ops and rpb need odd kernels; rpb needs a non-causal window; GQA and a distinct value head
 * dim exist only in the fused ops).
 */

export type CaseSize = 'quick' | 'large';

/** Neighborhood parameters and shapes, before expansion over ops and dtypes. */
export interface CaseGeometry {
  readonly spatial: readonly number[];
  readonly kernelSize: readonly number[];
  readonly dilation: readonly number[];
  readonly stride: readonly number[];
  readonly isCausal: readonly boolean[];
  readonly batch: number;
  readonly heads: number;
  /** KV heads of the fused ops (GQA/MQA when < heads). */
  readonly headsKv: number;
  readonly dim: number;
  /** Value head dim of the fused ops. */
  readonly dimV: number;
  /** Use a relative positional bias where the op allows it. */
  readonly rpb: boolean;
  /** Ask the fused forward for the logsumexp. */
  readonly lse: boolean;
  /** Explicit attn_scale for the fused ops (undefined: the default dim^-0.5). */
  readonly attnScale?: number | undefined;
}

/** One conformance case: one op call with a readable, unique key. */
export interface NaCase extends CaseGeometry {
  readonly key: string;
  readonly op: OpFamily;
  readonly rank: NaRank;
  readonly dtype: DType;
  /** Seed of the inputs (derived from the key). */
  readonly seed: number;
}

// ---------------------------------------------------------------------------------------------
// combine / filter helpers

/** Cartesian product of lists of partial records; later lists override earlier fields. */
export function cross<A extends object, B extends object>(as: readonly A[], bs: readonly B[]): (A & B)[] {
  const out: (A & B)[] = [];
  for (const a of as) for (const b of bs) out.push({ ...a, ...b });
  return out;
}

/** Cartesian product of any number of lists of partial records. */
export function crossAll<T extends object>(...lists: readonly (readonly Partial<T>[])[]): Partial<T>[] {
  let acc: Partial<T>[] = [{}];
  for (const list of lists) acc = cross(acc, list);
  return acc;
}

export function filter<T>(items: readonly T[], keep: (item: T) => boolean): T[] {
  return items.filter(keep);
}

/** Every causal combination of a rank, in binary order (all-false first). */
export function causalCombos(rank: NaRank): boolean[][] {
  const out: boolean[][] = [];
  for (let m = 0; m < 1 << rank; m++) {
    const c: boolean[] = [];
    for (let a = 0; a < rank; a++) c.push(((m >> (rank - 1 - a)) & 1) === 1);
    out.push(c);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// geometry builder

interface GeometrySpec {
  sp: readonly number[];
  K: readonly number[];
  d?: readonly number[];
  s?: readonly number[];
  causal?: readonly boolean[];
  B?: number;
  H?: number;
  Hkv?: number;
  D?: number;
  Dv?: number;
  rpb?: boolean;
  lse?: boolean;
  scale?: number;
}

function geometry(g: GeometrySpec): CaseGeometry {
  const rank = g.sp.length;
  const ones = new Array<number>(rank).fill(1);
  const H = g.H ?? 2;
  const D = g.D ?? 8;
  return {
    spatial: g.sp,
    kernelSize: g.K,
    dilation: g.d ?? ones,
    stride: g.s ?? ones,
    isCausal: g.causal ?? new Array<boolean>(rank).fill(false),
    batch: g.B ?? 1,
    heads: H,
    headsKv: g.Hkv ?? H,
    dim: D,
    dimV: g.Dv ?? D,
    rpb: g.rpb ?? false,
    lse: g.lse ?? true,
    attnScale: g.scale,
  };
}

function geometries(specs: readonly GeometrySpec[]): CaseGeometry[] {
  return specs.map(geometry);
}

/**
 * Quick grids (lavapipe in CI): extents <= 12 per axis in 2-D and <= 6 in 3-D (1-D up to 70, to cross a
 * 64-token tile), heads <= 2, dims 4..16.
 * Extents are mostly not multiples of 8/16 (partial tiles); several have K*d == L on some axis.
 */
function quickGeometries(rank: NaRank): CaseGeometry[] {
  if (rank === 1) {
    return [
      // Every causal combination on the spec's worked example (spec §2.5.1/§2.5.2): L=9, K=3, d=2.
      ...geometries(cross([{ sp: [9], K: [3], d: [2], D: 4 }], causalCombos(1).map((causal) => ({ causal })))),
      // rpb, odd K, K*d == L border (d=4), batch 2.
      geometry({ sp: [12], K: [3], d: [4], rpb: true, B: 2, D: 12 }),
      // Full extent (K == L), rpb.
      geometry({ sp: [11], K: [11], rpb: true, D: 16 }),
      // Even K with dilation (fused only), GQA + distinct value dim, explicit scale.
      geometry({ sp: [13], K: [4], d: [3], H: 2, Hkv: 1, Dv: 16, scale: 0.5 }),
      // Even K, causal, no lse; longer than a 64-token 1-D tile.
      geometry({ sp: [70], K: [4], causal: [true], lse: false }),
      // Stride (spec §2.7 examples): L=10, K=4, s=2 non-causal; L=10, K=5, d=2, s=3 causal (K*d == L).
      geometry({ sp: [10], K: [4], s: [2] }),
      geometry({ sp: [10], K: [5], d: [2], s: [3], causal: [true] }),
      // Blocked attention: s == K (spec §2.7: K=3, s=3), 23 blocks, across 64-token tiles.
      geometry({ sp: [69], K: [3], s: [3], D: 8, Dv: 4 }),
    ];
  }
  if (rank === 2) {
    return [
      // Every causal combination on a dilated, non-square, partial-tile problem.
      ...geometries(cross([{ sp: [7, 11], K: [3, 5], d: [1, 2] }], causalCombos(2).map((causal) => ({ causal })))),
      // rpb, non-square kernel, K*d == L on axis 0.
      geometry({ sp: [6, 11], K: [3, 5], d: [2, 1], rpb: true, D: 16 }),
      // rpb with GQA and value dim != dim, batch 2.
      geometry({ sp: [5, 5], K: [3, 3], rpb: true, B: 2, H: 2, Hkv: 1, D: 8, Dv: 12 }),
      // Even kernel (fused only), dilation 3 and 4, K*d == L on both axes, mixed causal.
      geometry({ sp: [12, 8], K: [4, 2], d: [3, 4], causal: [false, true], lse: false }),
      // Stride, mixed kernel parity (fused only).
      geometry({ sp: [10, 9], K: [4, 3], s: [2, 3], H: 1, D: 16, Dv: 8 }),
      // Stride with dilation and causal, odd kernels (all ops).
      geometry({ sp: [12, 7], K: [3, 3], d: [2, 1], s: [2, 3], causal: [true, false], D: 4 }),
    ];
  }
  return [
    // Every causal combination (odd K so the BMM ops run them too); dilation 2 (K*d == L) on axis 1 in half of them.
    ...geometries(
      causalCombos(3).map((causal, i) => ({
        sp: [5, 6, 4],
        K: [3, 3, 3],
        d: i % 2 === 0 ? [1, 2, 1] : [1, 1, 1],
        // Stride with odd K in two of them, so the BMM ops see 3-D stride too.
        ...(i % 4 === 3 ? { s: [2, 1, 3] } : {}),
        causal,
        H: i < 4 ? 2 : 1,
        D: i % 3 === 0 ? 4 : 8,
      })),
    ),
    // rpb, dilation, K*d == L on axis 2.
    geometry({ sp: [6, 5, 6], K: [3, 5, 3], d: [1, 1, 2], rpb: true }),
    // Even kernel, stride, GQA + distinct value dim (fused only).
    geometry({ sp: [6, 6, 5], K: [2, 4, 3], s: [2, 2, 1], H: 2, Hkv: 1, Dv: 16, causal: [false, true, false] }),
    // Full extent (K == L) on every axis, batch 2.
    geometry({ sp: [3, 3, 3], K: [3, 3, 3], B: 2, D: 16, lse: false }),
  ];
}

/** Large grids (NVIDIA machine), compared against a reference backend, not the dense oracle. */
function largeGeometries(rank: NaRank): CaseGeometry[] {
  if (rank === 1) {
    return geometries([
      { sp: [4096], K: [63], rpb: true, D: 64 },
      { sp: [4096], K: [31], d: [4], causal: [true], D: 64 },
      { sp: [4096], K: [64], s: [16], H: 2, Hkv: 1, D: 64, Dv: 32 },
    ]);
  }
  if (rank === 2) {
    return geometries([
      { sp: [128, 128], K: [7, 7], rpb: true, D: 64 },
      { sp: [128, 128], K: [9, 5], d: [2, 3], causal: [true, false], D: 64 },
      { sp: [128, 128], K: [8, 8], s: [4, 8], H: 2, Hkv: 1, D: 64 },
    ]);
  }
  return geometries([
    { sp: [16, 32, 32], K: [3, 5, 5], rpb: true, D: 64 },
    { sp: [16, 32, 32], K: [5, 3, 7], d: [2, 2, 1], causal: [true, false, true], D: 64 },
    { sp: [16, 32, 32], K: [4, 4, 4], s: [2, 4, 4], H: 2, Hkv: 1, D: 64, Dv: 32 },
  ]);
}

// ---------------------------------------------------------------------------------------------
// expansion over ops and dtypes

const BMM_OPS: ReadonlySet<OpFamily> = new Set(['qk_forward', 'qk_backward', 'av_forward', 'av_backward']);
const RPB_OPS: ReadonlySet<OpFamily> = new Set(['forward', 'backward', 'qk_forward', 'qk_backward']);

export function isBmmOp(op: OpFamily): boolean {
  return BMM_OPS.has(op);
}

/** Whether an op family takes a relative positional bias (or produces its gradient). */
export function opTakesRpb(op: OpFamily): boolean {
  return RPB_OPS.has(op);
}

/** Adapt a geometry to an op, or return undefined when the op cannot run it (even K for BMM ops). */
export function adaptToOp(g: CaseGeometry, op: OpFamily): CaseGeometry | undefined {
  const oddK = g.kernelSize.every((k) => k % 2 === 1);
  if (isBmmOp(op) && !oddK) return undefined;
  const rpbAllowed = opTakesRpb(op) && oddK && !g.isCausal.some((c) => c);
  if (isBmmOp(op)) {
    // BMM ops: heads-first, one head count, one head dim (the value dim for av ops), no scale, no lse.
    const dim = op.startsWith('av') ? g.dimV : g.dim;
    return { ...g, headsKv: g.heads, dim, dimV: dim, rpb: g.rpb && rpbAllowed, lse: false, attnScale: undefined };
  }
  return { ...g, rpb: g.rpb && rpbAllowed, lse: op === 'forward' ? g.lse : false };
}

const DTYPE_ABBR: Record<DType, string> = { float16: 'f16', float32: 'f32', float64: 'f64' };

function dims(values: readonly number[]): string {
  return values.join('x');
}

/** `na2d_forward f16 sp=7x9 K=3x5 d=1x2 causal=TF rpb lse B=1 H=2 D=8` (+ `s=`, `H=2/1`, `D=8/16`, `scale=`). */
export function caseKey(op: OpFamily, dtype: DType, g: CaseGeometry): string {
  const rank = g.spatial.length as NaRank;
  const parts = [
    opName(rank, op),
    DTYPE_ABBR[dtype],
    `sp=${dims(g.spatial)}`,
    `K=${dims(g.kernelSize)}`,
    `d=${dims(g.dilation)}`,
  ];
  if (g.stride.some((s) => s !== 1)) parts.push(`s=${dims(g.stride)}`);
  parts.push(`causal=${g.isCausal.map((c) => (c ? 'T' : 'F')).join('')}`);
  if (g.rpb) parts.push('rpb');
  if (g.lse) parts.push('lse');
  parts.push(`B=${g.batch}`, g.headsKv === g.heads ? `H=${g.heads}` : `H=${g.heads}/${g.headsKv}`);
  parts.push(g.dimV === g.dim ? `D=${g.dim}` : `D=${g.dim}/${g.dimV}`);
  if (g.attnScale !== undefined) parts.push(`scale=${g.attnScale}`);
  return parts.join(' ');
}

/** FNV-1a hash of a string, as a 32-bit seed. */
export function seedOf(key: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < key.length; i++) {
    h ^= key.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h >>> 0;
}

export interface CaseGridOptions {
  readonly size?: CaseSize;
  readonly dtypes?: readonly DType[];
  readonly ops?: readonly OpFamily[];
  readonly ranks?: readonly NaRank[];
}

const ALL_RANKS: readonly NaRank[] = [1, 2, 3];

/** The conformance cases for a size, over the given dtypes, ops and ranks (all by default). Keys are unique. */
export function buildCases(options: CaseGridOptions = {}): NaCase[] {
  const size = options.size ?? 'quick';
  const dtypes = options.dtypes ?? ['float32', 'float16'];
  const ops = options.ops ?? OP_FAMILIES;
  const ranks = options.ranks ?? ALL_RANKS;
  const out: NaCase[] = [];
  const seen = new Set<string>();
  for (const rank of ranks) {
    const geoms = size === 'quick' ? quickGeometries(rank) : largeGeometries(rank);
    for (const op of ops) {
      for (const dtype of dtypes) {
        for (const g of geoms) {
          const adapted = adaptToOp(g, op);
          if (!adapted) continue;
          const key = caseKey(op, dtype, adapted);
          if (seen.has(key)) continue;
          seen.add(key);
          out.push({ ...adapted, key, op, rank, dtype, seed: seedOf(key) });
        }
      }
    }
  }
  return out;
}

/** The geometries of a size and rank (before op/dtype expansion), for tools and tests. */
export function caseGeometries(size: CaseSize, rank: NaRank): CaseGeometry[] {
  return size === 'quick' ? quickGeometries(rank) : largeGeometries(rank);
}

/** Count cases per `naXd_op` and dtype: `{ na2d_forward: { float32: 12, ... } }`. */
export function countCases(cases: readonly NaCase[]): Record<string, Partial<Record<DType, number>>> {
  const out: Record<string, Partial<Record<DType, number>>> = {};
  for (const c of cases) {
    const name = opName(c.rank, c.op);
    const row = out[name] ?? (out[name] = {});
    row[c.dtype] = (row[c.dtype] ?? 0) + 1;
  }
  return out;
}

/**
 * Every valid single axis of an exhaustive window sweep, in the order the window tests enumerate them: lengths
 * `minLength`..`maxLength`, kernel sizes from `minKernel` up to the length, dilations with K x d <= L, strides 1..K,
 * non-causal then causal.
 */
export function* axisGrid(o: { readonly maxLength: number; readonly minLength?: number; readonly minKernel?: number }): Generator<AxisParams> {
  for (let length = o.minLength ?? 1; length <= o.maxLength; length++) {
    for (let kernelSize = o.minKernel ?? 2; kernelSize <= length; kernelSize++) {
      for (let dilation = 1; kernelSize * dilation <= length; dilation++) {
        for (let stride = 1; stride <= kernelSize; stride++) {
          for (const causal of [false, true]) yield { length, kernelSize, dilation, stride, causal };
        }
      }
    }
  }
}
