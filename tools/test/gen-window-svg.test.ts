import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { PANELS, querySlots, windowFigureSvg } from '../gen-window-svg.ts';

function panel(title: string) {
  const p = PANELS.find((x) => x.title === title);
  if (!p) throw new Error(`no panel ${title}`);
  return p;
}

describe('gen-window-svg', () => {
  it('the committed docs/img/window-2d.svg is what the generator draws now (run `pnpm docs:figures`)', () => {
    const committed = readFileSync(resolve(import.meta.dirname, '..', '..', 'docs', 'img', 'window-2d.svg'), 'utf8');
    expect(committed).toBe(windowFigureSvg());
  });

  it('border shift: corner query (0, 11) of the 9x12 grid sees rows 0..2 and cols 9..11 (spec §2.2)', () => {
    const { slots } = querySlots(panel('K=3, dilation 1'), 0, 11);
    expect(slots.map((s) => [s.row, s.col])).toEqual([
      [0, 9], [0, 10], [0, 11],
      [1, 9], [1, 10], [1, 11],
      [2, 9], [2, 10], [2, 11],
    ]);
    expect(slots.every((s) => s.valid)).toBe(true);
  });

  it('dilation 2 keeps the query in its residue class: (8, 10) sees rows 4,6,8 x cols 6,8,10', () => {
    const { slots } = querySlots(panel('K=3, dilation 2'), 8, 10);
    expect(slots.map((s) => [s.row, s.col])).toEqual([
      [4, 6], [4, 8], [4, 10],
      [6, 6], [6, 8], [6, 10],
      [8, 6], [8, 8], [8, 10],
    ]);
  });

  it('causal (True, False) masks trailing slots; causal (False, True) interleaves them (spec §2.4)', () => {
    const rowsCausal = querySlots(panel('K=3, causal (True, False)'), 1, 2).slots;
    expect(rowsCausal.filter((s) => !s.valid).map((s) => s.t)).toEqual([6, 7, 8]);
    const colsCausal = querySlots(panel('K=3, causal (False, True)'), 6, 1).slots;
    expect(colsCausal.filter((s) => !s.valid).map((s) => s.t)).toEqual([2, 5, 8]);
    expect(colsCausal.filter((s) => s.valid).map((s) => [s.row, s.col])).toEqual([
      [5, 0], [5, 1],
      [6, 0], [6, 1],
      [7, 0], [7, 1],
    ]);
  });
});
