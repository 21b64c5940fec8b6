/**
 * The naive forward generator (`@natten-web/wgsl` generateNaiveForward): keys derived from the spec, header
 * constants, bindings, spec rules with their messages, dispatch math; and every rank/dtype variant compiles.
 */
import { NattenArgumentError } from '@natten-web/core';
import { generateNaiveForward, NAIVE_WORKGROUP_SIZE, naiveForwardDispatch, type NaiveForwardSpec } from '@natten-web/wgsl';
import { afterAll, describe, expect, it } from 'vitest';
import { gpuContext } from './setup.ts';

afterAll(async () => (await gpuContext()).destroy());

const base: NaiveForwardSpec = { rank: 2, kernelSize: [3, 5], causal: [false, true], dim: 8, dimV: 8, dtype: 'float32', hasRpb: false, hasLse: true };

describe('generateNaiveForward', () => {
  it('same spec, same code and key; distinct specs, distinct keys', () => {
    expect(generateNaiveForward(base)).toEqual(generateNaiveForward({ ...base }));
    const variants: NaiveForwardSpec[] = [
      base,
      { ...base, kernelSize: [3, 7] },
      { ...base, causal: [true, true] },
      { ...base, dim: 16 },
      { ...base, dimV: 4 },
      { ...base, dtype: 'float16' },
      { ...base, hasLse: false },
      { ...base, causal: [false, false], hasRpb: true },
    ];
    expect(new Set(variants.map((s) => generateNaiveForward(s).key)).size).toBe(variants.length);
  });

  it('emits the key and baked values as a header, and the bindings in order', () => {
    const k = generateNaiveForward({ ...base, causal: [false, false], hasRpb: true, dtype: 'float16' });
    const lines = k.code.split('\n');
    expect(lines[0]).toBe(`// ${k.key}`);
    expect(lines[1]).toBe('enable f16;');
    for (const c of ['const KERNEL_SIZE_0: i32 = 3;', 'const KERNEL_SIZE_1: i32 = 5;', 'const IS_CAUSAL_1: bool = false;', 'const HEAD_DIM: u32 = 8u;', 'const HAS_RPB: bool = true;', 'const RPB_PER_HEAD: u32 = 45u;']) {
      expect(k.code).toContain(c);
    }
    expect(k.bindings.map((b) => b.name)).toEqual(['query', 'key', 'value', 'rpb', 'output', 'logsumexp']);
    expect(k.features).toEqual(['shader-f16']);
    expect(k.workgroupBytes).toBe(0);
    expect(generateNaiveForward({ ...base, hasLse: false }).bindings.map((b) => b.name)).toEqual(['query', 'key', 'value', 'output']);
  });

  it('rejects inconsistent specs with messages that name the rule', () => {
    const bad = (s: Partial<NaiveForwardSpec>) => () => generateNaiveForward({ ...base, ...s } as NaiveForwardSpec);
    expect(bad({ rank: 4 as 1 })).toThrow(new NattenArgumentError('generateNaiveForward: rank must be 1, 2 or 3, got 4'));
    expect(bad({ kernelSize: [3] })).toThrow(new NattenArgumentError('generateNaiveForward: kernelSize and causal need 2 entries, got [3] and 2'));
    expect(bad({ kernelSize: [1, 3] })).toThrow(new NattenArgumentError('generateNaiveForward: kernel sizes must be integers >= 2, got [1, 3]'));
    expect(bad({ dim: 0 })).toThrow(new NattenArgumentError('generateNaiveForward: head_dim must be a positive integer, got 0'));
    expect(bad({ dimV: 2048 })).toThrow(new NattenArgumentError('generateNaiveForward: value head_dim must be an integer in 1..1024 (private f32 accumulator), got 2048'));
    expect(bad({ hasRpb: true })).toThrow(new NattenArgumentError('generateNaiveForward: rpb needs a non-causal window and odd kernel sizes'));
  });

  it('dispatch: one invocation per (batch, token, head), per-axis uniforms', () => {
    const { uniforms, workgroups } = naiveForwardDispatch({
      rank: 2,
      batch: 2,
      spatial: [5, 7],
      heads: 6,
      headsKv: 3,
      scale: 0.25,
      params: { dilation: [1, 2], stride: [1, 3] },
    });
    expect(uniforms).toEqual({ heads: 6, heads_kv: 3, gqa: 2, tokens: 35, total: 420, scale: 0.25, len_0: 5, dil_0: 1, str_0: 1, len_1: 7, dil_1: 2, str_1: 3 });
    expect(workgroups).toBe(Math.ceil(420 / NAIVE_WORKGROUP_SIZE));
  });

  it('every rank, dtype, rpb and lse variant compiles on this adapter', async () => {
    const ctx = await gpuContext();
    const specs: NaiveForwardSpec[] = [
      { rank: 1, kernelSize: [4], causal: [true], dim: 5, dimV: 3, dtype: 'float32', hasRpb: false, hasLse: false },
      { rank: 2, kernelSize: [3, 3], causal: [false, false], dim: 8, dimV: 8, dtype: 'float16', hasRpb: true, hasLse: true },
      { rank: 3, kernelSize: [3, 2, 3], causal: [false, true, false], dim: 4, dimV: 4, dtype: 'float32', hasRpb: false, hasLse: true },
    ];
    for (const s of specs) {
      await expect(ctx.pipeline(generateNaiveForward(s))).resolves.toBeDefined();
    }
  }, 300_000);
});
