/**
 * The demo's input: a procedurally generated RGB image and the per-pixel attention features built from it.
 * Everything is deterministic (seeded), so the page and its test see the same numbers on every run.
 */

/** Heads and head dim of the demo problem (B = 1). The page's slot-position probe needs HEADS >= 2. */
export const HEADS = 2;
export const HEAD_DIM = 16;
/** Logit of two identical features: the sharpness of the colour/position similarity. */
const TEMPERATURE = 12;
/** Raw per-pixel features: r, g, b, two sine/cosine position pairs, and a constant. */
const FEATURES = 8;

export interface Scene {
  /** Rows (axis 0) and columns (axis 1). */
  readonly height: number;
  readonly width: number;
  /** RGB in [0, 1], row-major, 3 floats per pixel. */
  readonly rgb: Float32Array;
}

export interface Features {
  /** Heads-last [1, height, width, HEADS, HEAD_DIM] (the fused layout), f32. */
  readonly q: Float32Array;
  readonly k: Float32Array;
  readonly v: Float32Array;
}

/** Mulberry32: small, fast, good enough for a picture. */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function gaussian(next: () => number): number {
  const u = Math.max(next(), 1e-12);
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * next());
}

/** A sky-to-sand gradient with a sun, a green block, a stripe band and a checkerboard: sharp edges to attend across. */
export function makeScene(size: number): Scene {
  const height = size;
  const width = size;
  const rgb = new Float32Array(height * width * 3);
  const noise = rng(7);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const u = x / width;
      const w = y / height;
      // Background: sky blue fading to sand.
      let r = 0.35 + 0.55 * w;
      let g = 0.55 + 0.25 * w;
      let b = 0.9 - 0.55 * w;
      // Sun (disc).
      const dx = u - 0.3;
      const dy = w - 0.3;
      if (dx * dx + dy * dy < 0.18 * 0.18) [r, g, b] = [0.95, 0.35, 0.15];
      // Green block.
      if (u > 0.58 && u < 0.9 && w > 0.15 && w < 0.45) [r, g, b] = [0.2, 0.7, 0.3];
      // Yellow diagonal stripe band.
      const diag = u + w;
      if (diag > 1.05 && diag < 1.2) [r, g, b] = [0.95, 0.85, 0.2];
      // Checkerboard in the lower-left corner (4-pixel checks: dilation 2 and 4 see it differently).
      if (u < 0.35 && w > 0.65) {
        const check = (Math.floor(x / 4) + Math.floor(y / 4)) % 2 === 0;
        [r, g, b] = check ? [0.1, 0.15, 0.5] : [0.95, 0.95, 0.95];
      }
      const o = (y * width + x) * 3;
      const n = (noise() - 0.5) * 0.04;
      rgb[o] = Math.min(1, Math.max(0, r + n));
      rgb[o + 1] = Math.min(1, Math.max(0, g + n));
      rgb[o + 2] = Math.min(1, Math.max(0, b + n));
    }
  }
  return { height, width, rgb };
}

/**
 * Q, K, V from fixed seeded projections of the raw features. Head 0 weighs colour heavily (it attends to
 * similar colours, so it respects edges); head 1 weighs position (a smooth blur). Q and K share a projection,
 * and are normalised, so q·k is a scaled cosine similarity. V's channels 0..2 are the pixel's RGB, so the output's channels 0..2 are an image.
 */
export function makeFeatures(scene: Scene): Features {
  const { height, width, rgb } = scene;
  const n = height * width;
  const next = rng(1234);
  const colourWeight = [4, 1];
  const positionWeight = [0.5, 2];
  const proj: Float32Array[] = [];
  const vproj: Float32Array[] = [];
  for (let h = 0; h < HEADS; h++) {
    const p = new Float32Array(HEAD_DIM * FEATURES);
    const pv = new Float32Array(HEAD_DIM * FEATURES);
    for (let c = 0; c < HEAD_DIM; c++) {
      for (let f = 0; f < FEATURES; f++) {
        const w = f < 3 ? (colourWeight[h] ?? 1) : f < 7 ? (positionWeight[h] ?? 1) : 0.3;
        p[c * FEATURES + f] = gaussian(next) * w;
        pv[c * FEATURES + f] = gaussian(next) * 0.5;
      }
    }
    proj.push(p);
    vproj.push(pv);
  }
  const q = new Float32Array(n * HEADS * HEAD_DIM);
  const v = new Float32Array(n * HEADS * HEAD_DIM);
  const feat = new Float32Array(FEATURES);
  const period = 24;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const pix = y * width + x;
      feat[0] = rgb[pix * 3] ?? 0;
      feat[1] = rgb[pix * 3 + 1] ?? 0;
      feat[2] = rgb[pix * 3 + 2] ?? 0;
      feat[3] = Math.sin((2 * Math.PI * x) / period);
      feat[4] = Math.cos((2 * Math.PI * x) / period);
      feat[5] = Math.sin((2 * Math.PI * y) / period);
      feat[6] = Math.cos((2 * Math.PI * y) / period);
      feat[7] = 1;
      for (let h = 0; h < HEADS; h++) {
        const p = proj[h] as Float32Array;
        const pv = vproj[h] as Float32Array;
        const base = (pix * HEADS + h) * HEAD_DIM;
        for (let c = 0; c < HEAD_DIM; c++) {
          let s = 0;
          let sv = 0;
          for (let f = 0; f < FEATURES; f++) {
            s += (p[c * FEATURES + f] ?? 0) * (feat[f] ?? 0);
            sv += (pv[c * FEATURES + f] ?? 0) * (feat[f] ?? 0);
          }
          q[base + c] = s;
          v[base + c] = c < 3 ? (feat[c] ?? 0) : sv;
        }
      }
    }
  }
  // Cosine-similarity attention: every q (= k) row gets norm sqrt(TEMPERATURE * sqrt(D)), so after the op's
  // default scale D^-0.5 the logit q·k is TEMPERATURE * cos(q, k). A pixel attends to pixels that look like it.
  const norm = Math.sqrt(TEMPERATURE * Math.sqrt(HEAD_DIM));
  for (let row = 0; row < n * HEADS; row++) {
    let ss = 0;
    for (let c = 0; c < HEAD_DIM; c++) ss += (q[row * HEAD_DIM + c] ?? 0) ** 2;
    const f = norm / Math.sqrt(Math.max(ss, 1e-12));
    for (let c = 0; c < HEAD_DIM; c++) q[row * HEAD_DIM + c] = (q[row * HEAD_DIM + c] ?? 0) * f;
  }
  return { q, k: q.slice(), v };
}
