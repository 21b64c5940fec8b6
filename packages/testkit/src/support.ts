import type { DType, NaRank } from '@natten-web/core';

/**
 * The support record: which (op, rank, dtype) combinations a backend's conformance run actually
 * passed. When `NATTEN_WEB_SUPPORT_OUT` names a file, every finished case appends one JSON line
 * (JSON Lines: safe for parallel test processes, and runs of several backends merge by appending):
 *   {"op":"na2d_forward","rank":2,"dtype":"f32","backend":"gpu","status":"passed","case":"na2d_forward f32 sp=..."}
 * This is the format `tools/src/support-matrix.ts` (`pnpm support-matrix`) reads.
 * Excluded cases are not recorded: they never ran.
 */

/** The env var naming the support-record file. */
export const SUPPORT_OUT_ENV = 'NATTEN_WEB_SUPPORT_OUT';

export interface SupportRecord {
  /** NATTEN's op name, `na2d_forward`. */
  readonly op: string;
  readonly rank: NaRank;
  /** `f64`, `f32` or `f16`. */
  readonly dtype: string;
  readonly backend: string;
  readonly status: 'passed' | 'failed';
  readonly case: string;
}

const DTYPE_ABBR: Record<DType, string> = { float64: 'f64', float32: 'f32', float16: 'f16' };

export function dtypeAbbr(dtype: DType): string {
  return DTYPE_ABBR[dtype];
}

export function supportLine(record: SupportRecord): string {
  return `${JSON.stringify(record)}\n`;
}

/** Append records to the support file (creating its folder). */
export function appendSupportRecords(path: string, records: readonly SupportRecord[]): void {
  if (records.length === 0) return;
  // node:fs through getBuiltinModule (Node >= 20.16), so the testkit also bundles for Deno and browsers,
  // where this file is never written.
  const fs = process.getBuiltinModule('node:fs');
  const slash = path.lastIndexOf('/');
  if (slash > 0) fs.mkdirSync(path.slice(0, slash), { recursive: true });
  fs.appendFileSync(path, records.map(supportLine).join(''));
}

/** Parse a support file back (for tests and tools); blank lines are ignored. */
export function parseSupportRecords(text: string): SupportRecord[] {
  return text
    .split(/\r?\n/)
    .filter((line) => line.trim() !== '')
    .map((line) => JSON.parse(line) as SupportRecord);
}

/** Per (op, dtype): passed / failed counts, and whether the combination passed (all ran cases passed). */
export function summarizeSupport(
  records: readonly SupportRecord[],
): Record<string, Record<string, Record<string, { passed: number; failed: number; ok: boolean }>>> {
  const out: Record<string, Record<string, Record<string, { passed: number; failed: number; ok: boolean }>>> = {};
  for (const r of records) {
    const byOp = out[r.backend] ?? (out[r.backend] = {});
    const byDtype = byOp[r.op] ?? (byOp[r.op] = {});
    const cell = byDtype[r.dtype] ?? (byDtype[r.dtype] = { passed: 0, failed: 0, ok: false });
    if (r.status === 'passed') cell.passed++;
    else cell.failed++;
    cell.ok = cell.failed === 0 && cell.passed > 0;
  }
  return out;
}
