import { NattenArgumentError, type NaRank } from '@natten-web/core';
import { WgslReflect } from 'wgsl_reflect/wgsl_reflect.module.js';
import { describe, expect, it } from 'vitest';
import { plainSpec, problem } from './forward-fixtures.ts';
import {
  canonicalKeyTile,
  defaultFusedForwardConfig,
  enumerateFusedForwardConfigs,
  FUSED_FORWARD_TILES,
  type FusedForwardSpec,
  type FusedKernelLimits,
  fusedForwardConfigProblem,
  fusedForwardDispatch,
  fusedForwardSpec,
  fusedForwardUniformFields,
  fusedForwardWorkgroupBytes,
  type GeneratedKernel,
  generateFusedForward,
  tileShapes,
} from '../src/index.ts';

const LAVAPIPE: FusedKernelLimits = { maxComputeWorkgroupStorageSize: 32768, maxComputeInvocationsPerWorkgroup: 1024, maxComputeWorkgroupSizeX: 1024 };
const BROWSER: FusedKernelLimits = { maxComputeWorkgroupStorageSize: 16384, maxComputeInvocationsPerWorkgroup: 256, maxComputeWorkgroupSizeX: 256 };


function combos(rank: number): boolean[][] {
  return Array.from({ length: 2 ** rank }, (_, m) => Array.from({ length: rank }, (_, a) => ((m >> a) & 1) === 1));
}

/** A spec grid: every rank x causal combination x dtype x staging x rpb/lse x head dims (vec4 and scalar rows) x tiles. */
function specGrid(): FusedForwardSpec[] {
  const out: FusedForwardSpec[] = [];
  const ks: Record<NaRank, number[][]> = { 1: [[3], [4]], 2: [[3, 5], [4, 2]], 3: [[3, 3, 3], [2, 3, 4]] };
  for (const rank of [1, 2, 3] as NaRank[]) {
    for (const kernelSize of ks[rank]) {
      for (const causal of combos(rank)) {
        for (const dtype of ['float32', 'float16'] as const) {
          for (const [dim, dimV] of [
            [32, 32],
            [8, 12],
            [6, 5],
          ] as const) {
            for (const hasRpb of [false, true]) {
              if (hasRpb && (causal.some((c) => c) || kernelSize.some((k) => k % 2 === 0))) continue;
              const shapes = tileShapes(rank, 64);
              const queryTile = shapes[(dim + (kernelSize[0] as number)) % shapes.length] as number[];
              out.push({
                path: 'plain',
                rank,
                kernelSize,
                causal,
                dim,
                dimV,
                dtype,
                queryTile,
                keyChunk: dim === 6 ? 16 : dim === 8 ? 32 : 64,
                stage: dtype === 'float16' && dim === 8 ? 'f16' : 'f32',
                hasRpb,
                hasLse: !(dim === 6),
                ...(dtype === 'float16' && dim === 32 ? { qHalf: true } : {}),
              });
            }
          }
        }
      }
    }
  }
  return out;
}

function checkKernel(kernel: GeneratedKernel, reflect: WgslReflect): void {
  const entry = reflect.entry.compute.find((f) => f.name === kernel.entryPoint);
  expect(entry, kernel.key).toBeDefined();
  expect(reflect.storage.map((s) => s.name), kernel.key).toEqual(kernel.bindings.map((b) => b.name));
  expect(reflect.storage.map((s) => s.binding), kernel.key).toEqual(kernel.bindings.map((_, i) => i));
  expect(reflect.uniforms.map((u) => u.binding), kernel.key).toEqual([kernel.bindings.length]);
  expect(kernel.code.startsWith(`// ${kernel.key}\n`), kernel.key).toBe(true);
  expect(kernel.code).toContain(`@workgroup_size(${kernel.workgroupSize[0]})`);
  expect(kernel.features.includes('shader-f16'), kernel.key).toBe(kernel.code.includes('enable f16;'));
  expect(kernel.code.includes('enable subgroups;'), kernel.key).toBe(false);
  // no inf/NaN literals anywhere (kernels.md §5)
  expect(/\binf\b|nan|1e38|3\.4e38/i.test(kernel.code), kernel.key).toBe(false);
}

describe('generateFusedForward: every variant of a spec grid parses (wgsl_reflect)', () => {
  const grid = specGrid();
  it(`${grid.length} specs`, () => {
    // Parsing costs ~0.1 s per shader, so each distinct shape (code with integer literals erased) is parsed once;
    // every kernel is still checked against its own bindings, uniforms and header.
    const parsed = new Map<string, WgslReflect>();
    const keys = new Set<string>();
    for (const spec of grid) {
      const kernel = generateFusedForward(spec);
      keys.add(kernel.key);
      const shape = kernel.code.replace(/\b\d+(\.\d+)?u?\b/g, '#');
      let reflect = parsed.get(shape);
      if (!reflect) {
        try {
          reflect = new WgslReflect(kernel.code);
        } catch (e) {
          throw new Error(`${kernel.key} does not parse: ${String(e)}\n${kernel.code}`);
        }
        parsed.set(shape, reflect);
      }
      checkKernel(kernel, reflect);
    }
    expect(keys.size).toBe(grid.length);
    expect(grid.length).toBeGreaterThan(150);
    expect(parsed.size).toBeGreaterThan(30);
  }, 120_000);

  it('every enumerated config of a few problems parses', () => {
    const problems = [
      problem(1, [40], [7], { dtype: 'float16', dim: 16 }),
      problem(2, [9, 13], [3, 4], { causal: [true, false], dim: 8 }),
      problem(3, [5, 6, 7], [3, 3, 3], { rpb: true, dim: 4 }),
    ];
    let n = 0;
    for (const p of problems) {
      for (const c of enumerateFusedForwardConfigs(p, LAVAPIPE)) {
        const k = generateFusedForward(fusedForwardSpec(p, c));
        checkKernel(k, new WgslReflect(k.code));
        expect(k.workgroupBytes).toBeLessThanOrEqual(LAVAPIPE.maxComputeWorkgroupStorageSize);
        n++;
      }
    }
    expect(n).toBeGreaterThan(20);
  }, 120_000);
});

describe('fused forward keys and code', () => {
  const base = plainSpec({ causal: [false, true], dim: 16, dimV: 16, queryTile: [8, 8], hasRpb: false });

  it('the same spec gives the same key and code; problems that share a spec share the kernel', () => {
    const a = generateFusedForward(base);
    const b = generateFusedForward({ ...base, kernelSize: [3, 5], causal: [false, true] });
    expect(b.key).toBe(a.key);
    expect(b.code).toBe(a.code);
    const config = { path: 'plain' as const, queryTile: [8, 8], keyTile: [4, 8], stage: 'f32' as const };
    const p1 = problem(2, [9, 13], [3, 5], { causal: [false, true], dim: 16 });
    const p2 = problem(2, [30, 17], [3, 5], { causal: [false, true], dim: 16, dilation: [2, 3] });
    expect(generateFusedForward(fusedForwardSpec(p1, config)).code).toBe(generateFusedForward(fusedForwardSpec(p2, config)).code);
    expect(generateFusedForward(fusedForwardSpec(p1, config)).key).toBe(a.key);
  });

  it('every baked field changes the key', () => {
    const changed: FusedForwardSpec[] = [
      { ...base, rank: 3, kernelSize: [3, 5, 3], causal: [false, true, false], queryTile: [4, 4, 4] },
      { ...base, kernelSize: [3, 7] },
      { ...base, causal: [true, true] },
      { ...base, dim: 32 },
      { ...base, dimV: 8 },
      { ...base, dtype: 'float16' },
      { ...base, dtype: 'float16', stage: 'f16' },
      { ...base, queryTile: [4, 16] },
      { ...base, keyChunk: 16 },
      { ...base, hasLse: false },
      { ...base, causal: [false, false], hasRpb: true },
      { ...base, dtype: 'float16', qHalf: true },
    ];
    const keys = new Set([generateFusedForward(base).key, ...changed.map((s) => generateFusedForward(s).key)]);
    expect(keys.size).toBe(changed.length + 1);
  });

  it('float16 inputs with head dim > 64 keep q in f16 registers and scale the dot product instead', () => {
    const small = fusedForwardSpec(problem(2, [8, 8], [3, 3], { dim: 64, dtype: 'float16' }), { path: 'plain', queryTile: [4, 8], keyTile: [4, 4], stage: 'f16' });
    const big = fusedForwardSpec(problem(2, [8, 8], [3, 3], { dim: 72, dtype: 'float16' }), { path: 'plain', queryTile: [4, 8], keyTile: [4, 4], stage: 'f16' });
    const f32 = fusedForwardSpec(problem(2, [8, 8], [3, 3], { dim: 72 }), { path: 'plain', queryTile: [4, 8], keyTile: [4, 4], stage: 'f32' });
    expect(small.qHalf).toBeUndefined();
    expect(big.qHalf).toBe(true);
    expect(f32.qHalf).toBeUndefined();
    const code = generateFusedForward(big).code;
    expect(code).toContain('var q_0 = vec4<f16>(0.0);');
    expect(code).toContain('* params.scale_log2;');
    expect(code).not.toContain('load_q(qbase, 0u) * params.scale_log2');
  });

  it('bakes the spec as UPPER_SNAKE consts after the key', () => {
    const k = generateFusedForward(base);
    for (const line of ['const KERNEL_SIZE_1: i32 = 5;', 'const IS_CAUSAL_1: bool = true;', 'const QUERY_TILE_0: u32 = 8u;', 'const HEAD_DIM: u32 = 16u;', 'const KEY_CHUNK: u32 = 32u;', 'const WORKGROUP_SIZE: u32 = 64u;']) {
      expect(k.code).toContain(line);
    }
  });

  it('rejects specs no kernel exists for', () => {
    const bad: [Partial<FusedForwardSpec>, RegExp][] = [
      [{ queryTile: [8, 3] }, /query tile product 24 is not one of 16, 32, 64, 128/],
      [{ keyChunk: 48 }, /key chunk 48 is not one of 16, 32, 64/],
      [{ stage: 'f16' }, /f16 staging needs float16 inputs/],
      [{ hasRpb: true }, /rpb needs a non-causal window and odd kernel sizes/],
      [{ kernelSize: [1, 3] }, /kernel sizes must be integers >= 2/],
      [{ queryTile: [64] }, /kernelSize, causal and queryTile need 2 entries/],
      [{ qHalf: true }, /f16 q registers need float16 inputs/],
    ];
    for (const [patch, msg] of bad) {
      expect(() => generateFusedForward({ ...base, ...patch })).toThrow(NattenArgumentError);
      expect(() => generateFusedForward({ ...base, ...patch })).toThrow(msg);
    }
  });
});

describe('fused forward configs', () => {
  it('the tile table is query {16,32,64,128} x key {16,32,64}', () => {
    expect(FUSED_FORWARD_TILES.map(([q, k]) => `${q}x${k}`).join(' ')).toBe('16x16 16x32 16x64 32x16 32x32 32x64 64x16 64x32 64x64 128x16 128x32 128x64');
  });

  it('tileShapes lists every power-of-two factorization; canonical key tiles have the right product', () => {
    expect(tileShapes(1, 64)).toEqual([[64]]);
    expect(tileShapes(2, 16).map((s) => s.join('x'))).toEqual(['16x1', '8x2', '4x4', '2x8', '1x16']);
    expect(tileShapes(3, 64)).toHaveLength(28);
    expect(tileShapes(2, 24)).toEqual([]);
    expect(canonicalKeyTile(2, 32)).toEqual([4, 8]);
    expect(canonicalKeyTile(3, 16)).toEqual([2, 2, 4]);
  });

  it('workgroup memory: staged K and V rows padded to vec4, halved by f16 staging', () => {
    expect(fusedForwardWorkgroupBytes({ dim: 64, dimV: 64, keyChunk: 32, stage: 'f32' })).toBe(32 * 2 * 64 * 4);
    expect(fusedForwardWorkgroupBytes({ dim: 64, dimV: 64, keyChunk: 32, stage: 'f16' })).toBe(32 * 2 * 64 * 2);
    expect(fusedForwardWorkgroupBytes({ dim: 6, dimV: 5, keyChunk: 16, stage: 'f32' })).toBe(16 * (8 + 8) * 4);
  });

  it('enumerates only configs that fit the device, and more with more memory', () => {
    const p = problem(2, [64, 64], [7, 7], { dim: 64, dtype: 'float16' });
    const browser = enumerateFusedForwardConfigs(p, BROWSER);
    const lavapipe = enumerateFusedForwardConfigs(p, LAVAPIPE);
    expect(browser.length).toBeGreaterThan(0);
    expect(lavapipe.length).toBeGreaterThan(browser.length);
    for (const c of browser) {
      expect(fusedForwardConfigProblem(p, c, BROWSER)).toBeUndefined();
      expect(fusedForwardWorkgroupBytes(fusedForwardSpec(p, c))).toBeLessThanOrEqual(16384);
    }
    // 64 keys of f32-staged D=64 rows need 32 KiB: only with 32 KiB and f16 staging
    expect(browser.some((c) => c.keyTile.reduce((a, b) => a * b) === 64 && c.stage === 'f32')).toBe(false);
    expect(lavapipe.some((c) => c.keyTile.reduce((a, b) => a * b) === 64 && c.stage === 'f32')).toBe(true);
    // Query tiles never exceed the next power of two of the group extent
    const small = enumerateFusedForwardConfigs(problem(2, [3, 5], [3, 3], { dim: 8 }), LAVAPIPE);
    expect(new Set(small.map((c) => c.queryTile.join('x')))).toEqual(new Set(['2x8', '4x4', '4x8']));
    expect(small).toHaveLength(3 * 3);
  });

  it('dilation groups smaller than every tile still get configs: the smallest tiles with the fewest idle lanes', () => {
    // 1-D L=9, d=2: groups of 5 and 4
    const one = enumerateFusedForwardConfigs(problem(1, [9], [3], { dilation: [2], dim: 4 }), LAVAPIPE);
    expect(new Set(one.map((c) => c.queryTile.join('x')))).toEqual(new Set(['16']));
    // 2-D 12x8, d=(3,4): groups 4x2; product-16 shapes 8x2 and 4x4 cover them with 16 lanes, the others with 32+
    const two = enumerateFusedForwardConfigs(problem(2, [12, 8], [4, 2], { dilation: [3, 4], dim: 8 }), LAVAPIPE);
    expect(new Set(two.map((c) => c.queryTile.join('x')))).toEqual(new Set(['8x2', '4x4']));
    // 3-D 2x2x3 fits 2x2x4 without the fallback
    const three = enumerateFusedForwardConfigs(problem(3, [2, 2, 3], [2, 2, 2], { dim: 8 }), LAVAPIPE);
    expect(new Set(three.map((c) => c.queryTile.join('x')))).toEqual(new Set(['2x2x4']));
    for (const p of [problem(1, [9], [3], { dilation: [2], dim: 4 }), problem(2, [12, 8], [4, 2], { dilation: [3, 4], dim: 8 })]) {
      expect(() => defaultFusedForwardConfig(p, BROWSER)).not.toThrow();
    }
  });

  it('explains why a config cannot run', () => {
    const p = problem(2, [16, 16], [3, 3], { dim: 128 });
    expect(fusedForwardConfigProblem(p, { path: 'plain', queryTile: [8, 8], keyTile: [8, 8], stage: 'f32' }, BROWSER)).toMatch(/needs 65536 bytes of workgroup memory; this device allows 16384/);
    expect(fusedForwardConfigProblem(p, { path: 'plain', queryTile: [16, 8], keyTile: [4, 4], stage: 'f32' }, { ...BROWSER, maxComputeInvocationsPerWorkgroup: 64 })).toMatch(/needs 128 invocations per workgroup; this device allows 64/);
    expect(fusedForwardConfigProblem(p, { path: 'plain', queryTile: [8, 8], keyTile: [4, 4], stage: 'f16' }, BROWSER)).toMatch(/stage 'f16' needs float16 inputs/);
    expect(fusedForwardConfigProblem(p, { path: 'plain', queryTile: [8, 2], keyTile: [4, 2], stage: 'f32' }, BROWSER)).toMatch(/tile products 16x8 are not compiled/);
  });

  it('the default config is valid, fits the browser default, and picks 32-query tiles (f16 staging for f16) for big problems', () => {
    for (const [p, expected] of [
      [problem(1, [200], [7]), undefined],
      [problem(1, [4096], [7]), [32]],
      [problem(2, [128, 128], [7, 7], { dim: 64, dtype: 'float16' }), [4, 8]],
      [problem(3, [32, 32, 32], [5, 5, 5], { dim: 64, dtype: 'float16' }), [2, 4, 4]],
    ] as const) {
      const c = defaultFusedForwardConfig(p, BROWSER);
      expect(fusedForwardConfigProblem(p, c, BROWSER)).toBeUndefined();
      if (expected) expect(c.queryTile).toEqual(expected);
      expect(c.keyTile.reduce((a, b) => a * b)).toBe(32);
      expect(c.stage).toBe(p.dtype === 'float16' ? 'f16' : 'f32');
    }
    // tiny problem: a smaller tile wins over idle lanes
    const tiny = defaultFusedForwardConfig(problem(2, [4, 4], [3, 3], { dim: 8 }), BROWSER);
    expect(tiny.queryTile).toEqual([4, 4]);
    expect(() => defaultFusedForwardConfig(problem(1, [40], [3], { dim: 1024 }), BROWSER)).toThrow(/no WebGPU kernel configuration fits head_dim=1024/);
  });

  it('dispatch: uniforms and workgroup count = B * H * prod(d) * prod(tiles over ceil(L/d))', () => {
    const p = problem(2, [9, 13], [3, 4], { dilation: [2, 3] });
    const { uniforms, workgroups } = fusedForwardDispatch(p, [4, 2]);
    // ceil(9/2)=5 -> 2 tiles, ceil(13/3)=5 -> 3 tiles; 1 batch, 2 heads, 6 groups
    expect(workgroups).toBe(1 * 2 * 6 * 2 * 3);
    expect(uniforms).toMatchObject({ batch: 1, heads: 2, heads_kv: 2, gqa: 1, tokens: 117, total_wg: 72, len_0: 9, len_1: 13, dil_0: 2, dil_1: 3, str_0: 1, ntile_0: 2, ntile_1: 3 });
    expect(uniforms.scale_log2).toBeCloseTo(Math.LOG2E / Math.sqrt(32), 6);
    expect(new Set(fusedForwardUniformFields(2).map((f) => f.name))).toEqual(new Set(Object.keys(uniforms)));
  });
});
