/**
 * The browser demo: 2-D neighborhood attention on a generated image, on WebGPU and on the CPU reference
 * backend, through the public `natten-web` API only.
 *
 * Per run: the fused forward (`na2d`) on both backends (timed, compared), then the BMM path (`na2dQk`) for
 * the attention weights of the clicked query (softmax over its window slots) and a position probe through
 * the same op, which tells which key every slot holds. Results land in elements with stable ids
 * (`#status`, `#adapter`, `#timing-gpu`, `#timing-cpu`, `#max-diff`, `#window-info`, `#window-check`),
 * with machine-readable `data-*` attributes for the headless test.
 */
import {
  configure,
  info,
  isHostTensor,
  na2d,
  na2dQk,
  NattenNotImplementedError,
  synchronize,
  type Tensor,
  tensor,
  toGpu,
  VERSION,
} from 'natten-web';
import { HEAD_DIM, HEADS, makeFeatures, makeScene, type Scene } from './scene.ts';

interface Params {
  readonly kernelSize: number;
  readonly dilation: number;
  readonly isCausal: readonly [boolean, boolean];
}

/** What one run leaves behind for the overlay. */
interface RunState {
  readonly params: Params;
  /** Fused output, heads-last [rows, cols, HEADS, HEAD_DIM] (WebGPU's when it ran, else the CPU's). */
  readonly output: Float32Array;
  /** Scaled q·k logits from na2dQk, heads-first [HEADS, rows, cols, P]; invalid (causal) slots are -inf. */
  readonly logits: Float32Array;
  /** Row (head 0) and column (head 1) of the key in every slot, from the same op: [HEADS, rows, cols, P]. */
  readonly keyPos: Float32Array;
  readonly slots: number;
  readonly bmmBackend: 'webgpu' | 'cpu';
}

function $(id: string): HTMLElement {
  const el = document.getElementById(id);
  if (!el) throw new Error(`demo: #${id} is missing from index.html`);
  return el;
}

function $input(id: string): HTMLInputElement | HTMLSelectElement {
  const el = $(id);
  if (!(el instanceof HTMLInputElement || el instanceof HTMLSelectElement)) throw new Error(`demo: #${id} is not a form control`);
  return el;
}

function canvas2d(id: string): { canvas: HTMLCanvasElement; ctx: CanvasRenderingContext2D } {
  const canvas = $(id);
  if (!(canvas instanceof HTMLCanvasElement)) throw new Error(`demo: #${id} is not a canvas`);
  const ctx = canvas.getContext('2d');
  if (!ctx) throw new Error('demo: no 2-D canvas context');
  return { canvas, ctx };
}

function setStatus(state: 'loading' | 'running' | 'done' | 'error', text: string): void {
  const el = $('status');
  el.dataset.state = state;
  el.textContent = text;
}

const notices: string[] = [];
function notice(message: string): void {
  notices.push(message);
  $('notice').textContent = notices.join(' ');
}

function ms(t: number): string {
  return t >= 100 ? `${t.toFixed(0)} ms` : `${t.toFixed(1)} ms`;
}

function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? (s[m] ?? 0) : ((s[m - 1] ?? 0) + (s[m] ?? 0)) / 2;
}

/** Wall time of `f`; WebGPU ops resolve once their work is queued, so the clock stops when the GPU is done too. */
async function timed<T>(f: () => Promise<T>): Promise<{ value: T; ms: number }> {
  const t0 = performance.now();
  const value = await f();
  await synchronize();
  return { value, ms: performance.now() - t0 };
}

function f32(t: Tensor): Float32Array {
  if (!(t.data instanceof Float32Array)) throw new Error(`demo: expected float32 data, got ${t.dtype}`);
  return t.data;
}

/** Heads-last [1, X, Y, H, D] to heads-first [1, H, X, Y, D] (the BMM layout), times `scale`. */
function headsFirst(src: Float32Array, rows: number, cols: number, heads: number, dim: number, scale: number): Float32Array {
  const out = new Float32Array(src.length);
  for (let p = 0; p < rows * cols; p++) {
    for (let h = 0; h < heads; h++) {
      const s = (p * heads + h) * dim;
      const d = (h * rows * cols + p) * dim;
      for (let c = 0; c < dim; c++) out[d + c] = (src[s + c] ?? 0) * scale;
    }
  }
  return out;
}

function invalidSlot(x: number): boolean {
  return !Number.isFinite(x) || x < -1e29;
}

// ---------------------------------------------------------------------------------------------------------
// Problem set-up

const search = new URLSearchParams(location.search);
const SIZE = Math.min(160, Math.max(32, Number(search.get('size') ?? '96') || 96));
/** `?webgpu=off` runs the page as a browser without WebGPU would (CPU only). */
const WEBGPU_OFF = search.get('webgpu') === 'off';

const scene: Scene = makeScene(SIZE);
const features = makeFeatures(scene);
const ROWS = scene.height;
const COLS = scene.width;
const SCALE = 1 / Math.sqrt(HEAD_DIM);
const shape = [1, ROWS, COLS, HEADS, HEAD_DIM];
const q = tensor(shape, 'float32', features.q);
const k = tensor(shape, 'float32', features.k);
const v = tensor(shape, 'float32', features.v);
const qkQuery = tensor([1, HEADS, ROWS, COLS, HEAD_DIM], 'float32', headsFirst(features.q, ROWS, COLS, HEADS, HEAD_DIM, SCALE));
const qkKey = tensor([1, HEADS, ROWS, COLS, HEAD_DIM], 'float32', headsFirst(features.k, ROWS, COLS, HEADS, HEAD_DIM, 1));
// Position probe: head 0 asks for each key's row, head 1 for its column (q one-hot, k = (row, col, 0, ...)).
// Same shape as the real call, so both na2dQk calls share one compiled pipeline.
const probeQuery = new Float32Array(HEADS * ROWS * COLS * HEAD_DIM);
const probeKey = new Float32Array(HEADS * ROWS * COLS * HEAD_DIM);
for (let p = 0; p < ROWS * COLS; p++) {
  probeQuery[p * HEAD_DIM] = 1;
  probeQuery[(ROWS * COLS + p) * HEAD_DIM + 1] = 1;
  for (let h = 0; h < 2; h++) {
    probeKey[(h * ROWS * COLS + p) * HEAD_DIM] = Math.floor(p / COLS);
    probeKey[(h * ROWS * COLS + p) * HEAD_DIM + 1] = p % COLS;
  }
}
const probeQ = tensor([1, HEADS, ROWS, COLS, HEAD_DIM], 'float32', probeQuery);
const probeK = tensor([1, HEADS, ROWS, COLS, HEAD_DIM], 'float32', probeKey);

const image = canvas2d('image');
const outputCanvas = canvas2d('output');
const pixel = Math.max(1, Math.floor(384 / SIZE));
image.canvas.width = COLS * pixel;
image.canvas.height = ROWS * pixel;
image.canvas.dataset.rows = String(ROWS);
image.canvas.dataset.cols = String(COLS);
const outPixel = Math.max(1, Math.floor(192 / SIZE));
outputCanvas.canvas.width = COLS * outPixel;
outputCanvas.canvas.height = ROWS * outPixel;

function rgbBitmap(rgb: (i: number, c: number) => number): HTMLCanvasElement {
  const c = document.createElement('canvas');
  c.width = COLS;
  c.height = ROWS;
  const ctx = c.getContext('2d');
  if (!ctx) throw new Error('demo: no 2-D canvas context');
  const img = ctx.createImageData(COLS, ROWS);
  for (let i = 0; i < ROWS * COLS; i++) {
    for (let ch = 0; ch < 3; ch++) img.data[i * 4 + ch] = Math.round(255 * Math.min(1, Math.max(0, rgb(i, ch))));
    img.data[i * 4 + 3] = 255;
  }
  ctx.putImageData(img, 0, 0);
  return c;
}

const inputBitmap = rgbBitmap((i, c) => scene.rgb[i * 3 + c] ?? 0);

function drawScaled(target: { canvas: HTMLCanvasElement; ctx: CanvasRenderingContext2D }, bitmap: HTMLCanvasElement): void {
  target.ctx.imageSmoothingEnabled = false;
  target.ctx.drawImage(bitmap, 0, 0, target.canvas.width, target.canvas.height);
}

// ---------------------------------------------------------------------------------------------------------
// Runs

let hasWebGpu = false;
let state: RunState | undefined;
let selected: [number, number] = [Math.round(ROWS * 0.3), Math.round(COLS * 0.47)];
let runs = 0;
let clicks = 0;

function readParams(): Params {
  const causalRows = $input('causal-rows');
  const causalCols = $input('causal-cols');
  return {
    kernelSize: Number($input('kernel-size').value),
    dilation: Number($input('dilation').value),
    isCausal: [causalRows instanceof HTMLInputElement && causalRows.checked, causalCols instanceof HTMLInputElement && causalCols.checked],
  };
}

async function detectWebGpu(): Promise<void> {
  const adapterEl = $('adapter');
  if (WEBGPU_OFF) {
    adapterEl.dataset.webgpu = 'no';
    adapterEl.textContent = 'WebGPU turned off (?webgpu=off): running on the CPU backend only';
    return;
  }
  const nav = navigator as Navigator & { gpu?: unknown };
  if (!nav.gpu) {
    adapterEl.dataset.webgpu = 'no';
    adapterEl.textContent = window.isSecureContext
      ? 'No WebGPU in this browser (navigator.gpu is missing): running on the CPU backend only'
      : 'No WebGPU: this page is not a secure context (serve it from https:// or http://localhost): CPU backend only';
    notice('WebGPU is not available here, so only the CPU backend runs; timings and the GPU-CPU comparison are skipped.');
    return;
  }
  const i = await info();
  if (i.backend !== 'webgpu' || !i.adapter) {
    adapterEl.dataset.webgpu = 'no';
    adapterEl.textContent = 'navigator.gpu exists but no WebGPU adapter was found: running on the CPU backend only';
    notice('No WebGPU adapter (in Chromium on Linux, try --enable-unsafe-webgpu); only the CPU backend runs.');
    return;
  }
  hasWebGpu = true;
  const a = i.adapter;
  const parts = [a.vendor, a.architecture, a.device, a.description].filter((s) => s !== '');
  adapterEl.dataset.webgpu = 'yes';
  adapterEl.textContent = `WebGPU: ${parts.join(' / ')}${a.fallback ? ' (fallback adapter)' : ''}; features: ${i.features.join(', ') || 'none'}`;
}

async function runOnce(): Promise<void> {
  runs += 1;
  const status = $('status');
  status.dataset.run = String(runs);
  const params = readParams();
  setStatus('running', `running (K=${params.kernelSize}, dilation ${params.dilation})…`);
  ($('run') as HTMLButtonElement).disabled = true;
  $('problem').textContent =
    `na2d, B=1, ${ROWS}x${COLS} tokens, H=${HEADS}, D=${HEAD_DIM}, float32, kernel ${params.kernelSize}x${params.kernelSize}, ` +
    `dilation ${params.dilation}, causal (${params.isCausal[0]}, ${params.isCausal[1]})`;
  try {
    // Fused forward on WebGPU: first call (compiles the pipeline), then host-to-host and GPU-resident timings.
    let gpuOut: Float32Array | undefined;
    const gpuEl = $('timing-gpu');
    delete gpuEl.dataset.ms;
    if (hasWebGpu) {
      try {
        const first = await timed(() => na2d(q, k, v, { ...params, backend: 'webgpu' }));
        const host = await timed(() => na2d(q, k, v, { ...params, backend: 'webgpu' }));
        const [qg, kg, vg] = [await toGpu(q), await toGpu(k), await toGpu(v)];
        const residentTimes: number[] = [];
        try {
          for (let r = 0; r < 3; r++) {
            const t = await timed(() => na2d(qg, kg, vg, { ...params, backend: 'webgpu' }));
            t.value.buffer.destroy();
            residentTimes.push(t.ms);
          }
        } finally {
          for (const t of [qg, kg, vg]) t.buffer.destroy();
        }
        gpuOut = f32(first.value);
        const resident = median(residentTimes);
        gpuEl.dataset.ms = resident.toFixed(3);
        gpuEl.textContent =
          `${ms(resident)} on GPU tensors (median of ${residentTimes.length}); ` +
          `${ms(host.ms)} host→GPU→host; first call ${ms(first.ms)} (compiles the kernel)`;
      } catch (e) {
        if (!(e instanceof NattenNotImplementedError)) throw e;
        gpuEl.textContent = `not available: ${e.message}`;
        notice(`The WebGPU fused forward is not implemented in this build (${e.message}); the page runs the CPU backend only.`);
      }
    } else {
      gpuEl.textContent = 'n/a (no WebGPU)';
    }

    // The same op on the CPU reference backend (f64 accumulation).
    const cpuTimes: number[] = [];
    const cpuFirst = await timed(() => na2d(q, k, v, { ...params, backend: 'cpu' }));
    cpuTimes.push(cpuFirst.ms);
    if (cpuFirst.ms < 400) cpuTimes.push((await timed(() => na2d(q, k, v, { ...params, backend: 'cpu' }))).ms);
    const cpuOut = f32(cpuFirst.value);
    const cpuEl = $('timing-cpu');
    cpuEl.dataset.ms = median(cpuTimes).toFixed(3);
    cpuEl.textContent = `${ms(median(cpuTimes))} (median of ${cpuTimes.length}, main thread, f64 accumulation)`;

    const diffEl = $('max-diff');
    if (gpuOut) {
      let maxDiff = 0;
      for (let i = 0; i < cpuOut.length; i++) maxDiff = Math.max(maxDiff, Math.abs((gpuOut[i] ?? 0) - (cpuOut[i] ?? 0)));
      diffEl.dataset.value = String(maxDiff);
      diffEl.textContent = `${maxDiff.toExponential(2)} over ${cpuOut.length} outputs (f32 tolerance 1e-4)`;
    } else {
      delete diffEl.dataset.value;
      diffEl.textContent = 'n/a (CPU only)';
    }

    // BMM path for the overlay: logits for every query, and which key each slot holds.
    const bmmTimed = await timed(() => bmmTensors(params));
    const bmm = bmmTimed.value;
    $('timing-bmm').textContent = `${ms(bmmTimed.ms)} on the ${bmm.backend === 'webgpu' ? 'WebGPU' : 'CPU'} backend (attention logits + slot position probe, incl. first-call compiles)`;
    const output = gpuOut ?? cpuOut;
    state = { params, output, logits: bmm.logits, keyPos: bmm.keyPos, slots: params.kernelSize * params.kernelSize, bmmBackend: bmm.backend };
    drawScaled(outputCanvas, rgbBitmap((i, c) => output[(i * HEADS) * HEAD_DIM + c] ?? 0));
    renderSelection();
    const which = gpuOut ? 'WebGPU and CPU' : 'CPU only';
    setStatus('done', `done (run ${runs}, ${which})`);
  } catch (e) {
    console.error(e);
    setStatus('error', `error: ${e instanceof Error ? e.message : String(e)}`);
  } finally {
    ($('run') as HTMLButtonElement).disabled = false;
  }
}

async function bmmTensors(params: Params): Promise<{
  logits: Float32Array;
  keyPos: Float32Array;
  backend: 'webgpu' | 'cpu';
}> {
  const run = async (backend: 'webgpu' | 'cpu') => {
    const logits = await na2dQk(qkQuery, qkKey, { ...params, backend });
    const keyPos = await na2dQk(probeQ, probeK, { ...params, backend });
    if (!isHostTensor(logits) || !isHostTensor(keyPos)) throw new Error('demo: na2dQk returned a GPU tensor for host inputs');
    return { logits: f32(logits), keyPos: f32(keyPos), backend };
  };
  if (hasWebGpu) {
    try {
      return await run('webgpu');
    } catch (e) {
      if (!(e instanceof NattenNotImplementedError)) throw e;
      notice(`na2dQk is not implemented on WebGPU in this build; the attention weights come from the CPU backend.`);
    }
  }
  return run('cpu');
}

// ---------------------------------------------------------------------------------------------------------
// The clicked query's window

function renderSelection(): void {
  clicks += 1;
  const infoEl = $('window-info');
  infoEl.dataset.clicks = String(clicks);
  drawScaled(image, inputBitmap);
  if (!state) return;
  const { params, logits, keyPos, slots, output } = state;
  const [row, col] = selected;
  const head = Number($input('head').value);
  const n = ROWS * COLS;
  const p = row * COLS + col;
  // Slots of this query: logits (valid or not) and key positions from the probe.
  const keys: { t: number; row: number; col: number; logit: number }[] = [];
  for (let t = 0; t < slots; t++) {
    const logit = logits[(head * n + p) * slots + t] ?? Number.NEGATIVE_INFINITY;
    const kr = keyPos[p * slots + t] ?? Number.NaN;
    const kc = keyPos[(n + p) * slots + t] ?? Number.NaN;
    if (invalidSlot(logit) || invalidSlot(kr)) continue;
    keys.push({ t, row: kr, col: kc, logit });
  }
  const maxLogit = Math.max(...keys.map((key) => key.logit));
  const exps = keys.map((key) => Math.exp(key.logit - maxLogit));
  const sum = exps.reduce((a, b) => a + b, 0);
  const weights = exps.map((e) => e / sum);
  const wmax = Math.max(...weights);

  // Veil everything, then unveil the window's keys with a heat tint by weight, then mark the query.
  const ctx = image.ctx;
  ctx.fillStyle = 'rgba(0, 0, 0, 0.55)';
  ctx.fillRect(0, 0, image.canvas.width, image.canvas.height);
  keys.forEach((key, i) => {
    const x = key.col * pixel;
    const y = key.row * pixel;
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(inputBitmap, key.col, key.row, 1, 1, x, y, pixel, pixel);
    ctx.fillStyle = `rgba(255, 255, 255, ${((0.6 * (weights[i] ?? 0)) / wmax).toFixed(3)})`;
    ctx.fillRect(x, y, pixel, pixel);
  });
  drawWindowView(params.kernelSize, keys, weights, wmax, row, col);
  const rowsUsed = [...new Set(keys.map((key) => key.row))].sort((a, b) => a - b);
  const colsUsed = [...new Set(keys.map((key) => key.col))].sort((a, b) => a - b);
  const r0 = rowsUsed[0] ?? row;
  const r1 = rowsUsed[rowsUsed.length - 1] ?? row;
  const c0 = colsUsed[0] ?? col;
  const c1 = colsUsed[colsUsed.length - 1] ?? col;
  ctx.strokeStyle = 'rgba(255, 255, 255, 0.9)';
  ctx.setLineDash([4, 3]);
  ctx.lineWidth = 1;
  ctx.strokeRect(c0 * pixel + 0.5, r0 * pixel + 0.5, (c1 - c0 + 1) * pixel - 1, (r1 - r0 + 1) * pixel - 1);
  ctx.setLineDash([]);
  ctx.lineWidth = 2;
  ctx.strokeStyle = '#00e5ff';
  ctx.strokeRect(col * pixel + 1, row * pixel + 1, pixel - 2, pixel - 2);

  // Check the weights against the fused output: sum_t p_t * V[key_t] must equal O[query].
  let worst = 0;
  for (let c = 0; c < HEAD_DIM; c++) {
    let acc = 0;
    keys.forEach((key, i) => {
      acc += (weights[i] ?? 0) * (features.v[((key.row * COLS + key.col) * HEADS + head) * HEAD_DIM + c] ?? 0);
    });
    worst = Math.max(worst, Math.abs(acc - (output[(p * HEADS + head) * HEAD_DIM + c] ?? 0)));
  }
  const checkEl = $('window-check');
  checkEl.dataset.value = String(worst);
  checkEl.textContent = `max |Σ softmax(na2dQk)·V − na2d output| = ${worst.toExponential(2)} (weights from the ${state.bmmBackend} backend)`;

  // Window extent per axis: start = key of slot 0, count = valid slots along that axis.
  const K = params.kernelSize;
  const first = keys.find((key) => key.t === 0);
  const rowCount = new Set(keys.map((key) => Math.floor(key.t / K))).size;
  const colCount = new Set(keys.map((key) => key.t % K)).size;
  const best = keys[weights.indexOf(wmax)];
  Object.assign(infoEl.dataset, {
    row: String(row),
    col: String(col),
    head: String(head),
    kernelSize: String(K),
    dilation: String(params.dilation),
    rowStart: String(first?.row ?? -1),
    rowCount: String(rowCount),
    colStart: String(first?.col ?? -1),
    colCount: String(colCount),
    keys: String(keys.length),
    weightSum: String(weights.reduce((a, b) => a + b, 0)),
  });
  const d = params.dilation;
  infoEl.textContent =
    `query (${row}, ${col}), head ${head}: rows ${r0}..${r1} step ${d} (${rowCount} of ${K} slots), ` +
    `cols ${c0}..${c1} step ${d} (${colCount} of ${K}); ${keys.length} keys, ${K * K - keys.length} causal-masked slots; ` +
    `largest weight ${wmax.toFixed(3)} at (${best?.row}, ${best?.col})`;
}

const windowView = canvas2d('window-view');

/** The K*K slots magnified, in slot order (row-major over the kernel): key colour plus a weight disc. */
function drawWindowView(
  K: number,
  keys: readonly { t: number; row: number; col: number }[],
  weights: readonly number[],
  wmax: number,
  row: number,
  col: number,
): void {
  const cell = Math.floor(189 / K);
  windowView.canvas.width = K * cell;
  windowView.canvas.height = K * cell;
  const ctx = windowView.ctx;
  ctx.fillStyle = '#e6e6e6';
  ctx.fillRect(0, 0, K * cell, K * cell);
  const bySlot = new Map(keys.map((key, i) => [key.t, { key, w: weights[i] ?? 0 }]));
  for (let t = 0; t < K * K; t++) {
    const x = (t % K) * cell;
    const y = Math.floor(t / K) * cell;
    const slot = bySlot.get(t);
    if (!slot) {
      ctx.strokeStyle = '#b00020';
      ctx.lineWidth = 1.5;
      ctx.beginPath();
      ctx.moveTo(x + 4, y + 4);
      ctx.lineTo(x + cell - 4, y + cell - 4);
      ctx.moveTo(x + cell - 4, y + 4);
      ctx.lineTo(x + 4, y + cell - 4);
      ctx.stroke();
      continue;
    }
    const o = (slot.key.row * COLS + slot.key.col) * 3;
    const [r, g, b] = [scene.rgb[o] ?? 0, scene.rgb[o + 1] ?? 0, scene.rgb[o + 2] ?? 0].map((c) => Math.round(255 * c));
    ctx.fillStyle = `rgb(${r}, ${g}, ${b})`;
    ctx.fillRect(x, y, cell, cell);
    const radius = 0.45 * cell * Math.sqrt(slot.w / wmax);
    ctx.beginPath();
    ctx.arc(x + cell / 2, y + cell / 2, radius, 0, 2 * Math.PI);
    ctx.fillStyle = 'rgba(255, 255, 255, 0.9)';
    ctx.fill();
    ctx.strokeStyle = '#222';
    ctx.lineWidth = 1;
    ctx.stroke();
    if (slot.key.row === row && slot.key.col === col) {
      ctx.strokeStyle = '#00e5ff';
      ctx.lineWidth = 2;
      ctx.strokeRect(x + 1, y + 1, cell - 2, cell - 2);
    }
  }
  ctx.strokeStyle = 'rgba(0, 0, 0, 0.25)';
  ctx.lineWidth = 1;
  for (let i = 0; i <= K; i++) {
    ctx.beginPath();
    ctx.moveTo(i * cell + 0.5, 0);
    ctx.lineTo(i * cell + 0.5, K * cell);
    ctx.moveTo(0, i * cell + 0.5);
    ctx.lineTo(K * cell, i * cell + 0.5);
    ctx.stroke();
  }
}

image.canvas.addEventListener('click', (ev) => {
  const rect = image.canvas.getBoundingClientRect();
  const col = Math.floor(((ev.clientX - rect.left) / rect.width) * COLS);
  const row = Math.floor(((ev.clientY - rect.top) / rect.height) * ROWS);
  selected = [Math.min(ROWS - 1, Math.max(0, row)), Math.min(COLS - 1, Math.max(0, col))];
  renderSelection();
});
$input('head').addEventListener('change', () => renderSelection());
$('run').addEventListener('click', () => void runOnce());

async function start(): Promise<void> {
  configure({ notice: (m) => notice(m) });
  drawScaled(image, inputBitmap);
  $('library').textContent = `natten-web ${VERSION}`;
  try {
    await detectWebGpu();
  } catch (e) {
    console.error(e);
    setStatus('error', `error while looking for WebGPU: ${e instanceof Error ? e.message : String(e)}`);
    return;
  }
  await runOnce();
}

void start();
