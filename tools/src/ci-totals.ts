/**
 * Sums the vitest JSON reports every workspace member writes to `<member>/.vitest-report.json`
 * and prints, as its last line, `N passed, N failed, N skipped`.
 *
 * A member "expects" a report when its `test` script mentions `.vitest-report.json`. Exit code 1 when
 * any test failed, any test file failed to load (`numFailedTestSuites`), an expected report is missing
 * (vitest crashed or never ran), a report is unreadable or older than `--since`, or no test ran at all.
 *
 * Usage: `tsx tools/src/ci-totals.ts [--since=<epoch ms>]`, or `--clean` to delete every member's report
 * (run before the tests so a stale report cannot count).
 */
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { defaultRoot, isMain, listWorkspace, type WorkspaceMember } from './workspace.ts';

export const REPORT_FILE = '.vitest-report.json';

/** The fields of vitest's JSON reporter output that CI reads. */
interface VitestJsonReport {
  readonly numPassedTests?: number;
  readonly numFailedTests?: number;
  readonly numPendingTests?: number;
  readonly numTodoTests?: number;
  readonly numTotalTestSuites?: number;
  readonly numFailedTestSuites?: number;
  readonly startTime?: number;
  readonly success?: boolean;
  readonly testResults?: readonly {
    readonly name?: string;
    readonly startTime?: number;
    readonly endTime?: number;
    readonly status?: string;
    readonly message?: string;
    readonly assertionResults?: readonly { readonly status?: string }[];
  }[];
}

export interface MemberTotals {
  readonly name: string;
  readonly passed: number;
  readonly failed: number;
  readonly skipped: number;
  /** Test files that failed with no failing test: an import error, a syntax error, a throwing hook. */
  readonly brokenFiles: number;
  readonly files: number;
  /** Wall time from the first test file's start to the last one's end, in seconds (0 when unknown). */
  readonly seconds: number;
}

export interface Totals {
  readonly members: readonly MemberTotals[];
  readonly passed: number;
  readonly failed: number;
  readonly skipped: number;
  /** Reasons the run is not green, besides failed tests. */
  readonly problems: readonly string[];
}

export function expectsReport(member: WorkspaceMember): boolean {
  return member.manifest.scripts?.test?.includes(REPORT_FILE) ?? false;
}

const count = (value: number | undefined): number => (typeof value === 'number' && Number.isFinite(value) ? value : 0);

function wallSeconds(files: readonly { readonly startTime?: number; readonly endTime?: number }[]): number {
  const starts = files.map((f) => f.startTime).filter((t): t is number => typeof t === 'number');
  const ends = files.map((f) => f.endTime).filter((t): t is number => typeof t === 'number');
  if (starts.length === 0 || ends.length === 0) return 0;
  return Math.max(0, (Math.max(...ends) - Math.min(...starts)) / 1000);
}

export function collectTotals(members: readonly WorkspaceMember[], since?: number): Totals {
  const rows: MemberTotals[] = [];
  const problems: string[] = [];
  for (const member of members) {
    const file = join(member.absDir, REPORT_FILE);
    const expected = expectsReport(member);
    if (!existsSync(file)) {
      if (expected) problems.push(`${member.name}: no ${member.dir}/${REPORT_FILE} (vitest crashed, found no test file, or did not run)`);
      continue;
    }
    let report: VitestJsonReport;
    try {
      report = JSON.parse(readFileSync(file, 'utf8')) as VitestJsonReport;
    } catch (err) {
      problems.push(`${member.name}: ${member.dir}/${REPORT_FILE} is not valid JSON (${(err as Error).message})`);
      continue;
    }
    if (since !== undefined && count(report.startTime) < since) {
      problems.push(`${member.name}: ${member.dir}/${REPORT_FILE} is stale (written by an earlier run)`);
      continue;
    }
    const files = report.testResults ?? [];
    const broken = files.filter(
      (f) => f.status === 'failed' && !(f.assertionResults ?? []).some((a) => a.status === 'failed'),
    );
    const row: MemberTotals = {
      name: member.name,
      passed: count(report.numPassedTests),
      failed: count(report.numFailedTests),
      skipped: count(report.numPendingTests) + count(report.numTodoTests),
      brokenFiles: broken.length,
      files: files.length,
      seconds: wallSeconds(files),
    };
    rows.push(row);
    for (const f of broken) {
      const firstLine = (f.message ?? '').split('\n')[0] ?? '';
      problems.push(`${member.name}: test file ${f.name ?? '?'} failed outside any test: ${firstLine}`);
    }
    if (files.length === 0) {
      problems.push(`${member.name}: vitest found no test file (its test script runs vitest, so it needs tests)`);
    } else if (row.failed === 0 && broken.length === 0 && (count(report.numFailedTestSuites) > 0 || report.success === false)) {
      problems.push(`${member.name}: vitest reported ${count(report.numFailedTestSuites)} failed suite(s), success=${String(report.success)}`);
    }
  }
  const sum = (pick: (m: MemberTotals) => number): number => rows.reduce((acc, m) => acc + pick(m), 0);
  const passed = sum((m) => m.passed);
  const failed = sum((m) => m.failed);
  if (passed + failed === 0) problems.push('no test ran');
  return { members: rows, passed, failed, skipped: sum((m) => m.skipped), problems };
}

export function isGreen(totals: Totals): boolean {
  return totals.failed === 0 && totals.problems.length === 0;
}

export function totalsLine(totals: Pick<Totals, 'passed' | 'failed' | 'skipped'>): string {
  return `${totals.passed} passed, ${totals.failed} failed, ${totals.skipped} skipped`;
}

export function formatTotals(totals: Totals): string {
  const lines = totals.members.map(
    (m) => `  ${m.name}: ${totalsLine(m)} (${m.files} file${m.files === 1 ? '' : 's'}${m.brokenFiles > 0 ? `, ${m.brokenFiles} broken` : ''}${m.seconds > 0 ? `, ${m.seconds.toFixed(1)} s` : ''})`,
  );
  for (const problem of totals.problems) lines.push(`  PROBLEM ${problem}`);
  lines.push(totalsLine(totals));
  return lines.join('\n');
}

export function cleanReports(members: readonly WorkspaceMember[]): void {
  for (const member of members) rmSync(join(member.absDir, REPORT_FILE), { force: true });
}

if (isMain(import.meta.url)) {
  const members = listWorkspace(defaultRoot());
  const args = process.argv.slice(2);
  if (args.includes('--clean')) {
    cleanReports(members);
  } else {
    const sinceArg = args.find((a) => a.startsWith('--since='));
    const since = sinceArg === undefined ? undefined : Number(sinceArg.slice('--since='.length));
    const totals = collectTotals(members, since);
    console.log(formatTotals(totals));
    process.exitCode = isGreen(totals) ? 0 : 1;
  }
}
