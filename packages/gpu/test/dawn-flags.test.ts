import { describe, expect, it } from 'vitest';
import { DAWN_NODE_FLAGS, dawnNodeFlags } from '../src/index.ts';

describe('dawnNodeFlags', () => {
  it('is the default flags without extra toggles', () => {
    expect(dawnNodeFlags(undefined)).toEqual(DAWN_NODE_FLAGS);
    expect(dawnNodeFlags(' , ')).toEqual(DAWN_NODE_FLAGS);
  });
  it('appends extra toggles to the enabled ones and keeps the rest', () => {
    const flags = dawnNodeFlags('disable_workgroup_init, disable_robustness');
    expect(flags[0]).toBe('enable-dawn-features=allow_unsafe_apis,vulkan_enable_f16_on_nvidia,disable_workgroup_init,disable_robustness');
    expect(flags.slice(1)).toEqual(DAWN_NODE_FLAGS.slice(1));
  });
  it('rejects what is not a toggle name, naming the variable', () => {
    expect(() => dawnNodeFlags('disable_workgroup_init,x=y')).toThrow(/NATTEN_WEB_DAWN_TOGGLES: 'x=y' is not a Dawn toggle name/);
  });
});
