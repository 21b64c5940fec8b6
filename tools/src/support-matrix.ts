/**
 * Prints the op x rank x dtype x backend support matrix from what the tests actually ran.
 *
 * Input: the file named by `NATTEN_WEB_SUPPORT_OUT` (or the first argument). The conformance suite
 * (packages/testkit) appends one JSON object per line (JSON Lines, safe for parallel test processes):
 *   {"op":"na2d","rank":2,"dtype":"f32","backend":"gpu","status":"passed","case":"k3-d1-..."}
 * `status` is "passed" (default when absent) or "failed"; `rank` may be omitted or null for rank-free
 * ops such as `attention`; `case` is optional. A whole-file JSON array of such records, or an object
 * `{ "records": [...] }`, is read as well.
 *
 * Usage: `pnpm support-matrix [file] [--markdown]`. A missing file prints that nothing was recorded (exit 0);
 * a malformed record exits 1.
 */
import { existsSync, readFileSync } from 'node:fs';
import { relative, resolve } from 'node:path';
import { isMain } from './workspace.ts';

export type SupportStatus = 'passed' | 'failed';

export interface SupportRecord {
  readonly op: string;
  readonly rank: number | null;
  readonly dtype: string;
  readonly backend: string;
  readonly status: SupportStatus;
}

export interface SupportCell {
  readonly passed: number;
  readonly failed: number;
}

export interface SupportMatrix {
  readonly rows: readonly { readonly op: string; readonly rank: number | null }[];
  readonly columns: readonly { readonly backend: string; readonly dtype: string }[];
  readonly cells: ReadonlyMap<string, SupportCell>;
  readonly records: number;
}

const OP_ORDER = ['na1d', 'na2d', 'na3d', 'attention', 'mergeAttentions', 'qk', 'av'];
const BACKEND_ORDER = ['cpu', 'gpu', 'browser', 'deno'];
const DTYPE_ORDER = ['f64', 'f32', 'f16'];

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Validates one parsed record; throws with the reason when it is malformed. */
export function toRecord(value: unknown, where: string): SupportRecord {
  if (!isObject(value)) throw new Error(`${where}: expected an object, got ${JSON.stringify(value)}`);
  const { op, rank, dtype, backend, status } = value;
  for (const [key, field] of [['op', op], ['dtype', dtype], ['backend', backend]] as const) {
    if (typeof field !== 'string' || field.length === 0) {
      throw new Error(`${where}: "${key}" must be a non-empty string, got ${JSON.stringify(field)}`);
    }
  }
  if (rank !== undefined && rank !== null && !(rank === 1 || rank === 2 || rank === 3)) {
    throw new Error(`${where}: "rank" must be 1, 2, 3, null or absent, got ${JSON.stringify(rank)}`);
  }
  if (status !== undefined && status !== 'passed' && status !== 'failed') {
    throw new Error(`${where}: "status" must be "passed" or "failed", got ${JSON.stringify(status)}`);
  }
  return {
    op: String(op),
    rank: typeof rank === 'number' ? rank : null,
    dtype: String(dtype),
    backend: String(backend),
    status: status === 'failed' ? 'failed' : 'passed',
  };
}

/** Parses JSON Lines, a JSON array, or `{records: [...]}`. */
export function parseSupportFile(text: string, name: string): SupportRecord[] {
  const trimmed = text.trim();
  if (trimmed === '') return [];
  let whole: unknown;
  try {
    whole = JSON.parse(trimmed);
  } catch {
    whole = undefined;
  }
  if (Array.isArray(whole)) return whole.map((r, i) => toRecord(r, `${name}[${i}]`));
  if (isObject(whole) && Array.isArray(whole.records)) {
    return whole.records.map((r: unknown, i: number) => toRecord(r, `${name}.records[${i}]`));
  }
  const records: SupportRecord[] = [];
  trimmed.split(/\r?\n/).forEach((line, i) => {
    if (line.trim() === '') return;
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch (err) {
      throw new Error(`${name}:${i + 1}: not JSON (${(err as Error).message})`);
    }
    records.push(toRecord(value, `${name}:${i + 1}`));
  });
  return records;
}

function orderBy(order: readonly string[]) {
  return (a: string, b: string): number => {
    const ia = order.indexOf(a);
    const ib = order.indexOf(b);
    if (ia !== ib) return (ia === -1 ? order.length : ia) - (ib === -1 ? order.length : ib);
    return a.localeCompare(b);
  };
}

const rowKey = (op: string, rank: number | null): string => `${op}\u0000${rank ?? ''}`;
const cellKey = (op: string, rank: number | null, backend: string, dtype: string): string =>
  `${rowKey(op, rank)}\u0000${backend}\u0000${dtype}`;

export function buildMatrix(records: readonly SupportRecord[]): SupportMatrix {
  const rows = new Map<string, { op: string; rank: number | null }>();
  const columns = new Map<string, { backend: string; dtype: string }>();
  const cells = new Map<string, { passed: number; failed: number }>();
  for (const r of records) {
    rows.set(rowKey(r.op, r.rank), { op: r.op, rank: r.rank });
    columns.set(`${r.backend}\u0000${r.dtype}`, { backend: r.backend, dtype: r.dtype });
    const key = cellKey(r.op, r.rank, r.backend, r.dtype);
    const cell = cells.get(key) ?? { passed: 0, failed: 0 };
    if (r.status === 'passed') cell.passed += 1;
    else cell.failed += 1;
    cells.set(key, cell);
  }
  const byOp = orderBy(OP_ORDER);
  const byBackend = orderBy(BACKEND_ORDER);
  const byDtype = orderBy(DTYPE_ORDER);
  return {
    rows: [...rows.values()].sort((a, b) => byOp(a.op, b.op) || (a.rank ?? 0) - (b.rank ?? 0)),
    columns: [...columns.values()].sort((a, b) => byBackend(a.backend, b.backend) || byDtype(a.dtype, b.dtype)),
    cells,
    records: records.length,
  };
}

/** `ok N` (N passing cases), `FAIL f/N` (f of N failed), `-` (never ran). */
export function formatCell(cell: SupportCell | undefined): string {
  if (cell === undefined) return '-';
  const total = cell.passed + cell.failed;
  return cell.failed === 0 ? `ok ${total}` : `FAIL ${cell.failed}/${total}`;
}

export function renderMatrix(matrix: SupportMatrix, markdown: boolean): string {
  const header = ['op', 'rank', ...matrix.columns.map((c) => `${c.backend} ${c.dtype}`)];
  const body = matrix.rows.map((row) => [
    row.op,
    row.rank === null ? '-' : String(row.rank),
    ...matrix.columns.map((c) => formatCell(matrix.cells.get(cellKey(row.op, row.rank, c.backend, c.dtype)))),
  ]);
  if (markdown) {
    const line = (cells: readonly string[]): string => `| ${cells.join(' | ')} |`;
    return [line(header), line(header.map(() => '---')), ...body.map(line)].join('\n');
  }
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]): string => cells.map((c, i) => c.padEnd(widths[i] ?? 0)).join('  ').trimEnd();
  return [line(header), line(widths.map((w) => '-'.repeat(w))), ...body.map(line)].join('\n');
}

/** The whole report for `file` (undefined: no file named), and whether it is well-formed. */
export function supportReport(file: string | undefined, markdown: boolean): { text: string; ok: boolean } {
  if (file === undefined || file === '') {
    return { text: 'support matrix: nothing recorded (NATTEN_WEB_SUPPORT_OUT is not set and no file was given)', ok: true };
  }
  const rel = relative(process.cwd(), file);
  const shown = rel === '' || rel.startsWith('..') ? file : rel;
  if (!existsSync(file)) {
    return { text: `support matrix: nothing recorded (${shown} does not exist: no conformance test wrote it)`, ok: true };
  }
  let records: SupportRecord[];
  try {
    records = parseSupportFile(readFileSync(file, 'utf8'), shown);
  } catch (err) {
    return { text: `support matrix: ${(err as Error).message}`, ok: false };
  }
  if (records.length === 0) {
    return { text: `support matrix: nothing recorded (${shown} is empty)`, ok: true };
  }
  const matrix = buildMatrix(records);
  const title = `Support matrix (op x rank x backend dtype; ok N = N cases passed, FAIL f/N = f of N failed, - = not run) from ${shown}, ${records.length} records:`;
  return { text: `${title}\n${renderMatrix(matrix, markdown)}`, ok: true };
}

if (isMain(import.meta.url)) {
  const args = process.argv.slice(2);
  const markdown = args.includes('--markdown');
  const fileArg = args.find((a) => !a.startsWith('--'));
  const file = fileArg ?? process.env.NATTEN_WEB_SUPPORT_OUT;
  const { text, ok } = supportReport(file === undefined || file === '' ? undefined : resolve(file), markdown);
  console.log(text);
  process.exitCode = ok ? 0 : 1;
}
