import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { renderReport } from '../src/render.ts';
import type { BenchResults } from '../src/results.ts';
import { clockWindow, parseClockLine } from '../src/smclock.ts';

describe('SM clock sampling', () => {
  it('parses nvidia-smi csv lines (first GPU) and rejects anything else', () => {
    expect(parseClockLine('1980')).toBe(1980);
    expect(parseClockLine(' 345, 1980')).toBe(345);
    expect(parseClockLine('[N/A]')).toBeUndefined();
    expect(parseClockLine('')).toBeUndefined();
  });
  it('summarizes the samples inside a time window', () => {
    const s = [
      { t: 0, mhz: 345 },
      { t: 10, mhz: 1980 },
      { t: 20, mhz: 780 },
      { t: 30, mhz: 1980 },
      { t: 40, mhz: 1755 },
    ];
    expect(clockWindow(s, 10, 30)).toEqual({ minMHz: 780, medianMHz: 1980, maxMHz: 1980, samples: 3 });
    expect(clockWindow(s, 10, 40)).toEqual({ minMHz: 780, medianMHz: 1867.5, maxMHz: 1980, samples: 4 });
    expect(clockWindow(s, 41, 50)).toBeUndefined();
  });
  it('the report states the clock range where rows carry it, and nothing where none does', () => {
    const fixture = JSON.parse(readFileSync(new URL('./fixtures/results-h100.json', import.meta.url), 'utf8')) as BenchResults;
    expect(renderReport(fixture)).not.toContain('SM clock while our kernels were timed');
    const rows = fixture.rows.map((r, i) => (i === 0 ? { ...r, oursClock: { minMHz: 1755, medianMHz: 1980, maxMHz: 1980, samples: 9 } } : r));
    expect(renderReport({ ...fixture, rows })).toContain(`- **SM clock while our kernels were timed (nvidia-smi):** 1755-1980 MHz over 1 of ${rows.length} rows (lowest row median 1980 MHz)`);
  });
});
