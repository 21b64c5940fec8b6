import { describe, expect, it } from 'vitest';
import { generateLinearMma } from '../src/index.ts';
import { workgroupVars } from './workgroup-vars.ts';

describe('linear on tensor cores (code generation)', () => {
  it('keeps every workgroup variable a multiple of 16 bytes (matrix stores misplace data otherwise)', () => {
    for (const spec of [
      { bias: true, parts: 1, frags: 4 },
      { bias: false, parts: 3, frags: 8, wideOut: true },
      { bias: true, parts: 1, frags: 4, rowFrags: 2 },
    ] as const) {
      const k = generateLinearMma(spec);
      const vars = workgroupVars(k.code);
      expect(vars.length).toBe(3);
      for (const v of vars) expect(v.bytes % 16, `${v.name} ${JSON.stringify(spec)}`).toBe(0);
      expect(vars.reduce((a, v) => a + v.bytes, 0)).toBe(k.workgroupBytes);
    }
  });
});
