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
  const rank = axes.length;
  const cx = new Array<number>(rank).fill(0);
  const ct = new Array<number>(rank).fill(0);
  for (let x = 0; x < N; x++) {
    let r = x;
    for (let a = rank - 1; a >= 0; a--) {
      const L = (axes[a] as OracleAxis).length;
      cx[a] = r % L;
      r = Math.floor(r / L);
    }
    for (let t = 0; t < P; t++) {
      let u = t;
      let ok = true;
      for (let a = rank - 1; a >= 0; a--) {
        const K = (axes[a] as OracleAxis).kernelSize;
        ct[a] = u % K;
        u = Math.floor(u / K);
        if ((ct[a] as number) >= ((counts[a] as Int32Array)[cx[a] as number] as number)) ok = false;
      }
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
  const coords = (t: number): number[] => {
    const c = new Array<number>(rank);
    for (let a = rank - 1; a >= 0; a--) {
      const L = (axes[a] as OracleAxis).length;
      c[a] = t % L;
      t = Math.floor(t / L);
    }
    return c;
  };
  const allCoords = Array.from({ length: N }, (_, t) => coords(t));
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
  const { batch: B, heads: H, headsKv: Hk, dim: D, dimV: Dv, scale } = p;
  const N = mask.tokens;
  const group = H / Hk;
  const keys = keyLists(mask);
  const output = new Float64Array(B * N * H * Dv);
  const lse = new Float64Array(B * N * H);
  const s = new Float64Array(N);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const hk = Math.floor(h / group);
      for (let x = 0; x < N; x++) {
        const qo = ((b * N + x) * H + h) * D;
        const ks = keys[x] as Int32Array;
        let m = Number.NEGATIVE_INFINITY;
        for (let i = 0; i < ks.length; i++) {
          const j = ks[i] as number;
          const ko = ((b * N + j) * Hk + hk) * D;
          let dot = 0;
          for (let c = 0; c < D; c++) dot += at(q, qo + c) * at(k, ko + c);
          const z = scale * dot + rpbValue(mask, rpb, h, x, j);
          s[i] = z;
          if (z > m) m = z;
        }
        let sum = 0;
        for (let i = 0; i < ks.length; i++) sum += Math.exp((s[i] as number) - m);
        const l = m + Math.log(sum);
        lse[(b * N + x) * H + h] = l;
        const oo = ((b * N + x) * H + h) * Dv;
        for (let i = 0; i < ks.length; i++) {
          const pr = Math.exp((s[i] as number) - l);
          const vo = ((b * N + (ks[i] as number)) * Hk + hk) * Dv;
          for (let c = 0; c < Dv; c++) output[oo + c] = (output[oo + c] as number) + pr * at(v, vo + c);
        }
      }
    }
  }
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
  const group = H / Hk;
  const keys = keyLists(mask);
  const gradQuery = new Float64Array(B * N * H * D);
  const gradKey = new Float64Array(B * N * Hk * D);
  const gradValue = new Float64Array(B * N * Hk * Dv);
  const gradRpb = rpb ? new Float64Array(H * mask.rpbSize) : undefined;
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const hk = Math.floor(h / group);
      for (let x = 0; x < N; x++) {
        const qo = ((b * N + x) * H + h) * D;
        const oo = ((b * N + x) * H + h) * Dv;
        let delta = 0;
        for (let c = 0; c < Dv; c++) delta += at(gradOutput, oo + c) * at(output, oo + c);
        const l = at(lse, (b * N + x) * H + h);
        const ks = keys[x] as Int32Array;
        for (let i = 0; i < ks.length; i++) {
          const j = ks[i] as number;
          const ko = ((b * N + j) * Hk + hk) * D;
          const vo = ((b * N + j) * Hk + hk) * Dv;
          let dot = 0;
          for (let c = 0; c < D; c++) dot += at(q, qo + c) * at(k, ko + c);
          const pr = Math.exp(scale * dot + rpbValue(mask, rpb, h, x, j) - l);
          let dp = 0;
          for (let c = 0; c < Dv; c++) dp += at(gradOutput, oo + c) * at(v, vo + c);
          const ds = pr * (dp - delta);
          for (let c = 0; c < Dv; c++) gradValue[vo + c] = (gradValue[vo + c] as number) + pr * at(gradOutput, oo + c);
          for (let c = 0; c < D; c++) {
            gradQuery[qo + c] = (gradQuery[qo + c] as number) + scale * ds * at(k, ko + c);
            gradKey[ko + c] = (gradKey[ko + c] as number) + scale * ds * at(q, qo + c);
          }
          if (gradRpb) {
            const r = h * mask.rpbSize + (mask.rpb[x * N + j] as number);
            gradRpb[r] = (gradRpb[r] as number) + ds;
          }
        }
      }
    }
  }
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
  const N = mask.tokens;
  const P = mask.slots;
  const keys = keyLists(mask);
  const attn = new Float64Array(B * H * N * P).fill(Number.NEGATIVE_INFINITY);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const base = (b * H + h) * N;
      for (let x = 0; x < N; x++) {
        const qo = (base + x) * D;
        for (const j of keys[x] as Int32Array) {
          const ko = (base + j) * D;
          let dot = 0;
          for (let c = 0; c < D; c++) dot += at(q, qo + c) * at(k, ko + c);
          attn[(base + x) * P + (mask.slot[x * N + j] as number)] = dot + rpbValue(mask, rpb, h, x, j);
        }
      }
    }
  }
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
  const P = mask.slots;
  const keys = keyLists(mask);
  const gradQuery = new Float64Array(B * H * N * D);
  const gradKey = new Float64Array(B * H * N * D);
  const gradRpb = withRpb ? new Float64Array(H * mask.rpbSize) : undefined;
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const base = (b * H + h) * N;
      for (let x = 0; x < N; x++) {
        const qo = (base + x) * D;
        for (const j of keys[x] as Int32Array) {
          const ko = (base + j) * D;
          const da = at(gradAttn, (base + x) * P + (mask.slot[x * N + j] as number));
          for (let c = 0; c < D; c++) {
            gradQuery[qo + c] = (gradQuery[qo + c] as number) + da * at(k, ko + c);
            gradKey[ko + c] = (gradKey[ko + c] as number) + da * at(q, qo + c);
          }
          if (gradRpb) {
            const r = h * mask.rpbSize + (mask.rpb[x * N + j] as number);
            gradRpb[r] = (gradRpb[r] as number) + da;
          }
        }
      }
    }
  }
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
  const N = mask.tokens;
  const P = mask.slots;
  const keys = keyLists(mask);
  const out = new Float64Array(B * H * N * D);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const base = (b * H + h) * N;
      for (let x = 0; x < N; x++) {
        const oo = (base + x) * D;
        for (const j of keys[x] as Int32Array) {
          const a = at(attn, (base + x) * P + (mask.slot[x * N + j] as number));
          const vo = (base + j) * D;
          for (let c = 0; c < D; c++) out[oo + c] = (out[oo + c] as number) + a * at(v, vo + c);
        }
      }
    }
  }
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
  const P = mask.slots;
  const keys = keyLists(mask);
  const gradAttn = new Float64Array(B * H * N * P);
  const gradValue = new Float64Array(B * H * N * D);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const base = (b * H + h) * N;
      for (let x = 0; x < N; x++) {
        const oo = (base + x) * D;
        for (const j of keys[x] as Int32Array) {
          const t = (base + x) * P + (mask.slot[x * N + j] as number);
          const vo = (base + j) * D;
          let dot = 0;
          for (let c = 0; c < D; c++) dot += at(gradOutput, oo + c) * at(v, vo + c);
          gradAttn[t] = dot;
          const a = at(attn, t);
          for (let c = 0; c < D; c++) gradValue[vo + c] = (gradValue[vo + c] as number) + a * at(gradOutput, oo + c);
        }
      }
    }
  }
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
  const { batch: B, heads: H, headsKv: Hk, dim: D, dimV: Dv, scale, spatial } = p;
  const N = spatial.reduce((a, b) => a * b, 1);
  const coords = Array.from({ length: N }, (_, t) => {
    const c = new Array<number>(spatial.length);
    for (let a = spatial.length - 1; a >= 0; a--) {
      const L = at(spatial, a);
      c[a] = t % L;
      t = Math.floor(t / L);
    }
    return c;
  });
  const out = new Float64Array(B * N * H * Dv);
  const group = H / Hk;
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const hk = Math.floor(h / group);
      for (let x = 0; x < N; x++) {
        const qo = ((b * N + x) * H + h) * D;
        const zs: number[] = [];
        const js: number[] = [];
        for (let j = 0; j < N; j++) {
          if (!keep(coords[x] as number[], coords[j] as number[])) continue;
          const ko = ((b * N + j) * Hk + hk) * D;
          let dot = 0;
          for (let c = 0; c < D; c++) dot += at(q, qo + c) * at(k, ko + c);
          zs.push(scale * dot);
          js.push(j);
        }
        const m = Math.max(...zs);
        let sum = 0;
        for (const z of zs) sum += Math.exp(z - m);
        const oo = ((b * N + x) * H + h) * Dv;
        zs.forEach((z, i) => {
          const pr = Math.exp(z - m) / sum;
          const vo = ((b * N + (js[i] as number)) * Hk + hk) * Dv;
          for (let c = 0; c < Dv; c++) out[oo + c] = (out[oo + c] as number) + pr * at(v, vo + c);
        });
      }
    }
  }
  return out;
}
