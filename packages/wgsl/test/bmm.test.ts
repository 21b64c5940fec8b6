import { WgslReflect } from 'wgsl_reflect/wgsl_reflect.module.js';
import { describe, expect, it } from 'vitest';
import {
  type BmmOpSpec,
  type GeneratedKernel,
  type GpuDType,
  generateAvBackwardAttn,
  generateAvBackwardValue,
  generateAvForward,
  generateBmmKernel,
  generateQkBackwardKey,
  generateQkBackwardQuery,
  generateQkForward,
  generateRpbGradPartial,
  generateRpbGradReduce,
} from '../src/index.ts';

function causalCombos(rank: number): boolean[][] {
  const out: boolean[][] = [];
  for (let m = 0; m < 1 << rank; m++) out.push(Array.from({ length: rank }, (_, a) => ((m >> a) & 1) === 1));
  return out;
}

/** Every kernel the BMM ops can generate for one op spec (rpb variants only for non-causal windows). */
function variants(op: BmmOpSpec): GeneratedKernel[] {
  const causal = op.causal.some((c) => c);
  const out = [
    generateQkForward({ ...op, rpb: false }),
    generateQkBackwardQuery(op),
    generateQkBackwardKey(op),
    generateAvForward(op),
    generateAvBackwardAttn(op),
    generateAvBackwardValue(op),
  ];
  if (!causal) {
    const rpb = { rank: op.rank, kernelSize: op.kernelSize, dtype: op.dtype };
    out.push(generateQkForward({ ...op, rpb: true }), generateRpbGradPartial(rpb), generateRpbGradReduce(rpb));
  }
  return out;
}

/** The code with every integer literal replaced: kernels equal under it differ only in baked sizes (K, D, tiles). */
function shapeOf(code: string): string {
  return code.replace(/\b\d+(\.\d+)?\b/g, '#');
}

describe('BMM generators: every variant of the grid parses', () => {
  for (const rank of [1, 2, 3] as const) {
    it(`rank ${rank}: K 3/5/7 x causal combos x rpb x f32/f16 x D 6/8/16/32/64`, () => {
      const seen = new Map<string, GeneratedKernel>();
      for (const k of [3, 5, 7]) {
        for (const causal of causalCombos(rank)) {
          for (const dtype of ['float32', 'float16'] as GpuDType[]) {
            for (const dim of [6, 8, 16, 32, 64]) {
              const kernelSize = rank === 3 && k === 7 ? [7, 5, 3] : new Array<number>(rank).fill(k);
              for (const kernel of variants({ rank, kernelSize, causal, dim, dtype })) seen.set(kernel.key, kernel);
            }
          }
        }
      }
      // wgsl_reflect needs ~0.1 s per shader here, so each distinct shape (code up to integer literals) is
      // parsed once; every kernel is still checked against its own bindings and header.
      const parsed = new Map<string, WgslReflect>();
      for (const kernel of seen.values()) {
        const shape = shapeOf(kernel.code);
        let reflect = parsed.get(shape);
        if (!reflect) {
          try {
            reflect = new WgslReflect(kernel.code);
          } catch (e) {
            throw new Error(`${kernel.key} does not parse: ${String(e)}`);
          }
          parsed.set(shape, reflect);
        }
        const entry = reflect.entry.compute.find((f) => f.name === kernel.entryPoint);
        expect(entry, kernel.key).toBeDefined();
        expect(reflect.storage.map((s) => s.name), kernel.key).toEqual(kernel.bindings.map((b) => b.name));
        expect(reflect.storage.map((s) => s.binding), kernel.key).toEqual(kernel.bindings.map((_, i) => i));
        expect(reflect.uniforms.map((u) => u.binding), kernel.key).toEqual(kernel.uniforms.length > 0 ? [kernel.bindings.length] : []);
        expect(kernel.code).toContain(`@workgroup_size(${kernel.workgroupSize[0]})`);
        expect(kernel.code.includes(`// ${kernel.key}`), kernel.key).toBe(true);
        expect(kernel.features.includes('shader-f16'), kernel.key).toBe(kernel.code.includes('enable f16;'));
        expect(kernel.workgroupBytes, kernel.key).toBeLessThanOrEqual(16384);
      }
      expect(seen.size).toBeGreaterThan(rank === 1 ? 150 : 300);
      expect(parsed.size).toBeGreaterThan(10);
    });
  }
});

const BASE: BmmOpSpec = { rank: 2, kernelSize: [3, 5], causal: [false, true], dim: 16, dtype: 'float32' };

describe('BMM kernel keys', () => {
  it('the same spec gives the same key and the same code', () => {
    const a = generateAvForward(BASE);
    const b = generateAvForward({ ...BASE, kernelSize: [3, 5], causal: [false, true] });
    expect(b.key).toBe(a.key);
    expect(b.code).toBe(a.code);
  });

  it('every baked field changes the key', () => {
    const base = generateAvForward(BASE).key;
    const changed: BmmOpSpec[] = [
      { ...BASE, rank: 3, kernelSize: [3, 3, 5], causal: [false, false, true] },
      { ...BASE, kernelSize: [5, 5] },
      { ...BASE, causal: [true, true] },
      { ...BASE, dim: 32 },
      { ...BASE, dtype: 'float16' },
      { ...BASE, tile: [4, 16] },
      { ...BASE, chunk: 8 },
    ];
    const keys = new Set([base, ...changed.map((s) => generateAvForward(s).key)]);
    expect(keys.size).toBe(changed.length + 1);
  });

  it('the kernel families and the qk rpb switch have distinct keys', () => {
    const nonCausal: BmmOpSpec = { ...BASE, causal: [false, false] };
    const keys = [
      generateQkForward({ ...nonCausal, rpb: false }).key,
      generateQkForward({ ...nonCausal, rpb: true }).key,
      generateQkBackwardQuery(nonCausal).key,
      generateQkBackwardKey(nonCausal).key,
      generateRpbGradPartial({ rank: 2, kernelSize: [3, 5], dtype: 'float32' }).key,
      generateRpbGradReduce({ rank: 2, kernelSize: [3, 5], dtype: 'float32' }).key,
    ];
    expect(new Set(keys).size).toBe(keys.length);
    // Same math, same kernel, one pipeline: qk_backward's dQ and av_forward (NN); a non-causal qk_forward
    // without rpb and av_backward's d_attn (PN, no mask to fill).
    expect(generateQkBackwardQuery(nonCausal).key).toBe(generateAvForward(nonCausal).key);
    expect(generateAvBackwardAttn(nonCausal).key).toBe(generateQkForward({ ...nonCausal, rpb: false }).key);
    expect(generateAvBackwardAttn(BASE).key).not.toBe(generateQkForward({ ...BASE, rpb: false }).key);
  });

  it('per-call sizes are uniforms, never baked into the code', () => {
    const k = generateQkForward({ ...BASE, causal: [false, false], rpb: true });
    expect(k.uniforms.map((u) => u.name)).toEqual(['bh', 'heads', 'L0', 'L1', 'L2', 'd0', 'd1', 'd2', 's0', 's1', 's2', 'tiles0', 'tiles1', 'tiles2']);
    const causal = generateQkForward({ ...BASE, rpb: false });
    expect(causal.uniforms.map((u) => u.name)).toContain('fill_bits');
    expect(causal.code).toContain('bitcast<f32>(params.fill_bits)');
    const half = generateQkForward({ ...BASE, dtype: 'float16', rpb: false });
    expect(half.code).toContain('bitcast<vec2<f16>>(params.fill_bits).x');
    // av_backward's d_attn masks with 0, not -inf.
    expect(generateAvBackwardAttn(BASE).uniforms.map((u) => u.name)).not.toContain('fill_bits');
  });

  it('head dims that are multiples of 4 use vec4 rows, others scalar rows', () => {
    expect(generateAvForward({ ...BASE, dim: 16 }).code).toContain('array<vec4<f32>>');
    expect(generateAvForward({ ...BASE, dim: 6 }).code).not.toContain('vec4<f32>>;');
    expect(generateAvForward({ ...BASE, dim: 6, dtype: 'float16' }).code).toContain('array<f16>');
  });

  it('rejects a chunk larger than the tile (internal invariant)', () => {
    expect(() => generateBmmKernel({ kind: 'nn', rank: 1, kernelSize: [3], causal: [false], dim: 8, dtype: 'float32', tile: [16], chunk: 32 })).toThrow(
      /chunk 32 must be an integer in \[1, tile size 16\]/,
    );
  });
});

describe('BMM shader snapshots', () => {
  it('d_rel_pos_bias reduce pass, rank 1, K=3, f32, 8 invocations', () => {
    expect(generateRpbGradReduce({ rank: 1, kernelSize: [3], dtype: 'float32', workgroupSize: 8 }).code).toMatchInlineSnapshot(`
      "// na-rpb-reduce/v2:{"dtype":"float32","kernelSize":[3],"rank":1,"workgroupSize":8}
      // d_rel_pos_bias: fixed-order reduction of the per-tile partial sums, accumulated into float32 grad_rpb.
      const CELLS: i32 = 5;
      const WG: i32 = 8;

      @group(0) @binding(0) var<storage, read> partial: array<f32>;
      @group(0) @binding(1) var<storage, read_write> grad_rpb: array<f32>;
      struct Params {
        batch: i32,
        heads: i32,
        rows: i32,
      }
      @group(0) @binding(2) var<uniform> params: Params;

      var<workgroup> acc: array<f32, 8>;

      @compute @workgroup_size(8)
      fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lidx: u32) {
        let wgi = i32(wid.x + wid.y * nwg.x);
        if (wgi >= params.heads * CELLS) { return; }
        let h = wgi / CELLS;
        let cell = wgi % CELLS;
        let lid = i32(lidx);
        var sum = 0.0;
        for (var e = lid; e < params.batch * params.rows; e += WG) {
          let b = e / params.rows;
          let row = ((b * params.heads + h) * params.rows + e % params.rows);
          sum = sum + partial[row * CELLS + cell];
        }
        acc[lid] = sum;
        workgroupBarrier();
        for (var half = WG / 2; half > 0; half = half / 2) {
          if (lid < half) { acc[lid] = acc[lid] + acc[lid + half]; }
          workgroupBarrier();
        }
        if (lid == 0) {
          let idx = h * CELLS + cell;
          grad_rpb[idx] = f32(f32(grad_rpb[idx]) + acc[0]);
        }
      }
      "
    `);
  });
});
