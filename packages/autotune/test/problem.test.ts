import { NattenArgumentError, NattenUnsupportedError } from '@natten-web/core';
import { describe, expect, it } from 'vitest';
import { describeBackward, describeForward, formatProblem, parseProblem } from '../src/index.ts';

describe('parseProblem', () => {
  it('reads the CLI syntax', () => {
    expect(parseProblem('na2d 1x128x128x8x64 K=7 f16')).toEqual({ rank: 2, batch: 1, spatial: [128, 128], heads: 8, dim: 64, kernelSize: 7, dtype: 'float16' });
    const p = parseProblem('na3d 2x8x12x12x4x32 K=3,5,5 d=1,2,2 s=1,1,2 causal=1,0,0 kv=2 dv=16 nolse');
    expect(p).toMatchObject({ rank: 3, batch: 2, spatial: [8, 12, 12], heads: 4, headsKv: 2, dim: 32, dimV: 16, kernelSize: [3, 5, 5], dilation: [1, 2, 2], stride: [1, 1, 2], isCausal: [true, false, false], lse: false });
    expect(formatProblem(describeForward(p))).toBe('na3d 2x8x12x12x4x32 K=3,5,5 d=1,2,2 s=1,1,2 causal=1,0,0 kv=2 dv=16 f32 nolse');
  });

  it('rejects bad syntax with the rule', () => {
    const cases: [string, RegExp][] = [
      ['nb2d 1x8x8x1x8 K=3', /first word must be na1d, na2d or na3d, got 'nb2d'/],
      ['na2d 1x8x1x8 K=3', /batch x 2 spatial extent\(s\) x heads x head_dim \(5 positive integers/],
      ['na1d 1x8x1x8', /K=<kernel size> is required/],
      ['na1d 1x8x1x8 K=0', /K=0 must be a positive integer/],
      ['na1d 1x8x1x8 K=3 fast', /unknown option 'fast'/],
      ['na1d 1x8x1x8 K=3 causal=x', /causal=x must be 1, 0/],
    ];
    for (const [text, re] of cases) {
      expect(() => parseProblem(text), text).toThrow(NattenArgumentError);
      expect(() => parseProblem(text), text).toThrow(re);
    }
  });
});

describe('describeForward / describeBackward', () => {
  it("run core's validators (kernel larger than the extent is the core message)", () => {
    expect(() => describeForward({ rank: 1, spatial: [4], dim: 8, kernelSize: 7 })).toThrow(NattenArgumentError);
    expect(() => describeForward({ rank: 1, spatial: [4], dim: 8, kernelSize: 7 })).toThrow(/autotune: na1d_forward/);
  });
  it('reject float64 (not a WebGPU dtype)', () => {
    expect(() => describeForward({ rank: 1, spatial: [16], dim: 8, kernelSize: 3, dtype: 'float64' as 'float32' })).toThrow(NattenUnsupportedError);
  });
  it('gradRpb needs rpb', () => {
    expect(() => describeBackward({ rank: 1, spatial: [16], dim: 8, kernelSize: 3, gradRpb: true })).toThrow(/gradRpb=true needs rpb=true/);
  });
  it('fill defaults: one head, LSE stored, d_rpb with rpb', () => {
    const f = describeForward({ rank: 2, spatial: [8, 9], dim: 8, kernelSize: 3 });
    expect(f).toMatchObject({ batch: 1, heads: 1, headsKv: 1, dimV: 8, hasLse: true, hasRpb: false });
    const b = describeBackward({ rank: 1, spatial: [16], dim: 8, kernelSize: 3, rpb: true });
    expect(b).toMatchObject({ hasRpb: true, hasGradRpb: true });
  });
});
