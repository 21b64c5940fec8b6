/**
 * Draws docs/img/window-2d.svg: 2-D neighborhood windows on a 9x12 token grid, for a few queries per panel,
 * computed with core's per-axis window math (`axisWindow`). Panels: K=3 with dilation 1 and 2, and K=3 causal
 * along rows only and along columns only. Below each grid, the query's K*K slots in row-major slot order;
 * a crossed slot is invalid (causal), which with causality along columns only interleaves with valid ones.
 *
 * Run: `pnpm docs:figures` (root), i.e. `tsx tools/gen-window-svg.ts [out.svg]`.
 */
import { writeFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type AxisWindow, axisWindow } from '@natten-web/core';

const ROWS = 9;
const COLS = 12;
const CELL = 22;
const SLOT = 16;
const PAD = 16;
const GAP = 36;
const TITLE_H = 44;

export interface Panel {
  readonly title: string;
  readonly kernelSize: number;
  readonly dilation: number;
  readonly causal: readonly [boolean, boolean];
  /** Queries as (row, col). */
  readonly queries: readonly (readonly [number, number])[];
}

export const PANELS: readonly Panel[] = [
  { title: 'K=3, dilation 1', kernelSize: 3, dilation: 1, causal: [false, false], queries: [[4, 5], [0, 11]] },
  { title: 'K=3, dilation 2', kernelSize: 3, dilation: 2, causal: [false, false], queries: [[4, 5], [8, 10]] },
  { title: 'K=3, causal (True, False)', kernelSize: 3, dilation: 1, causal: [true, false], queries: [[4, 8], [1, 2]] },
  { title: 'K=3, causal (False, True)', kernelSize: 3, dilation: 1, causal: [false, true], queries: [[2, 5], [6, 1]] },
];

const QUERY_COLOURS = [
  { strong: '#1f5fbf', light: '#b9d0f2' },
  { strong: '#c2571a', light: '#f6cfae' },
] as const;

/** One slot of a query's window: its row-major index, and the key it holds when valid. */
export interface Slot {
  readonly t: number;
  readonly valid: boolean;
  readonly row: number;
  readonly col: number;
}

/** The K*K slots of query (row, col), in slot order t = t0*K + t1, from core's axisWindow. */
export function querySlots(panel: Panel, row: number, col: number): { slots: Slot[]; windows: [AxisWindow, AxisWindow] } {
  const K = panel.kernelSize;
  const d = panel.dilation;
  const w0 = axisWindow(row, { length: ROWS, kernelSize: K, dilation: d, causal: panel.causal[0], stride: 1 });
  const w1 = axisWindow(col, { length: COLS, kernelSize: K, dilation: d, causal: panel.causal[1], stride: 1 });
  const slots: Slot[] = [];
  for (let t0 = 0; t0 < K; t0++) {
    for (let t1 = 0; t1 < K; t1++) {
      slots.push({ t: t0 * K + t1, valid: t0 < w0.count && t1 < w1.count, row: w0.start + t0 * d, col: w1.start + t1 * d });
    }
  }
  return { slots, windows: [w0, w1] };
}

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

function panelSvg(panel: Panel, x0: number, y0: number): string {
  const out: string[] = [];
  const gridW = COLS * CELL;
  const gridH = ROWS * CELL;
  out.push(`<text x="${x0 - 14}" y="${y0 + 12}" class="title">${esc(panel.title)}</text>`);
  const gy = y0 + TITLE_H - 16;
  // Column and row indices.
  for (let c = 0; c < COLS; c++) out.push(`<text x="${x0 + c * CELL + CELL / 2}" y="${gy - 4}" class="idx" text-anchor="middle">${c}</text>`);
  for (let r = 0; r < ROWS; r++) out.push(`<text x="${x0 - 4}" y="${gy + r * CELL + CELL / 2 + 3}" class="idx" text-anchor="end">${r}</text>`);
  // Key cells (under the grid lines), one colour per query; a cell in both windows is split diagonally.
  const owners = new Map<string, { colour: number; t: number }[]>();
  panel.queries.forEach(([qr, qc], qi) => {
    for (const s of querySlots(panel, qr, qc).slots) {
      if (!s.valid) continue;
      const key = `${s.row},${s.col}`;
      const list = owners.get(key) ?? [];
      list.push({ colour: qi, t: s.t });
      owners.set(key, list);
    }
  });
  for (const [key, list] of owners) {
    const [r, c] = key.split(',').map(Number) as [number, number];
    const cx = x0 + c * CELL;
    const cy = gy + r * CELL;
    const first = list[0];
    const second = list[1];
    if (first === undefined) continue;
    out.push(`<rect x="${cx}" y="${cy}" width="${CELL}" height="${CELL}" fill="${QUERY_COLOURS[first.colour % 2]?.light}"/>`);
    if (second !== undefined) {
      out.push(`<path d="M${cx + CELL},${cy} L${cx + CELL},${cy + CELL} L${cx},${cy + CELL} Z" fill="${QUERY_COLOURS[second.colour % 2]?.light}"/>`);
    }
    const label = list.map((o) => o.t).join('/');
    out.push(`<text x="${cx + CELL / 2}" y="${cy + CELL / 2 + 3}" class="slot" text-anchor="middle">${label}</text>`);
  }
  // Grid.
  for (let r = 0; r <= ROWS; r++) out.push(`<line x1="${x0}" y1="${gy + r * CELL}" x2="${x0 + gridW}" y2="${gy + r * CELL}" class="grid"/>`);
  for (let c = 0; c <= COLS; c++) out.push(`<line x1="${x0 + c * CELL}" y1="${gy}" x2="${x0 + c * CELL}" y2="${gy + gridH}" class="grid"/>`);
  // Queries: a thick outline, and a slot strip below the grid.
  let sy = gy + gridH + 12;
  panel.queries.forEach(([qr, qc], qi) => {
    const colour = QUERY_COLOURS[qi % 2]?.strong ?? '#000';
    out.push(
      `<rect x="${x0 + qc * CELL + 1.5}" y="${gy + qr * CELL + 1.5}" width="${CELL - 3}" height="${CELL - 3}" fill="none" stroke="${colour}" stroke-width="3"/>`,
    );
    const { slots, windows } = querySlots(panel, qr, qc);
    const [w0, w1] = windows;
    out.push(
      `<text x="${x0}" y="${sy + SLOT / 2 + 4}" class="label" fill="${colour}">q(${qr},${qc})</text>`,
    );
    const sx = x0 + 58;
    for (const s of slots) {
      const bx = sx + s.t * (SLOT + 2);
      if (s.valid) {
        out.push(`<rect x="${bx}" y="${sy}" width="${SLOT}" height="${SLOT}" fill="${QUERY_COLOURS[qi % 2]?.light}" stroke="${colour}"/>`);
      } else {
        out.push(`<rect x="${bx}" y="${sy}" width="${SLOT}" height="${SLOT}" fill="#fff" stroke="#999"/>`);
        out.push(`<path d="M${bx + 3},${sy + 3} L${bx + SLOT - 3},${sy + SLOT - 3} M${bx + SLOT - 3},${sy + 3} L${bx + 3},${sy + SLOT - 3}" stroke="#b00020" stroke-width="1.5"/>`);
      }
      out.push(`<text x="${bx + SLOT / 2}" y="${sy + SLOT / 2 + 3}" class="slot" text-anchor="middle">${s.t}</text>`);
    }
    const rowsText = `rows ${w0.start}+${panel.dilation}t, ${w0.count} valid`;
    const colsText = `cols ${w1.start}+${panel.dilation}t, ${w1.count} valid`;
    out.push(`<text x="${sx + panel.kernelSize * panel.kernelSize * (SLOT + 2) + 6}" y="${sy + SLOT / 2 + 4}" class="note">${rowsText}; ${colsText}</text>`);
    sy += SLOT + 8;
  });
  return out.join('\n');
}

/** The whole figure as SVG text (deterministic: same window math, same bytes). */
export function windowFigureSvg(): string {
  const panelW = 58 + 9 * (SLOT + 2) + 270;
  const panelH = TITLE_H + ROWS * CELL + 12 + 2 * (SLOT + 8) + PAD;
  const cols = 2;
  const rows = Math.ceil(PANELS.length / cols);
  const width = cols * panelW + GAP;
  const headH = 76;
  const footH = 48;
  const height = headH + rows * panelH + (rows - 1) * 12 + footH;
  const body: string[] = [];
  PANELS.forEach((p, i) => {
    const x = PAD + 14 + (i % cols) * (panelW + GAP);
    const y = headH + Math.floor(i / cols) * (panelH + 12);
    body.push(panelSvg(p, x, y));
  });
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="Helvetica, Arial, sans-serif">`,
    '<style>',
    '.title{font-size:15px;font-weight:bold;fill:#222}',
    '.idx{font-size:9px;fill:#888}',
    '.slot{font-size:9px;fill:#222}',
    '.label{font-size:12px;font-weight:bold}',
    '.note{font-size:11px;fill:#444}',
    '.head{font-size:17px;font-weight:bold;fill:#111}',
    '.sub{font-size:12px;fill:#444}',
    '.grid{stroke:#c8c8c8;stroke-width:1}',
    '</style>',
    `<rect width="${width}" height="${height}" fill="#fff"/>`,
    `<text x="${PAD}" y="24" class="head">2-D neighborhood windows on a ${ROWS}x${COLS} grid (rows x cols)</text>`,
    `<text x="${PAD}" y="42" class="sub">Outlined cell: the query. Shaded cells: its keys, labelled with their slot t = t0*K + t1 (row-major over the kernel).</text>`,
    `<text x="${PAD}" y="58" class="sub">Near a border the window shifts inward instead of shrinking; with dilation d a query sees only keys of its own residue (x mod d).</text>`,
    body.join('\n'),
    `<text x="${PAD}" y="${height - 36}" class="sub">Slot strips: the query's K*K slots in order; crossed = invalid causal slot (a key after the query on a causal axis).</text>`,
    `<text x="${PAD}" y="${height - 21}" class="sub">Causal along rows drops whole trailing rows of slots; causal along columns drops the trailing column of every row,</text>`,
    `<text x="${PAD}" y="${height - 6}" class="sub">so invalid slots interleave with valid ones. Computed with @natten-web/core's axisWindow (tools/gen-window-svg.ts).</text>`,
    '</svg>',
    '',
  ].join('\n');
}

const isMain = process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url);
if (isMain) {
  const target = resolve(process.argv[2] ?? resolve(dirname(fileURLToPath(import.meta.url)), '..', 'docs', 'img', 'window-2d.svg'));
  writeFileSync(target, windowFigureSvg());
  console.log(`wrote ${target}`);
}
