import { describe, expect, it } from 'vitest';
import {
  type BmmOpSpec,
  bmmMmaSpecProblem,
  type GeneratedKernel,
  generateAvBackwardAttn,
  generateAvBackwardValue,
  generateAvForward,
  generateBmmMmaKernel,
  generateQkBackwardKey,
  generateQkBackwardQuery,
  generateQkForward,
} from '../src/index.ts';
import { workgroupVars } from './workgroup-vars.ts';

/** The six BMM kernels of an op spec (qk forward with rpb where the window is not causal). */
function kernels(op: BmmOpSpec): GeneratedKernel[] {
  const causal = op.causal.some((c) => c);
  return [
    generateQkForward({ ...op, rpb: !causal }),
    generateQkBackwardQuery(op),
    generateQkBackwardKey(op),
    generateAvForward(op),
    generateAvBackwardAttn(op),
    generateAvBackwardValue(op),
  ];
}

const base: BmmOpSpec = { rank: 2, kernelSize: [5, 7], causal: [false, true], dim: 64, dtype: 'float16' };

describe('tensor-core BMM kernels', () => {
  it('take the plain kernels bindings (names and order), uniforms and grid tile, under their own keys', () => {
    for (const rank of [1, 2, 3] as const) {
      for (const causal of [false, true]) {
        const op: BmmOpSpec = { rank, kernelSize: new Array<number>(rank).fill(5), causal: new Array<boolean>(rank).fill(causal), dim: 32, dtype: 'float16' };
        const plain = kernels(op);
        const mma = kernels({ ...op, mma: true });
        for (const [i, k] of mma.entries()) {
          const p = plain[i] as GeneratedKernel;
          expect(k.key).toMatch(/^na-bmm-mma-(pn|nn|in)/);
          expect(k.key).not.toBe(p.key);
          expect(k.bindings).toEqual(p.bindings);
          expect(k.uniforms).toEqual(p.uniforms);
          expect(k.workgroupSize).toEqual([128, 1, 1]);
          expect(k.features).toContain('chromium-experimental-subgroup-matrix');
        }
      }
    }
  });

  it('keep every workgroup variable a multiple of 16 bytes, counted in workgroupBytes', () => {
    const specs = [16, 48, 64, 128].flatMap((dim) => [
      { ...base, dim, mma: true },
      ...(dim <= 64 ? [{ ...base, dim, dtype: 'float32' as const, mma: true }] : []),
    ]);
    for (const op of specs) {
      for (const k of [...kernels(op), ...kernels({ ...op, causal: [false, false] })]) {
        const vars = workgroupVars(k.code);
        for (const v of vars) expect(v.bytes % 16, `${k.key} ${v.name}`).toBe(0);
        expect(vars.reduce((a, v) => a + v.bytes, 0), k.key).toBe(k.workgroupBytes);
        expect(k.workgroupBytes).toBeLessThanOrEqual(16384);
      }
    }
  });

  it('bake the window, causal axes and head dim, and take every size of the call as a uniform', () => {
    const k = generateQkForward({ ...base, rpb: false, mma: true });
    expect(k.code).toContain('const K1: i32 = 5;');
    expect(k.code).toContain('const DU: u32 = 8u;');
    expect(k.code).toContain('fill_bits');
    expect(k.code).not.toMatch(/\b(4096|128x128)\b/);
    // Gradient fill (av backward's d_attn) is zero, not the -inf uniform.
    const z = generateAvBackwardAttn({ ...base, mma: true });
    expect(z.uniforms.map((u) => u.name)).not.toContain('fill_bits');
    expect(z.code).toContain('= f16(0.0); }');
  });

  it('read float32 through the split: a scales binding last, each operand at its entry of the op order', () => {
    const op = { ...base, dtype: 'float32' as const, mma: true };
    const plain = kernels({ ...op, mma: false });
    for (const [i, k] of kernels(op).entries()) {
      expect(k.bindings).toEqual([...(plain[i] as GeneratedKernel).bindings, { name: 'scales', access: 'read' }]);
      expect(k.code).toContain('var<workgroup> st_lo: array<f16,');
    }
    // qk_backward's dK (grad_attn, query) and av_backward's dV (attn, grad_output) read entries 0 / 2 and 2 / 0.
    expect(generateQkBackwardKey(op).code).toMatch(/sc_x = split_scale\(scales\[0\]\);\s+let sc_y = split_scale\(scales\[2\]\);/);
    expect(generateAvBackwardValue(op).code).toMatch(/sc_x = split_scale\(scales\[2\]\);\s+let sc_y = split_scale\(scales\[0\]\);/);
    expect(generateQkForward({ ...op, rpb: false }).code).toMatch(/sc_x = split_scale\(scales\[0\]\);\s+let sc_y = split_scale\(scales\[1\]\);/);
  });

  it('name why a spec cannot run on them', () => {
    const spec = { dim: 64, dtype: 'float16' as const, tile: [8, 8] };
    expect(bmmMmaSpecProblem(spec)).toBeUndefined();
    expect(bmmMmaSpecProblem({ ...spec, dtype: 'float32' })).toBeUndefined();
    expect(bmmMmaSpecProblem({ ...spec, dtype: 'float32', dim: 128 })).toBe('head_dim=128 must be a multiple of 16 in [16, 64] for float32 (hi / lo split)');
    expect(bmmMmaSpecProblem({ ...spec, dtype: 'int8' as never })).toBe('the tensor-core BMM kernels need float16 or float32 tensors, not int8');
    expect(bmmMmaSpecProblem({ ...spec, dim: 40 })).toBe('head_dim=40 must be a multiple of 16 in [16, 128]');
    expect(bmmMmaSpecProblem({ ...spec, dim: 256 })).toBe('head_dim=256 must be a multiple of 16 in [16, 128]');
    expect(bmmMmaSpecProblem({ ...spec, tile: [4, 8] })).toBe('the tile 4x8 must hold 64 tokens (4 subgroups of 16 rows), not 32');
    expect(() => generateAvForward({ ...base, dim: 8, mma: true })).toThrow('generateBmmMmaKernel: head_dim=8 must be a multiple of 16 in [16, 128]');
    expect(() => generateBmmMmaKernel({ kind: 'nn', rank: 1, kernelSize: [3], causal: [false], dim: 16, dtype: 'float16', tile: [64], chunk: 32 })).toThrow(
      'generateBmmMmaKernel: chunk must be 16 box rows (one fragment), got 32',
    );
    expect(() => generateBmmMmaKernel({ kind: 'nn', rank: 1, kernelSize: [3], causal: [false], dim: 16, dtype: 'float32', tile: [64], chunk: 16 })).toThrow(
      'generateBmmMmaKernel: a float32 spec needs its scales entries',
    );
  });
});
