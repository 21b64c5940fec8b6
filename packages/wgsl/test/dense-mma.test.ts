import { describe, expect, it } from 'vitest';
import {
  type DenseMmaKind,
  type DenseMmaSpec,
  denseMmaSpecProblem,
  denseMmaWorkgroupBytes,
  generateDenseBackwardKvMma,
  generateDenseBackwardQueryMma,
  generateDenseBackwardKv,
  generateDenseBackwardQuery,
  generateDenseForward,
  generateDenseForwardMma,
} from '../src/index.ts';
import { workgroupVars } from './workgroup-vars.ts';

const base: DenseMmaSpec = { dim: 64, dimV: 64, causal: false, chunk: 32 };
const generators: [DenseMmaKind, (s: DenseMmaSpec) => { code: string; workgroupBytes: number; bindings: readonly { name: string }[]; uniforms: readonly unknown[] }][] = [
  ['forward', generateDenseForwardMma],
  ['dq', generateDenseBackwardQueryMma],
  ['dkv', generateDenseBackwardKvMma],
];

describe('dense attention on tensor cores (code generation)', () => {
  it('names the rule a spec breaks', () => {
    expect(denseMmaSpecProblem(base)).toBeUndefined();
    expect(denseMmaSpecProblem({ ...base, dim: 40 })).toBe('dim must be a multiple of 16 in [16, 128], got 40');
    expect(denseMmaSpecProblem({ ...base, dimV: 256 })).toBe('dimV must be a multiple of 16 in [16, 128], got 256');
    expect(denseMmaSpecProblem({ ...base, chunk: 48 as 32 })).toBe('chunk must be one of 16, 32, 64, got 48');
    expect(() => generateDenseForwardMma({ ...base, dim: 8 })).toThrow('generateDenseForwardMma: dim must be a multiple of 16 in [16, 128], got 8');
  });

  it('keeps every workgroup variable a multiple of 16 bytes (varlen included) and counts them all', () => {
    // NVIDIA through Dawn/Vulkan misplaced matrix data when two 4-byte varlen words came first (session 23).
    for (const [kind, gen] of generators) {
      for (const dim of [16, 48, 128]) {
        for (const chunk of [16, 32, 64] as const) {
          for (const varlen of [false, true]) {
            const spec = { ...base, dim, dimV: dim === 48 ? 32 : dim, chunk, varlen, causal: varlen };
            const k = gen(spec);
            const vars = workgroupVars(k.code);
            for (const v of vars) expect(v.bytes % 16, `${kind} ${v.name} D=${dim} chunk ${chunk} varlen ${varlen}`).toBe(0);
            expect(vars.reduce((a, v) => a + v.bytes, 0)).toBe(k.workgroupBytes);
            expect(denseMmaWorkgroupBytes(kind, spec)).toBe(k.workgroupBytes);
            {
              const split = gen({ ...spec, split: true });
              for (const v of workgroupVars(split.code)) expect(v.bytes % 16, `split ${v.name} D=${dim} chunk ${chunk}`).toBe(0);
              expect(workgroupVars(split.code).reduce((a, v) => a + v.bytes, 0)).toBe(split.workgroupBytes);
            }
          }
        }
      }
    }
  });

  it('takes the plain kernels\' bindings and uniforms, so a caller swaps one for the other', () => {
    const names = (k: { bindings: readonly { name: string }[] }) => k.bindings.map((b) => b.name);
    for (const varlen of [false, true]) {
      const plain = { dtype: 'float16' as const, dim: 64, dimV: 64, causal: true, varlen };
      const mma = { ...base, causal: true, varlen };
      expect(names(generateDenseForwardMma(mma))).toEqual(names(generateDenseForward(plain)));
      expect(generateDenseForwardMma(mma).uniforms).toEqual(generateDenseForward(plain).uniforms);
      expect(names(generateDenseBackwardQueryMma(mma))).toEqual(names(generateDenseBackwardQuery(plain)));
      expect(names(generateDenseBackwardKvMma({ ...mma, partial: true }))).toEqual(names(generateDenseBackwardKv({ ...plain, partial: true })));
      expect(generateDenseBackwardKvMma(mma).uniforms).toEqual(generateDenseBackwardKv(plain).uniforms);
    }
  });

  it('compiles the float32 split', () => {
    const k = generateDenseForwardMma({ ...base, split: true });
    expect(k.bindings.map((b) => b.name)).toEqual(['query', 'key', 'value', 'output', 'lse', 'scales']);
    expect(k.code).toMatch(/var<storage, read> query: array<vec4<f32>>;/);
    expect(k.code).toMatch(/var<storage, read_write> output: array<vec4<f32>>;/);
    expect(k.code).toContain('let sscale = sl2 / (scq * sck);');
    // hi hi + hi lo + lo hi for S and for P V
    expect(k.code).toContain('subgroupMatrixMultiplyAccumulate(qlo_0, subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>, col_major>(&st_sh');
    expect(k.code).toContain('subgroupMatrixMultiplyAccumulate(plo_0, subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>, row_major>(&st_sh');
    expect(() => generateDenseBackwardQueryMma({ ...base, merge: true })).toThrow('generateDenseBackwardQueryMma: merge is a forward option');
    const dq = generateDenseBackwardQueryMma({ ...base, split: true });
    // One scales binding: max |Q|, |K|, |V|, |dO|, |O| (dS's bound has max |dO| and max |O| in it).
    expect(dq.bindings.map((b) => b.name).slice(-2)).toEqual(['delta', 'scales']);
    expect(dq.code).toContain('let scd = split_scale(abs(params.scale) * 64.0 * scales[3] * (scales[2] + scales[4]));');
    expect(dq.code).toMatch(/var<storage, read_write> grad_query: array<vec4<f32>>;/);
    const dkv = generateDenseBackwardKvMma({ ...base, split: true });
    expect(dkv.code).toMatch(/var<storage, read_write> grad_key: array<vec4<f32>>;/);
    expect(dkv.code).toContain('subgroupMatrixMultiplyAccumulate(dstlo, subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>, row_major>(&st_sh');
  });

  it('compiles what the spec asks for', () => {
    expect(generateDenseBackwardQueryMma({ ...base, accumulate: true }).code).toContain('let old = grad_query[');
    expect(generateDenseBackwardQueryMma(base).code).not.toContain('let old = grad_query[');
    expect(generateDenseBackwardKvMma({ ...base, partial: true }).code).toMatch(/var<storage, read_write> grad_key: array<vec4<f32>>;/);
    expect(generateDenseBackwardKvMma(base).code).toMatch(/var<storage, read_write> grad_key: array<vec4<u32>>;/);
    expect(generateDenseBackwardKvMma({ ...base, causal: true }).code).toContain('>= vec4<u32>(kpos)');
    expect(generateDenseBackwardKvMma(base).code).not.toContain('kpos)');
    // Head dim 128 in 16-key chunks: the fragments' 64 rows staged in two passes of 32 (what the staging area holds).
    expect(generateDenseForwardMma({ ...base, dim: 128, dimV: 128, chunk: 16 }).code).toContain('if (rbase >= 32u && rbase < 64u)');
    const keys = new Set(generators.flatMap(([, g]) => [g(base).code.split('\n')[0], g({ ...base, varlen: true }).code.split('\n')[0]]));
    expect(keys.size).toBe(6);
  });
});
