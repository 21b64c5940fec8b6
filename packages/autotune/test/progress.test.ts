import { describe, expect, it } from 'vitest';
import { type ProgressEvent, progressPrinter } from '../src/index.ts';

const base = { op: 'forward', problem: 'na1d 1x20x2x8 K=5 f32', total: 3, budgetMs: 20_000 } as const;
const events: ProgressEvent[] = [
  { ...base, phase: 'start', done: 0, elapsedMs: 0 },
  { ...base, phase: 'candidate', done: 1, label: 'q=16 k=16 stage=f32', medianNs: 70_000, bestLabel: 'q=16 k=16 stage=f32', bestNs: 70_000, elapsedMs: 2500 },
  { ...base, phase: 'failed', done: 2, label: 'q=32 k=16 stage=f32', bestLabel: 'q=16 k=16 stage=f32', bestNs: 70_000, elapsedMs: 2600 },
  { ...base, phase: 'done', done: 3, bestLabel: 'q=16 k=16 stage=f32', bestNs: 70_000, elapsedMs: 3000 },
];

function capture(isTTY: boolean, mode: boolean | 'auto') {
  const chunks: string[] = [];
  const print = progressPrinter(mode, { isTTY, write: (s: string) => chunks.push(s) });
  for (const e of events) print?.(e);
  return chunks;
}

describe('progress output', () => {
  it('TTY: one line rewritten in place, newline only at the end', () => {
    const c = capture(true, true);
    expect(c.length).toBe(4);
    for (const s of c) expect(s.startsWith('\r\x1b[2K')).toBe(true);
    expect(c.slice(0, 3).some((s) => s.includes('\n'))).toBe(false);
    expect(c[1]).toContain('[1/3] q=16 k=16 stage=f32 70.0 us | best q=16 k=16 stage=f32 70.0 us');
    expect(c[2]).toContain('[2/3] q=32 k=16 stage=f32 failed');
    expect(c[3]).toBe('\r\x1b[2Kautotune forward na1d 1x20x2x8 K=5 f32: best q=16 k=16 stage=f32 70.0 us (3/3 timed, 3.0 s)\n');
  });
  it('not a TTY: plain lines', () => {
    const c = capture(false, true);
    expect(c.length).toBe(4);
    for (const s of c) {
      expect(s.endsWith('\n')).toBe(true);
      expect(s).not.toContain('\r');
    }
  });
  it("'auto' stays quiet for the first 2 s, false never prints", () => {
    const c = capture(false, 'auto');
    expect(c.length).toBe(3); // start (0 ms) suppressed
    expect(capture(true, false)).toEqual([]);
    const short = progressPrinter('auto', { isTTY: false, write: () => expect.unreachable('a short tune printed') });
    short?.({ ...base, phase: 'done', done: 3, elapsedMs: 100 });
  });
});
