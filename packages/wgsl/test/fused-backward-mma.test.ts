import { describe, expect, it } from 'vitest';
import { type FusedBackwardMmaSpec, fusedBackwardMmaSpecProblem, fusedBackwardMmaWorkgroupBytes, generateFusedBackwardMmaDkv, generateFusedBackwardMmaDq } from '../src/index.ts';
import { workgroupVars } from './workgroup-vars.ts';

const base: FusedBackwardMmaSpec = { rank: 2, kernelSize: [7, 9], causal: [false, true], dim: 64, dimV: 32, tile: [8, 8], chunk: 32, subgroups: 4 };

describe('tensor-core (mma) backward generators', () => {
  it('rejects specs they cannot generate, naming the rule', () => {
    expect(fusedBackwardMmaSpecProblem({ ...base, tile: [8] })).toMatch(/kernelSize, causal and tile need 2 entries/);
    expect(fusedBackwardMmaSpecProblem({ ...base, subgroups: 8, tile: [8, 8] })).toMatch(/tile \[8, 8\] must have 128 rows \(16 per subgroup\)/);
    expect(fusedBackwardMmaSpecProblem({ ...base, subgroups: 3 })).toMatch(/subgroups=3 is not one of 2, 4, 8/);
    expect(fusedBackwardMmaSpecProblem({ ...base, chunk: 64 })).toMatch(/chunk 64 is not one of 16, 32/);
    expect(fusedBackwardMmaSpecProblem({ ...base, dimV: 40 })).toMatch(/head dims 64\/40 must be multiples of 16/);
    expect(fusedBackwardMmaSpecProblem(base)).toBeUndefined();
    expect(fusedBackwardMmaSpecProblem({ ...base, padS: true })).toMatch(/padS needs tightScratch \(the padded layout already pads the scratch\)/);
    expect(fusedBackwardMmaSpecProblem({ ...base, tightScratch: true, padS: true })).toBeUndefined();
    expect(fusedBackwardMmaSpecProblem({ ...base, tightScratch: true, padS: true, wideS: true })).toMatch(/padS and wideS both widen the scratch rows \(by 4 and by 8 floats\); take one/);
    expect(fusedBackwardMmaSpecProblem({ ...base, wideS: true })).toBeUndefined();
    // wideS: both f32 scratches of the dkv kernel (64 rows) of chunk + 8 floats against chunk + 4.
    expect(fusedBackwardMmaWorkgroupBytes({ ...base, wideS: true }, 'dkv') - fusedBackwardMmaWorkgroupBytes(base, 'dkv')).toBe(2 * 64 * 4 * 4);
    expect(generateFusedBackwardMmaDq({ ...base, wideS: true }).code).toContain(`const LDS: u32 = ${base.chunk + 8}u;`);
    expect(() => generateFusedBackwardMmaDq({ ...base, chunk: 8 })).toThrow(/generateFusedBackwardMmaDq: chunk 8 is not one of 16, 32/);
    expect(() => generateFusedBackwardMmaDkv({ ...base, subgroups: 1 })).toThrow(/generateFusedBackwardMmaDkv: subgroups=1/);
  });
  it('declare their bindings in dispatch order, and their workgroup memory', () => {
    const dq = generateFusedBackwardMmaDq(base);
    const dkv = generateFusedBackwardMmaDkv(base);
    expect(dq.bindings.map((b) => b.name)).toEqual(['query', 'key', 'value', 'output', 'grad_output', 'logsumexp', 'grad_query', 'delta']);
    expect(dkv.bindings.map((b) => b.name)).toEqual(['query', 'key', 'value', 'grad_output', 'logsumexp', 'delta', 'grad_key', 'grad_value']);
    expect(dq.workgroupBytes).toBe(fusedBackwardMmaWorkgroupBytes(base, 'dq'));
    expect(dkv.workgroupBytes).toBe(fusedBackwardMmaWorkgroupBytes(base, 'dkv'));
    expect(dkv.workgroupBytes).toBeLessThanOrEqual(49152);
    expect(dq.code).toContain('diagnostic(off, chromium.subgroup_matrix_uniformity);');
    expect(generateFusedBackwardMmaDq({ ...base })).toEqual(dq);
  });
  it('runs the dq kernel with S and dP through one scratch on request (sharedScratch), not the dkv kernel', () => {
    const shared = { ...base, sharedScratch: true };
    const dq = generateFusedBackwardMmaDq(shared);
    // One 64-row f32 scratch of 32 + 4 floats less, and no dP array.
    expect(fusedBackwardMmaWorkgroupBytes(base, 'dq') - dq.workgroupBytes).toBe(64 * 36 * 4);
    expect(dq.workgroupBytes).toBe(fusedBackwardMmaWorkgroupBytes(shared, 'dq'));
    expect(dq.code).not.toContain('dp_sh');
    expect(dq.code).toContain('sreg_0');
    expect(generateFusedBackwardMmaDq(base).code).not.toContain('sreg_0');
    expect(() => generateFusedBackwardMmaDkv(shared)).toThrow(/generateFusedBackwardMmaDkv: sharedScratch is a dq-kernel option/);
  });
  it('runs the dkv kernel lean on request (leanScratch): one f32 scratch, P^T then dS^T through one f16 array, not the dq kernel', () => {
    const lean = { ...base, leanScratch: true };
    const dkv = generateFusedBackwardMmaDkv(lean);
    // One 64-row f32 scratch of 32 + 4 floats and one 64-row f16 array of 32 + 8 halves less.
    expect(fusedBackwardMmaWorkgroupBytes(base, 'dkv') - dkv.workgroupBytes).toBe(64 * 36 * 4 + 64 * 40 * 2);
    expect(dkv.workgroupBytes).toBe(fusedBackwardMmaWorkgroupBytes(lean, 'dkv'));
    expect(dkv.code).not.toContain('dp_sh');
    expect(dkv.code).not.toContain('ds_sh');
    // S^T read into registers before dP^T goes over it; dS^T kept in registers until dV has read P^T, then stored
    // over it, with a barrier on each side.
    expect(dkv.code).toContain('sreg_0');
    expect(dkv.code).toMatch(/dsreg_0 = dh;/);
    const at = (x: string): number => dkv.code.indexOf(x);
    const between = (a: number, b: number): number => dkv.code.slice(a, b).split('workgroupBarrier();').length - 1;
    const dvAcc = at('dv_0 = subgroupMatrixMultiplyAccumulate');
    const dsStore = at('= dsreg_0.x;');
    const dkAcc = at('dk_0 = subgroupMatrixMultiplyAccumulate');
    expect(dvAcc).toBeGreaterThan(0);
    expect(dsStore).toBeGreaterThan(dvAcc);
    expect(dkAcc).toBeGreaterThan(dsStore);
    expect(between(dvAcc, dsStore)).toBe(1);
    expect(between(dsStore, dkAcc)).toBe(1);
    expect(() => generateFusedBackwardMmaDq(lean)).toThrow(/generateFusedBackwardMmaDq: leanScratch is a dkv-kernel option/);
  });
  it("stage the dq kernel's K and V, and the dkv kernel's Q and dO, 16 bytes at a time on request (wideLoads)", () => {
    const wide = { ...base, wideLoads: true };
    const dq = generateFusedBackwardMmaDq(wide);
    expect(dq.code).toMatch(/var<storage, read> key: array<vec4<u32>>;/);
    expect(dq.code).toMatch(/var<storage, read> value: array<vec4<u32>>;/);
    expect(dq.code).toContain('load_k8(krow * (HEAD_DIM / 8u)');
    expect(dq.code).not.toContain('fn load_k(');
    expect(generateFusedBackwardMmaDq(base).code).toMatch(/var<storage, read> key: array<vec4<f16>>;/);
    const dkv = generateFusedBackwardMmaDkv(wide);
    expect(dkv.code).toMatch(/var<storage, read> query: array<vec4<u32>>;/);
    expect(dkv.code).toMatch(/var<storage, read> grad_output: array<vec4<u32>>;/);
    // K and V are gathered once, through the vec4<f16> loaders.
    expect(dkv.code).toMatch(/var<storage, read> key: array<vec4<f16>>;/);
    expect(dkv.code).toContain('load_q8(select(0u, qrow * (HEAD_DIM / 8u), in_box)');
    expect(dkv.code).toContain('load_do8(select(0u, qrow * (HEAD_DIM_V / 8u), in_box)');
    expect(dkv.code).not.toContain('fn load_q(');
    expect(dkv.workgroupBytes).toBe(generateFusedBackwardMmaDkv(base).workgroupBytes);
  });
  it("widens the dkv kernel's first scratch alone on request (wideFirst): S^T rows of the chunk plus 8 floats, dP^T's as the layout says", () => {
    const tight = { ...base, chunk: 16, tightScratch: true, subgroups: 2, tile: [4, 8] };
    const first = generateFusedBackwardMmaDkv({ ...tight, wideFirst: true });
    expect(first.code).toContain('const LDS: u32 = 24u;');
    expect(first.code).toContain('const LDD: u32 = 16u;');
    expect(first.code).toContain('var<workgroup> s_sh: array<f32, 768>;');
    expect(first.code).toContain('var<workgroup> dp_sh: array<f32, 512>;');
    // dP^T stored, read by the P/dS pass and by the epilogue at its own stride.
    expect(first.code).toContain('subgroupMatrixStore<row_major>(&dp_sh, rbase * LDD + 0u, acc, LDD);');
    expect(first.code).toContain('let drow = row * LDD;');
    expect(first.code).toContain('dp_sh[drow + cc]');
    expect(first.code).toMatch(/subgroupMatrixStore<row_major>\(&dp_sh, rbase \* LDD \+ 0u, dv_0, LDD\);|subgroupMatrixStore<row_major>\(&dp_sh, rbase \* LDD \+ 0u, dk_\d, LDD\);/);
    expect(first.code).toContain('let e = row * LDD + 0u + 8u * hf;');
    // With exact dP^T rows the same memory as both padded by 4 (32 rows x (24 + 16) = 32 x (20 + 20) floats).
    expect(first.workgroupBytes).toBe(generateFusedBackwardMmaDkv({ ...tight, padS: true }).workgroupBytes);
    expect(generateFusedBackwardMmaDkv({ ...tight, padS: true, wideFirst: true }).code).toContain('const LDD: u32 = 20u;');
    expect(generateFusedBackwardMmaDkv(tight).code).not.toContain('LDD');
    expect(fusedBackwardMmaSpecProblem({ ...tight, wideFirst: true, wideS: true })).toMatch(/wideFirst widens the first of two scratches: not with wideS/);
    expect(fusedBackwardMmaSpecProblem({ ...tight, wideFirst: true, leanScratch: true })).toMatch(/leanScratch \(one scratch\)/);
    expect(() => generateFusedBackwardMmaDq({ ...base, wideFirst: true })).toThrow(/generateFusedBackwardMmaDq: wideFirst is a dkv-kernel option/);
  });
  it('leaves the staged rows\' coordinate table out in rank 1 unless the bias or d_rpb looks coordinates up', () => {
    const one = { ...base, rank: 1 as const, kernelSize: [7], causal: [false], tile: [base.tile.reduce((a, b) => a * b, 1)] };
    const dq1 = generateFusedBackwardMmaDq(one);
    const dkv1 = generateFusedBackwardMmaDkv(one);
    expect(dq1.code).not.toContain('kc_sh');
    expect(dkv1.code).not.toContain('qc_sh');
    // 16 bytes per staged row less.
    expect(generateFusedBackwardMmaDq(base).workgroupBytes - dq1.workgroupBytes).toBe(16 * base.chunk);
    expect(generateFusedBackwardMmaDkv(base).workgroupBytes - dkv1.workgroupBytes).toBe(16 * base.chunk);
    const rpb = { ...one, hasRpb: true };
    expect(generateFusedBackwardMmaDq(rpb).code).toContain('kc_sh');
    expect(generateFusedBackwardMmaDkv(rpb).code).toContain('qc_sh');
    expect(generateFusedBackwardMmaDq({ ...rpb, gradRpb: true }).code).toContain('kc_sh');
  });
  it('writes dS over the staged V rows in the dq kernel on request (dsOverV), where they hold it', () => {
    const small = { ...base, chunk: 16, tightScratch: true, dimV: 64 };
    const over = { ...small, dsOverV: true };
    // 64 rows of 16 halves fit 16 V rows of 72.
    expect(fusedBackwardMmaSpecProblem(over)).toBeUndefined();
    const dq = generateFusedBackwardMmaDq(over);
    expect(fusedBackwardMmaWorkgroupBytes(small, 'dq') - dq.workgroupBytes).toBe(64 * 16 * 2);
    expect(dq.code).not.toContain('ds_sh');
    // Padded dS rows (24 halves) do not: 64 x 24 > 16 x 72.
    expect(fusedBackwardMmaSpecProblem({ ...over, tightScratch: false })).toMatch(/dsOverV: dS \(64 rows of 24\) does not fit the chunk's V rows \(16 of 72\)/);
    expect(() => generateFusedBackwardMmaDkv(over)).toThrow(/generateFusedBackwardMmaDkv: dsOverV is a dq-kernel option/);
  });
  it('splits each 16-row block over two subgroups on request (headSplit): 8 tile rows per subgroup, half-size P/dS', () => {
    const split = { ...base, dimV: 64, tile: [4, 8], headSplit: true };
    expect(fusedBackwardMmaSpecProblem(split)).toBeUndefined();
    expect(fusedBackwardMmaSpecProblem({ ...split, tile: [8, 8] })).toMatch(/tile \[8, 8\] must have 32 rows \(16 per pair of subgroups with headSplit\)/);
    expect(fusedBackwardMmaSpecProblem({ ...split, dim: 48 })).toMatch(/headSplit: head dims 48\/64 must be multiples of 32 \(a whole number of fragments per half\)/);
    expect(fusedBackwardMmaSpecProblem({ ...split, sharedScratch: true })).toMatch(/headSplit does not combine with sharedScratch, dsOverV or leanScratch/);
    expect(() => generateFusedBackwardMmaDq({ ...split, chunk: 16, tightScratch: true, dsOverV: true })).toThrow(/generateFusedBackwardMmaDq: headSplit does not combine with sharedScratch, dsOverV or leanScratch/);
    // The P/dS arrays hold one row per tile row (32), the f32 scratches both partials (64 rows).
    const unsplit = { ...base, dimV: 64, tile: [8, 8] };
    expect(fusedBackwardMmaWorkgroupBytes(unsplit, 'dkv') - fusedBackwardMmaWorkgroupBytes(split, 'dkv')).toBe(2 * 2 * 32 * 40);
    const dkv = generateFusedBackwardMmaDkv(split);
    expect(dkv.workgroupBytes).toBe(fusedBackwardMmaWorkgroupBytes(split, 'dkv'));
    expect(dkv.code).toContain('let hoff_d = hd * 32u;');
    expect(generateFusedBackwardMmaDkv(unsplit).code).not.toContain('hoff_d');
  });
  it('write dK and dV through both scratches at once, eight halves per lane per store', () => {
    const spec: FusedBackwardMmaSpec = { rank: 1, kernelSize: [127], causal: [false], dim: 64, dimV: 64, tile: [32], chunk: 16, subgroups: 2, tightScratch: true };
    const code = generateFusedBackwardMmaDkv(spec).code;
    const epilogue = code.slice(code.indexOf('// ---- dK * scale, dV'));
    // Four rounds (dk_j into the S scratch, dv_j into the dP scratch), two barriers each but the last.
    expect(epilogue.match(/workgroupBarrier\(\)/g)).toHaveLength(7);
    expect(epilogue).toContain('subgroupMatrixStore<row_major>(&dp_sh, rbase * LDS + 0u, dv_3, LDS);');
    expect(epilogue).toContain('grad_key[krow * 8u + 6u + hf] = pack8(lo * scale, hi * scale);');
    expect(epilogue).toContain('grad_value[krow * 8u + 6u + hf] = pack8(lo, hi);');
    // dq with one scratch: four rounds of dQ.
    const dq = generateFusedBackwardMmaDq({ ...spec, tile: [64], subgroups: 4, sharedScratch: true }).code;
    expect(dq.slice(dq.indexOf('// ---- dQ * scale')).match(/workgroupBarrier\(\)/g)).toHaveLength(7);
  });
  it('mask rank-1 chunks by arithmetic on the box index (no coordinate reads), and compile unit steps in on request', () => {
    const spec: FusedBackwardMmaSpec = { rank: 1, kernelSize: [127], causal: [true], dim: 64, dimV: 64, tile: [32], chunk: 16, subgroups: 2, tightScratch: true };
    const dkv = generateFusedBackwardMmaDkv(spec).code;
    expect(dkv).toContain('let inw = vec4<bool>(kvalid) & (((vec4<i32>(qbs_0 + i32(c0 + cc)) + vec4<i32>(0, 1, 2, 3)) >= vec4<i32>(ilo_0))');
    expect(dkv).not.toMatch(/qc_sh\[\(/);
    const dq = generateFusedBackwardMmaDq(spec).code;
    expect(dq).toContain('let inw = (((vec4<i32>(bs_0 + i32(c0 + cc)) + vec4<i32>(0, 1, 2, 3)) >= vec4<i32>(ws_0))');
    expect(dq).not.toMatch(/kc_sh\[\(/);
    for (const gen of [generateFusedBackwardMmaDq, generateFusedBackwardMmaDkv]) {
      expect(gen(spec).code).toMatch(/params\.dil_0/);
      expect(gen({ ...spec, unitSteps: true }).code).not.toMatch(/params\.(dil|str)_\d/);
    }
  });
  it('pack the staged coordinates on request (packedCoords): dq its keys, dkv its queries, one u32 each', () => {
    const packed = { ...base, packedCoords: true };
    const dq = generateFusedBackwardMmaDq(packed);
    const dkv = generateFusedBackwardMmaDkv(packed);
    expect(dq.code).toContain('var<workgroup> kc_sh: array<vec4<u32>, 8>;');
    expect(dkv.code).toContain('var<workgroup> qc_sh: array<vec4<u32>, 8>;');
    expect(dkv.code).toContain('pqc = select(0xffffffffu, u32(qg_0 - qbs_0) | (u32(qg_1 - qbs_1) << 16u), in_box);');
    // The key's inverse window relative to the query box; an invalid key row counts nothing.
    expect(dkv.code).toContain('let kcnt_0 = select(0u, u32(ihi_0 - ilo_0), kvalid);');
    for (const k of ['dq', 'dkv'] as const) expect(fusedBackwardMmaWorkgroupBytes(base, k) - fusedBackwardMmaWorkgroupBytes(packed, k)).toBe(12 * base.chunk);
    expect(dq.workgroupBytes).toBe(fusedBackwardMmaWorkgroupBytes(packed, 'dq'));
    expect(dkv.workgroupBytes).toBe(fusedBackwardMmaWorkgroupBytes(packed, 'dkv'));
    expect(fusedBackwardMmaSpecProblem({ ...base, rank: 1, kernelSize: [7], causal: [false], tile: [64], packedCoords: true })).toMatch(/packedCoords needs rank 2 or 3/);
  });
});

describe('mma backward, float32 (split)', () => {
  it('binds f32 tensors and one scales buffer, keeps lo halves beside the staging, P and dS, and refuses what it does not combine with', () => {
    const spec: FusedBackwardMmaSpec = { ...base, split: true };
    const dq = generateFusedBackwardMmaDq(spec);
    const dkv = generateFusedBackwardMmaDkv(spec);
    expect(dq.bindings.map((b) => b.name)).toEqual(['query', 'key', 'value', 'output', 'grad_output', 'logsumexp', 'grad_query', 'delta', 'scales']);
    expect(dkv.bindings.map((b) => b.name)).toEqual(['query', 'key', 'value', 'grad_output', 'logsumexp', 'delta', 'grad_key', 'grad_value', 'scales']);
    for (const k of [dq, dkv]) {
      expect(k.code).toMatch(/var<storage, read> query: array<vec4<f32>>;/);
      expect(k.code).toContain('var<workgroup> stlo: array<f16,');
      // dS's scale from its bound, D_v max |dO| (max |V| + max |O|): Dv = 32 here.
      expect(k.code).toContain('let scd = split_scale(32.0 * scales[3] * (scales[2] + scales[4]));');
      expect(k.code).not.toContain('pack8(');
    }
    expect(dq.code).toMatch(/var<storage, read_write> grad_query: array<vec4<f32>>;/);
    expect(dq.code).toContain('var<workgroup> dslo_sh: array<f16,');
    expect(dkv.code).toContain('var<workgroup> plo_sh: array<f16,');
    // hi hi + hi lo + lo hi: S = Q K^T's three multiplies, the lo halves of Q (left) and of the staged K (right).
    expect(dq.code).toContain('subgroupMatrixMultiplyAccumulate(q_lo_0, subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>, col_major>(&st, ');
    expect(dq.code).toContain('subgroupMatrixMultiplyAccumulate(q_0, subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>, col_major>(&stlo, ');
    expect(dq.workgroupBytes).toBeGreaterThan(generateFusedBackwardMmaDq(base).workgroupBytes);
    for (const extra of [{ headSplit: true, tile: [4, 8] }, { dsOverV: true }, { wideLoads: true }]) {
      expect(fusedBackwardMmaSpecProblem({ ...spec, ...extra })).toBe('split (float32) does not combine with headSplit, dsOverV or wideLoads');
    }
  });
});

describe('mma backward workgroup memory', () => {
  it('keeps every workgroup variable a multiple of 16 bytes (matrix stores misplace data otherwise)', () => {
    const rpb = { hasRpb: true, causal: [false, false] };
    const kernels = [
      ['dq', generateFusedBackwardMmaDq, [{}, { tightScratch: true }, { ...rpb, gradRpb: true }, { sharedScratch: true }, { split: true }, { split: true, sharedScratch: true, tightScratch: true }]],
      ['dkv', generateFusedBackwardMmaDkv, [{}, { tightScratch: true }, rpb, { leanScratch: true }, { split: true }, { split: true, leanScratch: true, tightScratch: true }]],
    ] as const;
    let checked = 0;
    for (const [name, generate, flagSets] of kernels) {
      for (const dim of [16, 64, 128]) {
        for (const [chunk, subgroups] of [
          [16, 2],
          [32, 4],
        ] as const) {
          for (const flags of [...flagSets, { rank: 1 as const, kernelSize: [31], causal: [false] }]) {
            const spec = { ...base, dim, dimV: dim, chunk, subgroups, tile: 'rank' in flags ? [subgroups * 16] : [subgroups * 2, 8], ...flags } as FusedBackwardMmaSpec;
            if (fusedBackwardMmaSpecProblem(spec) !== undefined) continue;
            const k = generate(spec);
            for (const v of workgroupVars(k.code)) expect(v.bytes % 16, `${name} ${v.name} D=${dim} chunk ${chunk} ${JSON.stringify(flags)}`).toBe(0);
            // And the declared total covers the variables (the limit checks rely on it; it counts 16 bytes more).
            expect(workgroupVars(k.code).reduce((a, v) => a + v.bytes, 0), `${name} D=${dim} chunk ${chunk} ${JSON.stringify(flags)}`).toBe(k.workgroupBytes - 16);
            checked++;
          }
        }
      }
    }
    expect(checked).toBeGreaterThanOrEqual(40);
  });
});
