import { WgslReflect } from 'wgsl_reflect/wgsl_reflect.module.js';
import { describe, expect, it } from 'vitest';
import { CLOCK_WARMER_WORKGROUP, generateClockWarmer } from '../src/index.ts';

describe('generateClockWarmer', () => {
  it('is one parseable compute entry point with one storage binding and an iteration-count uniform', () => {
    const k = generateClockWarmer();
    expect(k.key).toBe('clock-warmer/v1:{}');
    expect(k.workgroupSize).toEqual([CLOCK_WARMER_WORKGROUP, 1, 1]);
    expect(k.bindings).toEqual([{ name: 'sink', access: 'read_write' }]);
    expect(k.uniforms).toEqual([{ name: 'iters', type: 'u32' }]);
    const reflect = new WgslReflect(k.code);
    expect(reflect.entry.compute.map((e) => e.name)).toEqual(['main']);
    expect(generateClockWarmer().code).toBe(k.code);
  });
});
