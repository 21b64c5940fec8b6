import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { buildMatrix, formatCell, parseSupportFile, renderMatrix, supportReport } from '../src/support-matrix.ts';

const dir = mkdtempSync(join(tmpdir(), 'support-matrix-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const jsonl = [
  { op: 'na2d', rank: 2, dtype: 'f32', backend: 'gpu', case: 'a' },
  { op: 'na1d', rank: 1, dtype: 'f32', backend: 'cpu', case: 'a' },
  { op: 'na1d', rank: 1, dtype: 'f32', backend: 'cpu', case: 'b' },
  { op: 'na2d', rank: 2, dtype: 'f16', backend: 'gpu', status: 'failed', case: 'c' },
  { op: 'na2d', rank: 2, dtype: 'f16', backend: 'gpu', status: 'passed', case: 'd' },
  { op: 'attention', dtype: 'f32', backend: 'cpu' },
]
  .map((r) => JSON.stringify(r))
  .join('\n');

describe('support matrix', () => {
  it('renders one row per op and rank and one column per backend and dtype, from JSON Lines', () => {
    const matrix = buildMatrix(parseSupportFile(jsonl, 'x'));
    expect(renderMatrix(matrix, false)).toBe(
      [
        'op         rank  cpu f32  gpu f32  gpu f16',
        '---------  ----  -------  -------  --------',
        'na1d       1     ok 2     -        -',
        'na2d       2     -        ok 1     FAIL 1/2',
        'attention  -     ok 1     -        -',
      ].join('\n'),
    );
    expect(renderMatrix(matrix, true).split('\n')[2]).toBe('| na1d | 1 | ok 2 | - | - |');
  });

  it('reads a JSON array and a {records} object the same way as JSON Lines', () => {
    const records = parseSupportFile(jsonl, 'x');
    const lines = jsonl.split('\n').map((l) => JSON.parse(l) as unknown);
    expect(parseSupportFile(JSON.stringify(lines), 'x')).toEqual(records);
    expect(parseSupportFile(JSON.stringify({ records: lines }), 'x')).toEqual(records);
  });

  it('rejects malformed records with the line and the field', () => {
    expect(() => parseSupportFile('{"op":"na1d","rank":1,"dtype":"f32","backend":"cpu"}\n{"op":"na1d","rank":4,"dtype":"f32","backend":"cpu"}', 'f.jsonl')).toThrow(
      'f.jsonl:2: "rank" must be 1, 2, 3, null or absent, got 4',
    );
    expect(() => parseSupportFile('{"op":"na1d","dtype":"f32"}', 'f.jsonl')).toThrow('f.jsonl:1: "backend" must be a non-empty string, got undefined');
    expect(() => parseSupportFile('{"op":"na1d","dtype":"f32","backend":"cpu","status":"ok"}', 'f')).toThrow('"status" must be "passed" or "failed", got "ok"');
    expect(() => parseSupportFile('{"op":"na1d"\nnot json', 'f')).toThrow(/^f:1: not JSON/);
  });

  it('says nothing was recorded when the file is missing, empty or unnamed, and never invents rows', () => {
    const missing = supportReport(join(dir, 'none.jsonl'), false);
    expect(missing.ok).toBe(true);
    expect(missing.text).toMatch(/^support matrix: nothing recorded \(.*none\.jsonl does not exist: no conformance test wrote it\)$/);
    const empty = join(dir, 'empty.jsonl');
    writeFileSync(empty, '');
    expect(supportReport(empty, false).text).toMatch(/nothing recorded \(.*empty\.jsonl is empty\)$/);
    expect(supportReport(undefined, false).text).toBe('support matrix: nothing recorded (NATTEN_WEB_SUPPORT_OUT is not set and no file was given)');
  });

  it('reports a malformed file as not ok', () => {
    const bad = join(dir, 'bad.jsonl');
    writeFileSync(bad, '{"op":1}\n');
    const report = supportReport(bad, false);
    expect(report.ok).toBe(false);
    expect(report.text).toContain('"op" must be a non-empty string, got 1');
  });

  it('titles the matrix with the record count', () => {
    const file = join(dir, 'ok.jsonl');
    writeFileSync(file, jsonl);
    const report = supportReport(file, false);
    expect(report.ok).toBe(true);
    expect(report.text.split('\n')[0]).toMatch(/ok\.jsonl, 6 records:$/);
  });

  it('formats cells', () => {
    expect(formatCell(undefined)).toBe('-');
    expect(formatCell({ passed: 3, failed: 0 })).toBe('ok 3');
    expect(formatCell({ passed: 3, failed: 1 })).toBe('FAIL 1/4');
  });
});
