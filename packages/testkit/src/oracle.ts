/**
 * The dense oracle: O(N^2) masked attention in f64, written from the spec's text and deliberately
 * NOT using core's window functions (`axisWindow`, `windowStartInGroup`, ...).
 *
 * The window is formulated independently of core, in original coordinates:
 * - non-causal, stride 1: the v0.17.5 Flex mask (spec §2.8): `kd = K*d`, `left = floor(kd/2)`,
 *   `right = floor(kd/2) + (kd mod 2) - 1`, `center = clamp(q, left, L-1-right)`, keep key `k` when
 *   `center-left <= k <= center+right` and `k` is in q's dilation group;
 * - causal, stride 1: `0 <= q-k < K*d` and the same dilation group;
 * - stride s (spec §2.7): every query takes the window of its stride-group *leader* (computed in group
 *   coordinates from the text: centre of the group for non-causal, last member for causal, clipped to
 *   the group); a causal window is still cut at the query itself.
 *
 * The slot of a key inside a query's window (needed by the BMM ops' `attn` tensor) is its rank among
 * the query's kept keys along each axis, combined row-major over the kernel dims.
 */

/** One spatial axis of a neighborhood problem. */
export interface OracleAxis {
  readonly length: number;
  readonly kernelSize: number;
  readonly dilation: number;
  readonly stride: number;
  readonly causal: boolean;
}

/** The neighborhood parameters of a whole problem, one entry per spatial axis. */
export interface OracleGeometry {
  readonly spatial: readonly number[];
  readonly kernelSize: readonly number[];
  readonly dilation: readonly number[];
  readonly stride: readonly number[];
  readonly isCausal: readonly boolean[];
}

function axesOf(g: OracleGeometry): OracleAxis[] {
  return g.spatial.map((length, a) => ({
    length,
    kernelSize: at(g.kernelSize, a),
    dilation: at(g.dilation, a),
    stride: at(g.stride, a),
    causal: g.isCausal[a] === true,
  }));
}

function at(values: ArrayLike<number>, i: number): number {
  const v = values[i];
  if (v === undefined) throw new Error(`oracle: index ${i} out of range (length ${values.length})`);
  return v;
}

/** `sum_c a[ao + c] * b[bo + c]` over `n` entries, in order. */
function dotAt(a: ArrayLike<number>, ao: number, b: ArrayLike<number>, bo: number, n: number): number {
  let dot = 0;
  for (let c = 0; c < n; c++) dot += at(a, ao + c) * at(b, bo + c);
  return dot;
}

/** `dst[o + c] += s * src[so + c]` over `n` entries. */
function addScaled(dst: Float64Array, o: number, s: number, src: ArrayLike<number>, so: number, n: number): void {
  for (let c = 0; c < n; c++) dst[o + c] = (dst[o + c] as number) + s * at(src, so + c);
}

/** Row-major coordinates of flat index `t` over axes of the given lengths. */
function unravel(t: number, lengths: readonly number[]): number[] {
  const c = new Array<number>(lengths.length);
  for (let a = lengths.length - 1; a >= 0; a--) {
    const L = at(lengths, a);
    c[a] = t % L;
    t = Math.floor(t / L);
  }
  return c;
}

/** The v0.17.5 Flex rule (spec §2.8) for stride 1: is key `k` in the window of query `q`? */
export function flexKeep(q: number, k: number, ax: OracleAxis): boolean {
  const { length: L, kernelSize: K, dilation: d } = ax;
  if (k < 0 || k >= L || q < 0 || q >= L) return false;
  if (k % d !== q % d) return false;
  const kd = K * d;
  if (ax.causal) return q - k >= 0 && q - k < kd;
  const left = Math.floor(kd / 2);
  const right = Math.floor(kd / 2) + (kd % 2) - 1;
  const center = Math.min(Math.max(q, left), L - 1 - right);
  return center - left <= k && k <= center + right;
}

/** Number of members of dilation group `g` (counted, not from a closed form). */
function groupSize(L: number, d: number, g: number): number {
  let n = 0;
  for (let x = g; x < L; x += d) n++;
  return n;
}

/** The stride leader of query `q`, in original coordinates (spec §2.7; q itself when s = 1). */
export function strideLeader(q: number, ax: OracleAxis): number {
  const { length: L, dilation: d, stride: s } = ax;
  if (s === 1) return q;
  const g = q % d;
  const i = (q - g) / d;
  const n = groupSize(L, d, g);
  const first = Math.floor(i / s) * s;
  const lead = ax.causal ? Math.min(first + s - 1, n - 1) : Math.min(first + Math.floor(s / 2), n - 1);
  return lead * d + g;
}

/** Is key `k` a (valid) neighbor of query `q` along this axis? */
export function axisKeep(q: number, k: number, ax: OracleAxis): boolean {
  const leader = strideLeader(q, ax);
  if (!flexKeep(leader, k, ax)) return false;
  // The causal window's end is the query itself, not the leader (spec §2.7).
  return ax.causal ? k <= q : true;
}

/** The kept keys of query `q` along one axis, ascending (their rank is the slot index). */
export function axisKeys(q: number, ax: OracleAxis): number[] {
  const leader = strideLeader(q, ax);
  const keys: number[] = [];
  for (let k = 0; k < ax.length; k++) {
    if (flexKeep(leader, k, ax) && (!ax.causal || k <= q)) keys.push(k);
  }
  return keys;
}

/**
 * Which BMM slots are valid, without the N x N mask (usable at large sizes): `[N * P]`, 1 when
 * valid. Per axis the valid slots of a query are the first `count` ones (its kept keys in order).
 */
export function slotValidity(geometry: OracleGeometry): Uint8Array {
  const axes = axesOf(geometry);
  const counts = axes.map((ax) => Int32Array.from({ length: ax.length }, (_, q) => axisKeys(q, ax).length));
  const N = axes.reduce((n, a) => n * a.length, 1);
  const P = axes.reduce((n, a) => n * a.kernelSize, 1);
  const valid = new Uint8Array(N * P);
  const lengths = axes.map((a) => a.length);
  const kernel = axes.map((a) => a.kernelSize);
  for (let x = 0; x < N; x++) {
    const cx = unravel(x, lengths);
    for (let t = 0; t < P; t++) {
      const ct = unravel(t, kernel);
      const ok = ct.every((slot, a) => slot < at(counts[a] as Int32Array, at(cx, a)));
      valid[x * P + t] = ok ? 1 : 0;
    }
  }
  return valid;
}

/** Per-axis L x L tables: `slot[q*L + k]` = rank of key k among q's keys, or -1 when not kept. */
export interface OracleAxisMask {
  readonly axis: OracleAxis;
  readonly slot: Int32Array;
}

export function buildAxisMask(ax: OracleAxis): OracleAxisMask {
  const L = ax.length;
  const slot = new Int32Array(L * L).fill(-1);
  for (let q = 0; q < L; q++) {
    const keys = axisKeys(q, ax);
    if (keys.length > ax.kernelSize) {
      throw new Error(`oracle: query ${q} has ${keys.length} keys > kernel size ${ax.kernelSize} (L=${L}, d=${ax.dilation}, s=${ax.stride})`);
    }
    keys.forEach((k, t) => {
      slot[q * L + k] = t;
    });
  }
  return { axis: ax, slot };
}

/**
 * The dense N x N neighborhood of a whole problem (N = prod(spatial)): `slot[x*N + j]` is the
 * row-major kernel slot of key token j in query token x's window, or -1 when j is masked out;
 * `rpb[x*N + j]` is the flat index into one head's bias table `[2K0-1, 2K1-1, ...]` (-1 when masked).
 */
export interface OracleMask {
  readonly geometry: OracleGeometry;
  readonly tokens: number;
  /** P = prod(kernelSize). */
  readonly slots: number;
  readonly slot: Int32Array;
  readonly rpb: Int32Array;
  /** Length of one head's rpb table, prod(2K-1). */
  readonly rpbSize: number;
}

export function buildMask(geometry: OracleGeometry): OracleMask {
  const axes = axesOf(geometry);
  const rank = axes.length;
  const axisMasks = axes.map(buildAxisMask);
  const N = axes.reduce((n, a) => n * a.length, 1);
  const P = axes.reduce((n, a) => n * a.kernelSize, 1);
  const rpbSize = axes.reduce((n, a) => n * (2 * a.kernelSize - 1), 1);
  const slot = new Int32Array(N * N).fill(-1);
  const rpb = new Int32Array(N * N).fill(-1);
  const lengths = axes.map((a) => a.length);
  const allCoords = Array.from({ length: N }, (_, t) => unravel(t, lengths));
  for (let x = 0; x < N; x++) {
    const cx = allCoords[x] as number[];
    for (let j = 0; j < N; j++) {
      const cj = allCoords[j] as number[];
      let s = 0;
      let r = 0;
      let ok = true;
      for (let a = 0; a < rank; a++) {
        const ax = axes[a] as OracleAxis;
        const L = ax.length;
        const t = (axisMasks[a] as OracleAxisMask).slot[at(cx, a) * L + at(cj, a)] as number;
        if (t < 0) {
          ok = false;
          break;
        }
        const K = ax.kernelSize;
        const rel = (at(cj, a) - at(cx, a)) / ax.dilation + K - 1;
        s = s * K + t;
        r = r * (2 * K - 1) + (rel >= 0 && rel <= 2 * K - 2 ? rel : Number.NaN);
      }
      if (!ok) continue;
      slot[x * N + j] = s;
      rpb[x * N + j] = Number.isNaN(r) ? -1 : r;
    }
  }
  return { geometry, tokens: N, slots: P, slot, rpb, rpbSize };
}

/** Shapes of a fused (heads-last) problem for the oracle. */
export interface OracleFusedProblem {
  readonly batch: number;
  readonly heads: number;
  readonly headsKv: number;
  readonly dim: number;
  readonly dimV: number;
  readonly scale: number;
  readonly geometry: OracleGeometry;
}

function rpbValue(mask: OracleMask, rpb: ArrayLike<number> | undefined, h: number, x: number, j: number): number {
  if (!rpb) return 0;
  const r = mask.rpb[x * mask.tokens + j] as number;
  if (r < 0) throw new Error(`oracle: rpb offset out of range for query ${x}, key ${j}`);
  return at(rpb, h * mask.rpbSize + r);
}

/** d_rpb: adds `ds` to the bias cell of head `h` that the pair (query x, key j) reads. */
function addRpbGrad(gradRpb: Float64Array, mask: OracleMask, h: number, x: number, j: number, ds: number): void {
  const r = h * mask.rpbSize + (mask.rpb[x * mask.tokens + j] as number);
  gradRpb[r] = (gradRpb[r] as number) + ds;
}

/** The heads-last (fused) shape a query loop needs. */
type FusedShape = Pick<OracleFusedProblem, 'batch' | 'heads' | 'headsKv'>;

/**
 * Visits every (batch, query head, query token) of a heads-last problem of `N` tokens, in order,
 * with the GQA KV head `hk = floor(h / (H / H_kv))` and the row indices (units of one head vector)
 * of the query token and, through `kvRow(j)`, of key token j.
 */
function forEachFusedQuery(
  p: FusedShape,
  N: number,
  visit: (h: number, x: number, row: number, kvRow: (j: number) => number) => void,
): void {
  const { batch: B, heads: H, headsKv: Hk } = p;
  const group = H / Hk;
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const hk = Math.floor(h / group);
      const kvRow = (j: number): number => (b * N + j) * Hk + hk;
      for (let x = 0; x < N; x++) visit(h, x, (b * N + x) * H + h, kvRow);
    }
  }
}

/**
 * Visits every kept (query x, key j) pair of a heads-first (BMM) problem, in order, with the row
 * indices of x and j in `[B, H, N, *]` tensors and the flat index `t` of the pair's slot in `attn`.
 */
function forEachBmmPair(
  p: OracleBmmProblem,
  mask: OracleMask,
  visit: (h: number, x: number, j: number, xRow: number, jRow: number, t: number) => void,
): void {
  const { batch: B, heads: H } = p;
  const N = mask.tokens;
  const P = mask.slots;
  const keys = keyLists(mask);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const base = (b * H + h) * N;
      for (let x = 0; x < N; x++) {
        for (const j of keys[x] as Int32Array) visit(h, x, j, base + x, base + j, (base + x) * P + (mask.slot[x * N + j] as number));
      }
    }
  }
}

/** Keys of every query token, as lists (ascending token index). */
function keyLists(mask: OracleMask): Int32Array[] {
  const N = mask.tokens;
  const out: Int32Array[] = [];
  for (let x = 0; x < N; x++) {
    const keys: number[] = [];
    for (let j = 0; j < N; j++) if ((mask.slot[x * N + j] as number) >= 0) keys.push(j);
    out.push(Int32Array.from(keys));
  }
  return out;
}

export interface OracleFusedForwardResult {
  /** [B, *sp, H, Dv] */
  readonly output: Float64Array;
  /** [B, *sp, H], natural log. */
  readonly lse: Float64Array;
}

/**
 * Fused forward (spec §3.1): S = scale*q.k + rpb over the neighborhood, O = softmax(S) V, lse = ln sum exp S.
 * GQA: query head h reads KV head floor(h / (H / H_kv)).
 */
export function oracleFusedForward(
  p: OracleFusedProblem,
  q: ArrayLike<number>,
  k: ArrayLike<number>,
  v: ArrayLike<number>,
  rpb?: ArrayLike<number>,
  mask: OracleMask = buildMask(p.geometry),
): OracleFusedForwardResult {
  const { batch: B, heads: H, dim: D, dimV: Dv, scale } = p;
  const N = mask.tokens;
  const keys = keyLists(mask);
  const output = new Float64Array(B * N * H * Dv);
  const lse = new Float64Array(B * N * H);
  const s = new Float64Array(N);
  forEachFusedQuery(p, N, (h, x, row, kvRow) => {
    const ks = keys[x] as Int32Array;
    let m = Number.NEGATIVE_INFINITY;
    for (let i = 0; i < ks.length; i++) {
      const j = ks[i] as number;
      const z = scale * dotAt(q, row * D, k, kvRow(j) * D, D) + rpbValue(mask, rpb, h, x, j);
      s[i] = z;
      if (z > m) m = z;
    }
    let sum = 0;
    for (let i = 0; i < ks.length; i++) sum += Math.exp((s[i] as number) - m);
    const l = m + Math.log(sum);
    lse[row] = l;
    for (let i = 0; i < ks.length; i++) {
      addScaled(output, row * Dv, Math.exp((s[i] as number) - l), v, kvRow(ks[i] as number) * Dv, Dv);
    }
  });
  return { output, lse };
}

export interface OracleFusedBackwardResult {
  readonly gradQuery: Float64Array;
  readonly gradKey: Float64Array;
  readonly gradValue: Float64Array;
  /** Only when rpb was given: d_rpb = sum of dS over the (query, key) pairs mapped to each cell. */
  readonly gradRpb?: Float64Array;
}

/**
 * Fused backward by the dense formulas of spec §7.2, using the *stored* forward output and LSE
 * exactly as a backend receives them: delta = dO.O, P = exp(S - lse), dS = P (dO.v - delta),
 * dQ = scale dS K, dK = scale dS^T Q, dV = P^T dO (GQA: KV gradients sum over the query heads of a group).
 */
export function oracleFusedBackward(
  p: OracleFusedProblem,
  q: ArrayLike<number>,
  k: ArrayLike<number>,
  v: ArrayLike<number>,
  output: ArrayLike<number>,
  gradOutput: ArrayLike<number>,
  lse: ArrayLike<number>,
  rpb?: ArrayLike<number>,
  mask: OracleMask = buildMask(p.geometry),
): OracleFusedBackwardResult {
  const { batch: B, heads: H, headsKv: Hk, dim: D, dimV: Dv, scale } = p;
  const N = mask.tokens;
  const keys = keyLists(mask);
  const gradQuery = new Float64Array(B * N * H * D);
  const gradKey = new Float64Array(B * N * Hk * D);
  const gradValue = new Float64Array(B * N * Hk * Dv);
  const gradRpb = rpb ? new Float64Array(H * mask.rpbSize) : undefined;
  forEachFusedQuery(p, N, (h, x, row, kvRow) => {
    const qo = row * D;
    const oo = row * Dv;
    const delta = dotAt(gradOutput, oo, output, oo, Dv);
    const l = at(lse, row);
    for (const j of keys[x] as Int32Array) {
      const ko = kvRow(j) * D;
      const vo = kvRow(j) * Dv;
      const pr = Math.exp(scale * dotAt(q, qo, k, ko, D) + rpbValue(mask, rpb, h, x, j) - l);
      const ds = pr * (dotAt(gradOutput, oo, v, vo, Dv) - delta);
      addScaled(gradValue, vo, pr, gradOutput, oo, Dv);
      addScaled(gradQuery, qo, scale * ds, k, ko, D);
      addScaled(gradKey, ko, scale * ds, q, qo, D);
      if (gradRpb) addRpbGrad(gradRpb, mask, h, x, j, ds);
    }
  });
  return gradRpb ? { gradQuery, gradKey, gradValue, gradRpb } : { gradQuery, gradKey, gradValue };
}

/** Shapes of a BMM (heads-first) problem: query/key/value `[B, H, *sp, D]`, attn `[B, H, *sp, P]`. */
export interface OracleBmmProblem {
  readonly batch: number;
  readonly heads: number;
  readonly dim: number;
  readonly geometry: OracleGeometry;
}

/** QK forward (spec §3.4): attn[x, t] = q_x . k_{n_t(x)} (+ rpb) for valid slots, -inf for invalid ones. No scale. */
export function oracleQkForward(
  p: OracleBmmProblem,
  q: ArrayLike<number>,
  k: ArrayLike<number>,
  rpb?: ArrayLike<number>,
  mask: OracleMask = buildMask(p.geometry),
): Float64Array {
  const { batch: B, heads: H, dim: D } = p;
  const attn = new Float64Array(B * H * mask.tokens * mask.slots).fill(Number.NEGATIVE_INFINITY);
  forEachBmmPair(p, mask, (h, x, j, xRow, jRow, t) => {
    attn[t] = dotAt(q, xRow * D, k, jRow * D, D) + rpbValue(mask, rpb, h, x, j);
  });
  return attn;
}

export interface OracleQkBackwardResult {
  readonly gradQuery: Float64Array;
  readonly gradKey: Float64Array;
  readonly gradRpb?: Float64Array;
}

/** QK backward (spec §7.4, §5): dQ_x = sum_t dA[x,t] k_j, dK_j = sum_x dA[x,t(x,j)] q_x, d_rpb[r] = sum dA. */
export function oracleQkBackward(
  p: OracleBmmProblem,
  gradAttn: ArrayLike<number>,
  q: ArrayLike<number>,
  k: ArrayLike<number>,
  withRpb: boolean,
  mask: OracleMask = buildMask(p.geometry),
): OracleQkBackwardResult {
  const { batch: B, heads: H, dim: D } = p;
  const N = mask.tokens;
  const gradQuery = new Float64Array(B * H * N * D);
  const gradKey = new Float64Array(B * H * N * D);
  const gradRpb = withRpb ? new Float64Array(H * mask.rpbSize) : undefined;
  forEachBmmPair(p, mask, (h, x, j, xRow, jRow, t) => {
    const da = at(gradAttn, t);
    addScaled(gradQuery, xRow * D, da, k, jRow * D, D);
    addScaled(gradKey, jRow * D, da, q, xRow * D, D);
    if (gradRpb) addRpbGrad(gradRpb, mask, h, x, j, da);
  });
  return gradRpb ? { gradQuery, gradKey, gradRpb } : { gradQuery, gradKey };
}

/** AV forward (spec §3.6): out_x = sum over valid slots attn[x,t] v_{n_t(x)}; invalid slots are never read. */
export function oracleAvForward(
  p: OracleBmmProblem,
  attn: ArrayLike<number>,
  v: ArrayLike<number>,
  mask: OracleMask = buildMask(p.geometry),
): Float64Array {
  const { batch: B, heads: H, dim: D } = p;
  const out = new Float64Array(B * H * mask.tokens * D);
  forEachBmmPair(p, mask, (_h, _x, _j, xRow, jRow, t) => {
    addScaled(out, xRow * D, at(attn, t), v, jRow * D, D);
  });
  return out;
}

export interface OracleAvBackwardResult {
  readonly gradAttn: Float64Array;
  readonly gradValue: Float64Array;
}

/** AV backward (spec §3.7): dA[x,t] = dO_x . v_{n_t(x)} (0 in invalid slots), dV_j = sum_x A[x,t(x,j)] dO_x. */
export function oracleAvBackward(
  p: OracleBmmProblem,
  gradOutput: ArrayLike<number>,
  attn: ArrayLike<number>,
  v: ArrayLike<number>,
  mask: OracleMask = buildMask(p.geometry),
): OracleAvBackwardResult {
  const { batch: B, heads: H, dim: D } = p;
  const N = mask.tokens;
  const gradAttn = new Float64Array(B * H * N * mask.slots);
  const gradValue = new Float64Array(B * H * N * D);
  forEachBmmPair(p, mask, (_h, _x, _j, xRow, jRow, t) => {
    gradAttn[t] = dotAt(gradOutput, xRow * D, v, jRow * D, D);
    addScaled(gradValue, jRow * D, at(attn, t), gradOutput, xRow * D, D);
  });
  return { gradAttn, gradValue };
}

/**
 * Plain dense attention (no neighborhood at all) over heads-last tensors, with an arbitrary
 * key filter: the ground truth for the property tests (full, blocked and causal attention).
 */
export function denseAttention(
  p: Omit<OracleFusedProblem, 'geometry'> & { readonly spatial: readonly number[] },
  q: ArrayLike<number>,
  k: ArrayLike<number>,
  v: ArrayLike<number>,
  keep: (x: readonly number[], j: readonly number[]) => boolean,
): Float64Array {
  const { batch: B, heads: H, dim: D, dimV: Dv, scale, spatial } = p;
  const N = spatial.reduce((a, b) => a * b, 1);
  const coords = Array.from({ length: N }, (_, t) => unravel(t, spatial));
  const out = new Float64Array(B * N * H * Dv);
  forEachFusedQuery(p, N, (_h, x, row, kvRow) => {
    const zs: number[] = [];
    const js: number[] = [];
    for (let j = 0; j < N; j++) {
      if (!keep(coords[x] as number[], coords[j] as number[])) continue;
      zs.push(scale * dotAt(q, row * D, k, kvRow(j) * D, D));
      js.push(j);
    }
    const m = Math.max(...zs);
    let sum = 0;
    for (const z of zs) sum += Math.exp(z - m);
    zs.forEach((z, i) => {
      addScaled(out, row * Dv, Math.exp(z - m) / sum, v, kvRow(js[i] as number) * Dv, Dv);
    });
  });
  return out;
}
