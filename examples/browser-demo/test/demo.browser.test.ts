/**
 * The browser demo in headless Chromium: build the page, serve it from http://localhost (WebGPU needs a secure
 * context), drive it with playwright-core, and check what it prints against core's window math.
 *
 * Needs Debian's chromium at /usr/bin/chromium (or NATTEN_WEB_CHROMIUM). A missing browser or a missing WebGPU
 * adapter fails the test, never skips it. The adapter line must match NATTEN_WEB_BROWSER_ADAPTER (a regular
 * expression, default 'swiftshader': what that chromium gives on a machine without a GPU).
 */
import { existsSync, mkdirSync } from 'node:fs';
import { createServer } from 'node:net';
import { join, resolve } from 'node:path';
import { axisWindow } from '@natten-web/core';
import { type Browser, chromium, type Page } from 'playwright-core';
import { build, preview, type PreviewServer } from 'vite';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const PKG_DIR = resolve(import.meta.dirname, '..');
const CONFIG = join(PKG_DIR, 'vite.config.ts');
const OUT_DIR = join(PKG_DIR, 'out');
const CHROMIUM = process.env.NATTEN_WEB_CHROMIUM ?? '/usr/bin/chromium';
const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
  '--enable-unsafe-webgpu',
];
/** What the adapter line must mention: Debian's chromium with --enable-unsafe-webgpu gives SwiftShader. */
const EXPECTED_ADAPTER = new RegExp(process.env.NATTEN_WEB_BROWSER_ADAPTER ?? 'swiftshader', 'i');
/** One demo run (GPU warm-up + timed runs, CPU runs) on SwiftShader and 2 shared cores. */
const RUN_TIMEOUT_MS = 40_000;

let server: PreviewServer | undefined;
let browser: Browser | undefined;
let page: Page | undefined;
let baseUrl = '';
const pageErrors: string[] = [];
/** A set-up failure (no chromium, build error) is rethrown by every test, so each one FAILS rather than skips. */
let setupError: unknown;

function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const srv = createServer();
    srv.once('error', rej);
    srv.listen(0, 'localhost', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr !== null ? addr.port : 0;
      srv.close(() => (port > 0 ? res(port) : rej(new Error('could not find a free port'))));
    });
  });
}

/** Resolve `p`, or give up after `ms` (cleanup must never hang the run). */
function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T | undefined> {
  return Promise.race([
    p,
    new Promise<undefined>((res) =>
      setTimeout(() => {
        console.warn(`[browser-demo test] ${what} did not finish within ${ms} ms`);
        res(undefined);
      }, ms).unref(),
    ),
  ]);
}

function thePage(): Page {
  if (setupError !== undefined) throw setupError;
  if (!page) throw new Error('the page was not opened (see beforeAll)');
  return page;
}

async function attr(selector: string, name: string): Promise<string> {
  const v = await thePage().getAttribute(selector, name);
  if (v === null) throw new Error(`${selector} has no ${name} attribute`);
  return v;
}

async function numAttr(selector: string, name: string): Promise<number> {
  const v = Number(await attr(selector, name));
  if (!Number.isFinite(v)) throw new Error(`${selector}[${name}] is not a number`);
  return v;
}

/** Wait until the run numbered `run` has finished (`#status` done or error), and fail on error. */
async function waitForRun(run: number): Promise<void> {
  const p = thePage();
  await p.waitForFunction(
    (n) => {
      const el = document.getElementById('status');
      return el !== null && Number(el.dataset.run) >= n && (el.dataset.state === 'done' || el.dataset.state === 'error');
    },
    run,
    { timeout: RUN_TIMEOUT_MS },
  );
  const state = await attr('#status', 'data-state');
  if (state !== 'done') throw new Error(`demo run ${run} failed: ${await p.textContent('#status')}`);
}

/** Click the centre of image pixel (row, col) on the canvas. */
async function clickPixel(row: number, col: number): Promise<void> {
  const p = thePage();
  const rows = await numAttr('#image', 'data-rows');
  const cols = await numAttr('#image', 'data-cols');
  const box = await p.locator('#image').boundingBox();
  if (!box) throw new Error('#image canvas is not visible');
  const before = Number((await p.getAttribute('#window-info', 'data-clicks')) ?? '0');
  await p.mouse.click(box.x + ((col + 0.5) * box.width) / cols, box.y + ((row + 0.5) * box.height) / rows);
  await p.waitForFunction((n) => Number(document.getElementById('window-info')?.dataset.clicks ?? '0') > n, before, {
    timeout: 10_000,
  });
}

interface Params {
  readonly kernelSize: number;
  readonly dilation: number;
  readonly causal: readonly [boolean, boolean];
}

/** Read `#window-info` for the clicked pixel and compare it with core's axisWindow. */
async function checkWindow(row: number, col: number, params: Params): Promise<void> {
  const rows = await numAttr('#image', 'data-rows');
  const cols = await numAttr('#image', 'data-cols');
  expect(await numAttr('#window-info', 'data-row')).toBe(row);
  expect(await numAttr('#window-info', 'data-col')).toBe(col);
  expect(await numAttr('#window-info', 'data-kernel-size')).toBe(params.kernelSize);
  expect(await numAttr('#window-info', 'data-dilation')).toBe(params.dilation);
  const axes = [
    { coord: row, length: rows, name: 'row', causal: params.causal[0] },
    { coord: col, length: cols, name: 'col', causal: params.causal[1] },
  ] as const;
  let keys = 1;
  for (const a of axes) {
    const w = axisWindow(a.coord, {
      length: a.length,
      kernelSize: params.kernelSize,
      dilation: params.dilation,
      causal: a.causal,
      stride: 1,
    });
    expect(await numAttr('#window-info', `data-${a.name}-start`), `${a.name} start`).toBe(w.start);
    expect(await numAttr('#window-info', `data-${a.name}-count`), `${a.name} count`).toBe(w.count);
    keys *= w.count;
  }
  expect(await numAttr('#window-info', 'data-keys')).toBe(keys);
  // The overlay's weights are a softmax over exactly those keys, and weighting V with them gives the output.
  expect(Math.abs((await numAttr('#window-info', 'data-weight-sum')) - 1)).toBeLessThan(1e-5);
  expect(await numAttr('#window-check', 'data-value')).toBeLessThan(1e-4);
}

async function setControls(params: Params): Promise<void> {
  const p = thePage();
  await p.selectOption('#kernel-size', String(params.kernelSize));
  await p.selectOption('#dilation', String(params.dilation));
  await p.setChecked('#causal-rows', params.causal[0]);
  await p.setChecked('#causal-cols', params.causal[1]);
}

async function setUp(): Promise<void> {
  if (!existsSync(CHROMIUM)) {
    throw new Error(
      `chromium not found at ${CHROMIUM}: install it (apt-get install -y --no-install-recommends chromium, see tools/setup.sh) or set NATTEN_WEB_CHROMIUM`,
    );
  }
  const t0 = performance.now();
  await build({ configFile: CONFIG, logLevel: 'warn' });
  const port = await freePort();
  server = await preview({ configFile: CONFIG, logLevel: 'warn', preview: { port, strictPort: true, host: 'localhost' } });
  baseUrl = `http://localhost:${port}/`;
  const t1 = performance.now();
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
  page = await browser.newPage({ viewport: { width: 1120, height: 780 } });
  page.on('pageerror', (err) => pageErrors.push(err.message));
  page.on('console', (msg) => {
    if (msg.type() === 'error') pageErrors.push(`console.error: ${msg.text()}`);
  });
  console.log(`[browser-demo test] build+preview ${(t1 - t0).toFixed(0)} ms, chromium ${(performance.now() - t1).toFixed(0)} ms, ${baseUrl}`);
}

describe('browser demo (headless Chromium, WebGPU)', () => {
  beforeAll(async () => {
    try {
      await setUp();
    } catch (e) {
      setupError = e;
    }
  });

  afterAll(async () => {
    if (page) await withTimeout(page.close(), 5_000, 'page.close');
    if (browser) await withTimeout(browser.close(), 10_000, 'browser.close');
    if (server) await withTimeout(server.close(), 5_000, 'preview server close');
  });

  it('runs NA on WebGPU and on the CPU backend, and they agree', async () => {
    const p = thePage();
    const t0 = performance.now();
    await p.goto(baseUrl);
    await waitForRun(1);
    const adapter = (await p.textContent('#adapter')) ?? '';
    console.log(`[browser-demo test] first run ${(performance.now() - t0).toFixed(0)} ms; adapter: ${adapter}`);
    console.log(`[browser-demo test] ${await p.textContent('#problem')}`);
    console.log(`[browser-demo test] WebGPU: ${await p.textContent('#timing-gpu')}`);
    console.log(`[browser-demo test] CPU: ${await p.textContent('#timing-cpu')}`);
    console.log(`[browser-demo test] max diff: ${await p.textContent('#max-diff')}`);
    // No adapter means a CPU-only page: that is a failure here, never a skip.
    expect(await attr('#adapter', 'data-webgpu'), `no WebGPU adapter: ${adapter}`).toBe('yes');
    expect(adapter).toMatch(/WebGPU/);
    expect(adapter).toMatch(EXPECTED_ADAPTER);
    expect(await numAttr('#timing-gpu', 'data-ms')).toBeGreaterThan(0);
    expect(await numAttr('#timing-cpu', 'data-ms')).toBeGreaterThan(0);
    const diff = await numAttr('#max-diff', 'data-value');
    expect(diff).toBeGreaterThanOrEqual(0);
    expect(diff).toBeLessThan(1e-4);
    expect(pageErrors).toEqual([]);
  });

  it('shows the clicked query window that core window math predicts (border shift)', async () => {
    const rows = await numAttr('#image', 'data-rows');
    const cols = await numAttr('#image', 'data-cols');
    // A corner pixel: the K=7 window is pinned to the border on both axes.
    await clickPixel(1, cols - 2);
    await checkWindow(1, cols - 2, { kernelSize: 7, dilation: 1, causal: [false, false] });
    await clickPixel(Math.floor(rows / 2), Math.floor(cols / 3));
    await checkWindow(Math.floor(rows / 2), Math.floor(cols / 3), { kernelSize: 7, dilation: 1, causal: [false, false] });
    expect(pageErrors).toEqual([]);
  });

  it('reruns with dilation and causal rows, and the window follows', async () => {
    const p = thePage();
    const params: Params = { kernelSize: 9, dilation: 2, causal: [true, false] };
    await setControls(params);
    const run = (await numAttr('#status', 'data-run')) + 1;
    await p.click('#run');
    await waitForRun(run);
    console.log(`[browser-demo test] rerun K=9 d=2 causal=(T,F): GPU ${await p.textContent('#timing-gpu')}; CPU ${await p.textContent('#timing-cpu')}`);
    expect(await numAttr('#max-diff', 'data-value')).toBeLessThan(1e-4);
    const cols = await numAttr('#image', 'data-cols');
    // Row 4 with causal rows and d=2: group 0, group coordinate 2, so only 3 of 9 row slots are valid.
    await clickPixel(4, Math.floor(cols / 2));
    await checkWindow(4, Math.floor(cols / 2), params);
    expect(await numAttr('#window-info', 'data-row-count')).toBe(3);
    // A query on the rim of the sun (the picture in docs/demo.md).
    await clickPixel(40, 40);
    await checkWindow(40, 40, params);
    mkdirSync(OUT_DIR, { recursive: true });
    await p.screenshot({ path: join(OUT_DIR, 'demo.png') });
    expect(pageErrors).toEqual([]);
  });

  it('without WebGPU (?webgpu=off) says so and runs the CPU backend alone', async () => {
    const p = thePage();
    await p.goto(`${baseUrl}?webgpu=off&size=48`);
    await waitForRun(1);
    expect(await attr('#adapter', 'data-webgpu')).toBe('no');
    expect(await p.textContent('#adapter')).toMatch(/CPU backend only/);
    expect(await p.textContent('#timing-gpu')).toMatch(/no WebGPU/);
    expect(await p.getAttribute('#max-diff', 'data-value')).toBeNull();
    expect(await numAttr('#timing-cpu', 'data-ms')).toBeGreaterThan(0);
    await clickPixel(47, 0);
    await checkWindow(47, 0, { kernelSize: 7, dilation: 1, causal: [false, false] });
    expect(pageErrors).toEqual([]);
  });
});
