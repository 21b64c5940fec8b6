import { mkdirSync, readFileSync, renameSync, rmdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import type { DType } from '@natten-web/core';

/**
 * The support record: which (op, rank, dtype) combinations a backend's conformance run actually
 * passed. Written when `NATTEN_WEB_SUPPORT_OUT` names a file; several runs (backends, sizes, test
 * files) merge into one file, and a combination is replaced by the newest run that touched it.
 */

export const SUPPORT_SCHEMA_VERSION = 1;

export interface SupportCounts {
  readonly passed: number;
  readonly failed: number;
  /** Excluded through `exclusions` (unsupported features). */
  readonly excluded: number;
}

export type SupportStatus = 'pass' | 'fail' | 'excluded';

export interface SupportEntry extends SupportCounts {
  readonly status: SupportStatus;
  readonly size: string;
  readonly reference: string;
  readonly updatedAt: string;
}

export interface SupportFile {
  readonly schemaVersion: number;
  /** backend (suite name) -> `naXd_op` -> dtype -> entry. */
  readonly backends: Record<string, Record<string, Partial<Record<DType, SupportEntry>>>>;
}

export function supportStatus(c: SupportCounts): SupportStatus {
  if (c.failed > 0) return 'fail';
  return c.passed > 0 ? 'pass' : 'excluded';
}

/** Collects per-(op, dtype) counts during a run. */
export class SupportRecorder {
  private readonly counts = new Map<string, { op: string; dtype: DType; passed: number; failed: number; excluded: number }>();

  record(op: string, dtype: DType, outcome: 'passed' | 'failed' | 'excluded'): void {
    const k = `${op}/${dtype}`;
    const row = this.counts.get(k) ?? { op, dtype, passed: 0, failed: 0, excluded: 0 };
    row[outcome]++;
    this.counts.set(k, row);
  }

  entries(): { op: string; dtype: DType; counts: SupportCounts }[] {
    return [...this.counts.values()].map(({ op, dtype, passed, failed, excluded }) => ({ op, dtype, counts: { passed, failed, excluded } }));
  }

  get size(): number {
    return this.counts.size;
  }
}

/** Merge a run into a support file object (pure). */
export function mergeSupport(
  file: SupportFile | undefined,
  backend: string,
  run: ReturnType<SupportRecorder['entries']>,
  meta: { size: string; reference: string; updatedAt: string },
): SupportFile {
  const backends: SupportFile['backends'] = structuredClone(file?.backends ?? {});
  const ops = backends[backend] ?? (backends[backend] = {});
  for (const { op, dtype, counts } of run) {
    const row = ops[op] ?? (ops[op] = {});
    row[dtype] = { ...counts, status: supportStatus(counts), ...meta };
  }
  return { schemaVersion: SUPPORT_SCHEMA_VERSION, backends };
}

function sleep(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

function readSupport(path: string): SupportFile | undefined {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
  const parsed = JSON.parse(text) as SupportFile;
  if (parsed.schemaVersion !== SUPPORT_SCHEMA_VERSION) {
    throw new Error(`testkit: ${path} has schemaVersion ${String(parsed.schemaVersion)}, expected ${SUPPORT_SCHEMA_VERSION}`);
  }
  return parsed;
}

/** Read-merge-write under a lock directory (test files run in parallel processes), atomically renamed into place. */
export function writeSupport(
  path: string,
  backend: string,
  run: ReturnType<SupportRecorder['entries']>,
  meta: { size: string; reference: string },
): SupportFile {
  mkdirSync(dirname(path), { recursive: true });
  const lock = `${path}.lock`;
  for (let attempt = 0; ; attempt++) {
    try {
      mkdirSync(lock);
      break;
    } catch (e) {
      if (attempt > 200) throw new Error(`testkit: could not lock ${lock} (stale lock? remove it)`, { cause: e });
      sleep(25);
    }
  }
  try {
    const merged = mergeSupport(readSupport(path), backend, run, { ...meta, updatedAt: new Date().toISOString() });
    const tmp = `${path}.${process.pid}.tmp`;
    writeFileSync(tmp, `${JSON.stringify(merged, null, 2)}\n`);
    renameSync(tmp, path);
    return merged;
  } finally {
    rmdirSync(lock);
  }
}
