import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { cleanReports, collectTotals, formatTotals, isGreen, REPORT_FILE } from '../src/ci-totals.ts';
import type { WorkspaceMember } from '../src/workspace.ts';

const root = mkdtempSync(join(tmpdir(), 'ci-totals-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

const VITEST = `vitest run --reporter=default --reporter=json --outputFile=${REPORT_FILE}`;

function member(dir: string, report: object | string | undefined, test: string | null = VITEST): WorkspaceMember {
  const absDir = join(root, dir);
  mkdirSync(absDir, { recursive: true });
  rmSync(join(absDir, REPORT_FILE), { force: true });
  if (report !== undefined) {
    writeFileSync(join(absDir, REPORT_FILE), typeof report === 'string' ? report : JSON.stringify(report));
  }
  return { name: `@x/${dir}`, dir, absDir, manifest: test === null ? {} : { scripts: { test } } };
}

const file = (name: string, ...statuses: string[]) => ({
  name,
  startTime: 1000,
  endTime: 3500,
  status: statuses.includes('failed') ? 'failed' : 'passed',
  message: '',
  assertionResults: statuses.map((status) => ({ status })),
});
const green = {
  numPassedTests: 5,
  numFailedTests: 0,
  numPendingTests: 1,
  numTodoTests: 1,
  numTotalTestSuites: 3,
  numFailedTestSuites: 0,
  startTime: 2000,
  success: true,
  testResults: [file('/r/x.test.ts', 'passed', 'passed', 'pending'), file('/r/y.test.ts', 'passed', 'passed', 'passed', 'todo')],
};

describe('ci totals', () => {
  it('sums passed, failed and skipped (pending + todo) over members', () => {
    const totals = collectTotals([member('a', green), member('b', { ...green, numPassedTests: 3, numPendingTests: 0, numTodoTests: 0 })]);
    expect(isGreen(totals)).toBe(true);
    expect(formatTotals(totals).split('\n')).toEqual([
      '  @x/a: 5 passed, 0 failed, 2 skipped (2 files, 2.5 s)',
      '  @x/b: 3 passed, 0 failed, 0 skipped (2 files, 2.5 s)',
      '8 passed, 0 failed, 2 skipped',
    ]);
  });

  it('is red when a test fails', () => {
    const failing = { ...green, numFailedTests: 2, numFailedTestSuites: 1, success: false, testResults: [file('/r/z.test.ts', 'passed', 'failed', 'failed')] };
    const totals = collectTotals([member('a', failing)]);
    expect(totals.problems).toEqual([]);
    expect(isGreen(totals)).toBe(false);
    expect(formatTotals(totals).split('\n').at(-1)).toBe('5 passed, 2 failed, 2 skipped');
  });

  it('is red when a test file fails to load, even with no failed test', () => {
    const broken = { name: '/r/b.test.ts', status: 'failed', message: "Cannot find module './nope.ts'\nmore", assertionResults: [] };
    const report = { ...green, numFailedTestSuites: 1, success: false, testResults: [...green.testResults, broken] };
    const totals = collectTotals([member('a', report)]);
    expect(isGreen(totals)).toBe(false);
    expect(totals.problems).toEqual(["@x/a: test file /r/b.test.ts failed outside any test: Cannot find module './nope.ts'"]);
    expect(formatTotals(totals).split('\n')[0]).toBe('  @x/a: 5 passed, 0 failed, 2 skipped (3 files, 1 broken, 2.5 s)');
  });

  it('is red when vitest reports failed suites or success=false without a failed test', () => {
    const totals = collectTotals([member('a', { ...green, numFailedTestSuites: 1, success: false })]);
    expect(isGreen(totals)).toBe(false);
    expect(totals.problems).toEqual(['@x/a: vitest reported 1 failed suite(s), success=false']);
  });

  it('is red when an expected report is missing, unreadable or stale', () => {
    const totals = collectTotals([member('a', green), member('b', undefined), member('c', '{"numPassed'), member('d', { ...green, startTime: 10 })], 1000);
    expect(isGreen(totals)).toBe(false);
    expect(totals.problems[0]).toBe(`@x/b: no b/${REPORT_FILE} (vitest crashed, found no test file, or did not run)`);
    expect(totals.problems[1]).toMatch(/^@x\/c: c\/\.vitest-report\.json is not valid JSON/);
    expect(totals.problems[2]).toBe(`@x/d: d/${REPORT_FILE} is stale (written by an earlier run)`);
    expect(totals.passed).toBe(5);
  });

  it('does not expect a report from a member whose test script does not write one', () => {
    const totals = collectTotals([member('a', green), member('e', undefined, 'node run.js'), member('f', undefined, null)]);
    expect(isGreen(totals)).toBe(true);
  });

  it('is red when a member has no test file', () => {
    const empty = { numPassedTests: 0, numFailedTests: 0, numPendingTests: 0, numTodoTests: 0, numTotalTestSuites: 0, numFailedTestSuites: 0, startTime: 2000, success: false, testResults: [] };
    const totals = collectTotals([member('a', green), member('g', empty)]);
    expect(isGreen(totals)).toBe(false);
    expect(totals.problems).toEqual(['@x/g: vitest found no test file (its test script runs vitest, so it needs tests)']);
  });

  it('is red when nothing ran', () => {
    const totals = collectTotals([member('a', { ...green, numPassedTests: 0, numPendingTests: 3 })]);
    expect(isGreen(totals)).toBe(false);
    expect(totals.problems).toEqual(['no test ran']);
    expect(isGreen(collectTotals([]))).toBe(false);
  });

  it('cleans reports', () => {
    const a = member('a', green);
    cleanReports([a]);
    expect(collectTotals([a]).problems[0]).toMatch(/^@x\/a: no a\//);
  });
});
