import { describe, expect, it } from 'vitest';
import { type FusedForwardMmaSpec, fusedForwardMmaSpecProblem, fusedForwardMmaWorkgroupBytes, generateFusedForwardMma, mmaPackedCoords, mmaPackedMaxExtent } from '../src/index.ts';
import { workgroupVars } from './workgroup-vars.ts';

const base: FusedForwardMmaSpec = {
  rank: 2,
  kernelSize: [13, 13],
  causal: [false, false],
  dim: 64,
  dimV: 64,
  queryTile: [16, 8],
  keyChunk: 32,
  subgroups: 8,
  hasLse: true,
};

describe('tensor-core (mma) fused forward generator', () => {
  it('emits the subgroup-matrix enables, the uniformity diagnostic by its real name, 32 lanes per subgroup', () => {
    const k = generateFusedForwardMma(base);
    expect(k.code).toContain('enable chromium_experimental_subgroup_matrix;');
    // The rule is `chromium.subgroup_matrix_uniformity`: an unknown name is only a warning, and the kernel (whose
    // matrix offsets depend on the subgroup index) then fails to compile.
    expect(k.code).toContain('diagnostic(off, chromium.subgroup_matrix_uniformity);');
    expect(k.workgroupSize).toEqual([256, 1, 1]);
    expect(k.features).toEqual(['shader-f16', 'subgroups', 'chromium-experimental-subgroup-matrix']);
    expect(k.workgroupBytes).toBe(fusedForwardMmaWorkgroupBytes(base));
    expect(k.bindings.map((b) => b.name)).toEqual(['query', 'key', 'value', 'output', 'logsumexp']);
    expect(generateFusedForwardMma({ ...base, hasLse: false }).bindings.map((b) => b.name)).toEqual(['query', 'key', 'value', 'output']);
    expect(generateFusedForwardMma({ ...base, hasRpb: true }).bindings.map((b) => b.name)).toEqual(['query', 'key', 'value', 'rpb', 'output', 'logsumexp']);
  });
  it('is pure and keyed by every field', () => {
    expect(generateFusedForwardMma(base).code).toBe(generateFusedForwardMma({ ...base }).code);
    const variants: FusedForwardMmaSpec[] = [
      base,
      { ...base, keyChunk: 64, subgroups: 4, queryTile: [8, 8] },
      { ...base, causal: [true, false] },
      { ...base, dimV: 32 },
      { ...base, kernelSize: [13, 11] },
      { ...base, hasLse: false },
      { ...base, hasRpb: true },
    ];
    expect(new Set(variants.map((s) => generateFusedForwardMma(s).key)).size).toBe(variants.length);
  });
  it('rejects specs it cannot generate, naming the rule', () => {
    expect(fusedForwardMmaSpecProblem({ ...base, subgroups: 3 })).toMatch(/subgroups=3 is not one of 2, 4, 8/);
    // P over the staged K rows: only where they hold it, and not with K and V in turn.
    expect(fusedForwardMmaSpecProblem({ ...base, pOverK: true, kvInTurn: true })).toMatch(/pOverK needs K and V side by side/);
    expect(fusedForwardMmaSpecProblem({ ...base, pOverK: true, keyChunk: 16, subgroups: 8, queryTile: [8, 16], tightScratch: true })).toMatch(/pOverK: P \(128 rows of 16\) does not fit the chunk's K rows \(16 of 72\)/);
    expect(fusedForwardMmaSpecProblem({ ...base, pOverK: true, keyChunk: 16, subgroups: 4, queryTile: [8, 8], tightScratch: true })).toBeUndefined();
    expect(fusedForwardMmaWorkgroupBytes({ ...base, keyChunk: 16, subgroups: 4, tightScratch: true }) - fusedForwardMmaWorkgroupBytes({ ...base, keyChunk: 16, subgroups: 4, tightScratch: true, pOverK: true })).toBe(64 * 16 * 2);
    expect(fusedForwardMmaSpecProblem({ ...base, queryTile: [8, 8] })).toMatch(/query tile \[8, 8\] must have 128 queries \(16 per subgroup\)/);
    expect(fusedForwardMmaSpecProblem({ ...base, keyChunk: 8 })).toMatch(/key chunk 8 is not one of 16, 32, 64/);
    expect(fusedForwardMmaSpecProblem({ ...base, dim: 40 })).toMatch(/head dims 40\/64 must be multiples of 16/);
    expect(fusedForwardMmaSpecProblem({ ...base, queryTile: [16] })).toMatch(/need 2 entries/);
    expect(() => generateFusedForwardMma({ ...base, keyChunk: 48 })).toThrow(/generateFusedForwardMma: key chunk 48/);
    expect(fusedForwardMmaSpecProblem({ ...base, hasRpb: true, causal: [true, false] })).toMatch(/rpb needs a non-causal window and odd kernel sizes/);
    expect(fusedForwardMmaSpecProblem({ ...base, hasRpb: true, kernelSize: [12, 13] })).toMatch(/rpb needs a non-causal window/);
    // S rows padded only over unpadded ones (the padded layout pads them already); 16-byte loads only for float16.
    expect(fusedForwardMmaSpecProblem({ ...base, padS: true })).toMatch(/padS needs tightScratch \(the padded layout already pads S\)/);
    const tight4: FusedForwardMmaSpec = { ...base, keyChunk: 16, subgroups: 4, queryTile: [8, 8], tightScratch: true };
    expect(fusedForwardMmaSpecProblem({ ...tight4, padS: true })).toBeUndefined();
    // padS: 4 more floats per S row (64 rows), P rows unchanged.
    expect(fusedForwardMmaWorkgroupBytes({ ...tight4, padS: true }) - fusedForwardMmaWorkgroupBytes(tight4)).toBe(64 * 4 * 4);
    // wideS: S rows of the chunk plus 8 floats in either layout (8 more than tight, 4 more than padded); not with padS.
    expect(fusedForwardMmaWorkgroupBytes({ ...tight4, wideS: true }) - fusedForwardMmaWorkgroupBytes(tight4)).toBe(64 * 8 * 4);
    const padded4: FusedForwardMmaSpec = { ...base, keyChunk: 16, subgroups: 4, queryTile: [8, 8] };
    expect(fusedForwardMmaWorkgroupBytes({ ...padded4, wideS: true }) - fusedForwardMmaWorkgroupBytes(padded4)).toBe(64 * 4 * 4);
    expect(fusedForwardMmaSpecProblem({ ...tight4, wideS: true })).toBeUndefined();
    expect(fusedForwardMmaSpecProblem({ ...tight4, padS: true, wideS: true })).toMatch(/padS and wideS both widen the S rows \(by 4 and by 8 floats\); take one/);
    expect(generateFusedForwardMma({ ...padded4, wideS: true }).code).toContain('const LDS: u32 = 24u;');
    expect(fusedForwardMmaSpecProblem({ ...base, split: true, wideLoads: true })).toMatch(/wideLoads is for float16 tensors \(the split loads f32\)/);
    expect(fusedForwardMmaSpecProblem({ ...base, wideLoads: true })).toBeUndefined();
  });
  it('fits 48 KiB of workgroup memory at 8 subgroups with 32-key chunks up to head dim 128', () => {
    for (const dim of [16, 64, 128]) expect(fusedForwardMmaWorkgroupBytes({ dim, dimV: dim, keyChunk: 32, subgroups: 8 })).toBeLessThanOrEqual(49152);
    expect(fusedForwardMmaWorkgroupBytes({ dim: 128, dimV: 128, keyChunk: 64, subgroups: 8 })).toBeGreaterThan(49152);
  });
  it('keeps every workgroup variable a multiple of 16 bytes and every matrix row stride 16-byte aligned', () => {
    for (const dim of [16, 48, 128]) {
      for (const [keyChunk, subgroups, queryTile] of [
        [32, 8, [16, 8]],
        [64, 2, [4, 8]],
      ] as const) {
        const code = generateFusedForwardMma({ ...base, dim, dimV: dim, keyChunk, subgroups, queryTile }).code;
        for (const v of workgroupVars(code)) expect(v.bytes % 16, `${v.name} at dim ${dim}`).toBe(0);
        for (const ld of ['LDK', 'LDV', 'LDP']) expect((Number(new RegExp(`const ${ld}: u32 = (\\d+)u;`).exec(code)?.[1]) * 2) % 16).toBe(0);
        expect((Number(/const LDS: u32 = (\d+)u;/.exec(code)?.[1]) * 4) % 16).toBe(0);
      }
    }
  });
  it('parenthesizes the window test (a < b, c > d inside a call parses as a template list)', () => {
    const code = generateFusedForwardMma(base).code;
    expect(code).toContain('(k0.x >= ws_0) && (k0.x < we_0) && (k0.y >= ws_1) && (k0.y < we_1)');
    expect(code).not.toMatch(/vec4<bool>\([^;]*[^(]k\d\.\w < we_/);
  });
  it('rank 1 computes key coordinates from the box index and skips the test for chunks inside the window', () => {
    const code = generateFusedForwardMma({ ...base, rank: 1, kernelSize: [127], causal: [true], queryTile: [128] }).code;
    expect(code).toContain('let inside = bs_0 + i32(c0) >= ws_0 && bs_0 + i32(c0 + KEY_CHUNK) <= we_0;');
    expect(code).toContain('if (!inside) {');
    expect(code).not.toContain('kc_sh[cc0]');
  });
  it('compiles dilation and stride 1 in on request (unitSteps): no uniform dilation or stride is read', () => {
    const plain = generateFusedForwardMma(base).code;
    const unit = generateFusedForwardMma({ ...base, unitSteps: true }).code;
    expect(plain).toMatch(/params\.dil_1/);
    expect(plain).toMatch(/params\.str_0/);
    expect(unit).not.toMatch(/params\.(dil|str)_\d/);
    expect(unit).toContain('na_window_1(qf_1 * 1i + g_1, params.len_1, 1i, 1i)');
    // The uniforms keep their fields (one layout for both texts).
    expect(unit).toContain('dil_0: i32,');
  });
  it('writes O through the scratch in rounds of what a scratch row holds, one 16-byte store per lane and fragment', () => {
    // 16-key chunks: one 16-column block per row, so four rounds for head dim 64, and no barrier after the last.
    const code = generateFusedForwardMma({ ...base, keyChunk: 16, subgroups: 4, queryTile: [8, 8], tightScratch: true, padS: true }).code;
    const epilogue = code.slice(code.indexOf('// ---- epilogue'));
    expect(epilogue.match(/subgroupMatrixStore/g)).toHaveLength(4);
    expect(epilogue.match(/workgroupBarrier\(\)/g)).toHaveLength(7);
    expect(epilogue).toContain('output[orow * 8u + 6u + hf] = pack8(lo * inv_l, hi * inv_l);');
    expect(code).toContain('var<storage, read_write> output: array<vec4<u32>>;');
    // 32-key chunks hold two blocks per row: two rounds.
    const wide = generateFusedForwardMma(base).code;
    expect(wide.slice(wide.indexOf('// ---- epilogue')).match(/workgroupBarrier\(\)/g)).toHaveLength(3);
    // float32 (split): f32 stores, two per lane and fragment.
    const split = generateFusedForwardMma({ ...base, split: true }).code;
    expect(split).toContain('output[orow * DV4 + 12u + 2u * hf + 1u] = hi * inv_l;');
  });
  it('skips the matrix work of chunks outside the box-linear span of a subgroup’s windows', () => {
    const code = generateFusedForwardMma(base).code;
    expect(code).toContain('let lin_lo = select(2147483647, (ws_0 - bs_0) * bw_1 + (ws_1 - bs_1), valid);');
    expect(code).toContain('let lin_hi = select(-1, (we_0 - 1 - bs_0) * bw_1 + (we_1 - 1 - bs_1), valid);');
    expect(code).toContain('let need = i32(c0) <= span_hi && i32(c0 + KEY_CHUNK) > span_lo;');
    expect(code.match(/if \(need\) \{/g)?.length).toBe(3);
  });
  it('divides by float reciprocal on request (fastDivide) only where the staging decodes per chunk: 3-D and the split, not the 2-D cursor or rank 1', () => {
    const fast = (spec: FusedForwardMmaSpec): boolean => {
      const code = generateFusedForwardMma({ ...spec, fastDivide: true }).code;
      const uses = code.includes('box_divmod(krest');
      expect(code.includes('fn box_divmod'), 'the function is declared exactly where it is used').toBe(uses);
      expect(code.includes('let inv_bw_1 = 1.0 / f32(bw_1);'), 'the reciprocals are declared exactly where they are used').toBe(uses);
      return uses;
    };
    const threeD = { ...base, rank: 3 as const, kernelSize: [3, 7, 7], causal: [false, false, false], queryTile: [2, 4, 4], keyChunk: 16, subgroups: 2 };
    expect(fast(threeD)).toBe(true);
    expect(fast({ ...base, split: true })).toBe(true);
    expect(fast(base)).toBe(false);
    expect(fast({ ...base, rank: 1, kernelSize: [13], causal: [false], queryTile: [128], split: true })).toBe(false);
    expect(generateFusedForwardMma(threeD).code.includes('box_divmod')).toBe(false);
  });
  it('packs key coordinates on request (packedCoords): one u32 per key, four tested per vec4 load, ranks 2 and 3 without rpb', () => {
    const packed = generateFusedForwardMma({ ...base, packedCoords: true });
    expect(packed.code).toContain('var<workgroup> kc_sh: array<vec4<u32>, 8>;');
    expect(packed.code).toContain('kc_sh[st_row / 4u][st_row % 4u] = pkc;');
    expect(packed.code).toContain('pkc = u32(kg_0 - bs_0) | (u32(kg_1 - bs_1) << 16u);');
    // A quarter of the coordinate bytes.
    expect(fusedForwardMmaWorkgroupBytes(base) - packed.workgroupBytes).toBe(12 * base.keyChunk);
    expect(packed.workgroupBytes).toBe(fusedForwardMmaWorkgroupBytes({ ...base, packedCoords: true }));
    expect(generateFusedForwardMma(base).code).not.toContain('klo_0');
    expect(fusedForwardMmaSpecProblem({ ...base, packedCoords: true, hasRpb: true })).toMatch(/packedCoords needs rank 2 or 3 without rpb/);
    expect(fusedForwardMmaSpecProblem({ ...base, rank: 1, kernelSize: [13], causal: [false], queryTile: [128], packedCoords: true })).toMatch(/packedCoords needs rank 2 or 3/);
    // Field widths: 16 bits per axis in 2-D, 10 in 3-D; keys past the box are all ones (outside every window while
    // box widths stay below 2^bits).
    expect(mmaPackedMaxExtent(2)).toBe(65535);
    expect(mmaPackedMaxExtent(3)).toBe(1023);
    const p3 = mmaPackedCoords(3);
    expect(p3.pack((a) => `o${a}`)).toBe('u32(o0) | (u32(o1) << 10u) | (u32(o2) << 20u)');
    expect(p3.inw4('kp')).toContain('((kp >> vec4<u32>(20u)) - vec4<u32>(klo_2)) < vec4<u32>(kcnt_2)');
    expect(p3.laneOf({ lo: (a) => `l${a}`, hi: (a) => `h${a}`, base: (a) => `b${a}`, valid: 'ok' })).toContain('let kcnt_0 = select(0u, u32(h0 - l0), ok);');
  });
});
