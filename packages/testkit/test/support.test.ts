import { existsSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  appendSupportRecords,
  buildCases,
  createOracleBackend,
  defineNaConformance,
  parseSupportRecords,
  SUPPORT_OUT_ENV,
  type SupportRecord,
  summarizeSupport,
} from '../src/index.ts';

describe('support records (JSON Lines)', () => {
  const file = join(tmpdir(), `natten-web-support-unit-${process.pid}.jsonl`);
  afterAll(() => rmSync(file, { force: true }));

  it('appends one line per record, merges runs by appending, and summarizes per (op, dtype)', () => {
    rmSync(file, { force: true });
    const rec = (status: 'passed' | 'failed', dtype = 'f32', backend = 'cpu'): SupportRecord => ({
      op: 'na2d_forward',
      rank: 2,
      dtype,
      backend,
      status,
      case: 'k',
    });
    appendSupportRecords(file, [rec('passed'), rec('passed', 'f16')]);
    appendSupportRecords(file, [rec('failed', 'f16'), rec('passed', 'f32', 'gpu')]);
    const text = readFileSync(file, 'utf8');
    expect(text.trim().split('\n')).toHaveLength(4);
    const records = parseSupportRecords(text);
    expect(records[0]).toEqual(rec('passed'));
    const s = summarizeSupport(records);
    expect(s.cpu?.na2d_forward?.f32).toEqual({ passed: 1, failed: 0, ok: true });
    expect(s.cpu?.na2d_forward?.f16).toEqual({ passed: 1, failed: 1, ok: false });
    expect(s.gpu?.na2d_forward?.f32?.ok).toBe(true);
  });
});

// defineNaConformance itself writes the records when NATTEN_WEB_SUPPORT_OUT is set (restored afterwards).
const suiteFile = join(tmpdir(), `natten-web-support-suite-${process.pid}.jsonl`);
const previous = process.env[SUPPORT_OUT_ENV];
rmSync(suiteFile, { force: true });
process.env[SUPPORT_OUT_ENV] = suiteFile;
const selfCases = [
  ...buildCases({ ops: ['forward'], ranks: [1], dtypes: ['float32'] }).slice(0, 2),
  ...buildCases({ ops: ['av_backward'], ranks: [3], dtypes: ['float16'] }).slice(0, 1),
];
defineNaConformance({ name: 'oracle-self', makeBackend: async () => createOracleBackend(), dtypes: ['float32', 'float16'], cases: selfCases });

describe('defineNaConformance support output', () => {
  afterAll(() => {
    if (previous === undefined) delete process.env[SUPPORT_OUT_ENV];
    else process.env[SUPPORT_OUT_ENV] = previous;
    rmSync(suiteFile, { force: true });
  });

  it('recorded every case that ran, with op, rank, dtype, backend and status', () => {
    expect(existsSync(suiteFile)).toBe(true);
    const records = parseSupportRecords(readFileSync(suiteFile, 'utf8'));
    expect(records.map((r) => r.case)).toEqual(selfCases.map((c) => c.key));
    expect(records[0]).toMatchObject({ op: 'na1d_forward', rank: 1, dtype: 'f32', backend: 'oracle-self', status: 'passed' });
    expect(records[2]).toMatchObject({ op: 'na3d_av_backward', rank: 3, dtype: 'f16', status: 'passed' });
  });
});
